package fleet

import (
	"context"
	"errors"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/crsrelay/crs/controlplane/store"
	crsv1 "github.com/crsrelay/crs/gen/crs/v1"
)

func TestSyncSnapshotThenDeltas(t *testing.T) {
	st := openStore(t)
	ctx := t.Context()
	require.NoError(t, st.CreateKey(ctx, testKey("k1", nil)))
	require.NoError(t, st.CreateAccount(ctx, testAccount("a1", nil)))
	require.NoError(t, st.CreateGroup(ctx, &crsv1.AccountGroup{Id: "g1", Name: "group", Platform: "claude", AccountIds: []string{"a1"}}))
	h := start(t, st, func(o *Options) { o.OpenAccount = openTest })

	w := h.sync(t, "worker-1")
	snap, version := w.snapshot(t)
	require.Equal(t, uint64(1), version)
	require.Len(t, snap.GetKeys(), 1)
	require.Equal(t, "hash-k1", snap.GetKeys()[0].GetHash())
	require.Equal(t, "k1", snap.GetKeys()[0].GetKey().GetId())
	require.Len(t, snap.GetAccounts(), 1)
	require.Equal(t, "sk-sealed:a1", snap.GetAccounts()[0].GetApiKey().GetApiKey(), "credentials are opened")
	require.Len(t, snap.GetGroups(), 1)
	require.Equal(t, time.Hour, snap.GetSettings().GetStickySessionTtl().AsDuration(), "default settings")
	secret, err := st.GetSecret(ctx, HMACSecretName)
	require.NoError(t, err)
	require.Len(t, secret, 32)
	require.Equal(t, secret, snap.GetHashing().GetHmacSecret())
	require.Equal(t, "legacy-secret", snap.GetHashing().GetLegacySecret())
	require.Empty(t, snap.GetKeyUsage(), "no key has a cost limit")

	// Each mutation reaches the worker as a delta within a second, chained on base_version.
	began := time.Now()
	require.NoError(t, st.CreateKey(ctx, testKey("k2", nil)))
	d, version := w.deltaUntil(t, version, time.Second, func(d *crsv1.Delta) bool { return len(d.GetUpsertKeys()) > 0 })
	require.Equal(t, "k2", d.GetUpsertKeys()[0].GetKey().GetId())
	require.Less(t, time.Since(began), time.Second)

	require.NoError(t, st.DeleteGroup(ctx, "g1"))
	d, version = w.deltaUntil(t, version, time.Second, func(d *crsv1.Delta) bool { return len(d.GetDeleteGroupIds()) > 0 })
	require.Equal(t, []string{"g1"}, d.GetDeleteGroupIds())

	require.NoError(t, st.PutSettings(ctx, &crsv1.Settings{ClaudeCodeOnlyEnabled: true, StickySessionTtl: durationpb.New(2 * time.Hour)}))
	d, version = w.deltaUntil(t, version, time.Second, func(d *crsv1.Delta) bool { return d.GetSettings() != nil })
	require.True(t, d.GetSettings().GetClaudeCodeOnlyEnabled())

	a := testAccount("a1", func(a *crsv1.Account) { a.Name = "renamed" })
	require.NoError(t, st.UpdateAccount(ctx, a))
	d, version = w.deltaUntil(t, version, time.Second, func(d *crsv1.Delta) bool { return len(d.GetUpsertAccounts()) > 0 })
	require.Equal(t, "renamed", d.GetUpsertAccounts()[0].GetName())
	require.Equal(t, "sk-sealed:a1", d.GetUpsertAccounts()[0].GetApiKey().GetApiKey())

	require.NoError(t, st.DeleteKey(ctx, "k1"))
	d, version = w.deltaUntil(t, version, time.Second, func(d *crsv1.Delta) bool { return len(d.GetDeleteKeyIds()) > 0 })
	require.Equal(t, []string{"k1"}, d.GetDeleteKeyIds())

	// A burst of changes is coalesced: fewer deltas than changes, every key delivered, chain intact.
	const burst = 30
	for i := range burst {
		require.NoError(t, st.CreateKey(ctx, testKey(fmt.Sprintf("burst-%02d", i), nil)))
	}
	seen := map[string]bool{}
	deltas := 0
	_, version = w.deltaUntil(t, version, 2*time.Second, func(d *crsv1.Delta) bool {
		deltas++
		for _, k := range d.GetUpsertKeys() {
			seen[k.GetKey().GetId()] = true
		}
		return len(seen) == burst
	})
	require.Less(t, deltas, burst, "changes were not coalesced")
	require.Equal(t, version, h.svc.Version())

	// A worker connecting now gets everything in its snapshot, at the current version.
	w2 := h.sync(t, "worker-2")
	snap2, v2 := w2.snapshot(t)
	require.Equal(t, version, v2)
	require.Len(t, snap2.GetKeys(), burst+1) // k2 and the burst; k1 was deleted
	require.Empty(t, snap2.GetGroups())
	require.True(t, snap2.GetSettings().GetClaudeCodeOnlyEnabled())
	require.Equal(t, "renamed", snap2.GetAccounts()[0].GetName())
}

