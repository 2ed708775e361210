package mockupstream

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"sync/atomic"
	"time"
)

// Behavior is what the mock does with one request: how it answers, how fast, with which usage, and
// which failure it injects. It is plain data; the zero value answers instantly with an empty text
// block and zero usage, so start from [DefaultBehavior] and change what a test needs.
//
// In JSON (POST /__config) fields are snake_case and durations are Go duration strings ("150ms").
type Behavior struct {
	// Deltas is the number of content_block_delta events of a stream; a non-stream answer's text is
	// DeltaText repeated Deltas times.
	Deltas int `json:"deltas"`
	// DeltaText is the text of each text_delta.
	DeltaText string `json:"delta_text"`
	// FirstByteDelay is slept before anything is sent, errors included (time to first byte).
	FirstByteDelay time.Duration `json:"first_byte_delay"`
	// EventDelay is slept before every stream event after message_start. A non-stream answer waits
	// FirstByteDelay + Deltas×EventDelay, the time the whole generation would take.
	EventDelay time.Duration `json:"event_delay"`
	// InputTokens is usage.input_tokens, and the answer of count_tokens.
	InputTokens int `json:"input_tokens"`
	// OutputTokens is usage.output_tokens of message_delta and of a non-stream answer.
	OutputTokens int `json:"output_tokens"`
	// CacheCreation5m and CacheCreation1h are usage.cache_creation.ephemeral_{5m,1h}_input_tokens;
	// their sum is usage.cache_creation_input_tokens.
	CacheCreation5m int `json:"cache_creation_5m"`
	CacheCreation1h int `json:"cache_creation_1h"`
	// CacheRead is usage.cache_read_input_tokens.
	CacheRead int `json:"cache_read"`
	// FailStatus, when not 0, makes requests fail with this HTTP status, a realistic error body and
	// the headers the real API sends with it (x-should-retry; for 429 retry-after and
	// anthropic-ratelimit-unified-reset when ResetAfter is set).
	FailStatus int `json:"fail_status"`
	// FailTimes is how many requests fail before the behaviour succeeds again. -1 and 0 both mean
	// "always" (a FailStatus without a count fails every request). The count is per behaviour entry:
	// each credential of Credentials has its own, credentials without an entry share the default's.
	FailTimes int `json:"fail_times"`
	// FailBody replaces the default error body. A JSON object is sent verbatim; any other text is used
	// as error.message inside the default envelope for FailStatus. A ban looks like FailStatus 403 with
	// FailBody "OAuth authentication is currently not allowed for this organization.".
	FailBody string `json:"fail_body"`
	// ResetAfter, for a 429, sets anthropic-ratelimit-unified-reset to now+ResetAfter (unix seconds)
	// and retry-after to its seconds. Without it a 429 carries neither, like a real 429 that is not a
	// subscription window limit.
	ResetAfter time.Duration `json:"reset_after"`
	// DisconnectAfterEvents, when > 0, makes a stream write that many events and then close the
	// connection without ending the chunked body, like an upstream that dies mid-stream.
	DisconnectAfterEvents int `json:"disconnect_after_events"`
	// ErrorAfterEvents, when > 0, makes a stream write that many events, then an in-band
	// `event: error` (overloaded_error) and end, as the real API does when it overloads mid-stream.
	ErrorAfterEvents int `json:"error_after_events"`
}

// DefaultBehavior is what the mock does unless configured otherwise: a short, instant, successful
// answer with realistic usage numbers.
func DefaultBehavior() Behavior {
	return Behavior{
		Deltas:       3,
		DeltaText:    "Hello",
		InputTokens:  25,
		OutputTokens: 15,
	}
}

// behaviorJSON mirrors Behavior with durations as strings. Unmarshalling into a pre-filled value keeps
// the fields the JSON leaves out, which is how /__config overlays defaults.
type behaviorJSON struct {
	Deltas                int      `json:"deltas"`
	DeltaText             string   `json:"delta_text"`
	FirstByteDelay        duration `json:"first_byte_delay"`
	EventDelay            duration `json:"event_delay"`
	InputTokens           int      `json:"input_tokens"`
	OutputTokens          int      `json:"output_tokens"`
	CacheCreation5m       int      `json:"cache_creation_5m"`
	CacheCreation1h       int      `json:"cache_creation_1h"`
	CacheRead             int      `json:"cache_read"`
	FailStatus            int      `json:"fail_status"`
	FailTimes             int      `json:"fail_times"`
	FailBody              string   `json:"fail_body"`
	ResetAfter            duration `json:"reset_after"`
	DisconnectAfterEvents int      `json:"disconnect_after_events"`
	ErrorAfterEvents      int      `json:"error_after_events"`
}

// MarshalJSON implements [json.Marshaler] with durations as Go duration strings.
func (b Behavior) MarshalJSON() ([]byte, error) {
	return json.Marshal(behaviorJSON{
		Deltas: b.Deltas, DeltaText: b.DeltaText,
		FirstByteDelay: duration(b.FirstByteDelay), EventDelay: duration(b.EventDelay),
		InputTokens: b.InputTokens, OutputTokens: b.OutputTokens,
		CacheCreation5m: b.CacheCreation5m, CacheCreation1h: b.CacheCreation1h, CacheRead: b.CacheRead,
		FailStatus: b.FailStatus, FailTimes: b.FailTimes, FailBody: b.FailBody,
		ResetAfter:            duration(b.ResetAfter),
		DisconnectAfterEvents: b.DisconnectAfterEvents, ErrorAfterEvents: b.ErrorAfterEvents,
	})
}

