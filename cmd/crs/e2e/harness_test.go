// Package e2e runs crs as real processes — control plane, workers, a throwaway redis-server — against
// the in-repo mock Anthropic upstream, and checks what a client sees over real HTTP.
package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/crsrelay/crs/internal/testenv"
)

// crsBin is the crs binary built once for the whole package by TestMain.
var crsBin string

func TestMain(m *testing.M) {
	flagShort := false
	for _, a := range os.Args {
		if a == "-test.short=true" || a == "-test.short" {
			flagShort = true
		}
	}
	if flagShort {
		fmt.Println("e2e: skipped in -short mode")
		os.Exit(0)
	}
	dir, err := os.MkdirTemp("", "crs-e2e-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e: temp dir:", err)
		os.Exit(1)
	}
	crsBin = filepath.Join(dir, "crs")
	build := exec.Command("go", "build", "-tags", "grpcnotrace", "-o", crsBin, "github.com/crsrelay/crs/cmd/crs")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: build crs:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// syncBuffer collects a child's output; os/exec writes from its own goroutine.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// proc is a crs process this test started; it is killed by PID when the test ends.
type proc struct {
	name   string
	cmd    *exec.Cmd
	out    *syncBuffer
	exited chan struct{}
}

func startProc(t *testing.T, name string, env []string, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(crsBin, args...)
	cmd.Env = append(os.Environ(), env...)
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	require.NoError(t, cmd.Start(), "start %s", name)
	p := &proc{name: name, cmd: cmd, out: out, exited: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(p.exited) }()
	t.Cleanup(func() {
		p.stop(syscall.SIGKILL)
		if t.Failed() {
			t.Logf("---- %s output ----\n%s", name, out.String())
		}
	})
	return p
}

