package relay

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// A connection's deadline moves only when it would fall short of the wanted one by more than
// 1/deadlineSlack of the wait, or when the wanted one is earlier.
func TestDeadlineMovesOnlyWhenItMatters(t *testing.T) {
	const d = 64 * time.Second
	var by time.Duration
	first, move := deadline(&by, d)
	require.True(t, move, "no deadline yet")
	require.Equal(t, first, monoBase.Add(by))
	require.WithinDuration(t, time.Now().Add(d), first, 100*time.Millisecond, "the deadline is now + d")
	set := by

	_, move = deadline(&by, d)
	require.False(t, move, "a deadline a moment old is close enough")
	require.Equal(t, set, by)

	by -= 2 * time.Second // set 2s ago: short by more than d/64 = 1s
	want, move := deadline(&by, d)
	require.True(t, move)
	require.Equal(t, want, monoBase.Add(by))

	_, move = deadline(&by, time.Second)
	require.True(t, move, "a shorter wait must pull the deadline in")
	require.WithinDuration(t, time.Now().Add(time.Second), monoBase.Add(by), 100*time.Millisecond)
}
