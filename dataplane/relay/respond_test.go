package relay

import (
	"bufio"
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
