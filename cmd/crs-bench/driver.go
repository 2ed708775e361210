package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// options are crs-bench's flags.
type options struct {
	crsBin, mockBin  string
	mockAddr         string
	concurrency      int
	duration, warmup time.Duration
	// rounds repeats each mode's runs, alternating targets (direct, relay, direct, relay, ...), and
	// sums them per target, so a slow spell of a shared machine lands on both sides of the ratio.
	rounds              int
	deltas              int
	eventDelay          time.Duration
	bodySize            int
	limited, directOnly bool
	readyTimeout        time.Duration
	requestTimeout      time.Duration
	keepTmp             bool
	// dev runs `crs dev` (one process) instead of `crs control` + `crs worker`.
	dev                  bool
	crsEnv, workerEnv    multiFlag
	upstreamKey, modelID string
}

// multiFlag is a repeatable string flag.
type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

func parseOptions(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("crs-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: crs-bench [flags]\n\n"+
			"Starts crs-mock, `crs control` and `crs worker` (or `crs dev` with -dev), then loads the mock directly and through the relay with the same\n"+
			"requests and prints throughput, latency percentiles, their ratios and the worker's memory.\n\n")
		fs.PrintDefaults()
	}
	fs.StringVar(&o.crsBin, "crs", "./bin/crs", "crs binary")
	fs.StringVar(&o.mockBin, "mock", "./bin/crs-mock", "crs-mock binary")
	fs.StringVar(&o.mockAddr, "mock-addr", "", "use the crs-mock already listening here instead of starting one (its -deltas and -event-delay apply)")
	fs.IntVar(&o.concurrency, "c", 32, "concurrent connections")
	fs.DurationVar(&o.duration, "d", 10*time.Second, "measured duration of each run")
	fs.IntVar(&o.rounds, "rounds", 1, "runs per target and mode, alternating targets; the table sums them")
	fs.DurationVar(&o.warmup, "warmup", time.Second, "unmeasured warm-up before each run")
	fs.IntVar(&o.deltas, "deltas", 20, "content_block_delta events per streamed answer")
	fs.DurationVar(&o.eventDelay, "event-delay", 0, "mock delay between stream events")
	fs.IntVar(&o.bodySize, "body-size", 0, "pad request bodies to about this many bytes with a system prompt (Claude Code sends 20-100 KB)")
	fs.BoolVar(&o.limited, "limited", false, "also run the relay with a key that has a concurrency and a daily cost limit")
	fs.BoolVar(&o.directOnly, "direct-only", false, "only load the mock directly (no crs)")
	fs.DurationVar(&o.readyTimeout, "ready-timeout", 30*time.Second, "how long to wait for crs to become ready")
	fs.DurationVar(&o.requestTimeout, "request-timeout", time.Minute, "timeout of one request")
	fs.BoolVar(&o.dev, "dev", false, "run `crs dev` (control plane and worker in one process) instead of separate control and worker processes")
	fs.BoolVar(&o.keepTmp, "keep", false, "keep the temporary directory (logs, data) after the run")
	fs.Var(&o.crsEnv, "crs-env", "extra KEY=VALUE environment for crs (repeatable)")
	fs.Var(&o.workerEnv, "worker-env", "extra KEY=VALUE environment for `crs worker` only, after -crs-env (repeatable; e.g. CRS_PPROF_ADDR)")
	fs.StringVar(&o.upstreamKey, "upstream-key", "sk-ant-bench", "API key of the console account (sent to the mock)")
	fs.StringVar(&o.modelID, "model", "claude-sonnet-4-20250514", "model of the requests")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if o.concurrency < 1 || o.duration <= 0 || o.deltas < 0 || o.warmup < 0 || o.rounds < 1 {
		return o, errors.New("need -c >= 1, -d > 0, -deltas >= 0, -warmup >= 0, -rounds >= 1")
	}
	return o, nil
}

// runRow is one load run in the report.
type runRow struct {
	mode, target string
	res          *result
	// upstream is the number of requests the mock received during the run, warm-up included.
	upstream int64
}

