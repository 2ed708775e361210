package fleetclient

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/status"

	crsv1 "github.com/crsrelay/crs/gen/crs/v1"
)

// Admit defaults.
const (
	// DefaultAdmitWait is how long Acquire waits for the Admit stream when it is down before
	// giving up with ErrAdmitUnavailable (the worker then answers 503).
	DefaultAdmitWait = 2 * time.Second
	// DefaultAdmitAnswerTimeout bounds the wait for one answer on a stream that is up.
	DefaultAdmitAnswerTimeout = 10 * time.Second
	// defaultLeaseTTL is assumed until the control plane states its TTL in an answer.
	defaultLeaseTTL = 30 * time.Second
	// maxLeaseIDsPerMessage is the control plane's bound on one renew or release.
	maxLeaseIDsPerMessage = 1000
	// maxQueuedReleases bounds the releases kept while the stream is down; beyond it the oldest
	// are dropped (they expire by their TTL anyway).
	maxQueuedReleases = 100_000
)

// Values of AdmitResponse.refused_scope (controlplane/fleet admit.go).
const (
	RefusedKey            = "key"
	RefusedAccount        = "account"
	RefusedWindowRequests = "window_requests"
	RefusedLease          = "lease"
	RefusedUnavailable    = "unavailable"
)

// Sentinel errors of Acquire.
var (
	// ErrAdmitUnavailable: no answer could be had: the stream stayed down for AdmitOptions.Wait,
	// or the answer did not come within AdmitOptions.AnswerTimeout.
	ErrAdmitUnavailable = errors.New("fleetclient: admission unavailable")
	// ErrAdmitClosed: Close was called.
	ErrAdmitClosed = errors.New("fleetclient: admitter closed")

	errStreamLost = errors.New("fleetclient: admit stream lost")
)

// AdmitOptions configure an Admitter. Zero values take the defaults.
type AdmitOptions struct {
	// Wait is how long Acquire waits for a stream that is down (default 2s).
	Wait time.Duration
	// AnswerTimeout bounds the wait for one answer (default 10s).
	AnswerTimeout time.Duration
	// RenewEvery overrides the renewal period; default a third of the lease TTL the control plane
	// states in its answers (30s until it said).
	RenewEvery time.Duration
}

// Admitter holds the worker's one long-lived FleetService.Admit stream (reference §2.4:
// concurrency limits per key and per account, and the fixed request window). Requests are
// multiplexed on it by sequence number and may be answered out of order. It renews every held
// lease with one message every TTL/3, reconnects with backoff, and on reconnect renews at once
// and sends the releases it could not send while down.
//
// The stream opens with the first Acquire: a worker whose keys and accounts have no limits
// never opens it. Leases are not released when the stream ends (the control plane keeps them
// until released or expired), so a short outage keeps them and a dead worker's expire by TTL.
//
// Its methods are safe for concurrent use. Build it with NewAdmitter; Close it after the last
// request ended.
type Admitter struct {
	c    *Client
	opts AdmitOptions
	log  *zap.Logger

	startOnce sync.Once
	ctx       context.Context
	cancel    context.CancelFunc
	done      chan struct{}

	seq atomic.Uint64

	mu      sync.Mutex
	cur     *admitStream  // nil while down
	upCh    chan struct{} // closed when a stream comes up; replaced when it goes down
	held    map[string]struct{}
	pending []string // releases not sent yet (the stream was down)
	// pools is the slot credit per limit, leasePool the pool of each credit-managed lease
	// (credit.go).
	pools     map[creditKey]*creditPool
	leasePool map[string]*creditPool
	ttl       time.Duration
	closed    bool
	// ttlChanged wakes the renewal loop when the control plane states another TTL.
	ttlChanged chan struct{}

	acquires    *metrics.Counter
	refused     *metrics.Counter
	unavailable *metrics.Counter
	lost        *metrics.Counter
	releases    *metrics.Counter
	// creditHits counts acquires served from credit without a round trip; creditReclaimed the
	// unused leases given back on a reclaim.
	creditHits      *metrics.Counter
	creditReclaimed *metrics.Counter
}

