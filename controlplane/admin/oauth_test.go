package admin

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/crsrelay/crs/controlplane/notify"
	"github.com/crsrelay/crs/controlplane/oauth"
	"github.com/crsrelay/crs/controlplane/secret"
	"github.com/crsrelay/crs/controlplane/store/embedded"
	crsv1 "github.com/crsrelay/crs/gen/crs/v1"
	"github.com/crsrelay/crs/internal/mockoauth"
)

// oauthFixture is an admin service on a real (embedded) store with OAuth flows, a refresher and
// notifications wired as cmd/crs wires them, against a mock token server.
type oauthFixture struct {
	svc    *Service
	st     *embedded.Store
	sealer *secret.Sealer
	mock   *mockoauth.Server
}

func newOAuthFixture(t *testing.T) *oauthFixture {
	t.Helper()
	st, err := embedded.Open(t.TempDir())
	require.NoError(t, err)
	t.Cleanup(func() { _ = st.Close() })
	key, err := secret.GenerateKey()
	require.NoError(t, err)
	sealer, err := secret.NewSealer(key)
	require.NoError(t, err)

	m := mockoauth.New(mockoauth.Options{})
	srv := httptest.NewServer(m)
	t.Cleanup(srv.Close)
	ps := oauth.DefaultProviders()
	for name, path := range map[string]string{
		oauth.ProviderClaude: mockoauth.ClaudePath, oauth.ProviderClaudeSetup: mockoauth.ClaudePath,
		oauth.ProviderOpenAI: mockoauth.OpenAIPath, oauth.ProviderGemini: mockoauth.GooglePath,
	} {
		p := ps[name]
		p.TokenURL = srv.URL + path
		ps[name] = p
	}
	flows, err := oauth.NewFlows(oauth.FlowOptions{Providers: ps, Sessions: st, Sealer: sealer})
	require.NoError(t, err)
	refresher, err := oauth.NewRefresher(oauth.RefresherOptions{Store: st, Locks: st, Sealer: sealer, Providers: ps, Logger: zaptest.NewLogger(t)})
	require.NoError(t, err)
	targets := notify.NewTargetStore(st, sealer)
	notifier, err := notify.New(notify.Options{Targets: targets, Backoff: 10 * time.Millisecond, Logger: zaptest.NewLogger(t)})
	require.NoError(t, err)

	hmac, err := LoadKeyHMACSecret(context.Background(), st)
	require.NoError(t, err)
	svc, err := New(Options{
		Store: st, Sealer: sealer, HMACSecret: hmac, Logger: zaptest.NewLogger(t),
		OAuth: flows, Refresher: refresher, Notifications: targets, Notifier: notifier,
	})
	require.NoError(t, err)
	return &oauthFixture{svc: svc, st: st, sealer: sealer, mock: m}
}

// authorize starts a flow and plays the operator's browser: it returns the session and a code.
func (f *oauthFixture) authorize(t *testing.T, provider string) (session, code string) {
	t.Helper()
	resp, err := f.svc.StartOAuth(t.Context(), &crsv1.StartOAuthRequest{Provider: provider})
	require.NoError(t, err)
	u, err := url.Parse(resp.GetAuthUrl())
	require.NoError(t, err)
	require.NotEmpty(t, resp.GetInstructions())
	require.WithinDuration(t, time.Now().Add(10*time.Minute), resp.GetExpiresAt().AsTime(), 5*time.Second)
	return resp.GetSessionId(), f.mock.IssueCode(u.Query().Get("code_challenge"))
}

// sealed returns account id's stored credentials, opened.
func (f *oauthFixture) sealed(t *testing.T, id string) (*crsv1.OAuthCredential, int64) {
	t.Helper()
	a, err := f.st.GetAccount(t.Context(), id)
	require.NoError(t, err)
	full := proto.Clone(a.Account).(*crsv1.Account)
	require.NoError(t, f.sealer.OpenCredentials(a.SealedCredentials, full))
	return full.GetOauth(), a.Generation
}

