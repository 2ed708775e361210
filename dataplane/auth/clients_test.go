package auth

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/valyala/fasthttp"

	"github.com/crsrelay/crs/dataplane/apierr"
	"github.com/crsrelay/crs/dataplane/snapshot"
	crsv1 "github.com/crsrelay/crs/gen/crs/v1"
)

// policyState is a snapshot with one key, its pushed usage and settings.
func policyState(t testing.TB, k *crsv1.ApiKey, u *crsv1.KeyUsageState, settings *crsv1.Settings) *snapshot.State {
	t.Helper()
	if k.Id == "" {
		k.Id = "key-1"
	}
	snap := &crsv1.Snapshot{
		Keys:     []*crsv1.WorkerKey{{Hash: "h", Key: k}},
		Settings: settings,
		Hashing:  &crsv1.KeyHashing{HmacSecret: hmacSecret},
	}
	if u != nil {
		u.KeyId = k.Id
		snap.KeyUsage = []*crsv1.KeyUsageState{u}
	}
	st, err := snapshot.Apply(nil, &crsv1.SyncMessage{Version: 1, Body: &crsv1.SyncMessage_Snapshot{Snapshot: snap}})
	require.NoError(t, err)
	return st
}

// rendered renders a refusal the way the worker writes it: status, headers and body.
type rendered struct {
	status int
	header map[string]string
	body   string
}

func render(t *testing.T, err error) rendered {
	t.Helper()
	var e *apierr.Error
	require.True(t, errors.As(err, &e), "refusal %v is not an apierr.Error", err)
	var ctx fasthttp.RequestCtx
	apierr.Write(&ctx, err)
	h := map[string]string{}
	for k, v := range ctx.Response.Header.All() {
		h[strings.ToLower(string(k))] = string(v)
	}
	return rendered{status: ctx.Response.StatusCode(), header: h, body: string(ctx.Response.Body())}
}

// ccUserID is a metadata.user_id in the JSON form Claude Code 2.x sends.
var ccUserID = mustJSON(mustJSON(map[string]string{
	"device_id": strings.Repeat("d", 64), "account_uuid": "", "session_id": "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0",
}))

func mustJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return string(b)
}

func ccBody(userID string) []byte {
	meta := ""
	if userID != "" {
		meta = `"metadata":{"user_id":` + userID + `},`
	}
	return []byte(`{"model":"claude-sonnet-4-5",` + meta + `"messages":[{"role":"user","content":"hi"}]}`)
}

// ccHeaders are the headers Claude Code sends.
var ccHeaders = map[string]string{
	"User-Agent": "claude-cli/2.0.14 (external, cli)", "x-app": "cli",
	"anthropic-beta": "claude-code-20250219,oauth-2025-04-20", "anthropic-version": "2023-06-01",
}

func without(h map[string]string, name string) map[string]string {
	out := map[string]string{}
	for k, v := range h {
		if !strings.EqualFold(k, name) {
			out[k] = v
		}
	}
	return out
}

func with(h map[string]string, name, value string) map[string]string {
	out := without(h, name)
	out[name] = value
	return out
}

func clientInput(st *snapshot.State, path string, headers map[string]string, body []byte) *Input {
	var req fasthttp.Request
	req.SetRequestURI(path)
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	k := st.KeyByHash("h")
	return &Input{
		Key: k, State: st, Path: append([]byte(nil), req.URI().Path()...), UserAgent: append([]byte(nil), req.Header.UserAgent()...),
		Header: &req.Header, Body: body, Now: time.Now(),
		CountTokens: strings.HasSuffix(path, "/count_tokens"),
	}
}

