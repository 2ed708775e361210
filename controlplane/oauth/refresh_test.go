package oauth

import (
	"context"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/crsrelay/crs/controlplane/proxyhttp"
	"github.com/crsrelay/crs/controlplane/secret"
	"github.com/crsrelay/crs/controlplane/store"
	"github.com/crsrelay/crs/controlplane/store/redisstore"
	crsv1 "github.com/crsrelay/crs/gen/crs/v1"
	"github.com/crsrelay/crs/internal/mockoauth"
	"github.com/crsrelay/crs/internal/testenv"
)

// coordStore is what the refresher needs of a backend.
type coordStore interface {
	store.Store
	store.Coordinator
}

// seed stores an OAuth account the way the admin service does: secrets sealed, public part
// without them.
func seed(t *testing.T, st store.Store, sealer *secret.Sealer, id, typ string, o *crsv1.OAuthCredential, proxy string) {
	t.Helper()
	a := &crsv1.Account{
		Id: id, Name: "acct " + id, Type: typ, Priority: 50, Proxy: proxy,
		Credentials: &crsv1.Account_Oauth{Oauth: o},
		Status:      &crsv1.AccountStatus{State: stateActive, ChangedAt: timestamppb.Now()},
	}
	sealed, err := sealer.SealCredentials(a)
	require.NoError(t, err)
	pub := proto.Clone(a).(*crsv1.Account)
	pub.GetOauth().AccessToken, pub.GetOauth().RefreshToken = "", ""
	pub.Proxy = proxyhttp.Redact(pub.Proxy)
	require.NoError(t, st.CreateAccount(t.Context(), &store.Account{Account: pub, SealedCredentials: sealed}))
}

// credentials returns the stored, opened OAuth credentials of account id and its generation.
func credentials(t *testing.T, st store.Store, sealer *secret.Sealer, id string) (*crsv1.Account, int64) {
	t.Helper()
	a, err := st.GetAccount(context.Background(), id)
	require.NoError(t, err)
	full := proto.Clone(a.Account).(*crsv1.Account)
	require.NoError(t, sealer.OpenCredentials(a.SealedCredentials, full))
	return full, a.Generation
}

func expiringIn(m *mockoauth.Server, d time.Duration) *crsv1.OAuthCredential {
	return &crsv1.OAuthCredential{
		AccessToken: "old-access", RefreshToken: m.IssueRefreshToken(),
		ExpiresAt: timestamppb.New(time.Now().Add(d)), Scopes: []string{"user:inference"},
	}
}

func newRefresher(t *testing.T, st coordStore, sealer *secret.Sealer, ps Providers, mod func(*RefresherOptions)) *Refresher {
	t.Helper()
	o := RefresherOptions{Store: st, Locks: st, Sealer: sealer, Providers: ps, Logger: zaptest.NewLogger(t), Timeout: 5 * time.Second}
	if mod != nil {
		mod(&o)
	}
	r, err := NewRefresher(o)
	require.NoError(t, err)
	return r
}

func runInBackground(t *testing.T, r *Refresher) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = r.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
}

func redisReplicas(t *testing.T, n int) []coordStore {
	t.Helper()
	url := "redis://" + testenv.StartRedis(t) + "/0"
	var out []coordStore
	for range n {
		s, err := redisstore.New(t.Context(), url)
		require.NoError(t, err)
		t.Cleanup(func() { _ = s.Close() })
		out = append(out, s)
	}
	return out
}

// requireCurrent asserts the stored refresh token is the one the mock accepts now (never a stale,
// rotated-away one) and returns the stored account.
func requireCurrent(t *testing.T, st store.Store, sealer *secret.Sealer, m *mockoauth.Server, id string) *crsv1.Account {
	t.Helper()
	full, _ := credentials(t, st, sealer, id)
	require.True(t, m.ValidRefreshToken(full.GetOauth().GetRefreshToken()), "stored refresh token is stale")
	require.True(t, m.ValidAccessToken(full.GetOauth().GetAccessToken()), "stored access token was not issued by the provider")
	return full
}

