package relay

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/crsrelay/crs/dataplane/sse"
	"github.com/crsrelay/crs/internal/mockupstream"
	"github.com/stretchr/testify/require"
)

// Tests against internal/mockupstream, the realistic Anthropic stand-in: real SSE framing, usage
// fields, error bodies and headers, failures injected per upstream credential.

func startMock(t *testing.T, def mockupstream.Behavior, creds map[string]mockupstream.Behavior) (*mockupstream.Server, string) {
	t.Helper()
	m := mockupstream.New(mockupstream.Config{Default: def, Credentials: creds, Record: true})
	addr, err := m.Start("127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { _ = m.Close() })
	return m, "http://" + addr
}

// events splits an SSE body and returns each event's type.
func eventTypes(t *testing.T, body string) []string {
	t.Helper()
	s := sse.NewSplitter(strings.NewReader(body), 0, 0)
	var types []string
	for {
		ev, err := s.Next()
		if err == io.EOF {
			return types
		}
		require.NoError(t, err)
		types = append(types, string(sse.Field(ev, "event")))
	}
}

func TestMockStreamUsage(t *testing.T) {
	def := mockupstream.DefaultBehavior()
	def.InputTokens, def.OutputTokens, def.CacheCreation5m, def.CacheCreation1h, def.CacheRead = 120, 34, 5, 6, 7
	m, url := startMock(t, def, nil)
	f := newFront(t, Options{}, official("a", url))

	resp := f.post(t, "/v1/messages?beta=true", streamReq, "anthropic-beta", "context-1m-2025-08-07")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.NotEmpty(t, resp.Header.Get("Request-Id"))
	types := eventTypes(t, readAll(t, resp.Body))
	require.Equal(t, "message_start", types[0])
	require.Equal(t, "message_stop", types[len(types)-1])
	require.Len(t, types, def.Deltas+6)

	u := f.outcome(t).Usage
	require.NotNil(t, u)
	require.Equal(t, int64(120), u.InputTokens)
	require.Equal(t, int64(34), u.OutputTokens)
	require.Equal(t, int64(5), u.CacheCreation_5MTokens)
	require.Equal(t, int64(6), u.CacheCreation_1HTokens)
	require.Equal(t, int64(7), u.CacheReadTokens)
	require.Equal(t, "claude-sonnet-4-5", u.Model)

	reqs := m.Requests()
	require.Len(t, reqs, 1)
	require.Equal(t, "tok-a", reqs[0].Credential)
	require.NotContains(t, reqs[0].Headers["x-api-key"], "cr_client_secret")
	require.Contains(t, reqs[0].Headers["anthropic-beta"], "oauth-2025-04-20")
	require.Contains(t, reqs[0].Headers["anthropic-beta"], "context-1m-2025-08-07")
}

func TestMockUnaryUsage(t *testing.T) {
	_, url := startMock(t, mockupstream.DefaultBehavior(), nil)
	f := newFront(t, Options{}, console("k", url, "sk-ant-api03-x", nil))
	resp := f.post(t, "/v1/messages", unaryReq)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Contains(t, readAll(t, resp.Body), `"usage"`)
	u := f.outcome(t).Usage
	require.NotNil(t, u)
	require.Equal(t, int64(25), u.InputTokens)
	require.Equal(t, int64(15), u.OutputTokens)
	require.Equal(t, "claude-console", u.AccountType)
}

func TestMockFailover(t *testing.T) {
	creds := map[string]mockupstream.Behavior{
		"tok-a": {FailStatus: 429, ResetAfter: time.Hour},
		"tok-b": {FailStatus: 529},
		"tok-c": {FailStatus: 403, FailBody: "OAuth authentication is currently not allowed for this organization."},
	}
	_, url := startMock(t, mockupstream.DefaultBehavior(), creds)
	f := newFront(t, Options{MaxAttempts: 4}, official("a", url), official("b", url), official("c", url), official("d", url))
	resp := f.post(t, "/v1/messages", streamReq)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	types := eventTypes(t, readAll(t, resp.Body))
	require.Equal(t, "message_stop", types[len(types)-1])

	o := f.outcome(t)
	require.Equal(t, []string{"a:rate_limited", "b:overloaded", "c:blocked", "d:success"}, eventKinds(o))
	limited := o.Events[0]
	require.Equal(t, "sonnet", limited.GetModelFamily())
	require.WithinDuration(t, time.Now().Add(time.Hour), limited.GetUntil().AsTime(), 5*time.Second)
	require.Equal(t, int32(529), o.Events[1].GetUpstreamStatus())
	require.Contains(t, o.Events[2].GetReason(), "OAuth authentication is currently not allowed")
	require.Equal(t, "d", o.Usage.GetAccountId())
}

func TestMockMidStreamFailures(t *testing.T) {
	t.Run("disconnect: in-band error from the relay", func(t *testing.T) {
		b := mockupstream.DefaultBehavior()
		b.DisconnectAfterEvents = 3
		_, url := startMock(t, b, nil)
		f := newFront(t, Options{}, official("a", url), official("b", url))
		body := readAll(t, f.post(t, "/v1/messages", streamReq).Body)
		require.True(t, strings.HasSuffix(body, interrupted), body)
		types := eventTypes(t, body)
		require.Equal(t, []string{"message_start", "content_block_start", "ping", "error"}, types)
		o := f.outcome(t)
		require.Equal(t, 1, o.Attempts)
		require.Equal(t, int64(25), o.Usage.GetInputTokens())
	})
	t.Run("upstream's own in-band error passes through as it is", func(t *testing.T) {
		b := mockupstream.DefaultBehavior()
		b.ErrorAfterEvents = 2
		_, url := startMock(t, b, nil)
		f := newFront(t, Options{}, official("a", url))
		body := readAll(t, f.post(t, "/v1/messages", streamReq).Body)
		require.NotContains(t, body, "upstream stream interrupted")
		require.Contains(t, body, "overloaded_error")
		f.outcome(t)
	})
}
