package embedded

import (
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/crsrelay/crs/controlplane/store"
)

// Limits is the single-node [store.LimitStore] beside a Store.
//
// Leases live in memory, not in the file: they are hot (two writes per limited request, where a
// bbolt commit costs an fsync) and short-lived (a TTL of seconds), and only this process can
// hold the database open, so no other process needs to see them. A restart forgets them, which
// frees their slots as if they had all expired at once; renewals of forgotten leases report
// them missing.
//
// Fixed windows are in the bucket
//
//	key_window  key id -> start (unix ms) ‖ requests ‖ tokens ‖ cost (float64 bits), 8 bytes each
//
// so that a restart does not reset a key's window. It is created on first use.
type Limits struct {
	st     *Store
	leases leaseTable
}

var _ store.LimitStore = (*Limits)(nil)

// NewLimits returns the LimitStore of st. It shares st's database and Watch: window changes are
// published to st's subscribers. Use one Limits per Store (leases are held by the Limits).
func NewLimits(st *Store) *Limits {
	l := &Limits{st: st}
	l.leases.init()
	return l
}

var bucketKeyWindow = []byte("key_window")

// leaseSweepEvery is how often an acquire also drops every expired lease, so leases of
// scopes that are never asked about again do not pile up.
const leaseSweepEvery = time.Minute

// slot names one concurrency limit.
type slot struct{ scope, id string }

// lease is one held lease: the slots it takes and when it expires.
type lease struct {
	slots  []slot
	expiry time.Time
}

// leaseTable is the in-memory lease state. Each slot's set holds lease ids; the lease's expiry
// is kept once, in leases.
type leaseTable struct {
	mu        sync.Mutex
	slots     map[slot]map[string]struct{}
	leases    map[string]*lease
	lastSweep time.Time
}

func (t *leaseTable) init() {
	t.slots = make(map[slot]map[string]struct{})
	t.leases = make(map[string]*lease)
}

// drop removes a lease from every slot it holds. t.mu must be held.
func (t *leaseTable) drop(id string) {
	l, ok := t.leases[id]
	if !ok {
		return
	}
	delete(t.leases, id)
	for _, sl := range l.slots {
		if set := t.slots[sl]; set != nil {
			delete(set, id)
			if len(set) == 0 {
				delete(t.slots, sl)
			}
		}
	}
}

// count returns the unexpired leases holding sl at now, except exclude, dropping expired ones.
// t.mu must be held.
func (t *leaseTable) count(sl slot, now time.Time, exclude string) int {
	n := 0
	for id := range t.slots[sl] {
		if l := t.leases[id]; l == nil || !l.expiry.After(now) {
			t.drop(id)
			continue
		}
		if id != exclude {
			n++
		}
	}
	return n
}

// held returns the lease id if it is unexpired at now, dropping it when expired. t.mu must be
// held.
func (t *leaseTable) held(id string, now time.Time) *lease {
	l := t.leases[id]
	if l != nil && !l.expiry.After(now) {
		t.drop(id)
		return nil
	}
	return l
}

// sweep drops every lease expired at now, at most once per leaseSweepEvery. t.mu must be held.
func (t *leaseTable) sweep(now time.Time) {
	if now.Sub(t.lastSweep) < leaseSweepEvery && !now.Before(t.lastSweep) {
		return
	}
	t.lastSweep = now
	for id, l := range t.leases {
		if !l.expiry.After(now) {
			t.drop(id)
		}
	}
}

// AcquireLeases implements [store.LimitStore.AcquireLeases].
func (l *Limits) AcquireLeases(ctx context.Context, leaseID string, limits []store.LeaseLimit, ttl time.Duration, now time.Time) (store.Acquired, error) {
	if err := checkLease(ctx, leaseID, ttl); err != nil {
		return store.Acquired{}, fmt.Errorf("acquire leases: %w", err)
	}
	t := &l.leases
	t.mu.Lock()
	defer t.mu.Unlock()
	t.sweep(now)
	for _, lim := range limits {
		if lim.Limit <= 0 {
			continue
		}
		if n := t.count(slot{lim.Scope, lim.ID}, now, leaseID); n >= lim.Limit {
			return store.Acquired{Refused: lim, Current: n}, nil
		}
	}
	cur := t.held(leaseID, now)
	if cur == nil {
		cur = &lease{}
		t.leases[leaseID] = cur
	}
	cur.expiry = now.Add(ttl)
	for _, lim := range limits {
		sl := slot{lim.Scope, lim.ID}
		set := t.slots[sl]
		if set == nil {
			set = make(map[string]struct{})
			t.slots[sl] = set
		}
		if _, dup := set[leaseID]; !dup {
			set[leaseID] = struct{}{}
			cur.slots = append(cur.slots, sl)
		}
	}
	return store.Acquired{Granted: true}, nil
}

