package fleet

import (
	"context"
	"crypto/rand"
	"sync"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/crsrelay/crs/controlplane/store"
	crsv1 "github.com/crsrelay/crs/gen/crs/v1"
)

// Slot credit: a worker admitting many requests of one limited key (or account) asks for several
// leases at once (LeaseAcquire.count) and keeps the unused ones to admit later requests without
// a round trip. Every lease still counts against the limit in the store, so the limit is never
// exceeded; what credit can do is leave a slot idle in one worker while another worker's request
// finds the limit full. Three rules keep that rare and short:
//   - a grant takes at most half of the limit's free slots, and none beyond the first while the
//     limit is contended (reclaimed within creditCooldown);
//   - workers give back credit that stayed unused for a trim period (fleetclient, ~100 ms);
//   - a request that finds the limit full while some worker holds credit on it triggers a
//     reclaim: every holder is told to give back its unused leases and keep none for
//     creditCooldown, and the request is retried for up to reclaimWait before it is refused.
const (
	// maxCredit bounds LeaseAcquire.count.
	maxCredit = 256
	// creditCooldown is how long a reclaimed limit gets no credit (the workers are told the same).
	creditCooldown = time.Second
	// reclaimWait bounds the retries of a request waiting for reclaimed leases; reclaimPoll is
	// the pause between them. reclaimEvery spaces the reclaims of one limit.
	reclaimWait  = 50 * time.Millisecond
	reclaimPoll  = 2 * time.Millisecond
	reclaimEvery = 10 * time.Millisecond
)

// creditKey names one concurrency limit.
type creditKey struct{ scope, id string }

// admitConn is one worker's Admit stream, as far as credit is concerned: where to send reclaims.
type admitConn struct {
	mu   sync.Mutex // serializes Send on the stream
	send func(*crsv1.AdmitResponse) error
}

func (c *admitConn) sendLocked(r *crsv1.AdmitResponse) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.send(r)
}

// credits tracks which streams were granted credit on which limit, and when each limit was last
// reclaimed.
type credits struct {
	mu          sync.Mutex
	holders     map[creditKey]map[*admitConn]struct{}
	byConn      map[*admitConn][]creditKey
	cooldown    map[creditKey]time.Time // no credit before this
	lastReclaim map[creditKey]time.Time
}

func newCredits() *credits {
	return &credits{
		holders:     map[creditKey]map[*admitConn]struct{}{},
		byConn:      map[*admitConn][]creditKey{},
		cooldown:    map[creditKey]time.Time{},
		lastReclaim: map[creditKey]time.Time{},
	}
}

// contended reports whether k was reclaimed within creditCooldown of now.
func (c *credits) contended(k creditKey, now time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	until, ok := c.cooldown[k]
	if ok && !now.Before(until) {
		delete(c.cooldown, k)
		return false
	}
	return ok
}

// granted records that conn holds credit on k.
func (c *credits) granted(k creditKey, conn *admitConn) {
	c.mu.Lock()
	defer c.mu.Unlock()
	hs := c.holders[k]
	if hs == nil {
		hs = map[*admitConn]struct{}{}
		c.holders[k] = hs
	}
	if _, ok := hs[conn]; !ok {
		hs[conn] = struct{}{}
		c.byConn[conn] = append(c.byConn[conn], k)
	}
}

// gone forgets a stream that ended (its leases stay until released or expired).
func (c *credits) gone(conn *admitConn) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, k := range c.byConn[conn] {
		if hs := c.holders[k]; hs != nil {
			delete(hs, conn)
			if len(hs) == 0 {
				delete(c.holders, k)
			}
		}
	}
	delete(c.byConn, conn)
}

// reclaim starts the cooldown of k and returns the streams to tell, or nil when no stream holds
// credit on k or k was reclaimed within reclaimEvery (those streams were told already).
func (c *credits) reclaim(k creditKey, now time.Time) []*admitConn {
	c.mu.Lock()
	defer c.mu.Unlock()
	hs := c.holders[k]
	if len(hs) == 0 {
		return nil
	}
	c.cooldown[k] = now.Add(creditCooldown)
	if last, ok := c.lastReclaim[k]; ok && now.Sub(last) < reclaimEvery {
		return nil
	}
	c.lastReclaim[k] = now
	out := make([]*admitConn, 0, len(hs))
	for conn := range hs {
		out = append(out, conn)
	}
	return out
}

// creditEligible reports whether an acquire may be granted credit: it asked for more than one
// lease, on exactly one limit, without a window to count (a window counts each request).
func creditEligible(a *crsv1.LeaseAcquire, limits []store.LeaseLimit) bool {
	return a.GetCount() > 1 && len(limits) == 1 && a.GetWindowKeyId() == ""
}

// grantCredit adds up to count-1 leases on the one limit of a granted acquire, at most half of
// the slots still free, none while the limit is contended. It records conn as a holder.
func (s *Service) grantCredit(ctx context.Context, conn *admitConn, a *crsv1.LeaseAcquire, l store.LeaseLimit, resp *crsv1.AdmitResponse, now time.Time) {
	k := creditKey{l.Scope, l.ID}
	if conn == nil || s.credit.contended(k, now) {
		return
	}
	held, err := s.limits.Leases(ctx, l.Scope, l.ID, now)
	if err != nil {
		return // no credit; the granted lease stands
	}
	extra := min(int(a.GetCount())-1, (l.Limit-held)/2)
	if extra <= 0 {
		return
	}
	limits := []store.LeaseLimit{l}
	for range extra {
		id := rand.Text()
		got, err := s.limits.AcquireLeases(ctx, id, limits, s.leaseTTL, now)
		if err != nil {
			s.releaseQuietly(ctx, id, "credit acquire failed")
			break
		}
		if !got.Granted {
			break
		}
		resp.ExtraLeaseIds = append(resp.ExtraLeaseIds, id)
	}
	if len(resp.ExtraLeaseIds) > 0 {
		s.credit.granted(k, conn)
	}
}

// acquireReclaiming takes leaseID on limits; when a limit is full while some worker holds credit
// on it, it reclaims that credit and retries for up to reclaimWait.
func (s *Service) acquireReclaiming(ctx context.Context, leaseID string, limits []store.LeaseLimit) (store.Acquired, error) {
	got, err := s.limits.AcquireLeases(ctx, leaseID, limits, s.leaseTTL, s.now())
	if err != nil || got.Granted {
		return got, err
	}
	k := creditKey{got.Refused.Scope, got.Refused.ID}
	conns := s.credit.reclaim(k, s.now())
	if conns == nil {
		return got, nil
	}
	msg := &crsv1.AdmitResponse{
		Reclaim: &crsv1.LeaseLimit{Scope: k.scope, Id: k.id},
		Ttl:     durationpb.New(creditCooldown),
	}
	for _, c := range conns {
		_ = c.sendLocked(msg) // a stream that broke has nothing to give back
	}
	s.metrics.reclaims.Inc()
	deadline := time.Now().Add(reclaimWait)
	for time.Now().Before(deadline) {
		time.Sleep(reclaimPoll)
		got, err = s.limits.AcquireLeases(ctx, leaseID, limits, s.leaseTTL, s.now())
		if err != nil || got.Granted || got.Refused.Scope != k.scope || got.Refused.ID != k.id {
			return got, err
		}
	}
	return got, nil
}