// env is what the driver started.
type env struct {
	tmp       string
	mock      *proc
	mockAddr  string
	crs       *proc // the worker (or crs dev): its memory is what the report shows
	control   *proc // crs control, when not -dev
	relayAddr string
	adminURL  string
	keys      map[string]string // target name -> client key
}

// bench is the whole `make bench`: start, set up, load, report. Children are stopped on return,
// including when ctx is cancelled by a signal.
func bench(ctx context.Context, o options, stdout, stderr io.Writer) error {
	tmp, err := os.MkdirTemp("", "crs-bench-")
	if err != nil {
		return fmt.Errorf("temp dir: %w", err)
	}
	e := &env{tmp: tmp, keys: map[string]string{}}
	defer func() {
		if e.crs != nil {
			e.crs.stop()
		}
		if e.control != nil {
			e.control.stop()
		}
		if e.mock != nil {
			e.mock.stop()
		}
		if o.keepTmp {
			fmt.Fprintf(stderr, "kept %s\n", tmp)
		} else {
			os.RemoveAll(tmp)
		}
	}()

	if o.mockAddr != "" {
		e.mockAddr = o.mockAddr
	} else if err := startMock(ctx, o, e); err != nil {
		return err
	}
	fmt.Fprintf(stderr, "mock upstream on %s\n", e.mockAddr)
	if !o.directOnly {
		if err := startCRS(ctx, o, e); err != nil {
			return err
		}
		fmt.Fprintf(stderr, "crs worker on %s (pid %d), admin on %s\n", e.relayAddr, e.crs.pid(), e.adminURL)
		if err := setupRelay(ctx, o, e); err != nil {
			return err
		}
	}

	var idle memory
	var sampler *rssSampler
	if e.crs != nil {
		if idle, err = readMemory(e.crs.pid()); err != nil {
			return err
		}
		sampler = sampleRSS(e.crs.pid(), 100*time.Millisecond)
	}
	var rows []runRow
	cfg := loadConfig{concurrency: o.concurrency, duration: o.duration, warmup: o.warmup, timeout: o.requestTimeout}
	for _, stream := range []bool{false, true} {
		mode := "nonstream"
		if stream {
			mode = "stream"
		}
		first := len(rows)
		for round := 1; round <= o.rounds; round++ {
			for i, tgt := range targetsFor(o) {
				t := buildTarget(o, e, tgt, stream)
				fmt.Fprintf(stderr, "running %s %s: c=%d, %s + %s warm-up%s\n", mode, tgt, o.concurrency, o.duration, o.warmup, roundNote(round, o.rounds))
				before, _ := mockRequests(e.mockAddr)
				res, err := runLoad(ctx, t, cfg)
				if err != nil {
					return err
				}
				after, _ := mockRequests(e.mockAddr)
				row := runRow{mode: mode, target: tgt, res: res, upstream: after - before}
				if round == 1 {
					rows = append(rows, row)
				} else {
					rows[first+i].add(row)
				}
				if e.crs != nil && e.crs.exited() {
					return fmt.Errorf("crs exited during the %s %s run: %v%s", mode, tgt, e.crs.waitErr, e.crs.logTail())
				}
			}
		}
	}
	var peak int64
	var after memory
	if sampler != nil {
		peak = sampler.finish()
		if after, err = readMemory(e.crs.pid()); err != nil {
			return err
		}
		peak = max(peak, after.rss)
	}

	report(stdout, o, rows)
	if e.crs != nil {
		fmt.Fprintf(stdout, "crs worker RSS: idle %s, peak during load %s, after load %s (VmHWM %s)\n",
			mib(idle.rss), mib(peak), mib(after.rss), mib(after.hwm))
	}
	return nil
}

func roundNote(round, rounds int) string {
	if rounds == 1 {
		return ""
	}
	return fmt.Sprintf(" (round %d of %d)", round, rounds)
}

// add sums another round of the same mode and target into r.
func (r *runRow) add(o runRow) {
	r.upstream += o.upstream
	r.res.merge(o.res)
}

// targetsFor lists the targets of each mode, in run order.
func targetsFor(o options) []string {
	if o.directOnly {
		return []string{"direct"}
	}
	if o.limited {
		return []string{"direct", "relay", "relay-limited"}
	}
	return []string{"direct", "relay"}
}

