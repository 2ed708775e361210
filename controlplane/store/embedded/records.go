package embedded

import (
	"bytes"
	"context"
	"fmt"
	"slices"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"

	"github.com/crsrelay/crs/controlplane/store"
	"github.com/crsrelay/crs/controlplane/store/internal/records"
	crsv1 "github.com/crsrelay/crs/gen/crs/v1"
)

// CreateGroup implements [store.Store.CreateGroup].
func (s *Store) CreateGroup(ctx context.Context, g *crsv1.AccountGroup) error {
	return s.putGroup(ctx, g, true)
}

// UpdateGroup implements [store.Store.UpdateGroup].
func (s *Store) UpdateGroup(ctx context.Context, g *crsv1.AccountGroup) error {
	return s.putGroup(ctx, g, false)
}

func (s *Store) putGroup(ctx context.Context, g *crsv1.AccountGroup, create bool) error {
	if g == nil || g.GetId() == "" {
		return fmt.Errorf("store group: empty id")
	}
	id := g.GetId()
	v, err := proto.Marshal(g)
	if err != nil {
		return fmt.Errorf("encode group %s: %w", id, err)
	}
	return s.update(ctx, func(tx *bolt.Tx, ch *changes) error {
		groups := tx.Bucket(bucketGroups)
		exists := groups.Get([]byte(id)) != nil
		if create && exists {
			return fmt.Errorf("create group %s: %w", id, store.ErrAlreadyExists)
		}
		if !create && !exists {
			return fmt.Errorf("update group %s: %w", id, store.ErrNotFound)
		}
		if err := groups.Put([]byte(id), v); err != nil {
			return fmt.Errorf("write group %s: %w", id, err)
		}
		ch.add(store.KindGroup, id)
		return nil
	})
}

// GetGroup implements [store.Store.GetGroup].
func (s *Store) GetGroup(ctx context.Context, id string) (*crsv1.AccountGroup, error) {
	var g crsv1.AccountGroup
	err := s.view(ctx, func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketGroups).Get([]byte(id))
		if v == nil {
			return fmt.Errorf("group %s: %w", id, store.ErrNotFound)
		}
		if err := proto.Unmarshal(v, &g); err != nil {
			return fmt.Errorf("decode group %s: %w", id, err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return &g, nil
}

// DeleteGroup implements [store.Store.DeleteGroup].
func (s *Store) DeleteGroup(ctx context.Context, id string) error {
	return s.update(ctx, func(tx *bolt.Tx, ch *changes) error {
		groups := tx.Bucket(bucketGroups)
		if groups.Get([]byte(id)) == nil {
			return fmt.Errorf("delete group %s: %w", id, store.ErrNotFound)
		}
		if err := groups.Delete([]byte(id)); err != nil {
			return fmt.Errorf("delete group %s: %w", id, err)
		}
		ch.add(store.KindGroup, id)
		return nil
	})
}

// ListGroups implements [store.Store.ListGroups]: ordered by creation time, then id.
func (s *Store) ListGroups(ctx context.Context) ([]*crsv1.AccountGroup, error) {
	var out []*crsv1.AccountGroup
	err := s.view(ctx, func(tx *bolt.Tx) error {
		return tx.Bucket(bucketGroups).ForEach(func(id, v []byte) error {
			var g crsv1.AccountGroup
			if err := proto.Unmarshal(v, &g); err != nil {
				return fmt.Errorf("list groups: decode group %s: %w", id, err)
			}
			out = append(out, &g)
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	slices.SortFunc(out, func(a, b *crsv1.AccountGroup) int {
		return records.CompareCreated(a.GetCreatedAt(), a.GetId(), b.GetCreatedAt(), b.GetId())
	})
	return out, nil
}

// GetSettings implements [store.Store.GetSettings].
func (s *Store) GetSettings(ctx context.Context) (*crsv1.Settings, error) {
	var st crsv1.Settings
	err := s.view(ctx, func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketSettings).Get(settingsKey)
		if v == nil {
			return fmt.Errorf("settings: %w", store.ErrNotFound)
		}
		if err := proto.Unmarshal(v, &st); err != nil {
			return fmt.Errorf("decode settings: %w", err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return &st, nil
}

// PutSettings implements [store.Store.PutSettings].
func (s *Store) PutSettings(ctx context.Context, st *crsv1.Settings) error {
	if st == nil {
		return fmt.Errorf("put settings: nil settings")
	}
	v, err := proto.Marshal(st)
	if err != nil {
		return fmt.Errorf("encode settings: %w", err)
	}
	return s.update(ctx, func(tx *bolt.Tx, ch *changes) error {
		if err := tx.Bucket(bucketSettings).Put(settingsKey, v); err != nil {
			return fmt.Errorf("put settings: %w", err)
		}
		ch.add(store.KindSettings, "")
		return nil
	})
}

// GetSecret implements [store.Store.GetSecret].
func (s *Store) GetSecret(ctx context.Context, name string) ([]byte, error) {
	var out []byte
	err := s.view(ctx, func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketSecrets).Get([]byte(name))
		if v == nil {
			return fmt.Errorf("secret %s: %w", name, store.ErrNotFound)
		}
		out = bytes.Clone(v)
		return nil
	})
	return out, err
}

// PutSecretIfAbsent implements [store.Store.PutSecretIfAbsent].
func (s *Store) PutSecretIfAbsent(ctx context.Context, name string, value []byte) ([]byte, error) {
	if name == "" {
		return nil, fmt.Errorf("put secret: empty name")
	}
	var out []byte
	err := s.update(ctx, func(tx *bolt.Tx, _ *changes) error {
		b := tx.Bucket(bucketSecrets)
		if v := b.Get([]byte(name)); v != nil {
			out = bytes.Clone(v)
			return nil
		}
		out = bytes.Clone(value)
		if out == nil {
			out = []byte{}
		}
		if err := b.Put([]byte(name), out); err != nil {
			return fmt.Errorf("put secret %s: %w", name, err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}
