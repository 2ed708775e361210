package sched

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/crsrelay/crs/dataplane/snapshot"
	crsv1 "github.com/crsrelay/crs/gen/crs/v1"
)

var t0 = time.Date(2026, 5, 1, 10, 0, 0, 0, time.UTC)

// fakeBinder is a control plane binding table.
type fakeBinder struct {
	mu    sync.Mutex
	bound map[string]string
	err   error
	calls []*crsv1.BindRequest
}

func (f *fakeBinder) Bind(_ context.Context, req *crsv1.BindRequest) (*crsv1.BindResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, proto.Clone(req).(*crsv1.BindRequest))
	if f.err != nil {
		return nil, f.err
	}
	if f.bound == nil {
		f.bound = map[string]string{}
	}
	if cur, ok := f.bound[req.SessionHash]; ok && !req.Replace {
		return &crsv1.BindResponse{AccountId: cur}, nil
	}
	f.bound[req.SessionHash] = req.AccountId
	return &crsv1.BindResponse{AccountId: req.AccountId, Created: true}, nil
}

func (f *fakeBinder) callsCopy() []*crsv1.BindRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*crsv1.BindRequest(nil), f.calls...)
}

type acctOpt func(*crsv1.Account)

func account(id, typ string, opts ...acctOpt) *crsv1.Account {
	a := &crsv1.Account{Id: id, Type: typ, Priority: 50, AccountType: "shared", CreatedAt: timestamppb.New(t0.Add(-time.Hour))}
	for _, o := range opts {
		o(a)
	}
	return a
}

func prio(p int32) acctOpt { return func(a *crsv1.Account) { a.Priority = p } }
func created(d time.Duration) acctOpt {
	return func(a *crsv1.Account) { a.CreatedAt = timestamppb.New(t0.Add(d)) }
}
func status(state string, until time.Duration) acctOpt {
	return func(a *crsv1.Account) {
		a.Status = &crsv1.AccountStatus{State: state}
		if until != 0 {
			a.Status.Until = timestamppb.New(t0.Add(until))
		}
	}
}
func unschedulable(a *crsv1.Account) { a.Schedulable = proto.Bool(false) }
func dedicated(a *crsv1.Account)     { a.AccountType = "dedicated" }
func mapping(m map[string]string) acctOpt {
	return func(a *crsv1.Account) { a.ModelMapping = m }
}
func familyLimited(fam string, until time.Duration) acctOpt {
	return func(a *crsv1.Account) {
		a.Status = &crsv1.AccountStatus{State: "active", FamilyLimitedUntil: map[string]*timestamppb.Timestamp{fam: timestamppb.New(t0.Add(until))}}
	}
}
func subscription(plan string) acctOpt { return func(a *crsv1.Account) { a.Subscription = plan } }
func expires(d time.Duration) acctOpt {
	return func(a *crsv1.Account) { a.SubscriptionExpiresAt = timestamppb.New(t0.Add(d)) }
}

func state(t *testing.T, settings *crsv1.Settings, groups []*crsv1.AccountGroup, accounts ...*crsv1.Account) *snapshot.State {
	t.Helper()
	st, err := snapshot.Apply(nil, &crsv1.SyncMessage{Version: 1, Body: &crsv1.SyncMessage_Snapshot{Snapshot: &crsv1.Snapshot{
		Accounts: accounts, Groups: groups, Settings: settings,
	}}})
	require.NoError(t, err)
	return st
}

func ids(sel *Selection) []string {
	var out []string
	for a := sel.Next(); a != nil; a = sel.Next() {
		out = append(out, a.GetId())
	}
	return out
}

func newSched(b Binder) *Scheduler {
	return New(Options{Binder: b, Now: func() time.Time { return t0 }})
}

