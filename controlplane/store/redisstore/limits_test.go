package redisstore

import (
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/crsrelay/crs/controlplane/store"
	"github.com/crsrelay/crs/controlplane/store/storetest"
	"github.com/crsrelay/crs/internal/testenv"
)

func TestLimitsConformance(t *testing.T) {
	storetest.RunLimits(t, func(t *testing.T) (store.Store, store.LimitStore) {
		s := newStore(t, "redis://"+testenv.StartRedis(t)+"/0")
		return s, NewLimits(s)
	})
}

// TestLimitsLayout pins the documented lease and window keys.
func TestLimitsLayout(t *testing.T) {
	addr := testenv.StartRedis(t)
	l := NewLimits(newStore(t, "redis://"+addr+"/0"))
	raw := redis.NewClient(&redis.Options{Addr: addr})
	t.Cleanup(func() { _ = raw.Close() })
	ctx := t.Context()
	now := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)

	a, err := l.AcquireLeases(ctx, "L1", []store.LeaseLimit{
		{Scope: store.ScopeKey, ID: "k1", Limit: 2}, {Scope: store.ScopeAccount, ID: "a1", Limit: 2},
	}, 30*time.Second, now)
	require.NoError(t, err)
	require.True(t, a.Granted)
	for _, z := range []string{"crs:leases:key:k1", "crs:leases:account:a1"} {
		score, err := raw.ZScore(ctx, z, "L1").Result()
		require.NoError(t, err, z)
		require.Equal(t, float64(now.Add(30*time.Second).UnixMilli()), score, z)
		ttl, err := raw.PTTL(ctx, z).Result()
		require.NoError(t, err)
		require.Greater(t, ttl, 30*time.Second, "garbage collection TTL covers the lease")
	}
	members, err := raw.SMembers(ctx, "crs:lease:L1").Result()
	require.NoError(t, err)
	require.ElementsMatch(t, []string{"crs:leases:key:k1", "crs:leases:account:a1"}, members)

	require.NoError(t, l.ReleaseLeases(ctx, []string{"L1"}))
	n, err := raw.Exists(ctx, "crs:leases:key:k1", "crs:leases:account:a1", "crs:lease:L1").Result()
	require.NoError(t, err)
	require.Zero(t, n, "release leaves no keys behind")

	_, _, err = l.CountWindowRequest(ctx, "k1", time.Hour, 0, now)
	require.NoError(t, err)
	require.NoError(t, l.AddWindowUsage(ctx, "k1", time.Hour, 7, 0.5, now))
	h, err := raw.HGetAll(ctx, "crs:window:k1").Result()
	require.NoError(t, err)
	require.Equal(t, map[string]string{
		"start": strconv.FormatInt(now.UnixMilli(), 10), "requests": "1", "tokens": "7", "cost": "0.5",
	}, h)
}
