// Package mockupstream is a realistic stand-in for the Anthropic Messages API, for tests and for the
// "direct" baseline of benchmarks: real SSE framing, real usage fields, real error bodies and
// headers, and failures injected per upstream credential so a test can make account A fail and
// account B succeed. It is a fasthttp server built to cost little per request. Behaviour is set in
// Go ([Config], [Server.Configure]) or over HTTP by another process (POST /__config).
//
// It depends on nothing of crs; controlplane and dataplane tests may both import it.
package mockupstream

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
	"go.uber.org/zap"
)

// Config is the mock's configuration at start.
type Config struct {
	// Default is the behaviour for credentials without an entry in Credentials. The zero Behavior
	// means [DefaultBehavior].
	Default Behavior
	// Credentials maps an upstream credential (x-api-key value or bearer token) to its behaviour.
	Credentials map[string]Behavior
	// Record keeps the last 1000 requests for GET /__requests and [Server.Requests]. Leave it off in
	// benchmarks: it copies every header.
	Record bool
	// Logger receives fasthttp's connection errors at debug level; nil discards them.
	Logger *zap.Logger
}

// Server is the mock upstream. Its methods are safe for concurrent use.
type Server struct {
	srv       *fasthttp.Server
	behaviors atomic.Pointer[behaviorSet]
	stats     *stats
	rec       *recorder // nil when not recording
	streams   sync.Pool // *stream
	bufs      sync.Pool // *[]byte
}

// New builds a server; nothing listens until [Server.Serve] or [Server.Start].
func New(cfg Config) *Server {
	logger := cfg.Logger
	if logger == nil {
		logger = zap.NewNop()
	}
	s := &Server{stats: newStats()}
	if cfg.Record {
		s.rec = newRecorder()
	}
	def := cfg.Default
	if def == (Behavior{}) {
		def = DefaultBehavior()
	}
	s.Configure(def, cfg.Credentials)
	s.srv = &fasthttp.Server{
		Handler: s.Handler,
		Name:    "cloudflare",
		// Claude Code sends a few KiB of headers; bodies reach tens of MiB with images.
		ReadBufferSize:     32 << 10,
		MaxRequestBodySize: 64 << 20,
		IdleTimeout:        2 * time.Minute,
		Logger:             fasthttpLogger{logger.Named("mockupstream")},
	}
	return s
}

// Serve answers connections from ln until [Server.Close].
func (s *Server) Serve(ln net.Listener) error {
	if err := s.srv.Serve(ln); err != nil {
		return fmt.Errorf("serve mock upstream: %w", err)
	}
	return nil
}

// Start listens on addr ("127.0.0.1:0" picks a free port), serves in the background and returns
// the bound address, such as "127.0.0.1:41234".
func (s *Server) Start(addr string) (string, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", fmt.Errorf("listen %s: %w", addr, err)
	}
	go s.Serve(ln) //nolint:errcheck // ends with Close
	return ln.Addr().String(), nil
}

// Close stops listening and waits up to 5 seconds for answers in progress.
func (s *Server) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.srv.ShutdownWithContext(ctx); err != nil {
		return fmt.Errorf("shut down mock upstream: %w", err)
	}
	return nil
}

// Configure replaces the behaviours in force. Failure countdowns start again.
func (s *Server) Configure(def Behavior, creds map[string]Behavior) {
	s.behaviors.Store(newBehaviorSet(def, creds))
}

// Stats returns the counters since start or the last [Server.Reset].
func (s *Server) Stats() Stats { return s.stats.snapshot() }

// Requests returns the recorded requests, oldest first; nil when Config.Record is off.
func (s *Server) Requests() []RecordedRequest {
	if s.rec == nil {
		return nil
	}
	return s.rec.list()
}

// Reset clears the counters and the recorded requests; the behaviours stay.
func (s *Server) Reset() {
	s.stats.reset()
	if s.rec != nil {
		s.rec.reset()
	}
}

// route is an API endpoint of the mock.
type route int

const (
	routeMessages route = iota
	routeCountTokens
	routeModels
)

// Handler is the mock's fasthttp handler, usable in-process (fasthttputil.InmemoryListener).
func (s *Server) Handler(ctx *fasthttp.RequestCtx) {
	switch string(ctx.Path()) {
	case "/v1/messages":
		s.api(ctx, routeMessages)
	case "/v1/messages/count_tokens":
		s.api(ctx, routeCountTokens)
	case "/v1/models":
		s.api(ctx, routeModels)
	case "/__config":
		s.handleConfig(ctx)
	case "/__reset":
		s.handleReset(ctx)
	case "/__stats":
		s.handleStats(ctx)
	case "/__requests":
		s.handleRequests(ctx)
	default:
		var id [32]byte
		writeError(ctx, fasthttp.StatusNotFound, "Not found", appendID(id[:0], requestIDPrefix, requestIDRand))
	}
}