func TestSyncNoDeltaForNoOpChange(t *testing.T) {
	st := openStore(t)
	require.NoError(t, st.CreateKey(t.Context(), testKey("k1", nil)))
	h := start(t, st, nil)
	w := h.sync(t, "w")
	_, version := w.snapshot(t)

	// Rewriting a key unchanged publishes a change but there is nothing to push.
	require.NoError(t, st.UpdateKey(t.Context(), testKey("k1", nil)))
	require.NoError(t, st.CreateKey(t.Context(), testKey("k2", nil)))
	d, _ := w.deltaUntil(t, version, time.Second, func(*crsv1.Delta) bool { return true })
	require.Len(t, d.GetUpsertKeys(), 1)
	require.Equal(t, "k2", d.GetUpsertKeys()[0].GetKey().GetId())
}

// deafStore is a store whose Watch never delivers anything, as if every notification were lost.
type deafStore struct{ store.Store }

func (deafStore) Watch(ctx context.Context) (<-chan store.Change, error) {
	ch := make(chan store.Change)
	go func() { <-ctx.Done(); close(ch) }()
	return ch, nil
}

func TestSyncFullReloadHealsMissedChanges(t *testing.T) {
	st := openStore(t)
	h := start(t, deafStore{st}, func(o *Options) { o.ResyncInterval = 100 * time.Millisecond })
	w := h.sync(t, "w")
	_, version := w.snapshot(t)

	require.NoError(t, st.CreateKey(t.Context(), testKey("k1", nil)))
	require.NoError(t, st.CreateGroup(t.Context(), &crsv1.AccountGroup{Id: "g1", Name: "g", Platform: "claude"}))
	d, version := w.deltaUntil(t, version, 2*time.Second, func(d *crsv1.Delta) bool { return len(d.GetUpsertKeys()) > 0 })
	require.Equal(t, "k1", d.GetUpsertKeys()[0].GetKey().GetId())
	if len(d.GetUpsertGroups()) == 0 {
		d, _ = w.deltaUntil(t, version, 2*time.Second, func(d *crsv1.Delta) bool { return len(d.GetUpsertGroups()) > 0 })
	}
	require.Equal(t, "g1", d.GetUpsertGroups()[0].GetId())

	require.NoError(t, st.DeleteKey(t.Context(), "k1"))
	_, _ = w.deltaUntil(t, h.svc.Version(), 2*time.Second, func(d *crsv1.Delta) bool { return len(d.GetDeleteKeyIds()) > 0 })
}

func TestSyncSlowStreamIsClosed(t *testing.T) {
	s := New(Options{StreamQueue: 2, FleetToken: "x"})
	s.cache = &cache{keys: map[string]*crsv1.WorkerKey{}, accounts: map[string]*crsv1.Account{},
		groups: map[string]*crsv1.AccountGroup{}, usage: map[string]*crsv1.KeyUsageState{}, settings: defaultSettings()}
	s.version = 1
	sub, snap, err := s.subscribe("slow")
	require.NoError(t, err)
	require.Equal(t, uint64(1), snap.GetVersion())
	for i := range 3 { // one more than the queue holds
		s.apply(&patch{keys: map[string]*crsv1.WorkerKey{fmt.Sprint(i): {Hash: "h", Key: &crsv1.ApiKey{Id: fmt.Sprint(i)}}}})
	}
	var got int
	for range sub.ch {
		got++
	}
	require.Equal(t, 2, got, "the queued deltas are still delivered before the close")
	require.ErrorIs(t, sub.err, errFellBehind)
	require.Equal(t, codes.ResourceExhausted, status.Code(sub.err))
	s.mu.RLock()
	require.Empty(t, s.subs)
	s.mu.RUnlock()
}

func TestSyncEndsWhenServiceStops(t *testing.T) {
	st := openStore(t)
	h := start(t, st, nil)
	w := h.sync(t, "w")
	w.snapshot(t)
	h.svc.closeAll()
	select {
	case err := <-w.errc:
		require.Equal(t, codes.Unavailable, status.Code(err))
	case <-time.After(2 * time.Second):
		t.Fatal("stream did not end")
	}
	// New streams are refused while stopping.
	stream, err := h.client.Sync(t.Context(), &crsv1.SyncRequest{})
	require.NoError(t, err)
	_, err = stream.Recv()
	require.Equal(t, codes.Unavailable, status.Code(err))
}