func TestClaudeCandidates(t *testing.T) {
	const off, con = snapshot.TypeClaudeOfficial, snapshot.TypeClaudeConsole
	fallback := &crsv1.Settings{DedicatedAccountFallback: true}
	group := []*crsv1.AccountGroup{{Id: "g", Platform: "claude", AccountIds: []string{"m2", "m1", "gone", "down"}}}
	tests := []struct {
		name     string
		settings *crsv1.Settings
		groups   []*crsv1.AccountGroup
		accounts []*crsv1.Account
		key      *crsv1.ApiKey
		model    string
		want     []string
	}{
		{
			name:     "pool sorted by priority then created_at then id",
			accounts: []*crsv1.Account{account("c", off, prio(50)), account("a", con, prio(10)), account("b", off, prio(50), created(-2*time.Hour)), account("d", off, prio(50))},
			model:    "claude-sonnet-4-5",
			want:     []string{"a", "b", "c", "d"},
		},
		{
			name: "filters",
			accounts: []*crsv1.Account{
				account("ok", off),
				account("unsched", off, unschedulable),
				account("limited", off, status("rate_limited", time.Hour)),
				account("limited-over", off, status("rate_limited", -time.Minute)),
				account("blocked", off, status("blocked", 0)),
				account("expired", off, expires(-time.Second)),
				account("not-expired", off, expires(time.Hour)),
				account("dedicated", off, dedicated),
				account("sonnet-limited", off, familyLimited("sonnet", time.Hour)),
				account("sonnet-limit-over", off, familyLimited("sonnet", -time.Hour)),
				account("opus-limited", off, familyLimited("opus", time.Hour)),
				account("console-other", con, mapping(map[string]string{"claude-haiku-4-5": "x"})),
				account("console-ci", con, mapping(map[string]string{"Claude-Sonnet-4-5": "x"})),
				account("gemini", "gemini"),
			},
			model: "claude-sonnet-4-5",
			want:  []string{"console-ci", "limited-over", "not-expired", "ok", "opus-limited", "sonnet-limit-over"},
		},
		{
			name:     "official accounts refuse non-Claude models",
			accounts: []*crsv1.Account{account("off", off), account("con", con)},
			model:    "deepseek-chat",
			want:     []string{"con"},
		},
		{
			name:     "opus by plan",
			accounts: []*crsv1.Account{account("free", off, subscription("free")), account("pro", off, subscription("claude_pro")), account("max", off, subscription("claude_max")), account("unknown", off)},
			model:    "claude-opus-4-1-20250805",
			want:     []string{"max", "unknown"},
		},
		{
			name:     "new opus on pro",
			accounts: []*crsv1.Account{account("free", off, subscription("free")), account("pro", off, subscription("claude_pro"))},
			model:    "claude-opus-4-5-20251101",
			want:     []string{"pro"},
		},
		{
			name:     "dedicated official without fallback",
			accounts: []*crsv1.Account{account("pool", off, prio(1)), account("mine", off, dedicated)},
			key:      &crsv1.ApiKey{ClaudeAccountId: "mine"},
			want:     []string{"mine"},
		},
		{
			name:     "dedicated official unavailable without fallback",
			accounts: []*crsv1.Account{account("pool", off), account("mine", off, status("rate_limited", time.Hour))},
			key:      &crsv1.ApiKey{ClaudeAccountId: "mine"},
			want:     nil,
		},
		{
			name:     "dedicated official with fallback",
			settings: fallback,
			accounts: []*crsv1.Account{account("pool", off), account("mine", off, dedicated)},
			key:      &crsv1.ApiKey{ClaudeAccountId: "mine"},
			want:     []string{"mine", "pool"},
		},
		{
			name:     "dedicated official unavailable with fallback",
			settings: fallback,
			accounts: []*crsv1.Account{account("pool", off), account("mine", off, unschedulable)},
			key:      &crsv1.ApiKey{ClaudeAccountId: "mine"},
			want:     []string{"pool"},
		},
		{
			name:     "group members only, sorted, available",
			groups:   group,
			accounts: []*crsv1.Account{account("pool", off, prio(1)), account("m1", off, prio(20)), account("m2", con, prio(30)), account("down", off, unschedulable)},
			key:      &crsv1.ApiKey{ClaudeAccountId: "group:g"},
			want:     []string{"m1", "m2"},
		},
		{
			name:     "missing group",
			accounts: []*crsv1.Account{account("pool", off)},
			key:      &crsv1.ApiKey{ClaudeAccountId: "group:nope"},
			want:     nil,
		},
		{
			name:     "dedicated console first, then pool",
			accounts: []*crsv1.Account{account("pool", off, prio(1)), account("cons", con, dedicated)},
			key:      &crsv1.ApiKey{ClaudeConsoleAccountId: "cons"},
			want:     []string{"cons", "pool"},
		},
		{
			name:     "dedicated console unavailable falls back to the pool",
			accounts: []*crsv1.Account{account("pool", off), account("cons", con, dedicated, status("overloaded", time.Hour))},
			key:      &crsv1.ApiKey{ClaudeConsoleAccountId: "cons"},
			want:     []string{"pool"},
		},
		{
			name:     "dedicated console ignored when the official one has no fallback",
			accounts: []*crsv1.Account{account("mine", off, dedicated), account("cons", con, dedicated)},
			key:      &crsv1.ApiKey{ClaudeAccountId: "mine", ClaudeConsoleAccountId: "cons"},
			want:     []string{"mine"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := state(t, tt.settings, tt.groups, tt.accounts...)
			key := tt.key
			if key == nil {
				key = &crsv1.ApiKey{}
			}
			sel := newSched(nil).Claude(context.Background(), Request{State: st, Key: key, Model: tt.model})
			require.Equal(t, len(tt.want), sel.Len())
			require.Equal(t, tt.want, ids(sel), "reason: %s", sel.Reason())
			require.Nil(t, sel.Next(), "exhausted")
		})
	}
}

