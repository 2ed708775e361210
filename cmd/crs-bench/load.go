package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
)

// target is the request one load run repeats.
type target struct {
	// addr is host:port.
	addr string
	// path is the request path with its query.
	path    string
	headers [][2]string
	body    []byte
	// stream asks for the body as a stream, to time the header apart from the body. fasthttp
	// allocates 4 small objects per streamed response, so non-stream targets read buffered.
	stream bool
	// expectSuffix, when set, must end every 2xx body (the message_stop event of a stream); a body
	// that does not is counted as an error, which catches truncated streams.
	expectSuffix []byte
}

// loadConfig says how hard and how long to send.
type loadConfig struct {
	// concurrency is the number of connections, each with one request in flight.
	concurrency int
	// duration is the measured period.
	duration time.Duration
	// warmup is an unmeasured period before it, which opens the connections.
	warmup time.Duration
	// timeout bounds one request, body included.
	timeout time.Duration
}

// result is what one load run measured. latencies and ttfbs are of successful requests, sorted.
type result struct {
	// ok and errors count requests started in the measured period.
	ok, errors int
	// sent counts every request sent, warm-up included.
	sent int
	// elapsed runs from the end of warm-up until the last measured request finished.
	elapsed time.Duration
	// latencies are the times from sending to reading the last body byte.
	latencies []time.Duration
	// ttfbs are the times from sending to the response header; empty unless the target streams.
	ttfbs []time.Duration
	// firstError describes the first error seen.
	firstError string
}

// rps is successful requests per second.
func (r *result) rps() float64 {
	if r.elapsed <= 0 {
		return 0
	}
	return float64(r.ok) / r.elapsed.Seconds()
}

// merge adds another run of the same target: counts and measured time sum, latencies combine.
func (r *result) merge(o *result) {
	r.ok += o.ok
	r.errors += o.errors
	r.sent += o.sent
	r.elapsed += o.elapsed
	r.latencies = append(r.latencies, o.latencies...)
	slices.Sort(r.latencies)
	r.ttfbs = append(r.ttfbs, o.ttfbs...)
	slices.Sort(r.ttfbs)
	if r.firstError == "" {
		r.firstError = o.firstError
	}
}

// percentile returns the p-th percentile (0 < p <= 100) of sorted, nearest-rank; 0 if empty.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(p/100*float64(len(sorted))+0.999999) - 1
	return sorted[min(max(rank, 0), len(sorted)-1)]
}

// errorOnce keeps the first error description of a run.
type errorOnce struct {
	once sync.Once
	msg  string
}

func (e *errorOnce) set(format string, args ...any) {
	e.once.Do(func() { e.msg = fmt.Sprintf(format, args...) })
}

// errSuffix marks a 2xx body that did not end as expected.
var errSuffix = errors.New("body does not end with the expected suffix")

// runLoad sends t from cfg.concurrency connections for cfg.warmup + cfg.duration. It allocates its
// buffers up front; the request loop only reuses them, so the loader's own cost stays small next to
// the servers it measures on the same cores.
func runLoad(ctx context.Context, t target, cfg loadConfig) (*result, error) {
	if cfg.concurrency < 1 || cfg.duration <= 0 {
		return nil, fmt.Errorf("load: need concurrency >= 1 and a positive duration")
	}
	if cfg.timeout <= 0 {
		cfg.timeout = time.Minute
	}
	hc := newHostClient(t.addr, cfg.concurrency, cfg.timeout, t.stream)
	defer hc.CloseIdleConnections()

	start := time.Now()
	measureFrom := start.Add(cfg.warmup)
	stopAt := measureFrom.Add(cfg.duration)
	// Each worker pre-sizes for a generous rate so appends rarely grow during the run.
	perWorker := int(cfg.duration.Seconds()*20000)/cfg.concurrency + 64

	workers := make([]*worker, cfg.concurrency)
	var wg sync.WaitGroup
	var firstErr errorOnce
	var lastDone atomic.Int64 // unix nanos of the last measured request's end
	for i := range workers {
		w := newWorker(hc, &t)
		w.measureFrom, w.stopAt, w.firstErr, w.lastDone = measureFrom, stopAt, &firstErr, &lastDone
		w.latencies = make([]time.Duration, 0, perWorker)
		if t.stream {
			w.ttfbs = make([]time.Duration, 0, perWorker)
		}
		workers[i] = w
		wg.Go(func() { w.run(ctx) })
	}
	wg.Wait()

	res := &result{firstError: firstErr.msg}
	for _, w := range workers {
		res.ok += w.ok
		res.errors += w.errors
		res.sent += w.sent
		res.latencies = append(res.latencies, w.latencies...)
		res.ttfbs = append(res.ttfbs, w.ttfbs...)
	}
	if end := lastDone.Load(); end > measureFrom.UnixNano() {
		res.elapsed = time.Duration(end - measureFrom.UnixNano())
	}
	slices.Sort(res.latencies)
	slices.Sort(res.ttfbs)
	if err := ctx.Err(); err != nil {
		return res, fmt.Errorf("load interrupted: %w", err)
	}
	return res, nil
}

