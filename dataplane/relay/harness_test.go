package relay

import (
	"bufio"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	crsv1 "github.com/crsrelay/crs/gen/crs/v1"
	"github.com/stretchr/testify/require"
	"github.com/valyala/fasthttp"
	"go.uber.org/zap/zaptest"
)

// seen is one request as a fake upstream received it.
type seen struct {
	URI    string
	Header map[string]string // lowercase names
	Body   []byte
}

// upstream is a fake upstream: a real fasthttp server on loopback whose handler each test scripts.
type upstream struct {
	URL  string
	mu   sync.Mutex
	reqs []seen
}

func newUpstream(t *testing.T, h fasthttp.RequestHandler) *upstream {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	u := &upstream{URL: "http://" + ln.Addr().String()}
	srv := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
		s := seen{URI: string(ctx.RequestURI()), Header: map[string]string{}, Body: append([]byte(nil), ctx.PostBody()...)}
		for k, v := range ctx.Request.Header.All() {
			s.Header[strings.ToLower(string(k))] = string(v)
		}
		u.mu.Lock()
		u.reqs = append(u.reqs, s)
		u.mu.Unlock()
		h(ctx)
	}}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Shutdown() })
	return u
}

func (u *upstream) requests() []seen {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]seen(nil), u.reqs...)
}

// rawUpstream is a fake upstream speaking HTTP by hand, for answers fasthttp's server cannot give
// (a chunked stream cut in the middle).
func rawUpstream(t *testing.T, serve func(conn net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				// Read the request head and body (Content-Length) before answering.
				br := bufio.NewReader(c)
				req, err := http.ReadRequest(br)
				if err != nil {
					return
				}
				_, _ = io.Copy(io.Discard, req.Body)
				serve(c)
			}()
		}
	}()
	return "http://" + ln.Addr().String()
}

// closedURL is an address nothing listens on.
func closedURL(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	return "http://" + addr
}

func official(id, base string) *crsv1.Account {
	return &crsv1.Account{Id: id, Type: "claude-official", BaseUrl: base,
		Credentials: &crsv1.Account_Oauth{Oauth: &crsv1.OAuthCredential{AccessToken: "tok-" + id}}}
}

func console(id, base, key string, mapping map[string]string) *crsv1.Account {
	return &crsv1.Account{Id: id, Type: "claude-console", BaseUrl: base, ModelMapping: mapping,
		Credentials: &crsv1.Account_ApiKey{ApiKey: &crsv1.ApiKeyCredential{ApiKey: key}}}
}

type sliceCands struct{ accts []*crsv1.Account }

func (s *sliceCands) Next() *crsv1.Account {
	if len(s.accts) == 0 {
		return nil
	}
	a := s.accts[0]
	s.accts = s.accts[1:]
	return a
}

// front is a real fasthttp server running Relay.Serve, the way the worker does: it copies what the
// relay needs out of the RequestCtx (all client headers, on purpose, so the relay's own allow-list is
// what is tested) and hands the candidates over.
type front struct {
	URL      string
	outcomes chan *Outcome
	relay    *Relay
}

func newFront(t *testing.T, o Options, accts ...*crsv1.Account) *front {
	t.Helper()
	return newFrontRefresh(t, o, nil, accts...)
}

// newFrontRefresh is newFront with a Refresher on every request.
func newFrontRefresh(t *testing.T, o Options, refresh Refresher, accts ...*crsv1.Account) *front {
	t.Helper()
	if o.Logger == nil {
		o.Logger = zaptest.NewLogger(t)
	}
	f := &front{outcomes: make(chan *Outcome, 16), relay: New(o)}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	f.URL = "http://" + ln.Addr().String()
	srv := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
		req := &Request{
			RequestID: "req-1", KeyID: "key-1", Endpoint: string(ctx.Path()),
			Op: OpMessages, Body: append([]byte(nil), ctx.PostBody()...),
			Query: append([]byte(nil), ctx.URI().QueryString()...), Started: time.Now(), Refresh: refresh,
		}
		if strings.HasSuffix(req.Endpoint, "/count_tokens") {
			req.Op = OpCountTokens
		}
		var b struct {
			Model  string `json:"model"`
			Stream bool   `json:"stream"`
		}
		_ = json.Unmarshal(req.Body, &b)
		req.Model, req.Stream = b.Model, b.Stream
		for k, v := range ctx.Request.Header.All() {
			req.Headers = append(req.Headers, Header{Name: strings.ToLower(string(k)), Value: string(v)})
		}
		f.relay.Serve(ctx, req, &sliceCands{accts: append([]*crsv1.Account(nil), accts...)}, func(o *Outcome) { f.outcomes <- o })
	}}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Shutdown() })
	return f
}