func TestOAuthExchangeCreatesWorkingAccount(t *testing.T) {
	f := newOAuthFixture(t)
	session, code := f.authorize(t, oauth.ProviderClaude)

	a, err := f.svc.ExchangeOAuthCode(t.Context(), &crsv1.ExchangeOAuthCodeRequest{
		SessionId: session, Code: code + "#ignored-state-suffix",
		Account: &crsv1.Account{Name: "team max", Priority: 10},
	})
	requireCode(t, err, codes.InvalidArgument, "state does not match")
	require.Zero(t, f.mock.ExchangeCalls(), "a code for another flow never reaches the provider")

	a, err = f.svc.ExchangeOAuthCode(t.Context(), &crsv1.ExchangeOAuthCodeRequest{
		SessionId: session, CallbackUrl: "https://platform.claude.com/oauth/code/callback?code=" + code,
		Account: &crsv1.Account{Name: "team max", Priority: 10},
	})
	require.NoError(t, err)
	require.Equal(t, "claude-official", a.GetType())
	require.Equal(t, "claude", a.GetPlatform())
	require.Equal(t, int32(10), a.GetPriority())
	require.Equal(t, "active", a.GetStatus().GetState())
	require.Equal(t, "OAuth (claude) account of user@example.com", a.GetDescription())
	o := a.GetOauth()
	require.Empty(t, o.GetAccessToken(), "secrets never come back")
	require.Empty(t, o.GetRefreshToken())
	require.Equal(t, []string{"user:inference", "user:profile"}, o.GetScopes())
	require.WithinDuration(t, time.Now().Add(time.Hour), o.GetExpiresAt().AsTime(), 10*time.Second)
	require.Equal(t, int64(0), o.GetGeneration(), "as CreateAccount makes it; the first refresh makes it 1")

	cred, gen := f.sealed(t, a.GetId())
	require.Equal(t, int64(0), gen)
	require.True(t, f.mock.ValidAccessToken(cred.GetAccessToken()), "the sealed token is the provider's")
	require.True(t, f.mock.ValidRefreshToken(cred.GetRefreshToken()))

	_, err = f.svc.ExchangeOAuthCode(t.Context(), &crsv1.ExchangeOAuthCodeRequest{SessionId: session, Code: code, Account: &crsv1.Account{Name: "again"}})
	requireCode(t, err, codes.NotFound, "oauth session not found or expired")

	refreshed, err := f.svc.RefreshAccountToken(t.Context(), &crsv1.RefreshAccountTokenRequest{Id: a.GetId()})
	require.NoError(t, err)
	require.Equal(t, int64(1), refreshed.GetOauth().GetGeneration())
	cred2, _ := f.sealed(t, a.GetId())
	require.NotEqual(t, cred.GetRefreshToken(), cred2.GetRefreshToken(), "the mock rotates refresh tokens")
	require.True(t, f.mock.ValidRefreshToken(cred2.GetRefreshToken()))
	require.False(t, f.mock.ValidRefreshToken(cred.GetRefreshToken()))
	require.Equal(t, 1, f.mock.RefreshCalls())
}

func TestOAuthExchangeValidatesBeforeSpendingTheCode(t *testing.T) {
	f := newOAuthFixture(t)
	session, code := f.authorize(t, oauth.ProviderOpenAI)

	_, err := f.svc.ExchangeOAuthCode(t.Context(), &crsv1.ExchangeOAuthCodeRequest{SessionId: session, Code: code,
		Account: &crsv1.Account{Priority: 500}})
	requireCode(t, err, codes.InvalidArgument, "account.name: required")
	requireCode(t, err, codes.InvalidArgument, "account.priority")
	_, err = f.svc.ExchangeOAuthCode(t.Context(), &crsv1.ExchangeOAuthCodeRequest{SessionId: session, Code: code,
		Account: &crsv1.Account{Name: "x", Credentials: &crsv1.Account_ApiKey{ApiKey: &crsv1.ApiKeyCredential{ApiKey: "k"}}}})
	requireCode(t, err, codes.InvalidArgument, "account.credentials")
	_, err = f.svc.ExchangeOAuthCode(t.Context(), &crsv1.ExchangeOAuthCodeRequest{SessionId: session})
	requireCode(t, err, codes.InvalidArgument, "code or callback_url is required")
	require.Zero(t, f.mock.ExchangeCalls())

	a, err := f.svc.ExchangeOAuthCode(t.Context(), &crsv1.ExchangeOAuthCodeRequest{
		SessionId: session, CallbackUrl: "http://localhost:1455/auth/callback?code=" + code + "&scope=openid",
		Account: &crsv1.Account{Name: "codex"},
	})
	require.NoError(t, err, "the session survived the refused attempts")
	require.Equal(t, "openai", a.GetType())
	require.Equal(t, "chatgpt-acct-mock", a.GetOauth().GetProjectId())
}

