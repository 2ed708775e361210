package sched

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"regexp"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/stretchr/testify/require"
)

func sha32(s string) string {
	d := sha256.Sum256([]byte(s))
	return hex.EncodeToString(d[:])[:32]
}

const (
	deviceHex = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	sessionID = "5f1c2a9e-0b7d-4c1e-9a55-2f7e8d6c4b3a"
)

func TestParseMessages(t *testing.T) {
	tests := []struct {
		name    string
		body    string
		want    Messages
		wantErr error
	}{
		{"empty body", "", Messages{}, ErrMessagesNotArray},
		{"whitespace body", " \n", Messages{}, ErrMessagesNotArray},
		{"invalid json", `{"messages":[}`, Messages{}, ErrBodyNotObject},
		{"trailing garbage", `{"messages":[{"role":"user","content":"x"}]} x`, Messages{}, ErrBodyNotObject},
		{"scalar", `"hello"`, Messages{}, ErrBodyNotObject},
		{"array", `[1,2]`, Messages{}, ErrMessagesNotArray},
		{"no messages", `{"model":"claude-sonnet-4-5"}`, Messages{Model: "claude-sonnet-4-5"}, ErrMessagesNotArray},
		{"messages not array", `{"messages":{"a":1}}`, Messages{}, ErrMessagesNotArray},
		{"messages null", `{"messages":null}`, Messages{}, ErrMessagesNotArray},
		{"messages empty", `{"messages":[]}`, Messages{}, ErrMessagesEmpty},
		{"ok", `{"model":"claude-opus-4-5","stream":true,"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":"yo"}]}`,
			Messages{Model: "claude-opus-4-5", Stream: true, Count: 2, SessionHash: sha32("hi")}, nil},
		{"stream must be true literally", `{"stream":"true","messages":[1]}`, Messages{Count: 1}, nil},
		{"stream false", `{"stream":false,"messages":[1]}`, Messages{Count: 1}, nil},
		{"model not a string", `{"model":5,"messages":[1]}`, Messages{Count: 1}, nil},
		{"escaped key and model", `{"mod\u0065l":"claude-\u0068aiku","messages":[1]}`, Messages{Model: "claude-haiku", Count: 1}, nil},
		{"duplicate key: last wins", `{"model":"a","model":"b","messages":[1],"messages":[1,2,3]}`, Messages{Model: "b", Count: 3}, nil},
		{"keys are case-sensitive", `{"Model":"a","Messages":[1],"messages":[1]}`, Messages{Count: 1}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseMessages([]byte(tt.body))
			if tt.wantErr != nil {
				require.ErrorIs(t, err, tt.wantErr)
				if tt.want.Model != "" {
					require.Equal(t, tt.want.Model, got.Model)
				}
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.want, got)
		})
	}
}

