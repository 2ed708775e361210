package redisstore

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/crsrelay/crs/controlplane/store"
)

// Limits is the shared [store.LimitStore] beside a Store: leases and windows in the same Redis,
// so every control-plane replica enforces the same limits. Key layout (besides the package's):
//
//	crs:leases:<scope>:<id>  ZSET  lease id -> expiry (unix ms): the slots of one concurrency limit
//	crs:lease:<lease id>     SET   the ZSET names the lease holds a slot in
//	crs:window:<key id>      HASH  start (unix ms), requests, tokens, cost (rated USD)
//
// Expiry is decided by the caller's clock (scores and window starts are compared with the now
// passed in), so control-plane replicas should keep their clocks within a fraction of the lease
// TTL. Redis TTLs on these keys only collect garbage: lease keys live leaseGC beyond their last
// write, a window twice its length.
type Limits struct {
	rdb *redis.Client
}

var _ store.LimitStore = (*Limits)(nil)

// NewLimits returns the LimitStore on st's Redis; window changes are published on st's
// crs:changes channel like every other change.
func NewLimits(st *Store) *Limits { return &Limits{rdb: st.rdb} }

const (
	leasesPrefix = prefix + "leases:"
	leasePrefix  = prefix + "lease:"
	windowPrefix = prefix + "window:"
)

// leaseGC is how long lease keys outlive their last acquire or renew, beyond the TTL itself.
const leaseGC = time.Minute

// acquireLeases: KEYS n slot ZSETs, then the lease record. ARGV now ms, expiry ms, lease id, GC
// TTL ms, then n limits. A lease already held but expired is cleared first; then every limit is
// checked (expired members purged, the lease itself not counted) before any slot is taken, so
// the grant is all or nothing. Returns {1, 0, 0} when granted, {0, index of the full limit
// (1-based), its current count} when refused.
var acquireLeasesScript = redis.NewScript(`
local n = #KEYS - 1
local now, id, gc = tonumber(ARGV[1]), ARGV[3], tonumber(ARGV[4])
local rec = KEYS[n + 1]
local old = redis.call('SMEMBERS', rec)
for _, z in ipairs(old) do
  local sc = redis.call('ZSCORE', z, id)
  if not sc or tonumber(sc) <= now then
    for _, y in ipairs(old) do redis.call('ZREM', y, id) end
    redis.call('DEL', rec)
    break
  end
end
for i = 1, n do
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now)
  local limit = tonumber(ARGV[4 + i])
  if limit > 0 then
    local c = redis.call('ZCARD', KEYS[i])
    if redis.call('ZSCORE', KEYS[i], id) then c = c - 1 end
    if c >= limit then return {0, i, c} end
  end
end
for i = 1, n do
  redis.call('ZADD', KEYS[i], ARGV[2], id)
  if redis.call('PTTL', KEYS[i]) < gc then redis.call('PEXPIRE', KEYS[i], gc) end
  redis.call('SADD', rec, KEYS[i])
end
for _, z in ipairs(redis.call('SMEMBERS', rec)) do redis.call('ZADD', z, 'XX', ARGV[2], id) end
if redis.call('PTTL', rec) < gc then redis.call('PEXPIRE', rec, gc) end
return {1, 0, 0}
`)

// renewLeases: KEYS lease records. ARGV now ms, expiry ms, GC TTL ms, then the lease ids (one
// per record). A lease is held when each of its slots still has it unexpired; it is then moved
// to the new expiry, otherwise its remains are removed. Returns the ids not held.
var renewLeasesScript = redis.NewScript(`
local now, gc = tonumber(ARGV[1]), tonumber(ARGV[3])
local missing = {}
for i, rec in ipairs(KEYS) do
  local id = ARGV[3 + i]
  local zs = redis.call('SMEMBERS', rec)
  local alive = #zs > 0
  for _, z in ipairs(zs) do
    local sc = redis.call('ZSCORE', z, id)
    if not sc or tonumber(sc) <= now then alive = false break end
  end
  if alive then
    for _, z in ipairs(zs) do
      redis.call('ZADD', z, 'XX', ARGV[2], id)
      if redis.call('PTTL', z) < gc then redis.call('PEXPIRE', z, gc) end
    end
    if redis.call('PTTL', rec) < gc then redis.call('PEXPIRE', rec, gc) end
  else
    for _, z in ipairs(zs) do redis.call('ZREM', z, id) end
    redis.call('DEL', rec)
    missing[#missing + 1] = id
  end
end
return missing
`)

