// Package redisstore is the shared [store.Store]: every record in one Redis (go-redis v9), so
// several control-plane replicas can serve the same fleet. Changes reach every replica's Watch
// through Redis pub/sub.
//
// Key layout (all keys start with "crs:"; values are protobuf binary unless noted):
//
//	crs:key:<id>                 HASH  pb = ApiKey, hash = key hash (lowercase hex)
//	crs:keyhash:<hash>           STRING key id
//	crs:keys                     SET   key ids
//	crs:account:<id>             HASH  pb = Account without status, sealed = sealed credentials,
//	                                   gen = credential generation (decimal), status = AccountStatus
//	crs:accounts                 SET   account ids
//	crs:group:<id>               STRING AccountGroup
//	crs:groups                   SET   group ids
//	crs:settings                 STRING Settings
//	crs:secret:<name>            STRING raw bytes
//	crs:usage:req:<request id>   STRING "1", expires after 7 days: usage dedup
//	crs:usage:<scope>:<id>:<granularity>:<period>             HASH usage aggregate (below)
//	crs:usage:<scope>:<id>:<granularity>:<period>:m:<model>   HASH the same, one model
//	crs:usage:models:<scope>:<id> SET  models seen in that scope (to list split aggregates)
//	crs:bind:<platform>:<session> STRING account id, with the binding's TTL
//	crs:changes                  pub/sub channel, payload "<kind>:<id>" (see store.Change)
//
// Scopes are key, account and global (id empty: "crs:usage:global::day:2026-11-26"); per-model
// totals are the global scope split by model. Granularities are hour, day, month, total (period
// "total") and week_opus (a key's Claude-family cost per week). An aggregate hash has the fields
// requests, input, output, cc5m, cc1h, cache_read, all, cost, rated_cost, each incremented in
// place (HINCRBY / HINCRBYFLOAT), so recording usage never rewrites a record. Hour and weekly
// aggregates expire 35 days, day aggregates 400 days after their first request; month and total
// aggregates are kept (the embedded store keeps everything).
//
// Atomicity: every mutation that touches more than one key, or compares before writing, is one Lua
// script (create with its hash index, credential compare-and-swap, usage dedup plus aggregates,
// binding), and each script publishes its change itself, so a change is announced exactly when it
// is applied. Scripts build some key names from arguments, so the layout assumes one Redis
// (standalone or replicated), not Redis Cluster.
//
// The package depends on the store interface, the contract's generated types and go-redis.
package redisstore

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/redis/go-redis/v9"

	"github.com/crsrelay/crs/controlplane/store"
)

// ChangesChannel is the pub/sub channel every mutation is announced on.
const ChangesChannel = "crs:changes"

// Key names; see the package doc.
const (
	prefix          = "crs:"
	keyPrefix       = prefix + "key:"
	keyHashPrefix   = prefix + "keyhash:"
	keysSet         = prefix + "keys"
	accountPrefix   = prefix + "account:"
	accountsSet     = prefix + "accounts"
	groupPrefix     = prefix + "group:"
	groupsSet       = prefix + "groups"
	settingsKey     = prefix + "settings"
	secretPrefix    = prefix + "secret:"
	usageReqPrefix  = prefix + "usage:req:"
	usagePrefix     = prefix + "usage:"
	usageModelsPfx  = prefix + "usage:models:"
	bindPrefix      = prefix + "bind:"
	modelCellMarker = ":m:"
)

// Store is the Redis-backed [store.Store]. It is safe for concurrent use; Close ends it.
type Store struct {
	rdb       *redis.Client
	done      chan struct{} // closed by Close; ends Watch goroutines
	closeOnce sync.Once
}

var _ store.Store = (*Store)(nil)

// New connects to the Redis at url (redis://[user:pass@]host:port/db or rediss://..., see
// redis.ParseURL) and checks it answers.
func New(ctx context.Context, url string) (*Store, error) {
	opt, err := redis.ParseURL(url)
	if err != nil {
		return nil, fmt.Errorf("redisstore: parse url: %w", err)
	}
	s := &Store{rdb: redis.NewClient(opt), done: make(chan struct{})}
	if err := s.rdb.Ping(ctx).Err(); err != nil {
		_ = s.rdb.Close()
		return nil, fmt.Errorf("redisstore: ping %s: %w", opt.Addr, err)
	}
	return s, nil
}

// Ping implements [store.Store.Ping].
func (s *Store) Ping(ctx context.Context) error {
	if err := s.rdb.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("redisstore: ping: %w", err)
	}
	return nil
}

// Close implements [store.Store.Close]: it ends every Watch and closes the connections. Calling
// it again returns nil.
func (s *Store) Close() error {
	var err error
	s.closeOnce.Do(func() {
		close(s.done)
		if cerr := s.rdb.Close(); cerr != nil {
			err = fmt.Errorf("redisstore: close: %w", cerr)
		}
	})
	return err
}

// changePayload is what a change is published as.
func changePayload(kind, id string) string { return kind + ":" + id }

// parseChange reverses changePayload.
func parseChange(payload string) (store.Change, bool) {
	kind, id, ok := strings.Cut(payload, ":")
	if !ok || kind == "" {
		return store.Change{}, false
	}
	return store.Change{Kind: kind, ID: id}, true
}

// Script results shared by the mutation scripts.
const (
	resOK       = 0
	resNotFound = 1
	resExists   = 2
	resConflict = 3
)

// runScript runs sc and maps its integer result to the store's sentinel errors, wrapped in what.
func (s *Store) runScript(ctx context.Context, sc *redis.Script, what string, keys []string, args ...any) error {
	res, err := sc.Run(ctx, s.rdb, keys, args...).Int64()
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return resultErr(res, what)
}

func resultErr(res int64, what string) error {
	switch res {
	case resOK:
		return nil
	case resNotFound:
		return fmt.Errorf("%s: %w", what, store.ErrNotFound)
	case resExists:
		return fmt.Errorf("%s: %w", what, store.ErrAlreadyExists)
	case resConflict:
		return fmt.Errorf("%s: %w", what, store.ErrConflict)
	default:
		return fmt.Errorf("%s: unexpected script result %d", what, res)
	}
}

// isNil reports whether err is Redis's "no such key".
func isNil(err error) bool { return errors.Is(err, redis.Nil) }
