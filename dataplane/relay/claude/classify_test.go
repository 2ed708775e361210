package claude

import (
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/crsrelay/crs/dataplane/relay/platform"
	"github.com/stretchr/testify/require"
	"github.com/valyala/fasthttp"
)

func anthropicError(typ, msg string) []byte {
	return []byte(`{"type":"error","error":{"type":"` + typ + `","message":"` + msg + `"}}`)
}

func TestClassify(t *testing.T) {
	reset := time.Date(2026, 11, 26, 18, 0, 0, 0, time.UTC)
	tests := []struct {
		name    string
		up      platform.Upstream
		status  int
		reset   string
		body    []byte
		model   string
		want    platform.Verdict
		wantMsg string
	}{
		{"429 with reset: family limit until reset", &Official{}, 429, "1795716000", anthropicError("rate_limit_error", "Rate limited"), "claude-opus-4-1",
			platform.Verdict{Failover: true, Kind: platform.EventRateLimited, Until: reset, Family: "opus"}, "Rate limited"},
		{"429 with reset, unknown family", &Official{}, 429, "1795716000", nil, "glm-4.6",
			platform.Verdict{Failover: true, Kind: platform.EventRateLimited, Until: reset}, ""},
		{"429 without reset: no until, no family", &Official{}, 429, "", anthropicError("rate_limit_error", "slow"), "claude-sonnet-4-5",
			platform.Verdict{Failover: true, Kind: platform.EventRateLimited}, "slow"},
		{"429 with garbage reset", &Official{}, 429, "soon", nil, "claude-sonnet-4-5",
			platform.Verdict{Failover: true, Kind: platform.EventRateLimited}, ""},
		{"529 overloaded", &Official{}, 529, "", anthropicError("overloaded_error", "Overloaded"), "m",
			platform.Verdict{Failover: true, Kind: platform.EventOverloaded}, "Overloaded"},
		{"401 unauthorized", &Official{}, 401, "", anthropicError("authentication_error", "invalid x-api-key"), "m",
			platform.Verdict{Failover: true, Kind: platform.EventUnauthorized}, "invalid x-api-key"},
		{"403 forbidden", &Official{}, 403, "", anthropicError("permission_error", "nope"), "m",
			platform.Verdict{Failover: true, Kind: platform.EventForbidden}, "nope"},
		{"403 org disabled: blocked", &Official{}, 403, "", anthropicError("permission_error", "This organization has been disabled."), "m",
			platform.Verdict{Failover: true, Kind: platform.EventBlocked}, "This organization has been disabled."},
		{"400 oauth not allowed: blocked", &Official{}, 400, "", anthropicError("invalid_request_error", "OAuth authentication is currently not allowed for this organization."), "m",
			platform.Verdict{Failover: true, Kind: platform.EventBlocked}, "OAuth authentication is currently not allowed for this organization."},
		{"400 client error passes through", &Official{}, 400, "", anthropicError("invalid_request_error", "max_tokens: too big"), "m",
			platform.Verdict{}, "max_tokens: too big"},
		{"404 passes through", &Official{}, 404, "", anthropicError("not_found_error", "model: x"), "m",
			platform.Verdict{}, "model: x"},
		{"413 passes through", &Official{}, 413, "", []byte("too large"), "m", platform.Verdict{}, "too large"},
		{"500 server error", &Official{}, 500, "", []byte("<html>oops</html>"), "m",
			platform.Verdict{Failover: true, Kind: platform.EventServerError}, "<html>oops</html>"},
		{"503", &Official{}, 503, "", nil, "m", platform.Verdict{Failover: true, Kind: platform.EventServerError}, ""},
		{"console 400 account disabled: blocked", Console{}, 400, "", []byte(`{"error":"Your account has been disabled"}`), "m",
			platform.Verdict{Failover: true, Kind: platform.EventBlocked}, `{"error":"Your account has been disabled"}`},
		{"console 400 other passes through", Console{}, 400, "", []byte(`{"message":"bad request"}`), "m",
			platform.Verdict{}, "bad request"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var h fasthttp.ResponseHeader
			h.SetStatusCode(tt.status)
			if tt.reset != "" {
				h.Set(headerRateLimitReset, tt.reset)
			}
			got := tt.up.Classify(tt.status, &h, tt.body, tt.model)
			require.Equal(t, tt.wantMsg, got.Reason)
			got.Reason = ""
			require.True(t, tt.want.Until.Equal(got.Until), "until %v, want %v", got.Until, tt.want.Until)
			got.Until, tt.want.Until = time.Time{}, time.Time{}
			require.Equal(t, tt.want, got)
		})
	}
}

func TestReason(t *testing.T) {
	long := strings.Repeat("é", 400)
	tests := []struct {
		name string
		body string
		want string
	}{
		{"anthropic error", `{"type":"error","error":{"type":"x","message":"  boom  "}}`, "boom"},
		{"flat message", `{"error":"x","message":"flat"}`, "flat"},
		{"raw text", "upstream connect error", "upstream connect error"},
		{"trimmed to 300 characters", `{"error":{"message":"` + long + `"}}`, strings.Repeat("é", 300)},
		{"invalid utf-8 made valid", "bad \xff byte", "bad \ufffd byte"},
		{"keys redacted", `{"error":{"message":"invalid key sk-ant-api03-AbC_d-9.x used; task-1 ok"}}`, "invalid key [redacted] used; task-1 ok"},
		{"bearer redacted", `Authorization: Bearer eyJhbGciOi.abc= rejected`, "Authorization: Bearer [redacted] rejected"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Reason([]byte(tt.body))
			require.Equal(t, tt.want, got)
			require.True(t, utf8.ValidString(got))
		})
	}
}

func FuzzReason(f *testing.F) {
	f.Add([]byte(`{"error":{"message":"sk-ant-x Bearer y"}}`))
	f.Add([]byte("Bearer "))
	f.Fuzz(func(t *testing.T, body []byte) {
		got := Reason(body)
		require.True(t, utf8.ValidString(got))
		require.LessOrEqual(t, utf8.RuneCountInString(got), maxReason)
	})
}

func TestFamily(t *testing.T) {
	for model, want := range map[string]string{
		"claude-opus-4-1-20250805": "opus", "claude-Sonnet-4-5": "sonnet", "claude-3-5-haiku": "haiku",
		"claude-fable-1": "fable", "glm-4.6": "", "": "",
	} {
		require.Equal(t, want, family(model), model)
	}
}
