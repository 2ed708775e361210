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
