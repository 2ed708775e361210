package fleet

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/crsrelay/crs/controlplane/store"
	"github.com/crsrelay/crs/controlplane/store/embedded"
	crsv1 "github.com/crsrelay/crs/gen/crs/v1"
)

// admitStream is one worker's Admit stream.
type admitStream struct {
	s      crsv1.FleetService_AdmitClient
	cancel context.CancelFunc
	seq    uint64
}

func (h *harness) admit(t *testing.T) *admitStream {
	t.Helper()
	return openAdmit(t, h.client)
}

func openAdmit(t *testing.T, c crsv1.FleetServiceClient) *admitStream {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	s, err := c.Admit(ctx)
	require.NoError(t, err)
	return &admitStream{s: s, cancel: cancel}
}

// send sends req with the next seq and returns that seq.
func (a *admitStream) send(t *testing.T, req *crsv1.AdmitRequest) uint64 {
	t.Helper()
	a.seq++
	req.Seq = a.seq
	require.NoError(t, a.s.Send(req))
	return a.seq
}

// sendEnding sends req to a stream the server may end before reading it (a refused token, no
// limit store): gRPC then reports io.EOF on Send and the status on the next Recv.
func (a *admitStream) sendEnding(t *testing.T, req *crsv1.AdmitRequest) {
	t.Helper()
	a.seq++
	req.Seq = a.seq
	if err := a.s.Send(req); err != nil {
		require.ErrorIs(t, err, io.EOF)
	}
}

// recv returns the next answer or the stream's error, failing after 5s.
func (a *admitStream) recv(t *testing.T) (*crsv1.AdmitResponse, error) {
	t.Helper()
	type result struct {
		r   *crsv1.AdmitResponse
		err error
	}
	ch := make(chan result, 1)
	go func() {
		r, err := a.s.Recv()
		ch <- result{r, err}
	}()
	select {
	case res := <-ch:
		return res.r, res.err
	case <-time.After(5 * time.Second):
		t.Fatal("no admit answer within 5s")
		return nil, nil
	}
}

// do sends req and returns its answer.
func (a *admitStream) do(t *testing.T, req *crsv1.AdmitRequest) *crsv1.AdmitResponse {
	t.Helper()
	seq := a.send(t, req)
	r, err := a.recv(t)
	require.NoError(t, err)
	require.Equal(t, seq, r.GetSeq(), "answer echoes seq")
	return r
}

func acquireReq(window string, limits ...*crsv1.LeaseLimit) *crsv1.AdmitRequest {
	return &crsv1.AdmitRequest{Op: &crsv1.AdmitRequest_Acquire{Acquire: &crsv1.LeaseAcquire{
		RequestId: "req", Limits: limits, WindowKeyId: window,
	}}}
}

func (a *admitStream) acquire(t *testing.T, window string, limits ...*crsv1.LeaseLimit) *crsv1.AdmitResponse {
	t.Helper()
	return a.do(t, acquireReq(window, limits...))
}

func (a *admitStream) renew(t *testing.T, ids ...string) *crsv1.AdmitResponse {
	t.Helper()
	return a.do(t, &crsv1.AdmitRequest{Op: &crsv1.AdmitRequest_Renew{Renew: &crsv1.LeaseRenew{LeaseIds: ids}}})
}

func (a *admitStream) release(t *testing.T, ids ...string) *crsv1.AdmitResponse {
	t.Helper()
	return a.do(t, &crsv1.AdmitRequest{Op: &crsv1.AdmitRequest_Release{Release: &crsv1.LeaseRelease{LeaseIds: ids}}})
}

func keyLim(id string, n int32) *crsv1.LeaseLimit {
	return &crsv1.LeaseLimit{Scope: "key", Id: id, Limit: n}
}

func accLim(id string, n int32) *crsv1.LeaseLimit {
	return &crsv1.LeaseLimit{Scope: "account", Id: id, Limit: n}
}