func TestClientRestriction(t *testing.T) {
	p := NewPolicy(PolicyOptions{})
	legacyID := `"user_` + strings.Repeat("a", 64) + `_account__session_0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"`
	tests := []struct {
		name    string
		allowed []string
		path    string
		headers map[string]string
		body    []byte
		ok      bool
	}{
		{"claude code, JSON user id", []string{"claude_code"}, "/api/v1/messages", ccHeaders, ccBody(ccUserID), true},
		{"a newer claude code version", []string{"claude_code"}, "/claude/v1/messages", with(ccHeaders, "User-Agent", "claude-cli/9.12.345 (external, sdk-ts)"), ccBody(ccUserID), true},
		{"claude code, legacy user id", []string{"claude_code"}, "/api/v1/messages", ccHeaders, ccBody(legacyID), true},
		{"claude code UA case-insensitive", []string{"claude_code"}, "/api/v1/messages", with(ccHeaders, "User-Agent", "Claude-CLI/1.0.0"), ccBody(ccUserID), true},
		{"models needs the UA only", []string{"claude_code"}, "/api/v1/models", map[string]string{"User-Agent": "claude-cli/1.0.110"}, nil, true},
		{"count_tokens skips the check", []string{"claude_code"}, "/api/v1/messages/count_tokens", map[string]string{"User-Agent": "curl/8.0"}, nil, true},
		{"curl", []string{"claude_code"}, "/api/v1/messages", map[string]string{"User-Agent": "curl/8.0"}, ccBody(ccUserID), false},
		{"claude code UA with two-part version", []string{"claude_code"}, "/api/v1/messages", with(ccHeaders, "User-Agent", "claude-cli/2.0"), ccBody(ccUserID), false},
		{"missing x-app", []string{"claude_code"}, "/api/v1/messages", without(ccHeaders, "x-app"), ccBody(ccUserID), false},
		{"blank anthropic-beta", []string{"claude_code"}, "/api/v1/messages", with(ccHeaders, "anthropic-beta", "  "), ccBody(ccUserID), false},
		{"missing anthropic-version", []string{"claude_code"}, "/api/v1/messages", without(ccHeaders, "anthropic-version"), ccBody(ccUserID), false},
		{"missing user id", []string{"claude_code"}, "/api/v1/messages", ccHeaders, ccBody(""), false},
		{"user id not a string", []string{"claude_code"}, "/api/v1/messages", ccHeaders, ccBody(`{"device_id":"d","session_id":"s"}`), false},
		{"user id JSON without session", []string{"claude_code"}, "/api/v1/messages", ccHeaders, ccBody(mustJSON(`{"device_id":"d"}`)), false},
		{"user id free text", []string{"claude_code"}, "/api/v1/messages", ccHeaders, ccBody(`"someone"`), false},
		{"claude code on a path it may not use", []string{"claude_code"}, "/openai/v1/chat/completions", ccHeaders, ccBody(ccUserID), false},
		{"gemini cli on the messages path", []string{"gemini_cli"}, "/api/v1/messages", map[string]string{"User-Agent": "GeminiCLI/0.1.5"}, nil, false},
		{"gemini cli generateContent", []string{"gemini_cli"}, "/gemini/v1beta/models/gemini-2.5-pro:generateContent", map[string]string{"User-Agent": "GeminiCLI/v0.1.5 (linux)"}, nil, true},
		{"gemini generateContent other UA", []string{"gemini_cli"}, "/gemini/v1beta/models/gemini-2.5-pro:generateContent", map[string]string{"User-Agent": "curl/8"}, nil, false},
		{"gemini other path any UA", []string{"gemini_cli"}, "/gemini/v1beta/models", map[string]string{"User-Agent": "curl/8"}, nil, true},
		{"codex", []string{"codex_cli"}, "/openai/responses", map[string]string{"User-Agent": "codex_cli_rs/0.38.0 (Ubuntu 22.4.0; x86_64) WindowsTerminal"}, nil, true},
		{"codex other UA", []string{"codex_cli"}, "/openai/responses", map[string]string{"User-Agent": "openai-python/1.0"}, nil, false},
		{"droid by UA", []string{"droid_cli"}, "/droid/claude/v1/messages", map[string]string{"User-Agent": "Mozilla factory-cli/0.19.3"}, nil, true},
		{"droid by header", []string{"droid_cli"}, "/droid/openai/v1/responses", map[string]string{"User-Agent": "node", "x-factory-client": "Droid-CLI"}, nil, true},
		{"droid neither", []string{"droid_cli"}, "/droid/openai/v1/responses", map[string]string{"User-Agent": "node"}, nil, false},
		{"second allowed client matches", []string{"gemini_cli", "claude_code"}, "/api/v1/messages", ccHeaders, ccBody(ccUserID), true},
		{"unknown client id is skipped", []string{"cursor"}, "/api/v1/messages", ccHeaders, ccBody(ccUserID), false},
		{"path prefix is case-insensitive", []string{"claude_code"}, "/API/V1/MODELS", map[string]string{"User-Agent": "claude-cli/1.0.0"}, nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := policyState(t, &crsv1.ApiKey{IsActive: true, EnableClientRestriction: true, AllowedClients: tt.allowed}, nil, nil)
			in := clientInput(st, tt.path, tt.headers, tt.body)
			require.True(t, p.Applies(in.Key, st))
			err := p.Check(in)
			if tt.ok {
				require.NoError(t, err)
				return
			}
			require.ErrorIs(t, err, ErrClientNotAllowed)
			r := render(t, err)
			require.Equal(t, 403, r.status)
			want := `{"error":"Client not allowed","message":"Your client is not authorized to use this API key","allowedClients":` +
				mustJSON(tt.allowed) + `,"userAgent":` + mustJSON(tt.headers["User-Agent"]) + `}`
			require.Equal(t, want, r.body)
			require.Equal(t, "application/json; charset=utf-8", r.header["content-type"])
		})
	}

	t.Run("restriction disabled", func(t *testing.T) {
		st := policyState(t, &crsv1.ApiKey{IsActive: true, AllowedClients: []string{"claude_code"}}, nil, nil)
		in := clientInput(st, "/api/v1/messages", map[string]string{"User-Agent": "curl"}, nil)
		require.False(t, p.Applies(in.Key, st))
		require.NoError(t, p.Check(in))
	})
	t.Run("no user agent", func(t *testing.T) {
		st := policyState(t, &crsv1.ApiKey{IsActive: true, EnableClientRestriction: true, AllowedClients: []string{"codex_cli"}}, nil, nil)
		r := render(t, p.Check(clientInput(st, "/openai/responses", nil, nil)))
		require.Equal(t, `{"error":"Client not allowed","message":"Your client is not authorized to use this API key","allowedClients":["codex_cli"],"userAgent":""}`, r.body)
	})
}