func TestLeastRecentlyUsedRotation(t *testing.T) {
	st := state(t, nil, nil, account("a", snapshot.TypeClaudeOfficial), account("b", snapshot.TypeClaudeOfficial))
	now := t0
	s := New(Options{Now: func() time.Time { now = now.Add(time.Millisecond); return now }})
	var firsts []string
	for range 4 {
		sel := s.Claude(context.Background(), Request{State: st, Key: &crsv1.ApiKey{}})
		firsts = append(firsts, sel.Next().GetId())
	}
	require.Equal(t, []string{"a", "b", "a", "b"}, firsts)
}

func TestStickySession(t *testing.T) {
	const off = snapshot.TypeClaudeOfficial
	st := state(t, &crsv1.Settings{StickySessionTtl: durationpb.New(time.Hour)}, nil,
		account("a", off, prio(1)), account("b", off, prio(2)), account("c", off, prio(3)))
	req := func(hash string) Request {
		return Request{State: st, Key: &crsv1.ApiKey{}, SessionHash: hash, Model: "claude-sonnet-4-5"}
	}

	t.Run("unbound session binds our pick, once", func(t *testing.T) {
		fb := &fakeBinder{}
		s := newSched(fb)
		sel := s.Claude(context.Background(), req("s1"))
		require.Equal(t, []string{"a", "b", "c"}, ids(sel))
		sel.Served("a")
		s.Wait()
		calls := fb.callsCopy()
		require.Len(t, calls, 1, "served by the proposed account: no second bind")
		require.Equal(t, "a", calls[0].AccountId)
		require.Equal(t, "s1", calls[0].SessionHash)
		require.Equal(t, PlatformClaude, calls[0].Platform)
		require.False(t, calls[0].Replace)

		// Next request: local cache, no RPC.
		sel = s.Claude(context.Background(), req("s1"))
		require.Equal(t, "a", sel.Next().GetId())
		require.Len(t, fb.callsCopy(), 1)
	})

	t.Run("bound elsewhere by the control plane goes first", func(t *testing.T) {
		fb := &fakeBinder{bound: map[string]string{"s2": "c"}}
		s := newSched(fb)
		sel := s.Claude(context.Background(), req("s2"))
		require.Equal(t, []string{"c", "a", "b"}, ids(sel))
	})

	t.Run("failover rebinds with replace", func(t *testing.T) {
		fb := &fakeBinder{bound: map[string]string{"s3": "b"}}
		s := newSched(fb)
		sel := s.Claude(context.Background(), req("s3"))
		require.Equal(t, "b", sel.Next().GetId())
		require.Equal(t, "a", sel.Next().GetId())
		sel.Served("a")
		s.Wait()
		calls := fb.callsCopy()
		require.Len(t, calls, 2)
		require.Equal(t, "a", calls[1].AccountId)
		require.True(t, calls[1].Replace)
		require.Equal(t, "a", fb.bound["s3"])
		sel = s.Claude(context.Background(), req("s3"))
		require.Equal(t, "a", sel.Next().GetId(), "local cache follows the rebind")
	})

	t.Run("bound account no longer available is rebound", func(t *testing.T) {
		st2 := state(t, nil, nil, account("a", off, prio(1)), account("b", off, unschedulable))
		fb := &fakeBinder{bound: map[string]string{"s4": "b"}}
		s := newSched(fb)
		sel := s.Claude(context.Background(), Request{State: st2, Key: &crsv1.ApiKey{}, SessionHash: "s4"})
		require.Equal(t, []string{"a"}, ids(sel))
		require.Contains(t, sel.Reason(), "not a candidate")
		sel.Served("a")
		s.Wait()
		require.Equal(t, "a", fb.bound["s4"])
		require.True(t, fb.callsCopy()[1].Replace)
	})

	t.Run("bind error proceeds with own pick and binds after", func(t *testing.T) {
		fb := &fakeBinder{err: errors.New("unavailable")}
		s := newSched(fb)
		sel := s.Claude(context.Background(), req("s5"))
		require.Equal(t, "a", sel.Next().GetId())
		fb.mu.Lock()
		fb.err = nil
		fb.mu.Unlock()
		sel.Served("a")
		s.Wait()
		calls := fb.callsCopy()
		require.Len(t, calls, 2)
		require.False(t, calls[1].Replace, "no binding was known")
		require.Equal(t, "a", fb.bound["s5"])
	})

	t.Run("no session no bind", func(t *testing.T) {
		fb := &fakeBinder{}
		s := newSched(fb)
		sel := s.Claude(context.Background(), req(""))
		sel.Served(sel.Next().GetId())
		s.Wait()
		require.Empty(t, fb.callsCopy())
	})

	t.Run("sticky inside a group, after a dedicated account", func(t *testing.T) {
		st3 := state(t, &crsv1.Settings{DedicatedAccountFallback: true},
			[]*crsv1.AccountGroup{{Id: "g", AccountIds: []string{"a", "b", "c"}}},
			account("a", off, prio(1)), account("b", off, prio(2)), account("c", off, prio(3)), account("d", off, dedicated))
		fb := &fakeBinder{bound: map[string]string{"s6": "c"}}
		sel := newSched(fb).Claude(context.Background(), Request{State: st3, Key: &crsv1.ApiKey{ClaudeAccountId: "group:g"}, SessionHash: "s6"})
		require.Equal(t, []string{"c", "a", "b"}, ids(sel))

		// A group key with fallback: a session bound to a pool account does not jump the members.
		fb = &fakeBinder{bound: map[string]string{"s8": "p"}}
		st4 := state(t, &crsv1.Settings{DedicatedAccountFallback: true},
			[]*crsv1.AccountGroup{{Id: "g", AccountIds: []string{"a", "b"}}},
			account("a", off, prio(5)), account("b", off, prio(6)), account("p", off, prio(1)))
		sel = newSched(fb).Claude(context.Background(), Request{State: st4, Key: &crsv1.ApiKey{ClaudeAccountId: "group:g"}, SessionHash: "s8"})
		require.Equal(t, []string{"a", "b", "p"}, ids(sel))

		fb = &fakeBinder{bound: map[string]string{"s7": "c"}}
		sel = newSched(fb).Claude(context.Background(), Request{State: st3, Key: &crsv1.ApiKey{ClaudeAccountId: "d"}, SessionHash: "s7"})
		require.Equal(t, []string{"d", "c", "a", "b"}, ids(sel), "dedicated first, sticky next")
	})
}

