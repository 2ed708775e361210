package adminhttp

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/VictoriaMetrics/metrics"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"

	"github.com/crsrelay/crs/controlplane/admin"
	"github.com/crsrelay/crs/controlplane/secret"
	"github.com/crsrelay/crs/controlplane/store/embedded"
	crsv1 "github.com/crsrelay/crs/gen/crs/v1"
)

const token = "test-admin-token-0123456789"

// togglePinger wraps the real store's Ping so a test can make it fail.
type togglePinger struct {
	next Pinger
	down atomic.Bool
}

func (p *togglePinger) Ping(ctx context.Context) error {
	if p.down.Load() {
		return errors.New("connection refused")
	}
	return p.next.Ping(ctx)
}

type env struct {
	srv   *httptest.Server
	ping  *togglePinger
	token string
}

func newEnv(t *testing.T) *env {
	t.Helper()
	ctx := context.Background()
	st, err := embedded.Open(t.TempDir())
	require.NoError(t, err)
	t.Cleanup(func() { _ = st.Close() })
	key, err := secret.GenerateKey()
	require.NoError(t, err)
	sealer, err := secret.NewSealer(key)
	require.NoError(t, err)
	hmac, err := admin.LoadKeyHMACSecret(ctx, st)
	require.NoError(t, err)
	svc, err := admin.New(admin.Options{Store: st, Sealer: sealer, HMACSecret: hmac, Logger: zap.NewNop()})
	require.NoError(t, err)
	ping := &togglePinger{next: st}
	h, err := New(ctx, Options{Admin: svc, Auth: admin.NewTokenAuth(token), Store: ping, Metrics: metrics.NewSet()})
	require.NoError(t, err)
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return &env{srv: srv, ping: ping, token: token}
}

type reply struct {
	status int
	header http.Header
	body   map[string]any
	raw    string
}

func (e *env) do(t *testing.T, method, path, body string, hdr ...string) reply {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, e.srv.URL+path, rd)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+e.token)
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(hdr); i += 2 {
		if hdr[i+1] == "" {
			req.Header.Del(hdr[i])
		} else {
			req.Header.Set(hdr[i], hdr[i+1])
		}
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	r := reply{status: resp.StatusCode, header: resp.Header, raw: string(b)}
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") && len(b) > 0 {
		require.NoError(t, json.Unmarshal(b, &r.body), "body: %s", b)
	}
	return r
}

func TestAuth(t *testing.T) {
	e := newEnv(t)
	tests := []struct {
		name string
		auth string
	}{
		{"no header", ""},
		{"wrong token", "Bearer nope"},
		{"token prefix", "Bearer " + token[:10]},
		{"basic scheme", "Basic " + token},
		{"bare token", token},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, target := range []struct{ method, path, body string }{
				{"GET", "/admin/v1/api-keys", ""},
				{"POST", "/admin/v1/api-keys", `{"name":"x"}`},
				{"GET", "/admin/v1/no-such-route", ""},
			} {
				r := e.do(t, target.method, target.path, target.body, "Authorization", tt.auth)
				require.Equal(t, http.StatusUnauthorized, r.status, target.path)
				require.Equal(t, float64(16), r.body["code"])
				require.Equal(t, "missing or invalid admin token", r.body["message"])
				require.Equal(t, `Bearer realm="crs admin"`, r.header.Get("WWW-Authenticate"))
			}
		})
	}
	r := e.do(t, "GET", "/admin/v1/api-keys", "", "Authorization", "bearer "+token)
	require.Equal(t, http.StatusOK, r.status, "scheme is case-insensitive")
}

