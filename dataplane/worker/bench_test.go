package worker

import (
	"bytes"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttputil"
	"go.uber.org/zap"

	"github.com/crsrelay/crs/dataplane/relay"
	crsv1 "github.com/crsrelay/crs/gen/crs/v1"
	"github.com/crsrelay/crs/internal/mockupstream"
)

// BenchmarkRelay is one request through the whole worker over loopback, one at a time: a
// fasthttp client, the worker (routing, key check, scheduling, relay, usage report, metrics) with
// the fake control plane, and the mock upstream, all in this process. Time and allocations include
// the client and the mock, which are the same for every version of the worker; compare runs, not
// absolute numbers.
func BenchmarkRelay(b *testing.B) {
	e := startEnv(b, envOpts{quiet: true})
	for _, mode := range []struct {
		name   string
		stream bool
		suffix []byte
	}{
		{"nonstream", false, []byte(`}}`)},
		{"stream", true, []byte("event: message_stop\ndata: {\"type\":\"message_stop\"}")},
	} {
		b.Run(mode.name, func(b *testing.B) {
			req, res := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
			defer fasthttp.ReleaseRequest(req)
			defer fasthttp.ReleaseResponse(res)
			body := messagesBody(mode.stream, `"metadata":{"user_id":"user_abababababababababababababababababababababababababababababababab_account__session_0b9a2c1e-5f4d-4c3b-9a8e-7d6c5b4a3f21"},`)
			b.ReportAllocs()
			for b.Loop() {
				req.Reset()
				req.SetRequestURI(e.base + "/api/v1/messages?beta=true")
				req.Header.SetMethod(fasthttp.MethodPost)
				req.Header.SetContentType("application/json")
				req.Header.Set("x-api-key", goodKey)
				req.Header.Set("anthropic-version", "2023-06-01")
				req.Header.Set("anthropic-beta", "claude-code-20250219,interleaved-thinking-2025-05-14")
				req.Header.Set("user-agent", "claude-cli/1.0.69 (external, cli)")
				req.Header.Set("x-app", "cli")
				req.SetBody(body)
				if err := e.client.Do(req, res); err != nil {
					b.Fatal(err)
				}
				if res.StatusCode() != fasthttp.StatusOK || !bytes.HasSuffix(bytes.TrimSpace(res.Body()), mode.suffix) {
					b.Fatalf("status %d: %.300s", res.StatusCode(), res.Body())
				}
			}
		})
	}
}

// BenchmarkHandleCPU is the CPU time of one relayed non-stream request, as crs-bench sends it, in
// this process: the handler (routing, key check, scheduling, relay, usage report, metrics), the
// fasthttp client talking to the mock upstream over in-memory pipes, the mock, the fleet client
// and the fake control plane; no sockets and no HTTP server in front. cpu-ns/op is user+system
// CPU time per request (getrusage), which other processes on the machine barely move, unlike
// ns/op; compare it between versions of the worker.
func BenchmarkHandleCPU(b *testing.B) {
	up := fasthttputil.NewInmemoryListener()
	mock := mockupstream.New(mockupstream.Config{})
	go func() { _ = mock.Serve(up) }()
	b.Cleanup(func() { _ = up.Close() })
	dial := func(string) (net.Conn, error) { return up.Dial() }
	e := startEnv(b, envOpts{quiet: true, relay: relay.New(relay.Options{Logger: zap.NewNop(), MaxAttempts: 2, Dial: dial})})

	var tmpl fasthttp.Request
	tmpl.SetRequestURI("/api/v1/messages?beta=true")
	tmpl.Header.SetHost("relay.example")
	tmpl.Header.SetMethod(fasthttp.MethodPost)
	for _, h := range [][2]string{
		{"Content-Type", "application/json"}, {"Accept", "application/json"},
		{"Anthropic-Version", "2023-06-01"},
		{"Anthropic-Beta", "claude-code-20250219,interleaved-thinking-2025-05-14,fine-grained-tool-streaming-2025-05-14"},
		{"User-Agent", "claude-cli/1.0.69 (external, cli)"}, {"X-App", "cli"}, {"X-Stainless-Lang", "js"},
		{"X-Stainless-Package-Version", "0.55.1"}, {"X-Stainless-Runtime", "node"}, {"X-Api-Key", goodKey},
	} {
		tmpl.Header.Set(h[0], h[1])
	}
	tmpl.SetBody(messagesBody(false, `"metadata":{"user_id":"user_abababababababababababababababababababababababababababababababab_account__session_0b9a2c1e-5f4d-4c3b-9a8e-7d6c5b4a3f21"},`))
	addr := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000}

	var before, after syscall.Rusage
	b.ReportAllocs()
	b.ResetTimer()
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &before)
	b.RunParallel(func(pb *testing.PB) {
		var ctx fasthttp.RequestCtx
		ctx.Init(&tmpl, addr, nil)
		for pb.Next() {
			tmpl.CopyTo(&ctx.Request)
			ctx.Response.Reset()
			e.w.handle(&ctx)
			if ctx.Response.StatusCode() != fasthttp.StatusOK {
				b.Fatalf("status %d: %.300s", ctx.Response.StatusCode(), ctx.Response.Body())
			}
		}
	})
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &after)
	b.StopTimer()
	cpu := time.Duration(after.Utime.Nano() + after.Stime.Nano() - before.Utime.Nano() - before.Stime.Nano())
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/op")
}

