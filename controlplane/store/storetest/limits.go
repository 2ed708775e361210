package storetest

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/crsrelay/crs/controlplane/store"
)

// RunLimits runs the conformance suite of [store.LimitStore]. newStore must return a fresh, empty
// backend: its Store (for Watch) and the LimitStore beside it, closed at the end of the test.
// Subtests run in parallel, each on its own backend. Time is driven by the now passed to every
// call, never by sleeping.
func RunLimits(t *testing.T, newStore func(t *testing.T) (store.Store, store.LimitStore)) {
	groups := []struct {
		name  string
		tests []limitTest
	}{
		{"Leases", leaseTests},
		{"Windows", windowTests},
	}
	for _, g := range groups {
		t.Run(g.name, func(t *testing.T) {
			for _, tc := range g.tests {
				t.Run(tc.name, func(t *testing.T) {
					t.Parallel()
					st, l := newStore(t)
					tc.run(t, st, l)
				})
			}
		})
	}
}

type limitTest struct {
	name string
	run  func(t *testing.T, st store.Store, l store.LimitStore)
}

// t0 is the suite's fixed "now"; times are whole milliseconds, as backends store them.
var t0 = time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)

func at(d time.Duration) time.Time { return t0.Add(d) }

const leaseTTL = 30 * time.Second

func keyLimit(id string, n int) store.LeaseLimit {
	return store.LeaseLimit{Scope: store.ScopeKey, ID: id, Limit: n}
}

func accountLimit(id string, n int) store.LeaseLimit {
	return store.LeaseLimit{Scope: store.ScopeAccount, ID: id, Limit: n}
}

// acquire requires AcquireLeases to succeed and returns its outcome.
func acquire(t *testing.T, l store.LimitStore, lease string, now time.Time, limits ...store.LeaseLimit) store.Acquired {
	t.Helper()
	a, err := l.AcquireLeases(ctx(t), lease, limits, leaseTTL, now)
	require.NoError(t, err)
	return a
}

func requireGranted(t *testing.T, l store.LimitStore, lease string, now time.Time, limits ...store.LeaseLimit) {
	t.Helper()
	require.Equal(t, store.Acquired{Granted: true}, acquire(t, l, lease, now, limits...), "lease %s", lease)
}

func requireRefused(t *testing.T, l store.LimitStore, lease string, now time.Time, want store.LeaseLimit, current int, limits ...store.LeaseLimit) {
	t.Helper()
	require.Equal(t, store.Acquired{Refused: want, Current: current}, acquire(t, l, lease, now, limits...), "lease %s", lease)
}

func requireLeases(t *testing.T, l store.LimitStore, scope, id string, now time.Time, want int) {
	t.Helper()
	n, err := l.Leases(ctx(t), scope, id, now)
	require.NoError(t, err)
	require.Equal(t, want, n, "leases on %s %s", scope, id)
}

func renew(t *testing.T, l store.LimitStore, now time.Time, ids ...string) []string {
	t.Helper()
	missing, err := l.RenewLeases(ctx(t), ids, leaseTTL, now)
	require.NoError(t, err)
	return missing
}

