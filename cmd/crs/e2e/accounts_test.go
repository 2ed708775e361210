package e2e

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/crsrelay/crs/internal/mockoauth"
	"github.com/crsrelay/crs/internal/mockupstream"
	"github.com/crsrelay/crs/internal/testenv"
	"github.com/crsrelay/crs/internal/testproxy"
)

// Account keeping (issue 5) against real processes: OAuth flows and token refresh against the
// in-repo mock token server, account states driven by what the mock Anthropic upstream answers,
// notifications to a local webhook receiver, and OAuth calls through a SOCKS5 proxy.

// banMessage is what Anthropic answers (403) for an organization whose OAuth access was revoked.
const banMessage = "OAuth authentication is currently not allowed for this organization."

// recoveryInterval is the control plane's recovery tick (fleet.DefaultRecoveryInterval; not
// configurable): an account state that ended is cleared in the store within this much after its
// end. Workers do not wait for it: they compare the pushed until-times with their own clock.
const recoveryInterval = 5 * time.Second

// startOAuthMock serves the mock OAuth token endpoints on a loopback port.
func startOAuthMock(t *testing.T, o mockoauth.Options) (*mockoauth.Server, string) {
	t.Helper()
	m := mockoauth.New(o)
	srv := httptest.NewServer(m)
	t.Cleanup(srv.Close)
	return m, srv.URL
}

// oauthEnv points the control plane's Claude OAuth provider at the mock.
func oauthEnv(base string) []string {
	return []string{
		"CRS_OAUTH__CLAUDE_AUTHORIZE_URL=" + base + "/oauth/authorize",
		"CRS_OAUTH__CLAUDE_TOKEN_URL=" + base + mockoauth.ClaudePath,
	}
}

// accountView is what the admin API shows of an account.
type accountView struct {
	ID       string `json:"id"`
	Name     string `json:"name"`
	Type     string `json:"type"`
	Platform string `json:"platform"`
	Proxy    string `json:"proxy"`
	Oauth    *struct {
		AccessToken  string   `json:"accessToken"`
		RefreshToken string   `json:"refreshToken"`
		ExpiresAt    string   `json:"expiresAt"`
		Scopes       []string `json:"scopes"`
		Generation   int64    `json:"generation,string"`
	} `json:"oauth"`
	Status struct {
		State              string            `json:"state"`
		Reason             string            `json:"reason"`
		Until              string            `json:"until"`
		FamilyLimitedUntil map[string]string `json:"familyLimitedUntil"`
	} `json:"status"`
}

func (cp *controlPlane) account(t *testing.T, id string) accountView {
	t.Helper()
	var a accountView
	cp.mustAdmin(t, "GET", "/admin/v1/accounts/"+id, nil, &a)
	return a
}

// createOfficialAccount creates a claude-official account with the given tokens directly (as an
// operator importing them would) and returns its id.
func (cp *controlPlane) createOfficialAccount(t *testing.T, name, accessToken, refreshToken string, expiresAt time.Time, priority int) string {
	t.Helper()
	cred := map[string]any{"accessToken": accessToken, "expiresAt": expiresAt.UTC().Format(time.RFC3339)}
	if refreshToken != "" {
		cred["refreshToken"] = refreshToken
	}
	var a accountView
	cp.mustAdmin(t, "POST", "/admin/v1/accounts", map[string]any{
		"name": name, "type": "claude-official", "priority": priority, "oauth": cred,
	}, &a)
	require.NotEmpty(t, a.ID)
	require.Equal(t, "claude-official", a.Type)
	return a.ID
}

// freshBody is a non-stream Messages request with content of its own: without session metadata
// the worker derives the sticky session from the first message, so equal bodies would all stick
// to the account that served the first one.
func freshBody(model string) []byte {
	b, _ := json.Marshal(map[string]any{
		"model": model, "max_tokens": 64,
		"messages": []any{map[string]any{"role": "user", "content": "say hi " + randomHex(8)}},
	})
	return b
}

// relayOnce sends one non-stream Messages request (of no sticky session) through w and returns
// the status and the upstream credentials the mock saw for it, in order (failovers included).
func relayOnce(t *testing.T, mock *mockupstream.Server, w *worker, key, model string) (int, []string) {
	t.Helper()
	before := len(mock.Requests())
	resp := post(t, w.url+"/api/v1/messages", key, freshBody(model))
	body := readAll(t, resp)
	var creds []string
	for _, r := range mock.Requests()[before:] {
		creds = append(creds, r.Credential)
	}
	if resp.StatusCode != 200 {
		t.Logf("relay %s: %d %s", model, resp.StatusCode, body)
	}
	return resp.StatusCode, creds
}

// servedBy sends one request that must succeed and returns the credential that answered it (the
// last one the mock saw).
func servedBy(t *testing.T, mock *mockupstream.Server, w *worker, key, model string) string {
	t.Helper()
	code, creds := relayOnce(t, mock, w, key, model)
	require.Equal(t, 200, code)
	require.NotEmpty(t, creds, "the request reached no upstream")
	return creds[len(creds)-1]
}

// metricValue reads one unlabelled gauge or counter from a /metrics page.
func metricValue(t *testing.T, metricsURL, name string) float64 {
	t.Helper()
	resp, err := http.Get(metricsURL)
	require.NoError(t, err)
	for _, line := range strings.Split(string(readAll(t, resp)), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			require.NoError(t, err, "metric %s", line)
			return f
		}
	}
	t.Fatalf("metric %s not found at %s", name, metricsURL)
	return 0
}

