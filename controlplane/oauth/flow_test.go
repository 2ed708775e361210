package oauth

import (
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/crsrelay/crs/controlplane/proxyhttp"
	"github.com/crsrelay/crs/internal/mockoauth"
)

func newFlows(t *testing.T, ps Providers, now func() time.Time) *Flows {
	t.Helper()
	f, err := NewFlows(FlowOptions{Providers: ps, Sessions: openEmbedded(t), Sealer: newSealer(t), Now: now})
	require.NoError(t, err)
	return f
}

func TestAuthURL(t *testing.T) {
	f := newFlows(t, nil, nil)
	tests := []struct {
		provider string
		want     map[string]string
	}{
		{ProviderClaude, map[string]string{
			"code": "true", "client_id": claudeClientID, "redirect_uri": claudeRedirectURI,
			"scope": "org:create_api_key user:profile user:inference user:sessions:claude_code user:mcp_servers user:file_upload",
		}},
		{ProviderClaudeSetup, map[string]string{"client_id": claudeClientID, "scope": "user:inference"}},
		{ProviderOpenAI, map[string]string{
			"client_id": openAIClientID, "redirect_uri": openAIRedirectURI, "scope": "openid profile email offline_access",
			"id_token_add_organizations": "true", "codex_cli_simplified_flow": "true",
		}},
		{ProviderGemini, map[string]string{
			"client_id": geminiClientID, "redirect_uri": geminiRedirectURI, "access_type": "offline",
			"scope": "https://www.googleapis.com/auth/cloud-platform", "prompt": "select_account",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.provider, func(t *testing.T) {
			st, err := f.Start(t.Context(), tt.provider, "")
			require.NoError(t, err)
			require.NotEmpty(t, st.SessionID)
			require.NotEmpty(t, st.Instructions)
			u, err := url.Parse(st.AuthURL)
			require.NoError(t, err)
			q := u.Query()
			for k, v := range tt.want {
				require.Equal(t, v, q.Get(k), k)
			}
			require.Equal(t, "code", q.Get("response_type"))
			require.Equal(t, "S256", q.Get("code_challenge_method"))
			require.Len(t, q.Get("code_challenge"), 43, "base64url of a SHA-256, unpadded")
			require.Len(t, q.Get("state"), 43, "32 random bytes, base64url")
		})
	}
	_, err := f.Start(t.Context(), "cookie", "")
	require.ErrorIs(t, err, ErrUnknownProvider)
	_, err = f.Start(t.Context(), ProviderClaude, "ftp://proxy:21")
	require.ErrorIs(t, err, proxyhttp.ErrBadProxy)
}

func TestParseCode(t *testing.T) {
	const code = "abcDEF123_-xyz"
	tests := []struct {
		name, code, callback string
		want, state          string
		err                  error
	}{
		{name: "bare", code: code, want: code},
		{name: "spaces", code: "  " + code + "\n", want: code},
		{name: "hash state", code: code + "#st4te", want: code, state: "st4te"},
		{name: "ampersand junk", code: code + "&foo=bar", want: code},
		{name: "callback URL", callback: "https://platform.claude.com/oauth/code/callback?code=" + code + "&state=abc", want: code, state: "abc"},
		{name: "localhost callback", callback: "http://localhost:1455/auth/callback?code=" + code + "&scope=x&state=s1", want: code, state: "s1"},
		{name: "URL pasted as code", code: "http://localhost:1455/auth/callback?code=" + code, want: code},
		{name: "google code", code: "4/0AeaYSHBxyz-abc_123", want: "4/0AeaYSHBxyz-abc_123"},
		{name: "google code escaped", code: "4%2F0AeaYSHBxyz-abc_123", want: "4/0AeaYSHBxyz-abc_123"},
		{name: "empty", err: ErrBadCode},
		{name: "too short", code: "abc", err: ErrBadCode},
		{name: "bad characters", code: "abc def ghi jkl", err: ErrBadCode},
		{name: "callback without code", callback: "http://localhost:1455/auth/callback?error=access_denied&code=", err: ErrBadCode},
		{name: "provider error", callback: "http://localhost:1455/auth/callback?code=" + code + "&error=access_denied", err: ErrBadCode},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, state, err := parseCode(tt.code, tt.callback)
			if tt.err != nil {
				require.ErrorIs(t, err, tt.err)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.want, got)
			require.Equal(t, tt.state, state)
		})
	}
}

// authorize plays the operator: it reads the challenge from the authorize URL and has the mock
// issue a code for it.
func authorize(t *testing.T, m *mockoauth.Server, st *Started) (code, state string) {
	t.Helper()
	u, err := url.Parse(st.AuthURL)
	require.NoError(t, err)
	return m.IssueCode(u.Query().Get("code_challenge")), u.Query().Get("state")
}

