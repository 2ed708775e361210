package redisstore

import (
	"context"
	"fmt"
	"slices"

	"github.com/redis/go-redis/v9"
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
	pb, err := proto.Marshal(k.Key)
	if err != nil {
		return fmt.Errorf("encode key %s: %w", id, err)
	}
	return s.runScript(ctx, createKeyScript, "create key "+id,
		[]string{keyPrefix + id, keyHashPrefix + k.Hash, keysSet},
		id, pb, k.Hash, changePayload(store.KindKey, id))
}

// GetKey implements [store.Store.GetKey].
func (s *Store) GetKey(ctx context.Context, id string) (*store.Key, error) {
	vals, err := s.rdb.HMGet(ctx, keyPrefix+id, "pb", "hash").Result()
	if err != nil {
		return nil, fmt.Errorf("get key %s: %w", id, err)
	}
	return decodeKey(id, vals)
}

// KeyByHash implements [store.Store.KeyByHash].
func (s *Store) KeyByHash(ctx context.Context, hash string) (*store.Key, error) {
	id, err := s.rdb.Get(ctx, keyHashPrefix+hash).Result()
	if isNil(err) {
		return nil, fmt.Errorf("key by hash: %w", store.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("key by hash: %w", err)
	}
	return s.GetKey(ctx, id)
}

// UpdateKey implements [store.Store.UpdateKey].
func (s *Store) UpdateKey(ctx context.Context, k *store.Key) error {
	if err := records.CheckKey(k); err != nil {
		return err
	}
	id := k.Key.GetId()
	pb, err := proto.Marshal(k.Key)
	if err != nil {
		return fmt.Errorf("encode key %s: %w", id, err)
	}
	return s.runScript(ctx, updateKeyScript, "update key "+id,
		[]string{keyPrefix + id, keyHashPrefix + k.Hash},
		id, pb, k.Hash, changePayload(store.KindKey, id), keyHashPrefix)
}

// DeleteKey implements [store.Store.DeleteKey].
func (s *Store) DeleteKey(ctx context.Context, id string) error {
	return s.runScript(ctx, deleteKeyScript, "delete key "+id,
		[]string{keyPrefix + id, keysSet},
		id, changePayload(store.KindKey, id), keyHashPrefix)
}

// ListKeys implements [store.Store.ListKeys].
func (s *Store) ListKeys(ctx context.Context) ([]*store.Key, error) {
	ids, err := s.rdb.SMembers(ctx, keysSet).Result()
	if err != nil {
		return nil, fmt.Errorf("list keys: %w", err)
	}
	pipe := s.rdb.Pipeline()
	cmds := make([]*redis.SliceCmd, len(ids))
	for i, id := range ids {
		cmds[i] = pipe.HMGet(ctx, keyPrefix+id, "pb", "hash")
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, fmt.Errorf("list keys: %w", err)
	}
	out := make([]*store.Key, 0, len(ids))
	for i, c := range cmds {
		k, err := decodeKey(ids[i], c.Val())
		if isNotFound(err) {
			continue // deleted since SMEMBERS
		}
		if err != nil {
			return nil, fmt.Errorf("list keys: %w", err)
		}
		out = append(out, k)
	}
	slices.SortFunc(out, func(a, b *store.Key) int {
		return records.CompareCreated(a.Key.GetCreatedAt(), a.Key.GetId(), b.Key.GetCreatedAt(), b.Key.GetId())
	})
	return out, nil
}

// decodeKey decodes HMGET pb hash.
func decodeKey(id string, vals []any) (*store.Key, error) {
	pb, ok := vals[0].(string)
	if !ok {
		return nil, fmt.Errorf("key %s: %w", id, store.ErrNotFound)
	}
	hash, _ := vals[1].(string)
	var msg crsv1.ApiKey
	if err := proto.Unmarshal([]byte(pb), &msg); err != nil {
		return nil, fmt.Errorf("decode key %s: %w", id, err)
	}
	return &store.Key{Key: &msg, Hash: hash}, nil
}
