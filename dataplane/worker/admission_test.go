package worker

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/valyala/fasthttp"
	"go.uber.org/zap/zaptest"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/crsrelay/crs/dataplane/fleetclient"
	"github.com/crsrelay/crs/dataplane/fleetclient/fleettest"
	"github.com/crsrelay/crs/dataplane/relay"
	crsv1 "github.com/crsrelay/crs/gen/crs/v1"
	"github.com/crsrelay/crs/internal/keyhash"
	"github.com/crsrelay/crs/internal/mockupstream"
)

// fakeAdmitter is an in-process Admitter with the control plane's lease semantics: all or
// nothing, a window request counter per key. It records every call.
type fakeAdmitter struct {
	mu          sync.Mutex
	n           int
	leases      map[string][]*crsv1.LeaseLimit
	acquires    []*crsv1.LeaseAcquire
	released    map[string]int
	windowLimit map[string]int64
	windowCount map[string]int64
	resetAt     time.Time
	err         error
	refuseAll   string // refused_scope answered to every acquire
}

func newFakeAdmitter() *fakeAdmitter {
	return &fakeAdmitter{leases: map[string][]*crsv1.LeaseLimit{}, released: map[string]int{},
		windowLimit: map[string]int64{}, windowCount: map[string]int64{}}
}

func (f *fakeAdmitter) Acquire(_ context.Context, req *crsv1.LeaseAcquire) (*crsv1.AdmitResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.acquires = append(f.acquires, req)
	if f.err != nil {
		return nil, f.err
	}
	if f.refuseAll != "" {
		return &crsv1.AdmitResponse{RefusedScope: f.refuseAll}, nil
	}
	for _, l := range req.GetLimits() {
		if cur := f.heldLocked(l.GetScope(), l.GetId()); cur >= int(l.GetLimit()) {
			return &crsv1.AdmitResponse{RefusedScope: l.GetScope(), Current: int64(cur), Limit: int64(l.GetLimit())}, nil
		}
	}
	if id := req.GetWindowKeyId(); id != "" {
		if lim := f.windowLimit[id]; lim > 0 && f.windowCount[id] >= lim {
			return &crsv1.AdmitResponse{RefusedScope: fleetclient.RefusedWindowRequests, Current: f.windowCount[id], Limit: lim,
				ResetAt: timestamppb.New(f.resetAt)}, nil
		}
		f.windowCount[id]++
	}
	resp := &crsv1.AdmitResponse{Granted: true, Ttl: durationpb.New(30 * time.Second)}
	if len(req.GetLimits()) > 0 {
		f.n++
		resp.LeaseId = fmt.Sprint("lease-", f.n)
		f.leases[resp.LeaseId] = req.GetLimits()
	}
	return resp, nil
}

func (f *fakeAdmitter) Release(ids ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, id := range ids {
		f.released[id]++
		delete(f.leases, id)
	}
}

func (f *fakeAdmitter) heldLocked(scope, id string) int {
	n := 0
	for _, ls := range f.leases {
		for _, l := range ls {
			if l.GetScope() == scope && l.GetId() == id {
				n++
			}
		}
	}
	return n
}

func (f *fakeAdmitter) held(scope, id string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.heldLocked(scope, id)
}

func (f *fakeAdmitter) calls() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.acquires)
}

// granted is the number of leases granted so far.
func (f *fakeAdmitter) granted() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.n
}

// requireAllReleasedOnce checks that no lease is held and each granted one was released once.
func (f *fakeAdmitter) requireAllReleasedOnce(t *testing.T) {
	t.Helper()
	require.Eventually(t, func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		return len(f.leases) == 0
	}, 5*time.Second, 5*time.Millisecond, "leases still held")
	time.Sleep(20 * time.Millisecond)
	f.mu.Lock()
	defer f.mu.Unlock()
	require.Len(t, f.released, f.n, "every granted lease is released")
	for id, n := range f.released {
		require.Equal(t, 1, n, "lease %s released %d times", id, n)
	}
}

