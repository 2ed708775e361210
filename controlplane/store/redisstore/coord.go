package redisstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/crsrelay/crs/controlplane/store"
)

// Keys of the coordination records ([store.Coordinator]):
//
//	crs:lock:<name>            STRING owner, with the lease's TTL
//	crs:oauth:session:<id>     STRING sealed session blob, with the session's TTL
//	crs:config:<name>          STRING config blob
const (
	coordLockPrefix    = prefix + "lock:"
	coordSessionPrefix = prefix + "oauth:session:"
	coordConfigPrefix  = prefix + "config:"
)

var _ store.Coordinator = (*Store)(nil)

// coordTryLockScript: KEYS lease. ARGV owner, ttl ms. Takes a free lease or extends the owner's own;
// returns 1 when owner holds the lease afterwards.
var coordTryLockScript = redis.NewScript(`
local cur = redis.call('GET', KEYS[1])
if cur == false then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
if cur == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
`)

// coordUnlockScript: KEYS lease. ARGV owner. Compare-and-delete.
var coordUnlockScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`)

// TryLock implements [store.LockStore.TryLock].
func (s *Store) TryLock(ctx context.Context, name, owner string, ttl time.Duration) (bool, error) {
	if ttl <= 0 {
		return false, fmt.Errorf("lock %s: ttl %s is not positive", name, ttl)
	}
	if name == "" || owner == "" {
		return false, errors.New("lock: empty name or owner")
	}
	ms := max(ttl.Milliseconds(), 1)
	got, err := coordTryLockScript.Run(ctx, s.rdb, []string{coordLockPrefix + name}, owner, ms).Int64()
	if err != nil {
		return false, fmt.Errorf("lock %s: %w", name, err)
	}
	return got == 1, nil
}

// Unlock implements [store.LockStore.Unlock].
func (s *Store) Unlock(ctx context.Context, name, owner string) error {
	if err := coordUnlockScript.Run(ctx, s.rdb, []string{coordLockPrefix + name}, owner).Err(); err != nil {
		return fmt.Errorf("unlock %s: %w", name, err)
	}
	return nil
}

// PutOAuthSession implements [store.OAuthSessionStore.PutOAuthSession].
func (s *Store) PutOAuthSession(ctx context.Context, id string, blob []byte, ttl time.Duration) error {
	if ttl <= 0 {
		return fmt.Errorf("put oauth session: ttl %s is not positive", ttl)
	}
	if id == "" {
		return errors.New("put oauth session: empty id")
	}
	if err := s.rdb.Set(ctx, coordSessionPrefix+id, blob, ttl).Err(); err != nil {
		return fmt.Errorf("put oauth session: %w", err)
	}
	return nil
}

// TakeOAuthSession implements [store.OAuthSessionStore.TakeOAuthSession] with GETDEL (Redis 6.2+).
func (s *Store) TakeOAuthSession(ctx context.Context, id string) ([]byte, error) {
	blob, err := s.rdb.GetDel(ctx, coordSessionPrefix+id).Bytes()
	if isNil(err) {
		return nil, fmt.Errorf("oauth session: %w", store.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("take oauth session: %w", err)
	}
	return blob, nil
}

// GetConfigBlob implements [store.ConfigBlobStore.GetConfigBlob].
func (s *Store) GetConfigBlob(ctx context.Context, name string) ([]byte, error) {
	blob, err := s.rdb.Get(ctx, coordConfigPrefix+name).Bytes()
	if isNil(err) {
		return nil, fmt.Errorf("config %s: %w", name, store.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", name, err)
	}
	return blob, nil
}

// PutConfigBlob implements [store.ConfigBlobStore.PutConfigBlob].
func (s *Store) PutConfigBlob(ctx context.Context, name string, blob []byte) error {
	if name == "" {
		return errors.New("put config: empty name")
	}
	if err := s.rdb.Set(ctx, coordConfigPrefix+name, blob, 0).Err(); err != nil {
		return fmt.Errorf("put config %s: %w", name, err)
	}
	return nil
}
