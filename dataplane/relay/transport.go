package relay

import (
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"syscall"
	"time"

	crsv1 "github.com/crsrelay/crs/gen/crs/v1"
	"github.com/valyala/fasthttp"
)

// transport is a pair of upstream clients sharing one way of dialing: unary for non-stream requests
// (whole body buffered, bounded by MaxResponseBodySize) and stream (the body is read by the relay as
// it arrives). Both keep connections alive per upstream host.
//
// Timeouts are enforced per socket read by deadlineConn, not per response, so a stream may run for
// as long as events keep coming.
type transport struct {
	unary, stream *fasthttp.Client
}

// newTransport returns the clients of one way of dialing: dial (nil: direct TCP, bounded by
// ConnectTimeout), every connection wrapped in a deadlineConn.
func newTransport(o *Options, dial fasthttp.DialFunc) *transport {
	if dial == nil {
		dialer := &fasthttp.TCPDialer{DNSCacheDuration: time.Minute}
		dial = func(addr string) (net.Conn, error) { return dialer.DialTimeout(addr, o.ConnectTimeout) }
	}
	wrapped := func(addr string) (net.Conn, error) {
		c, err := dial(addr)
		if err != nil {
			return nil, err
		}
		dc := &deadlineConn{Conn: c, firstByte: o.FirstByteTimeout, idle: o.IdleTimeout}
		dc.addr = connAddr{Addr: c.LocalAddr(), conn: dc}
		return dc, nil
	}
	base := func() *fasthttp.Client {
		return &fasthttp.Client{
			Dial:                     wrapped,
			NoDefaultUserAgentHeader: true,
			DisablePathNormalizing:   true,
			// No WriteTimeout: deadlineConn bounds writes (by FirstByteTimeout: the request must be
			// on the wire before the first-byte clock starts) without a timer update per request.
			MaxIdleConnDuration: 30 * time.Second,
			ReadBufferSize:      16 << 10,
			// POST is not idempotent, so fasthttp would not retry it; a pooled connection the
			// upstream closed while idle is the one failure worth one retry on the same account.
			RetryIfErr:                retryStaleConn,
			MaxIdemponentCallAttempts: 2,
		}
	}
	u := base()
	u.MaxConnsPerHost = 4096
	u.MaxResponseBodySize = o.MaxResponseBodySize
	s := base()
	s.MaxConnsPerHost = 16384
	s.StreamResponseBody = true
	return &transport{unary: u, stream: s}
}

// proxied is the transport of one proxy URL, or why the URL is unusable.
type proxied struct {
	tr  *transport
	err error
}

// maxProxyTransports bounds the cache of proxy transports; past it the cache starts over (the
// dropped clients close their idle connections by themselves after MaxIdleConnDuration).
const maxProxyTransports = 1024

// transportFor returns the clients to reach acct with: the shared direct transport, or for an
// account with a proxy (acct.proxy: http://, https://, socks5://, socks5h://, with optional
// user:pass@) the transport of that proxy URL, built on first use and kept (a changed URL is
// another transport). An unusable URL is an error that names no credential.
func (r *Relay) transportFor(acct *crsv1.Account) (*transport, error) {
	raw := acct.GetProxy()
	if raw == "" {
		return r.tr, nil
	}
	r.proxyMu.RLock()
	p, ok := r.proxies[raw]
	r.proxyMu.RUnlock()
	if ok {
		return p.tr, p.err
	}
	r.proxyMu.Lock()
	defer r.proxyMu.Unlock()
	if p, ok := r.proxies[raw]; ok {
		return p.tr, p.err
	}
	pd, err := newProxyDialer(raw, r.o.ConnectTimeout)
	if err != nil {
		p = proxied{err: err}
	} else {
		p = proxied{tr: newTransport(&r.o, pd.Dial)}
	}
	if r.proxies == nil || len(r.proxies) >= maxProxyTransports {
		r.proxies = map[string]proxied{}
	}
	r.proxies[raw] = p
	return p.tr, p.err
}