func TestDecisionIsLogged(t *testing.T) {
	core, logs := observer.New(zap.DebugLevel)
	s := New(Options{Logger: zap.New(core), Now: func() time.Time { return t0 }})
	st := state(t, nil, nil, account("a", snapshot.TypeClaudeOfficial), account("b", snapshot.TypeClaudeOfficial, unschedulable))
	s.Claude(context.Background(), Request{State: st, Key: &crsv1.ApiKey{Id: "k1"}, RequestID: "r1"})
	entries := logs.FilterMessage("claude candidates").All()
	require.Len(t, entries, 1)
	f := entries[0].ContextMap()
	require.Equal(t, "r1", f["request_id"])
	require.Equal(t, []any{"a"}, f["candidates"])
	require.Equal(t, []any{"b: not schedulable"}, f["skipped"])
}

func TestModelFamily(t *testing.T) {
	for model, want := range map[string]string{
		"claude-opus-4-5": "opus", "claude-3-5-Sonnet": "sonnet", "claude-haiku-4-5": "haiku",
		"claude-fable-1": "fable", "gpt-4": "", "": "",
	} {
		require.Equal(t, want, ModelFamily(model), model)
	}
}

func TestIsOpus45OrNewer(t *testing.T) {
	tests := map[string]bool{
		"claude-opus-4-5-20251101": true,
		"claude-opus-4-1-20250805": false,
		"claude-opus-4-20250514":   false,
		"claude-opus-4-10":         true,
		"claude-opus-4-6":          true,
		"claude-opus-5":            true,
		"claude-opus-4":            false,
		"claude-opus-4-123":        false,
		"claude-opus-4.5":          true,
		"opus-4.1":                 false,
		"claude-3-opus-20240229":   false,
		"claude-4.5-opus":          true,
		"claude-5-opus":            true,
		"claude-opus-latest":       true,
		"opus":                     false,
		"claude-sonnet-4-5":        false,
		"CLAUDE-OPUS-4-5":          true,
	}
	for model, want := range tests {
		t.Run(model, func(t *testing.T) { require.Equal(t, want, isOpus45OrNewer(model)) })
	}
}

