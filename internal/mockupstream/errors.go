package mockupstream

import (
	"strconv"

	"github.com/valyala/fasthttp"
)

// StatusOverloaded is Anthropic's non-standard "overloaded" status.
const StatusOverloaded = 529

// BanMessage is the message of the 403 the real API answers for a banned OAuth organisation; the
// relay classifies an account that gets it as blocked (reference §4.4).
const BanMessage = "OAuth authentication is currently not allowed for this organization."

// errorKind returns the error.type and default message the real API uses for status, from
// https://docs.anthropic.com/en/api/errors.
func errorKind(status int) (typ, msg string) {
	switch status {
	case fasthttp.StatusBadRequest:
		return "invalid_request_error", "Invalid request"
	case fasthttp.StatusUnauthorized:
		return "authentication_error", "invalid x-api-key"
	case fasthttp.StatusPaymentRequired:
		return "billing_error", "Your credit balance is too low to access the Anthropic API."
	case fasthttp.StatusForbidden:
		return "permission_error", "Your API key does not have permission to use the specified resource."
	case fasthttp.StatusNotFound:
		return "not_found_error", "Not found"
	case fasthttp.StatusRequestEntityTooLarge:
		return "request_too_large", "Request exceeds the maximum allowed number of bytes."
	case fasthttp.StatusTooManyRequests:
		return "rate_limit_error", "This request would exceed your account's rate limit. Please try again later."
	case fasthttp.StatusGatewayTimeout:
		return "timeout_error", "Request timed out"
	case StatusOverloaded:
		return "overloaded_error", "Overloaded"
	}
	if status >= 500 {
		return "api_error", "Internal server error"
	}
	return "invalid_request_error", "Invalid request"
}

// shouldRetry is the value of the x-should-retry header the real API sends with an error status.
func shouldRetry(status int) bool {
	return status == fasthttp.StatusRequestTimeout || status == fasthttp.StatusConflict ||
		status == fasthttp.StatusTooManyRequests || status >= 500
}

// appendErrorBody appends the real API's error envelope.
func appendErrorBody(dst []byte, typ, msg string, reqID []byte) []byte {
	dst = append(dst, `{"type":"error","error":{"type":`...)
	dst = appendJSONString(dst, typ)
	dst = append(dst, `,"message":`...)
	dst = appendJSONString(dst, msg)
	dst = append(dst, `},"request_id":"`...)
	dst = append(dst, reqID...)
	return append(dst, `"}`...)
}

// writeError answers with status and the default envelope for it, message overriding the default
// when not empty.
func writeError(ctx *fasthttp.RequestCtx, status int, msg string, reqID []byte) {
	typ, def := errorKind(status)
	if msg == "" {
		msg = def
	}
	setErrorHeaders(ctx, status)
	ctx.Response.SetBodyRaw(appendErrorBody(nil, typ, msg, reqID))
}

func setErrorHeaders(ctx *fasthttp.RequestCtx, status int) {
	ctx.SetStatusCode(status)
	ctx.SetContentType("application/json")
	ctx.Response.Header.Set("x-should-retry", strconv.FormatBool(shouldRetry(status)))
}