// UnmarshalJSON implements [json.Unmarshaler]. Fields absent from data keep their current value.
func (b *Behavior) UnmarshalJSON(data []byte) error {
	j := behaviorJSON{
		Deltas: b.Deltas, DeltaText: b.DeltaText,
		FirstByteDelay: duration(b.FirstByteDelay), EventDelay: duration(b.EventDelay),
		InputTokens: b.InputTokens, OutputTokens: b.OutputTokens,
		CacheCreation5m: b.CacheCreation5m, CacheCreation1h: b.CacheCreation1h, CacheRead: b.CacheRead,
		FailStatus: b.FailStatus, FailTimes: b.FailTimes, FailBody: b.FailBody,
		ResetAfter:            duration(b.ResetAfter),
		DisconnectAfterEvents: b.DisconnectAfterEvents, ErrorAfterEvents: b.ErrorAfterEvents,
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&j); err != nil {
		return fmt.Errorf("decode behavior: %w", err)
	}
	*b = Behavior{
		Deltas: j.Deltas, DeltaText: j.DeltaText,
		FirstByteDelay: time.Duration(j.FirstByteDelay), EventDelay: time.Duration(j.EventDelay),
		InputTokens: j.InputTokens, OutputTokens: j.OutputTokens,
		CacheCreation5m: j.CacheCreation5m, CacheCreation1h: j.CacheCreation1h, CacheRead: j.CacheRead,
		FailStatus: j.FailStatus, FailTimes: j.FailTimes, FailBody: j.FailBody,
		ResetAfter:            time.Duration(j.ResetAfter),
		DisconnectAfterEvents: j.DisconnectAfterEvents, ErrorAfterEvents: j.ErrorAfterEvents,
	}
	return nil
}

// duration is a time.Duration written as "1.5s" in JSON; a bare number is read as nanoseconds.
type duration time.Duration

func (d duration) MarshalJSON() ([]byte, error) {
	return json.Marshal(time.Duration(d).String())
}

func (d *duration) UnmarshalJSON(data []byte) error {
	var s string
	if err := json.Unmarshal(data, &s); err != nil {
		var n int64
		if err := json.Unmarshal(data, &n); err != nil {
			return fmt.Errorf("duration %s: want a string like \"150ms\"", data)
		}
		*d = duration(n)
		return nil
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("duration %q: %w", s, err)
	}
	*d = duration(v)
	return nil
}

// behavior is a Behavior compiled for the hot path, with its own failure countdown. It is
// immutable apart from failLeft and shared by all requests that resolve to it.
type behavior struct {
	Behavior
	failLeft atomic.Int64
	// deltaEvent is the complete content_block_delta event, rendered once.
	deltaEvent []byte
	// text is the JSON-escaped text of a non-stream answer (without quotes).
	text []byte
}

func compile(b Behavior) *behavior {
	c := &behavior{Behavior: b}
	c.failLeft.Store(int64(b.FailTimes))
	esc := appendJSONString(nil, b.DeltaText)
	esc = esc[1 : len(esc)-1]
	c.deltaEvent = append(c.deltaEvent, "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\""...)
	c.deltaEvent = append(c.deltaEvent, esc...)
	c.deltaEvent = append(c.deltaEvent, "\"}}\n\n"...)
	c.text = []byte(strings.Repeat(string(esc), max(b.Deltas, 0)))
	return c
}

// shouldFail reports whether this request gets the injected failure, counting it down.
func (c *behavior) shouldFail() bool {
	if c.FailStatus == 0 {
		return false
	}
	if c.FailTimes <= 0 {
		return true
	}
	return c.failLeft.Add(-1) >= 0
}

// behaviorSet is the whole configuration in force, swapped atomically by /__config.
type behaviorSet struct {
	def   *behavior
	creds map[string]*behavior
}

func newBehaviorSet(def Behavior, creds map[string]Behavior) *behaviorSet {
	s := &behaviorSet{def: compile(def), creds: make(map[string]*behavior, len(creds))}
	for k, b := range creds {
		s.creds[k] = compile(b)
	}
	return s
}

// lookup returns the behaviour for a credential; the map index with string(cred) does not allocate.
func (s *behaviorSet) lookup(cred []byte) *behavior {
	if b, ok := s.creds[string(cred)]; ok {
		return b
	}
	return s.def
}

// ConfigRequest is the body of POST /__config. It replaces the whole configuration: Default starts
// from [DefaultBehavior] and each credential's entry starts from the resulting Default, so a script
// only names what differs.
type ConfigRequest struct {
	Default     Behavior            `json:"default"`
	Credentials map[string]Behavior `json:"credentials"`
}

// parseConfigRequest decodes a /__config body with the overlay rules of [ConfigRequest].
func parseConfigRequest(data []byte) (ConfigRequest, error) {
	var raw struct {
		Default     json.RawMessage            `json:"default"`
		Credentials map[string]json.RawMessage `json:"credentials"`
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&raw); err != nil {
		return ConfigRequest{}, fmt.Errorf("decode config: %w", err)
	}
	out := ConfigRequest{Default: DefaultBehavior(), Credentials: make(map[string]Behavior, len(raw.Credentials))}
	if len(raw.Default) > 0 && string(raw.Default) != "null" {
		if err := out.Default.UnmarshalJSON(raw.Default); err != nil {
			return ConfigRequest{}, fmt.Errorf("default: %w", err)
		}
	}
	for k, v := range raw.Credentials {
		b := out.Default
		if err := b.UnmarshalJSON(v); err != nil {
			return ConfigRequest{}, fmt.Errorf("credentials[%q]: %w", k, err)
		}
		out.Credentials[k] = b
	}
	return out, nil
}