// retryStaleConn retries a request once when the connection broke before any response byte
// arrived: the typical end of a keep-alive connection the upstream closed while it sat in the pool.
// Timeouts and proxy failures are never retried (that would double the wait).
func retryStaleConn(_ *fasthttp.Request, attempts int, err error) (resetTimeout, retry bool) {
	var pe *proxyError
	if attempts > 1 || isTimeout(err) || errors.As(err, &pe) {
		return false, false
	}
	return false, errors.Is(err, fasthttp.ErrConnectionClosed) || errors.Is(err, io.EOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// deadlineConn bounds every read from an upstream: the first read after a request was written may
// wait firstByte (the upstream thinks before it answers), every other read idle (the gap between
// two chunks of a stream). fasthttp uses a connection from one goroutine at a time, and the pool
// hands it over with a lock, so the fields need no synchronisation.
//
// A stream being relayed also registers itself as the connection's reader (setReader): it is told
// before every read that goes to the network, which is when it must flush what it holds for the
// client (streamBody.beforeRead).
type deadlineConn struct {
	net.Conn
	firstByte, idle time.Duration
	awaiting        bool // a request was written and no byte of its answer was read yet
	addr            connAddr
	reader          netReader
	// The deadlines set on Conn, as monotonic clock readings (see monoNow; zero: none yet).
	// Moving a deadline updates a runtime timer, so a deadline is left where it is while it falls
	// short of the wanted one by at most 1/deadlineSlack of the wait (a 300s wait may end up to
	// 4.7s early; see deadline).
	readBy, writeBy time.Duration
}

// deadlineSlack: a deadline may fall short of the wanted one by 1/deadlineSlack of the wait.
const deadlineSlack = 64

// monoBase is the origin of monoNow. It is set once, when the package is loaded, and never changed.
var monoBase = time.Now()

// monoNow reads the monotonic clock only: time.Since on a time that carries a monotonic reading
// does not read the wall clock, which costs as much again as time.Now on some hosts. Every read
// and write to an upstream checks its deadline with it.
func monoNow() time.Duration { return time.Since(monoBase) }

// deadline reports whether a deadline set at *by must move to now+d, and updates *by if so.
func deadline(by *time.Duration, d time.Duration) (time.Time, bool) {
	want := monoNow() + d
	if diff := want - *by; diff >= 0 && diff <= d/deadlineSlack {
		return time.Time{}, false
	}
	*by = want
	return monoBase.Add(want), true
}

// netReader is told before each read from the network; an error it returns fails that read.
type netReader interface {
	beforeRead() error
}

// connAddr is the local address of a deadlineConn, and the way back to it from a response:
// fasthttp records the connection's LocalAddr in the Response it reads (Response.ParseNetConn) and
// has no other accessor for the connection.
type connAddr struct {
	net.Addr
	conn *deadlineConn
}

// LocalAddr implements [net.Conn]: the connection's address, as a *connAddr (see connOf).
func (c *deadlineConn) LocalAddr() net.Addr { return &c.addr }

// connOf returns the connection resp was read from, nil when it did not come through a relay
// transport.
func connOf(resp *fasthttp.Response) *deadlineConn {
	if a, ok := resp.LocalAddr().(*connAddr); ok {
		return a.conn
	}
	return nil
}

// setReader registers r to be told before each network read, until setReader(nil). Only the
// goroutine that owns the response read from c may call it.
func (c *deadlineConn) setReader(r netReader) { c.reader = r }

func (c *deadlineConn) Write(p []byte) (int, error) {
	c.awaiting = true
	if d := c.firstByte; d > 0 {
		if t, move := deadline(&c.writeBy, d); move {
			if err := c.Conn.SetWriteDeadline(t); err != nil {
				return 0, err
			}
		}
	}
	return c.Conn.Write(p)
}

func (c *deadlineConn) Read(p []byte) (int, error) {
	if c.reader != nil {
		if err := c.reader.beforeRead(); err != nil {
			return 0, err
		}
	}
	d := c.idle
	if c.awaiting {
		d = c.firstByte
	}
	if d > 0 {
		if t, move := deadline(&c.readBy, d); move {
			if err := c.Conn.SetReadDeadline(t); err != nil {
				return 0, err
			}
		}
	}
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.awaiting = false
	}
	return n, err
}

// Transport failure classes: what the client is told when every attempt failed this way.
type transportFailure uint8

const (
	failRefused transportFailure = iota // could not connect
	failReset                           // connection broke before an answer
	failDNS                             // name did not resolve
	failTimeout                         // no answer in time
)

func (f transportFailure) String() string {
	return [...]string{"connection refused", "connection reset", "dns failure", "timeout"}[f]
}

// classifyTransport sorts a client.Do error (reference §1.3 step 13).
func classifyTransport(err error) transportFailure {
	var dnsErr *net.DNSError
	switch {
	case isTimeout(err):
		return failTimeout
	case errors.As(err, &dnsErr):
		return failDNS
	case errors.Is(err, syscall.ECONNREFUSED):
		return failRefused
	case errors.Is(err, fasthttp.ErrConnectionClosed), errors.Is(err, io.EOF),
		errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return failReset
	}
	var opErr *net.OpError
	if errors.As(err, &opErr) && opErr.Op == "dial" {
		return failRefused
	}
	if strings.Contains(err.Error(), "no such host") {
		return failDNS
	}
	return failReset
}

func isTimeout(err error) bool {
	if errors.Is(err, fasthttp.ErrTimeout) || errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, fasthttp.ErrDialTimeout) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