func TestOAuthErrors(t *testing.T) {
	f := newOAuthFixture(t)
	_, err := f.svc.StartOAuth(t.Context(), &crsv1.StartOAuthRequest{Provider: "cookie"})
	requireCode(t, err, codes.InvalidArgument, "provider: must be one of claude, claude-setup-token, gemini, openai")
	_, err = f.svc.StartOAuth(t.Context(), &crsv1.StartOAuthRequest{Provider: "claude", Proxy: "ftp://x:1"})
	requireCode(t, err, codes.InvalidArgument, "proxy")

	session, _ := f.authorize(t, oauth.ProviderClaude)
	_, err = f.svc.ExchangeOAuthCode(t.Context(), &crsv1.ExchangeOAuthCodeRequest{SessionId: session, Code: "not_the_right_code", Account: &crsv1.Account{Name: "x"}})
	requireCode(t, err, codes.FailedPrecondition, "the provider refused: exchange code: token endpoint answered 400 invalid_grant")
	_, err = f.svc.ExchangeOAuthCode(t.Context(), &crsv1.ExchangeOAuthCodeRequest{SessionId: session, Code: "bad code", Account: &crsv1.Account{Name: "x"}})
	requireCode(t, err, codes.InvalidArgument, "code: oauth: bad authorization code")

	_, err = f.svc.RefreshAccountToken(t.Context(), &crsv1.RefreshAccountTokenRequest{Id: "nope"})
	requireCode(t, err, codes.NotFound, "account nope not found")
	console, err := f.svc.CreateAccount(t.Context(), &crsv1.CreateAccountRequest{Account: &crsv1.Account{
		Name: "console", Type: "claude-console", BaseUrl: "https://api.example.com",
		Credentials: &crsv1.Account_ApiKey{ApiKey: &crsv1.ApiKeyCredential{ApiKey: "sk"}},
	}})
	require.NoError(t, err)
	_, err = f.svc.RefreshAccountToken(t.Context(), &crsv1.RefreshAccountTokenRequest{Id: console.GetId()})
	requireCode(t, err, codes.FailedPrecondition, "cannot be refreshed")

	off := newFixture(t) // no OAuth configured
	_, err = off.svc.StartOAuth(t.Context(), &crsv1.StartOAuthRequest{Provider: "claude"})
	requireCode(t, err, codes.FailedPrecondition, "oauth is not configured")
}

