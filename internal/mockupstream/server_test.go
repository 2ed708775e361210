package mockupstream

import (
	"bufio"
	"encoding/json"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// start runs a recording mock on a free port for the test's lifetime and returns its base URL.
func start(t *testing.T, cfg Config) (*Server, string) {
	t.Helper()
	cfg.Record = true
	s := New(cfg)
	addr, err := s.Start("127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { s.Close() })
	return s, "http://" + addr
}

// call sends a Messages request with the usual headers; empty key sends no x-api-key.
func call(t *testing.T, base, path, key, body string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, base+path, strings.NewReader(body))
	require.NoError(t, err)
	if key != "" {
		req.Header.Set("x-api-key", key)
	}
	req.Header.Set("anthropic-version", "2023-06-01")
	req.Header.Set("content-type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

func readAll(t *testing.T, r io.Reader) string {
	t.Helper()
	b, err := io.ReadAll(r)
	require.NoError(t, err)
	return string(b)
}

const (
	streamBody    = `{"model":"claude-sonnet-4-20250514","max_tokens":64,"stream":true,"messages":[{"role":"user","content":"hi"}]}`
	nonStreamBody = `{"model":"claude-sonnet-4-20250514","max_tokens":64,"messages":[{"role":"user","content":"hi"}]}`
)

var (
	msgIDRe = regexp.MustCompile(`msg_01[1-9A-HJ-NP-Za-km-z]{22}`)
	reqIDRe = regexp.MustCompile(`^req_011C[1-9A-HJ-NP-Za-km-z]{20}$`)
)

func TestStreamFramingExactBytes(t *testing.T) {
	b := Behavior{
		Deltas: 2, DeltaText: "Hi \"there\"\n", InputTokens: 12, OutputTokens: 7,
		CacheCreation5m: 3, CacheCreation1h: 4, CacheRead: 5,
	}
	_, base := start(t, Config{Default: b})
	resp := call(t, base, "/v1/messages?beta=true", "sk-ant-a", `{"model":"claude-\u0078","stream":true,"messages":[]}`)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, "text/event-stream; charset=utf-8", resp.Header.Get("content-type"))
	require.Equal(t, []string{"chunked"}, resp.TransferEncoding)
	require.Regexp(t, reqIDRe, resp.Header.Get("request-id"))
	require.Equal(t, "allowed", resp.Header.Get("anthropic-ratelimit-unified-status"))
	require.Equal(t, "allowed", resp.Header.Get("anthropic-ratelimit-unified-5h-status"))
	reset, err := strconv.ParseInt(resp.Header.Get("anthropic-ratelimit-unified-reset"), 10, 64)
	require.NoError(t, err)
	require.Greater(t, reset, time.Now().Unix())

	got := readAll(t, resp.Body)
	ids := msgIDRe.FindAllString(got, -1)
	require.Len(t, ids, 1)
	want := "event: message_start\n" +
		`data: {"type":"message_start","message":{"id":"MSGID","type":"message","role":"assistant","model":"claude-\u0078","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":12,"cache_creation_input_tokens":7,"cache_read_input_tokens":5,"cache_creation":{"ephemeral_5m_input_tokens":3,"ephemeral_1h_input_tokens":4},"output_tokens":1,"service_tier":"standard"}}}` + "\n\n" +
		"event: content_block_start\n" +
		`data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}` + "\n\n" +
		"event: ping\n" +
		`data: {"type": "ping"}` + "\n\n" +
		"event: content_block_delta\n" +
		`data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi \"there\"\n"}}` + "\n\n" +
		"event: content_block_delta\n" +
		`data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi \"there\"\n"}}` + "\n\n" +
		"event: content_block_stop\n" +
		`data: {"type":"content_block_stop","index":0}` + "\n\n" +
		"event: message_delta\n" +
		`data: {"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":7}}` + "\n\n" +
		"event: message_stop\n" +
		`data: {"type":"message_stop"}` + "\n\n"
	require.Equal(t, want, strings.Replace(got, ids[0], "MSGID", 1))

	// Every data line is valid JSON.
	for line := range strings.SplitSeq(got, "\n") {
		if data, ok := strings.CutPrefix(line, "data: "); ok {
			require.True(t, json.Valid([]byte(data)), data)
		}
	}
}

func TestNonStreamMessage(t *testing.T) {
	b := DefaultBehavior()
	b.Deltas, b.DeltaText, b.CacheRead, b.CacheCreation1h = 3, "ab", 9, 2
	_, base := start(t, Config{Default: b})
	resp := call(t, base, "/v1/messages", "sk-ant-a", nonStreamBody)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, "application/json", resp.Header.Get("content-type"))
	var m struct {
		ID, Type, Role, Model string
		Content               []struct{ Type, Text string }
		StopReason            *string `json:"stop_reason"`
		Usage                 map[string]any
	}
	require.NoError(t, json.Unmarshal([]byte(readAll(t, resp.Body)), &m))
	require.Regexp(t, msgIDRe, m.ID)
	require.Equal(t, "message", m.Type)
	require.Equal(t, "assistant", m.Role)
	require.Equal(t, "claude-sonnet-4-20250514", m.Model)
	require.Len(t, m.Content, 1)
	require.Equal(t, "ababab", m.Content[0].Text)
	require.Equal(t, "end_turn", *m.StopReason)
	require.Equal(t, map[string]any{
		"input_tokens": 25.0, "cache_creation_input_tokens": 2.0, "cache_read_input_tokens": 9.0,
		"cache_creation": map[string]any{"ephemeral_5m_input_tokens": 0.0, "ephemeral_1h_input_tokens": 2.0},
		"output_tokens":  15.0, "service_tier": "standard",
	}, m.Usage)
}

func TestCountTokensAndModels(t *testing.T) {
	_, base := start(t, Config{})
	resp := call(t, base, "/v1/messages/count_tokens?beta=true", "sk-ant-a", nonStreamBody)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.JSONEq(t, `{"input_tokens":25}`, readAll(t, resp.Body))

	req, err := http.NewRequest(http.MethodGet, base+"/v1/models", nil)
	require.NoError(t, err)
	req.Header.Set("authorization", "Bearer sk-ant-oat01-x")
	req.Header.Set("anthropic-version", "2023-06-01")
	resp, err = http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	var page struct {
		Data []struct{ ID, Type string }
	}
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&page))
	require.NotEmpty(t, page.Data)
	require.Equal(t, "model", page.Data[0].Type)
}