func TestSessionHash(t *testing.T) {
	legacyUID := "user_" + deviceHex + "_account_acc-1_session_" + sessionID
	jsonUID, err := json.Marshal(map[string]string{"device_id": "dev", "account_uuid": "", "session_id": sessionID})
	require.NoError(t, err)
	jsonUIDStr, err := json.Marshal(string(jsonUID))
	require.NoError(t, err)

	tests := []struct {
		name string
		body string
		want string
	}{
		{"legacy user_id", `{"metadata":{"user_id":"` + legacyUID + `"},"system":"s","messages":[{"role":"user","content":"hi"}]}`, sessionID},
		{"json user_id", `{"metadata":{"user_id":` + string(jsonUIDStr) + `},"messages":[{"role":"user","content":"hi"}]}`, sessionID},
		{"metadata after messages", `{"messages":[{"role":"user","content":"hi"}],"metadata":{"user_id":"` + legacyUID + `"}}`, sessionID},
		{"unparseable user_id falls through", `{"metadata":{"user_id":"someone"},"messages":[{"role":"user","content":"hi"}]}`, sha32("hi")},
		{"cacheable system blocks", `{"system":[{"type":"text","text":"A","cache_control":{"type":"ephemeral"}},{"type":"text","text":"B"},{"type":"text","text":"C","cache_control":{"type":"ephemeral"}}],"messages":[{"role":"user","content":"hi"}]}`, sha32("AC")},
		{"cacheable system plus first text message", `{"system":[{"text":"A","cache_control":{"type":"ephemeral"}}],"messages":[{"role":"user","content":[{"type":"image"},{"type":"text","text":"x"},{"type":"text","text":"y"}]},{"role":"user","content":[{"type":"text","text":"z","cache_control":{"type":"ephemeral"}}]}]}`, sha32("Axy")},
		{"cache on a later message takes the first message with text", `{"messages":[{"role":"user","content":""},{"role":"user","content":"second"},{"role":"user","content":"third","cache_control":{"type":"ephemeral"}}]}`, sha32("second")},
		{"message cache_control with absent content counts", `{"system":"sys","messages":[{"role":"user","cache_control":{"type":"ephemeral"}},{"role":"user","content":"later"}]}`, sha32("later")},
		{"message cache_control ignored for array content", `{"system":"sys","messages":[{"role":"user","content":[{"type":"text","text":"t"}],"cache_control":{"type":"ephemeral"}}]}`, sha32("sys")},
		{"non-ephemeral cache_control ignored", `{"system":[{"text":"A","cache_control":{"type":"persistent"}}],"messages":[{"role":"user","content":"hi"}]}`, sha32("A")},
		{"system string", `{"system":"You are helpful","messages":[{"role":"user","content":"hi"}]}`, sha32("You are helpful")},
		{"system array joins all text", `{"system":[{"type":"text","text":"a"},{"text":"b"},"c",{"type":"text"}],"messages":[{"role":"user","content":"hi"}]}`, sha32("ab")},
		{"first message array text", `{"messages":[{"role":"user","content":[{"type":"text","text":"he"},{"type":"tool_result","text":"no"},{"type":"text","text":"llo"}]}]}`, sha32("hello")},
		{"empty first message gives none", `{"messages":[{"role":"user","content":""},{"role":"user","content":"second"}]}`, ""},
		{"no text anywhere", `{"messages":[{"role":"user","content":[{"type":"image"}]}]}`, ""},
		{"escapes decoded before hashing", `{"system":"caf\u00e9 \ud83d\ude00 \n","messages":[1]}`, sha32("café 😀 \n")},
		{"lone surrogate becomes U+FFFD", `{"system":"a\ud800b","messages":[1]}`, sha32("a\uFFFDb")},
		{"not an object", `[1]`, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			require.Equal(t, tt.want, SessionHash([]byte(tt.body)))
			require.Equal(t, tt.want, refSessionHash([]byte(tt.body)), "reference implementation agrees")
		})
	}
}

func TestSessionIDFromUserID(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want string
	}{
		{"legacy", "user_" + deviceHex + "_account_abc_session_" + sessionID, sessionID},
		{"legacy empty account", "user_" + deviceHex + "_account__session_abc", "abc"},
		{"legacy account with _session_ inside", "user_" + deviceHex + "_account_x_session_zz_session_ab-12", "ab-12"},
		{"legacy upper hex device", "user_" + strings.ToUpper(deviceHex) + "_account_a_session_1", "1"},
		{"legacy upper session rejected", "user_" + deviceHex + "_account_a_session_ABC", ""},
		{"legacy short device", "user_abc_account_a_session_1", ""},
		{"legacy newline in account", "user_" + deviceHex + "_account_a\nb_session_1", ""},
		{"legacy trailing newline", "user_" + deviceHex + "_account_a_session_1\n", ""},
		{"legacy line separator in account", "user_" + deviceHex + "_account_a\u2028b_session_1", ""},
		{"legacy paragraph separator in account", "user_" + deviceHex + "_account_a\u2029b_session_1", ""},
		{"legacy other U+20xx in account", "user_" + deviceHex + "_account_a\u2027\u202ab_session_1", "1"},
		{"legacy underscore after session", "user_" + deviceHex + "_account_a_session_1_2", ""},
		{"legacy no _session_", "user_" + deviceHex + "_account_a_sessio_12345678", ""},
		{"json", `{"device_id":"d","account_uuid":"","session_id":"s-1"}`, "s-1"},
		{"json no device", `{"session_id":"s-1"}`, ""},
		{"json empty session", `{"device_id":"d","session_id":""}`, ""},
		{"json non-string session", `{"device_id":"d","session_id":5}`, ""},
		{"json duplicate: last wins", `{"device_id":"d","session_id":"a","session_id":"b"}`, "b"},
		{"json case-sensitive", `{"Device_Id":"d","session_id":"a"}`, ""},
		{"json invalid", `{"device_id":"d",`, ""},
		{"empty", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := SessionIDFromUserID(tt.in)
			require.Equal(t, tt.want != "", ok)
			require.Equal(t, tt.want, got)
		})
	}
}

