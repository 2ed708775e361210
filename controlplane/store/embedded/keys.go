package embedded

import (
	"context"
	"fmt"
	"slices"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"

	"github.com/crsrelay/crs/controlplane/store"
	"github.com/crsrelay/crs/controlplane/store/internal/records"
	crsv1 "github.com/crsrelay/crs/gen/crs/v1"
)

// CreateKey implements [store.Store.CreateKey].
func (s *Store) CreateKey(ctx context.Context, k *store.Key) error {
	if err := records.CheckKey(k); err != nil {
		return err
	}
	id := k.Key.GetId()
	rec, err := encodeKey(k)
	if err != nil {
		return err
	}
	return s.update(ctx, func(tx *bolt.Tx, ch *changes) error {
		keys, byHash := tx.Bucket(bucketKeys), tx.Bucket(bucketKeyHash)
		if keys.Get([]byte(id)) != nil {
			return fmt.Errorf("create key %s: %w", id, store.ErrAlreadyExists)
		}
		if byHash.Get([]byte(k.Hash)) != nil {
			return fmt.Errorf("create key %s: hash in use: %w", id, store.ErrAlreadyExists)
		}
		if err := byHash.Put([]byte(k.Hash), []byte(id)); err != nil {
			return fmt.Errorf("create key %s: %w", id, err)
		}
		if err := keys.Put([]byte(id), rec); err != nil {
			return fmt.Errorf("create key %s: %w", id, err)
		}
		ch.add(store.KindKey, id)
		return nil
	})
}

// GetKey implements [store.Store.GetKey].
func (s *Store) GetKey(ctx context.Context, id string) (*store.Key, error) {
	var k *store.Key
	err := s.view(ctx, func(tx *bolt.Tx) error {
		var err error
		k, err = getKey(tx, id)
		return err
	})
	return k, err
}

// KeyByHash implements [store.Store.KeyByHash].
func (s *Store) KeyByHash(ctx context.Context, hash string) (*store.Key, error) {
	var k *store.Key
	err := s.view(ctx, func(tx *bolt.Tx) error {
		id := tx.Bucket(bucketKeyHash).Get([]byte(hash))
		if id == nil {
			return fmt.Errorf("key by hash: %w", store.ErrNotFound)
		}
		var err error
		k, err = getKey(tx, string(id))
		return err
	})
	return k, err
}

// UpdateKey implements [store.Store.UpdateKey].
func (s *Store) UpdateKey(ctx context.Context, k *store.Key) error {
	if err := records.CheckKey(k); err != nil {
		return err
	}
	id := k.Key.GetId()
	rec, err := encodeKey(k)
	if err != nil {
		return err
	}
	return s.update(ctx, func(tx *bolt.Tx, ch *changes) error {
		keys, byHash := tx.Bucket(bucketKeys), tx.Bucket(bucketKeyHash)
		old, err := getKey(tx, id)
		if err != nil {
			return fmt.Errorf("update key: %w", err)
		}
		if old.Hash != k.Hash {
			if byHash.Get([]byte(k.Hash)) != nil {
				return fmt.Errorf("update key %s: hash in use: %w", id, store.ErrAlreadyExists)
			}
			if err := byHash.Delete([]byte(old.Hash)); err != nil {
				return fmt.Errorf("update key %s: %w", id, err)
			}
			if err := byHash.Put([]byte(k.Hash), []byte(id)); err != nil {
				return fmt.Errorf("update key %s: %w", id, err)
			}
		}
		if err := keys.Put([]byte(id), rec); err != nil {
			return fmt.Errorf("update key %s: %w", id, err)
		}
		ch.add(store.KindKey, id)
		return nil
	})
}

// DeleteKey implements [store.Store.DeleteKey].
func (s *Store) DeleteKey(ctx context.Context, id string) error {
	return s.update(ctx, func(tx *bolt.Tx, ch *changes) error {
		old, err := getKey(tx, id)
		if err != nil {
			return fmt.Errorf("delete key: %w", err)
		}
		if err := tx.Bucket(bucketKeyHash).Delete([]byte(old.Hash)); err != nil {
			return fmt.Errorf("delete key %s: %w", id, err)
		}
		if err := tx.Bucket(bucketKeys).Delete([]byte(id)); err != nil {
			return fmt.Errorf("delete key %s: %w", id, err)
		}
		ch.add(store.KindKey, id)
		return nil
	})
}

// ListKeys implements [store.Store.ListKeys].
func (s *Store) ListKeys(ctx context.Context) ([]*store.Key, error) {
	var out []*store.Key
	err := s.view(ctx, func(tx *bolt.Tx) error {
		return tx.Bucket(bucketKeys).ForEach(func(id, v []byte) error {
			k, err := decodeKey(v)
			if err != nil {
				return fmt.Errorf("list keys: key %s: %w", id, err)
			}
			out = append(out, k)
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	slices.SortFunc(out, func(a, b *store.Key) int {
		return records.CompareCreated(a.Key.GetCreatedAt(), a.Key.GetId(), b.Key.GetCreatedAt(), b.Key.GetId())
	})
	return out, nil
}

func encodeKey(k *store.Key) ([]byte, error) {
	msg, err := proto.Marshal(k.Key)
	if err != nil {
		return nil, fmt.Errorf("encode key %s: %w", k.Key.GetId(), err)
	}
	return envelope{msg: msg, extra: []byte(k.Hash)}.marshal(), nil
}

func decodeKey(v []byte) (*store.Key, error) {
	env, err := unmarshalEnvelope(v)
	if err != nil {
		return nil, err
	}
	var msg crsv1.ApiKey
	if err := proto.Unmarshal(env.msg, &msg); err != nil {
		return nil, fmt.Errorf("decode key: %w", err)
	}
	return &store.Key{Key: &msg, Hash: string(env.extra)}, nil
}

func getKey(tx *bolt.Tx, id string) (*store.Key, error) {
	v := tx.Bucket(bucketKeys).Get([]byte(id))
	if v == nil {
		return nil, fmt.Errorf("key %s: %w", id, store.ErrNotFound)
	}
	k, err := decodeKey(v)
	if err != nil {
		return nil, fmt.Errorf("key %s: %w", id, err)
	}
	return k, nil
}