// requireGrant requires a granted lease and returns its id.
func requireGrant(t *testing.T, r *crsv1.AdmitResponse) string {
	t.Helper()
	require.True(t, r.GetGranted(), "refused: %v", r)
	require.NotEmpty(t, r.GetLeaseId())
	require.Equal(t, DefaultLeaseTTL, r.GetTtl().AsDuration())
	require.Empty(t, r.GetRefusedScope())
	return r.GetLeaseId()
}

func requireRefusal(t *testing.T, r *crsv1.AdmitResponse, scope string, current, limit int64) {
	t.Helper()
	require.False(t, r.GetGranted(), "granted: %v", r)
	require.Empty(t, r.GetLeaseId())
	require.Equal(t, scope, r.GetRefusedScope())
	require.Equal(t, current, r.GetCurrent(), "current")
	require.Equal(t, limit, r.GetLimit(), "limit")
}

// startLimited runs a Service with an embedded LimitStore and returns both.
func startLimited(t *testing.T, st *embedded.Store, edit func(*Options)) (*harness, *embedded.Limits) {
	t.Helper()
	l := embedded.NewLimits(st)
	h := start(t, st, func(o *Options) {
		o.Limits = l
		if edit != nil {
			edit(o)
		}
	})
	return h, l
}

func leasesOn(t *testing.T, h *harness, l store.LimitStore, scope, id string) int {
	t.Helper()
	n, err := l.Leases(t.Context(), scope, id, h.clock.Now())
	require.NoError(t, err)
	return n
}

func TestAdmitConcurrencyLimits(t *testing.T) {
	st := openStore(t)
	ctx := t.Context()
	require.NoError(t, st.CreateKey(ctx, testKey("k1", func(k *crsv1.ApiKey) { k.ConcurrencyLimit = 3 })))
	require.NoError(t, st.CreateKey(ctx, testKey("k2", func(k *crsv1.ApiKey) { k.ConcurrencyLimit = 10 })))
	require.NoError(t, st.CreateKey(ctx, testKey("free", nil)))
	require.NoError(t, st.CreateAccount(ctx, testAccount("a1", func(a *crsv1.Account) { a.MaxConcurrency = 2 })))
	h, l := startLimited(t, st, nil)
	a := h.admit(t)

	// Key limit: three grants, then refusals with the numbers the 429 body needs. The worker's
	// stale limit (100) loses to the control plane's current one (3).
	var leases []string
	for range 3 {
		leases = append(leases, requireGrant(t, a.acquire(t, "", keyLim("k1", 100))))
	}
	require.Len(t, map[string]bool{leases[0]: true, leases[1]: true, leases[2]: true}, 3, "lease ids are unique")
	requireRefusal(t, a.acquire(t, "", keyLim("k1", 100)), "key", 3, 3)

	// Release frees a slot.
	r := a.release(t, leases[0])
	require.True(t, r.GetGranted())
	leases[0] = requireGrant(t, a.acquire(t, "", keyLim("k1", 3)))
	requireRefusal(t, a.acquire(t, "", keyLim("k1", 3)), "key", 3, 3)

	// Account limit, all or nothing with the key's: a refusal takes no key slot.
	requireGrant(t, a.acquire(t, "", keyLim("k2", 10), accLim("a1", 2)))
	requireGrant(t, a.acquire(t, "", keyLim("k2", 10), accLim("a1", 2)))
	requireRefusal(t, a.acquire(t, "", keyLim("k2", 10), accLim("a1", 2)), "account", 2, 2)
	require.Equal(t, 2, leasesOn(t, h, l, "key", "k2"))
	require.Equal(t, 2, leasesOn(t, h, l, "account", "a1"))

	// Unknown to the control plane: the worker's limit applies.
	requireGrant(t, a.acquire(t, "", keyLim("ghost", 1)))
	requireRefusal(t, a.acquire(t, "", keyLim("ghost", 1)), "key", 1, 1)

	// No limit anywhere (the key has none): granted without a lease and without any write.
	r = a.acquire(t, "free", keyLim("free", 5))
	require.True(t, r.GetGranted())
	require.Empty(t, r.GetLeaseId())
	require.Zero(t, leasesOn(t, h, l, "key", "free"))
	w, err := l.GetWindow(ctx, "free", time.Minute, h.clock.Now())
	require.NoError(t, err)
	require.True(t, w.Start.IsZero(), "a key without a window is not counted")
}