func TestRefreshOnceAcrossTwoReplicas(t *testing.T) {
	m, ps := startMock(t, mockoauth.Options{Delay: 200 * time.Millisecond})
	sealer := newSealer(t)
	replicas := redisReplicas(t, 2)
	seed(t, replicas[0], sealer, "a1", "claude-official", expiringIn(m, 2*time.Minute), "")

	for _, st := range replicas {
		runInBackground(t, newRefresher(t, st, sealer, ps, func(o *RefresherOptions) { o.Interval = 50 * time.Millisecond }))
	}
	require.Eventually(t, func() bool {
		_, gen := credentials(t, replicas[1], sealer, "a1")
		return gen == 1
	}, 5*time.Second, 20*time.Millisecond)
	time.Sleep(500 * time.Millisecond) // ten more scans on each replica

	require.Equal(t, 1, m.RefreshCalls(), "two replicas must refresh the token once")
	full := requireCurrent(t, replicas[0], sealer, m, "a1")
	require.WithinDuration(t, time.Now().Add(time.Hour), full.GetOauth().GetExpiresAt().AsTime(), 10*time.Second)
	_, gen := credentials(t, replicas[0], sealer, "a1")
	require.Equal(t, int64(1), gen, "one credential write")
	a, err := replicas[1].GetAccount(t.Context(), "a1")
	require.NoError(t, err)
	require.True(t, proto.Equal(full.GetOauth().GetExpiresAt(), a.Account.GetOauth().GetExpiresAt()), "public expiry mirrors the sealed one")
	require.Empty(t, a.Account.GetOauth().GetAccessToken(), "no secret in the public part")
	require.Equal(t, stateActive, a.Account.GetStatus().GetState())
}

// TestRefreshRaceOnDemandWhileScheduled: a worker's 401 marks the account unauthorized while a
// scheduled refresh is on the wire, on another replica. The provider rotates refresh tokens and
// refuses used ones, so any stale write or second refresh with the old token would show.
func TestRefreshRaceOnDemandWhileScheduled(t *testing.T) {
	m, ps := startMock(t, mockoauth.Options{Delay: 300 * time.Millisecond})
	sealer := newSealer(t)
	replicas := redisReplicas(t, 2)
	seed(t, replicas[0], sealer, "a1", "claude-official", expiringIn(m, 2*time.Minute), "")
	scheduled := newRefresher(t, replicas[0], sealer, ps, nil)
	onDemand := newRefresher(t, replicas[1], sealer, ps, func(o *RefresherOptions) { o.Interval = time.Hour })
	runInBackground(t, onDemand) // watches for unauthorized accounts

	done := make(chan error, 1)
	go func() { done <- scheduled.Scan(context.Background()) }()
	time.Sleep(100 * time.Millisecond) // the scheduled refresh is waiting on the provider
	require.NoError(t, replicas[1].SetAccountStatus(t.Context(), "a1", &crsv1.AccountStatus{
		State: stateUnauthorized, Reason: "credentials refused (upstream 401)", ChangedAt: timestamppb.Now(),
		Until: timestamppb.New(time.Now().Add(30 * time.Minute)),
	}))
	require.NoError(t, <-done)

	require.Eventually(t, func() bool {
		a, err := replicas[0].GetAccount(t.Context(), "a1")
		require.NoError(t, err)
		return a.Account.GetStatus().GetState() == stateActive
	}, 5*time.Second, 20*time.Millisecond, "the refresh cures the unauthorized state")
	time.Sleep(300 * time.Millisecond)
	require.Equal(t, 1, m.RefreshCalls(), "the 401 was about the token the scheduled refresh replaced")
	requireCurrent(t, replicas[0], sealer, m, "a1")
}

// TestRefreshRaceManyTriggers hammers one account with scheduled, on-demand and admin refreshes
// from two replicas; whatever the interleaving, the stored refresh token stays the current one
// and the provider never sees a used token.
func TestRefreshRaceManyTriggers(t *testing.T) {
	m, ps := startMock(t, mockoauth.Options{Delay: 20 * time.Millisecond})
	sealer := newSealer(t)
	replicas := redisReplicas(t, 2)
	seed(t, replicas[0], sealer, "a1", "claude-official", expiringIn(m, 2*time.Minute), "")
	rs := []*Refresher{
		newRefresher(t, replicas[0], sealer, ps, func(o *RefresherOptions) { o.Margin = 2 * time.Hour }),
		newRefresher(t, replicas[1], sealer, ps, func(o *RefresherOptions) { o.Margin = 2 * time.Hour }),
	}
	var wg sync.WaitGroup
	for i := range 12 {
		r := rs[i%2]
		wg.Add(1)
		go func() {
			defer wg.Done()
			if i%3 == 0 {
				_ = r.Scan(t.Context())
				return
			}
			_, err := r.Refresh(t.Context(), "a1")
			require.NoError(t, err)
		}()
	}
	wg.Wait()
	calls := m.RefreshCalls()
	require.GreaterOrEqual(t, calls, 1)
	_, gen := credentials(t, replicas[0], sealer, "a1")
	require.Equal(t, int64(calls), gen, "every provider answer was stored exactly once")
	requireCurrent(t, replicas[0], sealer, m, "a1")
	a, err := replicas[0].GetAccount(t.Context(), "a1")
	require.NoError(t, err)
	require.Equal(t, stateActive, a.Account.GetStatus().GetState(), "no refresh was refused: %s", a.Account.GetStatus().GetReason())
}

