package worker

import (
	"bytes"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/stretchr/testify/require"

	"github.com/crsrelay/crs/dataplane/relay"
	crsv1 "github.com/crsrelay/crs/gen/crs/v1"
)

// relayed writes each series of a label set once it has something to count: the request counter
// always, a histogram only once updated, the token counters only by what the usage holds.
func TestRelayedMetrics(t *testing.T) {
	set := metrics.NewSet()
	m := newWorkerMetrics(set)
	write := func() string {
		var b bytes.Buffer
		set.WritePrometheus(&b)
		return b.String()
	}

	m.relayed(routeMessages, "claude", &relay.Outcome{Status: 502}, time.Second)
	out := write()
	require.Contains(t, out, `crs_worker_requests_total{route="messages",status="502",platform="claude"} 1`)
	require.NotContains(t, out, "upstream_duration_seconds", "no attempt: no duration")
	require.NotContains(t, out, "upstream_ttfb_seconds", "no byte: no ttfb")

	ok := &relay.Outcome{Status: 200, Attempts: 1, FirstByte: 20 * time.Millisecond,
		Usage: &crsv1.UsageRecord{InputTokens: 3, OutputTokens: 4, CacheCreation_5MTokens: 1, CacheCreation_1HTokens: 2}}
	m.relayed(routeMessages, "claude", ok, 2*time.Second)
	m.relayed(routeMessages, "claude", ok, 2*time.Second)
	m.relayed(routeCountTokens, "claude", &relay.Outcome{Status: 200, Attempts: 1}, time.Second)
	out = write()
	for _, want := range []string{
		`crs_worker_requests_total{route="messages",status="200",platform="claude"} 2`,
		`crs_worker_requests_total{route="messages",status="502",platform="claude"} 1`,
		`crs_worker_requests_total{route="count_tokens",status="200",platform="claude"} 1`,
		`crs_worker_upstream_duration_seconds_count{platform="claude"} 3`,
		`crs_worker_upstream_duration_seconds_sum{platform="claude"} 5`,
		`crs_worker_upstream_ttfb_seconds_count{platform="claude"} 2`,
		`crs_worker_tokens_total{type="input"} 6`,
		`crs_worker_tokens_total{type="output"} 8`,
		`crs_worker_tokens_total{type="cache_creation"} 6`,
		`crs_worker_tokens_total{type="cache_read"} 0`,
	} {
		require.Contains(t, out, want)
	}
}

func BenchmarkRelayedMetrics(b *testing.B) {
	m := newWorkerMetrics(metrics.NewSet())
	o := &relay.Outcome{Status: 200, Attempts: 1, FirstByte: 20 * time.Millisecond,
		Usage: &crsv1.UsageRecord{InputTokens: 3, OutputTokens: 4, CacheReadTokens: 100}}
	b.ReportAllocs()
	for b.Loop() {
		m.relayed(routeMessages, "claude", o, time.Second)
	}
}
