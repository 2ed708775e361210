//go:build !race

package worker

import (
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/stretchr/testify/require"
	"github.com/valyala/fasthttp"

	"github.com/crsrelay/crs/dataplane/relay"
	crsv1 "github.com/crsrelay/crs/gen/crs/v1"
)

// Copying the forwarded headers costs one allocation however many there are: the values share
// one string, the names are the allow-list's own, and the caller's array holds the list.
func TestForwardedHeadersAllocations(t *testing.T) {
	var h fasthttp.RequestHeader
	for _, kv := range [][2]string{
		{"Anthropic-Version", "2023-06-01"}, {"Anthropic-Beta", "claude-code-20250219"},
		{"User-Agent", "claude-cli/1.0.69 (external, cli)"}, {"X-App", "cli"},
		{"X-Stainless-Lang", "js"}, {"X-Stainless-Runtime", "node"}, {"X-Api-Key", "cr_x"},
	} {
		h.Set(kv[0], kv[1])
	}
	var buf [16]relay.Header
	require.Len(t, appendForwarded(buf[:0], &h), 6)
	require.LessOrEqual(t, testing.AllocsPerRun(100, func() { appendForwarded(buf[:0], &h) }), 1.0)
}

// A path of the route table becomes the usage record's endpoint without a copy.
func TestEndpointAllocations(t *testing.T) {
	w := New(Options{})
	endpoint := func(path string) string {
		var ctx fasthttp.RequestCtx
		ctx.Request.SetRequestURI(path)
		var c call
		c.route, c.path = w.lookup(ctx.Path())
		require.NotNil(t, c.route)
		return c.endpoint(&ctx)
	}
	require.Equal(t, "/api/v1/messages", endpoint("/api/v1/messages"))
	require.Equal(t, "/API/v1/messages/", endpoint("/API/v1/messages/"), "other spellings are kept as sent")

	var ctx fasthttp.RequestCtx
	ctx.Request.SetRequestURI("/api/v1/messages")
	path := ctx.Path()
	require.Zero(t, testing.AllocsPerRun(100, func() {
		c := call{}
		c.route, c.path = w.lookup(path)
		if c.endpoint(&ctx) != "/api/v1/messages" {
			t.Fatal("wrong endpoint")
		}
	}))
}

// Recording a relayed request's metrics, once its series exist, allocates nothing.
func TestRelayedMetricsAllocations(t *testing.T) {
	m := newWorkerMetrics(metrics.NewSet())
	o := &relay.Outcome{Status: 200, Attempts: 1, FirstByte: time.Millisecond,
		Usage: &crsv1.UsageRecord{InputTokens: 3, OutputTokens: 4, CacheReadTokens: 100}}
	m.relayed(routeMessages, "claude", o, time.Second)
	require.Zero(t, testing.AllocsPerRun(100, func() { m.relayed(routeMessages, "claude", o, time.Second) }))
}

// Serving a request costs its id and nothing for the per-request state around it (the call stays
// on the handler's stack): a probe allocates the id only.
func TestHandleAllocations(t *testing.T) {
	w := New(Options{})
	var ctx fasthttp.RequestCtx
	ctx.Request.SetRequestURI("/api")
	ctx.Request.Header.SetMethod(fasthttp.MethodGet)
	w.handle(&ctx)
	require.Equal(t, fasthttp.StatusOK, ctx.Response.StatusCode())
	require.LessOrEqual(t, testing.AllocsPerRun(100, func() {
		ctx.Response.Reset()
		w.handle(&ctx)
	}), 1.0)
}

// A relayCall is reused only once both of its users (the handler and the relay) let it go, and
// comes back cleared.
func TestRelayCallRecycling(t *testing.T) {
	w := New(Options{})
	rc := w.newRelayCall(nil, routeMessages)
	rc.req.RequestID = "r1"
	rc.release() // the relay's done
	other := w.newRelayCall(nil, routeMessages)
	require.NotSame(t, rc, other, "the handler still holds it")
	rc.release() // the handler returned
	again := w.newRelayCall(nil, routeCountTokens)
	require.Same(t, rc, again)
	require.Empty(t, again.req.RequestID)
	require.Equal(t, routeCountTokens, again.route)
	require.Equal(t, int32(2), again.users.Load())
	require.NotNil(t, again.doneFunc)
	require.False(t, again.once.Load())
}
