//go:build !race

package relay

import (
	"bufio"
	"bytes"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"github.com/valyala/fasthttp"
)

// Passing a buffered answer to the client keeps fasthttp's response body pool working: once the
// pool has calibrated itself (42000 buffers returned), reading an upstream answer and handing its
// body to the client allocates nothing. setBody used to give the pool back empty buffers, which it
// then dropped, so that every answer allocated a new buffer.
func TestBufferedBodyReusesPooledBuffers(t *testing.T) {
	body := `{"id":"msg_1","type":"message","content":[{"type":"text","text":"` + strings.Repeat("hi ", 150) + `"}]}`
	raw := []byte("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: " +
		strconv.Itoa(len(body)) + "\r\n\r\n" + body)
	var client fasthttp.Response
	client.KeepBodyBuffer = true // as the server's response keeps its buffer between requests
	r := bytes.NewReader(raw)
	br := bufio.NewReader(r)
	answer := func() {
		client.Reset()
		client.KeepBodyBuffer = true
		r.Reset(raw)
		br.Reset(r)
		up := fasthttp.AcquireResponse()
		if err := up.Read(br); err != nil {
			t.Fatal(err)
		}
		setBody(&client, up, up.Body())
		fasthttp.ReleaseResponse(up)
	}
	for range 50000 { // past the pool's calibration
		answer()
	}
	require.Equal(t, body, string(client.Body()))
	require.Zero(t, testing.AllocsPerRun(1000, answer))
}

// Passing the upstream's headers to the client allocates nothing once the client response's
// buffers have grown.
func TestPassHeadersDoesNotAllocate(t *testing.T) {
	var up fasthttp.Response
	require.NoError(t, up.Read(bufio.NewReader(strings.NewReader(upstreamHead))))
	var ctx fasthttp.RequestCtx
	for name, pass := range map[string]func(){
		"buffered": func() { passHeaders(&ctx.Response.Header, &up.Header) },
		"stream":   func() { setStreamHeaders(&ctx); passStreamHeaders(&ctx.Response.Header, &up.Header) },
	} {
		run := func() {
			ctx.Response.Header.Reset()
			ctx.Response.Header.SetCanonical([]byte("X-Request-Id"), []byte("r1"))
			pass()
		}
		run()
		require.Zero(t, testing.AllocsPerRun(100, run), name)
	}
}