// Keys of the admission tests.
const (
	limKey    = "cr_aaaa000000000000000000000000000000000000000000000000000000000001"
	winKey    = "cr_aaaa000000000000000000000000000000000000000000000000000000000002"
	capKey    = "cr_aaaa000000000000000000000000000000000000000000000000000000000003"
	freeKey   = "cr_aaaa000000000000000000000000000000000000000000000000000000000004"
	clientKey = "cr_aaaa000000000000000000000000000000000000000000000000000000000005"
	modelKey  = "cr_aaaa000000000000000000000000000000000000000000000000000000000006"
)

// admEnv is a worker with a fake Admitter, an injected clock, two accounts on the mock upstream
// (tokens tok-a, priority 1, and tok-b, priority 2) and the keys above.
type admEnv struct {
	t        *testing.T
	cp       *fleettest.Server
	upstream *mockupstream.Server
	upURL    string
	adm      *fakeAdmitter
	clock    atomic.Pointer[time.Time]
	client   *fasthttp.Client
	base     string
	relay    Relayer
	w        *Worker

	keys     map[string]*crsv1.ApiKey
	usage    []*crsv1.KeyUsageState
	accounts []*crsv1.Account
	settings *crsv1.Settings
	version  uint64
}

var admNow = time.Date(2026, 3, 4, 12, 0, 0, 0, time.UTC) // a Wednesday

func newAdmEnv(t *testing.T) *admEnv {
	t.Helper()
	e := &admEnv{t: t, adm: newFakeAdmitter(), client: &fasthttp.Client{MaxConnsPerHost: 100}}
	e.clock.Store(&admNow)
	e.upstream = mockupstream.New(mockupstream.Config{})
	addr, err := e.upstream.Start("127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { _ = e.upstream.Close() })
	e.upURL = "http://" + addr
	e.keys = map[string]*crsv1.ApiKey{
		limKey:    {Id: "key-lim", IsActive: true, ConcurrencyLimit: 2},
		winKey:    {Id: "key-win", IsActive: true, RateLimitWindow: 60, RateLimitRequests: 3},
		capKey:    {Id: "key-cap", IsActive: true, DailyCostLimit: 5},
		freeKey:   {Id: "key-free", IsActive: true},
		clientKey: {Id: "key-client", IsActive: true, EnableClientRestriction: true, AllowedClients: []string{"claude_code"}},
		modelKey:  {Id: "key-model", IsActive: true, EnableModelRestriction: true, RestrictedModels: []string{"claude-opus-4-1-20250805"}},
	}
	acct := func(id, tok string, prio int32) *crsv1.Account {
		return &crsv1.Account{Id: id, Name: id, Type: "claude-official", Platform: "claude", Priority: prio,
			AccountType: "shared", BaseUrl: e.upURL,
			Credentials: &crsv1.Account_Oauth{Oauth: &crsv1.OAuthCredential{AccessToken: tok}},
			Status:      &crsv1.AccountStatus{State: "active"}}
	}
	e.accounts = []*crsv1.Account{acct("acc-a", "tok-a", 1), acct("acc-b", "tok-b", 2)}
	return e
}

func (e *admEnv) now() time.Time { return *e.clock.Load() }

func (e *admEnv) setNow(t time.Time) { e.clock.Store(&t) }

func (e *admEnv) snapshot() *crsv1.Snapshot {
	s := &crsv1.Snapshot{Accounts: e.accounts, Settings: e.settings, KeyUsage: e.usage,
		Hashing: &crsv1.KeyHashing{HmacSecret: hmacSecret}}
	for plain, k := range e.keys {
		s.Keys = append(s.Keys, &crsv1.WorkerKey{Hash: keyhash.HMAC(hmacSecret, []byte(plain)), Key: k})
	}
	return s
}

// push sends the current snapshot and waits until the worker serves it.
func (e *admEnv) push(f *fleetclient.Client) {
	e.version++
	v := e.version
	e.cp.SetSnapshot(v, e.snapshot())
	require.Eventually(e.t, func() bool { st := f.State(); return st != nil && st.Version() == v }, 5*time.Second, 5*time.Millisecond)
}

// start runs the worker; the admission tests configure keys, accounts and settings first.
func (e *admEnv) start() *fleetclient.Client {
	t := e.t
	e.cp = fleettest.Start(t, fleetToken)
	logger := zaptest.NewLogger(t)
	f, err := fleetclient.New(fleetclient.Options{Addr: e.cp.Addr(), Token: fleetToken, Logger: logger.Named("fleet"),
		BatchInterval: 10 * time.Millisecond, MaxBackoff: 100 * time.Millisecond})
	require.NoError(t, err)
	rl := e.relay
	if rl == nil {
		rl = relay.New(relay.Options{Logger: logger, MaxAttempts: 2})
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	e.base = "http://" + ln.Addr().String()
	w := New(Options{Listener: ln, Logger: logger, Relay: rl, Fleet: f, Admitter: e.adm, Now: e.now,
		TimezoneOffsetHours: 8, ShutdownTimeout: 5 * time.Second})
	e.w = w
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			require.NoError(t, err)
		case <-time.After(20 * time.Second):
			t.Error("worker did not stop")
		}
	})
	e.push(f)
	return f
}