// TestRefreshConflictKeepsConcurrentEdit: an admin changes the proxy (a credential write) while
// the refresh is on the wire; the refreshed tokens are applied on top of the edit.
func TestRefreshConflictKeepsConcurrentEdit(t *testing.T) {
	m, ps := startMock(t, mockoauth.Options{Delay: 300 * time.Millisecond})
	sealer := newSealer(t)
	st := openEmbedded(t)
	seed(t, st, sealer, "a1", "claude-official", expiringIn(m, time.Minute), "")
	r := newRefresher(t, st, sealer, ps, nil)

	done := make(chan error, 1)
	go func() { done <- r.Scan(context.Background()) }()
	time.Sleep(100 * time.Millisecond)
	full, gen := credentials(t, st, sealer, "a1")
	full.Proxy = "socks5://127.0.0.1:1080"
	sealed, err := sealer.SealCredentials(full)
	require.NoError(t, err)
	_, err = st.SwapAccountCredentials(t.Context(), "a1", gen, sealed)
	require.NoError(t, err)
	require.NoError(t, <-done)

	got := requireCurrent(t, st, sealer, m, "a1")
	require.Equal(t, "socks5://127.0.0.1:1080", got.GetProxy(), "the edit survives")
	_, gen = credentials(t, st, sealer, "a1")
	require.Equal(t, int64(2), gen, "the edit, then the refresh")
}

// TestRefreshConflictNewerTokenStands: someone stores newer tokens (a re-authorization) while the
// refresh is on the wire; the late refresh result never overwrites them.
func TestRefreshConflictNewerTokenStands(t *testing.T) {
	m, ps := startMock(t, mockoauth.Options{Delay: 300 * time.Millisecond})
	sealer := newSealer(t)
	st := openEmbedded(t)
	seed(t, st, sealer, "a1", "claude-official", expiringIn(m, time.Minute), "")
	r := newRefresher(t, st, sealer, ps, nil)

	done := make(chan error, 1)
	go func() { done <- r.Scan(context.Background()) }()
	time.Sleep(100 * time.Millisecond)
	full, gen := credentials(t, st, sealer, "a1")
	full.GetOauth().AccessToken, full.GetOauth().RefreshToken = "reauth-access", "reauth-refresh"
	sealed, err := sealer.SealCredentials(full)
	require.NoError(t, err)
	_, err = st.SwapAccountCredentials(t.Context(), "a1", gen, sealed)
	require.NoError(t, err)
	require.NoError(t, <-done)

	got, gen := credentials(t, st, sealer, "a1")
	require.Equal(t, "reauth-refresh", got.GetOauth().GetRefreshToken())
	require.Equal(t, "reauth-access", got.GetOauth().GetAccessToken())
	require.Equal(t, int64(1), gen, "only the re-authorization was written")
	require.Equal(t, 1, m.RefreshCalls())
}

func TestRefreshFailures(t *testing.T) {
	type want struct {
		state    string
		contains string
		calls    int
	}
	tests := []struct {
		name    string
		expires time.Duration
		setup   func(m *mockoauth.Server, o *crsv1.OAuthCredential) (proxy string)
		want    want
	}{
		{"refused refresh token", 2 * time.Minute, func(m *mockoauth.Server, o *crsv1.OAuthCredential) string {
			o.RefreshToken = "never-issued"
			return ""
		}, want{stateUnauthorized, "token refresh failed: token endpoint answered 400 invalid_grant", 1}},
		{"provider down, token still valid", 2 * time.Minute, func(m *mockoauth.Server, _ *crsv1.OAuthCredential) string {
			m.FailNext(1, 503, `{"error":"temporarily_unavailable"}`)
			return ""
		}, want{stateActive, "", 1}},
		{"provider down, token expired", -time.Minute, func(m *mockoauth.Server, _ *crsv1.OAuthCredential) string {
			m.FailNext(1, 503, `{"error":"temporarily_unavailable"}`)
			return ""
		}, want{stateError, "token refresh failed: token endpoint answered 503 temporarily_unavailable", 1}},
		{"dead proxy", 2 * time.Minute, func(*mockoauth.Server, *crsv1.OAuthCredential) string {
			return "socks5://u:hunter2@127.0.0.1:" + strconv.Itoa(testenv.FreePort(t))
		}, want{stateError, "token refresh failed: token endpoint not reached: proxy socks5://u:REDACTED@127.0.0.1:", 0}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, ps := startMock(t, mockoauth.Options{})
			sealer := newSealer(t)
			st := openEmbedded(t)
			o := expiringIn(m, tt.expires)
			proxy := tt.setup(m, o)
			seed(t, st, sealer, "a1", "claude-official", o, proxy)
			r := newRefresher(t, st, sealer, ps, nil)

			start := time.Now()
			require.NoError(t, r.Scan(t.Context()))
			require.Less(t, time.Since(start), 3*time.Second)
			require.NoError(t, r.Scan(t.Context()), "a second scan backs off (or gives up)")
			require.Equal(t, tt.want.calls, m.RefreshCalls())
			a, err := st.GetAccount(t.Context(), "a1")
			require.NoError(t, err)
			require.Equal(t, tt.want.state, a.Account.GetStatus().GetState(), a.Account.GetStatus().GetReason())
			require.Contains(t, a.Account.GetStatus().GetReason(), tt.want.contains)
			require.NotContains(t, a.Account.GetStatus().GetReason(), "hunter2")
			_, gen := credentials(t, st, sealer, "a1")
			require.Equal(t, int64(0), gen, "nothing written")
		})
	}
}

