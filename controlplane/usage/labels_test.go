package usage

import (
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/crsrelay/crs/internal/period"
)

// TestLabelMemoMatchesPeriodOf checks the memo against period.Of for moments on both sides of
// hour, day, week and month boundaries, in zones east and west of UTC, with several weekly
// resets interleaved (so slots are shared and replaced), from concurrent goroutines.
func TestLabelMemoMatchesPeriodOf(t *testing.T) {
	base := utc("2026-11-29T22:00:00Z") // a Sunday; Monday starts within the day east of UTC
	var moments []time.Time
	for h := range 80 {
		at := base.Add(time.Duration(h) * time.Hour)
		moments = append(moments, at.Add(-time.Nanosecond), at, at.Add(59*time.Minute+59*time.Second))
	}
	moments = append(moments, utc("2026-11-30T23:59:59Z"), utc("2026-12-01T00:00:00Z"), utc("1970-01-01T00:00:00Z"))
	resets := [][2]int{{0, 0}, {1, 0}, {3, 0}, {5, 0}, {3, 9}, {7, 23}, {8, -1}}
	for _, tz := range []int{-8, 0, 8, 14} {
		m := &labelMemo{loc: period.Zone(tz)}
		var wg sync.WaitGroup
		for g := range 4 {
			wg.Go(func() {
				for i, at := range moments {
					r := resets[(i+g)%len(resets)]
					want := period.Of(at, m.loc, r[0], r[1])
					if got := m.of(at, r[0], r[1]); got != want {
						t.Errorf("tz %d reset %v at %s: got %+v, want %+v", tz, r, at, got, want)
					}
				}
			})
		}
		wg.Wait()
	}
}

func TestLabelMemoBeforeEpoch(t *testing.T) {
	m := &labelMemo{loc: period.Zone(0)}
	at := utc("1969-12-31T23:30:00Z")
	require.Equal(t, period.Of(at, m.loc, 1, 0), m.of(at, 1, 0))
	require.Equal(t, period.Of(at.Add(time.Hour), m.loc, 1, 0), m.of(at.Add(time.Hour), 1, 0), "the hour after is another slot entry")
}

// TestLabelMemoSharedSlot: resets whose entries land in the same slot for the same hour must not
// read each other's labels.
func TestLabelMemoSharedSlot(t *testing.T) {
	at := utc("2026-11-26T04:30:00Z")
	for _, pair := range [][2][2]int{
		{{1, 0}, {6, 5}},  // other day and hour
		{{1, 0}, {1, 8}},  // other hour
		{{-1, 0}, {7, 0}}, // other day (Monday by default, Sunday)
	} {
		m := &labelMemo{loc: period.Zone(8)}
		a, b := pair[0], pair[1]
		require.Equal(t, period.Of(at, m.loc, a[0], a[1]), m.of(at, a[0], a[1]))
		want := period.Of(at, m.loc, b[0], b[1])
		require.NotEqual(t, period.Of(at, m.loc, a[0], a[1]), want, "a test of nothing")
		require.Equal(t, want, m.of(at, b[0], b[1]), "%v after %v", b, a)
	}
}
