//go:build !race

package worker

import (
	"testing"

	"github.com/stretchr/testify/require"
	"github.com/valyala/fasthttp"

	"github.com/crsrelay/crs/dataplane/relay"
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
	path := []byte("/api/v1/messages")
	require.Equal(t, "/api/v1/messages", w.endpoint(path))
	require.Zero(t, testing.AllocsPerRun(100, func() { w.endpoint(path) }))
	require.Equal(t, "/API/v1/messages/", w.endpoint([]byte("/API/v1/messages/")), "other spellings are kept as sent")
}