func TestRequestValidation(t *testing.T) {
	_, base := start(t, Config{})
	tests := []struct {
		name, key, body string
		noVersion       bool
		bearer          string
		status          int
		wantBody        string // exact, with REQID for the request id
	}{
		{name: "no credential", body: streamBody, status: 401,
			wantBody: `{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"},"request_id":"REQID"}`},
		{name: "bearer accepted", bearer: "Bearer sk-ant-oat01-abc", body: nonStreamBody, status: 200},
		{name: "not a bearer", bearer: "Basic abc", body: nonStreamBody, status: 401},
		{name: "no anthropic-version", key: "k", noVersion: true, body: nonStreamBody, status: 400,
			wantBody: `{"type":"error","error":{"type":"invalid_request_error","message":"anthropic-version: header is required"},"request_id":"REQID"}`},
		{name: "not json", key: "k", body: `{"model":"x",`, status: 400},
		{name: "array body", key: "k", body: `[]`, status: 400},
		{name: "no model", key: "k", body: `{"messages":[]}`, status: 400,
			wantBody: `{"type":"error","error":{"type":"invalid_request_error","message":"model: Field required"},"request_id":"REQID"}`},
		{name: "model not a string", key: "k", body: `{"model":1,"messages":[]}`, status: 400},
		{name: "no messages", key: "k", body: `{"model":"m"}`, status: 400,
			wantBody: `{"type":"error","error":{"type":"invalid_request_error","message":"messages: Field required"},"request_id":"REQID"}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req, err := http.NewRequest(http.MethodPost, base+"/v1/messages", strings.NewReader(tc.body))
			require.NoError(t, err)
			if tc.key != "" {
				req.Header.Set("x-api-key", tc.key)
			}
			if tc.bearer != "" {
				req.Header.Set("authorization", tc.bearer)
			}
			if !tc.noVersion {
				req.Header.Set("anthropic-version", "2023-06-01")
			}
			resp, err := http.DefaultClient.Do(req)
			require.NoError(t, err)
			defer resp.Body.Close()
			body := readAll(t, resp.Body)
			require.Equal(t, tc.status, resp.StatusCode, body)
			id := resp.Header.Get("request-id")
			require.Regexp(t, reqIDRe, id)
			if tc.status >= 400 {
				require.Equal(t, "false", resp.Header.Get("x-should-retry"))
				require.Empty(t, resp.Header.Get("anthropic-ratelimit-unified-status"))
			}
			if tc.wantBody != "" {
				require.Equal(t, strings.Replace(tc.wantBody, "REQID", id, 1), body)
			}
		})
	}
}

func TestFailureInjection(t *testing.T) {
	tests := []struct {
		name       string
		b          Behavior
		wantStatus []int
		errType    string
		message    string
		retry      string
	}{
		{name: "529 twice then success", b: Behavior{FailStatus: 529, FailTimes: 2},
			wantStatus: []int{529, 529, 200, 200}, errType: "overloaded_error", message: "Overloaded", retry: "true"},
		{name: "500 always", b: Behavior{FailStatus: 500, FailTimes: -1},
			wantStatus: []int{500, 500, 500}, errType: "api_error", message: "Internal server error", retry: "true"},
		{name: "fail status without count is always", b: Behavior{FailStatus: 401},
			wantStatus: []int{401, 401}, errType: "authentication_error", message: "invalid x-api-key", retry: "false"},
		{name: "ban message in default envelope", b: Behavior{FailStatus: 403, FailBody: BanMessage},
			wantStatus: []int{403}, errType: "permission_error", message: BanMessage, retry: "false"},
		{name: "429 once", b: Behavior{FailStatus: 429, FailTimes: 1},
			wantStatus: []int{429, 200}, errType: "rate_limit_error", retry: "true",
			message: "This request would exceed your account's rate limit. Please try again later."},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := DefaultBehavior()
			b.FailStatus, b.FailTimes, b.FailBody = tc.b.FailStatus, tc.b.FailTimes, tc.b.FailBody
			s, base := start(t, Config{Default: b})
			for i, want := range tc.wantStatus {
				resp := call(t, base, "/v1/messages", "sk-ant-a", streamBody)
				body := readAll(t, resp.Body)
				require.Equal(t, want, resp.StatusCode, "request %d: %s", i, body)
				if want == 200 {
					require.Contains(t, body, "event: message_stop")
					continue
				}
				require.Equal(t, "application/json", resp.Header.Get("content-type"))
				require.Equal(t, tc.retry, resp.Header.Get("x-should-retry"))
				var e struct {
					Type      string
					Error     struct{ Type, Message string }
					RequestID string `json:"request_id"`
				}
				require.NoError(t, json.Unmarshal([]byte(body), &e), body)
				require.Equal(t, "error", e.Type)
				require.Equal(t, tc.errType, e.Error.Type)
				require.Equal(t, tc.message, e.Error.Message)
				require.Equal(t, resp.Header.Get("request-id"), e.RequestID)
			}
			failures := 0
			for _, st := range tc.wantStatus {
				if st != 200 {
					failures++
				}
			}
			require.EqualValues(t, failures, s.Stats().Failures)
		})
	}
}

func TestRateLimitHeaders(t *testing.T) {
	b := DefaultBehavior()
	b.FailStatus, b.ResetAfter = 429, 90*time.Second+time.Millisecond
	_, base := start(t, Config{Default: b, Credentials: map[string]Behavior{
		"no-reset": {FailStatus: 429},
		"verbatim": {FailStatus: 429, FailBody: `{"type":"error","error":{"type":"rate_limit_error","message":"extra usage"}}`},
	}})

	before := time.Now().Unix()
	resp := call(t, base, "/v1/messages", "sk-ant-a", nonStreamBody)
	require.Equal(t, 429, resp.StatusCode)
	require.Equal(t, "rejected", resp.Header.Get("anthropic-ratelimit-unified-status"))
	require.Equal(t, "91", resp.Header.Get("retry-after"))
	reset, err := strconv.ParseInt(resp.Header.Get("anthropic-ratelimit-unified-reset"), 10, 64)
	require.NoError(t, err)
	require.GreaterOrEqual(t, reset, before+91)
	require.LessOrEqual(t, reset, time.Now().Unix()+91)

	resp = call(t, base, "/v1/messages", "no-reset", nonStreamBody)
	require.Equal(t, 429, resp.StatusCode)
	require.Empty(t, resp.Header.Get("anthropic-ratelimit-unified-reset"))
	require.Empty(t, resp.Header.Get("retry-after"))

	resp = call(t, base, "/v1/messages", "verbatim", nonStreamBody)
	require.Equal(t, 429, resp.StatusCode)
	require.Equal(t, `{"type":"error","error":{"type":"rate_limit_error","message":"extra usage"}}`, readAll(t, resp.Body))
}

// readEvents reads SSE events from r and returns each with its arrival time.
func readEvents(r io.Reader) (events []string, at []time.Time, err error) {
	br := bufio.NewReader(r)
	var cur strings.Builder
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return events, at, err
		}
		cur.WriteString(line)
		if line == "\n" {
			events = append(events, cur.String())
			at = append(at, time.Now())
			cur.Reset()
		}
	}
}

func TestStreamEventTiming(t *testing.T) {
	const delay = 60 * time.Millisecond
	b := DefaultBehavior()
	b.Deltas, b.EventDelay, b.FirstByteDelay = 2, delay, 100*time.Millisecond
	_, base := start(t, Config{Default: b})
	sent := time.Now()
	resp := call(t, base, "/v1/messages", "sk-ant-a", streamBody)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	events, at, err := readEvents(resp.Body)
	require.ErrorIs(t, err, io.EOF)
	require.Len(t, events, 8)
	require.GreaterOrEqual(t, at[0].Sub(sent), 100*time.Millisecond, "first byte delay")
	for i := 1; i < len(at); i++ {
		// Event i is sent i×delay after event 0: it must not come earlier (no batching ahead of the
		// schedule) nor as late as event i+1's time (each event is flushed on its own).
		off := at[i].Sub(at[0])
		require.GreaterOrEqual(t, off, time.Duration(i)*delay-5*time.Millisecond, "event %d", i)
		require.Less(t, off, time.Duration(i+1)*delay, "event %d arrived after the next was due", i)
	}
}

func TestStreamDisconnect(t *testing.T) {
	b := DefaultBehavior()
	b.DisconnectAfterEvents = 3
	s, base := start(t, Config{Default: b})
	resp := call(t, base, "/v1/messages", "sk-ant-a", streamBody)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Regexp(t, reqIDRe, resp.Header.Get("request-id"))
	require.Equal(t, "allowed", resp.Header.Get("anthropic-ratelimit-unified-status"))
	events, _, err := readEvents(resp.Body)
	require.ErrorIs(t, err, io.ErrUnexpectedEOF)
	require.Len(t, events, 3)
	require.True(t, strings.HasPrefix(events[0], "event: message_start\n"))
	require.Equal(t, "event: ping\ndata: {\"type\": \"ping\"}\n\n", events[2])
	require.Eventually(t, func() bool { return s.Stats().InFlight == 0 }, 2*time.Second, 10*time.Millisecond)
}

func TestStreamInBandError(t *testing.T) {
	b := DefaultBehavior()
	b.ErrorAfterEvents = 4
	_, base := start(t, Config{Default: b})
	resp := call(t, base, "/v1/messages", "sk-ant-a", streamBody)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	events, _, err := readEvents(resp.Body)
	require.ErrorIs(t, err, io.EOF)
	require.Len(t, events, 5)
	require.Equal(t, "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n", events[4])
}

func TestPerCredentialBehavior(t *testing.T) {
	s, base := start(t, Config{Credentials: map[string]Behavior{
		"sk-ant-banned": {FailStatus: 403, FailBody: BanMessage},
	}})
	for range 2 {
		resp := call(t, base, "/v1/messages", "sk-ant-banned", streamBody)
		require.Equal(t, 403, resp.StatusCode)
		require.Contains(t, readAll(t, resp.Body), BanMessage)
		resp = call(t, base, "/v1/messages", "sk-ant-ok", streamBody)
		require.Equal(t, 200, resp.StatusCode)
		readAll(t, resp.Body)
	}
	st := s.Stats()
	require.EqualValues(t, 4, st.Requests)
	require.EqualValues(t, 2, st.Failures)
	require.Equal(t, CredentialStats{Requests: 2, MaxInFlight: 1, Failures: 2}, st.ByCredential["sk-ant-banned"])
	require.Equal(t, CredentialStats{Requests: 2, MaxInFlight: 1}, st.ByCredential["sk-ant-ok"])

	recs := s.Requests()
	require.Len(t, recs, 4)
	require.Equal(t, "sk-ant-banned", recs[0].Credential)
	require.Equal(t, "sk-ant-ok", recs[1].Credential)
	require.Equal(t, "claude-sonnet-4-20250514", recs[1].Model)
	require.True(t, recs[1].Stream)
	require.Equal(t, "2023-06-01", recs[1].Headers["anthropic-version"])
	require.Equal(t, "/v1/messages", recs[1].Path)
	require.Len(t, recs[1].BodySHA256, 64)
}

func TestInFlightStats(t *testing.T) {
	const n = 5
	b := DefaultBehavior()
	b.FirstByteDelay = 300 * time.Millisecond
	s, base := start(t, Config{Default: b})
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			key := "a"
			if i%2 == 1 {
				key = "b"
			}
			req, _ := http.NewRequest(http.MethodPost, base+"/v1/messages", strings.NewReader(streamBody))
			req.Header.Set("x-api-key", key)
			req.Header.Set("anthropic-version", "2023-06-01")
			resp, err := http.DefaultClient.Do(req)
			if err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		})
	}
	require.Eventually(t, func() bool { return s.Stats().InFlight == n }, 2*time.Second, 5*time.Millisecond)
	st := s.Stats()
	require.EqualValues(t, 3, st.ByCredential["a"].InFlight)
	require.EqualValues(t, 2, st.ByCredential["b"].InFlight)
	wg.Wait()
	require.Eventually(t, func() bool { return s.Stats().InFlight == 0 }, 2*time.Second, 5*time.Millisecond)
	st = s.Stats()
	require.EqualValues(t, n, st.MaxInFlight)
	require.EqualValues(t, n, st.Requests)
	require.EqualValues(t, 3, st.ByCredential["a"].MaxInFlight)
	require.EqualValues(t, 0, st.ByCredential["b"].InFlight)
}

func TestClientAbortEndsInFlight(t *testing.T) {
	b := DefaultBehavior()
	b.Deltas, b.EventDelay = 50, 20*time.Millisecond
	s, base := start(t, Config{Default: b})
	resp := call(t, base, "/v1/messages", "sk-ant-a", streamBody)
	br := bufio.NewReader(resp.Body)
	_, err := br.ReadString('\n')
	require.NoError(t, err)
	require.EqualValues(t, 1, s.Stats().InFlight)
	resp.Body.Close() // net/http closes the connection of an unfinished body
	require.Eventually(t, func() bool { return s.Stats().InFlight == 0 }, 3*time.Second, 10*time.Millisecond)
}

func TestControlEndpoints(t *testing.T) {
	s, base := start(t, Config{})
	post := func(path, body string) (int, string) {
		resp, err := http.Post(base+path, "application/json", strings.NewReader(body))
		require.NoError(t, err)
		defer resp.Body.Close()
		return resp.StatusCode, readAll(t, resp.Body)
	}
	get := func(path string, v any) {
		resp, err := http.Get(base + path)
		require.NoError(t, err)
		defer resp.Body.Close()
		require.Equal(t, 200, resp.StatusCode)
		require.NoError(t, json.NewDecoder(resp.Body).Decode(v))
	}

	code, body := post("/__config", `{"default":{"deltas":5,"event_delay":"1ms"},"credentials":{"tokA":{"fail_status":529,"fail_times":1}}}`)
	require.Equal(t, 200, code, body)
	var cfg ConfigRequest
	require.NoError(t, json.Unmarshal([]byte(body), &cfg))
	require.Equal(t, 5, cfg.Default.Deltas)
	require.Equal(t, time.Millisecond, cfg.Default.EventDelay)
	require.Equal(t, "Hello", cfg.Default.DeltaText, "unnamed fields keep the defaults")
	require.Equal(t, Behavior{Deltas: 5, DeltaText: "Hello", EventDelay: time.Millisecond, InputTokens: 25,
		OutputTokens: 15, FailStatus: 529, FailTimes: 1}, cfg.Credentials["tokA"], "credentials inherit the default")

	code, body = post("/__config", `{"default":{"nope":1}}`)
	require.Equal(t, 400, code, body)
	code, body = post("/__config", `{"default":{"event_delay":"soon"}}`)
	require.Equal(t, 400, code, body)

	resp := call(t, base, "/v1/messages", "tokA", streamBody)
	require.Equal(t, 529, resp.StatusCode)
	resp = call(t, base, "/v1/messages", "tokA", streamBody)
	require.Equal(t, 200, resp.StatusCode)
	require.Equal(t, 5, strings.Count(readAll(t, resp.Body), "event: content_block_delta"))

	var st Stats
	get("/__stats", &st)
	require.EqualValues(t, 2, st.Requests)
	require.EqualValues(t, 1, st.Failures)
	require.EqualValues(t, 2, st.ByCredential["tokA"].Requests)
	var recs []RecordedRequest
	get("/__requests", &recs)
	require.Len(t, recs, 2)
	require.Equal(t, "tokA", recs[1].Credential)

	code, _ = post("/__reset", "")
	require.Equal(t, 200, code)
	st = Stats{}
	get("/__stats", &st)
	require.Zero(t, st.Requests)
	require.Empty(t, st.ByCredential)
	get("/__requests", &recs)
	require.Empty(t, recs)
	require.Equal(t, 5, s.behaviors.Load().def.Deltas, "reset keeps the behaviour")
}

func TestRecordingOff(t *testing.T) {
	s := New(Config{})
	addr, err := s.Start("127.0.0.1:0")
	require.NoError(t, err)
	defer s.Close()
	resp, err := http.Get("http://" + addr + "/__requests")
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusConflict, resp.StatusCode)
	require.Nil(t, s.Requests())
}

func TestRecorderRing(t *testing.T) {
	r := newRecorder()
	require.Empty(t, r.list())
	for i := range recordCapacity + 5 {
		r.put(RecordedRequest{Path: strconv.Itoa(i)})
	}
	l := r.list()
	require.Len(t, l, recordCapacity)
	require.Equal(t, "5", l[0].Path)
	require.Equal(t, strconv.Itoa(recordCapacity+4), l[len(l)-1].Path)
}

func TestNotFound(t *testing.T) {
	_, base := start(t, Config{})
	resp, err := http.Get(base + "/v2/nothing")
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, 404, resp.StatusCode)
	require.Contains(t, readAll(t, resp.Body), `"not_found_error"`)
}

func TestCloseWithoutStart(t *testing.T) {
	require.NoError(t, New(Config{}).Close())
}
