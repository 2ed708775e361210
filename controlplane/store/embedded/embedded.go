// Package embedded is the single-node [store.Store]: every record in one bbolt file,
// <data dir>/crs.db, for `crs dev` and one-node deployments. Control-plane replicas that share
// state use redisstore instead.
//
// Why bbolt (go.etcd.io/bbolt): it is well kept (etcd's storage engine, maintained by the etcd
// project), its transactions are ACID (serializable writers, MVCC readers, fsync on commit, a crash
// leaves the last committed state), the database is a single file that is easy to back up, and it
// is pure Go, so the binary stays static (CGO_ENABLED=0).
//
// Layout, one bucket per kind; values are protobuf binary (proto.Marshal) unless noted:
//
//	keys            key id -> envelope{ApiKey, hash}
//	key_hash        key hash -> key id
//	accounts        account id -> envelope{Account without status, sealed credentials, generation}
//	account_status  account id -> AccountStatus (so SetAccountStatus touches only the status)
//	groups          group id -> AccountGroup
//	settings        "settings" -> Settings
//	secrets         name -> raw bytes
//	usage           cell (scope \0 id \0 granularity \0 period [\0 model]) -> UsageTotals
//	usage_seq       worker id prefix ‖ block (8 bytes) -> expiry ‖ bitmap of stored ids (dedup.go)
//	usage_seq_exp   expiry ‖ usage_seq key -> empty, to sweep usage_seq in expiry order
//	usage_req       other request id -> expiry (8-byte big-endian unix nanoseconds), for dedup
//	usage_req_exp   expiry ‖ request id -> empty, to sweep usage_req in expiry order
//	bind            platform \0 session -> expiry ‖ account id
//	bind_exp        expiry ‖ platform \0 session -> empty, to sweep bind in expiry order
//	key_window      key id -> fixed rate-limit window (start, requests, tokens, cost; 32 bytes)
//
// Concurrency leases (Limits) live in memory only: they are hot and short-lived, and a restart
// frees them as if they had expired.
//
// Request ids are remembered for [DedupTTL]; bindings expire at their TTL. Both are expired lazily
// on read and removed by a sweep every [SweepInterval]. Watch is an in-process fan-out: only this
// process writes the file (bbolt holds an exclusive lock on it).
//
// The package depends on the store interface, the contract's generated types and bbolt.
package embedded

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/crsrelay/crs/controlplane/store"
)

// FileName is the database file Open creates in the data directory.
const FileName = "crs.db"

// DedupTTL is how long a usage request id is remembered (as in redisstore).
const DedupTTL = 7 * 24 * time.Hour

// SweepInterval is how often expired bindings and request ids are deleted.
const SweepInterval = time.Minute

// lockTimeout bounds the wait for the file lock when another process holds the database open.
const lockTimeout = 2 * time.Second

var (
	bucketKeys          = []byte("keys")
	bucketKeyHash       = []byte("key_hash")
	bucketAccounts      = []byte("accounts")
	bucketAccountStatus = []byte("account_status")
	bucketGroups        = []byte("groups")
	bucketSettings      = []byte("settings")
	bucketSecrets       = []byte("secrets")
	bucketUsage         = []byte("usage")
	bucketUsageSeq      = []byte("usage_seq")
	bucketUsageSeqExp   = []byte("usage_seq_exp")
	bucketUsageReq      = []byte("usage_req")
	bucketUsageReqExp   = []byte("usage_req_exp")
	bucketBind          = []byte("bind")
	bucketBindExp       = []byte("bind_exp")

	allBuckets = [][]byte{
		bucketKeys, bucketKeyHash, bucketAccounts, bucketAccountStatus, bucketGroups,
		bucketSettings, bucketSecrets, bucketUsage, bucketUsageSeq, bucketUsageSeqExp,
		bucketUsageReq, bucketUsageReqExp, bucketBind, bucketBindExp,
	}

	settingsKey = []byte("settings")
)

// errClosed is returned by calls after Close.
var errClosed = errors.New("embedded: store closed")

// Store is the bbolt-backed [store.Store]. It is safe for concurrent use; Close ends it.
type Store struct {
	db   *bolt.DB
	path string
	hub  hub
	now  func() time.Time

	stopSweep chan struct{}
	sweepDone chan struct{}
	closeOnce sync.Once
}

var _ store.Store = (*Store)(nil)

// Open opens (creating if needed) the database <dir>/crs.db, creating dir (0700) and the file
// (0600) when missing, and starts the expiry sweep. It fails after a short wait when another
// process has the file open.
func Open(dir string) (*Store, error) {
	return open(dir, lockTimeout)
}

func open(dir string, lockTimeout time.Duration) (*Store, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("embedded: create data dir: %w", err)
	}
	path := filepath.Join(dir, FileName)
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: lockTimeout, FreelistType: bolt.FreelistMapType})
	if err != nil {
		return nil, fmt.Errorf("embedded: open %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range allBuckets {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return fmt.Errorf("create bucket %s: %w", b, err)
			}
		}
		return nil
	})
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("embedded: init %s: %w", path, err)
	}
	s := &Store{
		db:        db,
		path:      path,
		now:       time.Now,
		stopSweep: make(chan struct{}),
		sweepDone: make(chan struct{}),
	}
	s.hub.init()
	go s.sweepLoop()
	return s, nil
}

// Path returns the database file's path.
func (s *Store) Path() string { return s.path }

// Ping implements [store.Store.Ping]: it runs an empty read transaction.
func (s *Store) Ping(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := s.db.View(func(*bolt.Tx) error { return nil }); err != nil {
		return fmt.Errorf("embedded: ping: %w", err)
	}
	return nil
}

// Close implements [store.Store.Close]: it stops the sweep, closes every Watch channel and the
// database. Calling it again returns nil.
func (s *Store) Close() error {
	var err error
	s.closeOnce.Do(func() {
		close(s.stopSweep)
		<-s.sweepDone
		s.hub.close()
		if cerr := s.db.Close(); cerr != nil {
			err = fmt.Errorf("embedded: close: %w", cerr)
		}
	})
	return err
}

// update runs fn in a write transaction and, once it committed, publishes the changes fn
// collected.
func (s *Store) update(ctx context.Context, fn func(tx *bolt.Tx, ch *changes) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	var ch changes
	err := s.db.Update(func(tx *bolt.Tx) error {
		ch = ch[:0]
		return fn(tx, &ch)
	})
	if err != nil {
		if errors.Is(err, bolt.ErrDatabaseNotOpen) {
			return errClosed
		}
		return err
	}
	s.hub.publish(ch)
	return nil
}

// view runs fn in a read transaction.
func (s *Store) view(ctx context.Context, fn func(tx *bolt.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	err := s.db.View(fn)
	if errors.Is(err, bolt.ErrDatabaseNotOpen) {
		return errClosed
	}
	return err
}

// changes collects what a transaction changed, published after commit.
type changes []store.Change

func (c *changes) add(kind, id string) {
	// A batch of usage records names the same key many times; publish each change once.
	for _, x := range *c {
		if x.Kind == kind && x.ID == id {
			return
		}
	}
	*c = append(*c, store.Change{Kind: kind, ID: id})
}
