package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/crsrelay/crs/internal/mockupstream"
)

// fakeCRSEnv makes the test binary act as `crs dev` (see fakeCRS) instead of running tests.
const fakeCRSEnv = "CRS_BENCH_FAKE_CRS"

func TestMain(m *testing.M) {
	if os.Getenv(fakeCRSEnv) == "1" {
		if err := fakeCRS(); err != nil {
			fmt.Fprintln(os.Stderr, "fake crs:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// fakeCRS is a stand-in for `crs dev` that honours exactly what the driver relies on: the CRS_ ports
// and admin token, /readyz, the two admin POSTs and their response shapes, and a worker on
// /api/v1/messages that relays to the account's baseUrl with the account's apiKey. It lets the test
// run the whole driver before the real crs exists, and pins the contract the real one must keep.
func fakeCRS() error {
	token := os.Getenv("CRS_SECURITY__ADMIN_TOKEN")
	var mu sync.Mutex
	var upstream *url.URL
	var upstreamKey string
	keys := map[string]bool{}

	admin := http.NewServeMux()
	admin.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	auth := func(h http.HandlerFunc) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			if r.Header.Get("Authorization") != "Bearer "+token {
				http.Error(w, `{"code":16,"message":"bad admin token"}`, http.StatusUnauthorized)
				return
			}
			h(w, r)
		}
	}
	admin.HandleFunc("POST /admin/v1/accounts", auth(func(w http.ResponseWriter, r *http.Request) {
		var a struct {
			Name, Type, BaseURL string
			APIKey              struct{ APIKey string } `json:"apiKey"`
		}
		if err := json.NewDecoder(r.Body).Decode(&a); err != nil || a.Type != "claude-console" || a.APIKey.APIKey == "" {
			http.Error(w, `{"code":3,"message":"bad account"}`, http.StatusBadRequest)
			return
		}
		u, err := url.Parse(a.BaseURL)
		if err != nil {
			http.Error(w, `{"code":3,"message":"bad baseUrl"}`, http.StatusBadRequest)
			return
		}
		mu.Lock()
		upstream, upstreamKey = u, a.APIKey.APIKey
		mu.Unlock()
		fmt.Fprintf(w, `{"id":"acc-1","name":%q,"type":"claude-console"}`, a.Name)
	}))
	admin.HandleFunc("POST /admin/v1/api-keys", auth(func(w http.ResponseWriter, r *http.Request) {
		var k struct{ Name string }
		if err := json.NewDecoder(r.Body).Decode(&k); err != nil || k.Name == "" {
			http.Error(w, `{"code":3,"message":"bad key"}`, http.StatusBadRequest)
			return
		}
		key := "cr_" + randomHex(32)
		mu.Lock()
		keys[key] = true
		mu.Unlock()
		fmt.Fprintf(w, `{"apiKey":{"id":"key-%s","name":%q},"key":%q}`, k.Name, k.Name, key)
	}))

	proxy := &httputil.ReverseProxy{
		FlushInterval: -1,
		Transport:     &http.Transport{MaxIdleConnsPerHost: 256},
		Rewrite: func(r *httputil.ProxyRequest) {
			mu.Lock()
			r.SetURL(upstream)
			r.Out.Header.Set("x-api-key", upstreamKey)
			mu.Unlock()
			r.Out.URL.Path = strings.TrimPrefix(r.In.URL.Path, "/api")
		},
	}
	worker := http.NewServeMux()
	worker.HandleFunc("POST /api/v1/messages", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		ok := keys[r.Header.Get("x-api-key")] && upstream != nil
		mu.Unlock()
		if !ok {
			http.Error(w, `{"type":"error","error":{"type":"authentication_error","message":"Invalid API key"}}`, http.StatusUnauthorized)
			return
		}
		// Read the body first: streaming the server's request body into the transport races with the
		// server closing it once the answer starts ("http: invalid Read on closed Body"), which
		// aborts a few streams under load.
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		proxy.ServeHTTP(w, r)
	})

	errc := make(chan error, 2)
	serve := func(port string, h http.Handler) {
		ln, err := net.Listen("tcp", "127.0.0.1:"+port)
		if err != nil {
			errc <- err
			return
		}
		errc <- http.Serve(ln, h)
	}
	go serve(os.Getenv("CRS_CONTROL__HTTP_PORT"), admin)
	go serve(os.Getenv("CRS_SERVER__PORT"), worker)
	return <-errc
}

// buildMock compiles cmd/crs-mock into a temporary directory.
func buildMock(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and runs crs-mock; skipped with -short")
	}
	bin := filepath.Join(t.TempDir(), "crs-mock")
	out, err := exec.Command("go", "build", "-o", bin, "../crs-mock").CombinedOutput()
	require.NoError(t, err, "%s", out)
	return bin
}