// newHostClient is the loader's client: one connection per concurrent request; with stream, bodies
// are read as they arrive so that the time to the header can be measured.
func newHostClient(addr string, conns int, timeout time.Duration, stream bool) *fasthttp.HostClient {
	return &fasthttp.HostClient{
		Addr:                     addr,
		MaxConns:                 conns,
		MaxIdleConnDuration:      time.Minute,
		ReadTimeout:              timeout,
		WriteTimeout:             timeout,
		MaxConnWaitTimeout:       timeout,
		StreamResponseBody:       stream,
		NoDefaultUserAgentHeader: true,
		ReadBufferSize:           16 << 10,
	}
}

// sendOnce sends t once and returns why it did not fully succeed, or nil.
func sendOnce(t target, timeout time.Duration) error {
	hc := newHostClient(t.addr, 1, timeout, t.stream)
	defer hc.CloseIdleConnections()
	req := fasthttp.AcquireRequest()
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	w := newWorker(hc, &t)
	w.prepare(req)
	_, err := w.do(req, resp)
	return err
}

func newWorker(hc *fasthttp.HostClient, t *target) *worker {
	return &worker{hc: hc, t: t, buf: make([]byte, 32<<10), tail: make([]byte, 0, len(t.expectSuffix))}
}

// worker is one connection's request loop. It is used by one goroutine.
type worker struct {
	hc                  *fasthttp.HostClient
	t                   *target
	measureFrom, stopAt time.Time
	firstErr            *errorOnce
	lastDone            *atomic.Int64

	ok, errors, sent int
	latencies, ttfbs []time.Duration
	buf, tail        []byte
}

func (w *worker) run(ctx context.Context) {
	req := fasthttp.AcquireRequest()
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	w.prepare(req)
	for ctx.Err() == nil {
		t0 := time.Now()
		if !t0.Before(w.stopAt) {
			return
		}
		w.sent++
		ttfb, err := w.do(req, resp)
		end := time.Now()
		if t0.Before(w.measureFrom) {
			if err != nil {
				time.Sleep(10 * time.Millisecond) // a dead target must not spin the loader
			}
			continue
		}
		for {
			last := w.lastDone.Load()
			if end.UnixNano() <= last || w.lastDone.CompareAndSwap(last, end.UnixNano()) {
				break
			}
		}
		if err != nil {
			w.errors++
			w.firstErr.set("%v", err)
			time.Sleep(10 * time.Millisecond)
			continue
		}
		w.ok++
		w.latencies = append(w.latencies, end.Sub(t0))
		if w.t.stream {
			w.ttfbs = append(w.ttfbs, ttfb)
		}
	}
}

// prepare fills req once; the loop sends it again and again unchanged.
func (w *worker) prepare(req *fasthttp.Request) {
	req.SetRequestURI("http://" + w.t.addr + w.t.path)
	req.Header.SetMethod(fasthttp.MethodPost)
	for _, h := range w.t.headers {
		req.Header.Set(h[0], h[1])
	}
	req.SetBodyRaw(w.t.body)
}

// do sends one request and reads the whole response, returning the time to the response header.
func (w *worker) do(req *fasthttp.Request, resp *fasthttp.Response) (time.Duration, error) {
	t0 := time.Now()
	if err := w.hc.Do(req, resp); err != nil {
		return 0, fmt.Errorf("transport: %w", err)
	}
	ttfb := time.Since(t0)
	defer resp.CloseBodyStream() //nolint:errcheck
	status := resp.StatusCode()
	w.tail = w.tail[:0]
	n, head, err := w.drain(resp)
	if status < 200 || status > 299 {
		return 0, fmt.Errorf("status %d: %.300s", status, head)
	}
	if err != nil {
		return 0, fmt.Errorf("read body after %d bytes: %w", n, err)
	}
	if len(w.t.expectSuffix) > 0 && string(w.tail) != string(w.t.expectSuffix) {
		return 0, fmt.Errorf("%w: ends %q", errSuffix, w.tail)
	}
	return ttfb, nil
}

// drain reads the body to its end, keeping its last len(expectSuffix) bytes in w.tail. head is the
// start of the body, for error messages; it aliases w.buf and is valid until the next drain.
func (w *worker) drain(resp *fasthttp.Response) (n int, head []byte, err error) {
	s := resp.BodyStream()
	if s == nil {
		body := resp.Body()
		w.keepTail(body)
		return len(body), body, nil
	}
	headLen := 0
	for {
		m, err := s.Read(w.buf[headLen:])
		if m > 0 {
			w.keepTail(w.buf[headLen : headLen+m])
			n += m
			if headLen < 512 {
				headLen = min(headLen+m, 512)
			}
		}
		if err == io.EOF {
			return n, w.buf[:headLen], nil
		}
		if err != nil {
			return n, w.buf[:headLen], err
		}
	}
}

func (w *worker) keepTail(p []byte) {
	k := cap(w.tail)
	if k == 0 {
		return
	}
	if len(p) >= k {
		w.tail = append(w.tail[:0], p[len(p)-k:]...)
		return
	}
	if over := len(w.tail) + len(p) - k; over > 0 {
		w.tail = append(w.tail[:0], w.tail[over:]...)
	}
	w.tail = append(w.tail, p...)
}