func TestAdmitExactlyTheLimitAcrossWorkers(t *testing.T) {
	st := openStore(t)
	require.NoError(t, st.CreateKey(t.Context(), testKey("k1", func(k *crsv1.ApiKey) { k.ConcurrencyLimit = 3 })))
	h, l := startLimited(t, st, nil)

	const workers, perWorker = 3, 10
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		granted int
	)
	for range workers {
		a := h.admit(t)
		wg.Add(1)
		go func() {
			defer wg.Done()
			// All of a worker's requests are in flight at once on its one stream.
			for range perWorker {
				a.seq++
				if err := a.s.Send(&crsv1.AdmitRequest{Seq: a.seq, Op: acquireReq("", keyLim("k1", 3)).GetOp()}); err != nil {
					t.Errorf("send: %v", err)
					return
				}
			}
			seen := map[uint64]bool{}
			for range perWorker {
				r, err := a.s.Recv()
				if err != nil {
					t.Errorf("recv: %v", err)
					return
				}
				seen[r.GetSeq()] = true
				if r.GetGranted() {
					mu.Lock()
					granted++
					mu.Unlock()
				} else if r.GetRefusedScope() != "key" || r.GetCurrent() != 3 {
					t.Errorf("unexpected refusal %v", r)
				}
			}
			if len(seen) != perWorker {
				t.Errorf("answers for %d distinct seqs, want %d", len(seen), perWorker)
			}
		}()
	}
	wg.Wait()
	require.Equal(t, 3, granted)
	require.Equal(t, 3, leasesOn(t, h, l, "key", "k1"))
}

func TestAdmitLeaseExpiresUnlessRenewed(t *testing.T) {
	st := openStore(t)
	require.NoError(t, st.CreateKey(t.Context(), testKey("k1", func(k *crsv1.ApiKey) { k.ConcurrencyLimit = 1 })))
	h, _ := startLimited(t, st, nil)
	a := h.admit(t)

	first := requireGrant(t, a.acquire(t, "", keyLim("k1", 1)))
	h.clock.Advance(20 * time.Second)
	r := a.renew(t, first)
	require.True(t, r.GetGranted())
	require.Equal(t, DefaultLeaseTTL, r.GetTtl().AsDuration())
	h.clock.Advance(29 * time.Second) // 49s after the grant, 29s after the renewal
	requireRefusal(t, a.acquire(t, "", keyLim("k1", 1)), "key", 1, 1)

	h.clock.Advance(time.Second) // not renewed for a TTL: expired
	second := requireGrant(t, a.acquire(t, "", keyLim("k1", 1)))

	// Renewing the expired lease does not take the slot back; the answer names it.
	r = a.renew(t, first, second)
	require.False(t, r.GetGranted())
	require.Equal(t, RefusedLease, r.GetRefusedScope())
	require.Equal(t, first, r.GetLeaseId())
	require.Equal(t, int64(1), r.GetCurrent())
	requireRefusal(t, a.acquire(t, "", keyLim("k1", 1)), "key", 1, 1)
}

func TestAdmitDroppedStreamKeepsLeasesUntilTTL(t *testing.T) {
	st := openStore(t)
	require.NoError(t, st.CreateKey(t.Context(), testKey("k1", func(k *crsv1.ApiKey) { k.ConcurrencyLimit = 1 })))
	h, l := startLimited(t, st, func(o *Options) { o.LeaseTTL = 10 * time.Second })

	dead := h.admit(t)
	r := dead.acquire(t, "", keyLim("k1", 1))
	require.True(t, r.GetGranted())
	require.Equal(t, 10*time.Second, r.GetTtl().AsDuration(), "Options.LeaseTTL")
	held := r.GetLeaseId()
	dead.cancel() // the worker's connection drops

	// The slot stays taken: the worker may be alive and reconnecting.
	other := h.admit(t)
	for range 5 {
		r := other.acquire(t, "", keyLim("k1", 1))
		require.Equal(t, "key", r.GetRefusedScope(), "the dropped stream's lease still counts: %v", r)
		time.Sleep(10 * time.Millisecond) // let the server see the stream end
	}
	require.Equal(t, 1, leasesOn(t, h, l, "key", "k1"))

	// The reconnected worker renews it on its new stream.
	h.clock.Advance(9 * time.Second)
	require.True(t, other.renew(t, held).GetGranted())
	h.clock.Advance(9 * time.Second)
	require.Equal(t, "key", other.acquire(t, "", keyLim("k1", 1)).GetRefusedScope())

	// A worker that never comes back: its lease ends TTL after the last renewal.
	h.clock.Advance(time.Second)
	r = other.acquire(t, "", keyLim("k1", 1))
	require.True(t, r.GetGranted(), "%v", r)
	require.NotEqual(t, held, r.GetLeaseId())
}

