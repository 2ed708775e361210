package oauth

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/crsrelay/crs/controlplane/proxyhttp"
	"github.com/crsrelay/crs/controlplane/secret"
	"github.com/crsrelay/crs/controlplane/store"
	crsv1 "github.com/crsrelay/crs/gen/crs/v1"
)

// Refresher defaults.
const (
	// DefaultMargin: access tokens expiring within it are refreshed.
	DefaultMargin = 5 * time.Minute
	// DefaultInterval between scans of every account.
	DefaultInterval = time.Minute
	// DefaultLockTTL of the cross-replica lease "refresh:<account id>" (reference §5.1: 60 s).
	DefaultLockTTL = time.Minute
	// DefaultRetryMin and DefaultRetryMax bound the backoff after a failed refresh that may
	// succeed later (network, proxy, provider 5xx).
	DefaultRetryMin = 30 * time.Second
	DefaultRetryMax = 30 * time.Minute
)

// RefreshFailedReason starts the status reason of accounts whose refresh failed ("token refresh
// failed: token endpoint answered 400 invalid_grant: ..."). Notifications recognise it, and the
// refresher does not retry an account it put into "unauthorized" with it until its credentials
// change.
const RefreshFailedReason = "token refresh failed"

// Account states the refresher reads and writes (AccountStatus.state; the fleet service owns the
// full list).
const (
	stateActive       = "active"
	stateUnauthorized = "unauthorized"
	stateError        = "error"
	stateBlocked      = "blocked"
	stateDisabled     = "disabled"
)

// lockPoll is how often a refresh waiting for another replica's lease tries again.
const lockPoll = 100 * time.Millisecond

// RefresherOptions are the dependencies and settings of a Refresher.
type RefresherOptions struct {
	// Store holds the accounts. Required.
	Store store.Store
	// Locks makes a refresh run once across replicas. Required (the same backend as Store).
	Locks store.LockStore
	// Sealer opens and seals account credentials (the one the admin service uses). Required.
	Sealer *secret.Sealer
	// Providers by name: default DefaultProviders(). Accounts map to them by type
	// (Providers.ForAccountType).
	Providers Providers
	// Logger: default no-op.
	Logger *zap.Logger
	// Margin: default DefaultMargin.
	Margin time.Duration
	// Interval: default DefaultInterval.
	Interval time.Duration
	// LockTTL: default DefaultLockTTL. Must exceed Timeout.
	LockTTL time.Duration
	// Timeout bounds one token request: default DefaultTimeout.
	Timeout time.Duration
	// RetryMin, RetryMax: defaults DefaultRetryMin, DefaultRetryMax.
	RetryMin, RetryMax time.Duration
	// Now is the clock: default time.Now.
	Now func() time.Time
}

// Refresher keeps OAuth access tokens fresh. Run scans every account each Interval and refreshes
// those expiring within Margin, and watches the store to refresh at once an account a worker
// reported unauthorized (401). Refresh does it on an admin's request.
//
// Each refresh runs once: one flight per account in this process, under the store lease
// "refresh:<account id>" across replicas, and it re-reads the account under the lease, so a
// refresh another replica just finished is not repeated. The new credentials are written with
// SwapAccountCredentials on the generation read: a writer that lost the race never overwrites a
// rotated refresh token. It is safe for concurrent use.
type Refresher struct {
	st        store.Store
	locks     store.LockStore
	sealer    *secret.Sealer
	providers Providers
	log       *zap.Logger
	margin    time.Duration
	interval  time.Duration
	lockTTL   time.Duration
	timeout   time.Duration
	retryMin  time.Duration
	retryMax  time.Duration
	now       func() time.Time
	owner     string

	mu       sync.Mutex
	inflight map[string]*flight
	// backoff after failures, per account.
	backoff map[string]retryState
	// handled: the changed_at of the last "unauthorized" status each account was refreshed for.
	handled map[string]time.Time
	// dead: the credential generation whose refresh token the provider refused, per account.
	dead map[string]int64
}

type flight struct {
	done chan struct{}
	acc  *store.Account
	err  error
}

type retryState struct {
	next     time.Time
	failures int
}

