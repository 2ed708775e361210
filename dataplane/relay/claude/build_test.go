package claude

import (
	"bufio"
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/crsrelay/crs/dataplane/relay/platform"
	crsv1 "github.com/crsrelay/crs/gen/crs/v1"
	"github.com/stretchr/testify/require"
	"github.com/valyala/fasthttp"
)

func officialAccount(base string, mapping map[string]string) *crsv1.Account {
	return &crsv1.Account{
		Id: "acc-official", Type: TypeOfficial, BaseUrl: base, ModelMapping: mapping,
		Credentials: &crsv1.Account_Oauth{Oauth: &crsv1.OAuthCredential{AccessToken: "sk-ant-oat01-secret"}},
	}
}

func consoleAccount(base, key, ua string, mapping map[string]string) *crsv1.Account {
	return &crsv1.Account{
		Id: "acc-console", Type: TypeConsole, BaseUrl: base, UserAgent: ua, ModelMapping: mapping,
		Credentials: &crsv1.Account_ApiKey{ApiKey: &crsv1.ApiKeyCredential{ApiKey: key}},
	}
}

// clientRequest has every kind of header a client sends: allowed ones, credentials that must not
// leave the worker, and hop-by-hop ones.
func clientRequest(model string, headers ...platform.Header) *platform.Request {
	body := []byte(`{"model":"` + model + `","max_tokens":10,"messages":[{"role":"user","content":"hi"}],"stream":true}`)
	base := []platform.Header{
		{Name: "x-api-key", Value: "cr_client_key"},
		{Name: "authorization", Value: "Bearer cr_client_key"},
		{Name: "cookie", Value: "session=1"},
		{Name: "connection", Value: "upgrade"},
		{Name: "transfer-encoding", Value: "chunked"},
		{Name: "accept-encoding", Value: "gzip, br"},
		{Name: "x-forwarded-for", Value: "10.0.0.1"},
		{Name: "X-Stainless-Lang", Value: "js"},
		{Name: "x-app", Value: "cli"},
		{Name: "x-claude-code-session-id", Value: "sess-1"},
		{Name: "content-type", Value: "text/plain"},
	}
	return &platform.Request{
		Op: platform.OpMessages, Body: body, Query: []byte("beta=true"), Model: model, Stream: true,
		Headers: append(base, headers...),
	}
}

func build(t *testing.T, up platform.Upstream, acct *crsv1.Account, req *platform.Request) (*fasthttp.Request, string) {
	t.Helper()
	out := fasthttp.AcquireRequest()
	t.Cleanup(func() { fasthttp.ReleaseRequest(out) })
	model, err := up.Build(acct, req, out)
	require.NoError(t, err)
	return out, model
}

func header(out *fasthttp.Request, name string) string { return string(out.Header.Peek(name)) }

func TestBuildNeverForwardsClientCredentialsOrHopByHop(t *testing.T) {
	for name, tc := range map[string]struct {
		up   platform.Upstream
		acct *crsv1.Account
	}{
		"official":            {&Official{}, officialAccount("", nil)},
		"console with sk-ant": {Console{}, consoleAccount("https://c.example/api", "sk-ant-api03-k", "", nil)},
		"console with other":  {Console{}, consoleAccount("https://c.example/api", "other-key", "", nil)},
	} {
		t.Run(name, func(t *testing.T) {
			out, _ := build(t, tc.up, tc.acct, clientRequest("claude-sonnet-4-5"))
			for _, h := range []string{"cookie", "connection", "x-forwarded-for"} {
				require.Empty(t, header(out, h), h)
			}
			require.NotContains(t, header(out, "x-api-key"), "cr_client_key")
			require.NotContains(t, header(out, "authorization"), "cr_client_key")
			require.Equal(t, "identity", header(out, "accept-encoding"))
			require.Equal(t, "application/json", header(out, "content-type"))
			require.Equal(t, "js", header(out, "x-stainless-lang"))
			require.Equal(t, "cli", header(out, "x-app"))
			require.Equal(t, "sess-1", header(out, "x-claude-code-session-id"))
			require.Equal(t, "POST", string(out.Header.Method()))
		})
	}
}

