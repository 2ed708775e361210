package mockupstream

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestScanRequest(t *testing.T) {
	tests := []struct {
		name, body  string
		ok          bool
		model       string
		hasMessages bool
		stream      bool
	}{
		{name: "typical", body: `{"model":"claude-x","max_tokens":5,"messages":[{"role":"user","content":"a"}],"stream":true}`,
			ok: true, model: `"claude-x"`, hasMessages: true, stream: true},
		{name: "whitespace and nesting", body: " {\n\t\"system\": [{\"type\":\"text\",\"text\":\"a\\\"}\"}],\r\n \"model\" : \"m\\u0031\" , \"messages\" : [ ] , \"stream\" : false } ",
			ok: true, model: `"m\u0031"`, hasMessages: true},
		{name: "stream not bool", body: `{"model":"m","messages":[],"stream":"true"}`, ok: true, model: `"m"`, hasMessages: true},
		{name: "messages object", body: `{"model":"m","messages":{}}`, ok: true, model: `"m"`},
		{name: "model number", body: `{"model":1e5,"messages":[]}`, ok: true, hasMessages: true},
		{name: "nested model ignored", body: `{"metadata":{"model":"x"},"messages":[]}`, ok: true, hasMessages: true},
		{name: "empty object", body: `{}`, ok: true},
		{name: "array", body: `[]`},
		{name: "trailing garbage", body: `{"model":"m"} x`},
		{name: "truncated", body: `{"model":"m","messages":[`},
		{name: "bad escape", body: `{"model":"\q"}`},
		{name: "control char", body: "{\"model\":\"a\x01\"}"},
		{name: "bad number", body: `{"n":01}`},
		{name: "trailing comma", body: `{"a":1,}`},
		{name: "empty", body: ``},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f, ok := scanRequest([]byte(tc.body))
			require.Equal(t, tc.ok, ok)
			var obj map[string]json.RawMessage
			isObject := json.Unmarshal([]byte(tc.body), &obj) == nil && obj != nil
			require.Equal(t, isObject, ok, "agrees with encoding/json")
			if !ok {
				return
			}
			require.Equal(t, tc.model, string(f.model))
			require.Equal(t, tc.hasMessages, f.hasMessages)
			require.Equal(t, tc.stream, f.stream)
		})
	}
}

func TestScanRequestDepthLimit(t *testing.T) {
	deep := `{"a":` + strings.Repeat("[", maxDepth+10) + strings.Repeat("]", maxDepth+10) + `}`
	_, ok := scanRequest([]byte(deep))
	require.False(t, ok)
	shallow := `{"a":` + strings.Repeat("[", 100) + strings.Repeat("]", 100) + `}`
	_, ok = scanRequest([]byte(shallow))
	require.True(t, ok)
}

// FuzzScanRequest pins the hand-written validator to encoding/json: same verdict on validity of
// objects, and the same model string.
func FuzzScanRequest(f *testing.F) {
	for _, s := range []string{
		streamBody, nonStreamBody, `{}`, `{"model":"\u00e9\n","messages":[1,2.5e-3,true,null,{"a":"b"}]}`,
		`{"a":-0.0E+1}`, `{"a":"\ud800"}`, "{\"a\":\"\xff\"}", `[1]`, `"x"`, `{"a":1,}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		fields, ok := scanRequest(body)
		var obj map[string]json.RawMessage
		objOK := json.Valid(body) && json.Unmarshal(body, &obj) == nil && obj != nil
		if len(body) > 0 && depth(body) > maxDepth {
			return
		}
		if ok != objOK {
			t.Fatalf("scanRequest ok=%v, encoding/json object=%v for %q", ok, objOK, body)
		}
		if !ok || len(fields.model) == 0 {
			return
		}
		var got, want string
		if err := json.Unmarshal(fields.model, &got); err != nil {
			t.Fatalf("model %q is not a JSON string: %v", fields.model, err)
		}
		if err := json.Unmarshal(obj["model"], &want); err != nil {
			t.Fatalf("encoding/json sees model %q as not a string", obj["model"])
		}
		if got != want {
			t.Fatalf("model %q, want %q", got, want)
		}
	})
}

// depth over-approximates the nesting depth of body.
func depth(b []byte) int {
	n, m := 0, 0
	for _, c := range b {
		switch c {
		case '[', '{':
			n++
			m = max(m, n)
		case ']', '}':
			n--
		}
	}
	return m
}

func TestAppendJSONString(t *testing.T) {
	for _, s := range []string{"", "plain", "q\"b\\s", "\n\r\t\x00\x1f", "é中🙂", "bad\xffutf8", "<html>&"} {
		t.Run(s, func(t *testing.T) {
			got := appendJSONString(nil, s)
			var back string
			require.NoError(t, json.Unmarshal(got, &back))
			want, err := json.Marshal(s)
			require.NoError(t, err)
			var wantBack string
			require.NoError(t, json.Unmarshal(want, &wantBack))
			require.Equal(t, wantBack, back)
		})
	}
}

func FuzzAppendJSONString(f *testing.F) {
	f.Add("hello \"x\"\n")
	f.Add("\xff\xfe")
	f.Fuzz(func(t *testing.T, s string) {
		got := appendJSONString(nil, s)
		var back string
		if err := json.Unmarshal(got, &back); err != nil {
			t.Fatalf("%q -> %s: %v", s, got, err)
		}
		want, _ := json.Marshal(s)
		var wantBack string
		_ = json.Unmarshal(want, &wantBack)
		if back != wantBack {
			t.Fatalf("%q round-trips to %q, encoding/json to %q", s, back, wantBack)
		}
	})
}

func BenchmarkScanRequest(b *testing.B) {
	body := []byte(`{"model":"claude-sonnet-4-20250514","max_tokens":32000,"system":[{"type":"text","text":"` +
		strings.Repeat("You are Claude Code. ", 2000) + `"}],"messages":[{"role":"user","content":"hi"}],"stream":true}`)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		if _, ok := scanRequest(body); !ok {
			b.Fatal("invalid")
		}
	}
}
