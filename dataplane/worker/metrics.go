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
	latency  cowMap[string, *metrics.PrometheusHistogram] // by platform
	ttfb     cowMap[string, *metrics.PrometheusHistogram]

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
			c = m.set.GetOrCreateCounter(fmt.Sprintf(`%srequests_total{route=%q,status="%d",platform=%q}`,
				metricPrefix, route, status, platform))
			m.requests.add(k, c)
		}
		m.mu.Unlock()
	}
	c.Inc()
}

func (m *workerMetrics) histogram(cache *cowMap[string, *metrics.PrometheusHistogram], name, platform string) *metrics.PrometheusHistogram {
	h, ok := cache.get(platform)
	if !ok {
		m.mu.Lock()
		if h, ok = cache.get(platform); !ok {
			h = m.set.GetOrCreatePrometheusHistogram(metricPrefix + name + `{platform=` + strconv.Quote(platform) + `}`)
			cache.add(platform, h)
		}
		m.mu.Unlock()
	}
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
	m.request(route, o.Status, platform)
	if o.Attempts > 0 {
		m.histogram(&m.latency, "upstream_duration_seconds", platform).Update(duration.Seconds())
	}
	if o.FirstByte > 0 {
		m.histogram(&m.ttfb, "upstream_ttfb_seconds", platform).Update(o.FirstByte.Seconds())
	}
	if u := o.Usage; u != nil {
		m.inputTokens.Add(int(u.GetInputTokens()))
		m.outputTokens.Add(int(u.GetOutputTokens()))
		m.cacheCreateTokens.Add(int(u.GetCacheCreation_5MTokens() + u.GetCacheCreation_1HTokens()))
		m.cacheReadTokens.Add(int(u.GetCacheReadTokens()))
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