// instantRelay answers every request at once, as a non-stream upstream success would end: 200,
// a usage record and the success event. It stands for the relay in benchmarks of the worker's
// own work.
type instantRelay struct{}

func (instantRelay) Serve(ctx *fasthttp.RequestCtx, _ *relay.Request, cands relay.Candidates, done func(*relay.Outcome)) {
	acct := cands.Next()
	ctx.SetStatusCode(fasthttp.StatusOK)
	ctx.SetBodyString(`{"ok":true}`)
	done(&relay.Outcome{Account: acct, Status: fasthttp.StatusOK, Attempts: 1, FirstByte: time.Millisecond,
		Usage:  &crsv1.UsageRecord{InputTokens: 10, OutputTokens: 20},
		Events: []*crsv1.AccountEvent{{AccountId: acct.GetId(), Kind: "success"}}})
}

// claudeCodeRequest is a non-stream Messages request with the headers Claude Code sends and its
// session in metadata.user_id.
func claudeCodeRequest(req *fasthttp.Request) {
	req.SetRequestURI("/api/v1/messages?beta=true")
	req.Header.SetHost("relay.example")
	req.Header.SetMethod(fasthttp.MethodPost)
	for _, h := range [][2]string{
		{"Accept", "application/json"}, {"Accept-Encoding", "gzip, deflate, br"}, {"Connection", "keep-alive"},
		{"Content-Type", "application/json"}, {"Anthropic-Version", "2023-06-01"},
		{"Anthropic-Beta", "claude-code-20250219,interleaved-thinking-2025-05-14,fine-grained-tool-streaming-2025-05-14"},
		{"Anthropic-Dangerous-Direct-Browser-Access", "true"},
		{"User-Agent", "claude-cli/1.0.69 (external, cli)"}, {"X-App", "cli"}, {"X-Stainless-Arch", "x64"},
		{"X-Stainless-Lang", "js"}, {"X-Stainless-Os", "Linux"}, {"X-Stainless-Package-Version", "0.55.1"},
		{"X-Stainless-Retry-Count", "0"}, {"X-Stainless-Runtime", "node"}, {"X-Stainless-Runtime-Version", "v22.17.0"},
		{"X-Stainless-Timeout", "600"}, {"X-Api-Key", goodKey},
	} {
		req.Header.Set(h[0], h[1])
	}
	req.SetBody([]byte(`{"max_tokens":32000,"messages":[{"content":[{"text":"Write a haiku about relays.","type":"text"}],"role":"user"}],` +
		`"metadata":{"user_id":"user_abababababababababababababababababababababababababababababababab_account__session_0b9a2c1e-5f4d-4c3b-9a8e-7d6c5b4a3f21"},` +
		`"model":"claude-sonnet-4-20250514","stream":false}`))
}

// BenchmarkHandleMessages is the worker's own work for one non-stream Messages request of a known
// Claude Code session with an unlimited key: routing, key check, body reading, scheduling, the
// forwarded headers, and on completion the usage report, events and metrics, with a relay that
// answers at once.
func BenchmarkHandleMessages(b *testing.B) {
	e := startEnv(b, envOpts{quiet: true, relay: instantRelay{}})
	var tmpl fasthttp.Request
	claudeCodeRequest(&tmpl)
	var ctx fasthttp.RequestCtx
	ctx.Init(&tmpl, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000}, nil)
	b.ReportAllocs()
	for b.Loop() {
		tmpl.CopyTo(&ctx.Request)
		ctx.Response.Reset()
		e.w.handle(&ctx)
		if ctx.Response.StatusCode() != fasthttp.StatusOK {
			b.Fatalf("status %d: %.300s", ctx.Response.StatusCode(), ctx.Response.Body())
		}
	}
}

// BenchmarkAppendForwarded is copying the allow-listed headers of a Claude Code request.
func BenchmarkAppendForwarded(b *testing.B) {
	var req fasthttp.Request
	claudeCodeRequest(&req)
	var buf [16]relay.Header
	b.ReportAllocs()
	for b.Loop() {
		appendForwarded(buf[:0], &req.Header)
	}
}