// parseTable returns the result rows of a report by "mode target".
func parseTable(t *testing.T, out string) map[string][]string {
	t.Helper()
	rows := map[string][]string{}
	for line := range strings.SplitSeq(out, "\n") {
		f := strings.Fields(line)
		if len(f) == 10 && (f[0] == "nonstream" || f[0] == "stream") {
			rows[f[0]+" "+f[1]] = f
		}
	}
	return rows
}

func TestBench(t *testing.T) {
	mockBin := buildMock(t)
	self, err := os.Executable()
	require.NoError(t, err)
	tests := []struct {
		name     string
		args     []string
		wantRows []string
		wantOut  []string
	}{
		{
			name:     "direct only",
			args:     []string{"-direct-only", "-crs", "/nonexistent"},
			wantRows: []string{"nonstream direct", "stream direct"},
		},
		{
			name: "relay through a fake crs",
			args: []string{"-crs", self, "-dev", "-crs-env", fakeCRSEnv + "=1", "-limited", "-body-size", "4000"},
			wantRows: []string{"nonstream direct", "nonstream relay", "nonstream relay-limited",
				"stream direct", "stream relay", "stream relay-limited"},
			wantOut: []string{"nonstream relay/direct: req/s x", "stream    relay-limited/direct", "crs worker RSS: idle "},
		},
		{
			// Rounds alternate the targets and sum them: still one row per mode and target.
			name:     "rounds",
			args:     []string{"-crs", self, "-dev", "-crs-env", fakeCRSEnv + "=1", "-rounds", "2"},
			wantRows: []string{"nonstream direct", "nonstream relay", "stream direct", "stream relay"},
			wantOut:  []string{"rounds=2", "nonstream relay/direct: req/s x"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			args := append([]string{"-mock", mockBin, "-c", "4", "-d", "300ms", "-warmup", "100ms", "-deltas", "3"}, tc.args...)
			err := run(context.Background(), args, &stdout, &stderr)
			require.NoError(t, err, "stderr:\n%s", stderr.String())
			out := stdout.String()
			rows := parseTable(t, out)
			require.Len(t, rows, len(tc.wantRows), out)
			for _, name := range tc.wantRows {
				row, ok := rows[name]
				require.True(t, ok, "row %q missing:\n%s", name, out)
				require.NotEqual(t, "0", row[2], "req/s of %s:\n%s", name, out)
				require.Equal(t, "0", row[7], "errors of %s:\n%s", name, out)
				require.Equal(t, row[8], row[9], "sent = upstream for %s:\n%s", name, out)
			}
			for _, want := range tc.wantOut {
				require.Contains(t, out, want)
			}
			require.NotContains(t, out, "first error")
		})
	}
}

func TestBenchAgainstRunningMock(t *testing.T) {
	mock, addr := startMockInProcess(t, mockupstream.DefaultBehavior())
	var stdout, stderr bytes.Buffer
	err := run(context.Background(), []string{"-direct-only", "-mock", "/nonexistent", "-mock-addr", addr,
		"-c", "2", "-d", "200ms", "-warmup", "0s"}, &stdout, &stderr)
	require.NoError(t, err, stderr.String())
	rows := parseTable(t, stdout.String())
	require.Len(t, rows, 2, stdout.String())
	sent := 0
	for _, r := range rows {
		n, err := strconv.Atoi(r[8])
		require.NoError(t, err)
		sent += n
	}
	require.EqualValues(t, sent, mock.Stats().Requests)
}

