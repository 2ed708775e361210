package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/crsrelay/crs/internal/mockupstream"
	"github.com/crsrelay/crs/internal/testenv"
)

// sseFixture is what the scripted upstream sends: the awkward shapes a relay must not touch
// (ping, thinking with signature_delta, tool_use with input_json_delta, CRLF-free multi-line data).
var sseFixture = [][]byte{
	[]byte("event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_fixture\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-sonnet-4-5-20250929\",\"content\":[],\"stop_reason\":null,\"usage\":{\"input_tokens\":25,\"cache_creation_input_tokens\":7,\"cache_read_input_tokens\":3,\"cache_creation\":{\"ephemeral_5m_input_tokens\":7,\"ephemeral_1h_input_tokens\":0},\"output_tokens\":1}}}\n\n"),
	[]byte("event: ping\ndata: {\"type\": \"ping\"}\n\n"),
	[]byte("event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"thinking\",\"thinking\":\"\"}}\n\n"),
	[]byte("event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"thinking_delta\",\"thinking\":\"Let me think\\u2026 日本語\"}}\n\n"),
	[]byte("event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"signature_delta\",\"signature\":\"EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds\"}}\n\n"),
	[]byte("event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n"),
	[]byte("event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_01\",\"name\":\"get_weather\",\"input\":{}}}\n\n"),
	[]byte("event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"location\\\": \\\"Par\"}}\n\n"),
	[]byte("event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"is\\\"}\"}}\n\n"),
	[]byte("event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":1}\n\n"),
	[]byte("event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":42}}\n\n"),
	[]byte("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"),
}

// TestStreamIsByteIdenticalAndEventByEvent: every SSE event reaches the client exactly as the
// upstream sent it, and before the upstream sends the next one.
func TestStreamIsByteIdenticalAndEventByEvent(t *testing.T) {
	const gap = 150 * time.Millisecond
	up := startScripted(t, sseFixture, gap)
	cp := startControl(t, controlOpts{})
	w := cp.startWorker(t)
	cp.createConsoleAccount(t, "scripted", up.URL, "sk-ant-scripted", 50)
	keyID, key := cp.createKey(t, nil)

	resp := waitForRelay(t, w, key, messagesBody("claude-sonnet-4-5-20250929", true, ""))
	require.Equal(t, 200, resp.StatusCode)
	require.Equal(t, "text/event-stream", strings.Split(resp.Header.Get("Content-Type"), ";")[0])
	events := readEvents(t, resp)
	sent := up.sendTimes()

	var want, got strings.Builder
	for _, e := range sseFixture {
		want.Write(e)
	}
	for _, e := range events {
		got.Write(e.raw)
	}
	require.Equal(t, want.String(), got.String(), "stream bytes differ from what upstream sent")
	require.Len(t, events, len(sseFixture))
	require.Len(t, sent, len(sseFixture))
	for i := 0; i+1 < len(events); i++ {
		require.Truef(t, events[i].at.Before(sent[i+1]),
			"event %d arrived %s after upstream sent event %d: not flushed per event", i, events[i].at.Sub(sent[i+1]), i+1)
	}

	// The usage the client saw is what the control plane accounts, once.
	eventually(t, 5*time.Second, "usage recorded", func() bool {
		tot := keyTotals(t, cp, keyID)
		return tot.Requests == 1
	})
	tot := keyTotals(t, cp, keyID)
	require.EqualValues(t, 25, tot.InputTokens)
	require.EqualValues(t, 42, tot.OutputTokens)
	require.EqualValues(t, 7, tot.CacheCreationTokens)
	require.EqualValues(t, 3, tot.CacheReadTokens)
	require.Greater(t, tot.Cost, 0.0)
}

// usageTotals mirrors crs.v1.UsageTotals in JSON (int64 fields arrive as strings).
type usageTotals struct {
	Requests            int64   `json:"requests,string"`
	InputTokens         int64   `json:"inputTokens,string"`
	OutputTokens        int64   `json:"outputTokens,string"`
	CacheCreationTokens int64   `json:"cacheCreationTokens,string"`
	CacheReadTokens     int64   `json:"cacheReadTokens,string"`
	AllTokens           int64   `json:"allTokens,string"`
	Cost                float64 `json:"cost"`
	RatedCost           float64 `json:"ratedCost"`
}

func keyTotals(t *testing.T, cp *controlPlane, keyID string) usageTotals {
	t.Helper()
	var rep struct {
		Total usageTotals `json:"total"`
	}
	cp.mustAdmin(t, "GET", "/admin/v1/api-keys/"+keyID+"/usage?granularity=total", nil, &rep)
	return rep.Total
}