func TestKeyLifecycleOverREST(t *testing.T) {
	e := newEnv(t)

	r := e.do(t, "POST", "/admin/v1/api-keys", `{"name":"alice","dailyCostLimit":2.5,"tags":["team"]}`)
	require.Equal(t, http.StatusOK, r.status, r.raw)
	require.Equal(t, "no-store", r.header.Get("Cache-Control"))
	plain := r.body["key"].(string)
	require.Regexp(t, `^cr_[0-9a-f]{64}$`, plain)
	k := r.body["apiKey"].(map[string]any)
	id := k["id"].(string)
	require.Equal(t, plain[:7]+"…", k["keyPreview"], "lowerCamelCase JSON")
	require.Equal(t, 2.5, k["dailyCostLimit"])
	require.NotContains(t, k, "concurrencyLimit", "zero values are omitted")

	r = e.do(t, "GET", "/admin/v1/api-keys/"+id, "")
	require.Equal(t, http.StatusOK, r.status)
	require.Equal(t, "alice", r.body["name"])
	require.NotContains(t, r.raw, plain[3:], "the plaintext is shown once")

	r = e.do(t, "GET", "/admin/v1/api-keys?pageSize=1&search=ALI", "")
	require.Equal(t, http.StatusOK, r.status, r.raw)
	require.Len(t, r.body["apiKeys"], 1)
	require.Equal(t, float64(1), r.body["totalSize"])
	require.NotContains(t, r.raw, plain[3:])

	// PATCH changes only the fields in the body.
	r = e.do(t, "PATCH", "/admin/v1/api-keys/"+id, `{"name":"alice2","tags":[]}`)
	require.Equal(t, http.StatusOK, r.status, r.raw)
	require.Equal(t, "alice2", r.body["name"])
	require.Equal(t, 2.5, r.body["dailyCostLimit"])
	require.NotContains(t, r.body, "tags")

	r = e.do(t, "PATCH", "/admin/v1/api-keys/"+id, `{"id":"other","name":"x"}`)
	require.Equal(t, http.StatusBadRequest, r.status)
	require.Contains(t, r.body["message"], "id: output only")

	r = e.do(t, "POST", "/admin/v1/api-keys/"+id+":regenerate", `{}`)
	require.Equal(t, http.StatusOK, r.status, r.raw)
	require.NotEqual(t, plain, r.body["key"])
	require.Equal(t, id, r.body["apiKey"].(map[string]any)["id"])

	r = e.do(t, "GET", "/admin/v1/api-keys/"+id+"/usage?granularity=hour", "")
	require.Equal(t, http.StatusOK, r.status, r.raw)
	require.Equal(t, "key", r.body["scope"])
	require.Len(t, r.body["buckets"], 24)

	r = e.do(t, "DELETE", "/admin/v1/api-keys/"+id, "")
	require.Equal(t, http.StatusOK, r.status)
	require.Equal(t, "{}", r.raw)
	r = e.do(t, "GET", "/admin/v1/api-keys/"+id, "")
	require.Equal(t, http.StatusNotFound, r.status)
	require.Equal(t, float64(5), r.body["code"])
	require.Equal(t, "api key "+id+" not found", r.body["message"])
}

func TestBadRequests(t *testing.T) {
	e := newEnv(t)
	tests := []struct {
		name, method, path, body string
		status                   int
		message                  string
	}{
		{"malformed json", "POST", "/admin/v1/api-keys", `{"name":`, 400, ""},
		{"not an object", "POST", "/admin/v1/api-keys", `[1,2]`, 400, ""},
		{"wrong type", "POST", "/admin/v1/api-keys", `{"name":5}`, 400, ""},
		{"wrong nested type", "POST", "/admin/v1/api-keys", `{"name":"a","tags":"x"}`, 400, ""},
		{"unknown field", "POST", "/admin/v1/api-keys", `{"name":"a","colour":"red"}`, 400, "colour"},
		{"validation", "POST", "/admin/v1/api-keys", `{"name":""}`, 400, "name: required"},
		{"oversized name", "POST", "/admin/v1/api-keys", `{"name":"` + strings.Repeat("x", 101) + `"}`, 400, "name: must be 1-100 characters"},
		{"patch malformed", "PATCH", "/admin/v1/api-keys/x", `{`, 400, ""},
		{"patch unknown field", "PATCH", "/admin/v1/settings", `{"nope":1}`, 400, ""},
		{"unknown key", "GET", "/admin/v1/api-keys/nope", "", 404, "api key nope not found"},
		{"unknown account", "GET", "/admin/v1/accounts/nope", "", 404, "account nope not found"},
		{"unknown group", "DELETE", "/admin/v1/groups/nope", "", 404, "group nope not found"},
		{"patch unknown key", "PATCH", "/admin/v1/api-keys/nope", `{"name":"x"}`, 404, "api key nope not found"},
		{"unknown route", "GET", "/admin/v1/nope", "", 404, ""},
		{"bad page token", "GET", "/admin/v1/api-keys?pageToken=!!", "", 400, "page_token"},
		{"bad query type", "GET", "/admin/v1/api-keys?pageSize=abc", "", 400, ""},
		{"bad account type", "POST", "/admin/v1/accounts", `{"name":"a","type":"x"}`, 400, "type: must be one of"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := e.do(t, tt.method, tt.path, tt.body)
			require.Equal(t, tt.status, r.status, r.raw)
			require.Contains(t, r.body, "code", "gateway error shape: %s", r.raw)
			require.Contains(t, r.body, "message")
			if tt.message != "" {
				require.Contains(t, r.body["message"], tt.message)
			}
		})
	}

	// Validation errors carry a google.rpc.BadRequest naming the field.
	r := e.do(t, "POST", "/admin/v1/api-keys", `{"name":"","weeklyResetDay":9}`)
	require.Equal(t, 400, r.status)
	require.Contains(t, r.raw, `"@type":"type.googleapis.com/google.rpc.BadRequest"`)
	require.Contains(t, r.raw, `"field":"weekly_reset_day"`)
}

