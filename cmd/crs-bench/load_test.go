package main

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/crsrelay/crs/internal/mockupstream"
)

// startMockInProcess runs internal/mockupstream in the test process.
func startMockInProcess(t *testing.T, b mockupstream.Behavior) (*mockupstream.Server, string) {
	t.Helper()
	s := mockupstream.New(mockupstream.Config{Default: b})
	addr, err := s.Start("127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { s.Close() })
	return s, addr
}

func directTarget(addr string, stream bool) target {
	return buildTarget(options{upstreamKey: "sk-ant-bench", modelID: "claude-sonnet-4-20250514"},
		&env{mockAddr: addr}, "direct", stream)
}

func TestRunLoadCountsEveryRequest(t *testing.T) {
	for _, stream := range []bool{false, true} {
		name := "nonstream"
		if stream {
			name = "stream"
		}
		t.Run(name, func(t *testing.T) {
			mock, addr := startMockInProcess(t, mockupstream.DefaultBehavior())
			res, err := runLoad(context.Background(), directTarget(addr, stream),
				loadConfig{concurrency: 4, duration: 300 * time.Millisecond, warmup: 100 * time.Millisecond})
			require.NoError(t, err)
			require.Zero(t, res.errors, res.firstError)
			require.Positive(t, res.ok)
			require.Greater(t, res.sent, res.ok, "warm-up requests are sent but not measured")
			require.EqualValues(t, res.sent, mock.Stats().Requests, "every request reached the mock")
			require.Len(t, res.latencies, res.ok)
			require.True(t, slices.IsSorted(res.latencies))
			require.GreaterOrEqual(t, res.elapsed, 300*time.Millisecond)
			require.Less(t, res.elapsed, 2*time.Second)
			require.InDelta(t, float64(res.ok)/res.elapsed.Seconds(), res.rps(), 0.001)
			p50, p90, p99 := percentile(res.latencies, 50), percentile(res.latencies, 90), percentile(res.latencies, 99)
			require.Positive(t, p50)
			require.LessOrEqual(t, p50, p90)
			require.LessOrEqual(t, p90, p99)
		})
	}
}

func TestRunLoadMeasuresTTFBAndWholeStream(t *testing.T) {
	b := mockupstream.DefaultBehavior()
	b.Deltas, b.EventDelay = 2, 20*time.Millisecond // 8 events: 7 delays after the first
	mock, addr := startMockInProcess(t, b)
	res, err := runLoad(context.Background(), directTarget(addr, true),
		loadConfig{concurrency: 2, duration: 400 * time.Millisecond})
	require.NoError(t, err)
	require.Zero(t, res.errors, res.firstError)
	require.EqualValues(t, 2, mock.Stats().MaxInFlight, "one request in flight per connection")
	require.GreaterOrEqual(t, percentile(res.latencies, 50), 140*time.Millisecond, "latency includes the whole body")
	require.Less(t, percentile(res.ttfbs, 50), 70*time.Millisecond, "ttfb ends at the header")
}

func TestRunLoadErrors(t *testing.T) {
	tests := []struct {
		name    string
		b       mockupstream.Behavior
		addr    string
		wantErr string
	}{
		{name: "error status", b: mockupstream.Behavior{FailStatus: 529}, wantErr: `status 529: {"type":"error","error":{"type":"overloaded_error"`},
		{name: "disconnect mid-stream", b: mockupstream.Behavior{DisconnectAfterEvents: 2}, wantErr: "read body after"},
		{name: "in-band error is not a complete stream", b: mockupstream.Behavior{ErrorAfterEvents: 3}, wantErr: "does not end with the expected suffix"},
		{name: "nothing listening", addr: "127.0.0.1:1", wantErr: "transport:"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			addr := tc.addr
			if addr == "" {
				b := mockupstream.DefaultBehavior()
				b.FailStatus, b.DisconnectAfterEvents, b.ErrorAfterEvents = tc.b.FailStatus, tc.b.DisconnectAfterEvents, tc.b.ErrorAfterEvents
				_, addr = startMockInProcess(t, b)
			}
			res, err := runLoad(context.Background(), directTarget(addr, true),
				loadConfig{concurrency: 2, duration: 150 * time.Millisecond, timeout: 2 * time.Second})
			require.NoError(t, err)
			require.Zero(t, res.ok)
			require.Positive(t, res.errors)
			require.Empty(t, res.latencies)
			require.Contains(t, res.firstError, tc.wantErr)
			require.Equal(t, tc.wantErr != "", sendOnce(directTarget(addr, true), time.Second) != nil)
		})
	}
}

func TestRunLoadStopsOnCancel(t *testing.T) {
	_, addr := startMockInProcess(t, mockupstream.DefaultBehavior())
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	began := time.Now()
	_, err := runLoad(ctx, directTarget(addr, false), loadConfig{concurrency: 2, duration: time.Minute})
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.Less(t, time.Since(began), 5*time.Second)
}

func TestPercentile(t *testing.T) {
	ms := func(v ...int) []time.Duration {
		out := make([]time.Duration, len(v))
		for i, x := range v {
			out[i] = time.Duration(x) * time.Millisecond
		}
		return out
	}
	tests := []struct {
		name   string
		sorted []time.Duration
		p      float64
		want   time.Duration
	}{
		{"empty", nil, 50, 0},
		{"one", ms(7), 99, 7 * time.Millisecond},
		{"p50 of ten", ms(1, 2, 3, 4, 5, 6, 7, 8, 9, 10), 50, 5 * time.Millisecond},
		{"p90 of ten", ms(1, 2, 3, 4, 5, 6, 7, 8, 9, 10), 90, 9 * time.Millisecond},
		{"p99 of ten", ms(1, 2, 3, 4, 5, 6, 7, 8, 9, 10), 99, 10 * time.Millisecond},
		{"p100", ms(1, 2), 100, 2 * time.Millisecond},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, percentile(tc.sorted, tc.p))
		})
	}
}

func TestResultMerge(t *testing.T) {
	a := &result{ok: 3, errors: 1, sent: 5, elapsed: 2 * time.Second,
		latencies: []time.Duration{1, 5, 9}, ttfbs: []time.Duration{2}}
	b := &result{ok: 2, sent: 2, elapsed: time.Second,
		latencies: []time.Duration{3, 7}, ttfbs: []time.Duration{1}, firstError: "status 500"}
	a.merge(b)
	require.Equal(t, 5, a.ok)
	require.Equal(t, 1, a.errors)
	require.Equal(t, 7, a.sent)
	require.Equal(t, 3*time.Second, a.elapsed)
	require.InDelta(t, 5.0/3, a.rps(), 1e-9, "req/s over the summed time, not an average of rates")
	require.Equal(t, []time.Duration{1, 3, 5, 7, 9}, a.latencies, "merged and sorted for percentiles")
	require.Equal(t, []time.Duration{1, 2}, a.ttfbs)
	require.Equal(t, "status 500", a.firstError)
}

func TestKeepTail(t *testing.T) {
	w := &worker{tail: make([]byte, 0, 4)}
	for _, chunk := range []string{"ab", "c", "defgh", "i", "", "jk"} {
		w.keepTail([]byte(chunk))
	}
	require.Equal(t, "hijk", string(w.tail))
	w.tail = w.tail[:0]
	w.keepTail([]byte("xy"))
	require.Equal(t, "xy", string(w.tail))
}