// RenewLeases implements [store.LimitStore.RenewLeases].
func (l *Limits) RenewLeases(ctx context.Context, leaseIDs []string, ttl time.Duration, now time.Time) ([]string, error) {
	if err := checkLease(ctx, "-", ttl); err != nil {
		return nil, fmt.Errorf("renew leases: %w", err)
	}
	t := &l.leases
	t.mu.Lock()
	defer t.mu.Unlock()
	var missing []string
	for _, id := range leaseIDs {
		cur := t.held(id, now)
		if cur == nil {
			missing = append(missing, id)
			continue
		}
		cur.expiry = now.Add(ttl)
	}
	return missing, nil
}

// ReleaseLeases implements [store.LimitStore.ReleaseLeases].
func (l *Limits) ReleaseLeases(ctx context.Context, leaseIDs []string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	t := &l.leases
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, id := range leaseIDs {
		t.drop(id)
	}
	return nil
}

// Leases implements [store.LimitStore.Leases].
func (l *Limits) Leases(ctx context.Context, scope, id string, now time.Time) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	t := &l.leases
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.count(slot{scope, id}, now, ""), nil
}

func checkLease(ctx context.Context, leaseID string, ttl time.Duration) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if leaseID == "" {
		return fmt.Errorf("empty lease id")
	}
	if ttl <= 0 {
		return fmt.Errorf("ttl %s is not positive", ttl)
	}
	return nil
}

// windowLen is the encoded size of a window.
const windowLen = 32

func encodeWindow(w store.Window) []byte {
	b := make([]byte, windowLen)
	binary.BigEndian.PutUint64(b[0:], uint64(w.Start.UnixMilli()))
	binary.BigEndian.PutUint64(b[8:], uint64(w.Requests))
	binary.BigEndian.PutUint64(b[16:], uint64(w.Tokens))
	binary.BigEndian.PutUint64(b[24:], math.Float64bits(w.Cost))
	return b
}

// decodeWindow returns the window stored in v if it still runs at now (for a window of length
// d), or a zero Window.
func decodeWindow(v []byte, d time.Duration, now time.Time) (store.Window, error) {
	if v == nil {
		return store.Window{}, nil
	}
	if len(v) != windowLen {
		return store.Window{}, fmt.Errorf("decode window: %d bytes", len(v))
	}
	w := store.Window{
		Start:    time.UnixMilli(int64(binary.BigEndian.Uint64(v[0:]))),
		Requests: int64(binary.BigEndian.Uint64(v[8:])),
		Tokens:   int64(binary.BigEndian.Uint64(v[16:])),
		Cost:     math.Float64frombits(binary.BigEndian.Uint64(v[24:])),
	}
	if now.Sub(w.Start) >= d {
		return store.Window{}, nil
	}
	return w, nil
}

// CountWindowRequest implements [store.LimitStore.CountWindowRequest] in one write transaction.
func (l *Limits) CountWindowRequest(ctx context.Context, keyID string, window time.Duration, limit int64, now time.Time) (store.Window, bool, error) {
	if window <= 0 {
		return store.Window{}, false, fmt.Errorf("count window request: window %s is not positive", window)
	}
	var (
		w       store.Window
		counted bool
	)
	err := l.st.update(ctx, func(tx *bolt.Tx, ch *changes) error {
		b, err := tx.CreateBucketIfNotExists(bucketKeyWindow)
		if err != nil {
			return err
		}
		w, err = decodeWindow(b.Get([]byte(keyID)), window, now)
		if err != nil {
			return fmt.Errorf("key %s: %w", keyID, err)
		}
		if w.Start.IsZero() {
			w = store.Window{Start: time.UnixMilli(now.UnixMilli())}
		}
		if limit > 0 && w.Requests >= limit {
			return nil // refused: nothing changes
		}
		w.Requests++
		counted = true
		ch.add(store.KindKeyUsage, keyID)
		return b.Put([]byte(keyID), encodeWindow(w))
	})
	if err != nil {
		return store.Window{}, false, fmt.Errorf("count window request: %w", err)
	}
	return w, counted, nil
}

// AddWindowUsage implements [store.LimitStore.AddWindowUsage] in one write transaction.
func (l *Limits) AddWindowUsage(ctx context.Context, keyID string, window time.Duration, tokens int64, cost float64, now time.Time) error {
	if window <= 0 {
		return fmt.Errorf("add window usage: window %s is not positive", window)
	}
	err := l.st.update(ctx, func(tx *bolt.Tx, ch *changes) error {
		b := tx.Bucket(bucketKeyWindow)
		if b == nil {
			return nil
		}
		w, err := decodeWindow(b.Get([]byte(keyID)), window, now)
		if err != nil || w.Start.IsZero() {
			return err
		}
		w.Tokens += tokens
		w.Cost += cost
		ch.add(store.KindKeyUsage, keyID)
		return b.Put([]byte(keyID), encodeWindow(w))
	})
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
	var w store.Window
	err := l.st.view(ctx, func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketKeyWindow)
		if b == nil {
			return nil
		}
		var err error
		w, err = decodeWindow(b.Get([]byte(keyID)), window, now)
		return err
	})
	if err != nil {
		return store.Window{}, fmt.Errorf("get window %s: %w", keyID, err)
	}
	return w, nil
}
