package redisstore

import (
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/crsrelay/crs/controlplane/store"
	"github.com/crsrelay/crs/controlplane/store/storetest"
	"github.com/crsrelay/crs/internal/testenv"
)

func TestCoordConformance(t *testing.T) {
	// The suite reuses names ("l", "s1"), so each store gets a throwaway server of its own.
	storetest.RunCoord(t,
		func(t *testing.T) store.Store { return newStore(t, "redis://"+testenv.StartRedis(t)+"/0") },
		storetest.WithReopen(func(t *testing.T, closed store.Store) store.Store {
			return newStore(t, "redis://"+closed.(*Store).rdb.Options().Addr+"/0")
		}),
	)
}

// TestCoordLayout pins the documented keys of leases, sessions and config blobs.
func TestCoordLayout(t *testing.T) {
	addr := testenv.StartRedis(t)
	s := newStore(t, "redis://"+addr+"/0")
	raw := redis.NewClient(&redis.Options{Addr: addr})
	t.Cleanup(func() { _ = raw.Close() })
	ctx := t.Context()

	got, err := s.TryLock(ctx, "refresh:a1", "owner-1", time.Minute)
	require.NoError(t, err)
	require.True(t, got)
	require.Equal(t, "owner-1", raw.Get(ctx, "crs:lock:refresh:a1").Val())
	require.InDelta(t, time.Minute.Milliseconds(), raw.PTTL(ctx, "crs:lock:refresh:a1").Val().Milliseconds(), 5000)

	require.NoError(t, s.PutOAuthSession(ctx, "sess", []byte("blob"), 10*time.Minute))
	require.Equal(t, "blob", raw.Get(ctx, "crs:oauth:session:sess").Val())
	require.InDelta(t, (10 * time.Minute).Seconds(), raw.TTL(ctx, "crs:oauth:session:sess").Val().Seconds(), 5)

	require.NoError(t, s.PutConfigBlob(ctx, "notification_targets", []byte("cfg")))
	require.Equal(t, "cfg", raw.Get(ctx, "crs:config:notification_targets").Val())
	require.Equal(t, time.Duration(-1), raw.TTL(ctx, "crs:config:notification_targets").Val())
}