// NewRefresher returns a Refresher.
func NewRefresher(o RefresherOptions) (*Refresher, error) {
	if o.Store == nil || o.Locks == nil || o.Sealer == nil {
		return nil, errors.New("oauth: refresher needs a store, a lock store and a sealer")
	}
	r := &Refresher{
		st: o.Store, locks: o.Locks, sealer: o.Sealer, providers: o.Providers, log: o.Logger,
		margin: o.Margin, interval: o.Interval, lockTTL: o.LockTTL, timeout: o.Timeout,
		retryMin: o.RetryMin, retryMax: o.RetryMax, now: o.Now,
		inflight: map[string]*flight{}, backoff: map[string]retryState{},
		handled: map[string]time.Time{}, dead: map[string]int64{},
	}
	if r.providers == nil {
		r.providers = DefaultProviders()
	}
	if r.log == nil {
		r.log = zap.NewNop()
	}
	if r.margin <= 0 {
		r.margin = DefaultMargin
	}
	if r.interval <= 0 {
		r.interval = DefaultInterval
	}
	if r.lockTTL <= 0 {
		r.lockTTL = DefaultLockTTL
	}
	if r.timeout <= 0 {
		r.timeout = DefaultTimeout
	}
	if r.timeout >= r.lockTTL {
		return nil, fmt.Errorf("oauth: refresh timeout %s must be shorter than the lock TTL %s", r.timeout, r.lockTTL)
	}
	if r.retryMin <= 0 {
		r.retryMin = DefaultRetryMin
	}
	if r.retryMax < r.retryMin {
		r.retryMax = max(DefaultRetryMax, r.retryMin)
	}
	if r.now == nil {
		r.now = time.Now
	}
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		return nil, fmt.Errorf("oauth: read random: %w", err)
	}
	r.owner = "refresher-" + hex.EncodeToString(b)
	return r, nil
}

