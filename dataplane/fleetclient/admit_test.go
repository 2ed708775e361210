package fleetclient

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	crsv1 "github.com/crsrelay/crs/gen/crs/v1"
)

// admitFake is a FleetService whose Admit keeps leases in memory with the control plane's
// semantics (all-or-nothing acquire, TTL, renew answering the missing leases, window request
// counting), on a real gRPC server on loopback. Its lease table survives Stop/Restart, as the
// control plane's store does.
type admitFake struct {
	crsv1.UnimplementedFleetServiceServer

	addr string
	ttl  time.Duration

	mu            sync.Mutex
	gs            *grpc.Server
	unimplemented bool
	delay         map[string]time.Duration // answer delay per request id
	leases        map[string]fakeLease
	windowLimit   map[string]int64
	windowCount   map[string]int64
	renewMsgs     [][]string
	releases      map[string]int
	acquires      int
	streams       int
	// credit makes acquires with count > 1 on one limit get extra leases (all the free slots up
	// to count - 1); counts records the count of each acquire; push sends an unasked message on
	// the newest stream.
	credit bool
	counts []int32
	push   func(*crsv1.AdmitResponse) error
}

type fakeLease struct {
	limits  []*crsv1.LeaseLimit
	expires time.Time
}

func startAdmitFake(t *testing.T, ttl time.Duration) *admitFake {
	t.Helper()
	f := &admitFake{
		ttl:         ttl,
		delay:       map[string]time.Duration{},
		leases:      map[string]fakeLease{},
		windowLimit: map[string]int64{},
		windowCount: map[string]int64{},
		releases:    map[string]int{},
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	f.addr = lis.Addr().String()
	f.serve(lis)
	t.Cleanup(f.stop)
	return f
}

func (f *admitFake) serve(lis net.Listener) {
	gs := grpc.NewServer(grpc.StreamInterceptor(func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
		md, _ := metadata.FromIncomingContext(ss.Context())
		if v := md.Get("authorization"); len(v) != 1 || v[0] != "Bearer "+token {
			return status.Error(codes.Unauthenticated, "bad token")
		}
		return h(srv, ss)
	}))
	crsv1.RegisterFleetServiceServer(gs, f)
	f.mu.Lock()
	f.gs = gs
	f.mu.Unlock()
	go func() { _ = gs.Serve(lis) }()
}

func (f *admitFake) stop() {
	f.mu.Lock()
	gs := f.gs
	f.gs = nil
	f.mu.Unlock()
	if gs != nil {
		gs.Stop()
	}
}

