package relay

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

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