// credential returns the x-api-key value, else the bearer token of authorization.
func credential(ctx *fasthttp.RequestCtx) []byte {
	if k := ctx.Request.Header.Peek("x-api-key"); len(k) > 0 {
		return k
	}
	a := ctx.Request.Header.Peek("authorization")
	const bearer = "Bearer "
	if len(a) > len(bearer) && string(a[:len(bearer)]) == bearer {
		return a[len(bearer):]
	}
	return nil
}

// api answers the Anthropic endpoints: checks as the real API does them, then the behaviour.
func (s *Server) api(ctx *fasthttp.RequestCtx, r route) {
	tr := tracker{total: s.stats.total.Load()}
	tr.total.begin()
	var idBuf [32]byte
	reqID := appendID(idBuf[:0], requestIDPrefix, requestIDRand)
	ctx.Response.Header.SetBytesV("request-id", reqID)

	cred := credential(ctx)
	var f requestFields
	bodyOK := true
	if r != routeModels {
		f, bodyOK = scanRequest(ctx.Request.Body())
	}
	if s.rec != nil {
		s.rec.add(ctx, cred, f)
	}
	if len(cred) > 0 {
		tr.cred = s.stats.forCredential(cred)
		tr.cred.begin()
	}

	wantGet := r == routeModels
	if ctx.IsGet() != wantGet || (!wantGet && !ctx.IsPost()) {
		writeError(ctx, fasthttp.StatusMethodNotAllowed, "Method Not Allowed", reqID)
		tr.end(true)
		return
	}
	if len(cred) == 0 {
		writeError(ctx, fasthttp.StatusUnauthorized, "", reqID)
		tr.end(true)
		return
	}
	if len(ctx.Request.Header.Peek("anthropic-version")) == 0 {
		writeError(ctx, fasthttp.StatusBadRequest, "anthropic-version: header is required", reqID)
		tr.end(true)
		return
	}
	if r != routeModels {
		msg := ""
		switch {
		case !bodyOK:
			msg = "There was an error parsing the body: expected a JSON object"
		case len(f.model) <= 2:
			msg = "model: Field required"
		case !f.hasMessages:
			msg = "messages: Field required"
		}
		if msg != "" {
			writeError(ctx, fasthttp.StatusBadRequest, msg, reqID)
			tr.end(true)
			return
		}
	}

	b := s.behaviors.Load().lookup(cred)
	delay := b.FirstByteDelay
	if r == routeMessages && !f.stream {
		delay += time.Duration(b.Deltas) * b.EventDelay
	}
	if delay > 0 {
		time.Sleep(delay)
	}
	if b.shouldFail() {
		s.fail(ctx, b, reqID)
		tr.end(true)
		return
	}
	setSuccessHeaders(ctx, time.Now())

	switch {
	case r == routeModels:
		ctx.SetContentType("application/json")
		ctx.SetBodyString(modelsBody)
		tr.end(false)
	case r == routeCountTokens:
		bp := s.getBuf()
		*bp = append((*bp)[:0], `{"input_tokens":`...)
		*bp = strconv.AppendInt(*bp, int64(b.InputTokens), 10)
		*bp = append(*bp, '}')
		ctx.SetContentType("application/json")
		ctx.Response.SetBody(*bp)
		s.bufs.Put(bp)
		tr.end(false)
	case !f.stream:
		var mid [32]byte
		bp := s.getBuf()
		*bp = appendMessage((*bp)[:0], b, f.model, appendID(mid[:0], messageIDPrefix, messageIDRand))
		ctx.SetContentType("application/json")
		ctx.Response.SetBody(*bp)
		s.bufs.Put(bp)
		tr.end(false)
	default:
		s.serveStream(ctx, b, f.model, tr)
	}
}

// getBuf returns a scratch buffer; put it back in s.bufs after use.
func (s *Server) getBuf() *[]byte {
	if v := s.bufs.Get(); v != nil {
		return v.(*[]byte)
	}
	b := make([]byte, 0, 1024)
	return &b
}

func (s *Server) getStream() *stream {
	if v := s.streams.Get(); v != nil {
		return v.(*stream)
	}
	return &stream{release: func(st *stream) { s.streams.Put(st) }}
}

