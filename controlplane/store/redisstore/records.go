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

// CreateGroup implements [store.Store.CreateGroup].
func (s *Store) CreateGroup(ctx context.Context, g *crsv1.AccountGroup) error {
	return s.putGroup(ctx, g, "create")
}

// UpdateGroup implements [store.Store.UpdateGroup].
func (s *Store) UpdateGroup(ctx context.Context, g *crsv1.AccountGroup) error {
	return s.putGroup(ctx, g, "update")
}

func (s *Store) putGroup(ctx context.Context, g *crsv1.AccountGroup, mode string) error {
	if g == nil || g.GetId() == "" {
		return fmt.Errorf("store group: empty id")
	}
	id := g.GetId()
	pb, err := proto.Marshal(g)
	if err != nil {
		return fmt.Errorf("encode group %s: %w", id, err)
	}
	return s.runScript(ctx, putRecordScript, mode+" group "+id,
		[]string{groupPrefix + id, groupsSet}, id, pb, mode, changePayload(store.KindGroup, id))
}

// GetGroup implements [store.Store.GetGroup].
func (s *Store) GetGroup(ctx context.Context, id string) (*crsv1.AccountGroup, error) {
	pb, err := s.rdb.Get(ctx, groupPrefix+id).Bytes()
	if isNil(err) {
		return nil, fmt.Errorf("group %s: %w", id, store.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("get group %s: %w", id, err)
	}
	var g crsv1.AccountGroup
	if err := proto.Unmarshal(pb, &g); err != nil {
		return nil, fmt.Errorf("decode group %s: %w", id, err)
	}
	return &g, nil
}

// DeleteGroup implements [store.Store.DeleteGroup].
func (s *Store) DeleteGroup(ctx context.Context, id string) error {
	return s.runScript(ctx, deleteRecordScript, "delete group "+id,
		[]string{groupPrefix + id, groupsSet}, id, changePayload(store.KindGroup, id))
}

// ListGroups implements [store.Store.ListGroups]: ordered by creation time, then id.
func (s *Store) ListGroups(ctx context.Context) ([]*crsv1.AccountGroup, error) {
	ids, err := s.rdb.SMembers(ctx, groupsSet).Result()
	if err != nil {
		return nil, fmt.Errorf("list groups: %w", err)
	}
	pipe := s.rdb.Pipeline()
	cmds := make([]*redis.StringCmd, len(ids))
	for i, id := range ids {
		cmds[i] = pipe.Get(ctx, groupPrefix+id)
	}
	if _, err := pipe.Exec(ctx); err != nil && !isNil(err) {
		return nil, fmt.Errorf("list groups: %w", err)
	}
	out := make([]*crsv1.AccountGroup, 0, len(ids))
	for i, c := range cmds {
		pb, err := c.Bytes()
		if isNil(err) {
			continue // deleted since SMEMBERS
		}
		if err != nil {
			return nil, fmt.Errorf("list groups: %w", err)
		}
		var g crsv1.AccountGroup
		if err := proto.Unmarshal(pb, &g); err != nil {
			return nil, fmt.Errorf("list groups: decode group %s: %w", ids[i], err)
		}
		out = append(out, &g)
	}
	slices.SortFunc(out, func(a, b *crsv1.AccountGroup) int {
		return records.CompareCreated(a.GetCreatedAt(), a.GetId(), b.GetCreatedAt(), b.GetId())
	})
	return out, nil
}

// GetSettings implements [store.Store.GetSettings].
func (s *Store) GetSettings(ctx context.Context) (*crsv1.Settings, error) {
	pb, err := s.rdb.Get(ctx, settingsKey).Bytes()
	if isNil(err) {
		return nil, fmt.Errorf("settings: %w", store.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("get settings: %w", err)
	}
	var st crsv1.Settings
	if err := proto.Unmarshal(pb, &st); err != nil {
		return nil, fmt.Errorf("decode settings: %w", err)
	}
	return &st, nil
}

// PutSettings implements [store.Store.PutSettings].
func (s *Store) PutSettings(ctx context.Context, st *crsv1.Settings) error {
	if st == nil {
		return fmt.Errorf("put settings: nil settings")
	}
	pb, err := proto.Marshal(st)
	if err != nil {
		return fmt.Errorf("encode settings: %w", err)
	}
	return s.runScript(ctx, setAndPublishScript, "put settings",
		[]string{settingsKey}, pb, changePayload(store.KindSettings, ""))
}

// GetSecret implements [store.Store.GetSecret].
func (s *Store) GetSecret(ctx context.Context, name string) ([]byte, error) {
	v, err := s.rdb.Get(ctx, secretPrefix+name).Bytes()
	if isNil(err) {
		return nil, fmt.Errorf("secret %s: %w", name, store.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("get secret %s: %w", name, err)
	}
	return v, nil
}

// PutSecretIfAbsent implements [store.Store.PutSecretIfAbsent].
func (s *Store) PutSecretIfAbsent(ctx context.Context, name string, value []byte) ([]byte, error) {
	if name == "" {
		return nil, fmt.Errorf("put secret: empty name")
	}
	v, err := setIfAbsentScript.Run(ctx, s.rdb, []string{secretPrefix + name}, value).Text()
	if err != nil {
		return nil, fmt.Errorf("put secret %s: %w", name, err)
	}
	return []byte(v), nil
}
