package store

import (
	"context"
	"time"
)

// Lease scopes: whose concurrency a lease counts against.
const (
	ScopeKey     = "key"
	ScopeAccount = "account"
)

// LeaseLimit is one concurrency limit a lease takes a slot of: at most Limit unexpired leases may
// hold a slot of (Scope, ID) at once. Limit <= 0 takes a slot but never refuses.
type LeaseLimit struct {
	Scope string
	ID    string
	Limit int
}

// Acquired is the outcome of [LimitStore.AcquireLeases].
type Acquired struct {
	// Granted: the lease holds a slot on every limit.
	Granted bool
	// Refused is the first limit that was full (when not Granted), and Current the unexpired
	// leases holding it at that moment.
	Refused LeaseLimit
	Current int
}

// Window is a key's current fixed window (reference §2.5). A zero Start means no window runs:
// none was started yet, or the last one ended.
type Window struct {
	Start    time.Time
	Requests int64
	// Tokens are input + output + cache creation + cache read; Cost is rated cost, USD.
	Tokens int64
	Cost   float64
}

// End returns when a window of length d that started at w.Start resets (zero when none runs).
func (w Window) End(d time.Duration) time.Time {
	if w.Start.IsZero() {
		return time.Time{}
	}
	return w.Start.Add(d)
}

// LimitStore holds what global limits need to be exact across workers and control-plane
// replicas: concurrency leases with a TTL, and per-key fixed windows. It is kept apart from
// [Store] because its state is short-lived and hot (written on admission, not per record), and
// backends may hold it differently (the embedded one keeps leases in memory).
//
// Every time is the caller's now, never the backend's clock, so expiry is decided by one clock
// and tests can drive it. Implementations are safe for concurrent use; every method is atomic.
type LimitStore interface {
	// AcquireLeases takes one slot on each of limits for leaseID, until now+ttl, all or nothing:
	// when any limit already has Limit unexpired leases (leaseID itself not counted), nothing is
	// taken and the first full limit is returned. Expired leases never count. A leaseID already
	// held is extended (and takes any slots it did not hold yet). A limit listed twice is checked
	// twice, so the smaller Limit wins.
	AcquireLeases(ctx context.Context, leaseID string, limits []LeaseLimit, ttl time.Duration, now time.Time) (Acquired, error)
	// RenewLeases moves the expiry of each lease still held (unexpired at now) to now+ttl and
	// returns the ids that were not held: expired, released or never acquired. A missing lease is
	// not re-acquired (its slot may have been given to another).
	RenewLeases(ctx context.Context, leaseIDs []string, ttl time.Duration, now time.Time) (missing []string, err error)
	// ReleaseLeases frees every slot of each lease. Unknown ids are ignored.
	ReleaseLeases(ctx context.Context, leaseIDs []string) error
	// Leases returns how many unexpired leases hold a slot of (scope, id) at now.
	Leases(ctx context.Context, scope, id string, now time.Time) (int, error)

	// CountWindowRequest counts one request in the key's fixed window of length window
	// (reference §2.5): when no window runs, or now - start >= window, a new one starts at now
	// with every counter at zero. Then, when limit > 0 and the window's requests are already >=
	// limit, the request is refused and nothing changes; otherwise requests is incremented. The
	// window after the call is returned (on refusal: the full one, whose End is the reset time).
	// A counted request publishes Change{KindKeyUsage, keyID}.
	CountWindowRequest(ctx context.Context, keyID string, window time.Duration, limit int64, now time.Time) (w Window, counted bool, err error)
	// AddWindowUsage adds a settled response's tokens and rated cost to the key's running window;
	// when no window runs (it ended, or never started) they are dropped, as in the reference where
	// the next request resets the counters. Adding publishes Change{KindKeyUsage, keyID}.
	AddWindowUsage(ctx context.Context, keyID string, window time.Duration, tokens int64, cost float64, now time.Time) error
	// GetWindow returns the key's running window, or a zero Window when none runs at now.
	GetWindow(ctx context.Context, keyID string, window time.Duration, now time.Time) (Window, error)
}
