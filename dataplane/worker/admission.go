package worker

import (
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
	"go.uber.org/zap"

	"github.com/crsrelay/crs/dataplane/apierr"
	"github.com/crsrelay/crs/dataplane/auth"
	"github.com/crsrelay/crs/dataplane/fleetclient"
	"github.com/crsrelay/crs/dataplane/relay"
	"github.com/crsrelay/crs/dataplane/sched"
	"github.com/crsrelay/crs/dataplane/snapshot"
	crsv1 "github.com/crsrelay/crs/gen/crs/v1"
)

// Admitter grants the concurrency leases of limited keys and accounts and counts fixed-window
// requests, all over FleetService.Admit; *fleetclient.Admitter implements it. Acquire blocks
// until the control plane answered (or gave up: an error); Release does not block.
type Admitter interface {
	Acquire(ctx context.Context, req *crsv1.LeaseAcquire) (*crsv1.AdmitResponse, error)
	Release(leaseIDs ...string)
}

var _ Admitter = (*fleetclient.Admitter)(nil)

// Lease scopes (controlplane/store ScopeKey, ScopeAccount).
const (
	scopeKey     = fleetclient.RefusedKey
	scopeAccount = fleetclient.RefusedAccount
)

// Wait queue of reference §2.4: defaults of the admin settings and the polling schedule
// (src/middleware/auth.js QUEUE_POLLING_CONFIG).
const (
	defaultQueueMaxSize = 3
	defaultQueueTimeout = 10 * time.Second
	queuePollFirst      = 200 * time.Millisecond
	queuePollMax        = 2 * time.Second
	queuePollFactor     = 1.5
	queuePollJitter     = 0.2
)

// Refusals of admission, byte for byte as the reference writes them (§2.4).
var (
	// errAdmitUnavailable: the Admit stream is down (after the Admitter's wait) or the control
	// plane's limit store failed; the reference's answer to repeated Redis errors.
	errAdmitUnavailable = apierr.Flat(fasthttp.StatusServiceUnavailable, "Service temporarily unavailable",
		"Failed to acquire concurrency slot due to internal error")
	// errAccountsFull: every candidate account is at its max_concurrency (reference §1.3 step 12).
	errAccountsFull = apierr.Flat(fasthttp.StatusServiceUnavailable, "service_unavailable",
		"All available Claude Console accounts have reached their concurrency limit. Please try again later.")
)

// admissions is the worker's side of limits that need the control plane: per-key concurrency
// (with the optional wait queue), the authoritative request count of fixed windows, and
// per-account max_concurrency. Keys and accounts without such limits never reach the Admitter.
type admissions struct {
	adm Admitter
	// own is the Admitter the worker built itself, closed by Run.
	own *fleetclient.Admitter
	log *zap.Logger
	now func() time.Time

	// queues counts the requests of each key waiting in this worker's queue. The reference keeps
	// one counter per key in Redis; here the queue length, and so its maximum size, is per
	// worker (a fleet of N workers queues up to N × max size requests of a key in all).
	queueMu sync.Mutex
	queues  map[string]int

	// limited caches, per snapshot, whether any account has max_concurrency.
	limited atomic.Pointer[accountLimitFlag]
}

type accountLimitFlag struct {
	st      *snapshot.State
	limited bool
}

func newAdmissions(o Options, log *zap.Logger) *admissions {
	a := &admissions{adm: o.Admitter, log: log.Named("admission"), now: o.Now, queues: make(map[string]int)}
	if a.adm == nil && o.Fleet != nil {
		a.own = fleetclient.NewAdmitter(o.Fleet, fleetclient.AdmitOptions{})
		a.adm = a.own
	}
	return a
}

// close closes the Admitter the worker built, after the last request released its leases.
func (a *admissions) close(ctx context.Context) {
	if a.own == nil {
		return
	}
	if err := a.own.Close(ctx); err != nil {
		a.log.Debug("close admitter", zap.Error(err))
	}
}

// accountLimits reports whether some account of st has max_concurrency; cached per snapshot, so
// it does not allocate on the hot path.
func (a *admissions) accountLimits(st *snapshot.State) bool {
	if f := a.limited.Load(); f != nil && f.st == st {
		return f.limited
	}
	limited := false
	for _, acc := range st.Accounts() {
		if acc.GetMaxConcurrency() > 0 {
			limited = true
			break
		}
	}
	a.limited.Store(&accountLimitFlag{st: st, limited: limited})
	return limited
}