func TestBenchReportsCRSFailure(t *testing.T) {
	mockBin := buildMock(t)
	tests := []struct {
		name, crs string
		env       []string
		want      string
	}{
		{name: "missing binary", crs: "/nonexistent/crs", want: "start crs (/nonexistent/crs)"},
		{name: "exits at once", crs: "/bin/false", want: "crs process exited"},
		{name: "never ready", crs: "/bin/sleep", want: "not ready after 500ms"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			began := time.Now()
			// /bin/sleep gets "dev" as its argument and fails; "never ready" overrides it below.
			crs := tc.crs
			if tc.name == "never ready" {
				dir := t.TempDir()
				crs = filepath.Join(dir, "crs")
				require.NoError(t, os.WriteFile(crs, []byte("#!/bin/sh\nexec sleep 30\n"), 0o755))
			}
			err := run(context.Background(), []string{"-mock", mockBin, "-crs", crs, "-ready-timeout", "500ms", "-d", "100ms"}, &stdout, &stderr)
			require.ErrorContains(t, err, tc.want)
			require.Less(t, time.Since(began), 15*time.Second)
		})
	}
}

func TestProcStopKillsByPID(t *testing.T) {
	p, _, err := startProc(context.Background(), procSpec{
		name: "sleep", bin: "/bin/sh", args: []string{"-c", "trap '' TERM; sleep 30"},
		logPath: filepath.Join(t.TempDir(), "log"),
	})
	require.NoError(t, err)
	m, err := readMemory(p.pid())
	require.NoError(t, err)
	require.Positive(t, m.rss)
	require.GreaterOrEqual(t, m.hwm, m.rss)
	require.False(t, p.exited())
	began := time.Now()
	p.stop() // TERM is ignored: stop must fall back to KILL
	require.True(t, p.exited())
	require.Less(t, time.Since(began), 10*time.Second)
	p.stop() // idempotent
}

func TestStartProcWaitsForLine(t *testing.T) {
	dir := t.TempDir()
	p, rest, err := startProc(context.Background(), procSpec{
		name: "echo", bin: "/bin/sh", args: []string{"-c", "echo noise; echo 'listening on 1.2.3.4:5'; sleep 30"},
		logPath: filepath.Join(dir, "log"), waitLine: "listening on ", waitTimeout: 5 * time.Second,
	})
	require.NoError(t, err)
	defer p.stop()
	require.Equal(t, "1.2.3.4:5", rest)

	_, _, err = startProc(context.Background(), procSpec{
		name: "silent", bin: "/bin/sh", args: []string{"-c", "echo oops >&2; sleep 30"},
		logPath: filepath.Join(dir, "log2"), waitLine: "listening on ", waitTimeout: 300 * time.Millisecond,
	})
	require.ErrorContains(t, err, "did not print")
	require.ErrorContains(t, err, "oops", "the error carries the child's log")
}

func TestRequestBody(t *testing.T) {
	for _, size := range []int{0, 2000, 50000} {
		for _, stream := range []bool{false, true} {
			t.Run(fmt.Sprintf("%d/%v", size, stream), func(t *testing.T) {
				b := requestBody("claude-x", stream, size)
				var v struct {
					Model    string
					Stream   bool
					Messages []any
					Metadata struct {
						UserID string `json:"user_id"`
					}
				}
				require.NoError(t, json.Unmarshal(b, &v))
				require.Equal(t, "claude-x", v.Model)
				require.Equal(t, stream, v.Stream)
				require.Len(t, v.Messages, 1)
				require.Contains(t, v.Metadata.UserID, "_account__session_")
				if size > 0 {
					require.InDelta(t, size, len(b), 100)
				}
			})
		}
	}
}

func TestParseOptions(t *testing.T) {
	o, err := parseOptions([]string{"-c", "8", "-d", "2s", "-limited", "-crs-env", "A=1", "-crs-env", "B=2"}, io.Discard)
	require.NoError(t, err)
	require.Equal(t, 8, o.concurrency)
	require.Equal(t, 2*time.Second, o.duration)
	require.True(t, o.limited)
	require.Equal(t, multiFlag{"A=1", "B=2"}, o.crsEnv)
	require.Equal(t, "./bin/crs", o.crsBin)
	require.Equal(t, 1, o.rounds)
	_, err = parseOptions([]string{"-rounds", "0"}, io.Discard)
	require.Error(t, err)
	_, err = parseOptions([]string{"-c", "0"}, io.Discard)
	require.Error(t, err)
	_, err = parseOptions([]string{"stray"}, io.Discard)
	require.Error(t, err)
}