// waitForRelay retries one request until the worker has the key in its snapshot (it arrives
// within a second of the admin call), then returns that first successful response.
func waitForRelay(t *testing.T, w *worker, key string, body []byte) *http.Response {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp := post(t, w.url+"/api/v1/messages", key, body)
		if resp.StatusCode != 401 && resp.StatusCode != 503 && resp.StatusCode != 500 || time.Now().After(deadline) {
			return resp
		}
		readAll(t, resp)
		time.Sleep(50 * time.Millisecond)
	}
}

// TestNonStreamPassesStatusAndBody: non-stream answers and client errors come back as upstream sent them.
func TestNonStreamPassesStatusAndBody(t *testing.T) {
	mock, mockURL := startMock(t)
	mock.Configure(mockupstream.Behavior{}, map[string]mockupstream.Behavior{
		"sk-ant-bad": {FailStatus: 400, FailTimes: -1},
	})
	cp := startControl(t, controlOpts{})
	w := cp.startWorker(t)
	cp.createConsoleAccount(t, "good", mockURL, "sk-ant-good", 50)
	_, key := cp.createKey(t, nil)

	resp := waitForRelay(t, w, key, messagesBody("claude-sonnet-4-5", false, ""))
	body := readAll(t, resp)
	require.Equal(t, 200, resp.StatusCode, "%s", body)
	var msg struct {
		Type  string `json:"type"`
		Model string `json:"model"`
		Usage struct {
			Input int `json:"input_tokens"`
		} `json:"usage"`
	}
	require.NoError(t, json.Unmarshal(body, &msg))
	require.Equal(t, "message", msg.Type)
	require.Equal(t, "claude-sonnet-4-5", msg.Model)
	require.NotEmpty(t, resp.Header.Get("request-id"), "upstream request-id passes through")

	// The upstream never sees the client's key.
	for _, r := range mock.Requests() {
		require.NotContains(t, fmt.Sprint(r.Headers), key)
		require.Equal(t, "sk-ant-good", r.Credential)
	}

	// A 400 from upstream is the client's problem: same status and body, no failover.
	cp2 := startControl(t, controlOpts{})
	w2 := cp2.startWorker(t)
	cp2.createConsoleAccount(t, "bad", mockURL, "sk-ant-bad", 1)
	cp2.createConsoleAccount(t, "good", mockURL, "sk-ant-good", 50)
	_, key2 := cp2.createKey(t, nil)
	before := mock.Stats().ByCredential["sk-ant-good"].Requests
	resp = waitForRelay(t, w2, key2, messagesBody("claude-sonnet-4-5", false, ""))
	body = readAll(t, resp)
	require.Equal(t, 400, resp.StatusCode, "%s", body)
	require.Contains(t, string(body), `"invalid_request_error"`)
	require.Equal(t, before, mock.Stats().ByCredential["sk-ant-good"].Requests, "a 400 must not fail over")
}

// TestFailoverBeforeFirstByte: 429/529/5xx on the preferred account move the request to the next
// account; the client sees one clean answer and the account's state records why.
func TestFailoverBeforeFirstByte(t *testing.T) {
	for _, tc := range []struct {
		name      string
		status    int
		wantState string
	}{
		{"429 with reset", 429, "active"}, // family-limited, state stays active
		{"529 overloaded", 529, "overloaded"},
		{"500 server error", 500, "temp_unavailable"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mock, mockURL := startMock(t)
			mock.Configure(mockupstream.Behavior{}, map[string]mockupstream.Behavior{
				"sk-ant-a": {FailStatus: tc.status, FailTimes: -1, ResetAfter: time.Hour},
			})
			cp := startControl(t, controlOpts{})
			w := cp.startWorker(t)
			a := cp.createConsoleAccount(t, "a", mockURL, "sk-ant-a", 1)
			cp.createConsoleAccount(t, "b", mockURL, "sk-ant-b", 2)
			_, key := cp.createKey(t, nil)

			for _, stream := range []bool{false, true} {
				resp := waitForRelay(t, w, key, messagesBody("claude-sonnet-4-5", stream, ""))
				body := readAll(t, resp)
				require.Equal(t, 200, resp.StatusCode, "%s", body)
				require.NotContains(t, string(body), "event: error")
			}
			st := mock.Stats()
			require.GreaterOrEqual(t, st.ByCredential["sk-ant-a"].Requests, int64(1))
			require.EqualValues(t, 2, st.ByCredential["sk-ant-b"].Requests)

			var acct struct {
				Status struct {
					State              string            `json:"state"`
					Reason             string            `json:"reason"`
					FamilyLimitedUntil map[string]string `json:"familyLimitedUntil"`
				} `json:"status"`
			}
			eventually(t, 5*time.Second, "account state reported", func() bool {
				cp.mustAdmin(t, "GET", "/admin/v1/accounts/"+a, nil, &acct)
				if tc.status == 429 {
					return acct.Status.FamilyLimitedUntil["sonnet"] != ""
				}
				return acct.Status.State == tc.wantState
			})
			require.NotEmpty(t, acct.Status.Reason, "every decision has a reason")
		})
	}
}