var leaseTests = []limitTest{
	{"ConcurrentAcquirersGetExactlyTheLimit", func(t *testing.T, _ store.Store, l store.LimitStore) {
		const acquirers = 10
		lim := keyLimit("k1", 3)
		var (
			wg      sync.WaitGroup
			mu      sync.Mutex
			granted int
			refused []store.Acquired
		)
		for i := range acquirers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				a, err := l.AcquireLeases(ctx(t), fmt.Sprintf("lease-%d", i), []store.LeaseLimit{lim}, leaseTTL, t0)
				if err != nil {
					t.Errorf("acquire %d: %v", i, err)
					return
				}
				mu.Lock()
				defer mu.Unlock()
				if a.Granted {
					granted++
				} else {
					refused = append(refused, a)
				}
			}()
		}
		wg.Wait()
		require.Equal(t, 3, granted)
		require.Len(t, refused, acquirers-3)
		for _, a := range refused {
			require.Equal(t, store.Acquired{Refused: lim, Current: 3}, a)
		}
		requireLeases(t, l, store.ScopeKey, "k1", t0, 3)
		requireLeases(t, l, store.ScopeAccount, "k1", t0, 0) // scopes are separate
	}},
	{"ExpiryFreesSlots", func(t *testing.T, _ store.Store, l store.LimitStore) {
		lim := keyLimit("k1", 2)
		requireGranted(t, l, "a", t0, lim)
		requireGranted(t, l, "b", at(10*time.Second), lim)
		requireRefused(t, l, "c", at(leaseTTL-time.Millisecond), lim, 2, lim)
		// a expires at t0+TTL exactly: from then on it no longer counts.
		requireLeases(t, l, store.ScopeKey, "k1", at(leaseTTL), 1)
		requireGranted(t, l, "c", at(leaseTTL), lim)
		requireRefused(t, l, "d", at(leaseTTL), lim, 2, lim)
		require.Equal(t, []string{"a"}, renew(t, l, at(leaseTTL), "a"), "an expired lease is not renewed")
		requireLeases(t, l, store.ScopeKey, "k1", at(time.Hour), 0)
		requireGranted(t, l, "d", at(time.Hour), lim)
	}},
	{"RenewKeepsSlots", func(t *testing.T, _ store.Store, l store.LimitStore) {
		lim, acc := keyLimit("k1", 1), accountLimit("a1", 1)
		requireGranted(t, l, "a", t0, lim, acc)
		// Renewed at 20s, it lives until 50s on both of its limits.
		require.Empty(t, renew(t, l, at(20*time.Second), "a"))
		requireRefused(t, l, "b", at(40*time.Second), lim, 1, lim)
		requireRefused(t, l, "b", at(40*time.Second), acc, 1, acc)
		require.Empty(t, renew(t, l, at(49*time.Second), "a"))
		requireLeases(t, l, store.ScopeAccount, "a1", at(78*time.Second), 1)
		requireLeases(t, l, store.ScopeAccount, "a1", at(79*time.Second), 0)
		// Unknown ids and expired ones are reported, the rest renewed, in one call.
		requireGranted(t, l, "c", at(80*time.Second), lim)
		require.Equal(t, []string{"nope", "a"}, renew(t, l, at(90*time.Second), "nope", "c", "a"))
		requireRefused(t, l, "d", at(119*time.Second), lim, 1, lim)
		// A missing lease stays missing: renewing does not take its slot back.
		requireGranted(t, l, "d", at(120*time.Second), lim)
		require.Equal(t, []string{"c"}, renew(t, l, at(121*time.Second), "c"))
		requireLeases(t, l, store.ScopeKey, "k1", at(121*time.Second), 1)
	}},
	{"ReleaseFreesSlots", func(t *testing.T, _ store.Store, l store.LimitStore) {
		lim, acc := keyLimit("k1", 1), accountLimit("a1", 1)
		requireGranted(t, l, "a", t0, lim, acc)
		requireRefused(t, l, "b", t0, lim, 1, lim, acc)
		require.NoError(t, l.ReleaseLeases(ctx(t), []string{"a", "unknown"}))
		requireLeases(t, l, store.ScopeKey, "k1", t0, 0)
		requireLeases(t, l, store.ScopeAccount, "a1", t0, 0)
		requireGranted(t, l, "b", t0, lim, acc)
		require.Equal(t, []string{"a"}, renew(t, l, t0, "a"), "a released lease is gone")
		require.NoError(t, l.ReleaseLeases(ctx(t), []string{"a"}), "releasing twice is harmless")
		require.NoError(t, l.ReleaseLeases(ctx(t), nil))
		requireLeases(t, l, store.ScopeKey, "k1", t0, 1)
	}},
	{"AllOrNothingAcrossLimits", func(t *testing.T, _ store.Store, l store.LimitStore) {
		key, acc1, acc2 := keyLimit("k1", 5), accountLimit("a1", 1), accountLimit("a2", 2)
		requireGranted(t, l, "a", t0, key, acc1)
		// The account is full: b takes nothing, not even its key slot.
		requireRefused(t, l, "b", t0, acc1, 1, key, acc1)
		requireLeases(t, l, store.ScopeKey, "k1", t0, 1)
		requireGranted(t, l, "b", t0, key, acc2)
		requireLeases(t, l, store.ScopeKey, "k1", t0, 2)
		requireLeases(t, l, store.ScopeAccount, "a2", t0, 1)
		// The first full limit in order is reported.
		full := keyLimit("k2", 1)
		requireGranted(t, l, "c", t0, full)
		requireRefused(t, l, "d", t0, acc1, 1, key, acc1, full)
		requireRefused(t, l, "d", t0, full, 1, key, full, acc1)
		requireLeases(t, l, store.ScopeKey, "k1", t0, 2)
	}},
	{"ReacquireExtendsWithoutCountingTwice", func(t *testing.T, _ store.Store, l store.LimitStore) {
		lim, acc := keyLimit("k1", 1), accountLimit("a1", 1)
		requireGranted(t, l, "a", t0, lim)
		requireGranted(t, l, "a", at(20*time.Second), lim, acc)
		requireLeases(t, l, store.ScopeKey, "k1", at(20*time.Second), 1)
		// Both slots now expire at 50s.
		requireRefused(t, l, "b", at(49*time.Second), lim, 1, lim)
		requireLeases(t, l, store.ScopeKey, "k1", at(50*time.Second), 0)
		requireLeases(t, l, store.ScopeAccount, "a1", at(50*time.Second), 0)
		// An expired lease id acquired again starts afresh.
		requireGranted(t, l, "a", at(60*time.Second), acc)
		requireLeases(t, l, store.ScopeKey, "k1", at(60*time.Second), 0)
		requireLeases(t, l, store.ScopeAccount, "a1", at(60*time.Second), 1)
		require.Empty(t, renew(t, l, at(61*time.Second), "a"))
	}},
	{"ZeroLimitCountsButNeverRefuses", func(t *testing.T, _ store.Store, l store.LimitStore) {
		lim := keyLimit("k1", 0)
		for i := range 5 {
			requireGranted(t, l, fmt.Sprint(i), t0, lim)
		}
		requireLeases(t, l, store.ScopeKey, "k1", t0, 5)
	}},
	{"InvalidArguments", func(t *testing.T, _ store.Store, l store.LimitStore) {
		_, err := l.AcquireLeases(ctx(t), "", []store.LeaseLimit{keyLimit("k1", 1)}, leaseTTL, t0)
		require.Error(t, err, "empty lease id")
		_, err = l.AcquireLeases(ctx(t), "a", []store.LeaseLimit{keyLimit("k1", 1)}, 0, t0)
		require.Error(t, err, "zero ttl")
		_, err = l.RenewLeases(ctx(t), []string{"a"}, -time.Second, t0)
		require.Error(t, err, "negative ttl")
		requireLeases(t, l, store.ScopeKey, "k1", t0, 0)
	}},
}