func TestOfficialBuild(t *testing.T) {
	tests := []struct {
		name       string
		acctBase   string
		optBase    string
		op         string
		model      string
		clientBeta string
		wantURI    string
		wantBeta   string
	}{
		{"default base, sonnet", "", "", platform.OpMessages, "claude-sonnet-4-5", "",
			"https://api.anthropic.com/v1/messages?beta=true", betasDefault},
		{"options base", "", "http://127.0.0.1:9/", platform.OpMessages, "claude-opus-4-1", "",
			"http://127.0.0.1:9/v1/messages?beta=true", betasDefault},
		{"account base wins", "https://proxy.example/", "http://127.0.0.1:9", platform.OpCountTokens, "claude-sonnet-4-5", "",
			"https://proxy.example/v1/messages/count_tokens?beta=true", betasDefault},
		{"haiku betas", "", "", platform.OpMessages, "claude-3-5-Haiku-20241022", "",
			"https://api.anthropic.com/v1/messages?beta=true", betasHaiku},
		{"client betas merged, dedup, order kept", "", "", platform.OpMessages, "claude-sonnet-4-5",
			"context-1m-2025-08-07, oauth-2025-04-20,claude-code-20250219,,files-api-2025-04-14",
			"https://api.anthropic.com/v1/messages?beta=true",
			betasDefault + ",context-1m-2025-08-07,files-api-2025-04-14"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := clientRequest(tt.model)
			req.Op = tt.op
			if tt.clientBeta != "" {
				req.Headers = append(req.Headers, platform.Header{Name: "anthropic-beta", Value: tt.clientBeta})
			}
			out, model := build(t, &Official{BaseURL: tt.optBase}, officialAccount(tt.acctBase, nil), req)
			require.Equal(t, tt.wantURI, out.URI().String())
			require.Equal(t, tt.wantBeta, header(out, "anthropic-beta"))
			require.Equal(t, "Bearer sk-ant-oat01-secret", header(out, "authorization"))
			require.Empty(t, header(out, "x-api-key"))
			require.Equal(t, DefaultVersion, header(out, "anthropic-version"))
			require.Equal(t, DefaultUserAgent, header(out, "user-agent"))
			require.Equal(t, "application/json", header(out, "accept"))
			require.Equal(t, tt.model, model)
			require.Equal(t, string(req.Body), string(out.Body()), "official bodies pass through untouched")
		})
	}
}

func TestOfficialKeepsClientIdentityHeaders(t *testing.T) {
	req := clientRequest("claude-sonnet-4-5",
		platform.Header{Name: "user-agent", Value: "claude-cli/2.1.332 (external, sdk-cli)"},
		platform.Header{Name: "anthropic-version", Value: "2024-01-01"},
		platform.Header{Name: "accept", Value: "text/event-stream"})
	out, _ := build(t, &Official{}, officialAccount("", nil), req)
	require.Equal(t, "claude-cli/2.1.332 (external, sdk-cli)", header(out, "user-agent"))
	require.Equal(t, "2024-01-01", header(out, "anthropic-version"))
	require.Equal(t, "text/event-stream", header(out, "accept"))
}

func TestConsoleBuild(t *testing.T) {
	tests := []struct {
		name, base, key, acctUA, clientUA, op string
		wantURI, wantAPIKey, wantAuth, wantUA string
	}{
		{"sk-ant key in x-api-key", "https://c.example/api/", "sk-ant-api03-abc", "", "", platform.OpMessages,
			"https://c.example/api/v1/messages?beta=true", "sk-ant-api03-abc", "", DefaultUserAgent},
		{"other key as bearer", "https://c.example", "cr_upstream", "", "curl/8", platform.OpMessages,
			"https://c.example/v1/messages?beta=true", "", "Bearer cr_upstream", "curl/8"},
		{"base already ends with /v1/messages", "https://c.example/v1/messages/", "k", "acct-ua/1", "curl/8", platform.OpMessages,
			"https://c.example/v1/messages?beta=true", "", "Bearer k", "acct-ua/1"},
		{"count_tokens replaces the path", "https://c.example/v1/messages", "k", "", "", platform.OpCountTokens,
			"https://c.example/v1/messages/count_tokens?beta=true", "", "Bearer k", DefaultUserAgent},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := clientRequest("claude-sonnet-4-5", platform.Header{Name: "anthropic-beta", Value: "a,b"})
			req.Op = tt.op
			if tt.clientUA != "" {
				req.Headers = append(req.Headers, platform.Header{Name: "user-agent", Value: tt.clientUA})
			}
			out, _ := build(t, Console{}, consoleAccount(tt.base, tt.key, tt.acctUA, nil), req)
			require.Equal(t, tt.wantURI, out.URI().String())
			require.Equal(t, tt.wantAPIKey, header(out, "x-api-key"))
			require.Equal(t, tt.wantAuth, header(out, "authorization"))
			require.Equal(t, tt.wantUA, header(out, "user-agent"))
			require.Equal(t, "a,b", header(out, "anthropic-beta"), "console sends the client's betas only")
			require.Equal(t, DefaultVersion, header(out, "anthropic-version"))
		})
	}
}

