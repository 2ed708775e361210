package relay

import (
	"bufio"
	"bytes"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"github.com/valyala/fasthttp"
)

// The client sees the upstream's headers under fasthttp's canonical names, minus the ones the
// relay drops, however the upstream spelled them; passHeaders leaves dst normalizing as it was.
func TestPassHeadersNames(t *testing.T) {
	raw := "HTTP/1.1 200 OK\r\n" +
		"content-type: application/json\r\n" +
		"request-id: req_1\r\n" +
		"ANTHROPIC-RATELIMIT-unified-status: allowed\r\n" +
		"x-custom: a\r\n" +
		"X-Custom: b\r\n" +
		"Set-Cookie: s=1\r\n" +
		"connection: keep-alive\r\n" +
		"Content-Length: 2\r\n\r\n{}"
	var resp fasthttp.Response
	require.NoError(t, resp.Read(bufio.NewReader(strings.NewReader(raw))))

	var fromFail fasthttp.ResponseHeader // what fail builds from the copied headers of the last attempt
	for _, kv := range copyHeaders(&resp.Header) {
		fromFail.Add(kv.Name, kv.Value)
	}

	want := "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Request-Id: r1\r\n" +
		"Request-Id: req_1\r\nAnthropic-Ratelimit-Unified-Status: allowed\r\nX-Custom: a\r\nX-Custom: b\r\n"
	for name, src := range map[string]*fasthttp.ResponseHeader{"parsed": &resp.Header, "rebuilt": &fromFail} {
		t.Run(name, func(t *testing.T) {
			var dst fasthttp.ResponseHeader
			dst.Set("X-Request-ID", "r1")
			passHeaders(&dst, src)
			require.Equal(t, want, withoutDate(dst.String()))

			dst.Set("x-after", "1")
			require.Contains(t, dst.String(), "\r\nX-After: 1\r\n", "normalizing is on again")
		})
	}
}

// withoutDate is a serialized header without its Date line (the clock's) and final blank line.
func withoutDate(h string) string {
	var b strings.Builder
	for _, line := range strings.SplitAfter(strings.TrimSuffix(h, "\r\n"), "\r\n") {
		if !strings.HasPrefix(line, "Date: ") {
			b.WriteString(line)
		}
	}
	return b.String()
}

// passHeadersReference is passHeaders as it was before it set names with SetCanonical: every
// header through AddBytesKV, normalizing off. The oracle of TestPassHeadersMatchesReference.
func passHeadersReference(dst, src *fasthttp.ResponseHeader) {
	if !dst.DisableNormalizing() {
		defer dst.EnableNormalizing()
	}
	for k, v := range src.All() {
		if dropResponseHeader(k) {
			continue
		}
		if bytes.EqualFold(k, []byte("content-type")) {
			dst.SetContentTypeBytes(v)
			continue
		}
		dst.AddBytesKV(k, v)
	}
}

// passStreamHeadersReference is passStreamHeaders as it was: every header through AddBytesKV.
func passStreamHeadersReference(dst, src *fasthttp.ResponseHeader) {
	for k, v := range src.All() {
		if bytes.EqualFold(k, []byte("request-id")) || hasPrefixFold(k, "anthropic-ratelimit-") {
			dst.AddBytesKV(k, v)
		}
	}
}