func TestBodyLimit(t *testing.T) {
	e := newEnv(t)
	big := `{"name":"a","description":"` + strings.Repeat("x", MaxBodyBytes) + `"}`
	r := e.do(t, "POST", "/admin/v1/api-keys", big)
	require.Equal(t, http.StatusRequestEntityTooLarge, r.status)
	require.Contains(t, r.body["message"], "larger than 1 MiB")

	// Without a Content-Length (chunked), the limit still holds.
	req, err := http.NewRequest("POST", e.srv.URL+"/admin/v1/api-keys", io.MultiReader(strings.NewReader(big)))
	require.NoError(t, err)
	req.ContentLength = -1
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusRequestEntityTooLarge, resp.StatusCode)

	// Just under the limit reaches validation.
	r = e.do(t, "POST", "/admin/v1/api-keys", `{"name":"a","description":"`+strings.Repeat("x", 1000)+`"}`)
	require.Equal(t, http.StatusBadRequest, r.status)
	require.Contains(t, r.body["message"], "description:")
}

func TestAccountsOverRESTNeverReturnSecrets(t *testing.T) {
	e := newEnv(t)
	const access, refresh = "sk-ant-oat01-VERY-SECRET", "sk-ant-ort01-ALSO-SECRET"
	r := e.do(t, "POST", "/admin/v1/accounts", `{"name":"main","type":"claude-official","proxy":"socks5://u:pw-SECRET@h:1080",
		"oauth":{"accessToken":"`+access+`","refreshToken":"`+refresh+`","expiresAt":"2030-01-01T00:00:00Z","scopes":["user:inference"]}}`)
	require.Equal(t, http.StatusOK, r.status, r.raw)
	id := r.body["id"].(string)
	for _, raw := range []string{
		r.raw,
		e.do(t, "GET", "/admin/v1/accounts/"+id, "").raw,
		e.do(t, "GET", "/admin/v1/accounts", "").raw,
		e.do(t, "PATCH", "/admin/v1/accounts/"+id, `{"priority":10}`).raw,
		e.do(t, "POST", "/admin/v1/accounts/"+id+":reset", `{}`).raw,
	} {
		require.NotContains(t, raw, access)
		require.NotContains(t, raw, refresh)
		require.NotContains(t, raw, "pw-SECRET")
		require.Contains(t, raw, "socks5://u:REDACTED@h:1080")
		require.Contains(t, raw, `"expiresAt":"2030-01-01T00:00:00Z"`)
	}
	r = e.do(t, "PATCH", "/admin/v1/accounts/"+id, `{"status":{"state":"blocked"}}`)
	require.Equal(t, http.StatusBadRequest, r.status)
	require.Contains(t, r.body["message"], "status.state: output only")
}

