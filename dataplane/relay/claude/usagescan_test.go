package claude

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"
)

// bodyMessage is a non-stream answer as the API sends it.
const bodyMessage = `{"id":"msg_01XFDUDYJgAACzvnptvVoYEL","type":"message","role":"assistant","model":"claude-sonnet-4-20250514",` +
	`"content":[{"type":"text","text":"Relays hum softly,\nbytes pass through \"usage\": {} like rain —\nno one counts the drops."},` +
	`{"type":"tool_use","id":"toolu_1","name":"get","input":{"usage":{"input_tokens":999},"model":"x"}}],` +
	`"stop_reason":"end_turn","stop_sequence":null,` +
	`"usage":{"input_tokens":25,"cache_creation_input_tokens":300,"cache_read_input_tokens":40,"cache_creation":{"ephemeral_5m_input_tokens":100,"ephemeral_1h_input_tokens":200},"output_tokens":17,"service_tier":"standard"}}`

// comparable renders a usageEvent with nil and empty slices alike (scan aliases, decode copies).
type comparableEvent struct {
	Typ, Model, MsgModel string
	Msg, MsgHasUsage     bool
	MsgUsage, Usage      wireUsage
	HasUsage             bool
}

func (e *usageEvent) comparable() comparableEvent {
	return comparableEvent{string(e.typ), string(e.model), string(e.msgModel), e.msg, e.msgHasUsage, e.msgUsage, e.usage, e.hasUsage}
}

// scanCases are inputs with what scan must do with them: take them (the shapes the API sends
// and harmless variations) or leave them to encoding/json.
var scanCases = []struct {
	name string
	in   string
	scan bool
}{
	{"message body", bodyMessage, true},
	{"message_start", `{"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","model":"claude-sonnet-4-5","content":[],"stop_reason":null,"usage":{"input_tokens":25,"cache_creation_input_tokens":300,"cache_read_input_tokens":40,"cache_creation":{"ephemeral_5m_input_tokens":100,"ephemeral_1h_input_tokens":200},"output_tokens":1}}}`, true},
	{"message_delta", `{"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":57,"speed":"fast"}}`, true},
	{"whitespace everywhere", " \n{ \"type\" : \"message_delta\" ,\t\"usage\" : { \"output_tokens\" : -3 , \"cache_creation\" : null } } \r\n", true},
	{"nulls", `{"type":null,"model":null,"message":null,"usage":{"input_tokens":null,"speed":null,"cache_creation":{"ephemeral_5m_input_tokens":null}}}`, true},
	{"usage null", `{"type":"message_delta","usage":null}`, true},
	{"empty usage", `{"usage":{}}`, true},
	{"count_tokens answer", `{"input_tokens":12}`, true},
	{"unicode and escapes in skipped values", `{"content":[{"text":"h\u00e9llo \ud83d\ude00 \"q\" \\ 日本"}],"usage":{"output_tokens":1}}`, true},
	{"largest 18-digit count", `{"usage":{"input_tokens":999999999999999999}}`, true},

	{"name in another case", `{"Usage":{"input_tokens":1}}`, false},
	{"escaped name", `{"\u0075sage":{"input_tokens":1}}`, false},
	{"non-ASCII name", `{"uſage":{"input_tokens":1}}`, false},
	{"repeated member", `{"usage":{"input_tokens":1},"usage":{"output_tokens":2}}`, false},
	{"repeated count", `{"usage":{"input_tokens":1,"input_tokens":2}}`, false},
	{"fractional count", `{"usage":{"input_tokens":1.0}}`, false},
	{"exponent count", `{"usage":{"input_tokens":1e3}}`, false},
	{"huge count", `{"usage":{"input_tokens":99999999999999999999}}`, false},
	{"count as string", `{"usage":{"input_tokens":"1"}}`, false},
	{"usage as array", `{"usage":[1]}`, false},
	{"cache_creation as array", `{"usage":{"cache_creation":[]}}`, false},
	{"message as string", `{"message":"m"}`, false},
	{"model as number", `{"model":1,"usage":{}}`, false},
	{"escaped model", `{"model":"claude\u002dx","usage":{}}`, false},
	{"non-ASCII model", `{"model":"clé","usage":{}}`, false},
	{"array", `[{"usage":{}}]`, false},
	{"trailing data", `{"usage":{}} x`, false},
	{"truncated", `{"usage":{"input_tokens":1}`, false},
	{"invalid skipped value", `{"content":[tru],"usage":{}}`, false},
	{"control character in a string", "{\"content\":\"a\tb\",\"usage\":{}}", false},
	{"bad escape", `{"content":"\x","usage":{}}`, false},
	{"empty", ``, false},
}

func TestScanAgreesWithDecode(t *testing.T) {
	for _, tt := range scanCases {
		t.Run(tt.name, func(t *testing.T) {
			var scanned, decoded usageEvent
			ok := scanned.scan([]byte(tt.in))
			require.Equal(t, tt.scan, ok, "scan took it")
			if ok {
				require.True(t, decoded.decode([]byte(tt.in)), "encoding/json refuses what scan took")
				require.Equal(t, decoded.comparable(), scanned.comparable())
			}
		})
	}
}

func TestScanReadsBody(t *testing.T) {
	var e usageEvent
	require.True(t, e.scan([]byte(bodyMessage)))
	require.Equal(t, "claude-sonnet-4-20250514", string(e.model))
	require.True(t, e.hasUsage)
	require.Equal(t, int64(25), e.usage.InputTokens)
	require.Equal(t, int64(17), e.usage.OutputTokens)
	require.Equal(t, int64(200), e.usage.CacheCreation.Ephemeral1h)
}

// FuzzScanUsage pins scan to encoding/json: whatever scan takes, encoding/json reads the same.
func FuzzScanUsage(f *testing.F) {
	for _, tt := range scanCases {
		f.Add([]byte(tt.in))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		var scanned, decoded usageEvent
		if !scanned.scan(in) {
			return
		}
		if !decoded.decode(in) {
			t.Fatalf("scan took %q, encoding/json refuses it", in)
		}
		if s, d := scanned.comparable(), decoded.comparable(); s != d {
			t.Fatalf("%q: scan %+v, encoding/json %+v", in, s, d)
		}
	})
}

// BenchmarkBodyUsage is reading usage from a non-stream answer: the scan, and encoding/json for
// comparison.
func BenchmarkBodyUsage(b *testing.B) {
	body := []byte(bodyMessage)
	b.Run("scan", func(b *testing.B) {
		b.SetBytes(int64(len(body)))
		b.ReportAllocs()
		for b.Loop() {
			r := usageReader{}
			r.Body(body)
			if !r.seen {
				b.Fatal("no usage")
			}
		}
	})
	b.Run("encoding/json", func(b *testing.B) {
		b.SetBytes(int64(len(body)))
		b.ReportAllocs()
		for b.Loop() {
			var m wireEvent
			if json.Unmarshal(body, &m) != nil || m.Usage == nil {
				b.Fatal("no usage")
			}
		}
	})
}