// NewAdmitter returns the Admit side of c. Call it once per Client.
func NewAdmitter(c *Client, o AdmitOptions) *Admitter {
	if o.Wait <= 0 {
		o.Wait = DefaultAdmitWait
	}
	if o.AnswerTimeout <= 0 {
		o.AnswerTimeout = DefaultAdmitAnswerTimeout
	}
	a := &Admitter{
		c:    c,
		opts: o,
		log:  c.log.Named("admit"),
		upCh: make(chan struct{}),
		held: make(map[string]struct{}),
		ttl:  defaultLeaseTTL,

		pools:     make(map[creditKey]*creditPool),
		leasePool: make(map[string]*creditPool),
		done:      make(chan struct{}),

		ttlChanged: make(chan struct{}, 1),
	}
	a.ctx, a.cancel = context.WithCancel(context.Background())
	p, m := defaultMetricsPrefix, c.metrics
	a.acquires = m.GetOrCreateCounter(p + "admit_acquires_total")
	a.refused = m.GetOrCreateCounter(p + "admit_refused_total")
	a.unavailable = m.GetOrCreateCounter(p + "admit_unavailable_total")
	a.lost = m.GetOrCreateCounter(p + "admit_leases_lost_total")
	a.releases = m.GetOrCreateCounter(p + "admit_releases_total")
	a.creditHits = m.GetOrCreateCounter(p + "admit_credit_hits_total")
	a.creditReclaimed = m.GetOrCreateCounter(p + "admit_credit_reclaimed_total")
	m.GetOrCreateGauge(p+"admit_leases_held", func() float64 { return float64(a.Held()) })
	m.GetOrCreateGauge(p+"admit_stream_up", func() float64 {
		if a.up() {
			return 1
		}
		return 0
	})
	return a
}

// Held is the number of leases held (granted, not released, not reported lost).
func (a *Admitter) Held() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.held)
}

func (a *Admitter) up() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.cur != nil
}

// start runs the stream and renewal loops, once, unless Close came first.
func (a *Admitter) start() {
	a.startOnce.Do(func() {
		var wg sync.WaitGroup
		wg.Go(a.streamLoop)
		wg.Go(a.renewLoop)
		wg.Go(a.trimLoop)
		go func() { wg.Wait(); close(a.done) }()
	})
}

// Acquire asks for one slot on each of req's limits, all or nothing, and counts the request in
// the window of req.window_key_id (controlplane/fleet admit.go). It returns the control plane's
// answer: granted (with a lease id when a limit was taken, held and renewed from then on until
// Release), or refused with refused_scope and the numbers. A refusal "unavailable" means the
// control plane's limit store failed. Errors: ErrAdmitUnavailable, ErrAdmitClosed, or ctx's.
//
// A stream lost while an acquire is in flight is retried on the next one within Wait; a grant
// the lost stream may have made is unknown to the worker and expires by its TTL.
//
// An acquire on one limit without a window is served from the slot credit of that limit when
// there is some, without a round trip (credit.go); its lease goes back to the credit on Release.
func (a *Admitter) Acquire(ctx context.Context, req *crsv1.LeaseAcquire) (*crsv1.AdmitResponse, error) {
	a.start()
	if creditEligible(req) {
		return a.acquireCredit(ctx, req)
	}
	return a.acquireRemote(ctx, req)
}

// acquireRemote asks the control plane.
func (a *Admitter) acquireRemote(ctx context.Context, req *crsv1.LeaseAcquire) (*crsv1.AdmitResponse, error) {
	a.acquires.Inc()
	until := time.Now().Add(a.opts.Wait)
	for {
		s, err := a.stream(ctx, until)
		if err != nil {
			a.unavailable.Inc()
			return nil, err
		}
		resp, err := a.call(ctx, s, &crsv1.AdmitRequest{Op: &crsv1.AdmitRequest_Acquire{Acquire: req}})
		if errors.Is(err, errStreamLost) {
			if time.Now().Before(until) {
				continue
			}
			err = ErrAdmitUnavailable
		}
		if err != nil {
			a.unavailable.Inc()
			return nil, err
		}
		if !resp.GetGranted() {
			a.refused.Inc()
		}
		a.noteTTL(resp)
		if resp.GetGranted() && resp.GetLeaseId() != "" {
			a.mu.Lock()
			a.held[resp.GetLeaseId()] = struct{}{}
			a.mu.Unlock()
		}
		return resp, nil
	}
}

// Release gives leases back. Each held lease is released once on the wire however often it is
// passed; ids that are not held (never granted, released already, reported lost) are ignored.
// A lease of a credit pool goes back to the pool instead (and to the control plane from there).
// It does not wait for the answer; while the stream is down the releases are queued for the next
// one (and the leases expire by their TTL if it never comes).
func (a *Admitter) Release(leaseIDs ...string) {
	var ids []string
	now := time.Now()
	a.mu.Lock()
	for _, id := range leaseIDs {
		if p := a.leasePool[id]; p != nil {
			if _, ok := a.held[id]; !ok { // lost meanwhile
				p.inUse--
				delete(a.leasePool, id)
				continue
			}
			if !a.returnCreditLocked(p, id, now) {
				continue
			}
		}
		if _, ok := a.held[id]; ok {
			delete(a.held, id)
			ids = append(ids, id)
		}
	}
	a.mu.Unlock()
	a.releaseNow(ids)
}