func TestGroupsAndSettingsOverREST(t *testing.T) {
	e := newEnv(t)
	r := e.do(t, "POST", "/admin/v1/groups", `{"name":"pool","platform":"claude"}`)
	require.Equal(t, http.StatusOK, r.status, r.raw)
	r = e.do(t, "GET", "/admin/v1/groups?platform=claude", "")
	require.Equal(t, http.StatusOK, r.status)
	require.Len(t, r.body["groups"], 1)

	r = e.do(t, "GET", "/admin/v1/settings", "")
	require.Equal(t, http.StatusOK, r.status)
	require.Equal(t, "3600s", r.body["stickySessionTtl"])
	r = e.do(t, "PATCH", "/admin/v1/settings", `{"stickySessionTtl":"120s","serviceRates":{"claude":2}}`)
	require.Equal(t, http.StatusOK, r.status, r.raw)
	require.Equal(t, "120s", r.body["stickySessionTtl"])
	require.Equal(t, "10s", r.body["concurrentRequestQueueTimeout"], "untouched")

	r = e.do(t, "GET", "/admin/v1/usage?granularity=month", "")
	require.Equal(t, http.StatusOK, r.status, r.raw)
	require.Equal(t, "global", r.body["scope"])
}

func TestOpenAPI(t *testing.T) {
	e := newEnv(t)
	r := e.do(t, "GET", "/admin/v1/openapi.json", "", "Authorization", "")
	require.Equal(t, http.StatusOK, r.status, "the document needs no token")
	require.Equal(t, "application/json", r.header.Get("Content-Type"))
	require.Contains(t, r.body, "paths")
	require.Contains(t, r.body["paths"], "/admin/v1/api-keys")
}

// The embedded copy must equal what `make generate` produced.
func TestOpenAPIIsCurrent(t *testing.T) {
	gen, err := os.ReadFile(filepath.Join("..", "..", "gen", "admin.swagger.json"))
	require.NoError(t, err)
	require.True(t, bytes.Equal(gen, openAPI), "controlplane/adminhttp/openapi.json is stale: run make generate")
}

func TestHealthReadyMetrics(t *testing.T) {
	e := newEnv(t)
	r := e.do(t, "GET", "/healthz", "", "Authorization", "")
	require.Equal(t, http.StatusOK, r.status)
	require.Equal(t, "ok", r.body["status"])

	r = e.do(t, "GET", "/readyz", "", "Authorization", "")
	require.Equal(t, http.StatusOK, r.status)
	e.ping.down.Store(true)
	r = e.do(t, "GET", "/readyz", "", "Authorization", "")
	require.Equal(t, http.StatusServiceUnavailable, r.status)
	require.NotContains(t, r.raw, "connection refused", "causes are not exposed")
	e.ping.down.Store(false)
	require.Equal(t, http.StatusOK, e.do(t, "GET", "/readyz", "", "Authorization", "").status)

	e.do(t, "GET", "/admin/v1/api-keys", "")
	e.do(t, "GET", "/admin/v1/api-keys/x", "")
	e.do(t, "GET", "/admin/v1/api-keys", "", "Authorization", "")
	r = e.do(t, "GET", "/metrics", "", "Authorization", "")
	require.Equal(t, http.StatusOK, r.status)
	require.Contains(t, r.raw, `crs_admin_requests_total{route="GET /admin/v1/api-keys",status="200"} 1`)
	require.Contains(t, r.raw, `crs_admin_requests_total{route="GET /admin/v1/api-keys/{id}",status="404"} 1`)
	require.Contains(t, r.raw, `crs_admin_requests_total{route="unauthenticated",status="401"} 1`)
	require.Contains(t, r.raw, "process_resident_memory_bytes")

	require.Equal(t, http.StatusNotFound, e.do(t, "GET", "/nope", "").status)
}

// panicky is an AdminService whose GetSettings panics.
type panicky struct {
	crsv1.UnimplementedAdminServiceServer
}

func (panicky) GetSettings(context.Context, *crsv1.GetSettingsRequest) (*crsv1.Settings, error) {
	panic("boom")
}

func TestPanicBecomes500(t *testing.T) {
	h, err := New(context.Background(), Options{Admin: panicky{}, Auth: admin.NewTokenAuth(token), Store: &togglePinger{next: nopPinger{}}})
	require.NoError(t, err)
	srv := httptest.NewServer(h)
	defer srv.Close()
	e := &env{srv: srv, token: token}
	r := e.do(t, "GET", "/admin/v1/settings", "")
	require.Equal(t, http.StatusInternalServerError, r.status)
	require.Equal(t, "internal error", r.body["message"])
	require.NotContains(t, r.raw, "boom")

	r = e.do(t, "GET", "/admin/v1/api-keys", "")
	require.Equal(t, http.StatusNotImplemented, r.status, "still serving after a panic")
}

type nopPinger struct{}

func (nopPinger) Ping(context.Context) error { return nil }