const window = time.Hour

func count(t *testing.T, l store.LimitStore, key string, limit int64, now time.Time) (store.Window, bool) {
	t.Helper()
	w, counted, err := l.CountWindowRequest(ctx(t), key, window, limit, now)
	require.NoError(t, err)
	return w, counted
}

func getWindow(t *testing.T, l store.LimitStore, key string, now time.Time) store.Window {
	t.Helper()
	w, err := l.GetWindow(ctx(t), key, window, now)
	require.NoError(t, err)
	return w
}

func requireWindow(t *testing.T, want, got store.Window, msgAndArgs ...any) {
	t.Helper()
	require.True(t, want.Start.Equal(got.Start), "window start: want %v, got %v", want.Start, got.Start)
	want.Start, got.Start = time.Time{}, time.Time{}
	require.Equal(t, want.Requests, got.Requests, msgAndArgs...)
	require.Equal(t, want.Tokens, got.Tokens, msgAndArgs...)
	require.InDelta(t, want.Cost, got.Cost, 1e-9, msgAndArgs...)
}

var windowTests = []limitTest{
	{"CountsUpToTheLimitThenResets", func(t *testing.T, _ store.Store, l store.LimitStore) {
		require.True(t, getWindow(t, l, "k1", t0).Start.IsZero(), "no window before the first request")
		start := at(5 * time.Second)
		for i := int64(1); i <= 3; i++ {
			w, counted := count(t, l, "k1", 3, start.Add(time.Duration(i)*time.Minute-time.Minute))
			require.True(t, counted, "request %d", i)
			requireWindow(t, store.Window{Start: start, Requests: i}, w)
		}
		// Full: refused (current >= limit), unchanged, up to the last millisecond of the window.
		w, counted := count(t, l, "k1", 3, start.Add(window-time.Millisecond))
		require.False(t, counted)
		requireWindow(t, store.Window{Start: start, Requests: 3}, w)
		require.True(t, start.Add(window).Equal(w.End(window)), "reset time %v", w.End(window))
		requireWindow(t, store.Window{Start: start, Requests: 3}, getWindow(t, l, "k1", start.Add(window-time.Millisecond)))
		// At start + window everything resets and the new window starts with this request.
		require.True(t, getWindow(t, l, "k1", start.Add(window)).Start.IsZero(), "the window ended")
		next := start.Add(window + 10*time.Second)
		w, counted = count(t, l, "k1", 3, next)
		require.True(t, counted)
		requireWindow(t, store.Window{Start: next, Requests: 1}, w)
		// Other keys have their own windows.
		w, counted = count(t, l, "k2", 1, next)
		require.True(t, counted)
		requireWindow(t, store.Window{Start: next, Requests: 1}, w)
	}},
	{"UsageAddsToTheRunningWindowOnly", func(t *testing.T, _ store.Store, l store.LimitStore) {
		// No window yet: usage is dropped (the next request starts a fresh window).
		require.NoError(t, l.AddWindowUsage(ctx(t), "k1", window, 100, 0.5, t0))
		require.True(t, getWindow(t, l, "k1", t0).Start.IsZero())

		_, counted := count(t, l, "k1", 0, t0)
		require.True(t, counted, "limit 0 counts without refusing")
		require.NoError(t, l.AddWindowUsage(ctx(t), "k1", window, 1200, 0.25, at(time.Minute)))
		require.NoError(t, l.AddWindowUsage(ctx(t), "k1", window, 34, 0.125, at(2*time.Minute)))
		requireWindow(t, store.Window{Start: t0, Requests: 1, Tokens: 1234, Cost: 0.375}, getWindow(t, l, "k1", at(3*time.Minute)))
		w, _ := count(t, l, "k1", 0, at(4*time.Minute))
		requireWindow(t, store.Window{Start: t0, Requests: 2, Tokens: 1234, Cost: 0.375}, w)

		// Settled after the window ended: dropped; the next request starts from zero.
		require.NoError(t, l.AddWindowUsage(ctx(t), "k1", window, 1000, 1, at(window)))
		w, _ = count(t, l, "k1", 0, at(window+time.Second))
		requireWindow(t, store.Window{Start: at(window + time.Second), Requests: 1}, w)
	}},
	{"ShorterWindowConfigAppliesAtOnce", func(t *testing.T, _ store.Store, l store.LimitStore) {
		_, counted := count(t, l, "k1", 1, t0)
		require.True(t, counted)
		// The key's window was shortened to 10 minutes: the running window ends at t0+10m.
		w, counted, err := l.CountWindowRequest(ctx(t), "k1", 10*time.Minute, 1, at(10*time.Minute))
		require.NoError(t, err)
		require.True(t, counted)
		requireWindow(t, store.Window{Start: at(10 * time.Minute), Requests: 1}, w)
	}},
	{"ConcurrentRequestsCountExactly", func(t *testing.T, _ store.Store, l store.LimitStore) {
		const requests, limit = 20, 5
		var (
			wg      sync.WaitGroup
			mu      sync.Mutex
			counted int
		)
		for i := range requests {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, ok, err := l.CountWindowRequest(ctx(t), "k1", window, limit, t0)
				if err != nil {
					t.Errorf("count %d: %v", i, err)
					return
				}
				if ok {
					mu.Lock()
					counted++
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		require.Equal(t, limit, counted)
		requireWindow(t, store.Window{Start: t0, Requests: limit}, getWindow(t, l, "k1", t0))
	}},
	{"ChangesArePublished", func(t *testing.T, st store.Store, l store.LimitStore) {
		ch := watch(t, st)
		usage := func(id string) store.Change { return store.Change{Kind: store.KindKeyUsage, ID: id} }
		_, counted := count(t, l, "k1", 1, t0)
		require.True(t, counted)
		_, counted = count(t, l, "k2", 0, t0)
		require.True(t, counted)
		_, counted = count(t, l, "k1", 1, t0) // refused: nothing changed, nothing published
		require.False(t, counted)
		require.NoError(t, l.AddWindowUsage(ctx(t), "k3", window, 10, 1, t0)) // no window: dropped
		require.NoError(t, l.AddWindowUsage(ctx(t), "k2", window, 10, 1, t0))
		// Leases are not key usage: they publish nothing.
		requireGranted(t, l, "a", t0, keyLimit("k4", 1))
		require.NoError(t, l.AddWindowUsage(ctx(t), "k1", window, 10, 1, t0))
		ExpectChanges(t, ch, usage("k1"), usage("k2"), usage("k2"), usage("k1"))
	}},
	{"InvalidWindow", func(t *testing.T, _ store.Store, l store.LimitStore) {
		_, _, err := l.CountWindowRequest(ctx(t), "k1", 0, 1, t0)
		require.Error(t, err)
		require.Error(t, l.AddWindowUsage(ctx(t), "k1", -time.Second, 1, 1, t0))
		_, err = l.GetWindow(ctx(t), "k1", 0, t0)
		require.Error(t, err)
	}},
}
