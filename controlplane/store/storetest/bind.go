package storetest

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/crsrelay/crs/controlplane/store"
)

func requireBind(t *testing.T, s store.Store, platform, session, account string, ttl time.Duration, replace bool, wantBound string, wantCreated bool) {
	t.Helper()
	bound, created, err := s.Bind(ctx(t), platform, session, account, ttl, replace)
	require.NoError(t, err)
	require.Equal(t, wantBound, bound, "bound account")
	require.Equal(t, wantCreated, created, "created")
}

var bindTests = []test{
	{"FirstBinderWins", func(t *testing.T, s store.Store) {
		requireBind(t, s, "claude", "s1", "a1", time.Hour, false, "a1", true)
		requireBind(t, s, "claude", "s1", "a2", time.Hour, false, "a1", false)
		// Platforms and sessions are separate namespaces.
		requireBind(t, s, "gemini", "s1", "a2", time.Hour, false, "a2", true)
		requireBind(t, s, "claude", "s2", "a3", time.Hour, false, "a3", true)
		requireBind(t, s, "claude", "s1", "a4", time.Hour, false, "a1", false)
	}},
	{"ReplaceOverrides", func(t *testing.T, s store.Store) {
		requireBind(t, s, "claude", "s1", "a1", time.Hour, false, "a1", true)
		requireBind(t, s, "claude", "s1", "a2", time.Hour, true, "a2", true)
		requireBind(t, s, "claude", "s1", "a3", time.Hour, false, "a2", false)
		// Replace on an unbound session simply binds.
		requireBind(t, s, "claude", "s9", "a5", time.Hour, true, "a5", true)
	}},
	{"ConcurrentBindersAgree", func(t *testing.T, s store.Store) {
		const n = 10
		type res struct {
			bound   string
			created bool
		}
		results := make(chan res, n)
		for i := range n {
			go func() {
				bound, created, err := s.Bind(ctx(t), "claude", "race", string(rune('a'+i)), time.Hour, false)
				if err != nil {
					t.Errorf("bind %d: %v", i, err)
				}
				results <- res{bound, created}
			}()
		}
		var winner string
		createdCount := 0
		for range n {
			r := <-results
			if winner == "" {
				winner = r.bound
			}
			require.Equal(t, winner, r.bound, "every binder sees the same account")
			if r.created {
				createdCount++
			}
		}
		require.Equal(t, 1, createdCount)
	}},
	{"Expires", func(t *testing.T, s store.Store) {
		const ttl = 1500 * time.Millisecond
		start := time.Now()
		requireBind(t, s, "claude", "s1", "a1", ttl, false, "a1", true)
		requireBind(t, s, "claude", "s1", "a2", ttl, false, "a1", false)
		for {
			bound, created, err := s.Bind(ctx(t), "claude", "s1", "a2", time.Hour, false)
			require.NoError(t, err)
			if created {
				require.Equal(t, "a2", bound)
				break
			}
			require.Equal(t, "a1", bound)
			require.Less(t, time.Since(start), ttl+3*time.Second, "binding did not expire")
			time.Sleep(100 * time.Millisecond)
		}
		require.GreaterOrEqual(t, time.Since(start), ttl-100*time.Millisecond, "binding expired early")
		requireBind(t, s, "claude", "s1", "a3", time.Hour, false, "a2", false)
	}},
	{"InvalidTTL", func(t *testing.T, s store.Store) {
		_, _, err := s.Bind(ctx(t), "claude", "s1", "a1", 0, false)
		require.Error(t, err)
		requireBind(t, s, "claude", "s1", "a2", time.Hour, false, "a2", true)
	}},
}
