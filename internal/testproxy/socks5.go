// Package testproxy is a small SOCKS5 proxy server (RFC 1928 CONNECT, with optional RFC 1929
// username/password authentication) for tests that must prove traffic went through an account's
// proxy. It counts the connections it relayed and the targets they asked for.
//
// It is for tests only: no BIND or UDP ASSOCIATE, no access control beyond the credentials. It
// depends on the standard library only.
package testproxy

import (
	"encoding/binary"
	"errors"
	"io"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"
)

// SOCKS5 protocol constants (RFC 1928, RFC 1929).
const (
	socksVersion     = 5
	methodNoAuth     = 0x00
	methodUserPass   = 0x02
	methodNone       = 0xff
	cmdConnect       = 0x01
	atypIPv4         = 0x01
	atypDomain       = 0x03
	atypIPv6         = 0x04
	repSuccess       = 0x00
	repFailure       = 0x01
	repCmdNotSupport = 0x07
	handshakeTimeout = 5 * time.Second
)

// SOCKS5 is a running proxy. Close it (StartSOCKS5 does, at the end of the test).
type SOCKS5 struct {
	ln         net.Listener
	user, pass string

	mu       sync.Mutex
	targets  []string
	authFail int
	wg       sync.WaitGroup
	conns    map[net.Conn]struct{}
	closed   bool
}

// StartSOCKS5 starts a proxy on 127.0.0.1 that requires user and pass (both empty = no
// authentication), stopped when the test ends.
func StartSOCKS5(t testing.TB, user, pass string) *SOCKS5 {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("testproxy: listen: %v", err)
	}
	p := &SOCKS5{ln: ln, user: user, pass: pass, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.serve()
	t.Cleanup(p.Close)
	return p
}

// Addr is the proxy's host:port.
func (p *SOCKS5) Addr() string { return p.ln.Addr().String() }

// URL is the proxy URL to configure: socks5://[user:pass@]host:port.
func (p *SOCKS5) URL() string {
	if p.user == "" {
		return "socks5://" + p.Addr()
	}
	return "socks5://" + p.user + ":" + p.pass + "@" + p.Addr()
}

// Targets returns the host:port of every CONNECT it relayed, oldest first.
func (p *SOCKS5) Targets() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.targets...)
}

// AuthFailures counts handshakes refused for bad credentials.
func (p *SOCKS5) AuthFailures() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.authFail
}

// Close stops accepting and cuts every relayed connection.
func (p *SOCKS5) Close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	for c := range p.conns {
		_ = c.Close()
	}
	p.mu.Unlock()
	_ = p.ln.Close()
	p.wg.Wait()
}

func (p *SOCKS5) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *SOCKS5) untrack(c net.Conn) {
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
}

func (p *SOCKS5) serve() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		if !p.track(c) {
			_ = c.Close()
			return
		}
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			defer p.untrack(c)
			defer c.Close()
			p.handle(c)
		}()
	}
}

func (p *SOCKS5) handle(c net.Conn) {
	_ = c.SetDeadline(time.Now().Add(handshakeTimeout))
	target, err := p.handshake(c)
	if err != nil {
		return
	}
	up, err := net.DialTimeout("tcp", target, handshakeTimeout)
	if err != nil {
		_, _ = c.Write([]byte{socksVersion, repFailure, 0, atypIPv4, 0, 0, 0, 0, 0, 0})
		return
	}
	if !p.track(up) {
		_ = up.Close()
		return
	}
	defer p.untrack(up)
	defer up.Close()
	p.mu.Lock()
	p.targets = append(p.targets, target)
	p.mu.Unlock()
	// Reply with the bound address (the tests' clients ignore it).
	_, _ = c.Write([]byte{socksVersion, repSuccess, 0, atypIPv4, 0, 0, 0, 0, 0, 0})
	_ = c.SetDeadline(time.Time{})

	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(up, c); closeWrite(up); done <- struct{}{} }()
	go func() { _, _ = io.Copy(c, up); closeWrite(c); done <- struct{}{} }()
	<-done
	<-done
}

func closeWrite(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.CloseWrite()
	}
}

var errHandshake = errors.New("testproxy: bad handshake")

// handshake reads the greeting, authenticates and reads the CONNECT request; it returns the
// target host:port.
func (p *SOCKS5) handshake(c net.Conn) (string, error) {
	hdr := make([]byte, 2)
	if _, err := io.ReadFull(c, hdr); err != nil || hdr[0] != socksVersion {
		return "", errHandshake
	}
	methods := make([]byte, hdr[1])
	if _, err := io.ReadFull(c, methods); err != nil {
		return "", errHandshake
	}
	want := byte(methodNoAuth)
	if p.user != "" {
		want = methodUserPass
	}
	offered := false
	for _, m := range methods {
		offered = offered || m == want
	}
	if !offered {
		_, _ = c.Write([]byte{socksVersion, methodNone})
		return "", errHandshake
	}
	if _, err := c.Write([]byte{socksVersion, want}); err != nil {
		return "", err
	}
	if want == methodUserPass {
		if err := p.authenticate(c); err != nil {
			return "", err
		}
	}
	req := make([]byte, 4)
	if _, err := io.ReadFull(c, req); err != nil || req[0] != socksVersion {
		return "", errHandshake
	}
	if req[1] != cmdConnect {
		_, _ = c.Write([]byte{socksVersion, repCmdNotSupport, 0, atypIPv4, 0, 0, 0, 0, 0, 0})
		return "", errHandshake
	}
	var host string
	switch req[3] {
	case atypIPv4, atypIPv6:
		n := 4
		if req[3] == atypIPv6 {
			n = 16
		}
		ip := make([]byte, n)
		if _, err := io.ReadFull(c, ip); err != nil {
			return "", errHandshake
		}
		host = net.IP(ip).String()
	case atypDomain:
		l := make([]byte, 1)
		if _, err := io.ReadFull(c, l); err != nil {
			return "", errHandshake
		}
		name := make([]byte, l[0])
		if _, err := io.ReadFull(c, name); err != nil {
			return "", errHandshake
		}
		host = string(name)
	default:
		return "", errHandshake
	}
	port := make([]byte, 2)
	if _, err := io.ReadFull(c, port); err != nil {
		return "", errHandshake
	}
	return net.JoinHostPort(host, strconv.Itoa(int(binary.BigEndian.Uint16(port)))), nil
}

// authenticate runs RFC 1929 username/password authentication.
func (p *SOCKS5) authenticate(c net.Conn) error {
	hdr := make([]byte, 2)
	if _, err := io.ReadFull(c, hdr); err != nil || hdr[0] != 1 {
		return errHandshake
	}
	user := make([]byte, hdr[1])
	if _, err := io.ReadFull(c, user); err != nil {
		return errHandshake
	}
	l := make([]byte, 1)
	if _, err := io.ReadFull(c, l); err != nil {
		return errHandshake
	}
	pass := make([]byte, l[0])
	if _, err := io.ReadFull(c, pass); err != nil {
		return errHandshake
	}
	if string(user) != p.user || string(pass) != p.pass {
		p.mu.Lock()
		p.authFail++
		p.mu.Unlock()
		_, _ = c.Write([]byte{1, 1})
		return errHandshake
	}
	_, err := c.Write([]byte{1, 0})
	return err
}