// waitPushed waits until the worker runs the control plane's current state: their snapshot
// versions are equal and the control plane's stayed put for 300ms (a store change reaches the
// fleet cache within its 50ms coalescing). Call it once the admin API shows the change.
func waitPushed(t *testing.T, cp *controlPlane, w *worker) {
	t.Helper()
	var last float64 = -1
	var since time.Time
	eventually(t, 10*time.Second, "worker caught up with the control plane", func() bool {
		cv := metricValue(t, cp.httpURL+"/metrics", "crs_fleet_snapshot_version")
		wv := metricValue(t, w.url+"/metrics", "crs_worker_snapshot_version")
		if cv != last {
			last, since = cv, time.Now()
			return false
		}
		return wv == cv && time.Since(since) >= 300*time.Millisecond
	})
}

// waitKeyServed waits until w knows key (key-info answers 200).
func waitKeyServed(t *testing.T, w *worker, key string) {
	t.Helper()
	eventually(t, 10*time.Second, "key reaches "+w.url, func() bool {
		req, _ := http.NewRequest("GET", w.url+"/api/v1/key-info", nil)
		req.Header.Set("x-api-key", key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return false
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode == 200
	})
}

// adminRaw calls the admin API and returns the status and raw body.
func (cp *controlPlane) adminRaw(t *testing.T, method, path string, body any) (int, string) {
	t.Helper()
	var raw json.RawMessage
	code := cp.admin(t, method, path, body, &raw)
	return code, string(raw)
}

// startedFlow is the answer of POST /admin/v1/oauth:start.
type startedFlow struct {
	SessionID    string `json:"sessionId"`
	AuthURL      string `json:"authUrl"`
	Instructions string `json:"instructions"`
	ExpiresAt    string `json:"expiresAt"`
}

// startFlow starts a Claude PKCE flow (through proxy, if set) and returns it with the authorize
// URL's query.
func (cp *controlPlane) startFlow(t *testing.T, proxy string) (startedFlow, url.Values) {
	t.Helper()
	req := map[string]any{"provider": "claude"}
	if proxy != "" {
		req["proxy"] = proxy
	}
	var st startedFlow
	cp.mustAdmin(t, "POST", "/admin/v1/oauth:start", req, &st)
	require.NotEmpty(t, st.SessionID)
	u, err := url.Parse(st.AuthURL)
	require.NoError(t, err)
	return st, u.Query()
}

// TestOAuthPKCECreatesWorkingAccount: the whole Claude PKCE flow through the admin API against
// the mock token server creates a claude-official account whose token the worker then uses.
func TestOAuthPKCECreatesWorkingAccount(t *testing.T) {
	oa, oaURL := startOAuthMock(t, mockoauth.Options{})
	mock, mockURL := startMock(t)
	cp := startControl(t, controlOpts{ClaudeBaseURL: mockURL, Env: oauthEnv(oaURL)})
	w := cp.startWorker(t)

	st, q := cp.startFlow(t, "")
	require.True(t, strings.HasPrefix(st.AuthURL, oaURL+"/oauth/authorize?"), "authorize URL from config: %s", st.AuthURL)
	require.Len(t, q.Get("code_challenge"), 43, "S256 challenge, base64url without padding")
	require.Equal(t, "S256", q.Get("code_challenge_method"))
	require.Equal(t, "code", q.Get("response_type"))
	require.NotEmpty(t, q.Get("state"))
	require.NotEmpty(t, q.Get("client_id"))
	require.NotEmpty(t, q.Get("redirect_uri"))
	require.Contains(t, q.Get("scope"), "user:inference")
	require.NotEmpty(t, st.Instructions)
	exp, err := time.Parse(time.RFC3339Nano, st.ExpiresAt)
	require.NoError(t, err)
	require.WithinDuration(t, time.Now().Add(10*time.Minute), exp, time.Minute, "sessions last 10 minutes")

	// The operator logs in; the page shows "<code>#<state>", which is pasted back.
	code := oa.IssueCode(q.Get("code_challenge"))
	var acct accountView
	code2, raw := cp.adminRaw(t, "POST", "/admin/v1/oauth:exchange", map[string]any{
		"sessionId": st.SessionID, "code": code + "#" + q.Get("state"),
		"account": map[string]any{"name": "pkce", "priority": 10},
	})
	require.Equal(t, 200, code2, "exchange: %s", raw)
	require.NoError(t, json.Unmarshal([]byte(raw), &acct))
	require.NotEmpty(t, acct.ID)
	require.Equal(t, "claude-official", acct.Type)
	require.Equal(t, "claude", acct.Platform)
	require.NotNil(t, acct.Oauth)
	require.Empty(t, acct.Oauth.AccessToken)
	require.Empty(t, acct.Oauth.RefreshToken)
	require.NotContains(t, raw, "mock_at_")
	require.NotContains(t, raw, "mock_rt_")
	require.Equal(t, 1, oa.ExchangeCalls())
	ex := oa.Requests()[0]
	require.Equal(t, "authorization_code", ex.Params["grant_type"])
	require.Equal(t, code, ex.Params["code"], "the #state suffix is not part of the code")
	require.Equal(t, q.Get("state"), ex.Params["state"])
	require.Equal(t, q.Get("redirect_uri"), ex.Params["redirect_uri"])
	require.Equal(t, "application/json", ex.ContentType)

	// The session was used up.
	again, raw := cp.adminRaw(t, "POST", "/admin/v1/oauth:exchange", map[string]any{
		"sessionId": st.SessionID, "code": oa.IssueCode(q.Get("code_challenge")), "account": map[string]any{"name": "again"},
	})
	require.Equal(t, 404, again, "a session works once: %s", raw)
	require.Equal(t, 1, oa.ExchangeCalls(), "a used session never reaches the provider")

	// The worker relays with the access token the mock issued.
	_, key := cp.createKey(t, nil)
	resp := waitForRelay(t, w, key, messagesBody("claude-sonnet-4-5", false, ""))
	body := readAll(t, resp)
	require.Equal(t, 200, resp.StatusCode, "%s", body)
	reqs := mock.Requests()
	require.NotEmpty(t, reqs)
	last := reqs[len(reqs)-1]
	require.True(t, strings.HasPrefix(last.Credential, "mock_at_"), "credential %q", last.Credential)
	require.True(t, oa.ValidAccessToken(last.Credential), "the token is one the mock issued")
	require.Equal(t, "Bearer "+last.Credential, last.Headers["authorization"])
	require.Empty(t, last.Headers["x-api-key"])
	require.Contains(t, last.Headers["anthropic-beta"], "oauth-2025-04-20")

	// Reading the account back shows no secret.
	code3, raw := cp.adminRaw(t, "GET", "/admin/v1/accounts/"+acct.ID, nil)
	require.Equal(t, 200, code3)
	require.NotContains(t, raw, last.Credential)
	require.NotContains(t, raw, "mock_at_")
	require.NotContains(t, raw, "mock_rt_")
	require.NoError(t, json.Unmarshal([]byte(raw), &acct))
	require.Equal(t, "active", acct.Status.State)
	require.NotEmpty(t, acct.Oauth.ExpiresAt, "expiry is not secret")
	code4, list := cp.adminRaw(t, "GET", "/admin/v1/accounts", nil)
	require.Equal(t, 200, code4)
	require.NotContains(t, list, "mock_at_")
	require.NotContains(t, list, "mock_rt_")
}

// TestTokenRefreshedOnceAcrossReplicas: a token expiring in 2 minutes is refreshed once before it
// does, by one of two control planes sharing a Redis, and the worker uses the new token.
func TestTokenRefreshedOnceAcrossReplicas(t *testing.T) {
	// A slow token endpoint makes both replicas' refreshes overlap if nothing serializes them.
	oa, oaURL := startOAuthMock(t, mockoauth.Options{Delay: 300 * time.Millisecond})
	mock, mockURL := startMock(t)
	redisURL := "redis://" + testenv.StartRedis(t) + "/0"
	key := randomHex(32)
	env := append(oauthEnv(oaURL), "CRS_OAUTH__REFRESH_MARGIN=5m", "CRS_OAUTH__REFRESH_INTERVAL=1s")
	cp1 := startControl(t, controlOpts{RedisURL: redisURL, EncryptionKey: key, ClaudeBaseURL: mockURL, Env: env})
	cp2 := startControl(t, controlOpts{RedisURL: redisURL, EncryptionKey: key, ClaudeBaseURL: mockURL, Env: env})
	w := cp1.startWorker(t)

	const initial = "at-initial-e2e"
	rt := oa.IssueRefreshToken()
	id := cp1.createOfficialAccount(t, "refresh", initial, rt, time.Now().Add(2*time.Minute), 50)
	require.Equal(t, cp1.account(t, id).ID, cp2.account(t, id).ID, "both replicas see the account")
	_, apiKey := cp1.createKey(t, nil)

	eventually(t, 8*time.Second, "refresh call", func() bool { return oa.RefreshCalls() >= 1 })
	var gen int64
	eventually(t, 5*time.Second, "refreshed credentials stored", func() bool {
		a := cp2.account(t, id)
		gen = a.Oauth.Generation
		exp, err := time.Parse(time.RFC3339Nano, a.Oauth.ExpiresAt)
		return err == nil && time.Until(exp) > 30*time.Minute
	})
	require.False(t, oa.ValidRefreshToken(rt), "the mock rotated the refresh token")

	// The worker gets the new token pushed (by cp1, whichever replica refreshed).
	var cred string
	eventually(t, 8*time.Second, "worker uses the refreshed token", func() bool {
		resp := post(t, w.url+"/api/v1/messages", apiKey, messagesBody("claude-sonnet-4-5", false, ""))
		readAll(t, resp)
		reqs := mock.Requests()
		if resp.StatusCode != 200 || len(reqs) == 0 {
			return false
		}
		cred = reqs[len(reqs)-1].Credential
		return cred != initial
	})
	require.True(t, oa.ValidAccessToken(cred), "worker sends the token the mock issued, got %q", cred)

	// Two more scans of each replica: still one refresh (the new token expires in an hour).
	time.Sleep(2500 * time.Millisecond)
	require.Equal(t, 1, oa.RefreshCalls(), "exactly one refresh across two replicas")
	require.Equal(t, gen, cp1.account(t, id).Oauth.Generation)

	// The stored refresh token is the rotated one: an admin refresh on the other replica works,
	// and the worker moves to that token too.
	code, raw := cp2.adminRaw(t, "POST", "/admin/v1/accounts/"+id+":refresh", map[string]any{})
	require.Equal(t, 200, code, "refresh with the stored (rotated) refresh token: %s", raw)
	require.Equal(t, 2, oa.RefreshCalls())
	require.NotContains(t, raw, "mock_at_")
	require.NotContains(t, raw, "mock_rt_")
	require.Greater(t, cp1.account(t, id).Oauth.Generation, gen, "every credential write bumps the generation")
	eventually(t, 8*time.Second, "worker uses the admin-refreshed token", func() bool {
		c := servedBy(t, mock, w, apiKey, "claude-sonnet-4-5")
		return c != cred && oa.ValidAccessToken(c)
	})
}

// TestUnauthorizedRefreshRaceKeepsValidToken: a worker's 401 makes the control planes refresh the
// token at once while admins ask both replicas for a refresh too. The mock rotates refresh tokens
// and refuses used ones: no refresh may send a used token, the account ends active with a token
// the worker uses, and the stored refresh token still works.
func TestUnauthorizedRefreshRaceKeepsValidToken(t *testing.T) {
	oa, oaURL := startOAuthMock(t, mockoauth.Options{Delay: 400 * time.Millisecond})
	const stale = "at-stale-e2e"
	mock, mockURL := startMock(t)
	mock.Configure(mockupstream.DefaultBehavior(), map[string]mockupstream.Behavior{stale: {FailStatus: 401, FailTimes: -1}})
	redisURL := "redis://" + testenv.StartRedis(t) + "/0"
	encKey := randomHex(32)
	env := append(oauthEnv(oaURL), "CRS_OAUTH__REFRESH_INTERVAL=1s")
	cp1 := startControl(t, controlOpts{RedisURL: redisURL, EncryptionKey: encKey, ClaudeBaseURL: mockURL, Env: env})
	cp2 := startControl(t, controlOpts{RedisURL: redisURL, EncryptionKey: encKey, ClaudeBaseURL: mockURL, Env: env})
	w := cp1.startWorker(t)

	id := cp1.createOfficialAccount(t, "race", stale, oa.IssueRefreshToken(), time.Now().Add(time.Hour), 50)
	_, key := cp1.createKey(t, nil)
	waitKeyServed(t, w, key)

	// The 401: the worker reports it, and the refreshers of both replicas see the account become
	// unauthorized; two admin refreshes run at the same time.
	code, creds := relayOnce(t, mock, w, key, "claude-sonnet-4-5")
	t.Logf("first request with the stale token: %d via %v", code, creds)
	require.Equal(t, []string{stale}, creds[:1])
	var wg sync.WaitGroup
	codes := make([]int, 2)
	for i, cp := range []*controlPlane{cp1, cp2} {
		wg.Go(func() {
			var raw json.RawMessage
			codes[i] = cp.admin(t, "POST", "/admin/v1/accounts/"+id+":refresh", map[string]any{}, &raw)
			if codes[i] != 200 {
				t.Logf("admin refresh on replica %d: %d %s", i+1, codes[i], raw)
			}
		})
	}
	wg.Wait()
	require.Equal(t, []int{200, 200}, codes, "admin refreshes succeed while another refresh runs")

	var cred string
	eventually(t, 8*time.Second, "worker uses a refreshed token", func() bool {
		code, creds := relayOnce(t, mock, w, key, "claude-sonnet-4-5")
		if code != 200 {
			return false
		}
		cred = creds[len(creds)-1]
		return true
	})
	require.True(t, oa.ValidAccessToken(cred))
	st := cp2.account(t, id).Status
	require.Equal(t, "active", st.State, "reason: %s", st.Reason)

	// No refresh sent a refresh token twice (a used one is stale after the rotation).
	used := map[string]int{}
	for _, r := range oa.Requests() {
		if r.Params["grant_type"] == "refresh_token" {
			used[r.Params["refresh_token"]]++
		}
	}
	t.Logf("%d refresh calls for 1 unauthorized report and 2 admin requests on 2 replicas", oa.RefreshCalls())
	for rt, n := range used {
		require.Equal(t, 1, n, "refresh token %s… sent %d times", rt[:12], n)
	}
	// The stored refresh token is the newest one.
	code, raw := cp1.adminRaw(t, "POST", "/admin/v1/accounts/"+id+":refresh", map[string]any{})
	require.Equal(t, 200, code, "%s", raw)
	require.Equal(t, "active", cp1.account(t, id).Status.State)
}

// TestWorkerRetriesAfterUnauthorizedRefresh: issue 5 "Refresh": a worker that sees 401 reports
// it, the control plane refreshes and pushes the new token, and the worker retries once if
// nothing has reached the client yet; so the client of the request that met the expired token is
// served, with the new token.
func TestWorkerRetriesAfterUnauthorizedRefresh(t *testing.T) {
	oa, oaURL := startOAuthMock(t, mockoauth.Options{})
	const stale = "at-expired-e2e"
	mock, mockURL := startMock(t)
	mock.Configure(mockupstream.DefaultBehavior(), map[string]mockupstream.Behavior{stale: {FailStatus: 401, FailTimes: -1}})
	cp := startControl(t, controlOpts{ClaudeBaseURL: mockURL, Env: oauthEnv(oaURL)})
	w := cp.startWorker(t)
	cp.createOfficialAccount(t, "only", stale, oa.IssueRefreshToken(), time.Now().Add(time.Hour), 50)
	_, key := cp.createKey(t, nil)
	waitKeyServed(t, w, key)

	code, creds := relayOnce(t, mock, w, key, "claude-sonnet-4-5")
	require.Equal(t, 200, code, "the request that met the 401 is retried with the new token (upstream saw %v)", creds)
	require.Equal(t, 1, oa.RefreshCalls(), "the 401 triggered a refresh")
	require.Len(t, creds, 2)
	require.Equal(t, stale, creds[0])
	require.True(t, oa.ValidAccessToken(creds[1]))
}

// TestRefreshRefusedNeedsReauthorization: a refresh token the provider refuses makes the account
// unauthorized with the provider's reason, is not retried, notifies once; re-authorizing the
// account through a new flow makes it active again (and notifies that too).
func TestRefreshRefusedNeedsReauthorization(t *testing.T) {
	oa, oaURL := startOAuthMock(t, mockoauth.Options{})
	mock, mockURL := startMock(t)
	cp := startControl(t, controlOpts{ClaudeBaseURL: mockURL,
		Env: append(oauthEnv(oaURL), "CRS_OAUTH__REFRESH_MARGIN=5m", "CRS_OAUTH__REFRESH_INTERVAL=1s")})
	w := cp.startWorker(t)
	rcv := startReceiver(t, 0)
	cp.mustAdmin(t, "PUT", "/admin/v1/notifications", map[string]any{"targets": []any{map[string]any{
		"name": "e2e receiver", "enabled": true, "webhook": map[string]any{"url": rcv.srv.URL + "/hook"},
	}}}, nil)

	// A refresh token the provider does not know (revoked, or used by someone else).
	id := cp.createOfficialAccount(t, "revoked", "at-revoked", "mock_rt_revoked", time.Now().Add(2*time.Minute), 50)
	eventually(t, 8*time.Second, "refresh refused", func() bool { return cp.account(t, id).Status.State == "unauthorized" })
	st := cp.account(t, id).Status
	require.True(t, strings.HasPrefix(st.Reason, "token refresh failed"), "reason: %s", st.Reason)
	require.Contains(t, st.Reason, "invalid_grant", "the provider's answer is the reason")
	require.NotContains(t, st.Reason, "mock_rt_revoked")
	eventually(t, 3*time.Second, "refresh_failed notification", func() bool { return len(rcv.of("account.refresh_failed")) == 1 })

	// Two more scans: a refused refresh token is not tried again.
	time.Sleep(2500 * time.Millisecond)
	require.Equal(t, 1, oa.RefreshCalls(), "a refused refresh token is not retried")
	require.Equal(t, "unauthorized", cp.account(t, id).Status.State)

	// Re-authorize: a new flow's tokens replace the credentials of the same account.
	fl, q := cp.startFlow(t, "")
	var acct accountView
	cp.mustAdmin(t, "POST", "/admin/v1/oauth:exchange", map[string]any{
		"sessionId": fl.SessionID, "code": oa.IssueCode(q.Get("code_challenge")), "accountId": id,
	}, &acct)
	require.Equal(t, id, acct.ID)
	require.Equal(t, "active", acct.Status.State)
	_, key := cp.createKey(t, nil)
	waitKeyServed(t, w, key)
	eventually(t, 5*time.Second, "worker uses the new token", func() bool {
		return oa.ValidAccessToken(servedBy(t, mock, w, key, "claude-sonnet-4-5"))
	})
	eventually(t, 3*time.Second, "recovered notification", func() bool { return len(rcv.of("account.recovered")) == 1 })
	require.Len(t, rcv.all(), 2, "one event for the failure, one for the recovery: %v", rcv.all())
	require.Equal(t, id, rcv.of("account.refresh_failed")[0].payload.Data.AccountID)
	require.Equal(t, 1, oa.RefreshCalls(), "the new token expires in an hour: no refresh")
}

// TestRateLimitParksOnlyThatFamily: a 429 with a reset time parks the account for the request's
// model family only, until the reset; then it serves that family again by itself.
func TestRateLimitParksOnlyThatFamily(t *testing.T) {
	const credA, credB = "at-family-a", "at-family-b"
	mock, mockURL := startMock(t)
	mock.Configure(mockupstream.DefaultBehavior(), map[string]mockupstream.Behavior{
		credA: {Deltas: 3, DeltaText: "Hello", InputTokens: 25, OutputTokens: 15,
			FailStatus: 429, FailTimes: 1, ResetAfter: 4 * time.Second},
	})
	cp := startControl(t, controlOpts{ClaudeBaseURL: mockURL})
	w := cp.startWorker(t)
	rcv := startReceiver(t, 0)
	cp.mustAdmin(t, "PUT", "/admin/v1/notifications", map[string]any{"targets": []any{map[string]any{
		"name": "e2e receiver", "enabled": true, "webhook": map[string]any{"url": rcv.srv.URL + "/hook"},
	}}}, nil)
	far := time.Now().Add(24 * time.Hour)
	a := cp.createOfficialAccount(t, "a", credA, "", far, 1)
	cp.createOfficialAccount(t, "b", credB, "", far, 2)
	_, key := cp.createKey(t, nil)
	waitKeyServed(t, w, key)

	// Sonnet: A answers 429, the request fails over to B; the client sees B's answer.
	code, creds := relayOnce(t, mock, w, key, "claude-sonnet-4-5")
	require.Equal(t, 200, code)
	require.Equal(t, []string{credA, credB}, creds)

	var until time.Time
	eventually(t, 5*time.Second, "sonnet limit on A", func() bool {
		s := cp.account(t, a).Status
		if s.FamilyLimitedUntil["sonnet"] == "" {
			return false
		}
		var err error
		until, err = time.Parse(time.RFC3339Nano, s.FamilyLimitedUntil["sonnet"])
		require.NoError(t, err)
		return true
	})
	st := cp.account(t, a).Status
	require.Equal(t, "active", st.State, "a family limit leaves the account active")
	require.Len(t, st.FamilyLimitedUntil, 1, "only sonnet: %v", st.FamilyLimitedUntil)
	require.Contains(t, st.Reason, "sonnet")
	require.WithinDuration(t, time.Now().Add(4*time.Second), until, 2*time.Second, "until the reset upstream sent")
	waitPushed(t, cp, w)
	require.True(t, time.Now().Before(until), "test too slow: the limit already ended")

	// While parked: sonnet goes straight to B, haiku still to A (priority 1).
	code, creds = relayOnce(t, mock, w, key, "claude-sonnet-4-5")
	require.Equal(t, 200, code)
	require.Equal(t, []string{credB}, creds, "parked family skips A")
	code, creds = relayOnce(t, mock, w, key, "claude-haiku-4-5")
	require.Equal(t, 200, code)
	require.Equal(t, []string{credA}, creds, "other families still use A")

	// After the reset A serves sonnet again, without any admin action. The worker checks the
	// until-time itself; the control plane's status is cleared by its recovery tick, up to
	// recoveryInterval after the reset.
	eventually(t, time.Until(until)+3*time.Second, "A serves sonnet again", func() bool {
		return servedBy(t, mock, w, key, "claude-sonnet-4-5") == credA
	})
	back := time.Now()
	require.False(t, back.Before(until), "A served sonnet before its reset time %s", until)
	eventually(t, time.Until(until)+recoveryInterval+2*time.Second, "sonnet limit cleared in the status", func() bool {
		return len(cp.account(t, a).Status.FamilyLimitedUntil) == 0
	})
	t.Logf("sonnet limit until %s: A served sonnet again %s after it, status cleared %s after it (recovery tick %s)",
		until.Format(time.RFC3339), back.Sub(until).Round(10*time.Millisecond), time.Since(until).Round(10*time.Millisecond), recoveryInterval)
	st = cp.account(t, a).Status
	require.Equal(t, "active", st.State)
	require.Contains(t, st.Reason, "ended")

	// One notification for the limit and one when it ended.
	eventually(t, 3*time.Second, "family recovered notification", func() bool { return len(rcv.of("account.recovered")) >= 1 })
	limited, recovered := rcv.of("account.rate_limited"), rcv.of("account.recovered")
	require.Len(t, limited, 1)
	require.Len(t, recovered, 1)
	for _, d := range append(limited, recovered...) {
		require.Equal(t, a, d.payload.Data.AccountID)
		require.Equal(t, "sonnet", d.payload.Data.Family)
		require.Empty(t, d.signature, "no secret, no signature")
	}
	require.Len(t, rcv.all(), 2, "nothing else was notified")
}

// banCluster is a control plane, a worker, and claude-official accounts A (priority 1, banned
// by the mock) and B (priority 2).
type banCluster struct {
	cp     *controlPlane
	others []*controlPlane // further replicas
	w      *worker
	mock   *mockupstream.Server
	a, b   string
	key    string
	credA  string
	credB  string
	banned map[string]mockupstream.Behavior
}

// startBanCluster starts it; with replicas > 1 the control plane runs that many replicas on one
// Redis (the worker and the admin calls use the first; the others only watch the store).
func startBanCluster(t *testing.T, replicas int) *banCluster {
	t.Helper()
	c := &banCluster{credA: "at-ban-a", credB: "at-ban-b"}
	var mockURL string
	c.mock, mockURL = startMock(t)
	c.banned = map[string]mockupstream.Behavior{c.credA: {FailStatus: 403, FailTimes: -1, FailBody: banMessage}}
	c.mock.Configure(mockupstream.DefaultBehavior(), c.banned)
	o := controlOpts{ClaudeBaseURL: mockURL}
	if replicas > 1 {
		o.RedisURL, o.EncryptionKey = "redis://"+testenv.StartRedis(t)+"/0", randomHex(32)
	}
	c.cp = startControl(t, o)
	for range replicas - 1 {
		c.others = append(c.others, startControl(t, o))
	}
	c.w = c.cp.startWorker(t)
	far := time.Now().Add(24 * time.Hour)
	c.a = c.cp.createOfficialAccount(t, "a", c.credA, "", far, 1)
	c.b = c.cp.createOfficialAccount(t, "b", c.credB, "", far, 2)
	_, c.key = c.cp.createKey(t, nil)
	waitKeyServed(t, c.w, c.key)
	return c
}

// ban sends the request that meets the ban and waits until the worker has A blocked.
func (c *banCluster) ban(t *testing.T) {
	t.Helper()
	code, creds := relayOnce(t, c.mock, c.w, c.key, "claude-sonnet-4-5")
	require.Equal(t, 200, code, "the client is served by B")
	require.Equal(t, []string{c.credA, c.credB}, creds)
	eventually(t, 5*time.Second, "A blocked", func() bool { return c.cp.account(t, c.a).Status.State == "blocked" })
	st := c.cp.account(t, c.a).Status
	require.Contains(t, st.Reason, banMessage, "the upstream's words are the reason")
	require.Empty(t, st.Until, "a ban has no end")
	require.Equal(t, "active", c.cp.account(t, c.b).Status.State)
	waitPushed(t, c.cp, c.w)
}

// reset makes A answer normally again and resets it through the admin API.
func (c *banCluster) reset(t *testing.T) {
	t.Helper()
	c.mock.Configure(mockupstream.DefaultBehavior(), nil)
	var a accountView
	c.cp.mustAdmin(t, "POST", "/admin/v1/accounts/"+c.a+":reset", map[string]any{}, &a)
	require.Equal(t, "active", a.Status.State)
	require.Empty(t, a.Status.Until)
}

// TestBanBlocksUntilAdminReset: a ban message blocks the account; it is never used again and
// stays blocked when time passes (no temporary state that lapses), until an admin resets it.
func TestBanBlocksUntilAdminReset(t *testing.T) {
	c := startBanCluster(t, 1)
	c.ban(t)

	// Longer than a recovery tick: A stays blocked and every request goes to B alone.
	before := c.mock.Stats().ByCredential[c.credA].Requests
	deadline := time.Now().Add(recoveryInterval + time.Second)
	n := 0
	for time.Now().Before(deadline) {
		code, creds := relayOnce(t, c.mock, c.w, c.key, "claude-sonnet-4-5")
		require.Equal(t, 200, code)
		require.Equal(t, []string{c.credB}, creds, "blocked A is never tried")
		n++
		time.Sleep(250 * time.Millisecond)
	}
	require.Equal(t, before, c.mock.Stats().ByCredential[c.credA].Requests)
	require.Equal(t, "blocked", c.cp.account(t, c.a).Status.State, "still blocked after %d requests and a recovery tick", n)

	c.reset(t)
	eventually(t, 5*time.Second, "A used again after the reset", func() bool {
		return servedBy(t, c.mock, c.w, c.key, "claude-sonnet-4-5") == c.credA
	})
	st := c.cp.account(t, c.a).Status
	require.Equal(t, "active", st.State)
}

// webhookReceiver is a local notification target that fails the first failFirst deliveries.
type webhookReceiver struct {
	srv       *httptest.Server
	failFirst int

	mu         sync.Mutex
	deliveries []delivery
}

type delivery struct {
	at        time.Time
	status    int // what the receiver answered
	event     string
	signature string
	body      []byte
	payload   struct {
		Type      string `json:"type"`
		Service   string `json:"service"`
		Timestamp string `json:"timestamp"`
		Data      struct {
			Title     string `json:"title"`
			AccountID string `json:"account_id"`
			State     string `json:"state"`
			PrevState string `json:"previous_state"`
			Family    string `json:"model_family"`
			Reason    string `json:"reason"`
		} `json:"data"`
	}
}

func startReceiver(t *testing.T, failFirst int) *webhookReceiver {
	t.Helper()
	r := &webhookReceiver{failFirst: failFirst}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		d := delivery{at: time.Now(), event: req.Header.Get("X-CRS-Event"), signature: req.Header.Get("X-CRS-Signature"), body: body}
		_ = json.Unmarshal(body, &d.payload)
		r.mu.Lock()
		d.status = 200
		if len(r.deliveries) < r.failFirst {
			d.status = 500
		}
		r.deliveries = append(r.deliveries, d)
		r.mu.Unlock()
		w.WriteHeader(d.status)
	}))
	t.Cleanup(r.srv.Close)
	return r
}