func TestRefreshRecoversAfterTransientFailure(t *testing.T) {
	m, ps := startMock(t, mockoauth.Options{})
	sealer := newSealer(t)
	st := openEmbedded(t)
	seed(t, st, sealer, "a1", "claude-official", expiringIn(m, -time.Minute), "")
	m.FailNext(1, 502, "bad gateway")
	r := newRefresher(t, st, sealer, ps, func(o *RefresherOptions) { o.RetryMin = 10 * time.Millisecond })

	require.NoError(t, r.Scan(t.Context()))
	a, err := st.GetAccount(t.Context(), "a1")
	require.NoError(t, err)
	require.Equal(t, stateError, a.Account.GetStatus().GetState())
	require.Contains(t, a.Account.GetStatus().GetReason(), "502")

	time.Sleep(20 * time.Millisecond)
	require.NoError(t, r.Scan(t.Context()))
	a, err = st.GetAccount(t.Context(), "a1")
	require.NoError(t, err)
	require.Equal(t, stateActive, a.Account.GetStatus().GetState())
	requireCurrent(t, st, sealer, m, "a1")
}

func TestRefreshPerProvider(t *testing.T) {
	tests := []struct {
		typ         string
		contentType string
		rotates     bool
	}{
		{"claude-official", "application/json", true},
		{"openai", "application/x-www-form-urlencoded", true},
		{"gemini", "application/x-www-form-urlencoded", false},
	}
	for _, tt := range tests {
		t.Run(tt.typ, func(t *testing.T) {
			m, ps := startMock(t, mockoauth.Options{ClientSecret: geminiClientSecret})
			sealer := newSealer(t)
			st := openEmbedded(t)
			o := expiringIn(m, time.Minute)
			seed(t, st, sealer, "a1", tt.typ, o, "")
			r := newRefresher(t, st, sealer, ps, nil)
			require.NoError(t, r.Scan(t.Context()))
			require.Equal(t, 1, m.RefreshCalls())
			req := m.Requests()[0]
			require.Equal(t, tt.contentType, req.ContentType)
			require.Equal(t, o.GetRefreshToken(), req.Params["refresh_token"])
			got := requireCurrent(t, st, sealer, m, "a1")
			require.Equal(t, tt.rotates, got.GetOauth().GetRefreshToken() != o.GetRefreshToken())
			if tt.typ == "openai" {
				require.Equal(t, "openid profile email", req.Params["scope"])
				require.Equal(t, "chatgpt-acct-mock", got.GetOauth().GetProjectId())
			}
		})
	}
}

func TestRefreshSkipsWhatItMustNot(t *testing.T) {
	m, ps := startMock(t, mockoauth.Options{})
	sealer := newSealer(t)
	st := openEmbedded(t)
	setup := &crsv1.OAuthCredential{AccessToken: "setup", ExpiresAt: timestamppb.New(time.Now().Add(time.Minute))}
	seed(t, st, sealer, "setup", "claude-official", setup, "")
	seed(t, st, sealer, "fresh", "claude-official", expiringIn(m, time.Hour), "")
	seed(t, st, sealer, "blocked", "claude-official", expiringIn(m, time.Minute), "")
	require.NoError(t, st.SetAccountStatus(t.Context(), "blocked", &crsv1.AccountStatus{State: stateBlocked}))
	r := newRefresher(t, st, sealer, ps, nil)

	require.NoError(t, r.Scan(t.Context()))
	require.Zero(t, m.RefreshCalls())

	_, err := r.Refresh(t.Context(), "setup")
	require.ErrorIs(t, err, ErrNotRefreshable, "setup tokens have no refresh token")
	_, err = r.Refresh(t.Context(), "missing")
	require.ErrorIs(t, err, store.ErrNotFound)

	got, err := r.Refresh(t.Context(), "fresh")
	require.NoError(t, err, "an admin may refresh a token that is not due")
	require.Equal(t, int64(1), got.Generation)
	require.Equal(t, 1, m.RefreshCalls())
}

func TestRefreshReasonPrefixUnchanged(t *testing.T) {
	// notify recognises refresh failures by this text (controlplane/notify).
	require.Equal(t, "token refresh failed", RefreshFailedReason)
}
