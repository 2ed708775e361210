package worker

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/valyala/fasthttp"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/crsrelay/crs/dataplane/fleetclient"
	"github.com/crsrelay/crs/dataplane/fleetclient/fleettest"
	"github.com/crsrelay/crs/dataplane/relay"
	crsv1 "github.com/crsrelay/crs/gen/crs/v1"
	"github.com/crsrelay/crs/internal/keyhash"
	"github.com/crsrelay/crs/internal/mockupstream"
)

const (
	fleetToken   = "fleet-secret"
	goodKey      = "cr_1111111111111111111111111111111111111111111111111111111111111111"
	disabledKey  = "cr_2222222222222222222222222222222222222222222222222222222222222222"
	geminiKey    = "cr_3333333333333333333333333333333333333333333333333333333333333333"
	maxBodyBytes = 1 << 20
)

var hmacSecret = []byte("worker-test-hmac-secret-32-bytes")

// env is a worker wired to a fake control plane (real gRPC on loopback), the real relay and the
// mock Anthropic upstream.
type env struct {
	t        testing.TB
	cp       *fleettest.Server
	upstream *mockupstream.Server
	upURL    string
	fleet    *fleetclient.Client
	w        *Worker
	base     string
	client   *fasthttp.Client
	cancel   context.CancelFunc
	done     chan error
}

type envOpts struct {
	relay       Relayer
	noSnapshot  bool
	flushWindow time.Duration
	// quiet logs nothing (benchmarks), instead of everything to the test log.
	quiet bool
	// readTimeout and idleTimeout are the worker's (zero: its defaults).
	readTimeout, idleTimeout time.Duration
}