// serveStream starts the SSE answer; tr ends when the body is done.
func (s *Server) serveStream(ctx *fasthttp.RequestCtx, b *behavior, model []byte, tr tracker) {
	ctx.SetContentType("text/event-stream; charset=utf-8")
	ctx.Response.Header.Set("cache-control", "no-cache")
	st := s.getStream()
	st.tr = tr
	st.seq.b = b
	st.seq.model = append(st.seq.model[:0], model...)
	st.seq.msgID = appendID(st.seq.msgID[:0], messageIDPrefix, messageIDRand)

	if n := b.DisconnectAfterEvents; n > 0 {
		ctx.Response.Header.SetContentLength(-1)
		head := append([]byte(nil), ctx.Response.Header.Header()...)
		ctx.HijackSetNoResponse(true)
		ctx.Hijack(func(c net.Conn) {
			defer st.Close()
			writeDisconnecting(c, head, &st.seq, n)
		})
		return
	}
	ctx.Response.SetBodyStream(st, -1)
}

// fail answers with the behaviour's injected error.
func (s *Server) fail(ctx *fasthttp.RequestCtx, b *behavior, reqID []byte) {
	status := b.FailStatus
	if status == fasthttp.StatusTooManyRequests {
		ctx.Response.Header.Set("anthropic-ratelimit-unified-status", "rejected")
		ctx.Response.Header.Set("anthropic-ratelimit-unified-5h-status", "rejected")
		if b.ResetAfter > 0 {
			secs := int64((b.ResetAfter + time.Second - 1) / time.Second)
			reset := strconv.FormatInt(time.Now().Unix()+secs, 10)
			ctx.Response.Header.Set("anthropic-ratelimit-unified-reset", reset)
			ctx.Response.Header.Set("anthropic-ratelimit-unified-5h-reset", reset)
			ctx.Response.Header.Set("retry-after", strconv.FormatInt(secs, 10))
		}
	}
	if body := b.FailBody; len(body) > 0 && body[0] == '{' {
		setErrorHeaders(ctx, status)
		ctx.SetBodyString(body)
		return
	}
	writeError(ctx, status, b.FailBody, reqID)
}

// organizationID is the anthropic-organization-id the mock reports.
const organizationID = "00000000-0000-4000-8000-00000000c0de"

// setSuccessHeaders sets the headers a subscription (OAuth) account gets on a 2xx: the unified
// rate-limit window status the relay records (reference §4.4, 200/201 row).
func setSuccessHeaders(ctx *fasthttp.RequestCtx, now time.Time) {
	h := &ctx.Response.Header
	hour := now.Truncate(time.Hour)
	var b5, b7 [20]byte
	reset5h := strconv.AppendInt(b5[:0], hour.Add(5*time.Hour).Unix(), 10)
	reset7d := strconv.AppendInt(b7[:0], hour.Add(7*24*time.Hour).Unix(), 10)
	h.Set("anthropic-organization-id", organizationID)
	h.Set("anthropic-ratelimit-unified-status", "allowed")
	h.Set("anthropic-ratelimit-unified-5h-status", "allowed")
	h.SetBytesV("anthropic-ratelimit-unified-5h-reset", reset5h)
	h.Set("anthropic-ratelimit-unified-7d-status", "allowed")
	h.SetBytesV("anthropic-ratelimit-unified-7d-reset", reset7d)
	h.Set("anthropic-ratelimit-unified-representative-claim", "five_hour")
	h.Set("anthropic-ratelimit-unified-fallback-percentage", "0.5")
	h.SetBytesV("anthropic-ratelimit-unified-reset", reset5h)
}

// modelsBody is GET /v1/models, in the real API's page shape.
const modelsBody = `{"data":[` +
	`{"type":"model","id":"claude-opus-4-1-20250805","display_name":"Claude Opus 4.1","created_at":"2025-08-05T00:00:00Z"},` +
	`{"type":"model","id":"claude-opus-4-20250514","display_name":"Claude Opus 4","created_at":"2025-05-22T00:00:00Z"},` +
	`{"type":"model","id":"claude-sonnet-4-20250514","display_name":"Claude Sonnet 4","created_at":"2025-05-22T00:00:00Z"},` +
	`{"type":"model","id":"claude-3-5-haiku-20241022","display_name":"Claude Haiku 3.5","created_at":"2024-10-22T00:00:00Z"}` +
	`],"has_more":false,"first_id":"claude-opus-4-1-20250805","last_id":"claude-3-5-haiku-20241022"}`

// fasthttpLogger adapts zap to fasthttp.Logger.
type fasthttpLogger struct{ l *zap.Logger }

func (l fasthttpLogger) Printf(format string, args ...any) {
	if ce := l.l.Check(zap.DebugLevel, "fasthttp"); ce != nil {
		ce.Write(zap.String("message", fmt.Sprintf(format, args...)))
	}
}