func TestStickyCacheBounded(t *testing.T) {
	c := newStickyCache(100)
	for i := range 1000 {
		c.put(string(rune('a'+i%26))+string(rune(i)), "x", t0, time.Hour)
	}
	require.LessOrEqual(t, c.len(), 100)
	exp := c.put("k", "acc", t0, time.Minute)
	require.Equal(t, t0.Add(time.Minute).UnixNano(), exp)
	id, gotExp, ok := c.get("k", t0.Add(30*time.Second))
	require.True(t, ok)
	require.Equal(t, "acc", id)
	require.Equal(t, exp, gotExp)
	_, _, ok = c.get("k", t0.Add(time.Minute))
	require.False(t, ok, "expired")
}

// Reasons are kept as parts and put into words only for logs; the words are these.
func TestReasonWords(t *testing.T) {
	const off, con = snapshot.TypeClaudeOfficial, snapshot.TypeClaudeConsole
	st := state(t, nil, []*crsv1.AccountGroup{{Id: "g", AccountIds: []string{"a", "gem", "down"}}},
		account("a", off), account("c", con, status("rate_limited", time.Hour)),
		account("down", off, familyLimited("sonnet", time.Hour)), account("gem", "gemini"))
	tests := []struct {
		name    string
		key     *crsv1.ApiKey
		session string
		bound   string
		want    string
		skipped []any
	}{
		{"pool", &crsv1.ApiKey{}, "", "", "", []any{"down: sonnet rate limited", "c: state rate_limited"}},
		{"missing group", &crsv1.ApiKey{ClaudeAccountId: "group:x"}, "", "",
			"group x not found; group x; no pool fallback; no available account", nil},
		{"group", &crsv1.ApiKey{ClaudeAccountId: "group:g"}, "", "", "group g; no pool fallback",
			[]any{"gem: group member of type gemini", "down: sonnet rate limited"}},
		{"dedicated", &crsv1.ApiKey{ClaudeAccountId: "a"}, "", "", "dedicated a; no pool fallback", nil},
		{"dedicated unavailable", &crsv1.ApiKey{ClaudeAccountId: "down"}, "", "",
			"dedicated down unavailable: sonnet rate limited; no pool fallback; no available account", nil},
		{"dedicated missing", &crsv1.ApiKey{ClaudeAccountId: "nope"}, "", "",
			"dedicated nope unavailable: not found; no pool fallback; no available account", nil},
		{"dedicated of another type", &crsv1.ApiKey{ClaudeAccountId: "gem"}, "", "",
			"dedicated gem unavailable: type gemini; no pool fallback; no available account", nil},
		{"console unavailable", &crsv1.ApiKey{ClaudeConsoleAccountId: "c"}, "", "",
			"dedicated console c unavailable, using the pool: state rate_limited", nil},
		{"sticky", &crsv1.ApiKey{}, "s", "a", "sticky a", nil},
		{"sticky elsewhere", &crsv1.ApiKey{}, "s", "c", "sticky c not a candidate, rebinding", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			core, logs := observer.New(zap.DebugLevel)
			fb := &fakeBinder{bound: map[string]string{"s": tt.bound}}
			s := New(Options{Logger: zap.New(core), Binder: fb, Now: func() time.Time { return t0 }})
			sel := s.Claude(context.Background(), Request{State: st, Key: tt.key, Model: "claude-sonnet-4-5", SessionHash: tt.session})
			require.Equal(t, tt.want, sel.Reason())
			entries := logs.FilterMessage("claude candidates").All()
			require.Len(t, entries, 1)
			require.Equal(t, tt.want, entries[0].ContextMap()["reason"])
			if tt.skipped != nil {
				require.Equal(t, tt.skipped, entries[0].ContextMap()["skipped"])
			}
		})
	}
}