func TestBuildErrors(t *testing.T) {
	req := clientRequest("m")
	out := fasthttp.AcquireRequest()
	defer fasthttp.ReleaseRequest(out)
	_, err := (&Official{}).Build(&crsv1.Account{Type: TypeOfficial}, req, out)
	require.ErrorIs(t, err, ErrNoCredential)
	_, err = Console{}.Build(consoleAccount("", "k", "", nil), req, out)
	require.ErrorIs(t, err, ErrNoBaseURL)
	_, err = Console{}.Build(consoleAccount("https://x", "", "", nil), req, out)
	require.ErrorIs(t, err, ErrNoCredential)
}

func TestModelMappingSplicesACopy(t *testing.T) {
	tests := []struct {
		name      string
		mapping   map[string]string
		model     string
		wantModel string
	}{
		{"exact", map[string]string{"claude-sonnet-4-5": "glm-4.6"}, "claude-sonnet-4-5", "glm-4.6"},
		{"case-insensitive", map[string]string{"Claude-Sonnet-4-5": "glm-4.6"}, "claude-sonnet-4-5", "glm-4.6"},
		{"exact beats case-insensitive", map[string]string{"CLAUDE-X": "wrong", "claude-x": "right"}, "claude-x", "right"},
		{"unmapped model unchanged", map[string]string{"other": "x"}, "claude-sonnet-4-5", "claude-sonnet-4-5"},
		{"no mapping", nil, "claude-sonnet-4-5", "claude-sonnet-4-5"},
		{"needs escaping", map[string]string{"m": `we"ird\model`}, "m", `we"ird\model`},
	}
	for _, tt := range tests {
		for _, up := range []platform.Upstream{Console{}, &Official{}} {
			t.Run(tt.name, func(t *testing.T) {
				req := clientRequest(tt.model)
				orig := string(req.Body)
				var acct *crsv1.Account
				if _, ok := up.(Console); ok {
					acct = consoleAccount("https://c.example", "k", "", tt.mapping)
				} else {
					acct = officialAccount("", tt.mapping)
				}
				out, model := build(t, up, acct, req)
				require.Equal(t, tt.wantModel, model)
				require.Equal(t, orig, string(req.Body), "the client's body is never mutated")
				var got map[string]any
				require.NoError(t, json.Unmarshal(out.Body(), &got))
				require.Equal(t, tt.wantModel, got["model"])
				require.Equal(t, true, got["stream"])
				require.Len(t, got["messages"], 1)
			})
		}
	}
}

func TestSpliceModel(t *testing.T) {
	tests := []struct {
		name, in, want string
		ok             bool
	}{
		{"first member", `{"model":"a","x":1}`, `{"model":"b","x":1}`, true},
		{"spacing kept", "{ \"x\" : [1,{\"model\":\"n\"}] ,\n \"model\" : \"a\" }", "{ \"x\" : [1,{\"model\":\"n\"}] ,\n \"model\" : \"b\" }", true},
		{"nested model untouched, strings with braces skipped", `{"tools":[{"model":"n","d":"}]\"{"}],"model":"a"}`, `{"tools":[{"model":"n","d":"}]\"{"}],"model":"b"}`, true},
		{"scalars skipped", `{"n":-1.5e3,"t":true,"z":null,"model":"a"}`, `{"n":-1.5e3,"t":true,"z":null,"model":"b"}`, true},
		{"no model", `{"x":1}`, "", false},
		{"model not a string", `{"model":1}`, "", false},
		{"not an object", `["model","a"]`, "", false},
		{"truncated", `{"x":"abc`, "", false},
		{"empty", ``, "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := []byte(tt.in)
			got, ok := spliceModel(in, "b")
			require.Equal(t, tt.ok, ok)
			require.Equal(t, tt.in, string(in))
			if ok {
				require.Equal(t, tt.want, string(got))
			}
		})
	}
}

