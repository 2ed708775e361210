package storetest

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/crsrelay/crs/controlplane/store"
)

// RunCoord runs the conformance suite of [store.Coordinator] (leases, OAuth sessions, config
// blobs). newStore must return a fresh, empty store implementing store.Coordinator, closed by
// t.Cleanup; WithReopen enables the durability test of config blobs. Subtests run in parallel.
func RunCoord(t *testing.T, newStore func(t *testing.T) store.Store, opts ...Option) {
	var cfg config
	for _, o := range opts {
		o(&cfg)
	}
	coord := func(t *testing.T) store.Coordinator {
		s := newStore(t)
		c, ok := s.(store.Coordinator)
		require.True(t, ok, "%T does not implement store.Coordinator", s)
		return c
	}
	for _, tc := range coordTests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.run(t, coord(t))
		})
	}
	t.Run("ConfigBlobSurvivesReopen", func(t *testing.T) {
		if cfg.reopen == nil {
			t.Skip("backend is not durable across Close (no WithReopen)")
		}
		t.Parallel()
		s := newStore(t)
		require.NoError(t, s.(store.Coordinator).PutConfigBlob(ctx(t), "n", []byte("kept")))
		require.NoError(t, s.Close())
		again := cfg.reopen(t, s).(store.Coordinator)
		got, err := again.GetConfigBlob(ctx(t), "n")
		require.NoError(t, err)
		require.Equal(t, []byte("kept"), got)
	})
}

type coordTest struct {
	name string
	run  func(t *testing.T, s store.Coordinator)
}

var coordTests = []coordTest{
	{"LockExclusiveAndReentrant", func(t *testing.T, s store.Coordinator) {
		got, err := s.TryLock(ctx(t), "refresh:a1", "o1", time.Minute)
		require.NoError(t, err)
		require.True(t, got, "a free lease is taken")
		got, err = s.TryLock(ctx(t), "refresh:a1", "o2", time.Minute)
		require.NoError(t, err)
		require.False(t, got, "another owner must not take a held lease")
		got, err = s.TryLock(ctx(t), "refresh:a1", "o1", time.Minute)
		require.NoError(t, err)
		require.True(t, got, "the owner extends its own lease")
		got, err = s.TryLock(ctx(t), "refresh:a2", "o2", time.Minute)
		require.NoError(t, err)
		require.True(t, got, "leases are per name")
	}},
	{"UnlockComparesOwner", func(t *testing.T, s store.Coordinator) {
		got, err := s.TryLock(ctx(t), "l", "o1", time.Minute)
		require.NoError(t, err)
		require.True(t, got)
		require.NoError(t, s.Unlock(ctx(t), "l", "o2"), "unlocking someone else's lease is a no-op")
		got, err = s.TryLock(ctx(t), "l", "o2", time.Minute)
		require.NoError(t, err)
		require.False(t, got, "a wrong owner's unlock must not release the lease")
		require.NoError(t, s.Unlock(ctx(t), "l", "o1"))
		got, err = s.TryLock(ctx(t), "l", "o2", time.Minute)
		require.NoError(t, err)
		require.True(t, got, "released by its owner")
		require.NoError(t, s.Unlock(ctx(t), "never-locked", "o1"))
	}},
	{"LockExpires", func(t *testing.T, s store.Coordinator) {
		got, err := s.TryLock(ctx(t), "l", "o1", 100*time.Millisecond)
		require.NoError(t, err)
		require.True(t, got)
		require.Eventually(t, func() bool {
			got, err := s.TryLock(ctx(t), "l", "o2", time.Minute)
			require.NoError(t, err)
			return got
		}, 5*time.Second, 20*time.Millisecond, "an expired lease is free")
		got, err = s.TryLock(ctx(t), "l", "o1", time.Minute)
		require.NoError(t, err)
		require.False(t, got, "the old owner lost it")
	}},
	{"LockRejectsBadArguments", func(t *testing.T, s store.Coordinator) {
		_, err := s.TryLock(ctx(t), "l", "o1", 0)
		require.Error(t, err)
		_, err = s.TryLock(ctx(t), "l", "", time.Minute)
		require.Error(t, err)
	}},
	{"LockOneWinnerUnderContention", func(t *testing.T, s store.Coordinator) {
		var wins atomic.Int32
		var wg sync.WaitGroup
		for i := range 16 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				got, err := s.TryLock(ctx(t), "contended", fmt.Sprintf("owner-%d", i), time.Minute)
				if err == nil && got {
					wins.Add(1)
				}
			}()
		}
		wg.Wait()
		require.Equal(t, int32(1), wins.Load())
	}},
	{"OAuthSessionTakenOnce", func(t *testing.T, s store.Coordinator) {
		require.NoError(t, s.PutOAuthSession(ctx(t), "s1", []byte("first"), time.Minute))
		require.NoError(t, s.PutOAuthSession(ctx(t), "s1", []byte("blob"), time.Minute), "put replaces")
		got, err := s.TakeOAuthSession(ctx(t), "s1")
		require.NoError(t, err)
		require.Equal(t, []byte("blob"), got)
		_, err = s.TakeOAuthSession(ctx(t), "s1")
		require.ErrorIs(t, err, store.ErrNotFound, "a session is taken once")
		_, err = s.TakeOAuthSession(ctx(t), "unknown")
		require.ErrorIs(t, err, store.ErrNotFound)
		require.Error(t, s.PutOAuthSession(ctx(t), "s2", []byte("x"), 0), "ttl must be positive")
	}},
	{"OAuthSessionExpires", func(t *testing.T, s store.Coordinator) {
		require.NoError(t, s.PutOAuthSession(ctx(t), "s1", []byte("blob"), 100*time.Millisecond))
		time.Sleep(250 * time.Millisecond)
		_, err := s.TakeOAuthSession(ctx(t), "s1")
		require.ErrorIs(t, err, store.ErrNotFound)
	}},
	{"OAuthSessionOneTakerUnderContention", func(t *testing.T, s store.Coordinator) {
		require.NoError(t, s.PutOAuthSession(ctx(t), "s1", []byte("blob"), time.Minute))
		var wins atomic.Int32
		var wg sync.WaitGroup
		for range 16 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if b, err := s.TakeOAuthSession(ctx(t), "s1"); err == nil && string(b) == "blob" {
					wins.Add(1)
				}
			}()
		}
		wg.Wait()
		require.Equal(t, int32(1), wins.Load())
	}},
	{"ConfigBlob", func(t *testing.T, s store.Coordinator) {
		_, err := s.GetConfigBlob(ctx(t), "notification_targets")
		require.ErrorIs(t, err, store.ErrNotFound)
		blob := []byte("v1")
		require.NoError(t, s.PutConfigBlob(ctx(t), "notification_targets", blob))
		blob[0] = 'X' // the store must have copied it
		got, err := s.GetConfigBlob(ctx(t), "notification_targets")
		require.NoError(t, err)
		require.Equal(t, []byte("v1"), got)
		require.NoError(t, s.PutConfigBlob(ctx(t), "notification_targets", []byte("v2")))
		got, err = s.GetConfigBlob(ctx(t), "notification_targets")
		require.NoError(t, err)
		require.Equal(t, []byte("v2"), got)
		_, err = s.GetConfigBlob(ctx(t), "other")
		require.ErrorIs(t, err, store.ErrNotFound, "blobs are per name")
	}},
}
