package storetest

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/crsrelay/crs/controlplane/store"
	crsv1 "github.com/crsrelay/crs/gen/crs/v1"
)

func newGroup(id string, created int64) *crsv1.AccountGroup {
	return &crsv1.AccountGroup{
		Id:          id,
		Name:        "group " + id,
		Platform:    "claude",
		Description: "test group",
		AccountIds:  []string{"a1", "a2"},
		CreatedAt:   ts(created),
		UpdatedAt:   ts(created),
	}
}

var groupTests = []test{
	{"CRUD", func(t *testing.T, s store.Store) {
		g := newGroup("g1", 1)
		require.NoError(t, s.CreateGroup(ctx(t), g))
		got, err := s.GetGroup(ctx(t), "g1")
		require.NoError(t, err)
		requireEqual(t, g, got)
		require.ErrorIs(t, s.CreateGroup(ctx(t), newGroup("g1", 2)), store.ErrAlreadyExists)

		upd := newGroup("g1", 1)
		upd.AccountIds = []string{"a3"}
		upd.Name = "renamed"
		require.NoError(t, s.UpdateGroup(ctx(t), upd))
		got, err = s.GetGroup(ctx(t), "g1")
		require.NoError(t, err)
		requireEqual(t, upd, got)

		require.NoError(t, s.DeleteGroup(ctx(t), "g1"))
		_, err = s.GetGroup(ctx(t), "g1")
		require.ErrorIs(t, err, store.ErrNotFound)
	}},
	{"UnknownID", func(t *testing.T, s store.Store) {
		_, err := s.GetGroup(ctx(t), "nope")
		require.ErrorIs(t, err, store.ErrNotFound)
		require.ErrorIs(t, s.UpdateGroup(ctx(t), newGroup("nope", 1)), store.ErrNotFound)
		require.ErrorIs(t, s.DeleteGroup(ctx(t), "nope"), store.ErrNotFound)
		_, err = s.GetGroup(ctx(t), "nope")
		require.ErrorIs(t, err, store.ErrNotFound, "a failed update must not create")
	}},
	{"ListOrder", func(t *testing.T, s store.Store) {
		list, err := s.ListGroups(ctx(t))
		require.NoError(t, err)
		require.Empty(t, list)
		for _, g := range []*crsv1.AccountGroup{newGroup("z", 1), newGroup("y", 2), newGroup("b", 2), newGroup("a", 3)} {
			require.NoError(t, s.CreateGroup(ctx(t), g))
		}
		list, err = s.ListGroups(ctx(t))
		require.NoError(t, err)
		requireEqual(t, []*crsv1.AccountGroup{newGroup("z", 1), newGroup("b", 2), newGroup("y", 2), newGroup("a", 3)}, list)
	}},
}

var settingsTests = []test{
	{"NotFoundThenPut", func(t *testing.T, s store.Store) {
		_, err := s.GetSettings(ctx(t))
		require.ErrorIs(t, err, store.ErrNotFound)

		st := &crsv1.Settings{
			ServiceRates:             map[string]float64{"claude": 1.5},
			ClaudeCodeOnlyEnabled:    true,
			StickySessionTtl:         durationpb.New(time.Hour),
			DedicatedAccountFallback: true,
		}
		require.NoError(t, s.PutSettings(ctx(t), st))
		got, err := s.GetSettings(ctx(t))
		require.NoError(t, err)
		requireEqual(t, st, got)

		st2 := &crsv1.Settings{ConcurrentRequestQueueMaxSize: 7}
		require.NoError(t, s.PutSettings(ctx(t), st2))
		got, err = s.GetSettings(ctx(t))
		require.NoError(t, err)
		requireEqual(t, st2, got, "put replaces the whole settings")
	}},
}

var secretTests = []test{
	{"PutIfAbsent", func(t *testing.T, s store.Store) {
		_, err := s.GetSecret(ctx(t), "fleet_token")
		require.ErrorIs(t, err, store.ErrNotFound)

		got, err := s.PutSecretIfAbsent(ctx(t), "fleet_token", []byte("first"))
		require.NoError(t, err)
		require.Equal(t, []byte("first"), got)

		got, err = s.PutSecretIfAbsent(ctx(t), "fleet_token", []byte("second"))
		require.NoError(t, err)
		require.Equal(t, []byte("first"), got, "a later caller gets the first value")

		got, err = s.GetSecret(ctx(t), "fleet_token")
		require.NoError(t, err)
		require.Equal(t, []byte("first"), got)

		// Binary values survive; names are independent.
		bin := []byte{0, 1, 2, 0xff, 0}
		got, err = s.PutSecretIfAbsent(ctx(t), "hmac_key", bin)
		require.NoError(t, err)
		require.Equal(t, bin, got)
		got, err = s.GetSecret(ctx(t), "hmac_key")
		require.NoError(t, err)
		require.Equal(t, bin, got)

		got, err = s.PutSecretIfAbsent(ctx(t), "empty", []byte{})
		require.NoError(t, err)
		require.Empty(t, got)
		got, err = s.GetSecret(ctx(t), "empty")
		require.NoError(t, err, "an empty secret exists")
		require.Empty(t, got)
		got, err = s.PutSecretIfAbsent(ctx(t), "empty", []byte("late"))
		require.NoError(t, err)
		require.Empty(t, got, "an empty secret is not replaced")
	}},
	{"ConcurrentPutIfAbsentAgree", func(t *testing.T, s store.Store) {
		const n = 12
		results := make([][]byte, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				v, err := s.PutSecretIfAbsent(ctx(t), "encryption_key", fmt.Appendf(nil, "value-%d", i))
				if err != nil {
					t.Errorf("put %d: %v", i, err)
				}
				results[i] = v
			})
		}
		wg.Wait()
		for i := range n {
			require.Equal(t, results[0], results[i], "every caller sees the one stored value")
		}
		stored, err := s.GetSecret(ctx(t), "encryption_key")
		require.NoError(t, err)
		require.Equal(t, results[0], stored)
	}},
}

var pingTests = []test{
	{"Reachable", func(t *testing.T, s store.Store) {
		require.NoError(t, s.Ping(ctx(t)))
	}},
	{"AfterClose", func(t *testing.T, s store.Store) {
		require.NoError(t, s.Close())
		require.Error(t, s.Ping(ctx(t)), "a closed store is not ready")
	}},
}
