package worker

import (
	"bufio"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// recordingConn counts the read deadlines set on it.
type recordingConn struct {
	net.Conn
	set []time.Time
}

func (c *recordingConn) SetReadDeadline(t time.Time) error {
	c.set = append(c.set, t)
	return c.Conn.SetReadDeadline(t)
}

func TestLazyDeadlineConnAppliesWhatMatters(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	rec := &recordingConn{Conn: a}
	c := &lazyDeadlineConn{Conn: rec, slack: time.Second}
	go func() {
		for range 5 {
			_, _ = b.Write([]byte("x"))
		}
	}()
	read := func() {
		var p [1]byte
		_, err := c.Read(p[:])
		require.NoError(t, err)
	}
	base := time.Now()

	require.NoError(t, c.SetReadDeadline(base.Add(time.Minute)))
	require.Empty(t, rec.set, "applied lazily")
	read()
	require.Equal(t, []time.Time{base.Add(time.Minute)}, rec.set, "applied at the read")

	require.NoError(t, c.SetReadDeadline(base.Add(time.Minute+500*time.Millisecond)))
	read()
	require.Len(t, rec.set, 1, "later by less than slack: the applied one stays")

	require.NoError(t, c.SetReadDeadline(base.Add(10*time.Second)))
	require.NoError(t, c.SetReadDeadline(base.Add(time.Minute))) // asked, then taken back before a read
	read()
	require.Len(t, rec.set, 1, "only the deadline asked for at the read counts")

	require.NoError(t, c.SetReadDeadline(base.Add(30*time.Second)))
	read()
	require.Equal(t, base.Add(30*time.Second), rec.set[len(rec.set)-1], "an earlier deadline is applied")

	require.NoError(t, c.SetReadDeadline(time.Time{}))
	read()
	require.True(t, rec.set[len(rec.set)-1].IsZero(), "no deadline asked: none applied")
}

func TestLazyDeadlineConnTimesOut(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	c := &lazyDeadlineConn{Conn: a, slack: time.Second}
	require.NoError(t, c.SetReadDeadline(time.Now().Add(50*time.Millisecond)))
	start := time.Now()
	_, err := c.Read(make([]byte, 1))
	require.True(t, errors.Is(err, os.ErrDeadlineExceeded), "%v", err)
	require.Less(t, time.Since(start), time.Second)
}

// The worker's read and idle timeouts still end slow and idle client connections.
func TestClientConnectionTimeouts(t *testing.T) {
	e := startEnv(t, envOpts{readTimeout: 300 * time.Millisecond, idleTimeout: 600 * time.Millisecond})
	addr := strings.TrimPrefix(e.base, "http://")

	t.Run("a request that stalls gets 408", func(t *testing.T) {
		c, err := net.Dial("tcp", addr)
		require.NoError(t, err)
		defer c.Close()
		_, err = c.Write([]byte("GET /health HTTP/1.1\r\nHost: x\r\n")) // no end of headers
		require.NoError(t, err)
		start := time.Now()
		require.NoError(t, c.SetReadDeadline(time.Now().Add(5*time.Second)))
		line, err := bufio.NewReader(c).ReadString('\n')
		require.NoError(t, err)
		require.Contains(t, line, "408")
		require.Less(t, time.Since(start), 3*time.Second)
	})

	t.Run("an idle keep-alive connection is closed", func(t *testing.T) {
		c, err := net.Dial("tcp", addr)
		require.NoError(t, err)
		defer c.Close()
		br := bufio.NewReader(c)
		for range 3 { // requests in a row keep it open
			_, err = c.Write([]byte("GET /health HTTP/1.1\r\nHost: x\r\n\r\n"))
			require.NoError(t, err)
			line, err := br.ReadString('\n')
			require.NoError(t, err)
			require.Contains(t, line, "200")
			// Drain the rest of the answer.
			require.NoError(t, c.SetReadDeadline(time.Now().Add(100*time.Millisecond)))
			_, _ = io.Copy(io.Discard, br)
			require.NoError(t, c.SetReadDeadline(time.Time{}))
			time.Sleep(350 * time.Millisecond) // idle longer than the read timeout, less than the idle one
		}
		start := time.Now()
		require.NoError(t, c.SetReadDeadline(time.Now().Add(5*time.Second)))
		_, err = br.ReadByte()
		require.ErrorIs(t, err, io.EOF, "closed by the worker")
		require.Less(t, time.Since(start), 3*time.Second)
	})
}
