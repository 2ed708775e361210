package claude

import (
	"bytes"

	"github.com/crsrelay/crs/dataplane/relay/platform"
	"github.com/crsrelay/crs/dataplane/sse"
)

// usageReader reads Anthropic usage (reference §1.3.2). In a stream only message_start (input,
// cache creation with its 5m/1h split, cache read, model) and message_delta (output, and the
// cumulative input counts newer API versions repeat there) are read, by one validating pass that
// decodes only the usage members (usagescan.go; encoding/json where that pass declines); every
// other event is skipped after looking at its event: line. A non-stream body is read the same way,
// without decoding its content. It is created per response and is not thread-safe.
type usageReader struct {
	u    platform.Usage
	seen bool
}

var _ platform.UsageReader = (*usageReader)(nil)

// wireUsage is Anthropic's usage object, the fields we bill.
type wireUsage struct {
	InputTokens              int64 `json:"input_tokens"`
	OutputTokens             int64 `json:"output_tokens"`
	CacheCreationInputTokens int64 `json:"cache_creation_input_tokens"`
	CacheReadInputTokens     int64 `json:"cache_read_input_tokens"`
	CacheCreation            struct {
		Ephemeral5m int64 `json:"ephemeral_5m_input_tokens"`
		Ephemeral1h int64 `json:"ephemeral_1h_input_tokens"`
	} `json:"cache_creation"`
	Speed string `json:"speed"`
}

// wireEvent is a message_start or message_delta event, or a whole non-stream message, as
// encoding/json decodes it (usageEvent.decode; usageEvent.scan reads the same without it).
type wireEvent struct {
	Type    string       `json:"type"`
	Model   string       `json:"model"`
	Message *wireMessage `json:"message"`
	Usage   *wireUsage   `json:"usage"`
}

// wireMessage is the message of a message_start event.
type wireMessage struct {
	Model string     `json:"model"`
	Usage *wireUsage `json:"usage"`
}

var (
	typeMessageStart = []byte(`"message_start"`)
	typeMessageDelta = []byte(`"message_delta"`)
)

// Event implements [platform.UsageReader.Event].
func (r *usageReader) Event(ev []byte) {
	var data []byte
	switch string(sse.Field(ev, "event")) {
	case "message_start", "message_delta":
		data = sse.Data(ev, nil)
	case "":
		// An event without an event: line carries its type only in the JSON.
		data = sse.Data(ev, nil)
		if !bytes.Contains(data, typeMessageStart) && !bytes.Contains(data, typeMessageDelta) {
			return
		}
	default:
		return
	}
	var m usageEvent
	if !m.scan(data) && !m.decode(data) {
		return
	}
	switch string(m.typ) {
	case "message_start":
		if !m.msg || !m.msgHasUsage {
			return
		}
		r.u = toUsage(&m.msgUsage)
		r.u.Model = string(m.msgModel)
		r.seen = true
	case "message_delta":
		if !m.hasUsage {
			return
		}
		r.merge(toUsage(&m.usage))
		r.seen = true
	}
}

// Body implements [platform.UsageReader.Body]: the usage object of a non-stream message.
func (r *usageReader) Body(body []byte) {
	if u, ok := bodyUsage(body, ""); ok {
		r.u, r.seen = u, true
	}
}

// bodyUsage reads the usage object of a non-stream message. The reported model is returned as
// model when they are equal (no copy).
func bodyUsage(body []byte, model string) (platform.Usage, bool) {
	var m usageEvent
	if !m.scan(body) && !m.decode(body) || !m.hasUsage {
		return platform.Usage{}, false
	}
	u := toUsage(&m.usage)
	if string(m.model) == model {
		u.Model = model
	} else {
		u.Model = string(m.model)
	}
	return u, true
}

// Usage implements [platform.UsageReader.Usage].
func (r *usageReader) Usage() (platform.Usage, bool) { return r.u, r.seen }

// merge takes a message_delta's counts: they are cumulative, so each is the larger of the two.
func (r *usageReader) merge(d platform.Usage) {
	r.u.InputTokens = max(r.u.InputTokens, d.InputTokens)
	r.u.OutputTokens = max(r.u.OutputTokens, d.OutputTokens)
	r.u.CacheCreation5mTokens = max(r.u.CacheCreation5mTokens, d.CacheCreation5mTokens)
	r.u.CacheCreation1hTokens = max(r.u.CacheCreation1hTokens, d.CacheCreation1hTokens)
	r.u.CacheReadTokens = max(r.u.CacheReadTokens, d.CacheReadTokens)
	if d.Speed != "" {
		r.u.Speed = d.Speed
	}
}

// toUsage converts Anthropic's usage. Cache writes are split by TTL when upstream gives the
// cache_creation breakdown; without it they were all written with the default 5-minute TTL.
func toUsage(w *wireUsage) platform.Usage {
	u := platform.Usage{
		InputTokens:     w.InputTokens,
		OutputTokens:    w.OutputTokens,
		CacheReadTokens: w.CacheReadInputTokens,
		Speed:           w.Speed,
	}
	if split := w.CacheCreation.Ephemeral5m + w.CacheCreation.Ephemeral1h; split > 0 {
		u.CacheCreation5mTokens = w.CacheCreation.Ephemeral5m
		u.CacheCreation1hTokens = w.CacheCreation.Ephemeral1h
	} else {
		u.CacheCreation5mTokens = w.CacheCreationInputTokens
	}
	return u
}