// releaseLeases: KEYS lease records. ARGV the lease ids (one per record).
var releaseLeasesScript = redis.NewScript(`
for i, rec in ipairs(KEYS) do
  for _, z in ipairs(redis.call('SMEMBERS', rec)) do redis.call('ZREM', z, ARGV[i]) end
  redis.call('DEL', rec)
end
return 0
`)

// countWindowRequest: KEYS window hash. ARGV now ms, window ms, request limit (0 = none), change.
// Starts a new window when none runs (reference §2.5), refuses when requests >= limit, else
// counts the request and publishes the change. Returns {counted 0/1, start ms, requests, tokens,
// cost as a string}.
var countWindowRequestScript = redis.NewScript(`
local now, win, limit = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local v = redis.call('HMGET', KEYS[1], 'start', 'requests', 'tokens', 'cost')
local start = tonumber(v[1])
local req, tok, cost = tonumber(v[2]) or 0, tonumber(v[3]) or 0, v[4] or '0'
if not start or now - start >= win then
  start, req, tok, cost = now, 0, 0, '0'
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[1], 'start', ARGV[1], 'requests', 0, 'tokens', 0, 'cost', 0)
  redis.call('PEXPIRE', KEYS[1], ARGV[2] * 2)
end
if limit > 0 and req >= limit then return {0, start, req, tok, cost} end
req = redis.call('HINCRBY', KEYS[1], 'requests', 1)
redis.call('PUBLISH', 'crs:changes', ARGV[4])
return {1, start, req, tok, cost}
`)

// addWindowUsage: KEYS window hash. ARGV now ms, window ms, tokens, cost, change. Adds to the
// running window only. Returns 1 when added.
var addWindowUsageScript = redis.NewScript(`
local start = tonumber(redis.call('HGET', KEYS[1], 'start'))
if not start or tonumber(ARGV[1]) - start >= tonumber(ARGV[2]) then return 0 end
redis.call('HINCRBY', KEYS[1], 'tokens', ARGV[3])
redis.call('HINCRBYFLOAT', KEYS[1], 'cost', ARGV[4])
redis.call('PUBLISH', 'crs:changes', ARGV[5])
return 1
`)

func slotKey(scope, id string) string { return leasesPrefix + scope + ":" + id }

func checkLease(leaseID string, ttl time.Duration) error {
	if leaseID == "" {
		return errors.New("empty lease id")
	}
	if ttl <= 0 {
		return fmt.Errorf("ttl %s is not positive", ttl)
	}
	return nil
}

func gcMillis(ttl time.Duration) int64 { return (ttl + leaseGC).Milliseconds() }

// AcquireLeases implements [store.LimitStore.AcquireLeases] in one script.
func (l *Limits) AcquireLeases(ctx context.Context, leaseID string, limits []store.LeaseLimit, ttl time.Duration, now time.Time) (store.Acquired, error) {
	if err := checkLease(leaseID, ttl); err != nil {
		return store.Acquired{}, fmt.Errorf("acquire leases: %w", err)
	}
	keys := make([]string, 0, len(limits)+1)
	args := make([]any, 0, len(limits)+4)
	args = append(args, now.UnixMilli(), now.Add(ttl).UnixMilli(), leaseID, gcMillis(ttl))
	for _, lim := range limits {
		keys = append(keys, slotKey(lim.Scope, lim.ID))
		args = append(args, max(lim.Limit, 0))
	}
	keys = append(keys, leasePrefix+leaseID)
	res, err := acquireLeasesScript.Run(ctx, l.rdb, keys, args...).Int64Slice()
	if err != nil {
		return store.Acquired{}, fmt.Errorf("acquire leases: %w", err)
	}
	if len(res) != 3 || (res[0] == 0 && (res[1] < 1 || int(res[1]) > len(limits))) {
		return store.Acquired{}, fmt.Errorf("acquire leases: unexpected reply %v", res)
	}
	if res[0] == 1 {
		return store.Acquired{Granted: true}, nil
	}
	return store.Acquired{Refused: limits[res[1]-1], Current: int(res[2])}, nil
}

// RenewLeases implements [store.LimitStore.RenewLeases] in one script.
func (l *Limits) RenewLeases(ctx context.Context, leaseIDs []string, ttl time.Duration, now time.Time) ([]string, error) {
	if ttl <= 0 {
		return nil, fmt.Errorf("renew leases: ttl %s is not positive", ttl)
	}
	if len(leaseIDs) == 0 {
		return nil, nil
	}
	keys := make([]string, len(leaseIDs))
	args := make([]any, 0, len(leaseIDs)+3)
	args = append(args, now.UnixMilli(), now.Add(ttl).UnixMilli(), gcMillis(ttl))
	for i, id := range leaseIDs {
		keys[i] = leasePrefix + id
		args = append(args, id)
	}
	missing, err := renewLeasesScript.Run(ctx, l.rdb, keys, args...).StringSlice()
	if err != nil {
		return nil, fmt.Errorf("renew leases: %w", err)
	}
	return missing, nil
}

