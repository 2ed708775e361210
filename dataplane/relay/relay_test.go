package relay

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	crsv1 "github.com/crsrelay/crs/gen/crs/v1"
	"github.com/stretchr/testify/require"
	"github.com/valyala/fasthttp"
)

func TestStreamPassesThroughByteIdentical(t *testing.T) {
	up := newUpstream(t, sseHandler(fullStream, 0, nil))
	f := newFront(t, Options{}, official("a", up.URL))

	resp := f.post(t, "/api/v1/messages?beta=true", streamReq, "anthropic-beta", "context-1m-2025-08-07")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, strings.Join(fullStream, ""), readAll(t, resp.Body))

	require.Equal(t, "text/event-stream", resp.Header.Get("Content-Type"))
	require.Equal(t, "no-cache", resp.Header.Get("Cache-Control"))
	require.Equal(t, "no", resp.Header.Get("X-Accel-Buffering"))
	require.Equal(t, "keep-alive", resp.Header.Get("Connection"))
	require.Equal(t, "req_upstream_1", resp.Header.Get("Request-Id"))
	require.Equal(t, "allowed", resp.Header.Get("Anthropic-Ratelimit-Unified-Status"))
	require.Empty(t, resp.Header.Get("X-Internal-Upstream"), "stream answers keep only request-id and rate limit headers")

	o := f.outcome(t)
	require.Equal(t, 200, o.Status)
	require.Equal(t, 1, o.Attempts)
	require.Equal(t, "a", o.Account.GetId())
	require.Equal(t, []string{"a:success"}, eventKinds(o))
	require.Positive(t, o.FirstByte)
	u := o.Usage
	require.NotNil(t, u)
	require.Equal(t, "req-1", u.RequestId)
	require.Equal(t, "key-1", u.KeyId)
	require.Equal(t, "a", u.AccountId)
	require.Equal(t, "claude-official", u.AccountType)
	require.Equal(t, "claude-sonnet-4-5-20250929", u.Model, "upstream's model")
	require.Equal(t, int64(21), u.InputTokens)
	require.Equal(t, int64(42), u.OutputTokens)
	require.Equal(t, int64(10), u.CacheCreation_5MTokens)
	require.Equal(t, int64(20), u.CacheCreation_1HTokens)
	require.Equal(t, int64(7), u.CacheReadTokens)
	require.Equal(t, int32(200), u.Status)
	require.True(t, u.Stream)
	require.Equal(t, "/api/v1/messages", u.Endpoint)
	require.Equal(t, "context-1m-2025-08-07", u.AnthropicBeta)
	require.NotNil(t, u.StartedAt)

	reqs := up.requests()
	require.Len(t, reqs, 1)
	require.Equal(t, "/v1/messages?beta=true", reqs[0].URI)
	require.Equal(t, streamReq, string(reqs[0].Body))
}

// Each event must reach the client before upstream sends the next one: nothing may buffer events.
func TestStreamDeliversEachEventBeforeTheNextIsSent(t *testing.T) {
	events := []string{sseStart, sseDelta, sseDelta, sseEnd, sseMStop}
	var mu sync.Mutex
	sentAt := make([]time.Time, len(events))
	up := newUpstream(t, sseHandler(events, 200*time.Millisecond, func(i int) {
		mu.Lock()
		sentAt[i] = time.Now()
		mu.Unlock()
	}))
	f := newFront(t, Options{}, official("a", up.URL))
	resp := f.post(t, "/v1/messages", streamReq)
	require.Equal(t, http.StatusOK, resp.StatusCode)

	br := bufio.NewReader(resp.Body)
	for i := range events {
		var ev strings.Builder
		for {
			line, err := br.ReadString('\n')
			require.NoError(t, err, "event %d", i)
			ev.WriteString(line)
			if line == "\n" {
				break
			}
		}
		arrived := time.Now()
		require.Equal(t, events[i], ev.String())
		if i+1 < len(events) {
			mu.Lock()
			next := sentAt[i+1]
			mu.Unlock()
			require.True(t, next.IsZero() || arrived.Before(next),
				"event %d arrived at %v, after event %d was sent at %v", i, arrived, i+1, next)
		}
	}
	f.outcome(t)
}