func TestAuth(t *testing.T) {
	st := openStore(t)
	require.NoError(t, st.CreateAccount(t.Context(), testAccount("a1", nil)))
	h := start(t, st, nil)
	for name, token := range map[string]string{"wrong token": "not-the-token", "no token": ""} {
		t.Run(name, func(t *testing.T) {
			c := h.dial(t, token)
			stream, err := c.Sync(t.Context(), &crsv1.SyncRequest{WorkerId: "w"})
			require.NoError(t, err)
			_, err = stream.Recv()
			require.Equal(t, codes.Unauthenticated, status.Code(err), "sync: %v", err)

			_, err = c.Bind(t.Context(), &crsv1.BindRequest{SessionHash: "s", Platform: "claude", AccountId: "a1"})
			require.Equal(t, codes.Unauthenticated, status.Code(err), "bind: %v", err)

			rs, err := c.Report(t.Context())
			require.NoError(t, err)
			// The server may end the stream before reading: Send then sees io.EOF, Recv the status.
			if err := rs.Send(&crsv1.ReportBatch{BatchId: 1}); err != nil {
				require.ErrorIs(t, err, io.EOF)
			}
			_, err = rs.Recv()
			require.Equal(t, codes.Unauthenticated, status.Code(err), "report: %v", err)
		})
	}
	t.Run("no token configured refuses everything", func(t *testing.T) {
		s := New(Options{})
		require.ErrorIs(t, s.authorize(t.Context()), errUnauthenticated)
	})
	t.Run("right token", func(t *testing.T) {
		_, err := h.client.Bind(t.Context(), &crsv1.BindRequest{SessionHash: "s", Platform: "claude", AccountId: "a1"})
		require.NoError(t, err)
	})
}

func TestAdmitUnimplemented(t *testing.T) {
	h := start(t, openStore(t), nil)
	stream, err := h.client.Admit(t.Context())
	require.NoError(t, err)
	_, err = stream.Recv()
	require.Equal(t, codes.Unimplemented, status.Code(err))
}

func TestRunRetriesInitialLoad(t *testing.T) {
	st := openStore(t)
	fs := &flakyStore{Store: st, failures: 1}
	h := start(t, fs, nil)
	require.True(t, h.svc.Ready())
	require.Equal(t, 0, fs.remaining())
}

// flakyStore fails ListKeys a few times.
type flakyStore struct {
	store.Store
	failures int
}

func (f *flakyStore) remaining() int { return f.failures }

func (f *flakyStore) ListKeys(ctx context.Context) ([]*store.Key, error) {
	if f.failures > 0 {
		f.failures--
		return nil, errors.New("store down")
	}
	return f.Store.ListKeys(ctx)
}

func TestSyncAccountWhoseCredentialsDoNotOpen(t *testing.T) {
	st := openStore(t)
	require.NoError(t, st.CreateAccount(t.Context(), testAccount("good", nil)))
	require.NoError(t, st.CreateAccount(t.Context(), testAccount("bad", nil)))
	oauth := testAccount("oauth", nil)
	oauth.Generation = 3
	require.NoError(t, st.CreateAccount(t.Context(), oauth))
	h := start(t, st, func(o *Options) {
		o.OpenAccount = func(a *store.Account) (*crsv1.Account, error) {
			switch a.Account.GetId() {
			case "bad":
				return nil, errors.New("message authentication failed")
			case "oauth":
				c := proto.Clone(a.Account).(*crsv1.Account)
				c.Credentials = &crsv1.Account_Oauth{Oauth: &crsv1.OAuthCredential{AccessToken: "at"}}
				return c, nil
			}
			return openTest(a)
		}
	})
	snap, _ := h.sync(t, "w").snapshot(t)
	byID := map[string]*crsv1.Account{}
	for _, a := range snap.GetAccounts() {
		byID[a.GetId()] = a
	}
	require.Equal(t, StateActive, byID["good"].GetStatus().GetState())
	require.Equal(t, StateError, byID["bad"].GetStatus().GetState(), "not schedulable")
	require.Nil(t, byID["bad"].GetCredentials())
	require.Contains(t, byID["bad"].GetStatus().GetReason(), "cannot be opened")
	require.Equal(t, int64(3), byID["oauth"].GetOauth().GetGeneration())
	require.Equal(t, "at", byID["oauth"].GetOauth().GetAccessToken())
}