func (e *admEnv) do(method, path, key string, body []byte, headers ...string) resp {
	e.t.Helper()
	r, err := e.try(method, path, key, body, headers...)
	require.NoError(e.t, err)
	return r
}

func (e *admEnv) try(method, path, key string, body []byte, headers ...string) (resp, error) {
	req := fasthttp.AcquireRequest()
	defer fasthttp.ReleaseRequest(req)
	res := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseResponse(res)
	req.SetRequestURI(e.base + path)
	req.Header.SetMethod(method)
	req.Header.Set("x-api-key", key)
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	if body != nil {
		req.Header.SetContentType("application/json")
		req.SetBody(body)
	}
	if err := e.client.DoTimeout(req, res, 20*time.Second); err != nil {
		return resp{}, err
	}
	h := map[string]string{}
	for k, v := range res.Header.All() {
		h[strings.ToLower(string(k))] = string(v)
	}
	return resp{status: res.StatusCode(), header: h, body: append([]byte(nil), res.Body()...)}, nil
}

// slowStream makes every stream take about 50 × delay.
func (e *admEnv) slowStream(delay time.Duration) {
	e.upstream.Configure(mockupstream.Behavior{Deltas: 50, DeltaText: "x", EventDelay: delay, InputTokens: 10, OutputTokens: 5}, nil)
}

// parallel sends n streaming requests at once and returns their statuses and bodies.
func (e *admEnv) parallel(n int, key string) []resp {
	out := make([]resp, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { out[i] = e.do("POST", "/api/v1/messages", key, messagesBody(true, "")) })
	}
	wg.Wait()
	return out
}

func TestConcurrencyLimitPerKey(t *testing.T) {
	e := newAdmEnv(t)
	e.start()
	e.slowStream(10 * time.Millisecond) // ~500ms streams

	results := e.parallel(6, limKey)
	var ok, limited int
	for _, r := range results {
		switch r.status {
		case 200:
			ok++
			require.Contains(t, string(r.body), "event: message_stop")
		case 429:
			limited++
			require.Equal(t, `{"error":"Concurrency limit exceeded","message":"Too many concurrent requests. Limit: 2 concurrent requests","currentConcurrency":2,"concurrencyLimit":2}`, string(r.body))
			require.Equal(t, "1", r.header["retry-after"])
			require.Equal(t, "application/json; charset=utf-8", r.header["content-type"])
		default:
			t.Fatalf("unexpected %d %s", r.status, r.body)
		}
	}
	require.Equal(t, 2, ok)
	require.Equal(t, 4, limited)
	require.EqualValues(t, 2, e.upstream.Stats().MaxInFlight, "never more than the limit upstream")
	e.adm.requireAllReleasedOnce(t)

	// Slots come back: the next requests are served.
	require.Equal(t, 200, e.do("POST", "/api/v1/messages", limKey, messagesBody(false, "")).status)
	e.adm.requireAllReleasedOnce(t)
}

