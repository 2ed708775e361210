package embedded

import (
	"bytes"
	"context"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Bind implements [store.Store.Bind]. An expired binding counts as none (lazy expiry); the sweep
// deletes it later.
func (s *Store) Bind(ctx context.Context, platform, session, accountID string, ttl time.Duration, replace bool) (string, bool, error) {
	if ttl <= 0 {
		return "", false, fmt.Errorf("bind: ttl %s is not positive", ttl)
	}
	if accountID == "" {
		return "", false, fmt.Errorf("bind: empty account id")
	}
	key := []byte(platform + "\x00" + session)
	var (
		bound   string
		created bool
	)
	err := s.update(ctx, func(tx *bolt.Tx, _ *changes) error {
		now := s.now()
		b := tx.Bucket(bucketBind)
		if v := b.Get(key); v != nil && !replace && !expired(v, now) {
			bound, created = string(bytes.Clone(v[8:])), false
			return nil
		}
		if err := putExpiring(b, tx.Bucket(bucketBindExp), key, now.Add(ttl), []byte(accountID)); err != nil {
			return fmt.Errorf("bind %s session: %w", platform, err)
		}
		bound, created = accountID, true
		return nil
	})
	if err != nil {
		return "", false, err
	}
	return bound, created, nil
}

// sweepBatch bounds the entries one sweep transaction deletes, so it never holds the writer long.
const sweepBatch = 5000

func (s *Store) sweepLoop() {
	defer close(s.sweepDone)
	t := time.NewTicker(SweepInterval)
	defer t.Stop()
	for {
		select {
		case <-s.stopSweep:
			return
		case <-t.C:
			// Errors are retried at the next tick; the data stays correct meanwhile (lazy expiry).
			_ = s.sweep(s.now())
		}
	}
}

// sweep deletes bindings and request ids that expired before now.
func (s *Store) sweep(now time.Time) error {
	for _, pair := range [][2][]byte{{bucketBind, bucketBindExp}, {bucketUsageSeq, bucketUsageSeqExp}, {bucketUsageReq, bucketUsageReqExp}} {
		for {
			more := false
			err := s.db.Update(func(tx *bolt.Tx) error {
				b, idx := tx.Bucket(pair[0]), tx.Bucket(pair[1])
				cur := idx.Cursor()
				n := 0
				for k, _ := cur.First(); k != nil; k, _ = cur.First() {
					if len(k) < 8 || !expired(k, now) {
						return nil
					}
					if n == sweepBatch {
						more = true
						return nil
					}
					key := bytes.Clone(k[8:])
					// Delete the record only if this index entry is still its current one.
					if v := b.Get(key); v != nil && bytes.Equal(v[:min(8, len(v))], k[:8]) {
						if err := b.Delete(key); err != nil {
							return err
						}
					}
					if err := cur.Delete(); err != nil {
						return err
					}
					n++
				}
				return nil
			})
			if err != nil {
				return fmt.Errorf("sweep %s: %w", pair[0], err)
			}
			if !more {
				break
			}
		}
	}
	return nil
}
