package redisstore

import (
	"context"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/crsrelay/crs/controlplane/store"
	"github.com/crsrelay/crs/controlplane/store/storetest"
	crsv1 "github.com/crsrelay/crs/gen/crs/v1"
	"github.com/crsrelay/crs/internal/testenv"
)

func newStore(t *testing.T, url string) *Store {
	t.Helper()
	s, err := New(t.Context(), url)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, s.Close()) })
	return s
}

func TestConformance(t *testing.T) {
	// Every store gets a throwaway server of its own, so parallel subtests cannot see each other.
	storetest.Run(t,
		func(t *testing.T) store.Store { return newStore(t, "redis://"+testenv.StartRedis(t)+"/0") },
		storetest.WithReopen(func(t *testing.T, closed store.Store) store.Store {
			return newStore(t, "redis://"+closed.(*Store).rdb.Options().Addr+"/0")
		}),
	)
}

func TestReplicasSeeEachOthersChanges(t *testing.T) {
	url := "redis://" + testenv.StartRedis(t) + "/0"
	a, b := newStore(t, url), newStore(t, url)
	chA, err := a.Watch(t.Context())
	require.NoError(t, err)
	chB, err := b.Watch(t.Context())
	require.NoError(t, err)

	require.NoError(t, a.CreateGroup(t.Context(), &crsv1.AccountGroup{Id: "g1", Name: "g"}))
	storetest.ExpectChanges(t, chA, store.Change{Kind: store.KindGroup, ID: "g1"})
	storetest.ExpectChanges(t, chB, store.Change{Kind: store.KindGroup, ID: "g1"})

	got, err := b.GetGroup(t.Context(), "g1")
	require.NoError(t, err)
	require.Equal(t, "g", got.GetName())

	_, err = b.RecordUsage(t.Context(), &store.UsageEntry{
		Record: &crsv1.UsageRecord{RequestId: "r1", KeyId: "k1", Model: "m"}, Day: "2026-11-26",
	})
	require.NoError(t, err)
	storetest.ExpectChanges(t, chA, store.Change{Kind: store.KindKeyUsage, ID: "k1"})
	storetest.ExpectChanges(t, chB, store.Change{Kind: store.KindKeyUsage, ID: "k1"})

	require.NoError(t, b.DeleteGroup(t.Context(), "g1"))
	storetest.ExpectChanges(t, chA, store.Change{Kind: store.KindGroup, ID: "g1"})
	_, err = a.GetGroup(t.Context(), "g1")
	require.ErrorIs(t, err, store.ErrNotFound)
}