// admission is what one relayed request holds: its key lease, and the lease on the account being
// tried. It exists only for requests of limited keys or in a fleet with limited accounts; a nil
// *admission holds nothing and its methods are no-ops. release may run on the stream writer's
// goroutine.
type admission struct {
	a        *admissions
	reqID    string
	keyLease string
	accounts bool
	cands    *accountCandidates
	released atomic.Bool
}

// admit runs the admission of a request the relay is about to take (reference §2.3 steps 6 and
// 7): a slot on the key's concurrency limit (not for count_tokens) and one request counted in its
// fixed window, in one Admit round trip, with the reference's wait queue when the settings enable
// it. On refusal it writes the reference's answer and returns false. The caller releases the
// returned admission exactly once when the request ends (release is idempotent); until the relay
// has the request, a handler panic releases it (call.relayDone).
//
// Keys without those limits, in a fleet without account limits, return (nil, true) without a
// round trip or an allocation.
func (w *Worker) admit(ctx *fasthttp.RequestCtx, c *call, countTokens bool) (*admission, bool) {
	k := c.key
	conc := !countTokens && k.GetConcurrencyLimit() > 0
	win := auth.HasWindowLimit(k)
	accts := !countTokens && w.adm.accountLimits(c.state)
	if !conc && !win && !accts {
		return nil, true
	}
	ad := &admission{a: w.adm, reqID: c.id, accounts: accts}
	if !conc && !win {
		c.relayDone = func(int) { ad.release() }
		return ad, true
	}
	req := &crsv1.LeaseAcquire{RequestId: c.id}
	if conc {
		req.Limits = []*crsv1.LeaseLimit{{Scope: scopeKey, Id: k.GetId(), Limit: k.GetConcurrencyLimit()}}
	}
	if win {
		req.WindowKeyId = k.GetId()
	}
	lease, err := w.adm.acquireKey(ctx, c, req)
	if err != nil {
		if ce := w.log.Check(zap.DebugLevel, "request not admitted"); ce != nil {
			ce.Write(zap.String("request_id", c.id), zap.String("key_id", k.GetId()), zap.Error(err))
		}
		writeError(ctx, err)
		return nil, false
	}
	ad.keyLease = lease
	c.relayDone = func(int) { ad.release() }
	return ad, true
}

// acquireKey asks for the key's slot and window count, waiting in the queue when the slot is
// refused and the settings enable it. It returns the lease id ("" when only the window was
// counted) or the client-visible refusal.
func (a *admissions) acquireKey(ctx *fasthttp.RequestCtx, c *call, req *crsv1.LeaseAcquire) (string, error) {
	if a.adm == nil {
		return "", errAdmitUnavailable.WithCause(errNoAdmitter)
	}
	resp, err := a.adm.Acquire(context.Background(), req)
	if err != nil {
		return "", errAdmitUnavailable.WithCause(err)
	}
	if resp.GetGranted() {
		return resp.GetLeaseId(), nil
	}
	settings := c.state.Settings()
	if resp.GetRefusedScope() == scopeKey && settings.GetConcurrentRequestQueueEnabled() {
		return a.queue(ctx, c, req, settings)
	}
	return "", a.refusal(resp, c.key)
}

// refusal turns a refused acquire into the reference's answer.
func (a *admissions) refusal(resp *crsv1.AdmitResponse, k *crsv1.ApiKey) error {
	switch resp.GetRefusedScope() {
	case scopeKey:
		return concurrencyError(int64(k.GetConcurrencyLimit()), resp.GetCurrent())
	case fleetclient.RefusedWindowRequests:
		limit := resp.GetLimit()
		if limit <= 0 {
			limit = int64(k.GetRateLimitRequests())
		}
		return auth.WindowRequestsError(resp.GetCurrent(), limit, resp.GetResetAt().AsTime(), a.now())
	}
	return errAdmitUnavailable.WithCause(errRefused(resp.GetRefusedScope()))
}

// concurrencyError is the 429 of reference §2.4 with the queue disabled.
func concurrencyError(limit, current int64) error {
	return apierr.Flat(fasthttp.StatusTooManyRequests, "Concurrency limit exceeded",
		"Too many concurrent requests. Limit: "+strconv.FormatInt(limit, 10)+" concurrent requests").
		WithFields(
			apierr.Field{Name: "currentConcurrency", Value: current},
			apierr.Field{Name: "concurrencyLimit", Value: limit},
		).WithHeader("Retry-After", "1")
}