// FuzzSessionIDFromUserID pins the legacy matcher to the reference's regular expression, and the
// byte form the body scan uses to the string form.
func FuzzSessionIDFromUserID(f *testing.F) {
	f.Add("user_" + deviceHex + "_account_abc_session_" + sessionID)
	f.Add("user_" + deviceHex + "_account_x_session_zz_session_ab-12")
	f.Add("user_" + deviceHex + "_account_a\u2028b_session_1")
	f.Add(`{"device_id":"d","session_id":"s-1"}`)
	f.Fuzz(func(t *testing.T, in string) {
		got, ok := SessionIDFromUserID(in)
		b, bok := sessionIDFromUserID([]byte(in))
		if ok != bok || got != string(b) {
			t.Fatalf("%q: string form (%q, %v), byte form (%q, %v)", in, got, ok, b, bok)
		}
		if in == "" || in[0] == '{' {
			return
		}
		want := ""
		if m := legacyRE.FindStringSubmatch(in); m != nil {
			want = m[3]
		}
		if got != want {
			t.Fatalf("%q: got %q, regular expression %q", in, got, want)
		}
	})
}

// legacyRE is the reference's regular expression, with JavaScript's "." (no line terminators).
var legacyRE = regexp.MustCompile(`^user_([a-fA-F0-9]{64})_account_([^\n\r\x{2028}\x{2029}]*?)_session_([a-f0-9-]+)$`)

// refSessionHash is a transcription of src/utils/sessionHelper.js generateSessionHash over a fully
// decoded body, the oracle for the byte scanner.
func refSessionHash(body []byte) string {
	var v any
	if json.Unmarshal(body, &v) != nil {
		return ""
	}
	obj, ok := v.(map[string]any)
	if !ok {
		return ""
	}
	if md, ok := obj["metadata"].(map[string]any); ok {
		if uid, ok := md["user_id"].(string); ok && uid != "" {
			if strings.HasPrefix(uid, "{") {
				var o map[string]any
				if json.Unmarshal([]byte(uid), &o) == nil {
					d, _ := o["device_id"].(string)
					s, _ := o["session_id"].(string)
					if d != "" && s != "" {
						return s
					}
				}
			} else if m := legacyRE.FindStringSubmatch(uid); m != nil {
				return m[3]
			}
		}
	}
	textOf := func(v any) string { s, _ := v.(string); return s }
	ephemeral := func(v any) bool {
		cc, ok := v.(map[string]any)
		return ok && cc["type"] == "ephemeral"
	}
	msgText := func(msg any) string {
		m, ok := msg.(map[string]any)
		if !ok {
			return ""
		}
		switch c := m["content"].(type) {
		case string:
			return c
		case []any:
			var sb strings.Builder
			for _, p := range c {
				if pm, ok := p.(map[string]any); ok && pm["type"] == "text" {
					sb.WriteString(textOf(pm["text"]))
				}
			}
			return sb.String()
		}
		return ""
	}
	falsy := func(v any) bool { return v == nil || v == false || v == 0.0 || v == "" }

	cacheable := ""
	system := obj["system"]
	if arr, ok := system.([]any); ok {
		for _, p := range arr {
			if pm, ok := p.(map[string]any); ok && ephemeral(pm["cache_control"]) {
				cacheable += textOf(pm["text"])
			}
		}
	}
	messages, _ := obj["messages"].([]any)
	for _, msg := range messages {
		m, ok := msg.(map[string]any)
		if !ok {
			continue
		}
		content := m["content"]
		if falsy(content) {
			content = ""
		}
		has := false
		switch c := content.(type) {
		case []any:
			for _, p := range c {
				if pm, ok := p.(map[string]any); ok && ephemeral(pm["cache_control"]) {
					has = true
					break
				}
			}
		case string:
			has = ephemeral(m["cache_control"])
		}
		if has {
			for _, message := range messages {
				if t := msgText(message); t != "" {
					cacheable += t
					break
				}
			}
			break
		}
	}
	if cacheable != "" {
		return sha32(cacheable)
	}
	if !falsy(system) {
		st := ""
		switch s := system.(type) {
		case string:
			st = s
		case []any:
			for _, p := range s {
				if pm, ok := p.(map[string]any); ok {
					st += textOf(pm["text"])
				}
			}
		}
		if st != "" {
			return sha32(st)
		}
	}
	if len(messages) > 0 {
		if t := msgText(messages[0]); t != "" {
			return sha32(t)
		}
	}
	return ""
}

