package worker

import (
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

	got := forwardedHeaders(&h)
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
	require.Empty(t, forwardedHeaders(&none))
}