func startMock(ctx context.Context, o options, e *env) error {
	p, addr, err := startProc(ctx, procSpec{
		name: "crs-mock", bin: o.mockBin,
		args: []string{
			"-addr", "127.0.0.1:0", "-record=false",
			"-deltas", strconv.Itoa(o.deltas), "-event-delay", o.eventDelay.String(),
		},
		logPath:     filepath.Join(e.tmp, "crs-mock.log"),
		waitLine:    "listening on ",
		waitTimeout: 10 * time.Second,
	})
	if err != nil {
		return err
	}
	e.mock, e.mockAddr = p, addr
	return nil
}

// startCRS starts `crs control` and `crs worker` (or `crs dev` with -dev) on free ports with a
// fresh data directory and waits until the control plane answers /readyz and the worker accepts
// connections.
func startCRS(ctx context.Context, o options, e *env) error {
	ports, err := freePorts(3)
	if err != nil {
		return err
	}
	serverPort, grpcPort, httpPort := ports[0], ports[1], ports[2]
	adminToken := randomHex(24)
	dataDir := filepath.Join(e.tmp, "data")
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	vars := []string{
		"CRS_STORE__DRIVER=embedded",
		"CRS_STORE__DATA_DIR=" + dataDir,
		"CRS_SERVER__HOST=127.0.0.1",
		"CRS_SERVER__PORT=" + strconv.Itoa(serverPort),
		"CRS_CONTROL__HOST=127.0.0.1",
		"CRS_CONTROL__GRPC_PORT=" + strconv.Itoa(grpcPort),
		"CRS_CONTROL__HTTP_PORT=" + strconv.Itoa(httpPort),
		"CRS_WORKER__CONTROL_ADDR=127.0.0.1:" + strconv.Itoa(grpcPort),
		"CRS_SECURITY__ADMIN_TOKEN=" + adminToken,
		"CRS_LOG__LEVEL=warn",
		"CRS_UPSTREAM__CLAUDE_BASE_URL=http://" + e.mockAddr,
	}
	if !o.dev {
		vars = append(vars, "CRS_SECURITY__ENCRYPTION_KEY="+randomHex(32), "CRS_SECURITY__FLEET_TOKEN="+randomHex(24))
	}
	vars = append(vars, o.crsEnv...)
	first := "dev"
	if !o.dev {
		first = "control"
	}
	p, _, err := startProc(ctx, procSpec{
		name: "crs", bin: o.crsBin, args: []string{first}, env: vars,
		logPath: filepath.Join(e.tmp, "crs-"+first+".log"),
	})
	if err != nil {
		return err
	}
	e.crs = p
	e.relayAddr = "127.0.0.1:" + strconv.Itoa(serverPort)
	e.adminURL = "http://127.0.0.1:" + strconv.Itoa(httpPort)
	e.keys["admin"] = adminToken

	client := &http.Client{Timeout: 2 * time.Second}
	err = waitFor(ctx, p, o.readyTimeout, "crs /readyz", func() error {
		resp, err := client.Get(e.adminURL + "/readyz")
		if err != nil {
			return err
		}
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("status %d: %s", resp.StatusCode, bytes.TrimSpace(body))
		}
		return nil
	})
	if err != nil {
		return err
	}
	if !o.dev {
		e.control = p
		if p, _, err = startProc(ctx, procSpec{
			name: "crs worker", bin: o.crsBin, args: []string{"worker"}, env: append(vars, o.workerEnv...),
			logPath: filepath.Join(e.tmp, "crs-worker.log"),
		}); err != nil {
			return err
		}
		e.crs = p
	}
	return waitFor(ctx, p, o.readyTimeout, "crs worker port", func() error {
		c, err := net.DialTimeout("tcp", e.relayAddr, time.Second)
		if err != nil {
			return err
		}
		return c.Close()
	})
}

