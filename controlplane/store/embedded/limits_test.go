package embedded

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/crsrelay/crs/controlplane/store"
	"github.com/crsrelay/crs/controlplane/store/storetest"
)

func TestLimitsConformance(t *testing.T) {
	storetest.RunLimits(t, func(t *testing.T) (store.Store, store.LimitStore) {
		s := openT(t, t.TempDir())
		return s, NewLimits(s)
	})
}

func TestWindowsSurviveReopen(t *testing.T) {
	dir := t.TempDir()
	now := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	s, err := Open(dir)
	require.NoError(t, err)
	_, counted, err := NewLimits(s).CountWindowRequest(t.Context(), "k1", time.Hour, 1, now)
	require.NoError(t, err)
	require.True(t, counted)
	require.NoError(t, s.Close())

	s = openT(t, dir)
	_, counted, err = NewLimits(s).CountWindowRequest(t.Context(), "k1", time.Hour, 1, now.Add(time.Minute))
	require.NoError(t, err)
	require.False(t, counted, "a restart must not reset a full window")
}

func TestLeaseSweepDropsExpiredLeases(t *testing.T) {
	l := NewLimits(openT(t, t.TempDir()))
	now := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	for _, id := range []string{"a", "b", "c"} {
		a, err := l.AcquireLeases(t.Context(), id, []store.LeaseLimit{{Scope: store.ScopeKey, ID: "k-" + id, Limit: 1}}, time.Second, now)
		require.NoError(t, err)
		require.True(t, a.Granted)
	}
	// Nobody asks about k-a, k-b or k-c again; a later acquire elsewhere still frees them.
	later := now.Add(leaseSweepEvery + time.Second)
	_, err := l.AcquireLeases(t.Context(), "d", []store.LeaseLimit{{Scope: store.ScopeKey, ID: "other", Limit: 1}}, time.Second, later)
	require.NoError(t, err)
	l.leases.mu.Lock()
	defer l.leases.mu.Unlock()
	require.Len(t, l.leases.leases, 1)
	require.Len(t, l.leases.slots, 1)
}