// TestLayout pins the documented key layout that operators and other tools may read.
func TestLayout(t *testing.T) {
	addr := testenv.StartRedis(t)
	s := newStore(t, "redis://"+addr+"/0")
	raw := redis.NewClient(&redis.Options{Addr: addr})
	t.Cleanup(func() { _ = raw.Close() })
	ctx := t.Context()

	sub := raw.Subscribe(ctx, "crs:changes")
	t.Cleanup(func() { _ = sub.Close() })
	_, err := sub.Receive(ctx)
	require.NoError(t, err)

	require.NoError(t, s.CreateKey(ctx, &store.Key{Key: &crsv1.ApiKey{Id: "k1"}, Hash: "abc"}))
	msg, err := sub.ReceiveMessage(ctx)
	require.NoError(t, err)
	require.Equal(t, "key:k1", msg.Payload)
	require.Equal(t, "k1", raw.Get(ctx, "crs:keyhash:abc").Val())
	require.Equal(t, []string{"k1"}, raw.SMembers(ctx, "crs:keys").Val())

	require.NoError(t, s.CreateAccount(ctx, &store.Account{Account: &crsv1.Account{Id: "a1"}, Generation: 4}))
	_, err = sub.ReceiveMessage(ctx)
	require.NoError(t, err)
	require.NoError(t, s.SetAccountStatus(ctx, "a1", &crsv1.AccountStatus{State: "overloaded"}))
	msg, err = sub.ReceiveMessage(ctx)
	require.NoError(t, err)
	require.Equal(t, "account:a1", msg.Payload)
	require.Equal(t, "4", raw.HGet(ctx, "crs:account:a1", "gen").Val())
	require.NotEmpty(t, raw.HGet(ctx, "crs:account:a1", "status").Val())

	require.NoError(t, s.PutSettings(ctx, &crsv1.Settings{}))
	msg, err = sub.ReceiveMessage(ctx)
	require.NoError(t, err)
	require.Equal(t, "settings:", msg.Payload)

	_, err = s.RecordUsage(ctx, &store.UsageEntry{
		Record: &crsv1.UsageRecord{RequestId: "r1", KeyId: "k1", AccountId: "a1", Model: "claude-x",
			InputTokens: 3, OutputTokens: 4, CacheCreation_5MTokens: 5, CacheCreation_1HTokens: 6, CacheReadTokens: 7},
		Cost: 0.5, RatedCost: 0.25, ClaudeFamily: true,
		Hour: "2026-11-26T13", Day: "2026-11-26", Month: "2026-11", Week: "2026-11-23T00",
	})
	require.NoError(t, err)
	msg, err = sub.ReceiveMessage(ctx)
	require.NoError(t, err)
	require.Equal(t, "key_usage:k1", msg.Payload)

	want := map[string]string{
		"requests": "1", "input": "3", "output": "4", "cc5m": "5", "cc1h": "6", "cache_read": "7",
		"all": "25", "cost": "0.5", "rated_cost": "0.25",
	}
	for _, key := range []string{
		"crs:usage:key:k1:total:total", "crs:usage:key:k1:day:2026-11-26:m:claude-x",
		"crs:usage:account:a1:hour:2026-11-26T13", "crs:usage:global::month:2026-11",
		"crs:usage:global::total:total:m:claude-x", "crs:usage:key:k1:week_opus:2026-11-23T00",
	} {
		require.Equal(t, want, raw.HGetAll(ctx, key).Val(), key)
	}
	require.Equal(t, []string{"claude-x"}, raw.SMembers(ctx, "crs:usage:models:global:").Val())
	for key, want := range map[string]time.Duration{
		"crs:usage:key:k1:hour:2026-11-26T13":             35 * 24 * time.Hour,
		"crs:usage:global::hour:2026-11-26T13:m:claude-x": 35 * 24 * time.Hour,
		"crs:usage:key:k1:week_opus:2026-11-23T00":        35 * 24 * time.Hour,
		"crs:usage:account:a1:day:2026-11-26":             400 * 24 * time.Hour,
		"crs:usage:key:k1:month:2026-11":                  -1, // kept
		"crs:usage:key:k1:total:total":                    -1,
	} {
		got := raw.TTL(ctx, key).Val()
		if want < 0 {
			require.Equal(t, want, got, key)
			continue
		}
		require.InDelta(t, want.Seconds(), got.Seconds(), 60, key)
	}
	ttl := raw.TTL(ctx, "crs:usage:req:r1").Val()
	require.InDelta(t, (7 * 24 * time.Hour).Seconds(), ttl.Seconds(), 60)

	_, _, err = s.Bind(ctx, "claude", "sess", "a1", time.Hour, false)
	require.NoError(t, err)
	require.Equal(t, "a1", raw.Get(ctx, "crs:bind:claude:sess").Val())
	require.InDelta(t, time.Hour.Milliseconds(), raw.PTTL(ctx, "crs:bind:claude:sess").Val().Milliseconds(), 5000)

	for _, k := range raw.Keys(ctx, "*").Val() {
		require.True(t, strings.HasPrefix(k, "crs:"), "key %q outside the crs: prefix", k)
	}
}

func TestNewFails(t *testing.T) {
	_, err := New(t.Context(), "http://not-redis")
	require.Error(t, err, "bad URL")

	ctx, cancel := context.WithTimeout(t.Context(), 500*time.Millisecond)
	defer cancel()
	_, err = New(ctx, "redis://127.0.0.1:"+strconv.Itoa(testenv.FreePort(t))+"/0")
	require.Error(t, err, "nothing listening")
}

// BenchmarkRecordUsage measures one usage record: one script with 25 aggregate hashes (about 200
// HINCRBY/HINCRBYFLOAT), 3 model-set adds, the dedup SET NX and a PUBLISH.
func BenchmarkRecordUsage(b *testing.B) {
	s, err := New(b.Context(), "redis://"+testenv.StartRedis(b)+"/0")
	require.NoError(b, err)
	defer s.Close()
	var n atomic.Int64
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			e := &store.UsageEntry{
				Record: &crsv1.UsageRecord{RequestId: strconv.FormatInt(n.Add(1), 10), KeyId: "k1", AccountId: "a1",
					Model: "claude-sonnet-4", InputTokens: 100, OutputTokens: 50, CacheReadTokens: 1000},
				Cost: 0.01, RatedCost: 0.01, ClaudeFamily: true,
				Hour: "2026-11-26T13", Day: "2026-11-26", Month: "2026-11", Week: "2026-11-23T00",
			}
			if _, err := s.RecordUsage(b.Context(), e); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