// A request judged at its own time (Request.Now) sees account states as of that time, not the
// scheduler's clock.
func TestRequestNow(t *testing.T) {
	st := state(t, nil, nil, account("a", snapshot.TypeClaudeOfficial, status("rate_limited", time.Hour)),
		account("b", snapshot.TypeClaudeOfficial))
	s := newSched(nil) // its clock says t0
	r := Request{State: st, Key: &crsv1.ApiKey{}, Model: "claude-sonnet-4-5"}
	require.Equal(t, []string{"b"}, ids(s.Claude(context.Background(), r)))
	r.Now = t0.Add(2 * time.Hour)
	require.Equal(t, []string{"a", "b"}, ids(s.Claude(context.Background(), r)), "a's limit is over by then")
}

// A served request refreshes the local binding only when that moves its expiry by more than
// 1/stickySlack of the TTL; a busy session does not write the cache on every request.
func TestServedRefreshesLocalBindingWithSlack(t *testing.T) {
	st := state(t, nil, nil, account("a", snapshot.TypeClaudeOfficial))
	now := t0
	s := New(Options{LocalStickyTTL: 64 * time.Second, Now: func() time.Time { return now }})
	r := Request{State: st, Key: &crsv1.ApiKey{}, SessionHash: "s"}
	expires := func() int64 {
		_, e, ok := s.sticky.get("s", now)
		require.True(t, ok)
		return e
	}

	sel := s.Claude(context.Background(), r) // unbound: our pick, bound when served
	sel.Next()
	sel.Served("a")
	require.Equal(t, t0.Add(64*time.Second).UnixNano(), expires())

	now = t0.Add(time.Second) // within the slack (64s/64 = 1s): left as it is
	sel = s.Claude(context.Background(), r)
	sel.Next()
	sel.Served("a")
	require.Equal(t, t0.Add(64*time.Second).UnixNano(), expires())

	now = t0.Add(1500 * time.Millisecond) // past it: refreshed
	sel = s.Claude(context.Background(), r)
	sel.Next()
	sel.Served("a")
	require.Equal(t, now.Add(64*time.Second).UnixNano(), expires())
}