var fuzzSeeds = []string{
	`{"model":"claude-sonnet-4-5","stream":true,"messages":[{"role":"user","content":"hi"}]}`,
	`{"metadata":{"user_id":"user_` + deviceHex + `_account_x_session_` + sessionID + `"},"messages":[{"role":"user","content":"hi"}]}`,
	`{"metadata":{"user_id":"{\"device_id\":\"d\",\"session_id\":\"s\"}"},"messages":[1]}`,
	`{"system":[{"type":"text","text":"A","cache_control":{"type":"ephemeral"}}],"messages":[{"role":"user","content":[{"type":"text","text":"x","cache_control":{"type":"ephemeral"}}]}]}`,
	`{"system":"s\u00e9\ud800","messages":[{"content":0,"cache_control":{"type":"ephemeral"}},{"content":"t"}]}`,
	`{"messages":[null,{"content":[null,"x",{"type":"text","text":5}]}],"system":[null,1,{"text":"q"}]}`,
	`[{"messages":[]}]`,
	`{"a":[1,2.5e-3,-0,true,false,null,{"b":{}}],"messages":[{}]}`,
}

// FuzzParseMessages checks the scanner against encoding/json: the same bodies are valid, and the
// session hash equals the reference transcription's.
func FuzzParseMessages(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		m, err := ParseMessages(body)
		h := SessionHash(body)
		if !utf8.Valid(body) {
			return // encoding/json rewrites invalid UTF-8; the scanner keeps bytes as they are
		}
		valid := json.Valid(body)
		trimmed := strings.TrimSpace(string(body))
		if !valid && trimmed != "" {
			if err != ErrBodyNotObject {
				t.Fatalf("invalid json accepted: %v", err)
			}
			return
		}
		if valid && err == ErrBodyNotObject && strings.HasPrefix(trimmed, "{") {
			t.Fatalf("valid object rejected")
		}
		if want := refSessionHash(body); h != want {
			t.Fatalf("session hash %q, reference %q", h, want)
		}
		if err == nil && m.SessionHash != h {
			t.Fatalf("ParseMessages hash %q != SessionHash %q", m.SessionHash, h)
		}
	})
}

func BenchmarkParseMessages(b *testing.B) {
	big := strings.Repeat(`{"role":"user","content":[{"type":"text","text":"`+strings.Repeat("lorem ipsum \\n dolor ", 200)+`"}]},`, 200)
	body := []byte(`{"model":"claude-sonnet-4-5","messages":[` + big + `{"role":"user","content":"end"}],"metadata":{"user_id":"user_` + deviceHex + `_account__session_` + sessionID + `"},"stream":true}`)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseMessages(body); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkParseMessagesSmall is the body crs-bench sends: a short Claude Code request whose
// session comes from metadata.user_id. It measures the fixed cost per request.
func BenchmarkParseMessagesSmall(b *testing.B) {
	body := []byte(`{"max_tokens":32000,"messages":[{"content":[{"text":"Write a haiku about relays.","type":"text"}],"role":"user"}],"metadata":{"user_id":"user_` + deviceHex + `_account__session_` + sessionID + `"},"model":"claude-sonnet-4-20250514","stream":false}`)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseMessages(body); err != nil {
			b.Fatal(err)
		}
	}
}