func TestOAuthReauthorizeExistingAccount(t *testing.T) {
	f := newOAuthFixture(t)
	a, err := f.svc.CreateAccount(t.Context(), &crsv1.CreateAccountRequest{Account: &crsv1.Account{
		Name: "old", Type: "claude-official", Proxy: "socks5://u:pw@127.0.0.1:1080",
		Credentials: &crsv1.Account_Oauth{Oauth: &crsv1.OAuthCredential{AccessToken: "dead", RefreshToken: "dead"}},
	}})
	require.NoError(t, err)
	require.NoError(t, f.st.SetAccountStatus(t.Context(), a.GetId(), &crsv1.AccountStatus{
		State: "unauthorized", Reason: "token refresh failed: invalid_grant", ChangedAt: timestamppb.Now(),
	}))
	session, code := f.authorize(t, oauth.ProviderClaude)

	got, err := f.svc.ExchangeOAuthCode(t.Context(), &crsv1.ExchangeOAuthCodeRequest{SessionId: session, Code: code, AccountId: a.GetId()})
	require.NoError(t, err)
	require.Equal(t, a.GetId(), got.GetId())
	require.Equal(t, "old", got.GetName())
	require.Equal(t, "active", got.GetStatus().GetState())
	require.Equal(t, int64(1), got.GetOauth().GetGeneration())
	require.Equal(t, "socks5://u:REDACTED@127.0.0.1:1080", got.GetProxy())
	require.NotNil(t, got.GetOauth().GetExpiresAt(), "public expiry updated")
	cred, _ := f.sealed(t, a.GetId())
	require.True(t, f.mock.ValidRefreshToken(cred.GetRefreshToken()))

	stored, err := f.st.GetAccount(t.Context(), a.GetId())
	require.NoError(t, err)
	full := proto.Clone(stored.Account).(*crsv1.Account)
	require.NoError(t, f.sealer.OpenCredentials(stored.SealedCredentials, full))
	require.Equal(t, "socks5://u:pw@127.0.0.1:1080", full.GetProxy(), "the proxy (and its password) are kept")

	session, code = f.authorize(t, oauth.ProviderOpenAI)
	_, err = f.svc.ExchangeOAuthCode(t.Context(), &crsv1.ExchangeOAuthCodeRequest{SessionId: session, Code: code, AccountId: a.GetId()})
	requireCode(t, err, codes.InvalidArgument, "the openai flow makes openai accounts")
}

// TestOAuthREST drives the new routes through grpc-gateway as adminhttp serves them.
func TestOAuthREST(t *testing.T) {
	f := newOAuthFixture(t)
	mux := runtime.NewServeMux()
	require.NoError(t, crsv1.RegisterAdminServiceHandlerServer(t.Context(), mux, f.svc))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	call := func(method, path, body string) (int, map[string]any) {
		req, err := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
		require.NoError(t, err)
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		var m map[string]any
		require.NoError(t, json.NewDecoder(resp.Body).Decode(&m))
		return resp.StatusCode, m
	}

	code, m := call(http.MethodPost, "/admin/v1/oauth:start", `{"provider":"claude"}`)
	require.Equal(t, 200, code, m)
	u, err := url.Parse(m["authUrl"].(string))
	require.NoError(t, err)
	authCode := f.mock.IssueCode(u.Query().Get("code_challenge"))

	code, m = call(http.MethodPost, "/admin/v1/oauth:exchange", `{"sessionId":"`+m["sessionId"].(string)+`","code":"`+authCode+`","account":{"name":"rest"}}`)
	require.Equal(t, 200, code, m)
	id := m["id"].(string)

	code, m = call(http.MethodPost, "/admin/v1/accounts/"+id+":refresh", `{}`)
	require.Equal(t, 200, code, m)
	require.Equal(t, "1", m["oauth"].(map[string]any)["generation"])

	code, m = call(http.MethodPost, "/admin/v1/oauth:exchange", `{"sessionId":"gone","code":"abcdefghijkl","account":{"name":"x"}}`)
	require.Equal(t, 404, code, m)

	code, m = call(http.MethodPut, "/admin/v1/notifications", `{"targets":[{"name":"ops","enabled":true,"slack":{"url":"https://hooks.slack.com/services/T/B/X"}}]}`)
	require.Equal(t, 200, code, m)
	code, m = call(http.MethodGet, "/admin/v1/notifications", ``)
	require.Equal(t, 200, code, m)
	targets := m["targets"].([]any)
	require.Len(t, targets, 1)
	require.Equal(t, "slack", targets[0].(map[string]any)["type"])
	require.Equal(t, "https://hooks.slack.com/REDACTED", targets[0].(map[string]any)["slack"].(map[string]any)["url"])

	code, m = call(http.MethodPost, "/admin/v1/notifications:test", `{"targetIds":["missing"]}`)
	require.Equal(t, 400, code, m)
}
