package worker

import (
	"fmt"
	"maps"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/valyala/fasthttp"

	"github.com/crsrelay/crs/dataplane/relay"
)

// workerMetrics are the worker's own series. Counters per label set are created on first use and
// cached in copy-on-write maps, so recording a request neither allocates nor takes a lock (the
// label sets are few: routes × statuses × platforms).
type workerMetrics struct {
	set *metrics.Set

	mu       sync.Mutex // serializes additions to the maps below
	requests cowMap[requestLabels, *metrics.Counter]
	// relays holds, per label set of a relayed request, every series relayed records into, so
	// that a request looks them up once instead of once per series.
	relays cowMap[requestLabels, *relaySeries]

	inputTokens, outputTokens, cacheCreateTokens, cacheReadTokens *metrics.Counter

	panics *metrics.Counter

	// Written by every request, each on a cache line of its own (see Worker.idSeq).
	_        cacheLinePad
	streams  atomic.Int64 // stream requests being relayed
	_        cacheLinePad
	inflight atomic.Int64 // requests being relayed
	_        cacheLinePad
}

type requestLabels struct {
	route    string
	status   int
	platform string
}

const metricPrefix = "crs_worker_"

func newWorkerMetrics(set *metrics.Set) *workerMetrics {
	m := &workerMetrics{set: set}
	tok := func(typ string) *metrics.Counter {
		return set.NewCounter(metricPrefix + `tokens_total{type="` + typ + `"}`)
	}
	m.inputTokens = tok("input")
	m.outputTokens = tok("output")
	m.cacheCreateTokens = tok("cache_creation")
	m.cacheReadTokens = tok("cache_read")
	set.NewGauge(metricPrefix+"active_streams", func() float64 { return float64(m.streams.Load()) })
	set.NewGauge(metricPrefix+"inflight_relays", func() float64 { return float64(m.inflight.Load()) })
	m.panics = set.NewCounter(metricPrefix + "panics_total")
	return m
}

// request counts one answered request.
func (m *workerMetrics) request(route string, status int, platform string) {
	k := requestLabels{route, status, platform}
	c, ok := m.requests.get(k)
	if !ok {
		m.mu.Lock()
		if c, ok = m.requests.get(k); !ok {
			c = m.requestCounter(k)
			m.requests.add(k, c)
		}
		m.mu.Unlock()
	}
	c.Inc()
}

// requestCounter returns the requests_total series of k, creating it. Callers hold mu.
func (m *workerMetrics) requestCounter(k requestLabels) *metrics.Counter {
	return m.set.GetOrCreateCounter(fmt.Sprintf(`%srequests_total{route=%q,status="%d",platform=%q}`,
		metricPrefix, k.route, k.status, k.platform))
}

// relaySeries are the series a relayed request of one label set records into. The histograms
// are per platform (label sets of one platform share them) and are created when first updated,
// so that /metrics lists only histograms that have values.
type relaySeries struct {
	requests      *metrics.Counter
	platform      string
	latency, ttfb atomic.Pointer[metrics.PrometheusHistogram]
}

// relaySeriesOf returns the series of a relayed request's label set, creating them on first use.
func (m *workerMetrics) relaySeriesOf(k requestLabels) *relaySeries {
	s, ok := m.relays.get(k)
	if ok {
		return s
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if s, ok = m.relays.get(k); !ok {
		s = &relaySeries{requests: m.requestCounter(k), platform: k.platform}
		m.relays.add(k, s)
	}
	return s
}

// histogram returns the histogram *p caches, creating (or finding) it in the set first.
// GetOrCreate returns the same histogram to goroutines that race here.
func (m *workerMetrics) histogram(p *atomic.Pointer[metrics.PrometheusHistogram], name, platform string) *metrics.PrometheusHistogram {
	if h := p.Load(); h != nil {
		return h
	}
	h := m.set.GetOrCreatePrometheusHistogram(metricPrefix + name + `{platform=` + strconv.Quote(platform) + `}`)
	p.Store(h)
	return h
}

// cowMap is a map read without locking: readers load the current version, writers (serialized by
// the caller) publish a copy with one more entry. It suits caches that stop growing early.
type cowMap[K comparable, V any] struct {
	p atomic.Pointer[map[K]V]
}

func (c *cowMap[K, V]) get(k K) (V, bool) {
	if m := c.p.Load(); m != nil {
		v, ok := (*m)[k]
		return v, ok
	}
	var zero V
	return zero, false
}

// add publishes k=v. Callers serialize calls to add.
func (c *cowMap[K, V]) add(k K, v V) {
	var next map[K]V
	if m := c.p.Load(); m != nil {
		next = make(map[K]V, len(*m)+1)
		maps.Copy(next, *m)
	} else {
		next = make(map[K]V, 1)
	}
	next[k] = v
	c.p.Store(&next)
}

// relayed records a finished relay: status, upstream duration, time to first byte, tokens.
func (m *workerMetrics) relayed(route, platform string, o *relay.Outcome, duration time.Duration) {
	s := m.relaySeriesOf(requestLabels{route, o.Status, platform})
	s.requests.Inc()
	if o.Attempts > 0 {
		m.histogram(&s.latency, "upstream_duration_seconds", s.platform).Update(duration.Seconds())
	}
	if o.FirstByte > 0 {
		m.histogram(&s.ttfb, "upstream_ttfb_seconds", s.platform).Update(o.FirstByte.Seconds())
	}
	if u := o.Usage; u != nil {
		// Every worker goroutine adds to these: adding nothing would still pull the counter's
		// cache line over from another core.
		addNonZero(m.inputTokens, u.GetInputTokens())
		addNonZero(m.outputTokens, u.GetOutputTokens())
		addNonZero(m.cacheCreateTokens, u.GetCacheCreation_5MTokens()+u.GetCacheCreation_1HTokens())
		addNonZero(m.cacheReadTokens, u.GetCacheReadTokens())
	}
}

func addNonZero(c *metrics.Counter, n int64) {
	if n != 0 {
		c.Add(int(n))
	}
}

// metrics serves GET /metrics: the worker's series, the fleet client's, and process metrics.
func (w *Worker) metrics(ctx *fasthttp.RequestCtx, _ *call) {
	ctx.SetContentType("text/plain; version=0.0.4; charset=utf-8")
	w.m.set.WritePrometheus(ctx)
	if w.fleet != nil && w.fleet.Metrics() != w.m.set { // one set may be shared by both
		w.fleet.WriteMetrics(ctx)
	}
	metrics.WriteProcessMetrics(ctx)
}