func (f *admitFake) restart(t *testing.T) {
	t.Helper()
	var lis net.Listener
	var err error
	for range 50 {
		if lis, err = net.Listen("tcp", f.addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	require.NoError(t, err)
	f.serve(lis)
}

// held counts the unexpired leases on one limit.
func (f *admitFake) held(scope, id string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.heldLocked(scope, id, time.Now())
}

func (f *admitFake) heldLocked(scope, id string, now time.Time) int {
	n := 0
	for lid, l := range f.leases {
		if !l.expires.After(now) {
			delete(f.leases, lid)
			continue
		}
		for _, lim := range l.limits {
			if lim.GetScope() == scope && lim.GetId() == id {
				n++
			}
		}
	}
	return n
}

func (f *admitFake) Admit(stream grpc.BidiStreamingServer[crsv1.AdmitRequest, crsv1.AdmitResponse]) error {
	f.mu.Lock()
	f.streams++
	unimpl := f.unimplemented
	f.mu.Unlock()
	if unimpl {
		return status.Error(codes.Unimplemented, "no limits")
	}
	var sendMu sync.Mutex
	var wg sync.WaitGroup
	defer wg.Wait()
	f.mu.Lock()
	f.push = func(r *crsv1.AdmitResponse) error {
		sendMu.Lock()
		defer sendMu.Unlock()
		return stream.Send(r)
	}
	f.mu.Unlock()
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		f.mu.Lock()
		d := f.delay[req.GetAcquire().GetRequestId()]
		f.mu.Unlock()
		wg.Go(func() {
			time.Sleep(d)
			resp := f.answer(req)
			sendMu.Lock()
			_ = stream.Send(resp)
			sendMu.Unlock()
		})
	}
}

func (f *admitFake) answer(req *crsv1.AdmitRequest) *crsv1.AdmitResponse {
	f.mu.Lock()
	defer f.mu.Unlock()
	now := time.Now()
	resp := &crsv1.AdmitResponse{Seq: req.GetSeq(), Ttl: durationpb.New(f.ttl)}
	switch op := req.GetOp().(type) {
	case *crsv1.AdmitRequest_Acquire:
		f.acquires++
		a := op.Acquire
		f.counts = append(f.counts, a.GetCount())
		for _, l := range a.GetLimits() {
			if cur := f.heldLocked(l.GetScope(), l.GetId(), now); cur >= int(l.GetLimit()) {
				resp.RefusedScope, resp.Current, resp.Limit = l.GetScope(), int64(cur), int64(l.GetLimit())
				return resp
			}
		}
		if id := a.GetWindowKeyId(); id != "" {
			if lim := f.windowLimit[id]; lim > 0 && f.windowCount[id] >= lim {
				resp.RefusedScope, resp.Current, resp.Limit = RefusedWindowRequests, f.windowCount[id], lim
				resp.ResetAt = timestamppb.New(now.Add(time.Minute))
				return resp
			}
			f.windowCount[id]++
		}
		resp.Granted = true
		if len(a.GetLimits()) > 0 {
			resp.LeaseId = "lease-" + a.GetRequestId()
			f.leases[resp.LeaseId] = fakeLease{limits: a.GetLimits(), expires: now.Add(f.ttl)}
		}
		if l := a.GetLimits(); f.credit && a.GetCount() > 1 && len(l) == 1 && a.GetWindowKeyId() == "" {
			for i := range int(a.GetCount()) - 1 {
				if f.heldLocked(l[0].GetScope(), l[0].GetId(), now) >= int(l[0].GetLimit()) {
					break
				}
				id := fmt.Sprintf("lease-%s-x%d", a.GetRequestId(), i)
				f.leases[id] = fakeLease{limits: l, expires: now.Add(f.ttl)}
				resp.ExtraLeaseIds = append(resp.ExtraLeaseIds, id)
			}
		}
	case *crsv1.AdmitRequest_Renew:
		ids := op.Renew.GetLeaseIds()
		f.renewMsgs = append(f.renewMsgs, append([]string(nil), ids...))
		var missing []string
		for _, id := range ids {
			l, ok := f.leases[id]
			if !ok || !l.expires.After(now) {
				missing = append(missing, id)
				continue
			}
			l.expires = now.Add(f.ttl)
			f.leases[id] = l
		}
		resp.Granted = len(missing) == 0
		if len(missing) > 0 {
			resp.RefusedScope, resp.LeaseId, resp.Current = RefusedLease, strings.Join(missing, ","), int64(len(missing))
		}
	case *crsv1.AdmitRequest_Release:
		for _, id := range op.Release.GetLeaseIds() {
			f.releases[id]++
			delete(f.leases, id)
		}
		resp.Granted = true
	}
	return resp
}

func (f *admitFake) releaseCount(id string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.releases[id]
}

func newAdmitter(t *testing.T, addr string, o AdmitOptions) *Admitter {
	t.Helper()
	c, err := New(Options{Addr: addr, Token: token, Logger: zaptest.NewLogger(t), MinBackoff: 20 * time.Millisecond, MaxBackoff: 100 * time.Millisecond})
	require.NoError(t, err)
	a := NewAdmitter(c, o)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		require.NoError(t, a.Close(ctx))
		_ = c.Close()
	})
	return a
}

func keyLimit(id string, n int32) *crsv1.LeaseLimit {
	return &crsv1.LeaseLimit{Scope: RefusedKey, Id: id, Limit: n}
}

