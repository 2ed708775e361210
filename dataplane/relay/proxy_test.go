package relay

import (
	"bufio"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/valyala/fasthttp"

	crsv1 "github.com/crsrelay/crs/gen/crs/v1"
	"github.com/crsrelay/crs/internal/testproxy"
)

// viaProxy is official(id, base) with a proxy URL.
func viaProxy(id, base, proxyURL string) *crsv1.Account {
	a := official(id, base)
	a.Proxy = proxyURL
	return a
}

// connectProxy is an HTTP CONNECT proxy requiring Basic user:pass (none when user is empty); it
// records the targets it tunnelled to.
type connectProxy struct {
	addr    string
	mu      sync.Mutex
	targets []string
}

func startConnectProxy(t *testing.T, user, pass string) *connectProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	p := &connectProxy{addr: ln.Addr().String()}
	var (
		wg     sync.WaitGroup
		connMu sync.Mutex
		conns  []net.Conn
	)
	track := func(c net.Conn) {
		connMu.Lock()
		conns = append(conns, c)
		connMu.Unlock()
	}
	t.Cleanup(func() {
		_ = ln.Close()
		connMu.Lock()
		for _, c := range conns {
			_ = c.Close()
		}
		connMu.Unlock()
		wg.Wait()
	})
	want := ""
	if user != "" {
		want = "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pass))
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			track(c)
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				br := bufio.NewReader(c)
				req, err := http.ReadRequest(br)
				if err != nil || req.Method != http.MethodConnect {
					return
				}
				if req.Header.Get("Proxy-Authorization") != want {
					_, _ = io.WriteString(c, "HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n")
					return
				}
				up, err := net.Dial("tcp", req.Host)
				if err != nil {
					_, _ = io.WriteString(c, "HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
					return
				}
				track(up)
				defer up.Close()
				p.mu.Lock()
				p.targets = append(p.targets, req.Host)
				p.mu.Unlock()
				_, _ = io.WriteString(c, "HTTP/1.1 200 Connection established\r\n\r\n")
				go func() { _, _ = io.Copy(up, br) }()
				_, _ = io.Copy(c, up)
			}()
		}
	}()
	return p
}

func (p *connectProxy) Targets() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.targets...)
}

// A request through an account with a proxy reaches the upstream through that proxy, with the
// proxy's credentials, streamed or not.
func TestRelayThroughProxy(t *testing.T) {
	up := newUpstream(t, sseHandler(fullStream, 0, nil))
	hostport := strings.TrimPrefix(up.URL, "http://")
	for _, stream := range []bool{true, false} {
		t.Run(fmt.Sprintf("socks5/stream=%v", stream), func(t *testing.T) {
			px := testproxy.StartSOCKS5(t, "u", "pw")
			f := newFront(t, Options{}, viaProxy("a", up.URL, px.URL()))
			body := unaryReq
			if stream {
				body = streamReq
			}
			resp := f.post(t, "/v1/messages", body)
			require.Equal(t, 200, resp.StatusCode)
			require.Equal(t, strings.Join(fullStream, ""), readAll(t, resp.Body))
			require.Equal(t, []string{"a:success"}, eventKinds(f.outcome(t)))
			require.Equal(t, []string{hostport}, px.Targets())
			require.Zero(t, px.AuthFailures())
		})
	}
	t.Run("socks5h without credentials", func(t *testing.T) {
		px := testproxy.StartSOCKS5(t, "", "")
		f := newFront(t, Options{}, viaProxy("a", up.URL, "socks5h://"+px.Addr()))
		require.Equal(t, 200, f.post(t, "/v1/messages", unaryReq).StatusCode)
		require.Equal(t, []string{hostport}, px.Targets())
	})
	t.Run("http CONNECT", func(t *testing.T) {
		px := startConnectProxy(t, "u", "pw")
		f := newFront(t, Options{}, viaProxy("a", up.URL, "http://u:pw@"+px.addr))
		resp := f.post(t, "/v1/messages", streamReq)
		require.Equal(t, 200, resp.StatusCode)
		require.Equal(t, strings.Join(fullStream, ""), readAll(t, resp.Body))
		require.Equal(t, []string{hostport}, px.Targets())
	})
}