func FuzzSpliceModel(f *testing.F) {
	f.Add([]byte(`{"model":"a","messages":[{"role":"user","content":"{\"model\":1}"}]}`))
	f.Add([]byte(`{"a":{"b":[1,2,{"c":"d"}]},"model":"x"}`))
	f.Add([]byte(`{"model":"\u0041\\"}`))
	f.Fuzz(func(t *testing.T, in []byte) {
		orig := string(in)
		out, ok := spliceModel(in, "mapped")
		require.Equal(t, orig, string(in))
		if !ok || !json.Valid(in) {
			return
		}
		// A valid object with a top-level "model" string stays valid, with only the model changed.
		require.True(t, json.Valid(out), "%s", out)
		var before, after map[string]any
		require.NoError(t, json.Unmarshal(in, &before))
		require.NoError(t, json.Unmarshal(out, &after))
		if _, dup := before["model"]; dup {
			before["model"] = after["model"]
		}
		require.Equal(t, before, after)
	})
}

// benchRequest is what the worker hands over for a Claude Code request (crs-bench's headers).
func benchRequest() *platform.Request {
	return &platform.Request{
		Op: platform.OpMessages, Model: "claude-sonnet-4-20250514", Query: []byte("beta=true"),
		Body: []byte(`{"model":"claude-sonnet-4-20250514","max_tokens":32000,"messages":[{"role":"user","content":"hi"}]}`),
		Headers: []platform.Header{
			{Name: "content-type", Value: "application/json"},
			{Name: "user-agent", Value: "claude-cli/1.0.69 (external, cli)"},
			{Name: "accept", Value: "application/json"},
			{Name: "anthropic-version", Value: "2023-06-01"},
			{Name: "anthropic-beta", Value: "claude-code-20250219,interleaved-thinking-2025-05-14,fine-grained-tool-streaming-2025-05-14"},
			{Name: "x-app", Value: "cli"},
			{Name: "x-stainless-lang", Value: "js"},
			{Name: "x-stainless-package-version", Value: "0.55.1"},
			{Name: "x-stainless-runtime", Value: "node"},
		},
	}
}

// BenchmarkBuild is writing the upstream request of one attempt, and the client's reading of its
// URI (fasthttp's Client.Do parses it to find the host unless it was set parsed).
func BenchmarkBuild(b *testing.B) {
	for _, tt := range []struct {
		name string
		up   platform.Upstream
		acct *crsv1.Account
	}{
		{"console", Console{URIs: &URICache{}}, consoleAccount("http://127.0.0.1:8080", "sk-ant-bench", "", nil)},
		{"console-bearer", Console{URIs: &URICache{}}, consoleAccount("http://127.0.0.1:8080/", "cr_bench", "", nil)},
		{"console-no-cache", Console{}, consoleAccount("http://127.0.0.1:8080", "sk-ant-bench", "", nil)},
		{"official", &Official{URIs: &URICache{}}, officialAccount("", nil)},
	} {
		b.Run(tt.name, func(b *testing.B) {
			req := benchRequest()
			out := fasthttp.AcquireRequest()
			defer fasthttp.ReleaseRequest(out)
			b.ReportAllocs()
			for b.Loop() {
				out.Reset()
				if _, err := tt.up.Build(tt.acct, req, out); err != nil {
					b.Fatal(err)
				}
				if len(out.URI().Host()) == 0 {
					b.Fatal("no host")
				}
			}
		})
	}
}

// mergeBetasReference is the string-building merge appendMergedBetas replaced: the oracle.
func mergeBetasReference(base, client string) string {
	if client == "" {
		return base
	}
	var b strings.Builder
	b.WriteString(base)
	seen := func(v string) bool {
		for s := b.String(); s != ""; {
			var item string
			item, s, _ = strings.Cut(s, ",")
			if item == v {
				return true
			}
		}
		return false
	}
	for rest := client; rest != ""; {
		var v string
		v, rest, _ = strings.Cut(rest, ",")
		v = strings.TrimSpace(v)
		if v == "" || seen(v) {
			continue
		}
		b.WriteByte(',')
		b.WriteString(v)
	}
	return b.String()
}

func FuzzMergeBetas(f *testing.F) {
	f.Add(betasDefault, "oauth-2025-04-20, files-api-2025-04-14,,files-api-2025-04-14 ,x")
	f.Add("a", "")
	f.Add("a,b", " a ,\tb,c,c, ,")
	f.Fuzz(func(t *testing.T, base, client string) {
		want := mergeBetasReference(base, client)
		if got := string(appendMergedBetas(nil, base, client)); got != want {
			t.Fatalf("merge(%q, %q) = %q, reference %q", base, client, got, want)
		}
	})
}

