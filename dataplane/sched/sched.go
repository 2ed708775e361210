// Package sched decides which upstream accounts may serve a request and in which order
// (reference §4.1, §4.2): the key's dedicated account or group, then the sticky session's account,
// then the shared pool sorted by priority and least recent use. The result is a Selection the relay
// walks for failover; after the request the worker tells the Selection which account served, and it
// binds the session to it.
//
// It reads the pushed snapshot and keeps only worker-local caches (last use per account, recent
// session bindings); the shared binding lives in the control plane behind Binder. It depends on
// snapshot, gen and zap; not on HTTP or the relay.
package sched

import (
	"cmp"
	"context"
	"slices"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/crsrelay/crs/dataplane/snapshot"
	crsv1 "github.com/crsrelay/crs/gen/crs/v1"
)

// Binder is the control plane's session binding (FleetService.Bind).
type Binder interface {
	Bind(ctx context.Context, req *crsv1.BindRequest) (*crsv1.BindResponse, error)
}

// PlatformClaude is the BindRequest.platform of Claude sessions.
const PlatformClaude = "claude"

// Defaults of Options.
const (
	DefaultBindTimeout      = 500 * time.Millisecond
	DefaultLocalStickyTTL   = 5 * time.Minute
	DefaultMaxLocalSessions = 100_000
	defaultStickyTTL        = time.Hour
	defaultPriority         = 50
	// stickySlack: a served request leaves the local binding as it is while its expiry is at most
	// 1/stickySlack of the TTL short of where the request would move it (4.7s of 5 minutes).
	stickySlack = 64
)

// Options configure a Scheduler.
type Options struct {
	// Logger receives one debug line per decision (candidates and why others were skipped).
	Logger *zap.Logger
	// Binder is the control plane's session binding; nil keeps bindings local to this worker.
	Binder Binder
	// BindTimeout bounds one Bind call; on timeout or error the scheduler proceeds with its own
	// pick. Default 500ms.
	BindTimeout time.Duration
	// LocalStickyTTL is how long this worker trusts a binding it saw without asking the control
	// plane again (capped by the settings' sticky TTL), counted from the binding's last use give
	// or take 1/64 of it. Default 5m.
	LocalStickyTTL time.Duration
	// MaxLocalSessions bounds the local binding cache. Default 100000.
	MaxLocalSessions int
	// Now is the clock; default time.Now.
	Now func() time.Time
}

// Scheduler builds Selections. It is safe for concurrent use.
type Scheduler struct {
	log         *zap.Logger
	binder      Binder
	bindTimeout time.Duration
	localTTL    time.Duration
	now         func() time.Time

	sticky *stickyCache

	mu       sync.Mutex
	lastUsed map[string]int64 // account id -> unix nanos of the last pick on this worker

	binds sync.WaitGroup // Bind calls made after requests
}