// Run scans and watches until ctx ends; it returns ctx's error.
func (r *Refresher) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Add(1)
	go func() {
		defer wg.Done()
		r.watch(ctx, &wg)
	}()
	t := time.NewTicker(r.interval)
	defer t.Stop()
	for {
		if err := r.Scan(ctx); err != nil && ctx.Err() == nil {
			r.log.Warn("token refresh scan failed", zap.Error(err))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// watch refreshes accounts that become unauthorized, as soon as the store says so.
func (r *Refresher) watch(ctx context.Context, wg *sync.WaitGroup) {
	for ctx.Err() == nil {
		ch, err := r.st.Watch(ctx)
		if err != nil {
			r.log.Warn("watch accounts for token refresh", zap.Error(err))
		} else {
			for c := range ch {
				if c.Kind != store.KindAccount {
					continue
				}
				wg.Add(1)
				go func() {
					defer wg.Done()
					r.onAccountChange(ctx, c.ID)
				}()
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

// onAccountChange starts a refresh when the account was just marked unauthorized by someone other
// than the refresher (a worker's 401).
func (r *Refresher) onAccountChange(ctx context.Context, id string) {
	a, err := r.st.GetAccount(ctx, id)
	if err != nil {
		return
	}
	if !r.wantsStaleRefresh(a) {
		return
	}
	r.refreshStale(ctx, a)
}

// wantsStaleRefresh reports whether a is an unauthorized OAuth account not yet handled.
func (r *Refresher) wantsStaleRefresh(a *store.Account) bool {
	st := a.Account.GetStatus()
	if st.GetState() != stateUnauthorized || strings.HasPrefix(st.GetReason(), RefreshFailedReason) {
		return false
	}
	if _, ok := r.providers.ForAccountType(a.Account.GetType()); !ok || a.Account.GetOauth() == nil {
		return false
	}
	at := st.GetChangedAt().AsTime()
	r.mu.Lock()
	defer r.mu.Unlock()
	if deadGen, dead := r.dead[a.Account.GetId()]; dead && deadGen == a.Generation {
		// Its refresh token was refused already: only a new authorization helps.
		return false
	}
	return !r.handled[a.Account.GetId()].Equal(at)
}

func (r *Refresher) refreshStale(ctx context.Context, a *store.Account) {
	id := a.Account.GetId()
	r.mu.Lock()
	r.handled[id] = a.Account.GetStatus().GetChangedAt().AsTime()
	r.mu.Unlock()
	if _, err := r.refresh(ctx, id, a.Generation, true, true); err != nil && ctx.Err() == nil {
		r.log.Warn("refresh after unauthorized failed", zap.String("account_id", id), zap.Error(err))
	}
}

// Scan refreshes, once, every account whose access token expires within the margin, and every
// account marked unauthorized the watch has not handled yet. Run calls it every interval.
func (r *Refresher) Scan(ctx context.Context) error {
	all, err := r.st.ListAccounts(ctx)
	if err != nil {
		return fmt.Errorf("list accounts: %w", err)
	}
	for _, a := range all {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if r.wantsStaleRefresh(a) {
			r.refreshStale(ctx, a)
			continue
		}
		if !r.due(a) {
			continue
		}
		if _, err := r.refresh(ctx, a.Account.GetId(), a.Generation, false, false); err != nil && ctx.Err() == nil {
			r.log.Warn("scheduled token refresh failed", zap.String("account_id", a.Account.GetId()), zap.Error(err))
		}
	}
	return nil
}

// due reports whether a's access token should be refreshed now: an OAuth account of a refreshable
// type, with a refresh token, expiring within the margin, not blocked or disabled, not waiting for
// a human after its refresh token was refused, and not backing off after a failure.
func (r *Refresher) due(a *store.Account) bool {
	if _, ok := r.providers.ForAccountType(a.Account.GetType()); !ok || a.Account.GetOauth() == nil {
		return false
	}
	switch st := a.Account.GetStatus(); st.GetState() {
	case stateBlocked, stateDisabled:
		return false
	case stateUnauthorized:
		if strings.HasPrefix(st.GetReason(), RefreshFailedReason) {
			return false
		}
	}
	id := a.Account.GetId()
	now := r.now()
	r.mu.Lock()
	b, backingOff := r.backoff[id]
	deadGen, dead := r.dead[id]
	r.mu.Unlock()
	if (backingOff && now.Before(b.next)) || (dead && deadGen == a.Generation) {
		return false
	}
	o, err := r.openOAuth(a)
	if err != nil || o.GetRefreshToken() == "" || o.GetExpiresAt() == nil {
		return false
	}
	return o.GetExpiresAt().AsTime().Sub(now) <= r.margin
}

// Refresh refreshes account id now, unless its credentials change meanwhile (then the newer ones
// stand); it waits for a refresh of the account already running here or in another replica. It
// returns the account as stored afterwards.
func (r *Refresher) Refresh(ctx context.Context, id string) (*store.Account, error) {
	a, err := r.st.GetAccount(ctx, id)
	if err != nil {
		return nil, err
	}
	if _, ok := r.providers.ForAccountType(a.Account.GetType()); !ok || a.Account.GetOauth() == nil {
		return nil, fmt.Errorf("%w: %s accounts are not OAuth accounts crs refreshes", ErrNotRefreshable, a.Account.GetType())
	}
	return r.refresh(ctx, id, a.Generation, true, true)
}

// refresh runs one refresh of account id in a single flight. stale: refresh if the credentials
// are still generation gen (else only if they expire within the margin). wait: wait for another
// replica's lease instead of giving up.
func (r *Refresher) refresh(ctx context.Context, id string, gen int64, stale, wait bool) (*store.Account, error) {
	for {
		r.mu.Lock()
		if f := r.inflight[id]; f != nil {
			r.mu.Unlock()
			select {
			case <-f.done:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
			// A scheduled refresh is satisfied by any; a stale one only by one that replaced the
			// credentials it saw (not by a scan that skipped or found nothing to do).
			if !stale || f.err != nil || (f.acc != nil && f.acc.Generation != gen) {
				return f.acc, f.err
			}
			continue
		}
		f := &flight{done: make(chan struct{})}
		r.inflight[id] = f
		r.mu.Unlock()

		f.acc, f.err = r.refreshLeased(ctx, id, gen, stale, wait)

		r.mu.Lock()
		delete(r.inflight, id)
		r.mu.Unlock()
		close(f.done)
		return f.acc, f.err
	}
}

// refreshLeased takes the lease of account id and refreshes it if it still needs it.
func (r *Refresher) refreshLeased(ctx context.Context, id string, gen int64, stale, wait bool) (*store.Account, error) {
	lease := "refresh:" + id
	got, err := r.locks.TryLock(ctx, lease, r.owner, r.lockTTL)
	if err != nil {
		return nil, fmt.Errorf("take refresh lease: %w", err)
	}
	if !got {
		if !wait {
			// Another replica is refreshing it; the next scan sees the result.
			return nil, nil
		}
		deadline := time.NewTimer(r.lockTTL + 5*time.Second)
		defer deadline.Stop()
		tick := time.NewTicker(lockPoll)
		defer tick.Stop()
		for !got {
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-deadline.C:
				return nil, ErrBusy
			case <-tick.C:
			}
			if got, err = r.locks.TryLock(ctx, lease, r.owner, r.lockTTL); err != nil {
				return nil, fmt.Errorf("take refresh lease: %w", err)
			}
		}
	}
	defer func() {
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := r.locks.Unlock(uctx, lease, r.owner); err != nil {
			r.log.Warn("release refresh lease", zap.String("account_id", id), zap.Error(err))
		}
	}()

	// Re-read under the lease: another replica may have refreshed it a moment ago.
	a, err := r.st.GetAccount(ctx, id)
	if err != nil {
		return nil, err
	}
	full, err := r.open(a)
	if err != nil {
		return nil, err
	}
	o := full.GetOauth()
	p, ok := r.providers.ForAccountType(full.GetType())
	if o == nil || !ok {
		return a, fmt.Errorf("%w: %s account without oauth credentials", ErrNotRefreshable, full.GetType())
	}
	now := r.now()
	expiring := o.GetExpiresAt() != nil && o.GetExpiresAt().AsTime().Sub(now) <= r.margin
	if !(stale && a.Generation == gen) && !(expiring && r.due(a)) {
		return a, nil
	}
	if o.GetRefreshToken() == "" {
		return a, fmt.Errorf("%w: no refresh token (setup-token accounts are re-authorized instead)", ErrNotRefreshable)
	}

	hc, err := proxyhttp.NewClient(full.GetProxy(), r.timeout)
	if err != nil {
		return a, r.failed(ctx, a, o, err)
	}
	defer hc.CloseIdleConnections()
	tok, err := refreshToken(ctx, hc, p, full.GetProxy(), o.GetRefreshToken(), now)
	if err != nil {
		return a, r.failed(ctx, a, o, err)
	}
	return r.save(ctx, a, full, o.GetRefreshToken(), tok)
}

// save writes the refreshed credentials with compare-and-swap. On a conflict it re-reads: if the
// stored refresh token is no longer the one just used, someone stored newer credentials and they
// stand; otherwise (an edit of the proxy or other fields) the new tokens are applied to the newer
// record and swapped again.
func (r *Refresher) save(ctx context.Context, a *store.Account, full *crsv1.Account, usedRT string, tok *Token) (*store.Account, error) {
	id := a.Account.GetId()
	gen := a.Generation
	for attempt := 0; ; attempt++ {
		next := proto.Clone(full).(*crsv1.Account)
		o := next.GetOauth()
		o.AccessToken = tok.AccessToken
		if tok.RefreshToken != "" {
			o.RefreshToken = tok.RefreshToken
		}
		o.ExpiresAt = nil
		if !tok.ExpiresAt.IsZero() {
			o.ExpiresAt = timestamppb.New(tok.ExpiresAt)
		}
		if len(tok.Scopes) > 0 {
			o.Scopes = tok.Scopes
		}
		if o.ProjectId == "" && next.GetType() == "openai" {
			o.ProjectId = tok.AccountID
		}
		o.Generation = 0
		sealed, err := r.sealer.SealCredentials(next)
		if err != nil {
			return nil, err
		}
		newGen, err := r.st.SwapAccountCredentials(ctx, id, gen, sealed)
		if err == nil {
			r.log.Info("access token refreshed", zap.String("account_id", id), zap.Int64("generation", newGen),
				zap.Time("expires_at", tok.ExpiresAt), zap.Bool("refresh_token_rotated", tok.RefreshToken != "" && tok.RefreshToken != usedRT))
			r.mu.Lock()
			delete(r.backoff, id)
			delete(r.dead, id)
			r.mu.Unlock()
			return r.afterSuccess(ctx, id, newGen, o)
		}
		if !errors.Is(err, store.ErrConflict) || attempt == 2 {
			// The provider may have rotated the refresh token already: this is the one loss the
			// design cannot undo, so say it loudly.
			r.log.Error("refreshed credentials could not be stored; the account may need re-authorization",
				zap.String("account_id", id), zap.Error(err))
			return nil, fmt.Errorf("store refreshed credentials of account %s: %w", id, err)
		}
		cur, err := r.st.GetAccount(ctx, id)
		if err != nil {
			return nil, err
		}
		curFull, err := r.open(cur)
		if err != nil {
			return nil, err
		}
		if curFull.GetOauth().GetRefreshToken() != usedRT {
			r.log.Info("credentials changed during refresh; the newer stored ones stand",
				zap.String("account_id", id), zap.Int64("generation", cur.Generation))
			return cur, nil
		}
		full, gen = curFull, cur.Generation
	}
}

// afterSuccess mirrors the new expiry into the account's public part and ends a state the
// refresh cures (unauthorized, or error from a failed refresh).
func (r *Refresher) afterSuccess(ctx context.Context, id string, gen int64, o *crsv1.OAuthCredential) (*store.Account, error) {
	cur, err := r.st.GetAccount(ctx, id)
	if err != nil {
		return nil, err
	}
	if cur.Generation == gen {
		if po := cur.Account.GetOauth(); po != nil && !proto.Equal(po.GetExpiresAt(), o.GetExpiresAt()) {
			pub := proto.Clone(cur.Account).(*crsv1.Account)
			pub.GetOauth().ExpiresAt = o.GetExpiresAt()
			pub.GetOauth().Scopes = o.GetScopes()
			pub.GetOauth().ProjectId = o.GetProjectId()
			if err := r.st.UpdateAccount(ctx, &store.Account{Account: pub}); err != nil {
				r.log.Warn("update account expiry", zap.String("account_id", id), zap.Error(err))
			}
		}
	}
	st := cur.Account.GetStatus()
	cured := st.GetState() == stateUnauthorized ||
		(st.GetState() == stateError && strings.HasPrefix(st.GetReason(), RefreshFailedReason))
	if cured {
		next := &crsv1.AccountStatus{
			State: stateActive, Reason: "access token refreshed",
			FamilyLimitedUntil: st.GetFamilyLimitedUntil(), ChangedAt: timestamppb.New(r.now()),
		}
		if err := r.st.SetAccountStatus(ctx, id, next); err != nil {
			return nil, fmt.Errorf("set account %s active: %w", id, err)
		}
	}
	return r.st.GetAccount(ctx, id)
}

// failed records a failed refresh: a refused refresh token makes the account unauthorized (a
// human must re-authorize it) and is not retried; other failures are retried with backoff, and
// make the account "error" when its access token no longer works or the proxy is at fault. It
// returns err wrapped.
func (r *Refresher) failed(ctx context.Context, a *store.Account, o *crsv1.OAuthCredential, err error) error {
	id := a.Account.GetId()
	now := r.now()
	var ue *UpstreamError
	permanent := errors.As(err, &ue) && ue.Permanent()
	proxyFault := errors.Is(err, proxyhttp.ErrProxy) || errors.Is(err, proxyhttp.ErrBadProxy)

	r.mu.Lock()
	b := r.backoff[id]
	b.failures++
	b.next = now.Add(min(r.retryMin<<min(b.failures-1, 16), r.retryMax))
	r.backoff[id] = b
	if permanent {
		r.dead[id] = a.Generation
	}
	r.mu.Unlock()

	reason := RefreshFailedReason + ": " + err.Error()
	r.log.Warn("token refresh failed", zap.String("account_id", id), zap.Bool("permanent", permanent), zap.Error(err))

	cur := a.Account.GetStatus()
	if a.Account.GetDisableAutoProtection() || cur.GetState() == stateBlocked || cur.GetState() == stateDisabled {
		return fmt.Errorf("refresh account %s: %w", id, err)
	}
	var state string
	switch {
	case permanent:
		state = stateUnauthorized
	case proxyFault || o.GetExpiresAt() == nil || !now.Before(o.GetExpiresAt().AsTime()):
		state = stateError
	default:
		// The access token still works: keep serving, retry after the backoff.
		return fmt.Errorf("refresh account %s: %w", id, err)
	}
	next := &crsv1.AccountStatus{
		State: state, Reason: trimReason(reason),
		FamilyLimitedUntil: cur.GetFamilyLimitedUntil(), ChangedAt: timestamppb.New(now),
	}
	if serr := r.st.SetAccountStatus(context.WithoutCancel(ctx), id, next); serr != nil {
		r.log.Warn("set account status after failed refresh", zap.String("account_id", id), zap.Error(serr))
	}
	return fmt.Errorf("refresh account %s: %w", id, err)
}

// trimReason bounds a status reason.
func trimReason(s string) string {
	const maxReason = 500
	if len(s) <= maxReason {
		return s
	}
	return s[:maxReason] + "…"
}

// open returns a's public part with its credentials and proxy opened.
func (r *Refresher) open(a *store.Account) (*crsv1.Account, error) {
	full := proto.Clone(a.Account).(*crsv1.Account)
	if len(a.SealedCredentials) == 0 {
		return full, nil
	}
	if err := r.sealer.OpenCredentials(a.SealedCredentials, full); err != nil {
		return nil, fmt.Errorf("open credentials of account %s: %w", a.Account.GetId(), err)
	}
	return full, nil
}

func (r *Refresher) openOAuth(a *store.Account) (*crsv1.OAuthCredential, error) {
	full, err := r.open(a)
	if err != nil {
		return nil, err
	}
	return full.GetOauth(), nil
}