// TestLeaseReleasedOnEveryExit: whatever ends the request, its slot is released exactly once.
func TestLeaseReleasedOnEveryExit(t *testing.T) {
	t.Run("finish, stream and buffered", func(t *testing.T) {
		e := newAdmEnv(t)
		e.start()
		require.Equal(t, 200, e.do("POST", "/api/v1/messages", limKey, messagesBody(true, "")).status)
		require.Equal(t, 200, e.do("POST", "/api/v1/messages", limKey, messagesBody(false, "")).status)
		require.Equal(t, 2, e.adm.granted())
		e.adm.requireAllReleasedOnce(t)
	})
	t.Run("upstream error on every account", func(t *testing.T) {
		e := newAdmEnv(t)
		e.start()
		e.upstream.Configure(mockupstream.Behavior{FailStatus: 500}, nil)
		r := e.do("POST", "/api/v1/messages", limKey, messagesBody(false, ""))
		require.Equal(t, 500, r.status)
		require.Equal(t, 1, e.adm.granted())
		e.adm.requireAllReleasedOnce(t)
	})
	t.Run("upstream dies mid-stream", func(t *testing.T) {
		e := newAdmEnv(t)
		e.start()
		e.upstream.Configure(mockupstream.Behavior{Deltas: 20, DeltaText: "x", DisconnectAfterEvents: 3}, nil)
		r := e.do("POST", "/api/v1/messages", limKey, messagesBody(true, ""))
		require.Equal(t, 200, r.status)
		require.NotContains(t, string(r.body), "message_stop")
		e.adm.requireAllReleasedOnce(t)
	})
	t.Run("client gone mid-stream", func(t *testing.T) {
		e := newAdmEnv(t)
		e.start()
		e.upstream.Configure(mockupstream.Behavior{Deltas: 400, DeltaText: "x", EventDelay: 10 * time.Millisecond}, nil)
		conn, err := net.Dial("tcp", strings.TrimPrefix(e.base, "http://"))
		require.NoError(t, err)
		body := messagesBody(true, "")
		_, err = fmt.Fprintf(conn, "POST /api/v1/messages HTTP/1.1\r\nHost: x\r\nx-api-key: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", limKey, len(body), body)
		require.NoError(t, err)
		line, err := bufio.NewReader(conn).ReadString('\n')
		require.NoError(t, err)
		require.Contains(t, line, "200")
		require.Equal(t, 1, e.adm.held(scopeKey, "key-lim"), "held while streaming")
		require.NoError(t, conn.Close())
		start := time.Now()
		e.adm.requireAllReleasedOnce(t)
		require.Less(t, time.Since(start), 2*time.Second, "released when the client left, not at the stream's end (4s)")
	})
	t.Run("no account for the model", func(t *testing.T) {
		e := newAdmEnv(t)
		e.start()
		r := e.do("POST", "/api/v1/messages", limKey, []byte(`{"model":"gpt-4o","messages":[{"role":"user","content":"x"}]}`))
		require.Equal(t, 500, r.status)
		require.Equal(t, 1, e.adm.granted())
		e.adm.requireAllReleasedOnce(t)
	})
	t.Run("panic in the relay", func(t *testing.T) {
		e := newAdmEnv(t)
		e.relay = &fakeRelay{panic: true}
		e.start()
		r := e.do("POST", "/api/v1/messages", limKey, messagesBody(false, ""))
		require.Equal(t, 500, r.status)
		require.Equal(t, 1, e.adm.granted())
		e.adm.requireAllReleasedOnce(t)
	})
	t.Run("count_tokens takes no slot", func(t *testing.T) {
		e := newAdmEnv(t)
		e.start()
		require.Equal(t, 200, e.do("POST", "/api/v1/messages/count_tokens", limKey, messagesBody(false, "")).status)
		require.Zero(t, e.adm.calls(), "no concurrency lease, no window: no round trip")
	})
}

// TestWindowRequestsCountedAtAdmission: requests are counted by the control plane before the
// upstream call (reference §13 item 8), count_tokens included; a full window is a 429.
func TestWindowRequestsCountedAtAdmission(t *testing.T) {
	e := newAdmEnv(t)
	e.start()
	e.adm.windowLimit["key-win"] = 3
	e.adm.resetAt = admNow.Add(42*time.Minute + 10*time.Second)
	e.upstream.Configure(mockupstream.Behavior{FailStatus: 400}, nil) // failed requests count too
	require.Equal(t, 400, e.do("POST", "/api/v1/messages", winKey, messagesBody(false, "")).status)
	require.Equal(t, 400, e.do("POST", "/api/v1/messages/count_tokens", winKey, messagesBody(false, "")).status)
	require.Equal(t, 400, e.do("POST", "/api/v1/messages", winKey, messagesBody(false, "")).status)
	r := e.do("POST", "/api/v1/messages", winKey, messagesBody(false, ""))
	require.Equal(t, 429, r.status)
	require.Equal(t, `{"error":"Rate limit exceeded","message":"已达到请求次数限制 (3 次)，将在 43 分钟后重置","currentRequests":3,"requestLimit":3,"resetAt":"2026-03-04T12:42:10.000Z","remainingMinutes":43}`, string(r.body))
	require.Empty(t, r.header["retry-after"])
	for _, a := range e.adm.acquires {
		require.Equal(t, "key-win", a.GetWindowKeyId())
		require.Empty(t, a.GetLimits(), "the key has no concurrency limit")
	}
	require.EqualValues(t, 3, e.upstream.Stats().Requests, "the refused request never went upstream")
}