// New returns a Scheduler.
func New(opts Options) *Scheduler {
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	if opts.BindTimeout <= 0 {
		opts.BindTimeout = DefaultBindTimeout
	}
	if opts.LocalStickyTTL <= 0 {
		opts.LocalStickyTTL = DefaultLocalStickyTTL
	}
	if opts.MaxLocalSessions <= 0 {
		opts.MaxLocalSessions = DefaultMaxLocalSessions
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Scheduler{
		log:         opts.Logger,
		binder:      opts.Binder,
		bindTimeout: opts.BindTimeout,
		localTTL:    opts.LocalStickyTTL,
		now:         opts.Now,
		sticky:      newStickyCache(opts.MaxLocalSessions),
		lastUsed:    make(map[string]int64),
	}
}

// Wait waits for the Bind calls started by Selection.Served to finish.
func (s *Scheduler) Wait() { s.binds.Wait() }

// Request is what the scheduler needs to know of one Claude Messages request.
type Request struct {
	State *snapshot.State
	Key   *crsv1.ApiKey
	// Model as requested ("" = any).
	Model string
	// SessionHash of reference §4.2, "" for no stickiness.
	SessionHash string
	// RequestID, for the debug line.
	RequestID string
	// Now is when the request is judged: the time the worker read it, so that scheduling needs no
	// clock read of its own. Zero: the scheduler's clock (Options.Now).
	Now time.Time
}

// Selection is the ordered candidates of one request; it implements relay.Candidates. It is
// created per request: Next is called from the request's goroutine only, Served once after the
// request, possibly from another goroutine.
type Selection struct {
	s           *Scheduler
	accounts    []*crsv1.Account
	next        int
	sessionHash string
	boundID     string // the account the session is bound to as far as known; "" none or unknown
	// boundExpires is when the local cache's entry for boundID expires (unix nanos), as read or
	// written while the Selection was made; 0 when the cache holds none.
	boundExpires int64
	stickyTTL    time.Duration
	// now is when the Selection was made; the first candidate's use is recorded at it.
	now time.Time

	// reasons say how the list was built, or why it is empty; joined by Reason, for logs only.
	reasons []reason
	// Room for a typical list and its reasons, so that Claude allocates the Selection only.
	accountBuf [8]*crsv1.Account
	reasonBuf  [2]reason
}

// Reason says how the list was built, or why it is empty (for logs).
func (sel *Selection) Reason() string {
	var b strings.Builder
	for i, r := range sel.reasons {
		if i > 0 {
			b.WriteString("; ")
		}
		r.write(&b)
	}
	return b.String()
}

// reason is one step of how a Selection was built: text, then the account or group id, then
// more text and why the account was unavailable. It is put into words only when a log line wants
// it, so that a request builds no strings for it.
type reason struct {
	text, id, more string
	why            unavailability
}

func (r reason) write(b *strings.Builder) {
	b.WriteString(r.text)
	b.WriteString(r.id)
	b.WriteString(r.more)
	if r.why.code != available {
		b.WriteString(r.why.String())
	}
}

func (sel *Selection) addReason(r reason) { sel.reasons = append(sel.reasons, r) }

// Next returns the next account to try, nil when there is none left. Each account is returned once.
func (sel *Selection) Next() *crsv1.Account {
	if sel.next >= len(sel.accounts) {
		return nil
	}
	a := sel.accounts[sel.next]
	at := sel.now
	if sel.next > 0 { // a failover, later in the request
		at = sel.s.now()
	}
	sel.next++
	sel.s.touch(a.GetId(), at)
	return a
}

// Len is the number of candidates.
func (sel *Selection) Len() int { return len(sel.accounts) }

// SessionHash is the request's session key ("" for none).
func (sel *Selection) SessionHash() string { return sel.sessionHash }

// Served records that accountID answered the request: the session is bound to it (in the local
// cache, and with the control plane when it was bound elsewhere or not at all, replacing an older
// binding). The control-plane call runs in the background, without sel: once Served returns, sel
// may be reused.
func (sel *Selection) Served(accountID string) {
	if sel.sessionHash == "" || accountID == "" {
		return
	}
	s := sel.s
	ttl := min(s.localTTL, sel.stickyTTL)
	if accountID == sel.boundID && sel.boundExpires >= sel.now.Add(ttl-ttl/stickySlack).UnixNano() {
		// The local entry names this account and was written at most ttl/stickySlack before the
		// request started: writing it again would move its expiry by no more than that. Skipping
		// the write spares a lock on every request of a busy session.
		return
	}
	s.sticky.put(sel.sessionHash, accountID, s.now(), ttl)
	if s.binder == nil || accountID == sel.boundID {
		return
	}
	// The goroutine below outlives the request, and so sel, which the caller may reuse: it keeps
	// only values.
	req := &crsv1.BindRequest{
		SessionHash: sel.sessionHash,
		Platform:    PlatformClaude,
		AccountId:   accountID,
		Replace:     sel.boundID != "",
	}
	s.binds.Add(1)
	go func() {
		defer s.binds.Done()
		ctx, cancel := context.WithTimeout(context.Background(), s.bindTimeout)
		defer cancel()
		resp, err := s.binder.Bind(ctx, req)
		if err != nil {
			s.log.Debug("bind after request failed", zap.String("account_id", accountID), zap.Error(err))
			return
		}
		if resp.GetAccountId() != "" && resp.GetAccountId() != accountID {
			// Another worker bound the session meanwhile; follow the control plane.
			s.sticky.put(req.SessionHash, resp.GetAccountId(), s.now(), ttl)
		}
	}()
}

func (s *Scheduler) touch(id string, at time.Time) {
	s.mu.Lock()
	s.lastUsed[id] = at.UnixNano()
	s.mu.Unlock()
}

// decision collects why accounts were left out, only when debug logging is on.
type decision struct {
	on      bool
	skipped []string
}

func (d *decision) skip(a *crsv1.Account, why unavailability) {
	if d.on {
		d.skipped = append(d.skipped, a.GetId()+": "+why.String())
	}
}

// Claude returns the candidates for a Claude Messages request, in failover order:
//  1. the key's dedicated claude_account_id, or the available members of its "group:<id>";
//     without settings.dedicated_account_fallback nothing else follows;
//  2. the key's dedicated claude_console_account_id, when available;
//  3. the account the session is bound to (local cache, else FleetService.Bind proposing our pick);
//  4. the shared claude-official and claude-console accounts that are schedulable, active, not
//     expired, support the model and are not limited for its family, sorted by priority, least
//     recent use on this worker, and creation time.
//
// ctx bounds the Bind call (besides BindTimeout).
func (s *Scheduler) Claude(ctx context.Context, r Request) *Selection {
	sel := new(Selection)
	s.ClaudeInto(ctx, r, sel)
	return sel
}

// ClaudeInto is Claude writing into sel, a zero Selection the caller allocated (as part of a larger
// per-request struct, say). sel must not move while the request runs: it points into itself.
func (s *Scheduler) ClaudeInto(ctx context.Context, r Request, sel *Selection) {
	now := r.Now
	if now.IsZero() {
		now = s.now()
	}
	st := r.State
	settings := st.Settings()
	key := r.Key
	d := decision{on: s.log.Core().Enabled(zapcore.DebugLevel)}
	m := modelOf(r.Model)

	*sel = Selection{s: s, sessionHash: r.SessionHash, stickyTTL: defaultStickyTTL, now: now}
	sel.reasons = sel.reasonBuf[:0]
	if ttl := settings.GetStickySessionTtl(); ttl != nil && ttl.AsDuration() > 0 {
		sel.stickyTTL = ttl.AsDuration()
	}

	var (
		list        = sel.accountBuf[:0]
		pin         int  // sticky account goes to this index: after single dedicated accounts
		stickyLimit = -1 // for a group key: only its members (list[:stickyLimit]) may be sticky
		poolAllowed = true
	)
	if id := key.GetClaudeAccountId(); id != "" {
		poolAllowed = settings.GetDedicatedAccountFallback()
		if gid, ok := strings.CutPrefix(id, "group:"); ok {
			g := st.Group(gid)
			if g == nil {
				sel.addReason(reason{text: "group ", id: gid, more: " not found"})
			}
			for _, mid := range g.GetAccountIds() {
				a := st.Account(mid)
				if a == nil {
					continue
				}
				if !isClaudeType(a.GetType()) {
					d.skip(a, unavailability{code: memberOfWrongType, detail: a.GetType()})
					continue
				}
				if why := s.unavailable(a, m, now); why.code != available {
					d.skip(a, why)
					continue
				}
				list = append(list, a)
			}
			s.sortPool(list)
			stickyLimit = len(list)
			sel.addReason(reason{text: "group ", id: gid})
		} else {
			a := st.Account(id)
			switch why := s.unavailableDedicated(a, m, now); why.code {
			case available:
				list = append(list, a)
				pin = 1
				sel.addReason(reason{text: "dedicated ", id: id})
			default:
				sel.addReason(reason{text: "dedicated ", id: id, more: " unavailable: ", why: why})
			}
		}
		if !poolAllowed {
			sel.addReason(reason{text: "no pool fallback"})
		}
	}
	if id := key.GetClaudeConsoleAccountId(); id != "" && poolAllowed {
		a := st.Account(id)
		switch why := s.unavailableDedicated(a, m, now); why.code {
		case available:
			if a.GetType() == snapshot.TypeClaudeConsole && !slices.Contains(list, a) {
				list = append(list, a)
				pin = len(list)
				sel.addReason(reason{text: "dedicated console ", id: id})
			}
		default:
			sel.addReason(reason{text: "dedicated console ", id: id, more: " unavailable, using the pool: ", why: why})
		}
	}
	if poolAllowed {
		list = s.appendPool(list, st, m, now, &d)
	}

	// Sticky session: put the bound account at the pin position when it is still a candidate.
	if r.SessionHash != "" && len(list) > 0 {
		bound, expires := s.boundAccount(ctx, r, list[0], now, sel.stickyTTL)
		sel.boundID, sel.boundExpires = bound, expires
		if bound != "" {
			j := slices.IndexFunc(list, func(a *crsv1.Account) bool { return a.GetId() == bound })
			if stickyLimit >= 0 && j >= stickyLimit {
				j = -1 // bound outside the key's group (a fallback): rebind to a member
			}
			if j >= 0 {
				if j > pin {
					a := list[j]
					copy(list[pin+1:j+1], list[pin:j])
					list[pin] = a
				}
				sel.addReason(reason{text: "sticky ", id: bound})
			} else {
				sel.addReason(reason{text: "sticky ", id: bound, more: " not a candidate, rebinding"})
			}
		}
	}
	sel.accounts = list
	if len(list) == 0 {
		sel.addReason(reason{text: "no available account"})
	}

	if ce := s.log.Check(zapcore.DebugLevel, "claude candidates"); ce != nil {
		ids := make([]string, len(list))
		for i, a := range list {
			ids[i] = a.GetId()
		}
		ce.Write(
			zap.String("request_id", r.RequestID),
			zap.String("key_id", key.GetId()),
			zap.String("model", r.Model),
			zap.String("session", r.SessionHash),
			zap.Strings("candidates", ids),
			zap.String("reason", sel.Reason()),
			zap.Strings("skipped", d.skipped),
		)
	}
}

// boundAccount returns the account the session is bound to: from the local cache, else from the
// control plane (binding it to proposal when unbound). Local entries are not renewed on use, so
// each worker asks the control plane again after LocalStickyTTL and follows rebinds made by others.
func (s *Scheduler) boundAccount(ctx context.Context, r Request, proposal *crsv1.Account, now time.Time, stickyTTL time.Duration) (id string, expires int64) {
	if id, expires, ok := s.sticky.get(r.SessionHash, now); ok {
		return id, expires
	}
	if s.binder == nil {
		return "", 0
	}
	ctx, cancel := context.WithTimeout(ctx, s.bindTimeout)
	defer cancel()
	resp, err := s.binder.Bind(ctx, &crsv1.BindRequest{
		SessionHash: r.SessionHash,
		Platform:    PlatformClaude,
		AccountId:   proposal.GetId(),
	})
	if err != nil {
		if ce := s.log.Check(zapcore.DebugLevel, "bind failed, using own pick"); ce != nil {
			ce.Write(zap.String("request_id", r.RequestID), zap.Error(err))
		}
		return "", 0
	}
	if resp.GetAccountId() != "" {
		expires = s.sticky.put(r.SessionHash, resp.GetAccountId(), now, min(s.localTTL, stickyTTL))
	}
	return resp.GetAccountId(), expires
}

// appendPool appends to list the shared Claude accounts that can serve m and are not in list
// already, sorted among themselves.
func (s *Scheduler) appendPool(list []*crsv1.Account, st *snapshot.State, m model, now time.Time, d *decision) []*crsv1.Account {
	skip := list
	out := list
	for _, typ := range [...]string{snapshot.TypeClaudeOfficial, snapshot.TypeClaudeConsole} {
		for _, a := range st.AccountsOfType(typ) {
			if a.GetAccountType() == "dedicated" {
				continue
			}
			if slices.Contains(skip, a) {
				continue
			}
			if why := s.unavailable(a, m, now); why.code != available {
				d.skip(a, why)
				continue
			}
			out = append(out, a)
		}
	}
	s.sortPool(out[len(skip):])
	return out
}

// poolEntry is an account with its sort keys, read once per sort.
type poolEntry struct {
	a                 *crsv1.Account
	priority          int32
	used, createdAtNs int64
}

// sortPool orders accounts by priority (lower first), then least recently used on this worker,
// then creation time, then id.
func (s *Scheduler) sortPool(as []*crsv1.Account) {
	if len(as) < 2 {
		return
	}
	var buf [16]poolEntry
	es := buf[:0]
	if len(as) > len(buf) {
		es = make([]poolEntry, 0, len(as))
	}
	s.mu.Lock()
	for _, a := range as {
		es = append(es, poolEntry{a: a, priority: priority(a), used: s.lastUsed[a.GetId()], createdAtNs: createdAt(a)})
	}
	s.mu.Unlock()
	slices.SortStableFunc(es, func(a, b poolEntry) int {
		if c := cmp.Compare(a.priority, b.priority); c != 0 {
			return c
		}
		if c := cmp.Compare(a.used, b.used); c != 0 {
			return c
		}
		if c := cmp.Compare(a.createdAtNs, b.createdAtNs); c != 0 {
			return c
		}
		return strings.Compare(a.a.GetId(), b.a.GetId())
	})
	for i, e := range es {
		as[i] = e.a
	}
}

func priority(a *crsv1.Account) int32 {
	if p := a.GetPriority(); p > 0 {
		return p
	}
	return defaultPriority
}

func createdAt(a *crsv1.Account) int64 {
	if t := a.GetCreatedAt(); t != nil {
		return t.AsTime().UnixNano()
	}
	return 0
}

func isClaudeType(typ string) bool {
	return typ == snapshot.TypeClaudeOfficial || typ == snapshot.TypeClaudeConsole
}

// unavailability is why an account cannot serve a request; the zero value means it can. It is
// put into words (String) only for log lines.
type unavailability struct {
	code   unavailableCode
	detail string // the type, state or family the code is about
}

type unavailableCode uint8

const (
	available unavailableCode = iota
	notFound
	wrongType
	memberOfWrongType
	notSchedulable
	inactive
	subscriptionExpired
	modelNotSupported
	familyRateLimited
)

func (u unavailability) String() string {
	switch u.code {
	case notFound:
		return "not found"
	case wrongType:
		return "type " + u.detail
	case memberOfWrongType:
		return "group member of type " + u.detail
	case notSchedulable:
		return "not schedulable"
	case inactive:
		return "state " + u.detail
	case subscriptionExpired:
		return "subscription expired"
	case modelNotSupported:
		return "model not supported"
	case familyRateLimited:
		return u.detail + " rate limited"
	}
	return ""
}

// unavailableDedicated is unavailable for an account a key names, which may be missing.
func (s *Scheduler) unavailableDedicated(a *crsv1.Account, m model, now time.Time) unavailability {
	if a == nil {
		return unavailability{code: notFound}
	}
	if !isClaudeType(a.GetType()) {
		return unavailability{code: wrongType, detail: a.GetType()}
	}
	return s.unavailable(a, m, now)
}

// unavailable returns why a can not serve m now; the zero value when it can.
func (s *Scheduler) unavailable(a *crsv1.Account, m model, now time.Time) unavailability {
	if a.Schedulable != nil && !*a.Schedulable {
		return unavailability{code: notSchedulable}
	}
	if !snapshot.AccountActive(a, now) {
		return unavailability{code: inactive, detail: a.GetStatus().GetState()}
	}
	if exp := a.GetSubscriptionExpiresAt(); exp != nil && (exp.GetSeconds() != 0 || exp.GetNanos() != 0) && !exp.AsTime().After(now) {
		return unavailability{code: subscriptionExpired}
	}
	if !m.supportedBy(a) {
		return unavailability{code: modelNotSupported}
	}
	if m.family != "" {
		if until := a.GetStatus().GetFamilyLimitedUntil()[m.family]; until != nil && until.AsTime().After(now) {
			return unavailability{code: familyRateLimited, detail: m.family}
		}
	}
	return unavailability{}
}
