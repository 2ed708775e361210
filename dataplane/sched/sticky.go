package sched

import (
	"sync"
	"time"
)

// stickyCache is this worker's memory of session bindings, so a known session costs no control
// plane round trip. Entries expire; the map is bounded. Safe for concurrent use.
type stickyCache struct {
	mu  sync.Mutex
	m   map[string]stickyEntry
	max int
}

type stickyEntry struct {
	accountID string
	expires   int64 // unix nanos
}

func newStickyCache(max int) *stickyCache {
	return &stickyCache{m: make(map[string]stickyEntry), max: max}
}

func (c *stickyCache) get(hash string, now time.Time) (string, bool) {
	c.mu.Lock()
	e, ok := c.m[hash]
	c.mu.Unlock()
	if !ok || e.expires <= now.UnixNano() {
		return "", false
	}
	return e.accountID, true
}

func (c *stickyCache) put(hash, accountID string, now time.Time, ttl time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.m[hash]; !ok && len(c.m) >= c.max {
		c.evictLocked(now.UnixNano())
	}
	c.m[hash] = stickyEntry{accountID: accountID, expires: now.Add(ttl).UnixNano()}
}

// evictLocked drops expired entries, then arbitrary ones (map order) until a tenth is free. A
// dropped binding only costs one Bind call later.
func (c *stickyCache) evictLocked(now int64) {
	for k, e := range c.m {
		if e.expires <= now {
			delete(c.m, k)
		}
	}
	for k := range c.m {
		if len(c.m) < c.max-c.max/10 {
			break
		}
		delete(c.m, k)
	}
}

func (c *stickyCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.m)
}