// queue waits for the key's slot (reference §2.4 with concurrent_request_queue_enabled): at
// most max(limit × multiplier, max size) requests of the key wait (in this worker; see
// admissions.queues), each polling the control plane with a 200ms interval growing ×1.5 (±20%
// jitter, at most 2s) until the queue timeout. While waiting, the response is marked
// Connection: close, as the reference does for queued requests.
func (a *admissions) queue(ctx *fasthttp.RequestCtx, c *call, req *crsv1.LeaseAcquire, s *crsv1.Settings) (string, error) {
	limit := int64(c.key.GetConcurrencyLimit())
	timeout := defaultQueueTimeout
	if d := s.GetConcurrentRequestQueueTimeout().AsDuration(); d > 0 {
		timeout = d
	}
	maxSize := int64(s.GetConcurrentRequestQueueMaxSize())
	if maxSize <= 0 {
		maxSize = defaultQueueMaxSize
	}
	maxQueue := max(limit*int64(s.GetConcurrentRequestQueueMaxSizeMultiplier()), maxSize)
	timeoutMs := timeout.Milliseconds()
	timeoutS := int64(math.Ceil(float64(timeoutMs) / 1000))

	keyID := c.key.GetId()
	n := a.enqueue(keyID)
	defer a.dequeue(keyID)
	if int64(n) > maxQueue {
		return "", apierr.Flat(fasthttp.StatusTooManyRequests, "Concurrency queue full",
			"Too many requests waiting in queue. Limit: "+strconv.FormatInt(limit, 10)+" concurrent requests, queue: "+
				strconv.Itoa(n-1)+"/"+strconv.FormatInt(maxQueue, 10)+", timeout: "+strconv.FormatInt(timeoutS, 10)+"s").
			WithFields(
				apierr.Field{Name: "currentConcurrency", Value: limit},
				apierr.Field{Name: "concurrencyLimit", Value: limit},
				apierr.Field{Name: "queueCount", Value: n - 1},
				apierr.Field{Name: "maxQueueSize", Value: maxQueue},
				apierr.Field{Name: "queueTimeoutMs", Value: timeoutMs},
				apierr.Field{Name: "retryAfterSeconds", Value: timeoutS},
			).WithHeader("Retry-After", strconv.FormatInt(timeoutS, 10))
	}
	ctx.SetConnectionClose()

	start := time.Now()
	interval := queuePollFirst
	for {
		left := timeout - time.Since(start)
		if left <= 0 {
			break
		}
		time.Sleep(min(interval, left))
		resp, err := a.adm.Acquire(context.Background(), req)
		if err != nil {
			return "", errAdmitUnavailable.WithCause(err)
		}
		if resp.GetGranted() {
			return resp.GetLeaseId(), nil
		}
		if resp.GetRefusedScope() != scopeKey {
			return "", a.refusal(resp, c.key)
		}
		next := float64(interval) * queuePollFactor
		next += next * queuePollJitter * (2*rand.Float64() - 1)
		interval = max(time.Millisecond, min(time.Duration(next), queuePollMax))
	}
	waited := time.Since(start).Milliseconds()
	retry := min(max(int64(math.Ceil(float64(timeoutS)/2)), 5), 30)
	return "", apierr.Flat(fasthttp.StatusTooManyRequests, "Queue timeout",
		"Request timed out waiting for concurrency slot. Limit: "+strconv.FormatInt(limit, 10)+
			" concurrent requests, maxQueue: "+strconv.FormatInt(maxQueue, 10)+", Queue timeout: "+
			strconv.FormatInt(timeoutS, 10)+"s, waited: "+strconv.FormatInt(waited, 10)+"ms").
		WithFields(
			apierr.Field{Name: "currentConcurrency", Value: limit},
			apierr.Field{Name: "concurrencyLimit", Value: limit},
			apierr.Field{Name: "maxQueueSize", Value: maxQueue},
			apierr.Field{Name: "queueTimeoutMs", Value: timeoutMs},
			apierr.Field{Name: "waitTimeMs", Value: waited},
			apierr.Field{Name: "retryAfterSeconds", Value: retry},
		).WithHeader("Retry-After", strconv.FormatInt(retry, 10))
}

func (a *admissions) enqueue(keyID string) int {
	a.queueMu.Lock()
	defer a.queueMu.Unlock()
	a.queues[keyID]++
	return a.queues[keyID]
}

func (a *admissions) dequeue(keyID string) {
	a.queueMu.Lock()
	defer a.queueMu.Unlock()
	if a.queues[keyID]--; a.queues[keyID] <= 0 {
		delete(a.queues, keyID)
	}
}

