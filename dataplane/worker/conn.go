package worker

import (
	"net"
	"time"
)

// deadlineListener hands fasthttp client connections whose read deadlines are applied lazily
// (lazyDeadlineConn), so that keeping a connection alive does not move a runtime timer twice per
// request.
type deadlineListener struct {
	net.Listener
	slack time.Duration
}

// Accept implements [net.Listener]. Only plain TCP connections are wrapped: fasthttp looks
// through others (TLS) for what they are.
func (l deadlineListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	if _, ok := c.(*net.TCPConn); !ok {
		return c, nil
	}
	return &lazyDeadlineConn{Conn: c, slack: l.slack}, nil
}

// lazyDeadlineConn keeps the read deadline fasthttp asks for and applies it to the connection at
// the next Read, when it differs from the one applied by more than slack. fasthttp's server sets
// two read deadlines per request: the idle timeout before waiting for a request, the read
// timeout once its first byte arrived. A request that arrives in one read needs neither at its
// own time: the read timeout is never waited under (no further read), and the idle deadline of
// the next wait is within slack of the one applied for the previous wait, so it stays. Every
// read still waits under a deadline no later than the one asked for, and at most slack earlier.
//
// fasthttp calls SetReadDeadline only from the goroutine that reads the connection (the server
// closes connections it shuts down instead), so the fields need no synchronisation.
type lazyDeadlineConn struct {
	net.Conn
	slack   time.Duration
	want    time.Time // the read deadline asked for; zero: none
	applied time.Time // the read deadline set on Conn; zero: none
}

// SetReadDeadline implements [net.Conn]: it records t for the next Read.
func (c *lazyDeadlineConn) SetReadDeadline(t time.Time) error {
	c.want = t
	return nil
}

// SetDeadline implements [net.Conn]: the read deadline as SetReadDeadline, the write deadline at
// once.
func (c *lazyDeadlineConn) SetDeadline(t time.Time) error {
	c.want = t
	return c.Conn.SetWriteDeadline(t)
}

// Read implements [net.Conn], under the deadline asked for.
func (c *lazyDeadlineConn) Read(p []byte) (int, error) {
	if c.stale() {
		if err := c.Conn.SetReadDeadline(c.want); err != nil {
			return 0, err
		}
		c.applied = c.want
	}
	return c.Conn.Read(p)
}

// stale reports whether the applied deadline must move to the one asked for: it is later than
// that one (or there is none and one is asked for), or earlier by more than slack, or a deadline
// is applied and none is asked for.
func (c *lazyDeadlineConn) stale() bool {
	switch {
	case c.want.IsZero():
		return !c.applied.IsZero()
	case c.applied.IsZero():
		return true
	}
	d := c.want.Sub(c.applied)
	return d < 0 || d > c.slack
}
