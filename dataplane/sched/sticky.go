package sched

import (
	"sync"
	"sync/atomic"
	"time"
)

// stickyCache is this worker's memory of session bindings, so a known session costs no control
// plane round trip. Entries expire; the map is bounded (writers racing past the bound may each
// add one entry before the next eviction). Safe for concurrent use.
//
// Every request of a known session reads it, and a served request writes it only when that moves
// the binding's expiry noticeably (Selection.Served), so reads take no lock: a sync.Map, whose
// reads of keys already present are lock-free.
type stickyCache struct {
	m     sync.Map     // session hash -> stickyEntry
	n     atomic.Int64 // entries in m
	evict sync.Mutex   // one eviction at a time
	max   int
}

type stickyEntry struct {
	accountID string
	expires   int64 // unix nanos
}

func newStickyCache(max int) *stickyCache {
	return &stickyCache{max: max}
}

// get returns the account bound to hash and when the binding expires (unix nanos).
func (c *stickyCache) get(hash string, now time.Time) (accountID string, expires int64, ok bool) {
	v, ok := c.m.Load(hash)
	if !ok {
		return "", 0, false
	}
	e := v.(stickyEntry)
	if e.expires <= now.UnixNano() {
		return "", 0, false
	}
	return e.accountID, e.expires, true
}

// put binds hash to accountID until now+ttl, which it returns (unix nanos).
func (c *stickyCache) put(hash, accountID string, now time.Time, ttl time.Duration) int64 {
	expires := now.Add(ttl).UnixNano()
	if _, ok := c.m.Load(hash); !ok && c.n.Load() >= int64(c.max) {
		c.evictSome(now.UnixNano()) // before adding, so that the new binding stays
	}
	if _, loaded := c.m.Swap(hash, stickyEntry{accountID: accountID, expires: expires}); !loaded {
		c.n.Add(1)
	}
	return expires
}

// evictSome drops expired entries, then arbitrary ones (map order) until a tenth is free. A
// dropped binding only costs one Bind call later.
func (c *stickyCache) evictSome(now int64) {
	c.evict.Lock()
	defer c.evict.Unlock()
	if c.n.Load() < int64(c.max) {
		return // another eviction made room meanwhile
	}
	c.m.Range(func(k, v any) bool {
		if v.(stickyEntry).expires <= now {
			c.delete(k)
		}
		return true
	})
	c.m.Range(func(k, _ any) bool {
		if c.n.Load() < int64(c.max-c.max/10) {
			return false
		}
		c.delete(k)
		return true
	})
}

func (c *stickyCache) delete(k any) {
	if _, loaded := c.m.LoadAndDelete(k); loaded {
		c.n.Add(-1)
	}
}

func (c *stickyCache) len() int { return int(c.n.Load()) }