// Concurrent writers keep the cache within its bound (give or take one entry per writer racing
// past the check), and its count matches its entries.
func TestStickyCacheBoundedConcurrently(t *testing.T) {
	c := newStickyCache(100)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 1000 {
				c.put(fmt.Sprintf("%d-%d", g, i), "x", t0, time.Hour)
				c.get(fmt.Sprintf("%d-%d", g, i/2), t0)
			}
		})
	}
	wg.Wait()
	require.LessOrEqual(t, c.len(), 100+8)
	n := 0
	c.m.Range(func(any, any) bool { n++; return true })
	require.Equal(t, n, c.len())
}

// BenchmarkClaudeKnownSession is scheduling a request of a session this worker has bound, over a
// one-account pool (crs-bench's setup), then the relay taking the first candidate and the worker
// reporting it served.
func BenchmarkClaudeKnownSession(b *testing.B) {
	st, err := snapshot.Apply(nil, &crsv1.SyncMessage{Version: 1, Body: &crsv1.SyncMessage_Snapshot{Snapshot: &crsv1.Snapshot{
		Accounts: []*crsv1.Account{account("a", snapshot.TypeClaudeOfficial, status("active", 0))},
	}}})
	require.NoError(b, err)
	s := New(Options{Binder: &fakeBinder{bound: map[string]string{}}})
	r := Request{State: st, Key: &crsv1.ApiKey{Id: "k"}, Model: "claude-sonnet-4-20250514", SessionHash: sessionID}
	var sel Selection
	r.Now = time.Now()
	s.ClaudeInto(context.Background(), r, &sel)
	sel.Next()
	sel.Served("a")
	b.ReportAllocs()
	for b.Loop() {
		r.Now = time.Now()
		s.ClaudeInto(context.Background(), r, &sel)
		if sel.Next() == nil {
			b.Fatal("no candidate")
		}
		sel.Served("a")
	}
}

func TestModelSupported(t *testing.T) {
	const off, con = snapshot.TypeClaudeOfficial, snapshot.TypeClaudeConsole
	mapped := account("m", con)
	mapped.ModelMapping = map[string]string{"Claude-Sonnet-4-5": "x"}
	tests := []struct {
		name  string
		acct  *crsv1.Account
		model string
		want  bool
	}{
		{"any account serves no model", account("a", off), "", true},
		{"official: claude name", account("a", off), "claude-sonnet-4-5", true},
		{"official: family name alone", account("a", off), "haiku-x", true},
		{"official: names are matched as written", account("a", off), "CLAUDE-SONNET-4", false},
		{"official: not a claude model", account("a", off), "gpt-4o", false},
		{"official free: no opus, in any case", account("a", off, subscription("free")), "claude-OPUS-4-5", false},
		{"official free: sonnet", account("a", off, subscription("free")), "claude-sonnet-4", true},
		{"official pro: opus 4.5", account("a", off, subscription("claude_pro")), "claude-opus-4-5-20251101", true},
		{"official pro: opus 4", account("a", off, subscription("claude_pro")), "claude-opus-4-20250514", false},
		{"official pro: Opus in capitals", account("a", off, subscription("claude_pro")), "claude-Opus-4-20250514", false},
		{"official max: opus 4", account("a", off, subscription("claude_max")), "claude-opus-4-20250514", true},
		{"console without mapping", account("c", con), "anything", true},
		{"console mapping exact", mapped, "Claude-Sonnet-4-5", true},
		{"console mapping case-insensitive", mapped, "claude-sonnet-4-5", true},
		{"console mapping miss", mapped, "claude-opus-4", false},
		{"other types", account("g", "gemini"), "x", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			require.Equal(t, tt.want, ModelSupported(tt.acct, tt.model))
			m := modelOf(tt.model)
			require.Equal(t, tt.want, m.supportedBy(tt.acct))
		})
	}
}
