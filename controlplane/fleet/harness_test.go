package fleet

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	"github.com/crsrelay/crs/controlplane/store"
	"github.com/crsrelay/crs/controlplane/store/embedded"
	crsv1 "github.com/crsrelay/crs/gen/crs/v1"
)

const testToken = "fleet-test-token"

// fakeClock is a settable clock; it starts at the real time so that store TTLs (which use the
// real clock) and service decisions agree until a test advances it.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{t: time.Now()} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// bearer is a PerRPCCredentials sending "authorization: Bearer <token>" over plaintext.
type bearer string

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(b)}, nil
}

func (bearer) RequireTransportSecurity() bool { return false }

// harness is a Service on a real gRPC server on a loopback listener, with a client.
type harness struct {
	st     store.Store
	svc    *Service
	clock  *fakeClock
	addr   string
	client crsv1.FleetServiceClient
}

// openStore opens an embedded store in a temp dir, closed when the test ends.
func openStore(t *testing.T) *embedded.Store {
	t.Helper()
	st, err := embedded.Open(t.TempDir())
	require.NoError(t, err)
	t.Cleanup(func() { _ = st.Close() })
	return st
}

// start runs a Service over st until the test ends. edit may change the options.
func start(t *testing.T, st store.Store, edit func(*Options)) *harness {
	t.Helper()
	h := &harness{st: st, clock: newFakeClock()}
	o := Options{
		Store:            st,
		Logger:           zaptest.NewLogger(t),
		TZOffsetHours:    8,
		FleetToken:       testToken,
		LegacySecret:     "legacy-secret",
		Clock:            h.clock.Now,
		CoalesceWindow:   10 * time.Millisecond,
		RecoveryInterval: 20 * time.Millisecond,
	}
	if edit != nil {
		edit(&o)
	}
	h.svc = New(o)

	ctx, cancel := context.WithCancel(context.Background())
	runDone := make(chan error, 1)
	go func() { runDone <- h.svc.Run(ctx) }()

	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	gs := grpc.NewServer()
	h.svc.Register(gs)
	go func() { _ = gs.Serve(lis) }()
	h.addr = lis.Addr().String()
	h.client = h.dial(t, testToken)

	t.Cleanup(func() {
		cancel()
		select {
		case err := <-runDone:
			require.NoError(t, err)
		case <-time.After(5 * time.Second):
			t.Error("Run did not return after its context ended")
		}
		gs.Stop()
	})
	require.Eventually(t, h.svc.Ready, 5*time.Second, 5*time.Millisecond)
	return h
}

// dial returns a client presenting token ("" = no credentials).
func (h *harness) dial(t *testing.T, token string) crsv1.FleetServiceClient {
	t.Helper()
	opts := []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	if token != "" {
		opts = append(opts, grpc.WithPerRPCCredentials(bearer(token)))
	}
	conn, err := grpc.NewClient(h.addr, opts...)
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	return crsv1.NewFleetServiceClient(conn)
}

// syncStream is a Sync stream read by a goroutine into a channel.
type syncStream struct {
	msgs chan *crsv1.SyncMessage
	errc chan error
}

func (h *harness) sync(t *testing.T, worker string) *syncStream {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	stream, err := h.client.Sync(ctx, &crsv1.SyncRequest{WorkerId: worker})
	require.NoError(t, err)
	s := &syncStream{msgs: make(chan *crsv1.SyncMessage, 1024), errc: make(chan error, 1)}
	go func() {
		for {
			m, err := stream.Recv()
			if err != nil {
				s.errc <- err
				return
			}
			s.msgs <- m
		}
	}()
	return s
}

// next returns the next message, failing after within.
func (s *syncStream) next(t *testing.T, within time.Duration) *crsv1.SyncMessage {
	t.Helper()
	select {
	case m := <-s.msgs:
		return m
	case err := <-s.errc:
		t.Fatalf("sync stream ended: %v", err)
	case <-time.After(within):
		t.Fatalf("no sync message within %v", within)
	}
	return nil
}

// snapshot returns the first message, which must be a snapshot.
func (s *syncStream) snapshot(t *testing.T) (*crsv1.Snapshot, uint64) {
	t.Helper()
	m := s.next(t, 5*time.Second)
	snap := m.GetSnapshot()
	require.NotNil(t, snap, "first sync message is not a snapshot: %v", m)
	return snap, m.GetVersion()
}

// deltaUntil reads deltas, checking the base_version chain from version, until match accepts
// one; it returns the matching delta and the version after it.
func (s *syncStream) deltaUntil(t *testing.T, version uint64, within time.Duration, match func(*crsv1.Delta) bool) (*crsv1.Delta, uint64) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			t.Fatalf("no matching delta within %v", within)
		}
		m := s.next(t, left)
		d := m.GetDelta()
		require.NotNil(t, d, "expected a delta, got %v", m)
		require.Equal(t, version, d.GetBaseVersion(), "delta base_version breaks the chain")
		require.Equal(t, version+1, m.GetVersion(), "delta version is not base+1")
		version = m.GetVersion()
		if match(d) {
			return d, version
		}
	}
}

func testKey(id string, edit func(*crsv1.ApiKey)) *store.Key {
	k := &crsv1.ApiKey{Id: id, Name: "key " + id, IsActive: true, ExpirationMode: "fixed", IsActivated: true, HashScheme: "hmac-sha256"}
	if edit != nil {
		edit(k)
	}
	return &store.Key{Key: k, Hash: "hash-" + id}
}

func testAccount(id string, edit func(*crsv1.Account)) *store.Account {
	a := &crsv1.Account{
		Id: id, Name: "account " + id, Type: "claude-official", Platform: "claude", Priority: 50,
		Status: &crsv1.AccountStatus{State: StateActive},
	}
	if edit != nil {
		edit(a)
	}
	return &store.Account{Account: a, SealedCredentials: []byte("sealed:" + id)}
}

// openTest is an OpenAccount that "opens" the fake sealing of testAccount.
func openTest(a *store.Account) (*crsv1.Account, error) {
	c := proto.Clone(a.Account).(*crsv1.Account)
	c.Credentials = &crsv1.Account_ApiKey{ApiKey: &crsv1.ApiKeyCredential{ApiKey: "sk-" + string(a.SealedCredentials)}}
	return c, nil
}
