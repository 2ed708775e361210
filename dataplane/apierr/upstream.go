package apierr

import (
	"time"

	"github.com/crsrelay/crs/dataplane/sse"
	"github.com/valyala/fasthttp"
)

// Failures before any upstream answered, when every attempt failed to connect or timed out
// (reference §1.3 step 13). Their messages are fixed phrases, never the Go error: a dial error may
// name a proxy with credentials.
var (
	// UpstreamUnavailable is a refused or failed connection.
	UpstreamUnavailable = New(fasthttp.StatusBadGateway, ShapeFlatTimestamp, "Upstream service unavailable", "Could not connect to the upstream service")
	// UpstreamConnection is a connection reset or closed by the upstream before it answered.
	UpstreamConnection = New(fasthttp.StatusBadGateway, ShapeFlatTimestamp, "Upstream connection error", "The upstream connection was closed before a response")
	// UpstreamDNS is a failed name resolution.
	UpstreamDNS = New(fasthttp.StatusBadGateway, ShapeFlatTimestamp, "Upstream hostname resolution failed", "Could not resolve the upstream host")
	// UpstreamTimeout is no response headers within the first-byte timeout.
	UpstreamTimeout = New(fasthttp.StatusGatewayTimeout, ShapeFlatTimestamp, "Upstream timeout", "The upstream service did not respond in time")
	// UpstreamTooLarge is an upstream answer over the relay's size limit.
	UpstreamTooLarge = New(fasthttp.StatusBadGateway, ShapeFlatTimestamp, "Upstream response too large", "The upstream response exceeded the size limit")
	// NoAccount is an empty candidate list: no upstream account may serve the request.
	NoAccount = New(fasthttp.StatusServiceUnavailable, ShapeFlatTimestamp, "Service unavailable", "No available upstream account for this request")
	// RelayFailure is any other failure of the relay itself.
	RelayFailure = internal
)

// StreamInterrupted is the in-band error sent when the upstream stream breaks or stalls after the
// response has started: headers and some events are out, so failover is over and the client learns
// of the failure the way Anthropic reports one mid-stream.
var StreamInterrupted = Anthropic(fasthttp.StatusBadGateway, "api_error", "upstream stream interrupted")

// AppendEvent appends e as an in-band SSE event, "event: error\ndata: <e's JSON>\n\n". Streams carry
// Anthropic-shaped errors, so callers normally pass a ShapeAnthropic error.
func AppendEvent(dst []byte, e *Error, now time.Time) []byte {
	return sse.AppendEvent(dst, "error", e.AppendJSON(nil, now))
}

// AppendStreamUpstreamError appends the event a stream request gets when its upstream answered
// with an HTTP error (reference §1.3.2): the client sees HTTP 200 text/event-stream and
// event: error with data {"error":"Claude API error","status":<status>,"details":"<raw upstream
// body>","timestamp":"..."}. The body is passed as a JSON string, whatever it holds.
func AppendStreamUpstreamError(dst []byte, status int, details []byte, now time.Time) []byte {
	data := []byte(`{"error":"Claude API error","status":`)
	data = appendValue(data, status)
	data = append(data, `,"details":`...)
	data = AppendString(data, string(details))
	data = append(data, `,"timestamp":`...)
	data = appendTimestamp(data, now)
	data = append(data, '}')
	return sse.AppendEvent(dst, "error", data)
}