func TestExchangePKCE(t *testing.T) {
	now := time.Now()
	tests := []struct {
		provider    string
		contentType string
		check       func(t *testing.T, tok *Token, req mockoauth.Request)
	}{
		{ProviderClaude, "application/json", func(t *testing.T, tok *Token, req mockoauth.Request) {
			require.NotEmpty(t, tok.RefreshToken)
			require.WithinDuration(t, now.Add(time.Hour), tok.ExpiresAt, 5*time.Second)
			require.Equal(t, []string{"user:inference", "user:profile"}, tok.Scopes)
			require.Equal(t, "user@example.com", tok.Email)
			require.Equal(t, "Mock Org", tok.Organization)
			require.Equal(t, "claude-cli/1.0.56 (external, cli)", req.UserAgent)
			require.NotEmpty(t, req.Params["state"], "Anthropic wants the state in the exchange")
			require.Empty(t, req.Params["expires_in"])
		}},
		{ProviderClaudeSetup, "application/json", func(t *testing.T, tok *Token, req mockoauth.Request) {
			require.Empty(t, tok.RefreshToken, "setup tokens come without refresh token")
			require.Equal(t, "31536000", req.Params["expires_in"])
			require.WithinDuration(t, now.Add(365*24*time.Hour), tok.ExpiresAt, 5*time.Second)
			require.Equal(t, []string{"user:inference"}, tok.Scopes)
		}},
		{ProviderOpenAI, "application/x-www-form-urlencoded", func(t *testing.T, tok *Token, req mockoauth.Request) {
			require.NotEmpty(t, tok.RefreshToken)
			require.Equal(t, "chatgpt-acct-mock", tok.AccountID, "from the id token")
			require.Equal(t, "plus", tok.PlanType)
			require.Empty(t, req.Params["client_secret"])
		}},
		{ProviderGemini, "application/x-www-form-urlencoded", func(t *testing.T, tok *Token, req mockoauth.Request) {
			require.NotEmpty(t, tok.RefreshToken)
			require.Equal(t, geminiClientSecret, req.Params["client_secret"])
			require.Equal(t, geminiRedirectURI, req.Params["redirect_uri"])
		}},
	}
	for _, tt := range tests {
		t.Run(tt.provider, func(t *testing.T) {
			m, ps := startMock(t, mockoauth.Options{ClientSecret: geminiClientSecret})
			f := newFlows(t, ps, func() time.Time { return now })
			st, err := f.Start(t.Context(), tt.provider, "")
			require.NoError(t, err)
			code, _ := authorize(t, m, st)

			got, err := f.Exchange(t.Context(), st.SessionID, code, "")
			require.NoError(t, err)
			require.Equal(t, tt.provider, got.Provider.Name)
			require.True(t, m.ValidAccessToken(got.Token.AccessToken))
			if got.Token.RefreshToken != "" {
				require.True(t, m.ValidRefreshToken(got.Token.RefreshToken))
			}
			reqs := m.Requests()
			require.Len(t, reqs, 1)
			require.Equal(t, tt.contentType, reqs[0].ContentType)
			require.Equal(t, "authorization_code", reqs[0].Params["grant_type"])
			tt.check(t, got.Token, reqs[0])

			_, err = f.Exchange(t.Context(), st.SessionID, code, "")
			require.ErrorIs(t, err, ErrSessionNotFound, "a session is used once")
		})
	}
}

func TestExchangeRetryAfterRefusal(t *testing.T) {
	m, ps := startMock(t, mockoauth.Options{})
	f := newFlows(t, ps, nil)
	st, err := f.Start(t.Context(), ProviderClaude, "")
	require.NoError(t, err)
	code, state := authorize(t, m, st)

	_, err = f.Exchange(t.Context(), st.SessionID, "wrong_code_1234567", "")
	var ue *UpstreamError
	require.ErrorAs(t, err, &ue)
	require.Equal(t, 400, ue.Status)
	require.Equal(t, "invalid_grant", ue.Code)
	require.True(t, ue.Permanent())

	_, err = f.Exchange(t.Context(), st.SessionID, code+"#not-the-state", "")
	require.ErrorIs(t, err, ErrStateMismatch)

	got, err := f.Exchange(t.Context(), st.SessionID, code+"#"+state, "")
	require.NoError(t, err, "the session survives a refused exchange")
	require.NotEmpty(t, got.Token.AccessToken)
}

func TestExchangeSessionExpires(t *testing.T) {
	m, ps := startMock(t, mockoauth.Options{})
	now := time.Now()
	clock := now
	f := newFlows(t, ps, func() time.Time { return clock })
	st, err := f.Start(t.Context(), ProviderClaude, "")
	require.NoError(t, err)
	require.WithinDuration(t, now.Add(10*time.Minute), st.ExpiresAt, time.Second)
	code, _ := authorize(t, m, st)
	clock = now.Add(10*time.Minute + time.Second)
	_, err = f.Exchange(t.Context(), st.SessionID, code, "")
	require.ErrorIs(t, err, ErrSessionNotFound)
	require.Zero(t, m.ExchangeCalls(), "an expired session never reaches the provider")

	_, err = f.Exchange(t.Context(), "no-such-session", code, "")
	require.ErrorIs(t, err, ErrSessionNotFound)
}

func TestSessionSealedAtRest(t *testing.T) {
	st := openEmbedded(t)
	f, err := NewFlows(FlowOptions{Sessions: st, Sealer: newSealer(t)})
	require.NoError(t, err)
	started, err := f.Start(t.Context(), ProviderClaude, "socks5://user:hunter2@127.0.0.1:1080")
	require.NoError(t, err)
	blob, err := st.TakeOAuthSession(t.Context(), started.SessionID)
	require.NoError(t, err)
	require.False(t, strings.Contains(string(blob), "hunter2"), "proxy password visible at rest")
	require.False(t, strings.Contains(string(blob), "verifier"), "session visible at rest")
}