func startEnv(t testing.TB, o envOpts) *env {
	t.Helper()
	e := &env{t: t, cp: fleettest.Start(t, fleetToken), client: &fasthttp.Client{}}
	e.upstream = mockupstream.New(mockupstream.Config{})
	addr, err := e.upstream.Start("127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { _ = e.upstream.Close() })
	e.upURL = "http://" + addr
	if !o.noSnapshot {
		e.cp.SetSnapshot(1, e.snapshot())
	}

	logger := zaptest.NewLogger(t)
	if o.quiet {
		logger = zap.NewNop()
	}
	e.fleet, err = fleetclient.New(fleetclient.Options{
		Addr:          e.cp.Addr(),
		Token:         fleetToken,
		Logger:        logger.Named("fleet"),
		BatchInterval: 10 * time.Millisecond,
		MaxBackoff:    100 * time.Millisecond,
		FlushTimeout:  max(o.flushWindow, 3*time.Second),
	})
	require.NoError(t, err)
	rl := o.relay
	if rl == nil {
		rl = relay.New(relay.Options{Logger: logger, MaxAttempts: 2})
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	e.base = "http://" + ln.Addr().String()
	e.w = New(Options{
		Listener:        ln,
		Logger:          logger,
		Relay:           rl,
		Fleet:           e.fleet,
		MaxBodySize:     maxBodyBytes,
		ShutdownTimeout: 5 * time.Second,
		Version:         "1.2.3",
		ReadTimeout:     o.readTimeout,
		IdleTimeout:     o.idleTimeout,
	})
	ctx, cancel := context.WithCancel(context.Background())
	e.cancel = cancel
	e.done = make(chan error, 1)
	go func() { e.done <- e.w.Run(ctx) }()
	t.Cleanup(e.stop)
	if !o.noSnapshot {
		e.waitReady()
	}
	return e
}

func (e *env) waitReady() {
	select {
	case <-e.fleet.Ready():
	case <-time.After(5 * time.Second):
		e.t.Fatal("worker got no snapshot")
	}
}

// stop shuts the worker down and waits for Run (idempotent).
func (e *env) stop() {
	e.cancel()
	select {
	case err, ok := <-e.done:
		if ok {
			require.NoError(e.t, err)
			close(e.done)
		}
	case <-time.After(20 * time.Second):
		e.t.Fatal("Run did not return")
	}
}

func (e *env) snapshot() *crsv1.Snapshot {
	wk := func(plain, id string, k *crsv1.ApiKey) *crsv1.WorkerKey {
		k.Id, k.Name = id, "key "+id
		return &crsv1.WorkerKey{Hash: keyhash.HMAC(hmacSecret, []byte(plain)), Key: k}
	}
	return &crsv1.Snapshot{
		Keys: []*crsv1.WorkerKey{
			wk(goodKey, "key-good", &crsv1.ApiKey{IsActive: true, TokenLimit: 1000,
				EnableModelRestriction: true, RestrictedModels: []string{"claude-opus-4-20250514"}}),
			wk(disabledKey, "key-disabled", &crsv1.ApiKey{IsActive: false}),
			wk(geminiKey, "key-gemini", &crsv1.ApiKey{IsActive: true, Permissions: []string{"gemini"}}),
		},
		Accounts: []*crsv1.Account{{
			Id: "acc-1", Name: "official", Type: "claude-official", Platform: "claude", Priority: 50,
			AccountType: "shared", BaseUrl: e.upURL,
			Credentials: &crsv1.Account_Oauth{Oauth: &crsv1.OAuthCredential{AccessToken: "sk-ant-oat01-test"}},
			Status:      &crsv1.AccountStatus{State: "active"},
		}},
		Hashing: &crsv1.KeyHashing{HmacSecret: hmacSecret},
	}
}

type resp struct {
	status int
	header map[string]string
	body   []byte
}

func (r resp) json(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	require.NoError(t, json.Unmarshal(r.body, &m), "body %s", r.body)
	return m
}

func (e *env) do(method, path, key string, body []byte, headers ...string) resp {
	e.t.Helper()
	req := fasthttp.AcquireRequest()
	defer fasthttp.ReleaseRequest(req)
	res := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseResponse(res)
	req.SetRequestURI(e.base + path)
	req.Header.SetMethod(method)
	if key != "" {
		req.Header.Set("x-api-key", key)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	if body != nil {
		req.Header.SetContentType("application/json")
		req.SetBody(body)
	}
	require.NoError(e.t, e.client.DoTimeout(req, res, 10*time.Second))
	h := map[string]string{}
	for k, v := range res.Header.All() {
		h[strings.ToLower(string(k))] = string(v)
	}
	return resp{status: res.StatusCode(), header: h, body: append([]byte(nil), res.Body()...)}
}

func messagesBody(stream bool, extra string) []byte {
	return []byte(fmt.Sprintf(`{"model":"claude-sonnet-4-5-20250929","max_tokens":64,"stream":%t,%s"messages":[{"role":"user","content":"hi"}]}`, stream, extra))
}

func TestBeforeFirstSnapshot(t *testing.T) {
	e := startEnv(t, envOpts{noSnapshot: true})
	require.Eventually(t, func() bool {
		r := e.do("GET", "/health", "", nil)
		return r.status == 503
	}, 5*time.Second, 20*time.Millisecond)
	h := e.do("GET", "/api/health", "", nil)
	require.Equal(t, 503, h.status)
	require.Equal(t, "unhealthy", h.json(t)["status"])
	require.Equal(t, false, h.json(t)["healthy"])

	r := e.do("POST", "/api/v1/messages", goodKey, messagesBody(false, ""))
	require.Equal(t, 503, r.status)
	require.JSONEq(t, `{"error":"Service starting","message":"Waiting for control plane state"}`, string(r.body))
	require.NotEmpty(t, r.header["x-request-id"])

	// Routes without a key work before the snapshot.
	require.Equal(t, 200, e.do("POST", "/api/api/event_logging/batch", "", []byte(`{}`)).status)

	e.cp.SetSnapshot(1, e.snapshot())
	e.waitReady()
	h = e.do("GET", "/health", "", nil)
	require.Equal(t, 200, h.status)
	m := h.json(t)
	require.Equal(t, "healthy", m["status"])
	require.Equal(t, "claude-relay-service", m["service"])
	require.Equal(t, "1.2.3", m["version"])
	require.Equal(t, true, m["healthy"])
	require.Equal(t, float64(1), m["activeAccounts"])
	require.Equal(t, float64(1), m["totalAccounts"])
	require.Regexp(t, `^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$`, m["timestamp"])
}

func TestAuthResponses(t *testing.T) {
	e := startEnv(t, envOpts{})
	tests := []struct {
		name    string
		headers []string
		want    string
	}{
		{"missing", nil, `{"error":"Missing API key","message":"Please provide an API key in the x-api-key, x-goog-api-key, or Authorization header"}`},
		{"too short", []string{"x-api-key", "cr_short"}, `{"error":"Invalid API key format","message":"API key format is invalid"}`},
		{"wrong prefix", []string{"authorization", "Bearer sk-ant-api03-abcdef"}, `{"error":"Invalid API key","message":"Invalid API key format"}`},
		{"unknown", []string{"x-goog-api-key", "cr_" + strings.Repeat("9", 64)}, `{"error":"Invalid API key","message":"API key not found"}`},
		{"disabled", []string{"api-key", disabledKey}, `{"error":"Invalid API key","message":"API key is disabled"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := e.do("POST", "/api/v1/messages", "", messagesBody(false, ""), tt.headers...)
			require.Equal(t, 401, r.status)
			require.Equal(t, tt.want, string(r.body))
			require.Equal(t, "application/json; charset=utf-8", r.header["content-type"])
			require.NotEmpty(t, r.header["x-request-id"])
		})
	}
	t.Run("query key", func(t *testing.T) {
		r := e.do("GET", "/claude/v1/models?key="+goodKey, "", nil)
		require.Equal(t, 200, r.status)
	})
}

func TestValidationAndPermission(t *testing.T) {
	e := startEnv(t, envOpts{})
	tests := []struct {
		name, body, want string
	}{
		{"invalid json", `{"messages":`, `{"error":"Invalid request","message":"Request body must be a valid JSON object"}`},
		{"scalar", `42`, `{"error":"Invalid request","message":"Request body must be a valid JSON object"}`},
		{"no messages", `{"model":"claude-sonnet-4-5"}`, `{"error":"Invalid request","message":"Missing or invalid field: messages (must be an array)"}`},
		{"messages object", `{"messages":{}}`, `{"error":"Invalid request","message":"Missing or invalid field: messages (must be an array)"}`},
		{"empty messages", `{"messages":[]}`, `{"error":"Invalid request","message":"Messages array cannot be empty"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := e.do("POST", "/api/v1/messages", goodKey, []byte(tt.body))
			require.Equal(t, 400, r.status)
			require.Equal(t, tt.want, string(r.body))
		})
	}
	t.Run("permission", func(t *testing.T) {
		r := e.do("POST", "/claude/v1/messages", geminiKey, messagesBody(false, ""))
		require.Equal(t, 403, r.status)
		require.Equal(t, `{"error":{"type":"permission_error","message":"此 API Key 无权访问 Claude 服务"}}`, string(r.body))
	})
	t.Run("no account supports the model", func(t *testing.T) {
		r := e.do("POST", "/api/v1/messages", goodKey, []byte(`{"model":"gpt-4o","messages":[{"role":"user","content":"x"}]}`))
		require.Equal(t, 500, r.status)
		m := r.json(t)
		require.Equal(t, "Relay service error", m["error"])
		require.Equal(t, "No available Claude accounts support the requested model: gpt-4o", m["message"])
		require.NotEmpty(t, m["timestamp"])
	})
}

func TestNotFoundTooLargeAndStaticRoutes(t *testing.T) {
	e := startEnv(t, envOpts{})

	r := e.do("GET", "/nope/x?y=1", "", nil)
	require.Equal(t, 404, r.status)
	m := r.json(t)
	require.Equal(t, "Not Found", m["error"])
	require.Equal(t, "Route /nope/x?y=1 not found", m["message"])
	require.NotEmpty(t, m["timestamp"])
	require.NotEmpty(t, r.header["x-request-id"])

	require.Equal(t, 404, e.do("GET", "/api/v1/messages", goodKey, nil).status, "wrong method")
	require.Equal(t, 404, e.do("POST", "/api/v1/models", goodKey, []byte(`{}`)).status, "wrong method")

	// Over the limit by Content-Length: refused before the body is read (a client still writing
	// it would see a broken pipe, so the head is sent alone).
	conn, err := net.Dial("tcp", strings.TrimPrefix(e.base, "http://"))
	require.NoError(t, err)
	defer conn.Close()
	_, err = fmt.Fprintf(conn, "POST /api/v1/messages HTTP/1.1\r\nHost: x\r\nx-api-key: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n", goodKey, maxBodyBytes+1)
	require.NoError(t, err)
	var res fasthttp.Response
	require.NoError(t, res.Read(bufio.NewReader(conn)))
	require.Equal(t, 413, res.StatusCode())
	require.Equal(t, `{"error":"Payload Too Large","message":"Request body size exceeds limit","limit":"1MB"}`, string(res.Body()))
	require.NotEmpty(t, res.Header.Peek("X-Request-ID"))

	for _, p := range []string{"/api/event_logging/batch", "/api/api/event_logging/batch", "/claude/api/event_logging/batch"} {
		r := e.do("POST", p, "", []byte(`{"events":[]}`))
		require.Equal(t, 200, r.status, p)
		require.Equal(t, `{"success":true}`, string(r.body))
	}
	for _, p := range []string{"/", "/api", "/claude", "/api/"} {
		head := e.do("HEAD", p, "", nil)
		require.Equal(t, 200, head.status, p)
		require.Empty(t, head.body)
		require.Equal(t, 200, e.do("GET", p, "", nil).status, p)
	}
	require.Equal(t, 200, e.do("GET", "/API/V1/MODELS/", goodKey, nil).status, "Express matches case-insensitively, trailing slash ignored")

	r = e.do("GET", "/api/v1/models", goodKey, nil)
	require.Equal(t, 200, r.status)
	var models struct {
		Object string `json:"object"`
		Data   []struct {
			ID, Object, OwnedBy string
			Created             int64
		} `json:"data"`
	}
	require.NoError(t, json.Unmarshal(r.body, &models))
	require.Equal(t, "list", models.Object)
	require.NotEmpty(t, models.Data)
	for _, d := range models.Data {
		require.NotEqual(t, "claude-opus-4-20250514", d.ID, "restricted model filtered out")
		require.True(t, strings.HasPrefix(d.ID, "claude-"))
	}
	require.Contains(t, string(r.body), `"owned_by":"anthropic"`)
}

func TestKeyInfoRoutes(t *testing.T) {
	e := startEnv(t, envOpts{})
	r := e.do("GET", "/api/v1/key-info", goodKey, nil)
	require.Equal(t, 200, r.status)
	m := r.json(t)
	ki := m["keyInfo"].(map[string]any)
	require.Equal(t, "key-good", ki["id"])
	require.Equal(t, "key key-good", ki["name"])
	require.Equal(t, float64(1000), ki["tokenLimit"])
	usage := ki["usage"].(map[string]any)
	require.Contains(t, usage, "total")
	require.Contains(t, usage["total"].(map[string]any), "allTokens")

	r = e.do("GET", "/claude/v1/usage", goodKey, nil)
	require.Equal(t, 200, r.status)
	require.Equal(t, map[string]any{"tokens": float64(1000), "requests": float64(0)}, r.json(t)["limits"])

	r = e.do("GET", "/api/v1/me", goodKey, nil)
	require.Equal(t, 200, r.status)
	m = r.json(t)
	require.Equal(t, "user_key-good", m["id"])
	require.Equal(t, "user", m["type"])
	require.Equal(t, "key key-good", m["display_name"])

	r = e.do("GET", "/api/v1/organizations/org-123/usage", goodKey, nil)
	require.Equal(t, 200, r.status)
	require.JSONEq(t, `{"object":"usage","data":[{"type":"credit_balance","credit_balance":1000}]}`, string(r.body))
	require.Equal(t, 404, e.do("GET", "/api/v1/organizations//usage", goodKey, nil).status)
}

func TestMessagesRelayedAndReported(t *testing.T) {
	e := startEnv(t, envOpts{})
	const uid = `"metadata":{"user_id":"user_0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef_account__session_abc-123"},`
	r := e.do("POST", "/api/v1/messages", goodKey, messagesBody(false, uid), "anthropic-version", "2023-06-01")
	require.Equal(t, 200, r.status, "body %s", r.body)
	require.NotEmpty(t, r.header["x-request-id"])
	reqID := r.header["x-request-id"]

	require.Eventually(t, func() bool { return len(e.cp.Records()) == 1 }, 5*time.Second, 10*time.Millisecond)
	rec := e.cp.Records()[0]
	require.Equal(t, reqID, rec.GetRequestId())
	require.Equal(t, "key-good", rec.GetKeyId())
	require.Equal(t, "acc-1", rec.GetAccountId())
	require.Equal(t, "claude-official", rec.GetAccountType())
	require.Equal(t, int64(25), rec.GetInputTokens())
	require.Equal(t, int64(15), rec.GetOutputTokens())
	require.Equal(t, "/api/v1/messages", rec.GetEndpoint())
	require.False(t, rec.GetStream())

	// The session was bound to the account that served it.
	require.Eventually(t, func() bool {
		for _, b := range e.cp.BindCalls() {
			if b.GetSessionHash() == "abc-123" && b.GetAccountId() == "acc-1" && b.GetPlatform() == "claude" {
				return true
			}
		}
		return false
	}, 5*time.Second, 10*time.Millisecond)
	require.Empty(t, e.cp.Events(), "no success event for an active account")

	// Streaming.
	r = e.do("POST", "/claude/v1/messages", goodKey, messagesBody(true, ""))
	require.Equal(t, 200, r.status)
	require.Contains(t, r.header["content-type"], "text/event-stream")
	require.NotEmpty(t, r.header["x-request-id"])
	require.Contains(t, string(r.body), "event: message_stop")
	require.Eventually(t, func() bool { return len(e.cp.Records()) == 2 }, 5*time.Second, 10*time.Millisecond)
	require.True(t, e.cp.Records()[1].GetStream())

	// count_tokens is relayed without a usage record.
	r = e.do("POST", "/api/v1/messages/count_tokens", goodKey, messagesBody(false, ""))
	require.Equal(t, 200, r.status, "body %s", r.body)
	require.Contains(t, string(r.body), "input_tokens")

	m := e.do("GET", "/metrics", "", nil)
	require.Equal(t, 200, m.status)
	require.Contains(t, string(m.body), `crs_worker_requests_total{route="messages",status="200",platform="claude"} 2`)
	require.Contains(t, string(m.body), `crs_worker_tokens_total{type="input"} 50`)
	require.Contains(t, string(m.body), "crs_worker_snapshot_version 1")
	require.Contains(t, string(m.body), "crs_worker_upstream_ttfb_seconds_bucket")
	require.Contains(t, string(m.body), "crs_worker_usage_buffer_size")
	require.Len(t, e.cp.Records(), 2)
}

func TestUpstreamFailureReportsEvent(t *testing.T) {
	e := startEnv(t, envOpts{})
	e.upstream.Configure(mockupstream.Behavior{FailStatus: 529}, nil)
	r := e.do("POST", "/api/v1/messages", goodKey, messagesBody(false, ""))
	require.Equal(t, 529, r.status, "body %s", r.body)
	require.Eventually(t, func() bool { return len(e.cp.Events()) >= 1 }, 5*time.Second, 10*time.Millisecond)
	ev := e.cp.Events()[0]
	require.Equal(t, "acc-1", ev.GetAccountId())
	require.Equal(t, "overloaded", ev.GetKind())
	require.Equal(t, r.header["x-request-id"], ev.GetRequestId())
}

func TestReportSurvivesControlPlaneRestart(t *testing.T) {
	e := startEnv(t, envOpts{})
	e.cp.HoldAcks(true)
	for range 3 {
		require.Equal(t, 200, e.do("POST", "/api/v1/messages", goodKey, messagesBody(false, "")).status)
	}
	require.Eventually(t, func() bool { return len(e.cp.Records()) == 3 }, 5*time.Second, 10*time.Millisecond)
	require.Equal(t, 3, e.fleet.Pending(), "stored but not acknowledged")

	e.cp.Stop()
	require.Eventually(t, func() bool { return !e.fleet.Connected() }, 5*time.Second, 10*time.Millisecond)
	for range 2 {
		r := e.do("POST", "/api/v1/messages", goodKey, messagesBody(false, ""))
		require.Equal(t, 200, r.status, "serving from the last snapshot while the control plane is down")
	}
	require.Equal(t, 5, e.fleet.Pending())

	e.cp.HoldAcks(false)
	e.cp.Restart(t)
	require.Eventually(t, func() bool { return e.fleet.Pending() == 0 }, 10*time.Second, 20*time.Millisecond)
	require.Len(t, e.cp.Records(), 5, "none lost")
	require.Equal(t, 3, e.cp.Duplicates(), "unacknowledged records were resent")
}

func TestShutdownFlushesReports(t *testing.T) {
	e := startEnv(t, envOpts{})
	e.upstream.Configure(mockupstream.Behavior{Deltas: 5, DeltaText: "x", EventDelay: 60 * time.Millisecond, InputTokens: 7, OutputTokens: 3}, nil)
	// A stream is in progress when shutdown begins; it finishes and its usage is delivered.
	conn, err := net.Dial("tcp", strings.TrimPrefix(e.base, "http://"))
	require.NoError(t, err)
	defer conn.Close()
	body := messagesBody(true, "")
	_, err = fmt.Fprintf(conn, "POST /api/v1/messages HTTP/1.1\r\nHost: x\r\nx-api-key: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", goodKey, len(body), body)
	require.NoError(t, err)
	br := bufio.NewReader(conn)
	line, err := br.ReadString('\n')
	require.NoError(t, err)
	require.Contains(t, line, "200")

	e.stop()
	var all []byte
	for {
		b, err := br.ReadBytes('\n')
		all = append(all, b...)
		if err != nil || bytes.Contains(all, []byte("message_stop")) {
			break
		}
	}
	require.Contains(t, string(all), "message_stop", "the stream finished")
	recs := e.cp.Records()
	require.Len(t, recs, 1, "usage delivered before Run returned")
	require.Equal(t, int64(7), recs[0].GetInputTokens())
}

// fakeRelay answers 200 synchronously, or panics. reqs are copies taken during Serve (Body and
// Query are valid only then, the Request itself until done: the worker recycles it); handed are
// the Requests as the worker handed them over.
type fakeRelay struct {
	mu     sync.Mutex
	reqs   []*relay.Request
	handed []*relay.Request
	panic  bool
}

func (f *fakeRelay) Serve(ctx *fasthttp.RequestCtx, req *relay.Request, cands relay.Candidates, done func(*relay.Outcome)) {
	cp := *req
	cp.Body = append([]byte(nil), req.Body...)
	cp.Query = append([]byte(nil), req.Query...)
	cp.Headers = slices.Clone(req.Headers)
	f.mu.Lock()
	f.reqs = append(f.reqs, &cp)
	f.handed = append(f.handed, req)
	f.mu.Unlock()
	if f.panic {
		panic("boom")
	}
	acct := cands.Next()
	ctx.SetStatusCode(200)
	ctx.SetBodyString(`{"ok":true}`)
	done(&relay.Outcome{Account: acct, Status: 200, Attempts: 1,
		Usage:  &crsv1.UsageRecord{InputTokens: 1, OutputTokens: 2},
		Events: []*crsv1.AccountEvent{{AccountId: acct.GetId(), Kind: "success"}}})
}

func TestRequestHandedToRelay(t *testing.T) {
	fr := &fakeRelay{}
	e := startEnv(t, envOpts{relay: fr})
	r := e.do("POST", "/api/claude/v1/messages?beta=true", "Bearer "+goodKey, messagesBody(true, ""),
		"authorization", "Bearer "+goodKey, "anthropic-beta", "oauth-2025-04-20", "X-Stainless-Os", "Linux",
		"cookie", "a=b", "x-forwarded-for", "1.2.3.4")
	require.Equal(t, 200, r.status)
	require.Len(t, fr.reqs, 1)
	req := fr.reqs[0]
	require.Equal(t, r.header["x-request-id"], req.RequestID)
	require.Equal(t, "key-good", req.KeyID)
	require.Equal(t, "/api/claude/v1/messages", req.Endpoint)
	require.Equal(t, relay.OpMessages, req.Op)
	require.Equal(t, "beta=true", string(req.Query))
	require.Equal(t, "claude-sonnet-4-5-20250929", req.Model)
	require.True(t, req.Stream)
	require.JSONEq(t, string(messagesBody(true, "")), string(req.Body))
	require.Nil(t, fr.handed[0].Body, "the client's body, fasthttp's memory, is not reachable after Serve")
	require.Nil(t, fr.handed[0].Query)
	names := map[string]string{}
	for _, h := range req.Headers {
		names[h.Name] = h.Value
	}
	require.Equal(t, "oauth-2025-04-20", names["anthropic-beta"])
	require.Equal(t, "Linux", names["x-stainless-os"])
	require.Equal(t, "application/json", names["content-type"])
	for _, secret := range []string{"x-api-key", "authorization", "cookie", "x-forwarded-for", "host"} {
		require.NotContains(t, names, secret)
	}

	// The usage record is completed by the worker; the success event on an active account is not sent.
	require.Eventually(t, func() bool { return len(e.cp.Records()) == 1 }, 5*time.Second, 10*time.Millisecond)
	rec := e.cp.Records()[0]
	require.Equal(t, req.RequestID, rec.GetRequestId())
	require.Equal(t, "acc-1", rec.GetAccountId())
	require.Equal(t, "claude-official", rec.GetAccountType())
	require.Equal(t, "/api/claude/v1/messages", rec.GetEndpoint())
	require.True(t, rec.GetStream())
	require.NotNil(t, rec.GetStartedAt())
	time.Sleep(50 * time.Millisecond)
	require.Empty(t, e.cp.Events())

	// On an account whose pushed state is not plainly active (a limit that has run out), a success is
	// news: it lets the control plane clear the state.
	acc := e.snapshot().Accounts[0]
	acc.Status = &crsv1.AccountStatus{State: "rate_limited", Until: timestamppb.New(time.Now().Add(-time.Minute))}
	e.cp.PushDelta(1, 2, &crsv1.Delta{UpsertAccounts: []*crsv1.Account{acc}})
	require.Eventually(t, func() bool { return e.fleet.State().Version() == 2 }, 5*time.Second, 10*time.Millisecond)
	require.Equal(t, 200, e.do("POST", "/api/v1/messages", goodKey, messagesBody(false, "")).status)
	require.Eventually(t, func() bool { return len(e.cp.Events()) == 1 }, 5*time.Second, 10*time.Millisecond)
	require.Equal(t, "success", e.cp.Events()[0].GetKind())
	require.NotEmpty(t, e.cp.Events()[0].GetRequestId())
}

func TestPanicIsA500(t *testing.T) {
	e := startEnv(t, envOpts{relay: &fakeRelay{panic: true}})
	r := e.do("POST", "/api/v1/messages", goodKey, messagesBody(false, ""))
	require.Equal(t, 500, r.status)
	m := r.json(t)
	require.Equal(t, "Internal Server Error", m["error"])
	require.Equal(t, "Something went wrong", m["message"])
	require.Equal(t, r.header["x-request-id"], m["requestId"])
	// Still serving.
	require.Equal(t, 200, e.do("GET", "/health", "", nil).status)
	met := e.do("GET", "/metrics", "", nil)
	require.Contains(t, string(met.body), "crs_worker_panics_total 1")
	require.Contains(t, string(met.body), "crs_worker_inflight_relays 0", "the request was accounted for")
}

// lateRelay answers at once but calls done later (as a stream does, after the handler returned),
// when the test calls finish.
type lateRelay struct {
	mu     sync.Mutex
	handed []*relay.Request
	dones  []func()
}

func (l *lateRelay) Serve(ctx *fasthttp.RequestCtx, req *relay.Request, cands relay.Candidates, done func(*relay.Outcome)) {
	acct := cands.Next()
	ctx.SetStatusCode(200)
	l.mu.Lock()
	defer l.mu.Unlock()
	l.handed = append(l.handed, req)
	l.dones = append(l.dones, func() {
		done(&relay.Outcome{Account: acct, Status: 200, Attempts: 1, Usage: &crsv1.UsageRecord{InputTokens: 1}})
	})
}

// The per-request state the relay holds stays the request's until the relay called done, however
// many requests the handler serves meanwhile; then it reports that request's usage.
func TestRelayStateKeptUntilDone(t *testing.T) {
	lr := &lateRelay{}
	e := startEnv(t, envOpts{relay: lr})
	var ids []string
	for range 3 {
		r := e.do("POST", "/api/v1/messages", goodKey, messagesBody(false, ""))
		require.Equal(t, 200, r.status)
		ids = append(ids, r.header["x-request-id"])
	}
	lr.mu.Lock()
	handed, dones := lr.handed, lr.dones
	lr.mu.Unlock()
	require.Len(t, handed, 3)
	require.NotSame(t, handed[0], handed[1])
	require.NotSame(t, handed[1], handed[2])
	require.NotSame(t, handed[0], handed[2])
	for i, req := range handed {
		require.Equal(t, ids[i], req.RequestID, "request %d", i)
	}
	for _, done := range dones {
		done()
	}
	require.Eventually(t, func() bool { return len(e.cp.Records()) == 3 }, 5*time.Second, 10*time.Millisecond)
	got := []string{}
	for _, rec := range e.cp.Records() {
		got = append(got, rec.GetRequestId())
	}
	require.ElementsMatch(t, ids, got)
}