// A proxy that cannot be used is the account's failure, with a reason naming the proxy and never
// its password: the request fails over, or gets 502 when no account is left, within the connect
// timeout.
func TestProxyFailures(t *testing.T) {
	const pass = "s3cret-pw"
	good := newUpstream(t, sseHandler(fullStream, 0, nil))
	deadAddr := strings.TrimPrefix(closedURL(t), "http://")
	authPx := testproxy.StartSOCKS5(t, "u", "right")
	connectPx := startConnectProxy(t, "u", "right")
	hole := testproxy.StartBlackhole(t)
	tests := []struct {
		name, proxy, reason string
	}{
		{"socks5 refused", "socks5://u:" + pass + "@" + deadAddr, "proxy socks5://" + deadAddr + ": connection refused"},
		{"http refused", "http://u:" + pass + "@" + deadAddr, "proxy http://" + deadAddr + ": connection refused"},
		{"socks5 bad credentials", "socks5://u:" + pass + "@" + authPx.Addr(), "proxy socks5://" + authPx.Addr() + ": "},
		{"http bad credentials", "http://u:" + pass + "@" + connectPx.addr,
			"proxy http://" + connectPx.addr + ": CONNECT answered 407 Proxy Authentication Required"},
		{"socks5 proxy never answers", "socks5://u:" + pass + "@" + hole, "proxy socks5://" + hole + ": timeout"},
		{"unknown scheme", "ftp://u:" + pass + "@127.0.0.1:1", `proxy: invalid proxy URL: scheme "ftp"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			o := Options{ConnectTimeout: 300 * time.Millisecond}

			f := newFront(t, o, viaProxy("a", good.URL, tt.proxy), official("b", good.URL))
			resp := f.post(t, "/v1/messages", streamReq)
			require.Equal(t, 200, resp.StatusCode)
			require.Equal(t, strings.Join(fullStream, ""), readAll(t, resp.Body))
			out := f.outcome(t)
			require.Equal(t, []string{"a:server_error", "b:success"}, eventKinds(out))
			require.True(t, strings.HasPrefix(out.Events[0].GetReason(), tt.reason), "reason: %s", out.Events[0].GetReason())
			require.NotContains(t, out.Events[0].GetReason(), pass)

			// Alone, the account gets the documented 502, quickly.
			f = newFront(t, o, viaProxy("a", good.URL, tt.proxy))
			start := time.Now()
			resp = f.post(t, "/v1/messages", unaryReq)
			require.Equal(t, 502, resp.StatusCode)
			require.Contains(t, readAll(t, resp.Body), `"error":"Upstream service unavailable"`)
			require.Less(t, time.Since(start), 2*time.Second, "bounded by the connect timeout, not retried")
			out = f.outcome(t)
			require.Equal(t, []string{"a:server_error"}, eventKinds(out))
			require.NotContains(t, out.Events[0].GetReason(), pass)
		})
	}
}

// The relay's timeouts hold through a proxy: the connection it wraps is the tunnel.
func TestProxyKeepsTimeouts(t *testing.T) {
	slow := newUpstream(t, func(ctx *fasthttp.RequestCtx) {
		time.Sleep(700 * time.Millisecond)
		ctx.SetBodyString("{}")
	})
	px := testproxy.StartSOCKS5(t, "", "")
	f := newFront(t, Options{FirstByteTimeout: 200 * time.Millisecond}, viaProxy("a", slow.URL, px.URL()))
	start := time.Now()
	resp := f.post(t, "/v1/messages", unaryReq)
	require.Equal(t, 504, resp.StatusCode)
	require.Less(t, time.Since(start), 650*time.Millisecond)
	o := f.outcome(t)
	require.Equal(t, []string{"a:server_error"}, eventKinds(o))
	require.Equal(t, "upstream timeout", o.Events[0].GetReason())
	require.Len(t, px.Targets(), 1)
}

// A proxy URL gets one transport, built once; another URL (a changed proxy) another one; no proxy
// is the shared direct transport.
func TestTransportPerProxy(t *testing.T) {
	r := New(Options{})
	direct, err := r.transportFor(&crsv1.Account{})
	require.NoError(t, err)
	require.Same(t, r.tr, direct)

	a1, err := r.transportFor(&crsv1.Account{Proxy: "socks5://u:p@127.0.0.1:1080"})
	require.NoError(t, err)
	require.NotSame(t, direct, a1)
	again, err := r.transportFor(&crsv1.Account{Id: "other", Proxy: "socks5://u:p@127.0.0.1:1080"})
	require.NoError(t, err)
	require.Same(t, a1, again)
	changed, err := r.transportFor(&crsv1.Account{Proxy: "socks5://u:p@127.0.0.1:1081"})
	require.NoError(t, err)
	require.NotSame(t, a1, changed)

	for _, bad := range []string{"ftp://u:pw-secret@host:1", "http://u:pw-secret@", "::pw-secret"} {
		_, err := r.transportFor(&crsv1.Account{Proxy: bad})
		require.ErrorIs(t, err, errProxyURL, bad)
		require.NotContains(t, err.Error(), "pw-secret")
	}
}