// Events the upstream sent together reach the client together, in one chunk; events that follow
// after a pause come in a later chunk, sent before the pause ends.
func TestStreamCoalescesEventsReceivedTogether(t *testing.T) {
	first := []string{sseStart, ssePing, sseBlock, sseDelta, sseDelta2}
	second := []string{sseStop, sseEnd, sseMStop}
	secondSent := make(chan time.Time, 1)
	up := rawUpstream(t, func(c net.Conn) {
		w := bufio.NewWriter(c)
		fmt.Fprint(w, "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
		write := func(events []string) {
			for _, ev := range events {
				fmt.Fprintf(w, "%x\r\n%s\r\n", len(ev), ev)
			}
		}
		write(first)
		_ = w.Flush()
		time.Sleep(300 * time.Millisecond)
		secondSent <- time.Now()
		write(second)
		fmt.Fprint(w, "0\r\n\r\n")
		_ = w.Flush()
	})
	f := newFront(t, Options{}, official("a", up))

	conn, err := net.Dial("tcp", strings.TrimPrefix(f.URL, "http://"))
	require.NoError(t, err)
	defer conn.Close()
	fmt.Fprintf(conn, "POST /v1/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(streamReq), streamReq)
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	require.NoError(t, err)
	require.Equal(t, 200, resp.StatusCode)
	require.Equal(t, []string{"chunked"}, resp.TransferEncoding)
	// Read the chunks by hand (http.ReadResponse hides them).
	var chunks []string
	var arrived []time.Time
	for {
		line, err := br.ReadString('\n')
		require.NoError(t, err)
		var n int
		_, err = fmt.Sscanf(line, "%x", &n)
		require.NoError(t, err, "chunk size line %q", line)
		if n == 0 {
			break
		}
		buf := make([]byte, n+2)
		_, err = io.ReadFull(br, buf)
		require.NoError(t, err)
		chunks = append(chunks, string(buf[:n]))
		arrived = append(arrived, time.Now())
	}
	require.Equal(t, []string{strings.Join(first, ""), strings.Join(second, "")}, chunks)
	require.True(t, arrived[0].Before(<-secondSent), "the first events waited for the later ones")
	f.outcome(t)
}

func TestFailover(t *testing.T) {
	reset := time.Now().Add(time.Hour).Unix()
	ok := func(t *testing.T) *upstream { return newUpstream(t, sseHandler(fullStream, 0, nil)) }
	tests := []struct {
		name       string
		first      func(t *testing.T) string // base URL of the failing first account
		wantKinds  []string
		wantStatus int32
		check      func(t *testing.T, e *crsv1.AccountEvent)
	}{
		{"429 with reset", func(t *testing.T) string {
			return newUpstream(t, errorHandler(429, anthropicErr("rate_limit_error", "Rate limited"),
				"anthropic-ratelimit-unified-reset", fmt.Sprint(reset))).URL
		}, []string{"a:rate_limited", "b:success"}, 429, func(t *testing.T, e *crsv1.AccountEvent) {
			require.Equal(t, reset, e.GetUntil().AsTime().Unix())
			require.Equal(t, "sonnet", e.GetModelFamily())
			require.Equal(t, "Rate limited", e.GetReason())
		}},
		{"429 without reset", func(t *testing.T) string {
			return newUpstream(t, errorHandler(429, anthropicErr("rate_limit_error", "slow"))).URL
		}, []string{"a:rate_limited", "b:success"}, 429, func(t *testing.T, e *crsv1.AccountEvent) {
			require.Nil(t, e.GetUntil())
			require.Empty(t, e.GetModelFamily())
		}},
		{"529", func(t *testing.T) string {
			return newUpstream(t, errorHandler(529, anthropicErr("overloaded_error", "Overloaded"))).URL
		}, []string{"a:overloaded", "b:success"}, 529, nil},
		{"500", func(t *testing.T) string {
			return newUpstream(t, errorHandler(500, anthropicErr("api_error", "Internal server error"))).URL
		}, []string{"a:server_error", "b:success"}, 500, nil},
		{"401", func(t *testing.T) string {
			return newUpstream(t, errorHandler(401, anthropicErr("authentication_error", "invalid token"))).URL
		}, []string{"a:unauthorized", "b:success"}, 401, nil},
		{"403 banned", func(t *testing.T) string {
			return newUpstream(t, errorHandler(403, anthropicErr("permission_error", "This organization has been disabled."))).URL
		}, []string{"a:blocked", "b:success"}, 403, nil},
		{"connection refused", closedURL, []string{"a:server_error", "b:success"}, 0, func(t *testing.T, e *crsv1.AccountEvent) {
			require.Equal(t, "upstream connection refused", e.GetReason())
		}},
	}
	for _, tt := range tests {
		for _, stream := range []bool{true, false} {
			t.Run(fmt.Sprintf("%s/stream=%v", tt.name, stream), func(t *testing.T) {
				t.Parallel()
				good := ok(t)
				if !stream {
					good = newUpstream(t, errorHandler(200, `{"type":"message","model":"m","usage":{"input_tokens":1,"output_tokens":2}}`))
				}
				f := newFront(t, Options{}, official("a", tt.first(t)), official("b", good.URL), official("c", good.URL))
				body := unaryReq
				if stream {
					body = streamReq
				}
				resp := f.post(t, "/v1/messages", body)
				require.Equal(t, http.StatusOK, resp.StatusCode)
				got := readAll(t, resp.Body)
				if stream {
					require.Equal(t, strings.Join(fullStream, ""), got)
				}
				o := f.outcome(t)
				require.Equal(t, tt.wantKinds, eventKinds(o))
				require.Equal(t, 2, o.Attempts)
				require.Equal(t, "b", o.Account.GetId())
				require.Equal(t, tt.wantStatus, o.Events[0].GetUpstreamStatus())
				require.Equal(t, "req-1", o.Events[0].GetRequestId())
				require.NotNil(t, o.Events[0].GetObservedAt())
				if tt.check != nil {
					tt.check(t, o.Events[0])
				}
				require.Len(t, good.requests(), 1, "c is never tried")
			})
		}
	}
}

func TestAllAttemptsFail(t *testing.T) {
	t.Run("last upstream error passes through, bounded by MaxAttempts", func(t *testing.T) {
		a := newUpstream(t, errorHandler(529, anthropicErr("overloaded_error", "Overloaded")))
		b := newUpstream(t, errorHandler(500, anthropicErr("api_error", "boom"), "x-should-retry", "true",
			"content-encoding", "identity", "set-cookie", "cf=1"))
		c := newUpstream(t, errorHandler(200, `{}`))
		f := newFront(t, Options{MaxAttempts: 2}, official("a", a.URL), official("b", b.URL), official("c", c.URL))
		resp := f.post(t, "/v1/messages", unaryReq)
		require.Equal(t, 500, resp.StatusCode)
		require.Equal(t, anthropicErr("api_error", "boom"), readAll(t, resp.Body))
		require.Equal(t, "true", resp.Header.Get("X-Should-Retry"))
		require.Equal(t, "application/json", resp.Header.Get("Content-Type"))
		require.Empty(t, resp.Header.Get("Content-Encoding"))
		require.Empty(t, resp.Header.Get("Set-Cookie"))
		o := f.outcome(t)
		require.Equal(t, []string{"a:overloaded", "b:server_error"}, eventKinds(o))
		require.Equal(t, 500, o.Status)
		require.Nil(t, o.Usage)
		require.Empty(t, c.requests())
	})
	t.Run("stream: last upstream error becomes 200 with event: error", func(t *testing.T) {
		body := anthropicErr("overloaded_error", "Overloaded")
		a := newUpstream(t, errorHandler(529, body))
		f := newFront(t, Options{}, official("a", a.URL))
		resp := f.post(t, "/v1/messages", streamReq)
		require.Equal(t, 200, resp.StatusCode)
		require.Equal(t, "text/event-stream", resp.Header.Get("Content-Type"))
		got := readAll(t, resp.Body)
		require.True(t, strings.HasPrefix(got, "event: error\ndata: "), got)
		require.True(t, strings.HasSuffix(got, "\n\n"))
		var data struct {
			Error     string `json:"error"`
			Status    int    `json:"status"`
			Details   string `json:"details"`
			Timestamp string `json:"timestamp"`
		}
		require.NoError(t, json.Unmarshal([]byte(strings.TrimSuffix(strings.TrimPrefix(got, "event: error\ndata: "), "\n\n")), &data))
		require.Equal(t, "Claude API error", data.Error)
		require.Equal(t, 529, data.Status)
		require.Equal(t, body, data.Details)
		_, err := time.Parse(time.RFC3339, data.Timestamp)
		require.NoError(t, err)
		o := f.outcome(t)
		require.Equal(t, 200, o.Status)
		require.Equal(t, []string{"a:overloaded"}, eventKinds(o))
	})
	for _, stream := range []bool{false, true} {
		t.Run(fmt.Sprintf("no answer at all: 502 JSON/stream=%v", stream), func(t *testing.T) {
			f := newFront(t, Options{}, official("a", closedURL(t)), official("b", closedURL(t)))
			body := unaryReq
			if stream {
				body = streamReq
			}
			resp := f.post(t, "/v1/messages", body)
			require.Equal(t, 502, resp.StatusCode)
			var e struct{ Error, Message, Timestamp string }
			require.NoError(t, json.Unmarshal([]byte(readAll(t, resp.Body)), &e))
			require.Equal(t, "Upstream service unavailable", e.Error)
			require.NotEmpty(t, e.Message)
			require.NotEmpty(t, e.Timestamp)
			o := f.outcome(t)
			require.Equal(t, []string{"a:server_error", "b:server_error"}, eventKinds(o))
			require.Equal(t, 502, o.Status)
		})
	}
	t.Run("no candidates: 503", func(t *testing.T) {
		f := newFront(t, Options{}, &crsv1.Account{Id: "g", Type: "gemini"})
		resp := f.post(t, "/v1/messages", unaryReq)
		require.Equal(t, 503, resp.StatusCode)
		o := f.outcome(t)
		require.Zero(t, o.Attempts)
		require.Nil(t, o.Account)
	})
}

func TestTimeouts(t *testing.T) {
	t.Run("no headers within FirstByteTimeout: next candidate, then 504", func(t *testing.T) {
		slow := newUpstream(t, func(ctx *fasthttp.RequestCtx) {
			time.Sleep(700 * time.Millisecond)
			ctx.SetBodyString("{}")
		})
		f := newFront(t, Options{FirstByteTimeout: 200 * time.Millisecond}, official("a", slow.URL), official("b", slow.URL))
		start := time.Now()
		resp := f.post(t, "/v1/messages", unaryReq)
		require.Equal(t, 504, resp.StatusCode)
		require.Contains(t, readAll(t, resp.Body), `"error":"Upstream timeout"`)
		require.Less(t, time.Since(start), 650*time.Millisecond, "each attempt gives up after FirstByteTimeout, and is not retried")
		o := f.outcome(t)
		require.Equal(t, []string{"a:server_error", "b:server_error"}, eventKinds(o))
		require.Equal(t, "upstream timeout", o.Events[0].GetReason())
		require.Len(t, slow.requests(), 2)
	})
	t.Run("a stream may outlast FirstByteTimeout and IdleTimeout while events flow", func(t *testing.T) {
		events := []string{sseStart, sseDelta, sseDelta, sseDelta, sseEnd, sseMStop}
		up := newUpstream(t, sseHandler(events, 100*time.Millisecond, nil))
		f := newFront(t, Options{FirstByteTimeout: 250 * time.Millisecond, IdleTimeout: 250 * time.Millisecond}, official("a", up.URL))
		resp := f.post(t, "/v1/messages", streamReq)
		require.Equal(t, strings.Join(events, ""), readAll(t, resp.Body))
		require.Equal(t, int64(42), f.outcome(t).Usage.GetOutputTokens())
	})
	t.Run("stall after the first event: in-band error", func(t *testing.T) {
		release := make(chan struct{})
		up := newUpstream(t, func(ctx *fasthttp.RequestCtx) {
			ctx.SetContentType("text/event-stream")
			ctx.SetBodyStreamWriter(func(w *bufio.Writer) {
				_, _ = w.WriteString(sseStart)
				_ = w.Flush()
				<-release
			})
		})
		t.Cleanup(func() { close(release) }) // before the upstream's shutdown, which waits for the handler
		f := newFront(t, Options{IdleTimeout: 300 * time.Millisecond}, official("a", up.URL), official("b", up.URL))
		resp := f.post(t, "/v1/messages", streamReq)
		require.Equal(t, sseStart+interrupted, readAll(t, resp.Body))
		o := f.outcome(t)
		require.Equal(t, []string{"a:success"}, eventKinds(o), "no failover after the first byte")
		require.Equal(t, int64(21), o.Usage.GetInputTokens(), "usage seen before the stall is kept")
	})
}

const interrupted = "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"api_error\",\"message\":\"upstream stream interrupted\"}}\n\n"

func TestMidStreamDisconnect(t *testing.T) {
	cut := rawUpstream(t, func(c net.Conn) {
		w := bufio.NewWriter(c)
		fmt.Fprint(w, "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
		for _, ev := range []string{sseStart, sseDelta} {
			fmt.Fprintf(w, "%x\r\n%s\r\n", len(ev), ev)
		}
		// Half an event, then the connection drops without the terminating chunk.
		fmt.Fprintf(w, "%x\r\n%s\r\n", 20, sseEnd[:20])
		_ = w.Flush()
	})
	second := newUpstream(t, sseHandler(fullStream, 0, nil))
	f := newFront(t, Options{}, official("a", cut), official("b", second.URL))
	resp := f.post(t, "/v1/messages", streamReq)
	require.Equal(t, 200, resp.StatusCode)
	require.Equal(t, sseStart+sseDelta+interrupted, readAll(t, resp.Body), "the cut event is dropped, the error follows")
	o := f.outcome(t)
	require.Equal(t, []string{"a:success"}, eventKinds(o))
	require.Equal(t, 1, o.Attempts)
	require.Empty(t, second.requests(), "no failover after the first byte")
	require.Equal(t, int64(21), o.Usage.GetInputTokens())
	require.Equal(t, int64(1), o.Usage.GetOutputTokens())
}

func TestClientDisconnectCancelsUpstream(t *testing.T) {
	upstreamSawClose := make(chan time.Time, 1)
	up := newUpstream(t, func(ctx *fasthttp.RequestCtx) {
		ctx.SetContentType("text/event-stream")
		ctx.SetBodyStreamWriter(func(w *bufio.Writer) {
			_, _ = w.WriteString(sseStart)
			_ = w.Flush()
			for range 200 {
				time.Sleep(20 * time.Millisecond)
				_, _ = w.WriteString(sseDelta)
				if err := w.Flush(); err != nil {
					upstreamSawClose <- time.Now()
					return
				}
			}
		})
	})
	f := newFront(t, Options{}, official("a", up.URL))

	conn, err := net.Dial("tcp", strings.TrimPrefix(f.URL, "http://"))
	require.NoError(t, err)
	fmt.Fprintf(conn, "POST /v1/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(streamReq), streamReq)
	br := bufio.NewReader(conn)
	status, err := br.ReadString('\n')
	require.NoError(t, err)
	require.Equal(t, "HTTP/1.1 200 OK\r\n", status)
	// Read until the first event arrived, then leave.
	for {
		line, err := br.ReadString('\n')
		require.NoError(t, err)
		if strings.HasPrefix(line, "event: message_start") {
			break
		}
	}
	closedAt := time.Now()
	require.NoError(t, conn.Close())

	o := f.outcome(t)
	require.Equal(t, 200, o.Status)
	require.Equal(t, int64(21), o.Usage.GetInputTokens())
	select {
	case at := <-upstreamSawClose:
		require.Less(t, at.Sub(closedAt), 2*time.Second)
	case <-time.After(3 * time.Second):
		t.Fatal("upstream kept streaming after the client left")
	}
}

func TestClientErrorsPassThroughWithoutFailover(t *testing.T) {
	for _, status := range []int{400, 404, 413} {
		t.Run(fmt.Sprint(status), func(t *testing.T) {
			body := anthropicErr("invalid_request_error", "bad")
			a := newUpstream(t, errorHandler(status, body, "request-id", "req_x"))
			b := newUpstream(t, errorHandler(200, `{}`))
			f := newFront(t, Options{}, official("a", a.URL), official("b", b.URL))
			resp := f.post(t, "/v1/messages", unaryReq)
			require.Equal(t, status, resp.StatusCode)
			require.Equal(t, body, readAll(t, resp.Body))
			require.Equal(t, "req_x", resp.Header.Get("Request-Id"))
			o := f.outcome(t)
			require.Empty(t, o.Events, "a client error says nothing about the account")
			require.Equal(t, 1, o.Attempts)
			require.Empty(t, b.requests())
		})
	}
}

func TestUnaryUsageAndHeaders(t *testing.T) {
	msg := `{"id":"msg_1","type":"message","role":"assistant","model":"claude-sonnet-4-5-20250929","content":[{"type":"text","text":"hi"}],"stop_reason":"end_turn","usage":{"input_tokens":11,"cache_creation_input_tokens":5,"cache_read_input_tokens":3,"output_tokens":9}}`
	up := newUpstream(t, errorHandler(200, msg, "request-id", "req_u", "anthropic-ratelimit-unified-status", "allowed"))
	f := newFront(t, Options{}, official("a", up.URL))
	resp := f.post(t, "/v1/messages", unaryReq)
	require.Equal(t, 200, resp.StatusCode)
	require.Equal(t, msg, readAll(t, resp.Body))
	require.Equal(t, "req_u", resp.Header.Get("Request-Id"))
	require.Equal(t, "application/json", resp.Header.Get("Content-Type"))
	o := f.outcome(t)
	require.Equal(t, []string{"a:success"}, eventKinds(o))
	u := o.Usage
	require.NotNil(t, u)
	require.False(t, u.Stream)
	require.Equal(t, int64(11), u.InputTokens)
	require.Equal(t, int64(9), u.OutputTokens)
	require.Equal(t, int64(5), u.CacheCreation_5MTokens)
	require.Equal(t, int64(3), u.CacheReadTokens)
	require.Equal(t, "claude-sonnet-4-5-20250929", u.Model)

	t.Run("count_tokens has no usage record", func(t *testing.T) {
		resp := f.post(t, "/v1/messages/count_tokens", unaryReq)
		require.Equal(t, 200, resp.StatusCode)
		o := f.outcome(t)
		require.Nil(t, o.Usage)
		reqs := up.requests()
		require.Equal(t, "/v1/messages/count_tokens", reqs[len(reqs)-1].URI)
	})
}

func TestUpstreamHeaders(t *testing.T) {
	up := newUpstream(t, errorHandler(200, `{}`))
	f := newFront(t, Options{},
		official("o", up.URL),
	)
	f.post(t, "/v1/messages?beta=true", unaryReq, "anthropic-beta", "files-api-2025-04-14,oauth-2025-04-20",
		"user-agent", "claude-cli/2.1.0 (external, cli)", "x-stainless-os", "Linux", "x-forwarded-for", "1.2.3.4")
	f.outcome(t)
	fc := newFront(t, Options{}, console("k", up.URL+"/api/", "sk-ant-api03-up", nil))
	fc.post(t, "/v1/messages", unaryReq)
	fc.outcome(t)
	fb := newFront(t, Options{}, console("b", up.URL, "cr_other_relay", nil))
	fb.post(t, "/v1/messages", unaryReq)
	fb.outcome(t)

	reqs := up.requests()
	require.Len(t, reqs, 3)
	for _, r := range reqs {
		for k, v := range r.Header {
			require.NotContains(t, v, "cr_client_secret", "client credential leaked in %s", k)
		}
		require.Empty(t, r.Header["cookie"])
		require.Empty(t, r.Header["x-forwarded-for"])
		require.Equal(t, "identity", r.Header["accept-encoding"])
	}
	o := reqs[0]
	require.Equal(t, "Bearer tok-o", o.Header["authorization"])
	require.Empty(t, o.Header["x-api-key"])
	require.Equal(t, betasFor("claude-sonnet-4-5")+",files-api-2025-04-14", o.Header["anthropic-beta"])
	require.Equal(t, "claude-cli/2.1.0 (external, cli)", o.Header["user-agent"])
	require.Equal(t, "Linux", o.Header["x-stainless-os"])
	require.Equal(t, "/v1/messages?beta=true", o.URI)

	k := reqs[1]
	require.Equal(t, "sk-ant-api03-up", k.Header["x-api-key"])
	require.Empty(t, k.Header["authorization"])
	require.Equal(t, "/api/v1/messages", k.URI)

	b := reqs[2]
	require.Equal(t, "Bearer cr_other_relay", b.Header["authorization"])
	require.Empty(t, b.Header["x-api-key"])
}

func betasFor(string) string {
	return "claude-code-20250219,oauth-2025-04-20,interleaved-thinking-2025-05-14,fine-grained-tool-streaming-2025-05-14"
}

func TestModelMappingOnlyTouchesTheCopy(t *testing.T) {
	failing := newUpstream(t, errorHandler(529, anthropicErr("overloaded_error", "Overloaded")))
	good := newUpstream(t, sseHandler(fullStream, 0, nil))
	f := newFront(t, Options{},
		console("mapped", failing.URL, "k1", map[string]string{"CLAUDE-SONNET-4-5": "glm-4.6"}),
		official("plain", good.URL))
	resp := f.post(t, "/v1/messages", streamReq)
	require.Equal(t, strings.Join(fullStream, ""), readAll(t, resp.Body))

	mapped := failing.requests()
	require.Len(t, mapped, 1)
	require.Equal(t, strings.Replace(streamReq, `"claude-sonnet-4-5"`, `"glm-4.6"`, 1), string(mapped[0].Body))
	plain := good.requests()
	require.Len(t, plain, 1)
	require.Equal(t, streamReq, string(plain[0].Body), "the failover attempt sends the client's body as it came")
	o := f.outcome(t)
	require.Equal(t, []string{"mapped:overloaded", "plain:success"}, eventKinds(o))
}

// Upstreams are asked for identity encoding; one that compresses anyway is decoded, since
// Content-Encoding is not passed on and the body is read for usage.
func TestCompressedUpstreamBodyIsDecoded(t *testing.T) {
	msg := `{"type":"message","model":"claude-opus-4-1","usage":{"input_tokens":3,"output_tokens":4}}`
	up := newUpstream(t, func(ctx *fasthttp.RequestCtx) {
		ctx.SetContentType("application/json")
		ctx.Response.Header.Set("Content-Encoding", "gzip")
		ctx.SetBody(fasthttp.AppendGzipBytes(nil, []byte(msg)))
	})
	f := newFront(t, Options{}, official("a", up.URL))
	req, err := http.NewRequest(http.MethodPost, f.URL+"/v1/messages", strings.NewReader(unaryReq))
	require.NoError(t, err)
	req.Header.Set("Accept-Encoding", "identity") // keep net/http from decoding on its own
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Empty(t, resp.Header.Get("Content-Encoding"))
	require.Equal(t, msg, readAll(t, resp.Body))
	require.Equal(t, int64(4), f.outcome(t).Usage.GetOutputTokens())
	require.Equal(t, "identity", up.requests()[0].Header["accept-encoding"])
}

func TestConsoleWithoutCountTokensAnswersZero(t *testing.T) {
	up := newUpstream(t, errorHandler(404, `{"error":"not found"}`))
	f := newFront(t, Options{}, console("k", up.URL, "key", nil))
	resp := f.post(t, "/v1/messages/count_tokens", unaryReq)
	require.Equal(t, 200, resp.StatusCode)
	require.JSONEq(t, `{"input_tokens":0}`, readAll(t, resp.Body))
	o := f.outcome(t)
	require.Equal(t, 200, o.Status)
	require.Nil(t, o.Usage)
	require.Empty(t, o.Events)

	t.Run("a 404 on messages passes through", func(t *testing.T) {
		resp := f.post(t, "/v1/messages", unaryReq)
		require.Equal(t, 404, resp.StatusCode)
		f.outcome(t)
	})
}