// The upstream request is pinned byte for byte: header names, their order and the body.
func TestBuildWire(t *testing.T) {
	req := clientRequest("claude-sonnet-4-5", platform.Header{Name: "anthropic-beta", Value: "a,b"},
		platform.Header{Name: "anthropic-version", Value: "2023-06-01"}, platform.Header{Name: "user-agent", Value: "claude-cli/1"},
		platform.Header{Name: "accept", Value: "application/json"})
	const body = `{"model":"claude-sonnet-4-5","max_tokens":10,"messages":[{"role":"user","content":"hi"}],"stream":true}`
	const common = "Content-Type: application/json\r\nContent-Length: 103\r\nX-Stainless-Lang: js\r\nX-App: cli\r\n" +
		"X-Claude-Code-Session-Id: sess-1\r\nAccept-Encoding: identity\r\nAnthropic-Version: 2023-06-01\r\nAccept: application/json\r\n"
	tests := []struct {
		name string
		up   platform.Upstream
		acct *crsv1.Account
		want string
	}{
		{"console sk-ant key", Console{}, consoleAccount("https://c.example/api/", "sk-ant-api03-abc", "", nil),
			"POST /api/v1/messages?beta=true HTTP/1.1\r\nUser-Agent: claude-cli/1\r\nHost: c.example\r\n" + common +
				"X-Api-Key: sk-ant-api03-abc\r\nAnthropic-Beta: a,b\r\n\r\n" + body},
		{"console other key", Console{}, consoleAccount("https://c.example/api/", "other", "ua", nil),
			"POST /api/v1/messages?beta=true HTTP/1.1\r\nUser-Agent: ua\r\nHost: c.example\r\n" + common +
				"Authorization: Bearer other\r\nAnthropic-Beta: a,b\r\n\r\n" + body},
		{"official", &Official{}, officialAccount("", nil),
			"POST /v1/messages?beta=true HTTP/1.1\r\nUser-Agent: claude-cli/1\r\nHost: api.anthropic.com\r\n" + common +
				"Authorization: Bearer sk-ant-oat01-secret\r\nAnthropic-Beta: " + betasDefault + ",a,b\r\n\r\n" + body},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, _ := build(t, tt.up, tt.acct, req)
			require.Equal(t, tt.want, out.String())
		})
		t.Run(tt.name+" with a URI cache", func(t *testing.T) {
			up := tt.up
			uris := &URICache{}
			switch u := up.(type) {
			case Console:
				u.URIs = uris
				up = u
			case *Official:
				up = &Official{BaseURL: u.BaseURL, URIs: uris}
			}
			for range 2 { // fills the cache, then reads it
				out, _ := build(t, up, tt.acct, req)
				require.Equal(t, tt.want, out.String())
			}
		})
	}
}

// wire is req as the upstream client writes it (the client reads the URI with path normalizing
// off), or the error it gets.
func wire(req *fasthttp.Request) string {
	req.URI().DisablePathNormalizing = true
	var b bytes.Buffer
	w := bufio.NewWriter(&b)
	if err := req.Write(w); err != nil {
		return "error: " + err.Error()
	}
	_ = w.Flush()
	return b.String()
}

// FuzzURICache pins a cached URI to parsing the URL string: the request written upstream is the
// same, the first time (the cache fills) and the next (it reads the cache), whatever the base URL
// and the client's query (which never holds '#': fasthttp's server splits the fragment off).
func FuzzURICache(f *testing.F) {
	for _, base := range []string{"https://c.example/api", "http://127.0.0.1:8080", "https://u:p@h.example/x",
		"https://h/x?y=1", "https://h/a#f", "https://H.Example/%41b/", "https://h/a/../b", "", "h/x", "https://h:99999"} {
		f.Add(base, "beta=true")
		f.Add(base, "")
	}
	f.Fuzz(func(t *testing.T, base, query string) {
		if strings.ContainsRune(query, '#') {
			return
		}
		var plain fasthttp.Request
		plain.Header.SetMethod(fasthttp.MethodPost)
		setURI(&plain, nil, base, pathMessages, []byte(query))
		want := wire(&plain)
		c := &URICache{}
		for i := range 2 {
			var cached fasthttp.Request
			cached.Header.SetMethod(fasthttp.MethodPost)
			setURI(&cached, c, base, pathMessages, []byte(query))
			if got := wire(&cached); got != want {
				t.Fatalf("base %q query %q (call %d): cached %q, parsed %q", base, query, i+1, got, want)
			}
		}
	})
}
