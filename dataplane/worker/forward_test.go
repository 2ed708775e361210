package worker

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"github.com/valyala/fasthttp"

	"github.com/crsrelay/crs/dataplane/relay"
)

func TestForwardedHeaders(t *testing.T) {
	var h fasthttp.RequestHeader
	h.SetMethod(fasthttp.MethodPost)
	h.Set("X-Api-Key", "cr_secret")
	h.Set("Authorization", "Bearer cr_secret")
	h.Set("Anthropic-Version", "2023-06-01")
	h.Set("Anthropic-Beta", "a,b")
	h.Set("Connection", "keep-alive")
	h.Set("X-Stainless-Lang", "js")
	h.Add("X-App", "cli")
	h.Add("X-App", "second")
	h.Set("Cookie", "c=1")
	h.Set("User-Agent", "claude-cli/1.0")

	got := appendForwarded(nil, &h)
	require.Equal(t, []relay.Header{
		{Name: "user-agent", Value: "claude-cli/1.0"}, // fasthttp yields its special headers first
		{Name: "anthropic-version", Value: "2023-06-01"},
		{Name: "anthropic-beta", Value: "a,b"},
		{Name: "x-stainless-lang", Value: "js"},
		{Name: "x-app", Value: "cli"},
		{Name: "x-app", Value: "second"},
	}, got)

	var none fasthttp.RequestHeader
	none.Set("X-Api-Key", "cr_secret")
	require.Empty(t, appendForwarded(nil, &none))
}

// forwardName knows the allow-list under the names fasthttp's server gives headers, whatever case
// the client sent.
func TestForwardNameAllowList(t *testing.T) {
	allowed := []string{
		"accept", "accept-language", "anthropic-beta", "anthropic-version",
		"anthropic-dangerous-direct-browser-access", "content-type", "sec-fetch-mode",
		"user-agent", "x-app",
		"x-stainless-arch", "x-stainless-helper-method", "x-stainless-lang", "x-stainless-os",
		"x-stainless-package-version", "x-stainless-retry-count", "x-stainless-runtime",
		"x-stainless-runtime-version", "x-stainless-timeout",
	}
	denied := []string{"x-api-key", "authorization", "cookie", "connection", "host", "x-forwarded-for",
		"accept-encoding", "x-stainless-other", "content-length", "x-claude-code-session-id", "proxy-authorization"}
	for _, sent := range []func(string) string{strings.ToLower, strings.ToUpper, func(s string) string { return s }} {
		var h fasthttp.RequestHeader
		for _, n := range append(append([]string(nil), allowed...), denied...) {
			h.Add(sent(n), "v-"+n)
		}
		got := map[string]string{}
		for _, f := range appendForwarded(nil, &h) {
			got[f.Name] = f.Value
		}
		want := map[string]string{}
		for _, n := range allowed {
			want[n] = "v-" + n
		}
		require.Equal(t, want, got)
	}
}
