package claude

import (
	"io"
	"strings"
	"testing"

	"github.com/crsrelay/crs/dataplane/relay/platform"
	"github.com/crsrelay/crs/dataplane/sse"
	"github.com/stretchr/testify/require"
)

const (
	evStart = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-sonnet-4-5-20250929\",\"content\":[],\"usage\":{\"input_tokens\":25,\"cache_creation_input_tokens\":300,\"cache_read_input_tokens\":40,\"cache_creation\":{\"ephemeral_5m_input_tokens\":100,\"ephemeral_1h_input_tokens\":200},\"output_tokens\":1}}}\n\n"
	evPing  = "event: ping\ndata: {\"type\": \"ping\"}\n\n"
	evDelta = "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"message_delta \\\"usage\\\"\"}}\n\n"
	evEnd   = "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":57}}\n\n"
	evStop  = "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"
)

func readStream(t testing.TB, stream string) (platform.Usage, bool) {
	t.Helper()
	r := (&Official{}).NewUsage()
	s := sse.NewSplitter(strings.NewReader(stream), 0, 0)
	for {
		ev, err := s.Next()
		if err != nil {
			require.ErrorIs(t, err, io.EOF)
			break
		}
		r.Event(ev)
	}
	return r.Usage()
}

func TestStreamUsage(t *testing.T) {
	tests := []struct {
		name   string
		stream string
		want   platform.Usage
		ok     bool
	}{
		{"full stream with 5m/1h split", evStart + evPing + evDelta + evEnd + evStop,
			platform.Usage{Model: "claude-sonnet-4-5-20250929", InputTokens: 25, OutputTokens: 57, CacheCreation5mTokens: 100, CacheCreation1hTokens: 200, CacheReadTokens: 40}, true},
		{"no split: all cache writes are 5m",
			"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"model\":\"m\",\"usage\":{\"input_tokens\":1,\"cache_creation_input_tokens\":7}}}\n\n" + evEnd,
			platform.Usage{Model: "m", InputTokens: 1, OutputTokens: 57, CacheCreation5mTokens: 7}, true},
		{"crlf and data-only events",
			"data: {\"type\":\"message_start\",\"message\":{\"model\":\"m\",\"usage\":{\"input_tokens\":3}}}\r\n\r\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":4}}\r\n\r\n",
			platform.Usage{Model: "m", InputTokens: 3, OutputTokens: 4}, true},
		{"cumulative counts in message_delta raise the start's",
			evStart + "event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"input_tokens\":30,\"cache_read_input_tokens\":40,\"output_tokens\":9,\"speed\":\"fast\"}}\n\n",
			platform.Usage{Model: "claude-sonnet-4-5-20250929", InputTokens: 30, OutputTokens: 9, CacheCreation5mTokens: 100, CacheCreation1hTokens: 200, CacheReadTokens: 40, Speed: "fast"}, true},
		{"interrupted after start: what was seen", evStart + evDelta,
			platform.Usage{Model: "claude-sonnet-4-5-20250929", InputTokens: 25, OutputTokens: 1, CacheCreation5mTokens: 100, CacheCreation1hTokens: 200, CacheReadTokens: 40}, true},
		{"no usage events", evPing + evDelta + evStop, platform.Usage{}, false},
		{"malformed usage JSON ignored", "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":\"x\"}}}\n\n", platform.Usage{}, false},
		{"error event", "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n", platform.Usage{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := readStream(t, tt.stream)
			require.Equal(t, tt.ok, ok)
			require.Equal(t, tt.want, got)
		})
	}
}

func TestBodyUsage(t *testing.T) {
	tests := []struct {
		name string
		body string
		want platform.Usage
		ok   bool
	}{
		{"message", `{"id":"msg_1","type":"message","model":"claude-opus-4-1","content":[{"type":"text","text":"hi"}],"usage":{"input_tokens":10,"output_tokens":20,"cache_read_input_tokens":5,"cache_creation":{"ephemeral_1h_input_tokens":8}}}`,
			platform.Usage{Model: "claude-opus-4-1", InputTokens: 10, OutputTokens: 20, CacheReadTokens: 5, CacheCreation1hTokens: 8}, true},
		{"count_tokens answer has no usage", `{"input_tokens":12}`, platform.Usage{}, false},
		{"not JSON", `<html>`, platform.Usage{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := Console{}.NewUsage()
			r.Body([]byte(tt.body))
			got, ok := r.Usage()
			require.Equal(t, tt.ok, ok)
			require.Equal(t, tt.want, got)

			// BodyUsage reads the same without a reader, whatever model was asked.
			for _, asked := range []string{"", "claude-opus-4-1", "claude-haiku-4-5"} {
				got, ok = Console{}.BodyUsage([]byte(tt.body), asked)
				require.Equal(t, tt.ok, ok)
				require.Equal(t, tt.want, got)
				got, ok = (&Official{}).BodyUsage([]byte(tt.body), asked)
				require.Equal(t, tt.ok, ok)
				require.Equal(t, tt.want, got)
			}
		})
	}
}

func FuzzUsageEvent(f *testing.F) {
	f.Add([]byte(evStart))
	f.Add([]byte(evEnd))
	f.Add([]byte("data: {\"type\":\"message_delta\",\"usage\":null}\n\n"))
	f.Add([]byte("event: message_start\ndata: {\"message\":{\"usage\":{\"cache_creation\":[]}}}\n\n"))
	f.Fuzz(func(t *testing.T, ev []byte) {
		r := (&Official{}).NewUsage()
		r.Event(ev)
		r.Body(ev)
		_, _ = r.Usage()
	})
}

// BenchmarkUsageEvent is the per-event cost of the usage tee over a typical stream: 200 deltas that
// are skipped after their event: line, and the two events that are decoded.
func BenchmarkUsageEvent(b *testing.B) {
	var events [][]byte
	events = append(events, []byte(evStart), []byte(evPing))
	for range 200 {
		events = append(events, []byte(evDelta))
	}
	events = append(events, []byte(evEnd), []byte(evStop))
	b.ReportAllocs()
	for b.Loop() {
		r := usageReader{}
		for _, ev := range events {
			r.Event(ev)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(events)), "ns/event")
}

// BenchmarkUsageSkippedEvent is one content_block_delta: the common case must not allocate.
func BenchmarkUsageSkippedEvent(b *testing.B) {
	ev := []byte(evDelta)
	r := usageReader{}
	b.ReportAllocs()
	for b.Loop() {
		r.Event(ev)
	}
}
