package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// messagesBody is a small Messages request; session, when set, goes into metadata.user_id in the
// JSON form Claude Code sends, which makes the request sticky.
func messagesBody(model string, stream bool, session string) []byte {
	body := map[string]any{
		"model":      model,
		"max_tokens": 64,
		"stream":     stream,
		"messages":   []any{map[string]any{"role": "user", "content": "say hi"}},
	}
	if session != "" {
		uid, _ := json.Marshal(map[string]string{"device_id": strings.Repeat("d", 64), "account_uuid": "", "session_id": session})
		body["metadata"] = map[string]any{"user_id": string(uid)}
	}
	b, _ := json.Marshal(body)
	return b
}

// post sends a Messages-style request to url with key and returns the response (body not read).
func post(t *testing.T, url, key string, body []byte) *http.Response {
	t.Helper()
	req, err := http.NewRequest("POST", url, bytes.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("x-api-key", key)
	req.Header.Set("content-type", "application/json")
	req.Header.Set("anthropic-version", "2023-06-01")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	return resp
}

// readAll reads and closes a response body.
func readAll(t *testing.T, resp *http.Response) []byte {
	t.Helper()
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return b
}

// sseEvent is one event as the client received it, with its arrival time.
type sseEvent struct {
	raw []byte
	at  time.Time
}

// readEvents splits a streamed body into events ("\n\n"-terminated) as they arrive.
func readEvents(t *testing.T, resp *http.Response) []sseEvent {
	t.Helper()
	return readEventsQuiet(resp)
}

// usageOf sums the usage a client saw in an SSE stream (message_start + message_delta).
type seenUsage struct{ Input, Output, CC, CR int64 }

func usageOfStream(events []sseEvent) (u seenUsage, complete bool) {
	for _, ev := range events {
		for _, line := range strings.Split(string(ev.raw), "\n") {
			data, ok := strings.CutPrefix(line, "data: ")
			if !ok {
				continue
			}
			var m struct {
				Type    string `json:"type"`
				Message struct {
					Usage struct {
						Input int64 `json:"input_tokens"`
						CC    int64 `json:"cache_creation_input_tokens"`
						CR    int64 `json:"cache_read_input_tokens"`
					} `json:"usage"`
				} `json:"message"`
				Usage struct {
					Output int64 `json:"output_tokens"`
				} `json:"usage"`
			}
			if json.Unmarshal([]byte(data), &m) != nil {
				continue
			}
			switch m.Type {
			case "message_start":
				u.Input += m.Message.Usage.Input
				u.CC += m.Message.Usage.CC
				u.CR += m.Message.Usage.CR
			case "message_delta":
				u.Output += m.Usage.Output
			case "message_stop":
				complete = true
			}
		}
	}
	return u, complete
}

// tryPost is post without failing the test on transport errors (for load loops).
func tryPost(url, key string, body []byte) (*http.Response, error) {
	req, err := http.NewRequest("POST", url, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("x-api-key", key)
	req.Header.Set("content-type", "application/json")
	req.Header.Set("anthropic-version", "2023-06-01")
	return http.DefaultClient.Do(req)
}

// readEventsQuiet splits a streamed body into events as they arrive; a transport error ends the
// list (with what was read of an unfinished event as the last entry).
func readEventsQuiet(resp *http.Response) []sseEvent {
	defer resp.Body.Close()
	r := bufio.NewReader(resp.Body)
	var out []sseEvent
	var cur []byte
	for {
		line, err := r.ReadBytes('\n')
		cur = append(cur, line...)
		if bytes.Equal(line, []byte("\n")) {
			out = append(out, sseEvent{raw: cur, at: time.Now()})
			cur = nil
		}
		if err != nil {
			if len(cur) > 0 {
				out = append(out, sseEvent{raw: cur, at: time.Now()})
			}
			return out
		}
	}
}
