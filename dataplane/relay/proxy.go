package relay

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"syscall"
	"time"

	"golang.org/x/net/proxy"
)

// errProxyURL is an account proxy the relay cannot use: not a URL, or a scheme other than http,
// https, socks5 and socks5h.
var errProxyURL = errors.New("invalid proxy URL")

// proxyError is a failure to reach an upstream through an account's proxy: the proxy refused the
// connection, did not answer in time, refused the credentials or could not reach the target. It is
// the account's failure (the request fails over). Its message names the proxy without credentials.
type proxyError struct {
	// Proxy is the proxy URL without user information (socks5://host:port).
	Proxy string
	// What went wrong, short ("connection refused", "timeout", ...).
	What string
	// Err is the underlying error.
	Err error
}

func (e *proxyError) Error() string { return "proxy " + e.Proxy + ": " + e.What }

func (e *proxyError) Unwrap() error { return e.Err }

// proxyDialer dials upstream addresses through one proxy.
type proxyDialer struct {
	// shown is the proxy URL without user information, for messages.
	shown string
	// secret is the proxy password, scrubbed from messages that might quote it.
	secret  string
	timeout time.Duration
	dial    func(ctx context.Context, addr string) (net.Conn, error)
}

// newProxyDialer parses an account's proxy URL: http://, https:// (CONNECT, over TLS to the proxy
// for https) or socks5://, socks5h:// (RFC 1928; the proxy resolves names in both cases), each with
// optional user:pass@. timeout bounds reaching the target through the proxy (connect to the proxy,
// handshake, connect to the target). Errors never quote the URL (it may hold a password).
func newProxyDialer(raw string, timeout time.Duration) (*proxyDialer, error) {
	u, err := url.Parse(strings.TrimSpace(raw))
	if err != nil {
		return nil, fmt.Errorf("%w: not a URL", errProxyURL)
	}
	scheme := strings.ToLower(u.Scheme)
	host := u.Hostname()
	if host == "" {
		return nil, fmt.Errorf("%w: no host", errProxyURL)
	}
	port := u.Port()
	if port == "" {
		switch scheme {
		case "http":
			port = "80"
		case "https":
			port = "443"
		default:
			port = "1080"
		}
	}
	hostport := net.JoinHostPort(host, port)
	pd := &proxyDialer{shown: scheme + "://" + hostport, timeout: timeout}
	user := u.User.Username()
	pass, _ := u.User.Password()
	pd.secret = pass
	var forward net.Dialer
	switch scheme {
	case "socks5", "socks5h":
		var auth *proxy.Auth
		if u.User != nil {
			auth = &proxy.Auth{User: user, Password: pass}
		}
		d, err := proxy.SOCKS5("tcp", hostport, auth, &forward)
		if err != nil {
			return nil, fmt.Errorf("%w: %s", errProxyURL, scheme)
		}
		cd, ok := d.(proxy.ContextDialer)
		if !ok {
			return nil, fmt.Errorf("%w: %s dialer without context", errProxyURL, scheme)
		}
		pd.dial = func(ctx context.Context, addr string) (net.Conn, error) {
			return cd.DialContext(ctx, "tcp", addr)
		}
	case "http", "https":
		var authz string
		if u.User != nil {
			authz = "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pass))
		}
		useTLS := scheme == "https"
		pd.dial = func(ctx context.Context, addr string) (net.Conn, error) {
			return dialConnect(ctx, &forward, hostport, host, useTLS, authz, addr)
		}
	default:
		return nil, fmt.Errorf("%w: scheme %q", errProxyURL, scheme)
	}
	return pd, nil
}

// Dial connects to addr through the proxy within the dialer's timeout. Failures are *proxyError.
func (pd *proxyDialer) Dial(addr string) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), pd.timeout)
	defer cancel()
	c, err := pd.dial(ctx, addr)
	if err != nil {
		return nil, &proxyError{Proxy: pd.shown, What: pd.describe(err), Err: err}
	}
	return c, nil
}

// describe says in a few words why reaching the target through the proxy failed.
func (pd *proxyDialer) describe(err error) string {
	var dnsErr *net.DNSError
	switch {
	case errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded):
		return "timeout"
	case errors.As(err, &dnsErr):
		return "host not found"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, syscall.ECONNRESET):
		return "connection reset"
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return "timeout"
	}
	// The innermost message: the SOCKS or CONNECT failure, without the address chain.
	msg := err.Error()
	for {
		var oe *net.OpError
		if !errors.As(err, &oe) || oe.Err == nil {
			break
		}
		err, msg = oe.Err, oe.Err.Error()
	}
	if pd.secret != "" {
		msg = strings.ReplaceAll(msg, pd.secret, "xxxxx")
	}
	return msg
}

// errConnectRefused is a CONNECT the proxy answered with a status other than 200.
type errConnectRefused struct{ status string }

func (e errConnectRefused) Error() string { return "CONNECT answered " + e.status }

// dialConnect opens a tunnel to addr through an HTTP proxy at hostport (CONNECT, RFC 9110 §9.3.6),
// speaking TLS to the proxy when useTLS. authz is the Proxy-Authorization value ("" for none).
func dialConnect(ctx context.Context, d *net.Dialer, hostport, host string, useTLS bool, authz, addr string) (net.Conn, error) {
	c, err := d.DialContext(ctx, "tcp", hostport)
	if err != nil {
		return nil, err
	}
	if useTLS {
		tc := tls.Client(c, &tls.Config{ServerName: host, MinVersion: tls.VersionTLS12})
		if err := tc.HandshakeContext(ctx); err != nil {
			_ = c.Close()
			return nil, fmt.Errorf("tls handshake: %w", err)
		}
		c = tc
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	// A cancelled ctx (not only its deadline) ends a blocked handshake too.
	stop := context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	var b strings.Builder
	b.WriteString("CONNECT " + addr + " HTTP/1.1\r\nHost: " + addr + "\r\n")
	if authz != "" {
		b.WriteString("Proxy-Authorization: " + authz + "\r\n")
	}
	b.WriteString("\r\n")
	if _, err := c.Write([]byte(b.String())); err != nil {
		_ = c.Close()
		return nil, err
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil {
		_ = c.Close()
		return nil, err
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_ = c.Close()
		return nil, errConnectRefused{status: resp.Status}
	}
	if !stop() {
		_ = c.Close()
		return nil, ctx.Err()
	}
	if err := c.SetDeadline(time.Time{}); err != nil {
		_ = c.Close()
		return nil, err
	}
	if br.Buffered() > 0 {
		return &bufferedConn{Conn: c, r: br}, nil
	}
	return c, nil
}

// bufferedConn is a tunnel whose first bytes were read along with the proxy's answer.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufferedConn) Read(p []byte) (int, error) { return c.r.Read(p) }
