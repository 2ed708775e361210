//go:build !race

package main

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/valyala/fasthttp"

	"github.com/crsrelay/crs/internal/mockupstream"
)

// The loader shares two cores with what it measures: a request must cost it (and the mock, which
// runs in the same process here) no allocation, except the 4 objects fasthttp's client allocates
// for each streamed response (client.go transport.RoundTrip: clientStreamBody and its closures).
func TestRequestLoopAllocations(t *testing.T) {
	for _, stream := range []bool{false, true} {
		_, addr := startMockInProcess(t, mockupstream.DefaultBehavior())
		tg := directTarget(addr, stream)
		w := newWorker(newHostClient(addr, 1, 5*time.Second, tg.stream), &tg)
		req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
		w.prepare(req)
		var err error
		allocs := testing.AllocsPerRun(200, func() {
			if _, e := w.do(req, resp); e != nil {
				err = e
			}
		})
		require.NoError(t, err)
		t.Logf("stream=%v: %.1f allocs per request", stream, allocs)
		want := 0.0
		if stream {
			want = 4
		}
		require.LessOrEqual(t, allocs, want, "stream=%v", stream)
	}
}