// releaseNow sends the release of leases already removed from held, or queues it while the
// stream is down.
func (a *Admitter) releaseNow(ids []string) {
	if len(ids) == 0 {
		return
	}
	a.mu.Lock()
	s := a.cur
	if len(ids) > 0 && s == nil {
		a.queueReleasesLocked(ids)
		ids = nil
	}
	a.mu.Unlock()
	if len(ids) == 0 {
		return
	}
	a.releases.Add(len(ids))
	a.sendReleases(s, ids)
}

// sendReleases sends ids on s in messages of at most maxLeaseIDsPerMessage; when the stream
// fails, what was not sent is queued for the next one.
func (a *Admitter) sendReleases(s *admitStream, ids []string) {
	for len(ids) > 0 {
		n := min(len(ids), maxLeaseIDsPerMessage)
		req := &crsv1.AdmitRequest{Op: &crsv1.AdmitRequest_Release{Release: &crsv1.LeaseRelease{LeaseIds: ids[:n]}}}
		if err := a.sendInternal(s, req, nil); err != nil {
			a.mu.Lock()
			a.queueReleasesLocked(ids)
			a.mu.Unlock()
			return
		}
		ids = ids[n:]
	}
}

func (a *Admitter) queueReleasesLocked(ids []string) {
	a.pending = append(a.pending, ids...)
	if over := len(a.pending) - maxQueuedReleases; over > 0 {
		a.pending = append(a.pending[:0], a.pending[over:]...)
	}
}

// Close sends what is queued, ends the stream and stops the loops; ctx bounds the wait for the
// control plane to take the last messages. Leases still held stay until their TTL.
func (a *Admitter) Close(ctx context.Context) error {
	a.mu.Lock()
	credit := a.allCreditLocked()
	s := a.cur
	a.mu.Unlock()
	// Unused credit goes back now rather than by TTL: the other workers may use the slots.
	a.releaseNow(credit)
	a.mu.Lock()
	a.closed = true
	a.mu.Unlock()
	// Never started: nothing runs, and start is a no-op from now on.
	a.startOnce.Do(func() { close(a.done) })
	if s != nil {
		s.closeSend()
		select {
		case <-s.dead:
		case <-ctx.Done():
		}
	}
	a.cancel()
	select {
	case <-a.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("close admitter: %w", ctx.Err())
	}
}

// stream returns the stream that is up, waiting until until when it is down.
func (a *Admitter) stream(ctx context.Context, until time.Time) (*admitStream, error) {
	for {
		a.mu.Lock()
		s, upCh, closed := a.cur, a.upCh, a.closed
		a.mu.Unlock()
		if closed {
			return nil, ErrAdmitClosed
		}
		if s != nil {
			return s, nil
		}
		wait := time.Until(until)
		if wait <= 0 {
			return nil, ErrAdmitUnavailable
		}
		t := time.NewTimer(wait)
		select {
		case <-upCh:
			t.Stop()
		case <-t.C:
			return nil, ErrAdmitUnavailable
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		}
	}
}

// call sends req on s and waits for its answer.
func (a *Admitter) call(ctx context.Context, s *admitStream, req *crsv1.AdmitRequest) (*crsv1.AdmitResponse, error) {
	c := &admitCall{ch: make(chan *crsv1.AdmitResponse, 1)}
	seq := a.seq.Add(1)
	req.Seq = seq
	if !s.register(seq, c) {
		return nil, errStreamLost
	}
	if err := s.send(req); err != nil {
		s.forget(seq)
		return nil, errStreamLost
	}
	t := time.NewTimer(a.opts.AnswerTimeout)
	defer t.Stop()
	select {
	case r := <-c.ch:
		return r, nil
	case <-s.dead:
		select {
		case r := <-c.ch: // answered just before the stream died
			return r, nil
		default:
			return nil, errStreamLost
		}
	case <-t.C:
		a.abandon(s, seq, c)
		return nil, ErrAdmitUnavailable
	case <-ctx.Done():
		a.abandon(s, seq, c)
		return nil, ctx.Err()
	}
}

// abandon gives up waiting for seq: a grant that still comes is released at once, as no request
// will release it.
func (a *Admitter) abandon(s *admitStream, seq uint64, c *admitCall) {
	if s.abandon(seq) {
		return // the dispatcher releases a late grant
	}
	select {
	case r := <-c.ch: // the answer arrived meanwhile
		a.releaseGrant(r)
	default:
	}
}

