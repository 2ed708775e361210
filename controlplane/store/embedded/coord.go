package embedded

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/crsrelay/crs/controlplane/store"
)

// Buckets of the coordination records ([store.Coordinator]). They are created on first write, so
// a database from before them opens unchanged; a read of a missing bucket finds nothing.
//
//	coord_locks          lease name -> expiry ‖ owner
//	coord_oauth_sessions session id -> expiry ‖ sealed blob
//	coord_config         blob name -> blob
//
// Expired leases and sessions are removed lazily: a write to their bucket first deletes every
// expired entry (the buckets stay small: a few leases per account refresh and per notification
// of the last day, a few sessions per ten minutes).
var (
	bucketCoordLocks    = []byte("coord_locks")
	bucketCoordSessions = []byte("coord_oauth_sessions")
	bucketCoordConfig   = []byte("coord_config")
)

var _ store.Coordinator = (*Store)(nil)

// TryLock implements [store.LockStore.TryLock]. Only this process writes the database (bbolt
// holds the file lock), so the lease only matters between goroutines, but it behaves as in Redis.
func (s *Store) TryLock(ctx context.Context, name, owner string, ttl time.Duration) (bool, error) {
	if ttl <= 0 {
		return false, fmt.Errorf("lock %s: ttl %s is not positive", name, ttl)
	}
	if name == "" || owner == "" {
		return false, fmt.Errorf("lock: empty name or owner")
	}
	var got bool
	err := s.update(ctx, func(tx *bolt.Tx, _ *changes) error {
		b, err := tx.CreateBucketIfNotExists(bucketCoordLocks)
		if err != nil {
			return fmt.Errorf("lock %s: %w", name, err)
		}
		now := s.now()
		if err := coordDeleteExpired(b, now); err != nil {
			return fmt.Errorf("lock %s: %w", name, err)
		}
		if v := b.Get([]byte(name)); v != nil && !bytes.Equal(v[8:], []byte(owner)) {
			return nil
		}
		if err := b.Put([]byte(name), slices.Concat(encodeExpiry(now.Add(ttl)), []byte(owner))); err != nil {
			return fmt.Errorf("lock %s: %w", name, err)
		}
		got = true
		return nil
	})
	return got, err
}

// Unlock implements [store.LockStore.Unlock].
func (s *Store) Unlock(ctx context.Context, name, owner string) error {
	return s.update(ctx, func(tx *bolt.Tx, _ *changes) error {
		b := tx.Bucket(bucketCoordLocks)
		if b == nil {
			return nil
		}
		v := b.Get([]byte(name))
		if v == nil || len(v) < 8 || !bytes.Equal(v[8:], []byte(owner)) {
			return nil
		}
		if err := b.Delete([]byte(name)); err != nil {
			return fmt.Errorf("unlock %s: %w", name, err)
		}
		return nil
	})
}

// PutOAuthSession implements [store.OAuthSessionStore.PutOAuthSession].
func (s *Store) PutOAuthSession(ctx context.Context, id string, blob []byte, ttl time.Duration) error {
	if ttl <= 0 {
		return fmt.Errorf("put oauth session: ttl %s is not positive", ttl)
	}
	if id == "" {
		return fmt.Errorf("put oauth session: empty id")
	}
	return s.update(ctx, func(tx *bolt.Tx, _ *changes) error {
		b, err := tx.CreateBucketIfNotExists(bucketCoordSessions)
		if err != nil {
			return fmt.Errorf("put oauth session: %w", err)
		}
		now := s.now()
		if err := coordDeleteExpired(b, now); err != nil {
			return fmt.Errorf("put oauth session: %w", err)
		}
		if err := b.Put([]byte(id), slices.Concat(encodeExpiry(now.Add(ttl)), blob)); err != nil {
			return fmt.Errorf("put oauth session: %w", err)
		}
		return nil
	})
}

// TakeOAuthSession implements [store.OAuthSessionStore.TakeOAuthSession]. An expired session is
// deleted too.
func (s *Store) TakeOAuthSession(ctx context.Context, id string) ([]byte, error) {
	var (
		blob  []byte
		found bool
	)
	err := s.update(ctx, func(tx *bolt.Tx, _ *changes) error {
		b := tx.Bucket(bucketCoordSessions)
		if b == nil {
			return nil
		}
		v := b.Get([]byte(id))
		if v == nil {
			return nil
		}
		if found = !expired(v, s.now()); found {
			blob = bytes.Clone(v[8:])
		}
		if err := b.Delete([]byte(id)); err != nil {
			return fmt.Errorf("take oauth session: %w", err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if !found {
		return nil, fmt.Errorf("oauth session: %w", store.ErrNotFound)
	}
	return blob, nil
}

// GetConfigBlob implements [store.ConfigBlobStore.GetConfigBlob].
func (s *Store) GetConfigBlob(ctx context.Context, name string) ([]byte, error) {
	var blob []byte
	err := s.view(ctx, func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketCoordConfig)
		if b == nil {
			return fmt.Errorf("config %s: %w", name, store.ErrNotFound)
		}
		v := b.Get([]byte(name))
		if v == nil {
			return fmt.Errorf("config %s: %w", name, store.ErrNotFound)
		}
		blob = bytes.Clone(v)
		return nil
	})
	return blob, err
}

// PutConfigBlob implements [store.ConfigBlobStore.PutConfigBlob].
func (s *Store) PutConfigBlob(ctx context.Context, name string, blob []byte) error {
	if name == "" {
		return errors.New("put config: empty name")
	}
	return s.update(ctx, func(tx *bolt.Tx, _ *changes) error {
		b, err := tx.CreateBucketIfNotExists(bucketCoordConfig)
		if err != nil {
			return fmt.Errorf("put config %s: %w", name, err)
		}
		// bbolt keeps a reference to the value until commit: never hand it the caller's slice.
		if err := b.Put([]byte(name), bytes.Clone(blob)); err != nil {
			return fmt.Errorf("put config %s: %w", name, err)
		}
		return nil
	})
}

// coordDeleteExpired removes every entry of b (values expiry ‖ payload) that expired before now.
func coordDeleteExpired(b *bolt.Bucket, now time.Time) error {
	var dead [][]byte
	err := b.ForEach(func(k, v []byte) error {
		if expired(v, now) {
			dead = append(dead, bytes.Clone(k))
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, k := range dead {
		if err := b.Delete(k); err != nil {
			return err
		}
	}
	return nil
}
