//go:build !race

package worker

import (
	"testing"

	"github.com/stretchr/testify/require"
	"github.com/valyala/fasthttp"
)

// Copying the forwarded headers costs two allocations however many there are: the values share
// one string, the names are the allow-list's own.
func TestForwardedHeadersAllocations(t *testing.T) {
	var h fasthttp.RequestHeader
	for _, kv := range [][2]string{
		{"Anthropic-Version", "2023-06-01"}, {"Anthropic-Beta", "claude-code-20250219"},
		{"User-Agent", "claude-cli/1.0.69 (external, cli)"}, {"X-App", "cli"},
		{"X-Stainless-Lang", "js"}, {"X-Stainless-Runtime", "node"}, {"X-Api-Key", "cr_x"},
	} {
		h.Set(kv[0], kv[1])
	}
	require.Len(t, forwardedHeaders(&h), 6)
	require.LessOrEqual(t, testing.AllocsPerRun(100, func() { forwardedHeaders(&h) }), 2.0)
}