// setupRelay creates the console account pointing at the mock and the client keys, then waits until
// the worker serves a request with them (it needs the control plane's snapshot first).
func setupRelay(ctx context.Context, o options, e *env) error {
	account := map[string]any{
		"name": "bench", "type": "claude-console", "baseUrl": "http://" + e.mockAddr,
		"apiKey": map[string]string{"apiKey": o.upstreamKey},
	}
	if _, err := adminPost(ctx, e, "/admin/v1/accounts", account); err != nil {
		return fmt.Errorf("create account: %w", err)
	}
	key, err := createKey(ctx, e, map[string]any{"name": "bench"})
	if err != nil {
		return err
	}
	e.keys["relay"] = key
	if o.limited {
		key, err := createKey(ctx, e, map[string]any{"name": "bench-limited", "concurrencyLimit": 1000, "dailyCostLimit": 1000000})
		if err != nil {
			return err
		}
		e.keys["relay-limited"] = key
	}
	for _, tgt := range targetsFor(o) {
		if tgt == "direct" {
			continue
		}
		t := buildTarget(o, e, tgt, false)
		if err := waitFor(ctx, e.crs, 10*time.Second, "a first relayed request with the "+tgt+" key", func() error {
			return sendOnce(t, 5*time.Second)
		}); err != nil {
			return err
		}
	}
	return nil
}

// createKey creates a client key and returns its plaintext "cr_..." value.
func createKey(ctx context.Context, e *env, apiKey map[string]any) (string, error) {
	body, err := adminPost(ctx, e, "/admin/v1/api-keys", apiKey)
	if err != nil {
		return "", fmt.Errorf("create key %v: %w", apiKey["name"], err)
	}
	var resp struct {
		Key string `json:"key"`
	}
	if err := json.Unmarshal(body, &resp); err != nil || !strings.HasPrefix(resp.Key, "cr_") {
		return "", fmt.Errorf("create key %v: response has no \"key\":\"cr_...\": %.300s", apiKey["name"], body)
	}
	return resp.Key, nil
}