func TestClaudeCodeOnly(t *testing.T) {
	p := NewPolicy(PolicyOptions{})
	const want = `{"error":{"type":"client_validation_error","message":"This endpoint only accepts requests from Claude Code CLI"}}`
	curl := map[string]string{"User-Agent": "curl/8.0"}
	tests := []struct {
		name     string
		key      *crsv1.ApiKey
		global   bool
		path     string
		headers  map[string]string
		body     []byte
		refused  bool
		wantBody string
	}{
		{"global, not claude code", &crsv1.ApiKey{IsActive: true}, true, "/api/v1/messages", curl, ccBody(ccUserID), true, want},
		{"global, claude route alias", &crsv1.ApiKey{IsActive: true}, true, "/claude/v1/messages", curl, ccBody(ccUserID), true, want},
		{"global, claude code passes", &crsv1.ApiKey{IsActive: true}, true, "/api/v1/messages", ccHeaders, ccBody(ccUserID), false, ""},
		{"global, other path unaffected", &crsv1.ApiKey{IsActive: true}, true, "/api/v1/models", curl, nil, false, ""},
		{"global, count_tokens skipped", &crsv1.ApiKey{IsActive: true}, true, "/api/v1/messages/count_tokens", curl, nil, false, ""},
		{"global off", &crsv1.ApiKey{IsActive: true}, false, "/api/v1/messages", curl, ccBody(ccUserID), false, ""},
		// A key allowing claude_code alone: step 4 refuses first with its own shape.
		{"key claude_code only", &crsv1.ApiKey{IsActive: true, EnableClientRestriction: true, AllowedClients: []string{"claude_code"}},
			false, "/api/v1/messages", curl, ccBody(ccUserID), true,
			`{"error":"Client not allowed","message":"Your client is not authorized to use this API key","allowedClients":["claude_code"],"userAgent":"curl/8.0"}`},
		// Step 4 passes through droid; step 5 applies only when claude_code is the only client.
		{"key with two clients", &crsv1.ApiKey{IsActive: true, EnableClientRestriction: true, AllowedClients: []string{"claude_code", "droid_cli"}},
			false, "/api/v1/messages", ccHeaders, ccBody(ccUserID), false, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := policyState(t, tt.key, nil, &crsv1.Settings{ClaudeCodeOnlyEnabled: tt.global})
			in := clientInput(st, tt.path, tt.headers, tt.body)
			err := p.Check(in)
			if !tt.refused {
				require.NoError(t, err)
				return
			}
			r := render(t, err)
			require.Equal(t, 403, r.status)
			require.Equal(t, tt.wantBody, r.body)
		})
	}
	t.Run("global applies even to unrestricted keys", func(t *testing.T) {
		st := policyState(t, &crsv1.ApiKey{IsActive: true}, nil, &crsv1.Settings{ClaudeCodeOnlyEnabled: true})
		require.True(t, p.Applies(st.KeyByHash("h"), st))
		require.ErrorIs(t, p.Check(clientInput(st, "/api/v1/messages", curl, ccBody(ccUserID))), ErrNotClaudeCode)
	})
}