func TestAdmitAcquireRefuseRelease(t *testing.T) {
	f := startAdmitFake(t, time.Minute)
	a := newAdmitter(t, f.addr, AdmitOptions{})
	ctx := context.Background()

	var wg sync.WaitGroup
	got := make([]*crsv1.AdmitResponse, 3)
	for i := range 3 {
		wg.Go(func() {
			r, err := a.Acquire(ctx, &crsv1.LeaseAcquire{RequestId: fmt.Sprint("r", i), Limits: []*crsv1.LeaseLimit{keyLimit("k", 3)}})
			require.NoError(t, err)
			got[i] = r
		})
	}
	wg.Wait()
	for i, r := range got {
		require.True(t, r.GetGranted())
		require.Equal(t, fmt.Sprint("lease-r", i), r.GetLeaseId(), "each caller gets its own answer")
	}
	require.Equal(t, 3, a.Held())
	require.Equal(t, 3, f.held(RefusedKey, "k"))

	r, err := a.Acquire(ctx, &crsv1.LeaseAcquire{RequestId: "r3", Limits: []*crsv1.LeaseLimit{keyLimit("k", 3)}})
	require.NoError(t, err)
	require.False(t, r.GetGranted())
	require.Equal(t, RefusedKey, r.GetRefusedScope())
	require.EqualValues(t, 3, r.GetCurrent())
	require.EqualValues(t, 3, r.GetLimit())

	// Released once on the wire, however often Release is called.
	a.Release("lease-r0")
	a.Release("lease-r0", "lease-unknown")
	require.Eventually(t, func() bool { return f.held(RefusedKey, "k") == 2 }, 2*time.Second, 5*time.Millisecond)
	r, err = a.Acquire(ctx, &crsv1.LeaseAcquire{RequestId: "r4", Limits: []*crsv1.LeaseLimit{keyLimit("k", 3)}})
	require.NoError(t, err)
	require.True(t, r.GetGranted())
	require.Equal(t, 1, f.releaseCount("lease-r0"))
	require.Zero(t, f.releaseCount("lease-unknown"))
	require.Equal(t, 3, a.Held())

	// A window-only acquire holds nothing.
	f.mu.Lock()
	f.windowLimit["k"] = 1
	f.mu.Unlock()
	r, err = a.Acquire(ctx, &crsv1.LeaseAcquire{RequestId: "w1", WindowKeyId: "k"})
	require.NoError(t, err)
	require.True(t, r.GetGranted())
	require.Empty(t, r.GetLeaseId())
	r, err = a.Acquire(ctx, &crsv1.LeaseAcquire{RequestId: "w2", WindowKeyId: "k"})
	require.NoError(t, err)
	require.Equal(t, RefusedWindowRequests, r.GetRefusedScope())
	require.NotNil(t, r.GetResetAt())
	require.Equal(t, 3, a.Held())
}

// TestAdmitAnswersOutOfOrder: answers are matched by seq, not by arrival order.
func TestAdmitAnswersOutOfOrder(t *testing.T) {
	f := startAdmitFake(t, time.Minute)
	f.delay["slow"] = 300 * time.Millisecond
	a := newAdmitter(t, f.addr, AdmitOptions{})
	slow := make(chan *crsv1.AdmitResponse, 1)
	go func() {
		r, err := a.Acquire(context.Background(), &crsv1.LeaseAcquire{RequestId: "slow", Limits: []*crsv1.LeaseLimit{keyLimit("a", 5)}})
		require.NoError(t, err)
		slow <- r
	}()
	time.Sleep(50 * time.Millisecond)
	start := time.Now()
	r, err := a.Acquire(context.Background(), &crsv1.LeaseAcquire{RequestId: "fast", Limits: []*crsv1.LeaseLimit{keyLimit("b", 5)}})
	require.NoError(t, err)
	require.Less(t, time.Since(start), 200*time.Millisecond, "the fast answer does not wait behind the slow one")
	require.Equal(t, "lease-fast", r.GetLeaseId())
	require.Equal(t, "lease-slow", (<-slow).GetLeaseId())
	f.mu.Lock()
	require.Equal(t, 1, f.streams, "one stream carries every request")
	f.mu.Unlock()
}