// of returns the deliveries of event type typ, oldest first.
func (r *webhookReceiver) of(typ string) []delivery {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []delivery
	for _, d := range r.deliveries {
		if d.payload.Type == typ {
			out = append(out, d)
		}
	}
	return out
}

func (r *webhookReceiver) all() []delivery {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]delivery(nil), r.deliveries...)
}

func accepted(ds []delivery) int {
	n := 0
	for _, d := range ds {
		if d.status == 200 {
			n++
		}
	}
	return n
}

// TestNotificationsOnTransitions: a ban and the admin reset each produce one signed webhook
// event, delivered with retries to a receiver that fails twice; the test endpoint delivers. Two
// control-plane replicas watch the store: each event is still sent once.
func TestNotificationsOnTransitions(t *testing.T) {
	const secret = "whsec-e2e-0123456789"
	rcv := startReceiver(t, 2)
	c := startBanCluster(t, 2)

	hookURL := rcv.srv.URL + "/hooks/crs-e2e"
	var put struct {
		Targets []struct {
			ID      string `json:"id"`
			Type    string `json:"type"`
			Webhook struct {
				URL    string `json:"url"`
				Secret string `json:"secret"`
			} `json:"webhook"`
		} `json:"targets"`
	}
	c.cp.mustAdmin(t, "PUT", "/admin/v1/notifications", map[string]any{"targets": []any{map[string]any{
		"name": "e2e receiver", "enabled": true, "webhook": map[string]any{"url": hookURL, "secret": secret},
	}}}, &put)
	require.Len(t, put.Targets, 1)
	require.Equal(t, "webhook", put.Targets[0].Type)
	require.Empty(t, put.Targets[0].Webhook.Secret, "secrets are write-only")
	require.NotContains(t, put.Targets[0].Webhook.URL, "crs-e2e", "the hook path is write-only")

	checkSigned := func(d delivery) {
		t.Helper()
		m := hmac.New(sha256.New, []byte(secret))
		m.Write(d.body)
		require.Equal(t, "sha256="+hex.EncodeToString(m.Sum(nil)), d.signature, "X-CRS-Signature of %s", d.body)
		require.Equal(t, d.payload.Type, d.event, "X-CRS-Event")
		require.Equal(t, "crs", d.payload.Service)
		_, err := time.Parse(time.RFC3339, d.payload.Timestamp)
		require.NoError(t, err)
	}

	// The ban: one event, delivered on the third try (backoff 1s, then 2s).
	c.ban(t)
	require.Equal(t, "blocked", c.others[0].account(t, c.a).Status.State, "the other replica sees the ban")
	eventually(t, 10*time.Second, "blocked event accepted", func() bool { return accepted(rcv.of("account.blocked")) == 1 })
	blocked := rcv.of("account.blocked")
	require.Len(t, blocked, 3, "two failed deliveries and the accepted one")
	require.Equal(t, []int{500, 500, 200}, []int{blocked[0].status, blocked[1].status, blocked[2].status})
	require.GreaterOrEqual(t, blocked[1].at.Sub(blocked[0].at), 900*time.Millisecond, "first retry after ~1s")
	require.GreaterOrEqual(t, blocked[2].at.Sub(blocked[1].at), 1800*time.Millisecond, "second retry after ~2s")
	for _, d := range blocked {
		checkSigned(d)
		require.Equal(t, blocked[0].body, d.body, "retries resend the same event")
	}
	ev := blocked[0].payload.Data
	require.Equal(t, c.a, ev.AccountID)
	require.Equal(t, "blocked", ev.State)
	require.Equal(t, "active", ev.PrevState)
	require.Contains(t, ev.Reason, banMessage)

	// The reset: its own single event.
	c.reset(t)
	eventually(t, 5*time.Second, "recovered event", func() bool { return len(rcv.of("account.recovered")) >= 1 })
	rec := rcv.of("account.recovered")
	require.Len(t, rec, 1)
	require.Equal(t, 200, rec[0].status)
	checkSigned(rec[0])
	require.Equal(t, c.a, rec[0].payload.Data.AccountID)
	require.Equal(t, "active", rec[0].payload.Data.State)
	require.Equal(t, "blocked", rec[0].payload.Data.PrevState)

	// The test endpoint sends a test event to every enabled target.
	var tr struct {
		Results []struct {
			TargetID  string `json:"targetId"`
			Type      string `json:"type"`
			Delivered bool   `json:"delivered"`
			Error     string `json:"error"`
			Attempts  int    `json:"attempts"`
		} `json:"results"`
	}
	c.cp.mustAdmin(t, "POST", "/admin/v1/notifications:test", map[string]any{}, &tr)
	require.Len(t, tr.Results, 1)
	require.True(t, tr.Results[0].Delivered, "test delivery: %s", tr.Results[0].Error)
	require.Equal(t, put.Targets[0].ID, tr.Results[0].TargetID)
	require.Equal(t, 1, tr.Results[0].Attempts)
	test := rcv.of("test")
	require.Len(t, test, 1)
	checkSigned(test[0])

	// Nothing else was sent: B's successes and the requests after the ban are no transitions.
	time.Sleep(500 * time.Millisecond)
	all := rcv.all()
	require.Len(t, all, 5, "3 attempts for the ban, 1 recovery, 1 test; one replica sent each event")
	require.Len(t, rcv.of("account.blocked"), 3)
	require.Len(t, rcv.of("account.recovered"), 1)
}

