// Package platform is the contract between the relay's attempt loop (package relay) and the
// per-platform packages under relay/ (relay/claude, later relay/gemini, relay/openai): the client
// request they build upstream requests from, the Upstream interface they implement, and the verdicts
// and usage they hand back. It holds types only, so that relay can import the platform packages and
// they can import this one without a cycle. It must not depend on the worker, keys or the control
// plane.
package platform

import (
	"time"

	crsv1 "github.com/crsrelay/crs/gen/crs/v1"
	"github.com/valyala/fasthttp"
)

// Request is what the worker hands to the relay (package relay names it relay.Request). It is
// created per request and is not thread-safe. Its strings are owned by the Request, so they may be
// used after the handler returns (stream bodies are written later, after the handler has
// returned). Body and Query are not: they alias the client's request, and are read only while the
// relay tries accounts (Relay.Serve, Upstream.Build), never once Serve has returned; the worker
// clears them then. Copying a body of tens of kilobytes per request is what this spares.
type Request struct {
	// RequestID is unique per client request; it becomes the usage record's id.
	RequestID string
	// KeyID of the authenticated key.
	KeyID string
	// Endpoint is the client path (e.g. /api/v1/messages), for usage records.
	Endpoint string
	// Op is what is asked: OpMessages or OpCountTokens.
	Op string
	// Body is the client's JSON body, valid until Serve returns. It is never mutated (a failover
	// attempt reuses it); an upstream that rewrites it (model mapping) works on a copy.
	Body []byte
	// Query is the raw query string (e.g. "beta=true"), forwarded as is; valid until Serve returns.
	Query []byte
	// Model and Stream as read from Body.
	Model  string
	Stream bool
	// Headers are the client's headers that passed the allow-list (lowercase names), in order.
	// Upstreams enforce their own allow-list again.
	Headers []Header
	// Started is when the worker received the request.
	Started time.Time
	// Refresh, when set, renews an OAuth account's credential after upstream refused it (401) before
	// anything reached the client, so that the relay can retry the account once. Nil: a 401 fails
	// over at once.
	Refresh Refresher
}

// Refresher renews the credential of an account that upstream refused (see Request.Refresh).
type Refresher interface {
	// Refreshed is told that acct answered 401; ev is that "unauthorized" event, which the relay
	// leaves out of its outcome's events: Refreshed reports it at once (the control plane refreshes
	// the credential on it). It then waits, for a bounded time, for acct with a newer credential
	// than the one it was tried with, and returns it; nil when none came in time. It is called from
	// the request's goroutine, at most once per account per request.
	Refreshed(acct *crsv1.Account, ev *crsv1.AccountEvent) *crsv1.Account
}

// Header is one HTTP header.
type Header struct{ Name, Value string }

// Ops.
const (
	OpMessages    = "messages"
	OpCountTokens = "count_tokens"
)

// Upstream is one kind of upstream account (claude-official, claude-console, ...): how to build the
// request for it and how to read its answer. Implementations keep no per-request state and are
// safe for concurrent use; per-request state lives in what NewUsage returns.
type Upstream interface {
	// Build writes the upstream request for acct into out (method, URI, headers, body) and returns
	// the model it asks upstream for (after model mapping). It must not modify req; out.Body may
	// alias req.Body (fasthttp.Request.SetBodyRaw), which is never written to.
	Build(acct *crsv1.Account, req *Request, out *fasthttp.Request) (model string, err error)
	// Classify judges an upstream answer that is not 2xx. body is the (possibly truncated) error
	// body; model is what Build returned.
	Classify(status int, h *fasthttp.ResponseHeader, body []byte, model string) Verdict
	// NewUsage returns a reader of usage for one response.
	NewUsage() UsageReader
}

// Fallback is an optional ability of an Upstream: a local answer that replaces an upstream error
// meaning "not supported here". The relay checks for it with a type assertion after Classify, for
// errors that do not fail over.
type Fallback interface {
	// Fallback returns the JSON body of a 200 answer to send instead of the upstream's status
	// error, or ok=false to pass the error through.
	Fallback(req *Request, status int) (body []byte, ok bool)
}

// BodyUsage is an optional ability of an Upstream: reading the usage of a whole non-stream body
// without a per-response UsageReader. The relay checks for it with a type assertion; it must
// read what NewUsage's Body and Usage would.
type BodyUsage interface {
	// BodyUsage returns the usage a non-stream JSON body reports; ok is false if it reports none.
	// model is what Build returned: a reported model equal to it is returned as that very string,
	// so that the common answer costs no allocation.
	BodyUsage(body []byte, model string) (u Usage, ok bool)
}

// Verdict is what an upstream's error answer means for failover and for the account.
type Verdict struct {
	// Failover is true when the next candidate should be tried (the account failed, not the request);
	// false passes the answer to the client as it is.
	Failover bool
	// Kind is the account event kind (rate_limited, overloaded, unauthorized, forbidden, blocked,
	// server_error); empty for none.
	Kind string
	// Until is when the condition ends, from upstream headers; zero = the control plane's default.
	Until time.Time
	// Family is the model family a rate limit applies to (opus, sonnet, haiku, fable), when known.
	Family string
	// Reason is the upstream error message, trimmed and with anything secret-looking redacted.
	Reason string
}

// Account event kinds (crsv1.AccountEvent.kind).
const (
	EventRateLimited  = "rate_limited"
	EventOverloaded   = "overloaded"
	EventUnauthorized = "unauthorized"
	EventForbidden    = "forbidden"
	EventBlocked      = "blocked"
	EventServerError  = "server_error"
	EventSuccess      = "success"
)

// Usage is the token usage of one response.
type Usage struct {
	// Model is the model upstream reported; empty if it did not.
	Model                 string
	InputTokens           int64
	OutputTokens          int64
	CacheCreation5mTokens int64
	CacheCreation1hTokens int64
	CacheReadTokens       int64
	// Speed is "fast" when upstream reported fast mode.
	Speed string
}

// UsageReader reads usage from one response while it passes. It is created per response and is not
// thread-safe.
type UsageReader interface {
	// Event observes one SSE event of a stream (whole, as the sse.Splitter returns it).
	Event(ev []byte)
	// Body observes a whole non-stream JSON body.
	Body(body []byte)
	// Usage returns what was seen; ok is false if the response reported no usage.
	Usage() (u Usage, ok bool)
}