// TestAdmitRenewsHeldLeases: held leases outlive their TTL because they are renewed, with one
// message per period carrying all of them; a released lease is no longer renewed.
func TestAdmitRenewsHeldLeases(t *testing.T) {
	f := startAdmitFake(t, 300*time.Millisecond)
	a := newAdmitter(t, f.addr, AdmitOptions{}) // renews every TTL/3 = 100ms, learned from the answers
	for i := range 3 {
		r, err := a.Acquire(context.Background(), &crsv1.LeaseAcquire{RequestId: fmt.Sprint("r", i), Limits: []*crsv1.LeaseLimit{keyLimit("k", 10)}})
		require.NoError(t, err)
		require.True(t, r.GetGranted())
	}
	time.Sleep(time.Second) // > 3 TTLs
	require.Equal(t, 3, f.held(RefusedKey, "k"), "renewed leases did not expire")
	f.mu.Lock()
	msgs := append([][]string(nil), f.renewMsgs...)
	f.mu.Unlock()
	require.GreaterOrEqual(t, len(msgs), 5)
	require.LessOrEqual(t, len(msgs), 15, "one renew message per period")
	require.Len(t, msgs[len(msgs)-1], 3, "one message renews every held lease")

	a.Release("lease-r0", "lease-r1", "lease-r2")
	require.Eventually(t, func() bool { return f.held(RefusedKey, "k") == 0 }, time.Second, 5*time.Millisecond)
	f.mu.Lock()
	n := len(f.renewMsgs)
	f.mu.Unlock()
	time.Sleep(300 * time.Millisecond)
	f.mu.Lock()
	require.Equal(t, n, len(f.renewMsgs), "nothing held, nothing renewed")
	f.mu.Unlock()
}

// TestAdmitLostLease: a lease the control plane no longer holds is dropped on renewal.
func TestAdmitLostLease(t *testing.T) {
	f := startAdmitFake(t, time.Minute)
	a := newAdmitter(t, f.addr, AdmitOptions{RenewEvery: 50 * time.Millisecond})
	_, err := a.Acquire(context.Background(), &crsv1.LeaseAcquire{RequestId: "r", Limits: []*crsv1.LeaseLimit{keyLimit("k", 1)}})
	require.NoError(t, err)
	f.mu.Lock()
	delete(f.leases, "lease-r") // expired during an outage, say
	f.mu.Unlock()
	require.Eventually(t, func() bool { return a.Held() == 0 }, 2*time.Second, 10*time.Millisecond)
	require.EqualValues(t, 1, a.lost.Get())
	a.Release("lease-r")
	time.Sleep(50 * time.Millisecond)
	require.Zero(t, f.releaseCount("lease-r"), "a lost lease is not released")
}

// TestAdmitStreamDown: while the control plane is unreachable, Acquire waits Wait and fails;
// after it is back, leases held across the outage are renewed at once and releases queued
// during it are delivered.
func TestAdmitStreamDown(t *testing.T) {
	f := startAdmitFake(t, 2*time.Second)
	a := newAdmitter(t, f.addr, AdmitOptions{Wait: 300 * time.Millisecond, RenewEvery: time.Hour})
	ctx := context.Background()
	for _, id := range []string{"keep", "drop"} {
		r, err := a.Acquire(ctx, &crsv1.LeaseAcquire{RequestId: id, Limits: []*crsv1.LeaseLimit{keyLimit("k", 5)}})
		require.NoError(t, err)
		require.True(t, r.GetGranted())
	}

	f.stop()
	require.Eventually(t, func() bool { return !a.up() }, 2*time.Second, 5*time.Millisecond)
	start := time.Now()
	_, err := a.Acquire(ctx, &crsv1.LeaseAcquire{RequestId: "x", Limits: []*crsv1.LeaseLimit{keyLimit("k", 5)}})
	require.ErrorIs(t, err, ErrAdmitUnavailable)
	require.InDelta(t, 300, float64(time.Since(start).Milliseconds()), 150, "waits Wait, then gives up")
	a.Release("lease-drop") // queued

	f.restart(t)
	require.Eventually(t, func() bool { return f.releaseCount("lease-drop") == 1 }, 3*time.Second, 10*time.Millisecond)
	f.mu.Lock()
	renews := f.renewMsgs
	f.mu.Unlock()
	require.NotEmpty(t, renews, "renewed on reconnect, not a renewal period later")
	require.Equal(t, []string{"lease-keep"}, renews[len(renews)-1])
	r, err := a.Acquire(ctx, &crsv1.LeaseAcquire{RequestId: "y", Limits: []*crsv1.LeaseLimit{keyLimit("k", 5)}})
	require.NoError(t, err)
	require.True(t, r.GetGranted())
}

