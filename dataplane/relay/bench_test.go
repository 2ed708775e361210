package relay

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/crsrelay/crs/dataplane/relay/platform"
	crsv1 "github.com/crsrelay/crs/gen/crs/v1"
	"github.com/stretchr/testify/require"
	"github.com/valyala/fasthttp"
	"go.uber.org/zap"
)

// benchEvents is a typical answer: message_start, 200 text deltas, the end.
func benchEvents() []byte {
	var b bytes.Buffer
	b.WriteString(sseStart + ssePing + sseBlock)
	for range 200 {
		b.WriteString(sseDelta)
	}
	b.WriteString(sseStop + sseEnd + sseMStop)
	return b.Bytes()
}

// chunkWriter frames each Write as one HTTP chunk and flushes it, as fasthttp's server does with a
// body stream (http.go writeChunk).
type chunkWriter struct {
	bw  *bufio.Writer
	hex []byte
}

func (c *chunkWriter) Write(p []byte) (int, error) {
	c.hex = strconv.AppendInt(c.hex[:0], int64(len(p)), 16)
	c.bw.Write(c.hex)
	c.bw.WriteString("\r\n")
	c.bw.Write(p)
	c.bw.WriteString("\r\n")
	return len(p), c.bw.Flush()
}

// BenchmarkStreamBody is the relay's own per-stream cost, without sockets: split the upstream body
// into events, tee usage, write each event as a flushed chunk, build the usage record. WriteTo is
// the path fasthttp takes; Read is the fallback (one event per Read, copied through a buffer).
func BenchmarkStreamBody(b *testing.B) {
	payload := benchEvents()
	r := New(Options{Logger: zap.NewNop()})
	req := &Request{RequestID: "r", KeyID: "k", Op: OpMessages, Stream: true, Started: time.Now()}
	acct := official("a", "")
	for _, mode := range []string{"WriteTo", "Read"} {
		b.Run(mode, func(b *testing.B) {
			bw := bufio.NewWriterSize(io.Discard, 4096)
			w := &chunkWriter{bw: bw}
			buf := make([]byte, 4096)
			b.SetBytes(int64(len(payload)))
			b.ReportAllocs()
			for b.Loop() {
				resp := fasthttp.AcquireResponse()
				resp.SetBodyStream(bytes.NewReader(payload), -1)
				sp := r.getSplitter()
				sp.Reset(resp.BodyStream(), 0)
				blk := &outcomeBlock{}
				sb := &streamBody{call: call{r: r, req: req, out: &blk.out, blk: blk}, acct: acct, resp: resp, sp: sp, usage: r.official.NewUsage()}
				if mode == "WriteTo" {
					_, _ = sb.WriteTo(w)
				} else {
					_, _ = io.CopyBuffer(w, struct{ io.Reader }{sb}, buf)
				}
				_ = sb.CloseWithError(nil)
				if sb.out.Usage.GetOutputTokens() != 42 {
					b.Fatal("usage not read")
				}
			}
		})
	}
}

// BenchmarkServeStream is one streamed request end to end over loopback: a fasthttp client, the
// relay in a fasthttp server, a fasthttp upstream sending 200 deltas. Allocations include all three
// in this process.
func BenchmarkServeStream(b *testing.B) {
	payload := benchEvents()
	up := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
		ctx.SetContentType("text/event-stream")
		ctx.SetBody(payload)
	}}
	upLn, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(b, err)
	go up.Serve(upLn)   //nolint:errcheck
	defer up.Shutdown() //nolint:errcheck

	r := New(Options{Logger: zap.NewNop()})
	acct := official("a", "http://"+upLn.Addr().String())
	front := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
		req := &Request{RequestID: "r", KeyID: "k", Op: OpMessages, Stream: true, Model: "claude-sonnet-4-5",
			Body: append([]byte(nil), ctx.PostBody()...), Started: time.Now(),
			Headers: []Header{{Name: "anthropic-version", Value: "2023-06-01"}}}
		r.Serve(ctx, req, &sliceCands{accts: []*crsv1.Account{acct}}, nil)
	}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(b, err)
	go front.Serve(ln)     //nolint:errcheck
	defer front.Shutdown() //nolint:errcheck

	client := &fasthttp.Client{}
	url := "http://" + ln.Addr().String() + "/v1/messages"
	b.SetBytes(int64(len(payload)))
	b.ReportAllocs()
	for b.Loop() {
		req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
		req.SetRequestURI(url)
		req.Header.SetMethod("POST")
		req.SetBodyString(streamReq)
		if err := client.Do(req, resp); err != nil {
			b.Fatal(err)
		}
		if resp.StatusCode() != 200 || !strings.HasSuffix(string(resp.Body()), sseMStop) {
			b.Fatalf("bad answer %d", resp.StatusCode())
		}
		fasthttp.ReleaseRequest(req)
		fasthttp.ReleaseResponse(resp)
	}
}