func TestAdmitWindowRequests(t *testing.T) {
	st := openStore(t)
	ctx := t.Context()
	require.NoError(t, st.CreateKey(ctx, testKey("kw", func(k *crsv1.ApiKey) {
		k.RateLimitWindow = 1 // minute
		k.RateLimitRequests = 2
	})))
	require.NoError(t, st.CreateKey(ctx, testKey("kc", func(k *crsv1.ApiKey) {
		k.ConcurrencyLimit = 5
		k.RateLimitWindow = 10
		k.RateLimitRequests = 1
	})))
	require.NoError(t, st.CreateKey(ctx, testKey("tokens-only", func(k *crsv1.ApiKey) {
		k.RateLimitWindow = 10
		k.TokenLimit = 1000
	})))
	h, l := startLimited(t, st, nil)
	a := h.admit(t)
	start := h.clock.Now()

	for range 2 {
		r := a.acquire(t, "kw")
		require.True(t, r.GetGranted(), "%v", r)
		require.Empty(t, r.GetLeaseId(), "a window alone takes no lease")
	}
	h.clock.Advance(59 * time.Second)
	r := a.acquire(t, "kw")
	requireRefusal(t, r, RefusedWindowRequests, 2, 2)
	require.Equal(t, start.Add(time.Minute).UnixMilli(), r.GetResetAt().AsTime().UnixMilli(), "reset_at = window start + window")

	// The window ends a minute after its first request: counters reset.
	h.clock.Advance(time.Second)
	require.True(t, a.acquire(t, "kw").GetGranted())
	w, err := l.GetWindow(ctx, "kw", time.Minute, h.clock.Now())
	require.NoError(t, err)
	require.Equal(t, int64(1), w.Requests)
	require.Equal(t, h.clock.Now().UnixMilli(), w.Start.UnixMilli(), "the new window starts at its first request")

	// Concurrency first, then the window; a window refusal gives the slot back.
	requireGrant(t, a.acquire(t, "kc", keyLim("kc", 5)))
	requireRefusal(t, a.acquire(t, "kc", keyLim("kc", 5)), RefusedWindowRequests, 1, 1)
	require.Equal(t, 1, leasesOn(t, h, l, "key", "kc"))

	// A window without a request limit still counts requests (its start is the first one).
	for range 3 {
		require.True(t, a.acquire(t, "tokens-only").GetGranted())
	}
	w, err = l.GetWindow(ctx, "tokens-only", 10*time.Minute, h.clock.Now())
	require.NoError(t, err)
	require.Equal(t, int64(3), w.Requests)
}

