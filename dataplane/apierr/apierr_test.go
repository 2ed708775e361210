package apierr

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/valyala/fasthttp"
)

var now = time.Date(2026, 11, 26, 13, 4, 5, 678_000_000, time.FixedZone("CST", 8*3600))

func TestShapes(t *testing.T) {
	tests := []struct {
		name string
		err  *Error
		want string
	}{
		{"flat", Flat(401, "Missing API key", "Please provide an API key"),
			`{"error":"Missing API key","message":"Please provide an API key"}`},
		{"flat with timestamp", UpstreamTimeout,
			`{"error":"Upstream timeout","message":"The upstream service did not respond in time","timestamp":"2026-11-26T05:04:05.678Z"}`},
		{"nested", Nested(403, "permission_error", "此 API Key 无权访问 Claude 服务"),
			`{"error":{"type":"permission_error","message":"此 API Key 无权访问 Claude 服务"}}`},
		{"nested with code and fields", func() *Error {
			e := Nested(402, "insufficient_quota", "已达到每日费用限制 ($5)")
			e.InnerCode = "daily_cost_limit_exceeded"
			return e.WithFields(Field{"currentCost", 5.5}, Field{"costLimit", 5}, Field{"resetAt", now})
		}(), `{"error":{"type":"insufficient_quota","message":"已达到每日费用限制 ($5)","code":"daily_cost_limit_exceeded"},"currentCost":5.5,"costLimit":5,"resetAt":"2026-11-26T05:04:05.678Z"}`},
		{"anthropic", StreamInterrupted,
			`{"type":"error","error":{"type":"api_error","message":"upstream stream interrupted"}}`},
		{"openai", OpenAI(400, "invalid_request_error", "invalid_request", "Messages array is required"),
			`{"error":{"message":"Messages array is required","type":"invalid_request_error","code":"invalid_request"}}`},
		{"openai without code", OpenAI(500, "server_error", "", "x"),
			`{"error":{"message":"x","type":"server_error","code":null}}`},
		{"extra fields of any type", Flat(403, "Client not allowed", "no").WithFields(
			Field{"allowedClients", []string{"claude_code"}}, Field{"userAgent", "curl/8"}, Field{"ok", false}, Field{"n", nil}),
			`{"error":"Client not allowed","message":"no","allowedClients":["claude_code"],"userAgent":"curl/8","ok":false,"n":null}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := tt.err.AppendJSON(nil, now)
			require.JSONEq(t, tt.want, string(got))
			require.Equal(t, tt.want, string(got), "member order is part of the shape")
		})
	}
}

func TestWithCopies(t *testing.T) {
	base := Flat(429, "Rate limit exceeded", "slow down")
	a := base.WithHeader("Retry-After", "1").WithFields(Field{"n", 1})
	require.Empty(t, base.Headers, "templates are not modified")
	require.Empty(t, base.Fields)
	require.Len(t, a.Headers, 1)
	cause := errors.New("redis down")
	c := base.WithCause(cause)
	require.ErrorIs(t, c, cause)
	require.Nil(t, base.Cause)
	require.Contains(t, c.Error(), "redis down")
}

func TestWrite(t *testing.T) {
	tests := []struct {
		name       string
		err        error
		wantStatus int
		wantBody   string
		wantHeader [2]string
	}{
		{"an Error", Flat(429, "Concurrency limit exceeded", "Too many").WithHeader("Retry-After", "1"),
			429, `{"error":"Concurrency limit exceeded","message":"Too many"}`, [2]string{"Retry-After", "1"}},
		{"a wrapped Error", fmt.Errorf("auth: %w", Flat(401, "Invalid API key", "API key not found")),
			401, `{"error":"Invalid API key","message":"API key not found"}`, [2]string{}},
		{"any other error is a generic 500 without its text", errors.New("secret detail"),
			500, `"error":"Relay service error","message":"Internal server error"`, [2]string{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var ctx fasthttp.RequestCtx
			ctx.SetBodyString("previous")
			Write(&ctx, tt.err)
			require.Equal(t, tt.wantStatus, ctx.Response.StatusCode())
			require.Equal(t, "application/json; charset=utf-8", string(ctx.Response.Header.ContentType()))
			require.Contains(t, string(ctx.Response.Body()), tt.wantBody)
			require.NotContains(t, string(ctx.Response.Body()), "secret")
			require.True(t, json.Valid(ctx.Response.Body()))
			if tt.wantHeader[0] != "" {
				require.Equal(t, tt.wantHeader[1], string(ctx.Response.Header.Peek(tt.wantHeader[0])))
			}
		})
	}
}

func TestStreamEvents(t *testing.T) {
	t.Run("upstream HTTP error", func(t *testing.T) {
		body := []byte(`{"type":"error","error":{"type":"invalid_request_error","message":"bad"}}`)
		got := string(AppendStreamUpstreamError(nil, 400, body, now))
		require.Equal(t, "event: error\ndata: {\"error\":\"Claude API error\",\"status\":400,\"details\":"+
			`"{\"type\":\"error\",\"error\":{\"type\":\"invalid_request_error\",\"message\":\"bad\"}}"`+
			",\"timestamp\":\"2026-11-26T05:04:05.678Z\"}\n\n", got)
		data := strings.TrimSuffix(strings.TrimPrefix(got, "event: error\ndata: "), "\n\n")
		var v struct {
			Error   string `json:"error"`
			Status  int    `json:"status"`
			Details string `json:"details"`
		}
		require.NoError(t, json.Unmarshal([]byte(data), &v))
		require.Equal(t, string(body), v.Details)
		require.Equal(t, 400, v.Status)
	})
	t.Run("interrupted", func(t *testing.T) {
		require.Equal(t, "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"api_error\",\"message\":\"upstream stream interrupted\"}}\n\n",
			string(AppendEvent(nil, StreamInterrupted, now)))
	})
}

func TestAppendString(t *testing.T) {
	tests := []struct{ in, want string }{
		{"plain", `"plain"`},
		{"<a&b>", `"<a&b>"`},
		{"q\"b\\", `"q\"b\\"`},
		{"\n\r\t\b\f\x01\x1f", `"\n\r\t\b\f\u0001\u001f"`},
		{"中文", `"中文"`},
		{"bad\xffutf8", "\"bad\ufffdutf8\""},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			require.Equal(t, tt.want, string(AppendString(nil, tt.in)))
		})
	}
}

func FuzzAppendString(f *testing.F) {
	f.Add("hello")
	f.Add("\x00\xff\"\\\u2028")
	f.Fuzz(func(t *testing.T, s string) {
		b := AppendString(nil, s)
		require.True(t, json.Valid(b), "%q", b)
		var back string
		require.NoError(t, json.Unmarshal(b, &back))
		require.Equal(t, string([]rune(s)), back, "each invalid byte becomes U+FFFD")
	})
}