// upstreamHead is the head of a non-stream answer as the mock upstream (and, header for header,
// api.anthropic.com for an OAuth account) sends it.
const upstreamHead = "HTTP/1.1 200 OK\r\n" +
	"Server: fasthttp\r\n" +
	"Date: Mon, 02 Jun 2025 10:00:00 GMT\r\n" +
	"Content-Type: application/json\r\n" +
	"Content-Length: 2\r\n" +
	"request-id: req_011CUJd7QyYBhRdV7wHk5Xyz\r\n" +
	"anthropic-organization-id: 00000000-0000-4000-8000-00000000c0de\r\n" +
	"anthropic-ratelimit-unified-status: allowed\r\n" +
	"anthropic-ratelimit-unified-5h-status: allowed\r\n" +
	"anthropic-ratelimit-unified-5h-reset: 1748876400\r\n" +
	"anthropic-ratelimit-unified-7d-status: allowed\r\n" +
	"anthropic-ratelimit-unified-7d-reset: 1749466800\r\n" +
	"anthropic-ratelimit-unified-representative-claim: five_hour\r\n" +
	"anthropic-ratelimit-unified-fallback-percentage: 0.5\r\n" +
	"anthropic-ratelimit-unified-reset: 1748876400\r\n" +
	"\r\n{}"

// BenchmarkPassHeaders is copying a typical upstream head to the client response, which the
// worker has already given its X-Request-Id: all of it for a buffered answer, the request id and
// rate limit headers for a stream.
func BenchmarkPassHeaders(b *testing.B) {
	var up fasthttp.Response
	require.NoError(b, up.Read(bufio.NewReader(strings.NewReader(upstreamHead))))
	b.Run("buffered", func(b *testing.B) {
		var dst fasthttp.ResponseHeader
		b.ReportAllocs()
		defer reportCPU(b)()
		for b.Loop() {
			dst.Reset()
			dst.SetCanonical([]byte("X-Request-Id"), []byte("r1"))
			passHeaders(&dst, &up.Header)
		}
	})
	b.Run("stream", func(b *testing.B) {
		var ctx fasthttp.RequestCtx
		b.ReportAllocs()
		defer reportCPU(b)()
		for b.Loop() {
			ctx.Response.Header.Reset()
			ctx.Response.Header.SetCanonical([]byte("X-Request-Id"), []byte("r1"))
			setStreamHeaders(&ctx)
			passStreamHeaders(&ctx.Response.Header, &up.Header)
		}
	})
}

// benchMessage is a non-stream answer as the mock upstream sends it.
const benchMessage = `{"id":"msg_01XFDUDYJgAACzvnptvVoYEL","type":"message","role":"assistant","model":"claude-sonnet-4-20250514",` +
	`"content":[{"type":"text","text":"Hello! How can I help you today?"}],"stop_reason":"end_turn","stop_sequence":null,` +
	`"usage":{"input_tokens":25,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":17}}`

// BenchmarkRespondBuffered is the relay's work on a non-stream 2xx answer once the upstream client
// has read it: the success event, the headers and body handed to the client, usage read and the
// usage record built. Reading the upstream answer (fasthttp's parser) is included in ns/op; it is
// the same for every version of the relay.
func BenchmarkRespondBuffered(b *testing.B) {
	raw := []byte(strings.Replace(strings.TrimSuffix(upstreamHead, "{}"), "Content-Length: 2\r\n",
		"Content-Length: "+strconv.Itoa(len(benchMessage))+"\r\n", 1) + benchMessage)
	r := New(Options{Logger: zap.NewNop()})
	acct := console("a", "http://127.0.0.1:1", "sk-ant-x", nil)
	req := &Request{RequestID: "r", KeyID: "k", Op: OpMessages, Model: "claude-sonnet-4-20250514", Started: time.Now(),
		Headers: []Header{{Name: "anthropic-beta", Value: "claude-code-20250219"}}}
	var ctx fasthttp.RequestCtx
	rd := bytes.NewReader(raw)
	br := bufio.NewReader(rd)
	var usage *crsv1.UsageRecord
	done := func(o *Outcome) { usage = o.Usage }
	b.ReportAllocs()
	defer reportCPU(b)()
	for b.Loop() {
		ctx.Response.Reset()
		ctx.Response.Header.SetCanonical([]byte("X-Request-Id"), []byte("r"))
		rd.Reset(raw)
		br.Reset(rd)
		resp := fasthttp.AcquireResponse()
		if err := resp.Read(br); err != nil {
			b.Fatal(err)
		}
		blk := &outcomeBlock{}
		c := call{r: r, ctx: &ctx, req: req, out: &blk.out, blk: blk, done: done}
		c.out.Account, c.out.Attempts = acct, 1
		c.event(acct, platform.Verdict{Kind: platform.EventSuccess}, resp.StatusCode())
		c.respondBuffered(acct, r.console, req.Model, resp)
		if usage.GetOutputTokens() != 17 {
			b.Fatal("usage not read")
		}
	}
}

// reportCPU reports the process's user+system CPU time per op (cpu-ns/op) from when it is called
// to when the function it returns is: on a busy machine it moves less than ns/op does.
func reportCPU(b *testing.B) func() {
	var before syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &before)
	return func() {
		var after syscall.Rusage
		_ = syscall.Getrusage(syscall.RUSAGE_SELF, &after)
		cpu := after.Utime.Nano() + after.Stime.Nano() - before.Utime.Nano() - before.Stime.Nano()
		b.ReportMetric(float64(cpu)/float64(b.N), "cpu-ns/op")
	}
}