func TestAdmitWindowStateReachesWorkers(t *testing.T) {
	st := openStore(t)
	ctx := t.Context()
	require.NoError(t, st.CreateKey(ctx, testKey("kw", func(k *crsv1.ApiKey) {
		k.RateLimitWindow = 60
		k.TokenLimit = 100000
	})))
	require.NoError(t, st.CreateKey(ctx, testKey("free", nil)))
	require.NoError(t, st.CreateAccount(ctx, testAccount("a1", nil)))
	h, _ := startLimited(t, st, nil)
	w := h.sync(t, "w")
	snap, version := w.snapshot(t)
	require.Len(t, snap.GetKeyUsage(), 1, "only the key with a window has usage state")
	require.Equal(t, "kw", snap.GetKeyUsage()[0].GetKeyId())
	require.Nil(t, snap.GetKeyUsage()[0].GetWindowStart(), "no window runs before the first request")

	a := h.admit(t)
	require.True(t, a.acquire(t, "kw").GetGranted())
	d, version := w.deltaUntil(t, version, 2*time.Second, func(d *crsv1.Delta) bool { return len(d.GetKeyUsage()) > 0 })
	ku := d.GetKeyUsage()[0]
	require.Equal(t, "kw", ku.GetKeyId())
	require.Equal(t, h.clock.Now().UnixMilli(), ku.GetWindowStart().AsTime().UnixMilli())
	require.Equal(t, int64(1), ku.GetWindowRequests())
	require.Zero(t, ku.GetWindowTokens())

	// Tokens and rated cost settle after the response, through Report.
	ack, err := report(t, h.client, &crsv1.ReportBatch{BatchId: 1, Records: []*crsv1.UsageRecord{
		sonnetRecord("r1", "kw", h.clock.Now()),
		sonnetRecord("r2", "free", h.clock.Now()),
	}})
	require.NoError(t, err)
	require.Equal(t, int32(2), ack.GetStored())
	d, _ = w.deltaUntil(t, version, 2*time.Second, func(d *crsv1.Delta) bool {
		return len(d.GetKeyUsage()) > 0 && d.GetKeyUsage()[0].GetWindowTokens() > 0
	})
	require.Len(t, d.GetKeyUsage(), 1, "keys without limits never appear")
	ku = d.GetKeyUsage()[0]
	require.Equal(t, int64(1), ku.GetWindowRequests())
	require.Equal(t, int64(1000+500+2000+1000+10000), ku.GetWindowTokens())
	require.InDelta(t, sonnetCost, ku.GetWindowCost(), 1e-12)
}

// failingLimits fails acquires, renewals and window counts while fail is set, and window
// counts alone while failWindow is set.
type failingLimits struct {
	store.LimitStore
	mu               sync.Mutex
	fail, failWindow bool
}

var errLimitsDown = errors.New("limits down")

func (f *failingLimits) set(fail, failWindow bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fail, f.failWindow = fail, failWindow
}

func (f *failingLimits) failing() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.fail
}

func (f *failingLimits) AcquireLeases(ctx context.Context, id string, ls []store.LeaseLimit, ttl time.Duration, now time.Time) (store.Acquired, error) {
	if f.failing() {
		return store.Acquired{}, errLimitsDown
	}
	return f.LimitStore.AcquireLeases(ctx, id, ls, ttl, now)
}

func (f *failingLimits) CountWindowRequest(ctx context.Context, id string, w time.Duration, limit int64, now time.Time) (store.Window, bool, error) {
	f.mu.Lock()
	fail := f.fail || f.failWindow
	f.mu.Unlock()
	if fail {
		return store.Window{}, false, errLimitsDown
	}
	return f.LimitStore.CountWindowRequest(ctx, id, w, limit, now)
}

func (f *failingLimits) RenewLeases(ctx context.Context, ids []string, ttl time.Duration, now time.Time) ([]string, error) {
	if f.failing() {
		return nil, errLimitsDown
	}
	return f.LimitStore.RenewLeases(ctx, ids, ttl, now)
}

func TestAdmitStoreFailureRefusesOnlyThatRequest(t *testing.T) {
	st := openStore(t)
	require.NoError(t, st.CreateKey(t.Context(), testKey("k1", func(k *crsv1.ApiKey) {
		k.ConcurrencyLimit = 1
		k.RateLimitWindow = 1
		k.RateLimitRequests = 10
	})))
	fl := &failingLimits{LimitStore: embedded.NewLimits(st), fail: true}
	h := start(t, st, func(o *Options) { o.Limits = fl })
	a := h.admit(t)

	requireRefusal(t, a.acquire(t, "", keyLim("k1", 1)), RefusedUnavailable, 0, 0)
	requireRefusal(t, a.acquire(t, "k1"), RefusedUnavailable, 0, 0)
	require.Equal(t, RefusedUnavailable, a.renew(t, "x").GetRefusedScope())

	fl.set(false, false)
	lease := requireGrant(t, a.acquire(t, "k1", keyLim("k1", 1)))
	require.True(t, a.release(t, lease).GetGranted())

	// The window fails after the lease was taken: the lease is given back.
	fl.set(false, true)
	requireRefusal(t, a.acquire(t, "k1", keyLim("k1", 1)), RefusedUnavailable, 0, 0)
	require.Equal(t, 0, leasesOn(t, h, fl, "key", "k1"))
}