// TestNoFailoverAfterFirstByte: once bytes reached the client, an upstream failure is delivered
// in-band and no other account is tried.
func TestNoFailoverAfterFirstByte(t *testing.T) {
	mock, mockURL := startMock(t)
	mock.Configure(mockupstream.Behavior{}, map[string]mockupstream.Behavior{
		"sk-ant-a": {DisconnectAfterEvents: 3},
	})
	cp := startControl(t, controlOpts{})
	w := cp.startWorker(t)
	cp.createConsoleAccount(t, "a", mockURL, "sk-ant-a", 1)
	cp.createConsoleAccount(t, "b", mockURL, "sk-ant-b", 2)
	_, key := cp.createKey(t, nil)

	resp := waitForRelay(t, w, key, messagesBody("claude-sonnet-4-5", true, ""))
	require.Equal(t, 200, resp.StatusCode)
	events := readEvents(t, resp)
	require.GreaterOrEqual(t, len(events), 4)
	require.Contains(t, string(events[0].raw), "message_start")
	require.Contains(t, string(events[len(events)-1].raw), "event: error", "the interruption is reported in-band")
	require.Zero(t, mock.Stats().ByCredential["sk-ant-b"].Requests, "no failover after the first byte")
}

// TestStickySessionAcrossWorkers: a session bound by one worker is served by the same account
// through another worker.
func TestStickySessionAcrossWorkers(t *testing.T) {
	mock, mockURL := startMock(t)
	redisURL := "redis://" + testenv.StartRedis(t) + "/0"
	cp := startControl(t, controlOpts{RedisURL: redisURL})
	w1 := cp.startWorker(t)
	w2 := cp.startWorker(t)
	cp.createConsoleAccount(t, "a", mockURL, "sk-ant-a", 50)
	cp.createConsoleAccount(t, "b", mockURL, "sk-ant-b", 50)
	_, key := cp.createKey(t, nil)

	served := func(w *worker, session string) string {
		before := mock.Stats().ByCredential
		resp := waitForRelay(t, w, key, messagesBody("claude-sonnet-4-5", false, session))
		body := readAll(t, resp)
		require.Equal(t, 200, resp.StatusCode, "%s", body)
		after := mock.Stats().ByCredential
		for cred, s := range after {
			if s.Requests > before[cred].Requests {
				return cred
			}
		}
		t.Fatal("no account served the request")
		return ""
	}
	// Several sessions through worker 1 spread over both accounts (least recently used first);
	// each must then be served by the same account through worker 2, whose own rotation differs.
	bound := map[string]string{}
	for i := range 4 {
		s := fmt.Sprintf("0b8c4a2e-1111-4c3d-9e5f-00000000000%d", i)
		bound[s] = served(w1, s)
	}
	require.Len(t, uniq(bound), 2, "new sessions rotate over both accounts")
	for s, cred := range bound {
		require.Equal(t, cred, served(w2, s), "session %s moved to another account on worker 2", s)
		require.Equal(t, cred, served(w1, s))
	}
}

func uniq(m map[string]string) map[string]bool {
	out := map[string]bool{}
	for _, v := range m {
		out[v] = true
	}
	return out
}

// TestMetricsOnBothPlanes: the worker and the control plane export Prometheus metrics that follow
// the traffic.
func TestMetricsOnBothPlanes(t *testing.T) {
	_, mockURL := startMock(t)
	cp := startControl(t, controlOpts{})
	w := cp.startWorker(t)
	cp.createConsoleAccount(t, "a", mockURL, "sk-ant-a", 50)
	_, key := cp.createKey(t, nil)
	readAll(t, waitForRelay(t, w, key, messagesBody("claude-sonnet-4-5", true, "")))

	get := func(url string) string {
		resp, err := http.Get(url)
		require.NoError(t, err)
		return string(readAll(t, resp))
	}
	eventually(t, 5*time.Second, "control plane counted the usage record", func() bool {
		return strings.Contains(get(cp.httpURL+"/metrics"), `crs_usage_records_total{result="stored"} 1`)
	})
	cpm := get(cp.httpURL + "/metrics")
	require.Contains(t, cpm, "crs_fleet_workers_connected 1")
	require.Contains(t, cpm, "crs_fleet_snapshot_version")
	wm := get(w.url + "/metrics")
	for _, name := range []string{"crs_worker_snapshot_version", "crs_worker_active_streams", `crs_worker_requests_total{route="messages",status="200",platform="claude"} 1`} {
		require.Contains(t, wm, name)
	}
}