// passHeaders and passStreamHeaders give the client the same headers, in the same order, as adding
// each one did:
// repeated names, names the worker set already, special and dropped headers, whatever the
// upstream's spelling, parsed or rebuilt by fail, with more headers than headerNames holds.
func TestPassHeadersMatchesReference(t *testing.T) {
	names := []string{"request-id", "Request-Id", "X-Request-Id", "x-custom", "anthropic-ratelimit-unified-reset", "X-CUSTOM", "anthropic-ratelimit-unified-status",
		"anthropic-ratelimit-unified-5h-status", "anthropic-ratelimit-unified-7d-status", "Server", "Date",
		"Content-Type", "content-encoding", "Content-Length", "Set-Cookie", "Connection", "Keep-Alive",
		"Transfer-Encoding", "Trailer", "Upgrade", "Proxy-Authenticate", "Vary", "Via", "Retry-After", "x-empty"}
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 3000 {
		n := rng.IntN(12)
		if i%50 == 0 {
			n = 40 + rng.IntN(20) // past headerNames' capacity
		}
		var raw strings.Builder
		raw.WriteString("HTTP/1.1 200 OK\r\n")
		for j := range n {
			name := names[rng.IntN(len(names))]
			if j >= len(names) {
				name = "X-Many-" + strconv.Itoa(rng.IntN(40))
			}
			v := "v" + strconv.Itoa(j)
			switch name {
			case "Content-Length":
				continue // set below, once
			case "Connection":
				v = []string{"keep-alive", "close", "close, upgrade"}[rng.IntN(3)]
			case "Transfer-Encoding", "Trailer":
				continue // framing; fasthttp's parser has its own rules for them
			case "x-empty":
				v = ""
			}
			raw.WriteString(name + ": " + v + "\r\n")
		}
		raw.WriteString("Content-Length: 2\r\n\r\n{}")
		var resp fasthttp.Response
		require.NoError(t, resp.Read(bufio.NewReader(strings.NewReader(raw.String()))), raw.String())
		var rebuilt fasthttp.ResponseHeader
		for _, kv := range copyHeaders(&resp.Header) {
			rebuilt.Add(kv.Name, kv.Value)
		}
		for _, src := range []*fasthttp.ResponseHeader{&resp.Header, &rebuilt} {
			var got, want fasthttp.ResponseHeader
			for _, h := range []*fasthttp.ResponseHeader{&got, &want} {
				h.SetCanonical([]byte("X-Request-Id"), []byte("r1"))
				if i%3 == 0 {
					h.Set("X-Custom", "worker")
				}
				if i%7 == 0 {
					h.SetContentType("text/plain")
				}
			}
			passHeaders(&got, src)
			passHeadersReference(&want, src)
			require.Equal(t, withoutDate(want.String()), withoutDate(got.String()), "upstream:\n%s", raw.String())
			got.Set("x-after", "1")
			require.Contains(t, got.String(), "\r\nX-After: 1\r\n", "normalizing is on again")

			var gotStream, wantStream fasthttp.RequestCtx
			for _, ctx := range []*fasthttp.RequestCtx{&gotStream, &wantStream} {
				ctx.Response.Header.SetCanonical([]byte("X-Request-Id"), []byte("r1"))
				setStreamHeaders(ctx)
			}
			passStreamHeaders(&gotStream.Response.Header, src)
			passStreamHeadersReference(&wantStream.Response.Header, src)
			require.Equal(t, withoutDate(wantStream.Response.Header.String()), withoutDate(gotStream.Response.Header.String()),
				"upstream:\n%s", raw.String())
		}
	}
}

// setStreamHeaders writes what setting its headers by name did.
func TestSetStreamHeaders(t *testing.T) {
	for _, closing := range []bool{false, true} {
		var got, want fasthttp.RequestCtx
		for _, ctx := range []*fasthttp.RequestCtx{&got, &want} {
			ctx.Request.Header.SetConnectionClose()
			if !closing {
				ctx.Request.Header.ResetConnectionClose()
			}
			ctx.Response.Header.SetCanonical([]byte("X-Request-Id"), []byte("r1"))
		}
		setStreamHeaders(&got)
		h := &want.Response.Header
		h.SetContentType("text/event-stream")
		h.Set("Cache-Control", "no-cache")
		if !closing {
			h.Set("Connection", "keep-alive")
		}
		h.Set("X-Accel-Buffering", "no")
		require.Equal(t, withoutDate(want.Response.Header.String()), withoutDate(got.Response.Header.String()))
	}
}
