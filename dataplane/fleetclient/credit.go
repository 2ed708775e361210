package fleetclient

import (
	"context"
	"time"

	crsv1 "github.com/crsrelay/crs/gen/crs/v1"
)

// Slot credit (controlplane/fleet credit.go): an acquire on exactly one concurrency limit and no
// window asks the control plane for a few leases at once. The extra ones, and every lease a
// finished request gives back, stay in the limit's pool of unused leases, held and renewed like
// any lease, and admit the next requests of that limit without a round trip. A limited key at
// full speed thus costs about one Admit message per trim period instead of two per request.
//
// Unused credit goes back to the control plane when it stayed unused for a whole trim period,
// when the control plane reclaims it (another worker found the limit full; the pool then keeps
// no credit for the cooldown the control plane states), and when the Admitter closes.
const (
	// creditTrimEvery is the trim period: leases unused for a whole period are released.
	creditTrimEvery = 50 * time.Millisecond
	// maxCreditAsk bounds how many leases one acquire asks for.
	maxCreditAsk = 64
	// defaultCreditCooldown applies when a reclaim states no cooldown.
	defaultCreditCooldown = time.Second
)

// creditKey names one concurrency limit.
type creditKey struct{ scope, id string }

// creditPool is the worker's credit on one limit. Guarded by Admitter.mu.
type creditPool struct {
	// free are unused leases, each also in Admitter.held; the most recently returned is last.
	free []string
	// inUse counts leases of this pool held by requests now.
	inUse int
	// minFree is the fewest unused leases since the last trim: that many were not needed.
	minFree int
	// exactUntil: no credit is kept before this (reclaimed); leases go back at once.
	exactUntil time.Time
}

// creditEligible reports whether req may use credit: one limit and no window.
func creditEligible(req *crsv1.LeaseAcquire) bool {
	return len(req.GetLimits()) == 1 && req.GetWindowKeyId() == ""
}

// takeCreditLocked returns an unused lease of the pool, or "" when it has none. Leases the
// control plane no longer holds (a renewal reported them lost) are dropped on the way.
func (a *Admitter) takeCreditLocked(p *creditPool) string {
	for len(p.free) > 0 {
		id := p.free[len(p.free)-1]
		p.free = p.free[:len(p.free)-1]
		p.minFree = min(p.minFree, len(p.free))
		if _, ok := a.held[id]; ok {
			p.inUse++
			return id
		}
		delete(a.leasePool, id)
	}
	return ""
}

// acquireCredit serves an eligible acquire from the pool of its limit, or asks the control plane
// for a lease and, unless the pool is cooling down, some credit.
func (a *Admitter) acquireCredit(ctx context.Context, req *crsv1.LeaseAcquire) (*crsv1.AdmitResponse, error) {
	l := req.GetLimits()[0]
	k := creditKey{l.GetScope(), l.GetId()}
	now := time.Now()
	a.mu.Lock()
	p := a.pools[k]
	if p == nil {
		p = &creditPool{}
		a.pools[k] = p
	}
	if id := a.takeCreditLocked(p); id != "" {
		a.mu.Unlock()
		a.acquires.Inc()
		a.creditHits.Inc()
		return &crsv1.AdmitResponse{Granted: true, LeaseId: id}, nil
	}
	ask := int32(1)
	if !now.Before(p.exactUntil) {
		// Enough for the requests in flight to find a lease next time, within bounds.
		ask = int32(min(max(2, p.inUse+1), maxCreditAsk))
	}
	a.mu.Unlock()

	req.Count = ask
	resp, err := a.acquireRemote(ctx, req)
	if err != nil || !resp.GetGranted() || resp.GetLeaseId() == "" {
		return resp, err
	}
	a.mu.Lock()
	// The pool may have been trimmed away meanwhile; it is the same limit, so re-find it.
	if p = a.pools[k]; p == nil {
		p = &creditPool{}
		a.pools[k] = p
	}
	p.inUse++
	a.leasePool[resp.GetLeaseId()] = p
	for _, id := range resp.GetExtraLeaseIds() {
		a.held[id] = struct{}{}
		a.leasePool[id] = p
		p.free = append(p.free, id)
	}
	a.mu.Unlock()
	return resp, nil
}

// returnCreditLocked takes back a lease of pool p from a finished request: kept as credit, or
// to be released (true) when the pool is cooling down or the Admitter closed.
func (a *Admitter) returnCreditLocked(p *creditPool, id string, now time.Time) (release bool) {
	p.inUse--
	if a.closed || now.Before(p.exactUntil) {
		delete(a.leasePool, id)
		return true
	}
	p.free = append(p.free, id)
	return false
}

// trimCredit releases, in every pool, the leases that stayed unused since the last trim, and
// forgets empty pools.
func (a *Admitter) trimCredit() {
	var ids []string
	now := time.Now()
	a.mu.Lock()
	for k, p := range a.pools {
		if n := min(p.minFree, len(p.free)); n > 0 {
			// The oldest returned are at the front; the warm ones at the back stay.
			ids = a.dropCreditLocked(ids, p, n)
		}
		p.minFree = len(p.free)
		if p.inUse == 0 && len(p.free) == 0 && !now.Before(p.exactUntil) {
			delete(a.pools, k)
		}
	}
	a.mu.Unlock()
	a.releaseNow(ids)
}

// reclaimCredit answers the control plane's reclaim of a limit: its unused leases go back at
// once and the pool keeps none for the stated cooldown.
func (a *Admitter) reclaimCredit(r *crsv1.AdmitResponse) {
	l := r.GetReclaim()
	k := creditKey{l.GetScope(), l.GetId()}
	cool := defaultCreditCooldown
	if d := r.GetTtl().AsDuration(); d > 0 {
		cool = d
	}
	a.mu.Lock()
	p := a.pools[k]
	if p == nil {
		p = &creditPool{}
		a.pools[k] = p
	}
	p.exactUntil = time.Now().Add(cool)
	ids := a.dropCreditLocked(nil, p, len(p.free))
	a.mu.Unlock()
	a.creditReclaimed.Add(len(ids))
	// Not on the receiving goroutine: a Send blocked by flow control must not stop the receiving.
	go a.releaseNow(ids)
}

// dropCreditLocked removes the n oldest unused leases of p from the pool and from held, and
// appends those still held to ids.
func (a *Admitter) dropCreditLocked(ids []string, p *creditPool, n int) []string {
	for _, id := range p.free[:n] {
		delete(a.leasePool, id)
		if _, ok := a.held[id]; ok {
			delete(a.held, id)
			ids = append(ids, id)
		}
	}
	p.free = append(p.free[:0], p.free[n:]...)
	p.minFree = min(p.minFree, len(p.free))
	return ids
}

// allCreditLocked empties every pool (the Admitter is closing) and returns the leases to release.
func (a *Admitter) allCreditLocked() []string {
	var ids []string
	for _, p := range a.pools {
		ids = a.dropCreditLocked(ids, p, len(p.free))
	}
	return ids
}