// adminPost posts v as JSON to the admin REST API and returns the 2xx response body.
func adminPost(ctx context.Context, e *env, path string, v any) ([]byte, error) {
	payload, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("encode: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, e.adminURL+path, bytes.NewReader(payload))
	if err != nil {
		return nil, fmt.Errorf("request: %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+e.keys["admin"])
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("POST %s: %w", path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("POST %s: read: %w", path, err)
	}
	if resp.StatusCode/100 != 2 {
		return nil, fmt.Errorf("POST %s: status %d: %.500s", path, resp.StatusCode, body)
	}
	return body, nil
}

// buildTarget is the request of one run: the same body and Claude Code headers direct and relayed,
// only the address, path and key differ.
func buildTarget(o options, e *env, tgt string, stream bool) target {
	t := target{body: requestBody(o.modelID, stream, o.bodySize), stream: stream}
	key := o.upstreamKey
	if tgt == "direct" {
		t.addr, t.path = e.mockAddr, "/v1/messages?beta=true"
	} else {
		t.addr, t.path, key = e.relayAddr, "/api/v1/messages?beta=true", e.keys[tgt]
	}
	t.headers = [][2]string{
		{"Content-Type", "application/json"},
		{"Accept", "application/json"},
		{"Anthropic-Version", "2023-06-01"},
		{"Anthropic-Beta", "claude-code-20250219,interleaved-thinking-2025-05-14,fine-grained-tool-streaming-2025-05-14"},
		{"User-Agent", "claude-cli/1.0.69 (external, cli)"},
		{"X-App", "cli"},
		{"X-Stainless-Lang", "js"},
		{"X-Stainless-Package-Version", "0.55.1"},
		{"X-Stainless-Runtime", "node"},
		{"X-Api-Key", key},
	}
	if stream {
		t.expectSuffix = []byte("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n")
	} else {
		t.expectSuffix = []byte(`"service_tier":"standard"}}`)
	}
	return t
}

// requestBody is a Claude Code-shaped Messages request, padded with a system prompt to about size
// bytes. The session in metadata.user_id is fixed, so the relay's sticky binding is made once.
func requestBody(model string, stream bool, size int) []byte {
	body := map[string]any{
		"model":      model,
		"max_tokens": 32000,
		"stream":     stream,
		"metadata": map[string]string{
			"user_id": "user_" + strings.Repeat("ab", 32) + "_account__session_0b9a2c1e-5f4d-4c3b-9a8e-7d6c5b4a3f21",
		},
		"messages": []any{map[string]any{"role": "user", "content": []any{
			map[string]string{"type": "text", "text": "Write a haiku about relays."},
		}}},
	}
	b, _ := json.Marshal(body)
	if pad := size - len(b) - 40; pad > 0 {
		unit := "You are Claude Code, Anthropic's official CLI for Claude. "
		text := strings.Repeat(unit, pad/len(unit)+1)[:pad]
		body["system"] = []any{map[string]string{"type": "text", "text": text}}
		b, _ = json.Marshal(body)
	}
	return b
}

// mockRequests returns the mock's request counter.
func mockRequests(addr string) (int64, error) {
	client := &http.Client{Timeout: 2 * time.Second}
	resp, err := client.Get("http://" + addr + "/__stats")
	if err != nil {
		return 0, fmt.Errorf("mock stats: %w", err)
	}
	defer resp.Body.Close()
	var s struct {
		Requests int64 `json:"requests"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
		return 0, fmt.Errorf("mock stats: %w", err)
	}
	return s.Requests, nil
}

// report prints the results table and the relay/direct comparison.
func report(w io.Writer, o options, rows []runRow) {
	fmt.Fprintf(w, "\ncrs-bench: c=%d d=%s rounds=%d warmup=%s deltas=%d event-delay=%s body=%dB GOMAXPROCS=%d NumCPU=%d\n\n",
		o.concurrency, o.duration, o.rounds, o.warmup, o.deltas, o.eventDelay,
		len(requestBody(o.modelID, true, o.bodySize)), runtime.GOMAXPROCS(0), runtime.NumCPU())
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "mode\ttarget\treq/s\tp50\tp90\tp99\tttfb p50\terrors\tsent\tupstream\t")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\t%.0f\t%s\t%s\t%s\t%s\t%d\t%d\t%d\t\n", r.mode, r.target, r.res.rps(),
			fmtDur(percentile(r.res.latencies, 50)), fmtDur(percentile(r.res.latencies, 90)),
			fmtDur(percentile(r.res.latencies, 99)), fmtDur(percentile(r.res.ttfbs, 50)),
			r.res.errors, r.res.sent, r.upstream)
	}
	tw.Flush()
	fmt.Fprintln(w)
	for _, r := range rows {
		if r.res.firstError != "" {
			fmt.Fprintf(w, "%s %s: first error: %s\n", r.mode, r.target, r.res.firstError)
		}
		if r.target != "direct" && r.upstream != int64(r.res.sent) {
			fmt.Fprintf(w, "%s %s: the mock saw %d requests for %d sent (retries or requests answered by crs itself)\n",
				r.mode, r.target, r.upstream, r.res.sent)
		}
	}
	for _, mode := range []string{"nonstream", "stream"} {
		var direct *result
		for _, r := range rows {
			if r.mode == mode && r.target == "direct" {
				direct = r.res
			}
		}
		for _, r := range rows {
			if r.mode != mode || r.target == "direct" || direct == nil || direct.rps() == 0 {
				continue
			}
			fmt.Fprintf(w, "%-9s %s/direct: req/s x%.2f, p50 %s, p99 %s\n", mode, r.target,
				r.res.rps()/direct.rps(),
				fmtDelta(percentile(r.res.latencies, 50)-percentile(direct.latencies, 50)),
				fmtDelta(percentile(r.res.latencies, 99)-percentile(direct.latencies, 99)))
		}
	}
}

// fmtDur prints d with about three significant digits.
func fmtDur(d time.Duration) string {
	switch {
	case d <= 0:
		return "-"
	case d < time.Millisecond:
		return fmt.Sprintf("%.0fµs", float64(d)/float64(time.Microsecond))
	case d < time.Second:
		return fmt.Sprintf("%.2fms", float64(d)/float64(time.Millisecond))
	default:
		return fmt.Sprintf("%.2fs", d.Seconds())
	}
}

func fmtDelta(d time.Duration) string {
	if d < 0 {
		return "-" + fmtDur(-d)
	}
	if d == 0 {
		return "+0"
	}
	return "+" + fmtDur(d)
}

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