// releaseGrant gives back the leases of a grant no request will use.
func (a *Admitter) releaseGrant(r *crsv1.AdmitResponse) {
	if !r.GetGranted() || r.GetLeaseId() == "" {
		return
	}
	ids := append([]string{r.GetLeaseId()}, r.GetExtraLeaseIds()...)
	a.releaseNow(ids)
}

// sendInternal sends a message whose answer the Admitter handles itself (renew, release).
func (a *Admitter) sendInternal(s *admitStream, req *crsv1.AdmitRequest, onAnswer func(*crsv1.AdmitResponse)) error {
	seq := a.seq.Add(1)
	req.Seq = seq
	if !s.register(seq, &admitCall{onAnswer: onAnswer}) {
		return errStreamLost
	}
	if err := s.send(req); err != nil {
		s.forget(seq)
		return err
	}
	return nil
}

// noteTTL keeps the lease TTL the control plane states.
func (a *Admitter) noteTTL(r *crsv1.AdmitResponse) {
	if d := r.GetTtl(); d != nil && d.AsDuration() > 0 {
		a.mu.Lock()
		changed := a.ttl != d.AsDuration()
		a.ttl = d.AsDuration()
		a.mu.Unlock()
		if changed {
			select {
			case a.ttlChanged <- struct{}{}:
			default:
			}
		}
	}
}

func (a *Admitter) renewEvery() time.Duration {
	if a.opts.RenewEvery > 0 {
		return a.opts.RenewEvery
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	return max(a.ttl/3, 10*time.Millisecond)
}

// renewLoop renews every held lease each renewal period. The period follows the TTL the control
// plane states (ttlChanged).
func (a *Admitter) renewLoop() {
	last := time.Now()
	for {
		t := time.NewTimer(time.Until(last.Add(a.renewEvery())))
		select {
		case <-a.ctx.Done():
			t.Stop()
			return
		case <-a.ttlChanged:
			t.Stop()
			continue
		case <-t.C:
		}
		last = time.Now()
		a.renewHeld()
	}
}

// trimLoop gives back, every creditTrimEvery, the credit that stayed unused (credit.go).
func (a *Admitter) trimLoop() {
	t := time.NewTicker(creditTrimEvery)
	defer t.Stop()
	for {
		select {
		case <-a.ctx.Done():
			return
		case <-t.C:
			a.trimCredit()
		}
	}
}

// renewHeld sends one Renew with every held lease (split at the control plane's bound).
func (a *Admitter) renewHeld() {
	a.mu.Lock()
	s := a.cur
	if s == nil || len(a.held) == 0 {
		a.mu.Unlock()
		return
	}
	ids := make([]string, 0, len(a.held))
	for id := range a.held {
		ids = append(ids, id)
	}
	a.mu.Unlock()
	for len(ids) > 0 {
		n := min(len(ids), maxLeaseIDsPerMessage)
		chunk := ids[:n]
		ids = ids[n:]
		req := &crsv1.AdmitRequest{Op: &crsv1.AdmitRequest_Renew{Renew: &crsv1.LeaseRenew{LeaseIds: chunk}}}
		if err := a.sendInternal(s, req, a.renewed); err != nil {
			return // the stream broke; the next one renews at once
		}
	}
}

// renewed handles a renew's answer: leases the control plane no longer holds (they expired
// during an outage longer than the TTL) are dropped; their requests run on without a slot.
func (a *Admitter) renewed(r *crsv1.AdmitResponse) {
	a.noteTTL(r)
	if r.GetRefusedScope() != RefusedLease {
		if r.GetRefusedScope() == RefusedUnavailable {
			a.log.Warn("lease renewal failed on the control plane; retrying next period")
		}
		return
	}
	missing := strings.Split(r.GetLeaseId(), ",")
	n := 0
	a.mu.Lock()
	for _, id := range missing {
		if _, ok := a.held[id]; ok {
			delete(a.held, id)
			n++
		}
	}
	a.mu.Unlock()
	if n > 0 {
		a.lost.Add(n)
		a.log.Warn("leases expired before renewal; their requests continue without a slot", zap.Int("leases", n))
	}
}

// streamLoop keeps one Admit stream open, with backoff between attempts, until Close.
func (a *Admitter) streamLoop() {
	backoff := a.c.opts.MinBackoff
	failures := 0
	for a.ctx.Err() == nil {
		if a.c.conn.GetState() == connectivity.Shutdown {
			return
		}
		answered, err := a.serve()
		a.mu.Lock()
		closed := a.closed
		a.mu.Unlock()
		if closed || a.ctx.Err() != nil {
			return
		}
		if answered {
			backoff, failures = a.c.opts.MinBackoff, 0
		}
		failures++
		switch {
		case status.Code(err) == codes.Unimplemented:
			if failures == 1 {
				a.log.Error("the control plane keeps no limits (Admit unimplemented); limited keys get 503", zap.Error(err))
			}
		case failures == 1:
			a.log.Warn("admit stream lost; limited keys wait for it", zap.Error(err))
		default:
			a.log.Debug("admit reconnect failed", zap.Error(err), zap.Int("attempt", failures))
		}
		if !sleep(a.ctx, jitter(backoff)) {
			return
		}
		backoff = min(2*backoff, a.c.opts.MaxBackoff)
	}
}

// serve runs one stream until it breaks; answered reports whether the control plane answered
// anything on it (a stream that fails at once does not reset the backoff).
func (a *Admitter) serve() (answered bool, err error) {
	ctx, cancel := context.WithCancel(a.ctx)
	defer cancel()
	st, err := a.c.api.Admit(ctx)
	if err != nil {
		return false, fmt.Errorf("open admit: %w", err)
	}
	s := &admitStream{s: st, dead: make(chan struct{}), calls: make(map[uint64]*admitCall)}
	a.setUp(s)
	defer a.setDown(s)
	for {
		r, err := st.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return answered, nil
			}
			return answered, fmt.Errorf("receive admit: %w", err)
		}
		answered = true
		a.dispatch(s, r)
	}
}