// queued is the number of requests of a key waiting in this worker's queue.
func (a *admissions) queued(keyID string) int {
	a.queueMu.Lock()
	defer a.queueMu.Unlock()
	return a.queues[keyID]
}

// candidates returns what the relay tries: the scheduler's selection as it is, or, in a fleet
// with limited accounts, a wrapper that takes a lease on each account with max_concurrency
// before returning it and skips the accounts whose limit is full. The first account is taken
// here, so that a request for which every account is full gets the reference's 503 rather than
// the relay's "no account" answer.
func (ad *admission) candidates(sel *sched.Selection) (relay.Candidates, error) {
	if ad == nil || !ad.accounts {
		return sel, nil
	}
	ac := &accountCandidates{inner: sel, a: ad.a, reqID: ad.reqID}
	ad.cands = ac
	first := ac.advance()
	if first == nil {
		switch {
		case ac.unavailable > 0:
			return nil, errAdmitUnavailable
		case ac.full > 0:
			return nil, errAccountsFull
		}
	}
	ac.primed = first
	return ac, nil
}

// release gives back every lease the request holds; only the first call does anything.
func (ad *admission) release() {
	if ad == nil || !ad.released.CompareAndSwap(false, true) {
		return
	}
	var ids [2]string
	n := 0
	if ad.keyLease != "" {
		ids[n] = ad.keyLease
		n++
	}
	if ad.cands != nil {
		if l := ad.cands.takeLease(); l != "" {
			ids[n] = l
			n++
		}
	}
	if n > 0 {
		ad.a.adm.Release(ids[:n]...)
	}
}

// accountCandidates is the relay.Candidates of a fleet with limited accounts. Next is called on
// the request's goroutine; takeLease may be called from the stream writer's.
type accountCandidates struct {
	inner  relay.Candidates
	a      *admissions
	reqID  string
	primed *crsv1.Account
	// full and unavailable count accounts skipped because their limit was full or the Admit
	// stream failed.
	full, unavailable int

	mu    sync.Mutex
	lease string // lease on the account returned last
}

var _ relay.Candidates = (*accountCandidates)(nil)

// Next implements [relay.Candidates.Next]: the previous account's lease is given back (its
// attempt failed), then the next account whose limit has room is returned, with its lease held.
func (ac *accountCandidates) Next() *crsv1.Account {
	if p := ac.primed; p != nil {
		ac.primed = nil
		return p
	}
	if l := ac.takeLease(); l != "" {
		ac.a.adm.Release(l)
	}
	return ac.advance()
}

// advance returns the next candidate that needs no lease or got one.
func (ac *accountCandidates) advance() *crsv1.Account {
	for {
		acct := ac.inner.Next()
		if acct == nil || acct.GetMaxConcurrency() <= 0 {
			return acct
		}
		if ac.a.adm == nil {
			ac.unavailable++
			continue
		}
		resp, err := ac.a.adm.Acquire(context.Background(), &crsv1.LeaseAcquire{
			RequestId: ac.reqID,
			Limits:    []*crsv1.LeaseLimit{{Scope: scopeAccount, Id: acct.GetId(), Limit: acct.GetMaxConcurrency()}},
		})
		switch {
		case err != nil || resp.GetRefusedScope() == fleetclient.RefusedUnavailable:
			ac.unavailable++
			ac.a.log.Warn("account lease unavailable; account skipped", zap.String("request_id", ac.reqID),
				zap.String("account_id", acct.GetId()), zap.Error(err))
		case resp.GetGranted():
			ac.mu.Lock()
			ac.lease = resp.GetLeaseId()
			ac.mu.Unlock()
			return acct
		default:
			ac.full++
			if ce := ac.a.log.Check(zap.DebugLevel, "account at its concurrency limit; skipped"); ce != nil {
				ce.Write(zap.String("request_id", ac.reqID), zap.String("account_id", acct.GetId()))
			}
		}
	}
}

// takeLease returns the held account lease and forgets it.
func (ac *accountCandidates) takeLease() string {
	ac.mu.Lock()
	defer ac.mu.Unlock()
	l := ac.lease
	ac.lease = ""
	return l
}

// errNoAdmitter: the worker was built without a fleet client or Admitter (tests).
var errNoAdmitter = errors.New("worker: no admitter")

// errRefused is an unexpected refusal scope, as a cause for logs.
type errRefused string

func (e errRefused) Error() string { return "admission refused with scope " + strconv.Quote(string(e)) }