// outcome waits for the one Outcome of the request and checks that done is not called again.
func (f *front) outcome(t *testing.T) *Outcome {
	t.Helper()
	var o *Outcome
	select {
	case o = <-f.outcomes:
	case <-time.After(5 * time.Second):
		t.Fatal("done was not called")
	}
	select {
	case again := <-f.outcomes:
		t.Fatalf("done called twice: %+v", again)
	case <-time.After(20 * time.Millisecond):
	}
	return o
}

// post sends a client request with a client key in x-api-key and authorization, as Claude Code
// does, and returns the answer.
func (f *front) post(t *testing.T, path, body string, headers ...string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, f.URL+path, strings.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("x-api-key", "cr_client_secret")
	req.Header.Set("authorization", "Bearer cr_client_secret")
	req.Header.Set("cookie", "a=b")
	req.Header.Set("content-type", "application/json")
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	t.Cleanup(func() { _ = resp.Body.Close() })
	return resp
}

func readAll(t *testing.T, r io.Reader) string {
	t.Helper()
	b, err := io.ReadAll(r)
	require.NoError(t, err)
	return string(b)
}

func eventKinds(o *Outcome) []string {
	var kinds []string
	for _, e := range o.Events {
		kinds = append(kinds, e.GetAccountId()+":"+e.GetKind())
	}
	return kinds
}

// Anthropic-shaped fixtures.
const (
	sseStart  = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_01\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-sonnet-4-5-20250929\",\"content\":[],\"stop_reason\":null,\"usage\":{\"input_tokens\":21,\"cache_creation_input_tokens\":30,\"cache_read_input_tokens\":7,\"cache_creation\":{\"ephemeral_5m_input_tokens\":10,\"ephemeral_1h_input_tokens\":20},\"output_tokens\":1}}}\n\n"
	ssePing   = "event: ping\ndata: {\"type\": \"ping\"}\n\n"
	sseBlock  = "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n"
	sseDelta  = "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hello\"}}\n\n"
	sseDelta2 = "event: content_block_delta\r\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\" world \\u00e9\\n\"}}\r\n\r\n"
	sseStop   = "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n"
	sseEnd    = "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":42}}\n\n"
	sseMStop  = "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"

	streamReq = `{"model":"claude-sonnet-4-5","max_tokens":100,"stream":true,"messages":[{"role":"user","content":"hi"}]}`
	unaryReq  = `{"model":"claude-sonnet-4-5","max_tokens":100,"messages":[{"role":"user","content":"hi"}]}`
)

var fullStream = []string{sseStart, ssePing, sseBlock, sseDelta, sseDelta2, sseStop, sseEnd, sseMStop}

func anthropicErr(typ, msg string) string {
	return `{"type":"error","error":{"type":"` + typ + `","message":"` + msg + `"},"request_id":"req_up"}`
}

// sseHandler answers with the given events, flushing each and sleeping gap between them.
func sseHandler(events []string, gap time.Duration, sent func(i int)) fasthttp.RequestHandler {
	return func(ctx *fasthttp.RequestCtx) {
		ctx.SetContentType("text/event-stream; charset=utf-8")
		ctx.Response.Header.Set("request-id", "req_upstream_1")
		ctx.Response.Header.Set("anthropic-ratelimit-unified-status", "allowed")
		ctx.Response.Header.Set("x-internal-upstream", "secret-ish")
		ctx.SetBodyStreamWriter(func(w *bufio.Writer) {
			for i, ev := range events {
				if i > 0 && gap > 0 {
					time.Sleep(gap)
				}
				if sent != nil {
					sent(i)
				}
				if _, err := w.WriteString(ev); err != nil {
					return
				}
				if err := w.Flush(); err != nil {
					return
				}
			}
		})
	}
}

func errorHandler(status int, body string, headers ...string) fasthttp.RequestHandler {
	return func(ctx *fasthttp.RequestCtx) {
		ctx.SetStatusCode(status)
		ctx.SetContentType("application/json")
		for i := 0; i+1 < len(headers); i += 2 {
			ctx.Response.Header.Set(headers[i], headers[i+1])
		}
		ctx.SetBodyString(body)
	}
}
