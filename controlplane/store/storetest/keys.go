package storetest

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/crsrelay/crs/controlplane/store"
	crsv1 "github.com/crsrelay/crs/gen/crs/v1"
)

func newKey(id, hash string, created int64) *store.Key {
	return &store.Key{
		Key: &crsv1.ApiKey{
			Id:               id,
			Name:             "key " + id,
			KeyPreview:       "cr_1a2b",
			HashScheme:       "hmac-sha256",
			IsActive:         true,
			DailyCostLimit:   12.5,
			Permissions:      []string{"claude"},
			ServiceRates:     map[string]float64{"claude": 0.5},
			RestrictedModels: []string{"claude-opus-4"},
			CreatedAt:        ts(created),
			UpdatedAt:        ts(created),
		},
		Hash: hash,
	}
}

var keyTests = []test{
	{"CreateGetAndByHash", func(t *testing.T, s store.Store) {
		k := newKey("k1", "h1", 1)
		require.NoError(t, s.CreateKey(ctx(t), k))

		got, err := s.GetKey(ctx(t), "k1")
		require.NoError(t, err)
		requireEqual(t, k, got)

		got, err = s.KeyByHash(ctx(t), "h1")
		require.NoError(t, err)
		requireEqual(t, k, got)

		// The store keeps its own copy: mutating what was passed or returned changes nothing.
		k.Key.Name = "mutated"
		got.Key.Name = "mutated too"
		again, err := s.GetKey(ctx(t), "k1")
		require.NoError(t, err)
		require.Equal(t, "key k1", again.Key.GetName())
	}},
	{"CreateDuplicate", func(t *testing.T, s store.Store) {
		require.NoError(t, s.CreateKey(ctx(t), newKey("k1", "h1", 1)))
		for _, tc := range []struct {
			name string
			key  *store.Key
		}{
			{"same id", newKey("k1", "h2", 2)},
			{"same hash", newKey("k2", "h1", 2)},
		} {
			t.Run(tc.name, func(t *testing.T) {
				require.ErrorIs(t, s.CreateKey(ctx(t), tc.key), store.ErrAlreadyExists)
			})
		}
		// Neither failed create left anything behind.
		_, err := s.GetKey(ctx(t), "k2")
		require.ErrorIs(t, err, store.ErrNotFound)
		_, err = s.KeyByHash(ctx(t), "h2")
		require.ErrorIs(t, err, store.ErrNotFound)
		got, err := s.KeyByHash(ctx(t), "h1")
		require.NoError(t, err)
		require.Equal(t, "k1", got.Key.GetId())
	}},
	{"UpdateReplacesRecord", func(t *testing.T, s store.Store) {
		require.NoError(t, s.CreateKey(ctx(t), newKey("k1", "h1", 1)))
		k := newKey("k1", "h1", 1)
		k.Key.Name = "renamed"
		k.Key.IsActive = false
		k.Key.Permissions = nil
		k.Key.UpdatedAt = ts(50)
		require.NoError(t, s.UpdateKey(ctx(t), k))
		got, err := s.GetKey(ctx(t), "k1")
		require.NoError(t, err)
		requireEqual(t, k, got)
		got, err = s.KeyByHash(ctx(t), "h1")
		require.NoError(t, err)
		requireEqual(t, k, got)
	}},
	{"UpdateChangesHash", func(t *testing.T, s store.Store) {
		require.NoError(t, s.CreateKey(ctx(t), newKey("k1", "old", 1)))
		k := newKey("k1", "new", 1)
		require.NoError(t, s.UpdateKey(ctx(t), k))

		_, err := s.KeyByHash(ctx(t), "old")
		require.ErrorIs(t, err, store.ErrNotFound, "the old hash must stop finding the key")
		got, err := s.KeyByHash(ctx(t), "new")
		require.NoError(t, err)
		requireEqual(t, k, got)

		// The old hash is free again.
		require.NoError(t, s.CreateKey(ctx(t), newKey("k2", "old", 2)))
	}},
	{"UpdateToTakenHash", func(t *testing.T, s store.Store) {
		require.NoError(t, s.CreateKey(ctx(t), newKey("k1", "h1", 1)))
		require.NoError(t, s.CreateKey(ctx(t), newKey("k2", "h2", 2)))
		require.ErrorIs(t, s.UpdateKey(ctx(t), newKey("k2", "h1", 2)), store.ErrAlreadyExists)
		got, err := s.KeyByHash(ctx(t), "h1")
		require.NoError(t, err)
		require.Equal(t, "k1", got.Key.GetId())
		got, err = s.KeyByHash(ctx(t), "h2")
		require.NoError(t, err)
		require.Equal(t, "k2", got.Key.GetId())
	}},
	{"Delete", func(t *testing.T, s store.Store) {
		require.NoError(t, s.CreateKey(ctx(t), newKey("k1", "h1", 1)))
		require.NoError(t, s.CreateKey(ctx(t), newKey("k2", "h2", 2)))
		require.NoError(t, s.DeleteKey(ctx(t), "k1"))
		_, err := s.GetKey(ctx(t), "k1")
		require.ErrorIs(t, err, store.ErrNotFound)
		_, err = s.KeyByHash(ctx(t), "h1")
		require.ErrorIs(t, err, store.ErrNotFound)
		require.ErrorIs(t, s.DeleteKey(ctx(t), "k1"), store.ErrNotFound)
		list, err := s.ListKeys(ctx(t))
		require.NoError(t, err)
		require.Len(t, list, 1)
		require.Equal(t, "k2", list[0].Key.GetId())
		// Id and hash can be used again.
		require.NoError(t, s.CreateKey(ctx(t), newKey("k1", "h1", 3)))
	}},
	{"UnknownID", func(t *testing.T, s store.Store) {
		_, err := s.GetKey(ctx(t), "nope")
		require.ErrorIs(t, err, store.ErrNotFound)
		_, err = s.KeyByHash(ctx(t), "nope")
		require.ErrorIs(t, err, store.ErrNotFound)
		require.ErrorIs(t, s.UpdateKey(ctx(t), newKey("nope", "h", 1)), store.ErrNotFound)
		require.ErrorIs(t, s.DeleteKey(ctx(t), "nope"), store.ErrNotFound)
		// A failed update must not have claimed the hash.
		_, err = s.KeyByHash(ctx(t), "h")
		require.ErrorIs(t, err, store.ErrNotFound)
	}},
	{"ListOrder", func(t *testing.T, s store.Store) {
		list, err := s.ListKeys(ctx(t))
		require.NoError(t, err)
		require.Empty(t, list)
		// Created out of order; "b" and "a" share a creation time, so id breaks the tie.
		for _, k := range []*store.Key{
			newKey("c", "hc", 30), newKey("b", "hb", 10), newKey("d", "hd", 5), newKey("a", "ha", 10),
		} {
			require.NoError(t, s.CreateKey(ctx(t), k))
		}
		list, err = s.ListKeys(ctx(t))
		require.NoError(t, err)
		var ids []string
		for _, k := range list {
			ids = append(ids, k.Key.GetId())
			require.Equal(t, "h"+k.Key.GetId(), k.Hash)
		}
		require.Equal(t, []string{"d", "a", "b", "c"}, ids)
	}},
	{"ListMany", func(t *testing.T, s store.Store) {
		const n = 120
		for i := range n {
			require.NoError(t, s.CreateKey(ctx(t), newKey(fmt.Sprintf("k%03d", i), fmt.Sprintf("h%03d", i), int64(n-i))))
		}
		list, err := s.ListKeys(ctx(t))
		require.NoError(t, err)
		require.Len(t, list, n)
		require.Equal(t, fmt.Sprintf("k%03d", n-1), list[0].Key.GetId())
		require.Equal(t, "k000", list[n-1].Key.GetId())
	}},
}