// stop sends sig and waits for the process to end.
func (p *proc) stop(sig syscall.Signal) {
	select {
	case <-p.exited:
		return
	default:
	}
	_ = p.cmd.Process.Signal(sig)
	select {
	case <-p.exited:
	case <-time.After(15 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.exited
	}
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// controlPlane is a running `crs control`.
type controlPlane struct {
	proc       *proc
	grpcAddr   string
	httpURL    string
	adminToken string
	fleetToken string
	env        []string
}

// controlOpts configures startControl.
type controlOpts struct {
	// RedisURL selects the redis driver; empty = embedded in DataDir.
	RedisURL string
	DataDir  string
	// ClaudeBaseURL is where claude-official accounts go (the mock).
	ClaudeBaseURL string
	EncryptionKey string
	// Env is added to the control plane's environment (CRS_... overrides).
	Env []string
}

func startControl(t *testing.T, o controlOpts) *controlPlane {
	t.Helper()
	if o.DataDir == "" {
		o.DataDir = t.TempDir()
	}
	if o.EncryptionKey == "" {
		o.EncryptionKey = randomHex(32)
	}
	grpcPort, httpPort := testenv.FreePort(t), testenv.FreePort(t)
	cp := &controlPlane{
		grpcAddr:   "127.0.0.1:" + strconv.Itoa(grpcPort),
		httpURL:    "http://127.0.0.1:" + strconv.Itoa(httpPort),
		adminToken: randomHex(24),
		fleetToken: randomHex(24),
	}
	cp.env = []string{
		"CRS_CONTROL__HOST=127.0.0.1",
		"CRS_CONTROL__GRPC_PORT=" + strconv.Itoa(grpcPort),
		"CRS_CONTROL__HTTP_PORT=" + strconv.Itoa(httpPort),
		"CRS_STORE__DATA_DIR=" + o.DataDir,
		"CRS_SECURITY__ADMIN_TOKEN=" + cp.adminToken,
		"CRS_SECURITY__FLEET_TOKEN=" + cp.fleetToken,
		"CRS_SECURITY__ENCRYPTION_KEY=" + o.EncryptionKey,
		"CRS_LOG__LEVEL=info",
		"CRS_LOG__FORMAT=json",
		"CRS_USAGE__TIMEZONE_OFFSET_HOURS=0",
	}
	if o.ClaudeBaseURL != "" {
		cp.env = append(cp.env, "CRS_UPSTREAM__CLAUDE_BASE_URL="+o.ClaudeBaseURL)
	}
	if o.RedisURL != "" {
		cp.env = append(cp.env, "CRS_STORE__DRIVER=redis", "CRS_STORE__REDIS_URL="+o.RedisURL)
	}
	cp.env = append(cp.env, o.Env...)
	cp.proc = startProc(t, "control", cp.env, "control")
	waitHTTP(t, cp.httpURL+"/readyz", 200, 30*time.Second)
	return cp
}

// worker is a running `crs worker`.
type worker struct {
	proc *proc
	url  string // http://127.0.0.1:port
	port int
}

func (cp *controlPlane) startWorker(t *testing.T, extraEnv ...string) *worker {
	t.Helper()
	port := testenv.FreePort(t)
	return cp.startWorkerOnPort(t, port, extraEnv...)
}

func (cp *controlPlane) startWorkerOnPort(t *testing.T, port int, extraEnv ...string) *worker {
	t.Helper()
	env := []string{
		"CRS_SERVER__HOST=127.0.0.1",
		"CRS_SERVER__PORT=" + strconv.Itoa(port),
		"CRS_WORKER__CONTROL_ADDR=" + cp.grpcAddr,
		"CRS_SECURITY__FLEET_TOKEN=" + cp.fleetToken,
		"CRS_LOG__LEVEL=info",
		"CRS_LOG__FORMAT=json",
	}
	env = append(env, cp.envUpstream()...)
	env = append(env, extraEnv...)
	w := &worker{url: "http://127.0.0.1:" + strconv.Itoa(port), port: port}
	w.proc = startProc(t, "worker:"+strconv.Itoa(port), env, "worker")
	waitHTTP(t, w.url+"/health", 200, 30*time.Second)
	return w
}

// envUpstream passes the control plane's upstream override to workers too.
func (cp *controlPlane) envUpstream() []string {
	var out []string
	for _, e := range cp.env {
		if len(e) > len("CRS_UPSTREAM__") && e[:len("CRS_UPSTREAM__")] == "CRS_UPSTREAM__" {
			out = append(out, e)
		}
	}
	return out
}

// waitHTTP polls url until it answers want or the timeout passes.
func waitHTTP(t *testing.T, url string, want int, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last string
	for time.Now().Before(deadline) {
		resp, err := http.Get(url)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == want {
				return
			}
			last = resp.Status
		} else {
			last = err.Error()
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s did not answer %d within %s (last: %s)", url, want, timeout, last)
}

// admin calls the admin REST API and decodes the JSON answer into out (if non-nil).
func (cp *controlPlane) admin(t *testing.T, method, path string, body any, out any) int {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		require.NoError(t, err)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, cp.httpURL+path, rd)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+cp.adminToken)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	if out != nil && len(raw) > 0 {
		require.NoError(t, json.Unmarshal(raw, out), "decode %s %s: %s", method, path, raw)
	}
	return resp.StatusCode
}

// mustAdmin is admin that requires a 200.
func (cp *controlPlane) mustAdmin(t *testing.T, method, path string, body any, out any) {
	t.Helper()
	var raw json.RawMessage
	code := cp.admin(t, method, path, body, &raw)
	require.Equal(t, 200, code, "%s %s: %s", method, path, raw)
	if out != nil {
		require.NoError(t, json.Unmarshal(raw, out))
	}
}

// createKey creates an API key with the given extra fields and returns (id, plaintext).
func (cp *controlPlane) createKey(t *testing.T, fields map[string]any) (string, string) {
	t.Helper()
	if fields == nil {
		fields = map[string]any{}
	}
	if _, ok := fields["name"]; !ok {
		fields["name"] = "e2e-" + randomHex(3)
	}
	var resp struct {
		APIKey struct {
			ID string `json:"id"`
		} `json:"apiKey"`
		Key string `json:"key"`
	}
	cp.mustAdmin(t, "POST", "/admin/v1/api-keys", fields, &resp)
	require.NotEmpty(t, resp.Key)
	return resp.APIKey.ID, resp.Key
}

// createConsoleAccount creates a claude-console account on baseURL with the given upstream key.
func (cp *controlPlane) createConsoleAccount(t *testing.T, name, baseURL, upstreamKey string, priority int) string {
	t.Helper()
	var acct struct {
		ID string `json:"id"`
	}
	cp.mustAdmin(t, "POST", "/admin/v1/accounts", map[string]any{
		"name":     name,
		"type":     "claude-console",
		"baseUrl":  baseURL,
		"priority": priority,
		"apiKey":   map[string]any{"apiKey": upstreamKey},
	}, &acct)
	require.NotEmpty(t, acct.ID)
	return acct.ID
}

// dialable reports whether addr accepts TCP connections.
func dialable(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// eventually polls cond every 50ms until it is true or timeout passes.
func eventually(t *testing.T, timeout time.Duration, msg string, cond func() bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for {
		if cond() {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("timed out after %s: %s", timeout, msg)
		case <-time.After(50 * time.Millisecond):
		}
	}
}
