//go:build !race

package claude

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// The usage tee sees every event of every stream; the ones it skips must not allocate.
func TestSkippedEventsDoNotAllocate(t *testing.T) {
	r := usageReader{}
	for _, ev := range []string{evDelta, evPing, evStop, "data: {\"type\":\"content_block_delta\"}\n\n"} {
		b := []byte(ev)
		require.Zero(t, testing.AllocsPerRun(100, func() { r.Event(b) }), "%q", ev)
	}
}

// Reading the usage of a non-stream answer that names the model asked does not allocate: the
// model string is the one Build returned.
func TestBodyUsageAllocations(t *testing.T) {
	body := []byte(bodyMessage)
	u, ok := Console{}.BodyUsage(body, "claude-sonnet-4-20250514")
	require.True(t, ok)
	require.Equal(t, int64(17), u.OutputTokens)
	require.Zero(t, testing.AllocsPerRun(100, func() { Console{}.BodyUsage(body, "claude-sonnet-4-20250514") }))
}