// setUp makes s the current stream, renews every held lease on it and sends queued releases.
func (a *Admitter) setUp(s *admitStream) {
	a.mu.Lock()
	a.cur = s
	close(a.upCh)
	queued := a.pending
	a.pending = nil
	a.mu.Unlock()
	a.sendReleases(s, queued)
	a.renewHeld()
}

// setDown marks s dead: waiters on it retry on the next stream.
func (a *Admitter) setDown(s *admitStream) {
	a.mu.Lock()
	if a.cur == s {
		a.cur = nil
		a.upCh = make(chan struct{})
	}
	a.mu.Unlock()
	s.kill()
}

// dispatch hands an answer to its waiter.
func (a *Admitter) dispatch(s *admitStream, r *crsv1.AdmitResponse) {
	if r.GetSeq() == 0 && r.GetReclaim() != nil {
		a.reclaimCredit(r)
		return
	}
	c, abandoned := s.take(r.GetSeq())
	switch {
	case c == nil:
		a.log.Debug("admit answer without a request", zap.Uint64("seq", r.GetSeq()))
	case abandoned:
		// Not on this goroutine: a Send blocked by flow control must not stop the receiving.
		go a.releaseGrant(r)
	case c.onAnswer != nil:
		c.onAnswer(r)
	case c.ch != nil:
		c.ch <- r
	}
}

// admitStream is one open Admit stream and the requests awaiting an answer on it.
type admitStream struct {
	s      crsv1.FleetService_AdmitClient
	sendMu sync.Mutex
	dead   chan struct{}

	mu    sync.Mutex
	calls map[uint64]*admitCall // nil once dead
}

// admitCall is one request awaiting its answer: a caller's channel, or the Admitter's handler.
type admitCall struct {
	ch        chan *crsv1.AdmitResponse // buffered, 1
	onAnswer  func(*crsv1.AdmitResponse)
	abandoned bool
}

func (s *admitStream) send(req *crsv1.AdmitRequest) error {
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	if err := s.s.Send(req); err != nil {
		return fmt.Errorf("send admit: %w", err)
	}
	return nil
}

func (s *admitStream) closeSend() {
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	_ = s.s.CloseSend()
}

// register records a call; false when the stream is dead already.
func (s *admitStream) register(seq uint64, c *admitCall) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.calls == nil {
		return false
	}
	s.calls[seq] = c
	return true
}

func (s *admitStream) forget(seq uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.calls, seq)
}

// take removes and returns the call of seq.
func (s *admitStream) take(seq uint64) (c *admitCall, abandoned bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c = s.calls[seq]
	delete(s.calls, seq)
	if c == nil {
		return nil, false
	}
	return c, c.abandoned
}

// abandon marks seq's call abandoned; false when it was answered (or the stream died) already.
func (s *admitStream) abandon(seq uint64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.calls[seq]
	if c == nil {
		return false
	}
	c.abandoned = true
	return true
}

// kill ends the stream's calls: their waiters see dead.
func (s *admitStream) kill() {
	s.mu.Lock()
	s.calls = nil
	s.mu.Unlock()
	close(s.dead)
}