// ReleaseLeases implements [store.LimitStore.ReleaseLeases] in one script.
func (l *Limits) ReleaseLeases(ctx context.Context, leaseIDs []string) error {
	if len(leaseIDs) == 0 {
		return nil
	}
	keys := make([]string, len(leaseIDs))
	args := make([]any, len(leaseIDs))
	for i, id := range leaseIDs {
		keys[i] = leasePrefix + id
		args[i] = id
	}
	if err := releaseLeasesScript.Run(ctx, l.rdb, keys, args...).Err(); err != nil {
		return fmt.Errorf("release leases: %w", err)
	}
	return nil
}

// Leases implements [store.LimitStore.Leases].
func (l *Limits) Leases(ctx context.Context, scope, id string, now time.Time) (int, error) {
	n, err := l.rdb.ZCount(ctx, slotKey(scope, id), "("+strconv.FormatInt(now.UnixMilli(), 10), "+inf").Result()
	if err != nil {
		return 0, fmt.Errorf("count leases %s %s: %w", scope, id, err)
	}
	return int(n), nil
}

// CountWindowRequest implements [store.LimitStore.CountWindowRequest] in one script.
func (l *Limits) CountWindowRequest(ctx context.Context, keyID string, window time.Duration, limit int64, now time.Time) (store.Window, bool, error) {
	if window <= 0 {
		return store.Window{}, false, fmt.Errorf("count window request: window %s is not positive", window)
	}
	res, err := countWindowRequestScript.Run(ctx, l.rdb, []string{windowPrefix + keyID},
		now.UnixMilli(), window.Milliseconds(), max(limit, 0), changePayload(store.KindKeyUsage, keyID)).Slice()
	if err != nil {
		return store.Window{}, false, fmt.Errorf("count window request %s: %w", keyID, err)
	}
	if len(res) != 5 {
		return store.Window{}, false, fmt.Errorf("count window request %s: unexpected reply %v", keyID, res)
	}
	counted, _ := res[0].(int64)
	start, _ := res[1].(int64)
	req, _ := res[2].(int64)
	tok, _ := res[3].(int64)
	costStr, _ := res[4].(string)
	cost, err := strconv.ParseFloat(costStr, 64)
	if err != nil {
		return store.Window{}, false, fmt.Errorf("count window request %s: cost %q: %w", keyID, costStr, err)
	}
	w := store.Window{Start: time.UnixMilli(start), Requests: req, Tokens: tok, Cost: cost}
	return w, counted == 1, nil
}

// AddWindowUsage implements [store.LimitStore.AddWindowUsage] in one script.
func (l *Limits) AddWindowUsage(ctx context.Context, keyID string, window time.Duration, tokens int64, cost float64, now time.Time) error {
	if window <= 0 {
		return fmt.Errorf("add window usage: window %s is not positive", window)
	}
	err := addWindowUsageScript.Run(ctx, l.rdb, []string{windowPrefix + keyID},
		now.UnixMilli(), window.Milliseconds(), tokens, strconv.FormatFloat(cost, 'g', -1, 64),
		changePayload(store.KindKeyUsage, keyID)).Err()
	if err != nil {
		return fmt.Errorf("add window usage %s: %w", keyID, err)
	}
	return nil
}

// GetWindow implements [store.LimitStore.GetWindow].
func (l *Limits) GetWindow(ctx context.Context, keyID string, window time.Duration, now time.Time) (store.Window, error) {
	if window <= 0 {
		return store.Window{}, fmt.Errorf("get window: window %s is not positive", window)
	}
	v, err := l.rdb.HMGet(ctx, windowPrefix+keyID, "start", "requests", "tokens", "cost").Result()
	if err != nil {
		return store.Window{}, fmt.Errorf("get window %s: %w", keyID, err)
	}
	if v[0] == nil {
		return store.Window{}, nil
	}
	var nums [3]int64
	for i := range nums {
		s, _ := v[i].(string)
		if nums[i], err = strconv.ParseInt(s, 10, 64); err != nil {
			return store.Window{}, fmt.Errorf("get window %s: field %d: %w", keyID, i, err)
		}
	}
	s, _ := v[3].(string)
	cost, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return store.Window{}, fmt.Errorf("get window %s: cost: %w", keyID, err)
	}
	w := store.Window{Start: time.UnixMilli(nums[0]), Requests: nums[1], Tokens: nums[2], Cost: cost}
	if now.Sub(w.Start) >= window {
		return store.Window{}, nil
	}
	return w, nil
}