// TestAdmitWaitsForTheStream: an Acquire issued while the stream is down is served as soon as
// it is back, within Wait.
func TestAdmitWaitsForTheStream(t *testing.T) {
	f := startAdmitFake(t, time.Minute)
	a := newAdmitter(t, f.addr, AdmitOptions{Wait: 3 * time.Second})
	_, err := a.Acquire(context.Background(), &crsv1.LeaseAcquire{RequestId: "a", WindowKeyId: "k"})
	require.NoError(t, err)
	f.stop()
	require.Eventually(t, func() bool { return !a.up() }, 2*time.Second, 5*time.Millisecond)
	go func() {
		time.Sleep(300 * time.Millisecond)
		f.restart(t)
	}()
	r, err := a.Acquire(context.Background(), &crsv1.LeaseAcquire{RequestId: "b", WindowKeyId: "k"})
	require.NoError(t, err)
	require.True(t, r.GetGranted())
}

func TestAdmitUnimplemented(t *testing.T) {
	f := startAdmitFake(t, time.Minute)
	f.unimplemented = true
	a := newAdmitter(t, f.addr, AdmitOptions{Wait: 200 * time.Millisecond})
	_, err := a.Acquire(context.Background(), &crsv1.LeaseAcquire{RequestId: "a", Limits: []*crsv1.LeaseLimit{keyLimit("k", 1)}})
	require.ErrorIs(t, err, ErrAdmitUnavailable)
	require.EqualValues(t, 1, a.unavailable.Get())
}

// TestAdmitAbandonedGrantIsReleased: a grant that arrives after the caller gave up is released
// at once, since no request will.
func TestAdmitAbandonedGrantIsReleased(t *testing.T) {
	f := startAdmitFake(t, time.Minute)
	f.delay["late"] = 300 * time.Millisecond
	a := newAdmitter(t, f.addr, AdmitOptions{AnswerTimeout: 100 * time.Millisecond})
	_, err := a.Acquire(context.Background(), &crsv1.LeaseAcquire{RequestId: "late", Limits: []*crsv1.LeaseLimit{keyLimit("k", 1)}})
	require.ErrorIs(t, err, ErrAdmitUnavailable)
	require.Eventually(t, func() bool { return f.releaseCount("lease-late") == 1 }, 2*time.Second, 10*time.Millisecond)
	require.Zero(t, f.held(RefusedKey, "k"))
	require.Zero(t, a.Held())

	ctx, cancel := context.WithCancel(context.Background())
	f.delay["cancelled"] = 200 * time.Millisecond
	go func() { time.Sleep(50 * time.Millisecond); cancel() }()
	_, err = a.Acquire(ctx, &crsv1.LeaseAcquire{RequestId: "cancelled", Limits: []*crsv1.LeaseLimit{keyLimit("k", 1)}})
	require.ErrorIs(t, err, context.Canceled)
	require.Eventually(t, func() bool { return f.releaseCount("lease-cancelled") == 1 }, 2*time.Second, 10*time.Millisecond)
}

func TestAdmitClose(t *testing.T) {
	f := startAdmitFake(t, time.Minute)
	c, err := New(Options{Addr: f.addr, Token: token, Logger: zaptest.NewLogger(t)})
	require.NoError(t, err)
	defer c.Close()

	unused := NewAdmitter(c, AdmitOptions{})
	require.NoError(t, unused.Close(context.Background()))
	_, err = unused.Acquire(context.Background(), &crsv1.LeaseAcquire{RequestId: "a", WindowKeyId: "k"})
	require.ErrorIs(t, err, ErrAdmitClosed)
	f.mu.Lock()
	require.Zero(t, f.streams, "a worker without limited keys never opens the stream")
	f.mu.Unlock()

	a := NewAdmitter(c, AdmitOptions{})
	_, err = a.Acquire(context.Background(), &crsv1.LeaseAcquire{RequestId: "b", Limits: []*crsv1.LeaseLimit{keyLimit("k", 1)}})
	require.NoError(t, err)
	a.Release("lease-b")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	require.NoError(t, a.Close(ctx))
	require.Equal(t, 1, f.releaseCount("lease-b"), "the release sent before Close reached the control plane")
	_, err = a.Acquire(context.Background(), &crsv1.LeaseAcquire{RequestId: "c", WindowKeyId: "k"})
	require.ErrorIs(t, err, ErrAdmitClosed)
}