// TestWindowFromPushedState: a window the pushed state shows full is refused without a round trip
// and opens again when it ends (injected clock).
func TestWindowFromPushedState(t *testing.T) {
	e := newAdmEnv(t)
	e.keys[winKey].TokenLimit = 100
	e.usage = []*crsv1.KeyUsageState{{KeyId: "key-win", WindowStart: timestamppb.New(admNow.Add(-30 * time.Minute)), WindowRequests: 1, WindowTokens: 150}}
	e.start()
	r := e.do("POST", "/api/v1/messages", winKey, messagesBody(false, ""))
	require.Equal(t, 429, r.status)
	require.Equal(t, `{"error":"Rate limit exceeded","message":"已达到 Token 使用限制 (100 tokens)，将在 30 分钟后重置","currentTokens":150,"tokenLimit":100,"resetAt":"2026-03-04T12:30:00.000Z","remainingMinutes":30}`, string(r.body))
	require.Zero(t, e.adm.calls())

	e.setNow(admNow.Add(30 * time.Minute)) // the window ends
	require.Equal(t, 200, e.do("POST", "/api/v1/messages", winKey, messagesBody(false, "")).status)
	require.Equal(t, 1, e.adm.calls(), "the new window's first request is counted")
}

func TestAdmitUnavailableIs503(t *testing.T) {
	e := newAdmEnv(t)
	e.start()
	const want = `{"error":"Service temporarily unavailable","message":"Failed to acquire concurrency slot due to internal error"}`
	e.adm.err = fleetclient.ErrAdmitUnavailable
	r := e.do("POST", "/api/v1/messages", limKey, messagesBody(false, ""))
	require.Equal(t, 503, r.status)
	require.Equal(t, want, string(r.body))
	e.adm.err = nil
	e.adm.refuseAll = fleetclient.RefusedUnavailable // the control plane's store failed
	r = e.do("POST", "/api/v1/messages", winKey, messagesBody(false, ""))
	require.Equal(t, 503, r.status)
	require.Equal(t, want, string(r.body))
	require.Zero(t, e.upstream.Stats().Requests)
	// Keys without limits do not depend on the Admit stream.
	require.Equal(t, 200, e.do("POST", "/api/v1/messages", freeKey, messagesBody(false, "")).status)
}