// TestOAuthThroughSOCKS5Proxy: the token exchange of a flow started with a SOCKS5 proxy goes
// through that proxy (with its credentials); a proxy refusing the credentials or not listening
// is a quick, clear error that names the proxy without its password.
func TestOAuthThroughSOCKS5Proxy(t *testing.T) {
	const user, pass = "crsuser", "proxy-pw-7f3a"
	oa, oaURL := startOAuthMock(t, mockoauth.Options{})
	cp := startControl(t, controlOpts{Env: oauthEnv(oaURL)})
	px := testproxy.StartSOCKS5(t, user, pass)

	st, q := cp.startFlow(t, px.URL())
	code, raw := cp.adminRaw(t, "POST", "/admin/v1/oauth:exchange", map[string]any{
		"sessionId": st.SessionID, "code": oa.IssueCode(q.Get("code_challenge")),
		"account": map[string]any{"name": "proxied"},
	})
	require.Equal(t, 200, code, "exchange through the proxy: %s", raw)
	oaHost := strings.TrimPrefix(oaURL, "http://")
	require.Equal(t, []string{oaHost}, px.Targets(), "the token call went through the proxy")
	require.Equal(t, 1, oa.ExchangeCalls())
	var acct accountView
	require.NoError(t, json.Unmarshal([]byte(raw), &acct))
	require.NotContains(t, raw, pass, "proxy password never shown")
	require.Contains(t, acct.Proxy, px.Addr(), "the account keeps the session's proxy")
	require.Contains(t, acct.Proxy, "REDACTED")

	for _, tc := range []struct {
		name, proxy, want string
	}{
		{"wrong credentials", "socks5://" + user + ":wrong-pw-91c2@" + px.Addr(), "proxy"},
		{"nothing listening", "socks5://" + user + ":" + pass + "@127.0.0.1:" + strconv.Itoa(testenv.FreePort(t)), "unreachable"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			authFailures, exchanges := px.AuthFailures(), oa.ExchangeCalls()
			st, q := cp.startFlow(t, tc.proxy)
			start := time.Now()
			code, raw := cp.adminRaw(t, "POST", "/admin/v1/oauth:exchange", map[string]any{
				"sessionId": st.SessionID, "code": oa.IssueCode(q.Get("code_challenge")),
				"account": map[string]any{"name": "never"},
			})
			took := time.Since(start)
			t.Logf("%s: %d in %s: %s", tc.name, code, took.Round(time.Millisecond), raw)
			require.Equal(t, 503, code, "%s", raw)
			require.Less(t, took, 3*time.Second, "a bad proxy is a quick error, not a hang")
			require.Contains(t, raw, "proxy")
			require.Contains(t, raw, tc.want)
			require.NotContains(t, raw, "wrong-pw-91c2")
			require.NotContains(t, raw, pass)
			require.Equal(t, exchanges, oa.ExchangeCalls(), "nothing reached the token endpoint")
			if tc.name == "wrong credentials" {
				require.Equal(t, authFailures+1, px.AuthFailures())
			}
		})
	}
}