// TestClientsAreData: a new client release is a data change — a spec override takes effect
// without code.
func TestClientsAreData(t *testing.T) {
	specs := DefaultClients()
	for i := range specs {
		if specs[i].ID == ClientClaudeCode {
			specs[i].UserAgent = `^(claude-cli|claude-code)/\d+`
			specs[i].RequiredHeaders = []string{"anthropic-version"}
		}
	}
	p := NewPolicy(PolicyOptions{Clients: specs})
	st := policyState(t, &crsv1.ApiKey{IsActive: true, EnableClientRestriction: true, AllowedClients: []string{"claude_code"}}, nil, nil)
	h := map[string]string{"User-Agent": "claude-code/3", "anthropic-version": "2023-06-01"}
	require.NoError(t, p.Check(clientInput(st, "/api/v1/messages", h, ccBody(ccUserID))))
	require.Error(t, NewPolicy(PolicyOptions{}).Check(clientInput(st, "/api/v1/messages", h, ccBody(ccUserID))))
}

func TestCompileClients(t *testing.T) {
	_, err := CompileClients(DefaultClients())
	require.NoError(t, err)
	_, err = CompileClients([]ClientSpec{{ID: ""}, {ID: "a", UserAgent: "("}, {ID: "b"}, {ID: "b"}, {ID: "c", OrHeader: "x"}})
	require.Error(t, err)
	msg := err.Error()
	for _, want := range []string{"clients[0]", "clients[1] (a): user_agent", "clients[3] (b): duplicate id", "clients[4] (c): or_header"} {
		require.Contains(t, msg, want)
	}
	require.Panics(t, func() { NewPolicy(PolicyOptions{Clients: []ClientSpec{{ID: "x", UserAgent: "("}}}) })
}

func TestValidUserID(t *testing.T) {
	hex64 := strings.Repeat("0a", 32)
	tests := []struct {
		raw  string
		want bool
	}{
		{ccUserID, true},
		{mustJSON(`{"device_id":"d","session_id":"s"}`), true},
		{mustJSON(`{"device_id":"","session_id":"s"}`), false},
		{mustJSON(`{"device_id":"d","session_id":5}`), false},
		{mustJSON(`{not json`), false},
		{`"user_` + hex64 + `_account_acc-uuid_session_0f1e2d3c-4b5a"`, true},
		{`"user_` + hex64 + `_account__session_abc"`, true},
		{`"user_` + hex64[:62] + `_account__session_abc"`, false},
		{`"user_` + hex64 + `_account__session_ABC"`, false},
		{`""`, false},
		{`null`, false},
		{`42`, false},
		{``, false},
	}
	for _, tt := range tests {
		require.Equal(t, tt.want, ValidUserID(json.RawMessage(tt.raw)), tt.raw)
	}
}

func FuzzClientCheck(f *testing.F) {
	f.Add("/api/v1/messages", "claude-cli/1.0.0", string(ccBody(ccUserID)))
	f.Add("/gemini/x:generateContent", "GeminiCLI/1", `{}`)
	f.Add("/droid/x", "factory-cli/1.2.3", `{"metadata":{"user_id":"user_"}}`)
	p := NewPolicy(PolicyOptions{})
	st := policyState(f, &crsv1.ApiKey{IsActive: true, EnableClientRestriction: true,
		AllowedClients: []string{"claude_code", "gemini_cli", "codex_cli", "droid_cli"}}, nil, nil)
	f.Fuzz(func(t *testing.T, path, ua, body string) {
		var h fasthttp.RequestHeader
		h.Set("x-app", "cli")
		h.Set("anthropic-beta", "b")
		h.Set("anthropic-version", "v")
		in := &Input{Key: st.KeyByHash("h"), State: st, Path: []byte(path), UserAgent: []byte(ua), Header: &h, Body: []byte(body), Now: time.Now()}
		if err := p.Check(in); err != nil {
			var e *apierr.Error
			if !errors.As(err, &e) || !json.Valid(e.AppendJSON(nil, time.Now())) {
				t.Fatalf("refusal %v does not render as JSON", err)
			}
		}
	})
}