func TestConcurrencyQueue(t *testing.T) {
	setup := func(t *testing.T, maxSize, mult int32, timeout time.Duration) *admEnv {
		e := newAdmEnv(t)
		e.keys[limKey].ConcurrencyLimit = 1
		e.settings = &crsv1.Settings{ConcurrentRequestQueueEnabled: true, ConcurrentRequestQueueMaxSize: maxSize,
			ConcurrentRequestQueueMaxSizeMultiplier: mult, ConcurrentRequestQueueTimeout: durationpb.New(timeout)}
		e.start()
		return e
	}
	t.Run("waits for the slot", func(t *testing.T) {
		e := setup(t, 3, 0, 5*time.Second)
		e.slowStream(6 * time.Millisecond) // ~300ms
		results := e.parallel(3, limKey)
		for _, r := range results {
			require.Equal(t, 200, r.status, "%s", r.body)
		}
		require.EqualValues(t, 1, e.upstream.Stats().MaxInFlight)
		e.adm.requireAllReleasedOnce(t)
		require.Zero(t, e.w.adm.queued("key-lim"), "the queue is empty again")
	})
	t.Run("queue full", func(t *testing.T) {
		// max(limit 1 × multiplier 1, max size 1) = 1 waiting request.
		e := setup(t, 1, 1, 2500*time.Millisecond)
		e.slowStream(20 * time.Millisecond) // ~1s
		results := e.parallel(3, limKey)
		var full []resp
		for _, r := range results {
			if r.status == 429 {
				full = append(full, r)
			} else {
				require.Equal(t, 200, r.status)
			}
		}
		require.Len(t, full, 1)
		require.Equal(t, `{"error":"Concurrency queue full","message":"Too many requests waiting in queue. Limit: 1 concurrent requests, queue: 1/1, timeout: 3s","currentConcurrency":1,"concurrencyLimit":1,"queueCount":1,"maxQueueSize":1,"queueTimeoutMs":2500,"retryAfterSeconds":3}`, string(full[0].body))
		require.Equal(t, "3", full[0].header["retry-after"])
	})
	t.Run("timeout", func(t *testing.T) {
		e := setup(t, 3, 0, 600*time.Millisecond)
		e.slowStream(40 * time.Millisecond) // ~2s
		results := e.parallel(2, limKey)
		var timedOut resp
		for _, r := range results {
			if r.status == 429 {
				timedOut = r
			}
		}
		require.Equal(t, 429, timedOut.status)
		require.Equal(t, "5", timedOut.header["retry-after"], "clamp(ceil(1s/2), 5, 30)")
		require.Equal(t, "close", strings.ToLower(timedOut.header["connection"]), "queued requests close the connection")
		m := timedOut.json(t)
		require.Equal(t, "Queue timeout", m["error"])
		require.Regexp(t, `^Request timed out waiting for concurrency slot\. Limit: 1 concurrent requests, maxQueue: 3, Queue timeout: 1s, waited: \d+ms$`, m["message"])
		require.Equal(t, 1.0, m["currentConcurrency"])
		require.Equal(t, 1.0, m["concurrencyLimit"])
		require.Equal(t, 3.0, m["maxQueueSize"])
		require.Equal(t, 600.0, m["queueTimeoutMs"])
		require.GreaterOrEqual(t, m["waitTimeMs"], 600.0)
		require.Equal(t, 5.0, m["retryAfterSeconds"])
		// Polls back off: 200ms, then ×1.5 ±20%: at most 4 polls in 600ms (plus the first try).
		require.LessOrEqual(t, e.adm.calls(), 2+4)
	})
}

// TestAccountConcurrency: an account at its max_concurrency is skipped for the next candidate;
// when every account is full the client gets the reference's 503.
func TestAccountConcurrency(t *testing.T) {
	e := newAdmEnv(t)
	e.accounts[0].MaxConcurrency = 1
	e.start()
	e.slowStream(10 * time.Millisecond)

	results := e.parallel(3, freeKey)
	for _, r := range results {
		require.Equal(t, 200, r.status)
	}
	st := e.upstream.Stats()
	require.EqualValues(t, 1, st.ByCredential["tok-a"].MaxInFlight, "acc-a never runs two")
	require.GreaterOrEqual(t, st.ByCredential["tok-b"].Requests, int64(2), "the others went to acc-b")
	e.adm.requireAllReleasedOnce(t)
	for _, a := range e.adm.acquires {
		require.Equal(t, []*crsv1.LeaseLimit{{Scope: "account", Id: "acc-a", Limit: 1}}, a.GetLimits())
		require.Empty(t, a.GetWindowKeyId())
	}

	t.Run("every account full", func(t *testing.T) {
		e := newAdmEnv(t)
		e.accounts[0].MaxConcurrency = 1
		e.accounts[1].MaxConcurrency = 1
		e.start()
		e.slowStream(10 * time.Millisecond)
		results := e.parallel(3, limKey) // key limit 2: the third is refused by the key first
		var got []int
		for _, r := range results {
			got = append(got, r.status)
		}
		require.ElementsMatch(t, []int{200, 200, 429}, got)

		e.keys[limKey].ConcurrencyLimit = 5
		e.adm.requireAllReleasedOnce(t)
		results = e.parallel(3, freeKey)
		got = got[:0]
		var full resp
		for _, r := range results {
			got = append(got, r.status)
			if r.status == 503 {
				full = r
			}
		}
		require.ElementsMatch(t, []int{200, 200, 503}, got)
		require.Equal(t, `{"error":"service_unavailable","message":"All available Claude Console accounts have reached their concurrency limit. Please try again later."}`, string(full.body))
		e.adm.requireAllReleasedOnce(t)
	})
	t.Run("failover releases the failed account's lease", func(t *testing.T) {
		e := newAdmEnv(t)
		e.accounts[0].MaxConcurrency = 1
		e.start()
		e.upstream.Configure(mockupstream.Behavior{}, map[string]mockupstream.Behavior{"tok-a": {FailStatus: 529}})
		require.Equal(t, 200, e.do("POST", "/api/v1/messages", freeKey, messagesBody(false, "")).status)
		require.Equal(t, 1, e.adm.granted())
		e.adm.requireAllReleasedOnce(t)
	})
}

