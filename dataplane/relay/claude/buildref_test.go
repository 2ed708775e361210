package claude

import (
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/crsrelay/crs/dataplane/relay/platform"
	crsv1 "github.com/crsrelay/crs/gen/crs/v1"
	"github.com/stretchr/testify/require"
	"github.com/valyala/fasthttp"
)

// buildReference is Build as it was before the names were set in canonical form: every header
// through Header.Set, which normalizes its name. The oracle of TestBuildMatchesReference.
func buildReference(up platform.Upstream, acct *crsv1.Account, req *platform.Request, out *fasthttp.Request) {
	var uris *URICache
	var base string
	switch u := up.(type) {
	case Console:
		uris, base = u.URIs, strings.TrimSuffix(strings.TrimRight(acct.GetBaseUrl(), "/"), pathMessages)
	case *Official:
		uris, base = u.URIs, strings.TrimRight(or(acct.GetBaseUrl(), or(u.BaseURL, DefaultBaseURL)), "/")
	}
	model, body := mapModel(acct, req)
	setURI(out, uris, base, opPath(req.Op), req.Query)
	var ch clientHeaders
	for _, h := range req.Headers {
		name := lower(h.Name)
		switch name {
		case "user-agent":
			ch.userAgent = h.Value
		case "anthropic-version":
			ch.version = h.Value
		case "anthropic-beta":
			ch.beta = h.Value
		case "accept":
			ch.accept = h.Value
		case "content-type":
		default:
			switch name {
			case "accept", "anthropic-dangerous-direct-browser-access", "anthropic-version", "x-app",
				"anthropic-beta", "accept-language", "sec-fetch-mode", "user-agent", "content-type",
				"x-claude-code-session-id":
				out.Header.Set(name, h.Value)
			default:
				if strings.HasPrefix(name, "x-stainless-") {
					out.Header.Set(name, h.Value)
				}
			}
		}
	}
	ua := or(ch.userAgent, DefaultUserAgent)
	if _, ok := up.(Console); ok {
		ua = or(acct.GetUserAgent(), ua)
	}
	out.Header.SetMethod(fasthttp.MethodPost)
	out.Header.SetContentType("application/json")
	out.Header.Set("Accept-Encoding", "identity")
	out.Header.Set("Anthropic-Version", or(ch.version, DefaultVersion))
	out.Header.Set("Accept", or(ch.accept, "application/json"))
	out.Header.SetUserAgent(ua)
	if _, ok := up.(Console); ok {
		key := acct.GetApiKey().GetApiKey()
		if strings.HasPrefix(key, "sk-ant-") {
			out.Header.Set("X-Api-Key", key)
		} else {
			out.Header.Set("Authorization", "Bearer "+key)
		}
		if ch.beta != "" {
			out.Header.Set("Anthropic-Beta", ch.beta)
		}
	} else {
		out.Header.Set("Authorization", "Bearer "+acct.GetOauth().GetAccessToken())
		betas := betasDefault
		if strings.Contains(lower(model), "haiku") {
			betas = betasHaiku
		}
		out.Header.SetBytesV("Anthropic-Beta", appendMergedBetas(nil, betas, ch.beta))
	}
	out.SetBodyRaw(body)
}

// Build writes the same request upstream as setting every header by name did: whatever the
// client's names (case, unknown x-stainless-* ones, repeats), values (long ones, line breaks) and
// credentials.
func TestBuildMatchesReference(t *testing.T) {
	names := []string{"user-agent", "User-Agent", "anthropic-version", "anthropic-beta", "Anthropic-Beta", "accept",
		"content-type", "x-app", "X-App", "x-stainless-lang", "x-stainless-os", "x-stainless-arch",
		"x-stainless-package-version", "x-stainless-runtime", "x-stainless-runtime-version",
		"x-stainless-retry-count", "x-stainless-timeout", "x-stainless-helper-method", "x-stainless-new-thing",
		"X-Stainless-Other_thing", "x-stainless-Odd Name", "x-stainless-", "anthropic-dangerous-direct-browser-access", "accept-language",
		"sec-fetch-mode", "x-claude-code-session-id", "x-api-key", "authorization", "cookie", "connection",
		"host", "accept-encoding", "x-forwarded-for"}
	values := []string{"", "v", "claude-cli/2.0.1 (external, cli)", "a,b", "line\r\nbreak", "tab\tin",
		strings.Repeat("x", 255), strings.Repeat("y", 256), strings.Repeat("z", 257), strings.Repeat("w", 1000)}
	keys := []string{"sk-ant-api03-k", "cr_other", strings.Repeat("k", 600), "tok\nen"}
	rng := rand.New(rand.NewPCG(3, 4))
	for range 3000 {
		req := &platform.Request{Op: platform.OpMessages, Model: "claude-sonnet-4-5", Query: []byte("beta=true"),
			Body: []byte(`{"model":"claude-sonnet-4-5"}`)}
		if rng.IntN(4) == 0 {
			req.Op, req.Model = platform.OpCountTokens, "claude-3-5-haiku"
		}
		for range rng.IntN(16) {
			req.Headers = append(req.Headers, platform.Header{Name: names[rng.IntN(len(names))], Value: values[rng.IntN(len(values))]})
		}
		key, ua := keys[rng.IntN(len(keys))], []string{"", "acct-ua/1"}[rng.IntN(2)]
		for _, tc := range []struct {
			up   platform.Upstream
			acct *crsv1.Account
		}{
			{Console{}, consoleAccount("https://c.example/api/", key, ua, nil)},
			{Console{URIs: &URICache{}}, consoleAccount("http://127.0.0.1:8080", key, ua, nil)},
			{&Official{}, &crsv1.Account{Credentials: &crsv1.Account_Oauth{Oauth: &crsv1.OAuthCredential{AccessToken: key}}}},
		} {
			var got, want fasthttp.Request
			_, err := tc.up.Build(tc.acct, req, &got)
			require.NoError(t, err)
			buildReference(tc.up, tc.acct, req, &want)
			require.Equal(t, wire(&want), wire(&got), "headers %q", req.Headers)
		}
	}
}

// The names Build sets in canonical form are the ones Header.Set writes for them.
func TestCanonicalNames(t *testing.T) {
	check := func(canon []byte) {
		t.Helper()
		var h fasthttp.RequestHeader
		h.Set(strings.ToLower(string(canon)), "v")
		var got []string
		for k := range h.All() {
			got = append(got, string(k))
		}
		require.Equal(t, []string{string(canon)}, got)
	}
	for _, n := range [][]byte{nameAccept, nameAcceptEncoding, nameAnthropicBeta, nameAnthropicVer, nameAuthorization, nameXAPIKey} {
		check(n)
	}
	for _, name := range []string{"anthropic-dangerous-direct-browser-access", "x-app", "accept-language", "sec-fetch-mode",
		"x-claude-code-session-id", "x-stainless-arch", "x-stainless-helper-method", "x-stainless-lang", "x-stainless-os",
		"x-stainless-package-version", "x-stainless-retry-count", "x-stainless-runtime", "x-stainless-runtime-version",
		"x-stainless-timeout"} {
		canon, pass := passedName(name)
		require.True(t, pass, name)
		require.Equal(t, name, strings.ToLower(string(canon)))
		check(canon)
	}
	for _, name := range []string{"x-api-key", "authorization", "cookie", "connection", "accept-encoding", "host", "x-stainless"} {
		_, pass := passedName(name)
		require.False(t, pass, name)
	}
	canon, pass := passedName("x-stainless-new")
	require.True(t, pass)
	require.Nil(t, canon)
}
