package mockoauth

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func post(t *testing.T, srv *httptest.Server, path string, params map[string]string) (int, map[string]any) {
	t.Helper()
	var (
		body string
		ct   string
	)
	if path == ClaudePath {
		b, err := json.Marshal(params)
		require.NoError(t, err)
		body, ct = string(b), "application/json"
	} else {
		v := url.Values{}
		for k, x := range params {
			v.Set(k, x)
		}
		body, ct = v.Encode(), "application/x-www-form-urlencoded"
	}
	resp, err := http.Post(srv.URL+path, ct, strings.NewReader(body))
	require.NoError(t, err)
	defer resp.Body.Close()
	var m map[string]any
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&m))
	return resp.StatusCode, m
}

func challenge(v string) string {
	s := sha256.Sum256([]byte(v))
	return base64.RawURLEncoding.EncodeToString(s[:])
}

func TestCodeExchangeChecksVerifier(t *testing.T) {
	m := New(Options{})
	srv := httptest.NewServer(m)
	t.Cleanup(srv.Close)
	code := m.IssueCode(challenge("verifier-1"))
	status, body := post(t, srv, ClaudePath, map[string]string{"grant_type": "authorization_code", "code": code, "code_verifier": "wrong", "redirect_uri": "r"})
	require.Equal(t, 400, status)
	require.Equal(t, "invalid_grant", body["error"])
	status, _ = post(t, srv, ClaudePath, map[string]string{"grant_type": "authorization_code", "code": code, "code_verifier": "verifier-1", "redirect_uri": "r"})
	require.Equal(t, 400, status, "a code works once, even after a failed try")

	code = m.IssueCode(challenge("verifier-2"))
	status, body = post(t, srv, ClaudePath, map[string]string{"grant_type": "authorization_code", "code": code, "code_verifier": "verifier-2", "redirect_uri": "r"})
	require.Equal(t, 200, status, body)
	require.True(t, m.ValidAccessToken(body["access_token"].(string)))
	require.True(t, m.ValidRefreshToken(body["refresh_token"].(string)))
	require.Equal(t, float64(3600), body["expires_in"])
	require.Equal(t, 3, m.ExchangeCalls(), "every attempt counts")
}

func TestRefreshRotates(t *testing.T) {
	m := New(Options{})
	srv := httptest.NewServer(m)
	t.Cleanup(srv.Close)
	rt := m.IssueRefreshToken()
	status, body := post(t, srv, OpenAIPath, map[string]string{"grant_type": "refresh_token", "refresh_token": rt})
	require.Equal(t, 200, status)
	next := body["refresh_token"].(string)
	require.NotEqual(t, rt, next)
	require.False(t, m.ValidRefreshToken(rt))
	require.True(t, m.ValidRefreshToken(next))

	status, body = post(t, srv, OpenAIPath, map[string]string{"grant_type": "refresh_token", "refresh_token": rt})
	require.Equal(t, 400, status, "the old token is refused")
	require.Equal(t, "refresh_token_reused", body["error"].(map[string]any)["code"])
	require.Equal(t, 2, m.RefreshCalls())
}

func TestGoogleDoesNotRotateAndWantsTheSecret(t *testing.T) {
	m := New(Options{ClientSecret: "s"})
	srv := httptest.NewServer(m)
	t.Cleanup(srv.Close)
	rt := m.IssueRefreshToken()
	status, _ := post(t, srv, GooglePath, map[string]string{"grant_type": "refresh_token", "refresh_token": rt})
	require.Equal(t, 401, status)
	status, body := post(t, srv, GooglePath, map[string]string{"grant_type": "refresh_token", "refresh_token": rt, "client_secret": "s"})
	require.Equal(t, 200, status)
	require.Nil(t, body["refresh_token"])
	require.True(t, m.ValidRefreshToken(rt))
}

func TestFailNextAndContentTypes(t *testing.T) {
	m := New(Options{})
	srv := httptest.NewServer(m)
	t.Cleanup(srv.Close)
	m.FailNext(1, 503, `{"error":"temporarily_unavailable"}`)
	status, _ := post(t, srv, ClaudePath, map[string]string{"grant_type": "refresh_token", "refresh_token": m.IssueRefreshToken()})
	require.Equal(t, 503, status)
	resp, err := http.Post(srv.URL+ClaudePath, "application/x-www-form-urlencoded", strings.NewReader("grant_type=refresh_token"))
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, 400, resp.StatusCode, "Anthropic's endpoint wants JSON")
}