// TestRelayThroughAccountSOCKS5Proxy: issue 5 "Done when": a request through an account with a
// SOCKS5 proxy reaches the upstream through that proxy; an account whose proxy is dead is an
// account error with a clear reason (the request fails over), not a hang.
func TestRelayThroughAccountSOCKS5Proxy(t *testing.T) {
	const user, pass = "crsuser", "proxy-pw-41d9"
	mock, mockURL := startMock(t)
	px := testproxy.StartSOCKS5(t, user, pass)
	cp := startControl(t, controlOpts{ClaudeBaseURL: mockURL})
	w := cp.startWorker(t)
	far := time.Now().Add(24 * time.Hour)
	var a accountView
	cp.mustAdmin(t, "POST", "/admin/v1/accounts", map[string]any{
		"name": "proxied", "type": "claude-official", "priority": 1, "proxy": px.URL(),
		"oauth": map[string]any{"accessToken": "at-proxied", "expiresAt": far.UTC().Format(time.RFC3339)},
	}, &a)
	_, key := cp.createKey(t, nil)
	waitKeyServed(t, w, key)

	require.Equal(t, "at-proxied", servedBy(t, mock, w, key, "claude-sonnet-4-5"))
	require.Equal(t, []string{strings.TrimPrefix(mockURL, "http://")}, px.Targets(), "the request went through the account's proxy")

	// The proxy dies: the account is parked with a reason naming the proxy and the request is
	// served by the next account, quickly.
	cp.createOfficialAccount(t, "direct", "at-direct", "", far, 2)
	px.Close()
	eventually(t, 5*time.Second, "second account pushed", func() bool {
		start := time.Now()
		code, creds := relayOnce(t, mock, w, key, "claude-sonnet-4-5")
		require.Less(t, time.Since(start), 5*time.Second, "a dead proxy is not a hang")
		return code == 200 && len(creds) > 0 && creds[len(creds)-1] == "at-direct"
	})
	eventually(t, 5*time.Second, "proxied account parked", func() bool {
		return cp.account(t, a.ID).Status.State != "active"
	})
	st := cp.account(t, a.ID).Status
	require.Contains(t, st.Reason, "proxy")
	require.NotContains(t, st.Reason, pass)
}