// TestUnlimitedKeysNeverAdmit: a key without limits, in a fleet without account limits, costs no
// Admit round trip.
func TestUnlimitedKeysNeverAdmit(t *testing.T) {
	e := newAdmEnv(t)
	e.start()
	for range 5 {
		require.Equal(t, 200, e.do("POST", "/api/v1/messages", freeKey, messagesBody(true, "")).status)
		require.Equal(t, 200, e.do("POST", "/api/v1/messages/count_tokens", freeKey, messagesBody(false, "")).status)
	}
	require.Zero(t, e.adm.calls())
}

// TestPolicyOverHTTP: the snapshot-only checks reach the client with the reference's shapes, and
// reset with the injected clock.
func TestPolicyOverHTTP(t *testing.T) {
	e := newAdmEnv(t)
	// 2026-03-04 12:00 UTC = 20:00 in UTC+8: the day is 2026-03-04, resetting at 16:00 UTC.
	e.usage = []*crsv1.KeyUsageState{{KeyId: "key-cap", Day: "2026-03-04", DailyCost: 5.5}}
	f := e.start()

	r := e.do("POST", "/api/v1/messages", capKey, messagesBody(false, ""))
	require.Equal(t, 402, r.status)
	require.Equal(t, `{"error":{"type":"insufficient_quota","message":"已达到每日费用限制 ($5)","code":"daily_cost_limit_exceeded"},"currentCost":5.5,"costLimit":5,"resetAt":"2026-03-04T16:00:00.000Z"}`, string(r.body))
	e.setNow(time.Date(2026, 3, 4, 16, 0, 0, 0, time.UTC))
	require.Equal(t, 200, e.do("POST", "/api/v1/messages", capKey, messagesBody(false, "")).status, "a new day in UTC+8")

	// The control plane learns the spend and pushes it: refused within that push.
	e.usage = []*crsv1.KeyUsageState{{KeyId: "key-cap", Day: "2026-03-05", DailyCost: 7}}
	e.push(f)
	require.Equal(t, 402, e.do("POST", "/api/v1/messages", capKey, messagesBody(false, "")).status)

	r = e.do("POST", "/api/v1/messages", clientKey, messagesBody(false, ""), "User-Agent", "curl/8.0")
	require.Equal(t, 403, r.status)
	require.Equal(t, `{"error":"Client not allowed","message":"Your client is not authorized to use this API key","allowedClients":["claude_code"],"userAgent":"curl/8.0"}`, string(r.body))
	uid := `{\"device_id\":\"` + strings.Repeat("d", 64) + `\",\"account_uuid\":\"\",\"session_id\":\"s-1\"}`
	r = e.do("POST", "/api/v1/messages", clientKey, messagesBody(false, `"metadata":{"user_id":"`+uid+`"},`),
		"User-Agent", "claude-cli/2.1.0 (external, cli)", "x-app", "cli", "anthropic-beta", "claude-code-20250219", "anthropic-version", "2023-06-01")
	require.Equal(t, 200, r.status, "%s", r.body)

	r = e.do("POST", "/api/v1/messages", modelKey, []byte(`{"model":"claude-opus-4-1-20250805","messages":[{"role":"user","content":"x"}]}`))
	require.Equal(t, 403, r.status)
	require.Equal(t, `{"error":{"type":"forbidden","message":"暂无该模型访问权限"}}`, string(r.body))
	require.Equal(t, 200, e.do("POST", "/api/v1/messages", modelKey, messagesBody(false, "")).status)
	require.Zero(t, e.adm.calls())
}