func TestAdmitRejectsMalformedRequests(t *testing.T) {
	st := openStore(t)
	h, _ := startLimited(t, st, nil)
	tests := []struct {
		name string
		req  *crsv1.AdmitRequest
	}{
		{"no op", &crsv1.AdmitRequest{}},
		{"bad scope", acquireReq("", &crsv1.LeaseLimit{Scope: "user", Id: "u", Limit: 1})},
		{"no id", acquireReq("", keyLim("", 1))},
		{"too many limits", acquireReq("", keyLim("1", 1), keyLim("2", 1), keyLim("3", 1), keyLim("4", 1), keyLim("5", 1), keyLim("6", 1), keyLim("7", 1), keyLim("8", 1), keyLim("9", 1))},
		{"empty lease id", &crsv1.AdmitRequest{Op: &crsv1.AdmitRequest_Release{Release: &crsv1.LeaseRelease{LeaseIds: []string{"a", ""}}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := h.admit(t)
			a.send(t, tt.req)
			_, err := a.recv(t)
			require.Equal(t, codes.InvalidArgument, status.Code(err), "%v", err)
		})
	}

	t.Run("no token", func(t *testing.T) {
		a := openAdmit(t, h.dial(t, "wrong"))
		a.sendEnding(t, acquireReq("", keyLim("k", 1)))
		_, err := a.recv(t)
		require.Equal(t, codes.Unauthenticated, status.Code(err), "%v", err)
	})
	t.Run("no limit store", func(t *testing.T) {
		plain := start(t, openStore(t), nil)
		a := plain.admit(t)
		a.sendEnding(t, acquireReq("", keyLim("k", 1)))
		_, err := a.recv(t)
		require.Equal(t, codes.Unimplemented, status.Code(err), "%v", err)
	})
}

// BenchmarkAdmitAcquireRelease measures one limited request's admission cost over loopback gRPC
// on the embedded store: an acquire and a release, one after the other on one stream.
func BenchmarkAdmitAcquireRelease(b *testing.B) {
	st, err := embedded.Open(b.TempDir())
	require.NoError(b, err)
	b.Cleanup(func() { _ = st.Close() })
	require.NoError(b, st.CreateKey(b.Context(), testKey("k1", func(k *crsv1.ApiKey) { k.ConcurrencyLimit = 1 })))
	svc := New(Options{Store: st, Limits: embedded.NewLimits(st), FleetToken: testToken})
	ctx, cancel := context.WithCancel(b.Context())
	defer cancel()
	go func() { _ = svc.Run(ctx) }()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(b, err)
	gs := grpc.NewServer()
	svc.Register(gs)
	go func() { _ = gs.Serve(lis) }()
	defer gs.Stop()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithPerRPCCredentials(bearer(testToken)))
	require.NoError(b, err)
	defer conn.Close()
	s, err := crsv1.NewFleetServiceClient(conn).Admit(ctx)
	require.NoError(b, err)
	var seq uint64
	do := func(req *crsv1.AdmitRequest) *crsv1.AdmitResponse {
		seq++
		req.Seq = seq
		require.NoError(b, s.Send(req))
		r, err := s.Recv()
		require.NoError(b, err)
		return r
	}
	for b.Loop() {
		r := do(acquireReq("", keyLim("k1", 1)))
		if !r.GetGranted() {
			b.Fatalf("refused: %v", r)
		}
		do(&crsv1.AdmitRequest{Op: &crsv1.AdmitRequest_Release{Release: &crsv1.LeaseRelease{LeaseIds: []string{r.GetLeaseId()}}}})
	}
}
