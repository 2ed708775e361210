package worker

import (
	"bytes"
	"testing"

	"github.com/valyala/fasthttp"
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
