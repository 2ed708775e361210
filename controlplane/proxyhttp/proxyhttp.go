// Package proxyhttp builds the control plane's outgoing HTTP clients (OAuth token calls,
// notifications) through an optional per-account or per-target proxy: http://, https://,
// socks5:// or socks5h://, with user:pass@ credentials. Every client has timeouts, so a bad proxy
// is a clear, quick error (a *Error matching ErrProxy), never a hang.
//
// It depends on the standard library only (net/http speaks HTTP CONNECT and SOCKS5 itself).
package proxyhttp

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Sentinel errors callers branch on with errors.Is.
var (
	// ErrBadProxy: the proxy is not a URL crs can use.
	ErrBadProxy = errors.New("bad proxy URL")
	// ErrProxy: the proxy could not be used (unreachable, refused the connection or the
	// credentials). See Error.
	ErrProxy = errors.New("proxy failed")
)

// maxDialTimeout bounds connecting to the proxy or the server.
const maxDialTimeout = 10 * time.Second

// Error says the proxy, not the server behind it, failed. It matches ErrProxy.
type Error struct {
	// Proxy is the proxy URL with its password redacted.
	Proxy string
	Err   error
}

func (e *Error) Error() string { return "proxy " + e.Proxy + ": " + e.Err.Error() }

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

// Is makes errors.Is(err, ErrProxy) true.
func (e *Error) Is(target error) bool { return target == ErrProxy }

// Redact returns the proxy URL p with its password replaced by "REDACTED", for messages and logs.
func Redact(p string) string {
	u, err := url.Parse(p)
	if p == "" || err != nil || u.User == nil {
		return p
	}
	if _, ok := u.User.Password(); !ok {
		return p
	}
	u.User = url.UserPassword(u.User.Username(), "REDACTED")
	return u.String()
}

// Parse checks a proxy URL: http://, https://, socks5:// or socks5h:// with a host and a port,
// optionally user:pass@. "" is no proxy (nil, nil).
func Parse(p string) (*url.URL, error) {
	if p == "" {
		return nil, nil
	}
	u, err := url.Parse(p)
	if err != nil {
		return nil, fmt.Errorf("%w: not a URL (want e.g. socks5://user:pass@host:1080)", ErrBadProxy)
	}
	switch u.Scheme {
	case "http", "https", "socks5", "socks5h":
	default:
		return nil, fmt.Errorf("%w: scheme %q (want http, https, socks5 or socks5h)", ErrBadProxy, u.Scheme)
	}
	if u.Hostname() == "" || u.Port() == "" {
		return nil, fmt.Errorf("%w: %s has no host:port", ErrBadProxy, Redact(p))
	}
	return u, nil
}

// NewClient returns a client through proxy ("" = direct) whose requests each take at most
// timeout, connection and proxy handshake included. Failing to reach the proxy is a *Error. It
// follows no redirects (the control plane's calls post bodies that must not go elsewhere). Call
// CloseIdleConnections when done with it.
func NewClient(proxy string, timeout time.Duration) (*http.Client, error) {
	if timeout <= 0 {
		return nil, errors.New("proxyhttp: timeout must be positive")
	}
	pu, err := Parse(proxy)
	if err != nil {
		return nil, err
	}
	dialer := &net.Dialer{Timeout: min(timeout, maxDialTimeout), KeepAlive: 30 * time.Second}
	tr := &http.Transport{
		DialContext:           dialer.DialContext,
		TLSHandshakeTimeout:   min(timeout, maxDialTimeout),
		ResponseHeaderTimeout: timeout,
		MaxIdleConns:          4,
		IdleConnTimeout:       30 * time.Second,
		TLSClientConfig:       &tls.Config{MinVersion: tls.VersionTLS12},
		ForceAttemptHTTP2:     true,
	}
	if pu != nil {
		redacted := Redact(proxy)
		tr.Proxy = http.ProxyURL(pu)
		// With a proxy every connection the transport opens goes to the proxy itself.
		tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := dialer.DialContext(ctx, network, addr)
			if err != nil {
				return nil, &Error{Proxy: redacted, Err: fmt.Errorf("unreachable: %w", err)}
			}
			return c, nil
		}
	}
	return &http.Client{
		Transport:     tr,
		Timeout:       timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}, nil
}

// Describe turns the error of a failed request (what names it: "token request") into one that
// says what failed: the proxy (a *Error), or the request, and whether it timed out. The URL is
// left out: it adds nothing an operator needs and may carry secrets in its query.
func Describe(err error, proxy, what string) error {
	var pe *Error
	if errors.As(err, &pe) {
		return pe
	}
	cause := err
	var ue *url.Error
	if errors.As(err, &ue) {
		cause = ue.Err
	}
	timeout := false
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		timeout = true
	}
	if proxy != "" {
		msg := err.Error()
		// The standard library reports a proxy handshake failure only in words: "proxyconnect
		// ..." (HTTP CONNECT) or "socks connect ..." (SOCKS5 refused the target or the credentials).
		if !timeout && (strings.Contains(msg, "proxyconnect") || strings.Contains(msg, "socks connect")) {
			return &Error{Proxy: Redact(proxy), Err: cause}
		}
		what += " via proxy " + Redact(proxy)
	}
	if timeout {
		return fmt.Errorf("%s timed out: %w", what, cause)
	}
	return fmt.Errorf("%s: %w", what, cause)
}

// StatusError returns a *Error for a 407 answer (the HTTP proxy refused the credentials), else nil.
func StatusError(status int, proxy string) error {
	if status == http.StatusProxyAuthRequired && proxy != "" {
		return &Error{Proxy: Redact(proxy), Err: errors.New("credentials refused (407)")}
	}
	return nil
}
