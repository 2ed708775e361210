// Package testenv holds helpers for tests that need real parts: free TCP ports and throwaway
// redis-server processes. It is imported only from _test.go files (and test helper packages such
// as end-to-end harnesses) and depends on nothing but the standard library.
//
// Tests never use the shared Redis on 127.0.0.1:6379: StartRedis starts a private server on a free
// port, with no persistence, in the test's temporary directory, and kills it when the test ends.
package testenv

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago: it listens on port 0, reads
// the port the kernel chose and closes the listener. Another process may take the port before the
// caller binds it; callers that start a server should retry on "address in use".
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("testenv: listen on a free port: %v", err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	if err := l.Close(); err != nil {
		t.Fatalf("testenv: close free-port listener: %v", err)
	}
	return port
}

// redisStartTimeout bounds how long StartRedis waits for PING to answer.
const redisStartTimeout = 10 * time.Second

// StartRedis starts a throwaway redis-server on a free port of 127.0.0.1 and returns its address
// ("127.0.0.1:N"). The server keeps nothing on disk (no RDB snapshots, no AOF), runs in
// t.TempDir(), and is killed by its process id when the test and its subtests end.
//
// If redis-server is not on PATH the test is skipped with a loud message, except when the
// environment variable CI is "true": there a missing server fails the test, so CI cannot pass
// by skipping.
func StartRedis(t testing.TB) (addr string) {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		const msg = "REDIS TESTS SKIPPED: redis-server not on PATH (install redis-server to run them)"
		if os.Getenv("CI") == "true" {
			t.Fatal(msg + "; CI=true, so this is a failure")
		}
		t.Skip(msg)
	}
	var lastErr error
	// A free port may be taken between FreePort and redis-server's bind: retry a few times.
	for range 3 {
		addr, err := startRedis(t, bin)
		if err == nil {
			return addr
		}
		lastErr = err
	}
	t.Fatalf("testenv: start redis-server: %v", lastErr)
	return ""
}

// lockedBuffer collects a child process's output; os/exec writes to it from its own goroutine.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func startRedis(t testing.TB, bin string) (string, error) {
	port := FreePort(t)
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	cmd := exec.Command(bin,
		"--save", "",
		"--appendonly", "no",
		"--port", strconv.Itoa(port),
		"--bind", "127.0.0.1",
		"--dir", t.TempDir(),
	)
	var out lockedBuffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	if err := cmd.Start(); err != nil {
		return "", fmt.Errorf("exec %s: %w", bin, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()

	stop := func() {
		// Kill by the process id we started, never by name: other tests' servers keep running.
		_ = cmd.Process.Kill()
		<-exited
	}

	deadline := time.Now().Add(redisStartTimeout)
	for {
		select {
		case err := <-exited:
			return "", fmt.Errorf("redis-server on %s exited early (%v): %s", addr, err, strings.TrimSpace(out.String()))
		default:
		}
		if err := ping(addr); err == nil {
			t.Cleanup(stop)
			return addr, nil
		}
		if time.Now().After(deadline) {
			stop()
			return "", fmt.Errorf("redis-server on %s did not answer PING within %s: %s", addr, redisStartTimeout, strings.TrimSpace(out.String()))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// ping sends an inline PING and expects +PONG.
func ping(addr string) error {
	conn, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
	if err != nil {
		return err
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(500 * time.Millisecond)); err != nil {
		return err
	}
	if _, err := conn.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return err
	}
	if strings.TrimSpace(line) != "+PONG" {
		return errors.New("unexpected reply " + strconv.Quote(line))
	}
	return nil
}
