// Package relay forwards one client request to upstream accounts: it tries candidates in the order
// the scheduler gave until one answers (failover ends at the first byte sent to the client), passes
// the answer through (SSE event by event, flushed), reads usage on the fly, and classifies upstream
// failures into account events. It knows nothing of keys, limits or the control plane; the worker
// gives it a Request and candidates and gets back an Outcome to report.
//
// Platform specifics (auth headers, base URLs, usage fields, error classification) live in one
// package per platform under relay/ (relay/claude) behind the small [platform.Upstream] interface.
// The hot path: serve.go (attempt loop), transport.go (upstream clients and timeouts), stream.go
// (SSE pass-through), respond.go (buffered answers and header filtering); proxy.go dials through
// per-account proxies (SOCKS5, HTTP CONNECT).
package relay

import (
	"time"

	"github.com/crsrelay/crs/dataplane/relay/platform"
	crsv1 "github.com/crsrelay/crs/gen/crs/v1"
)

// Request is what the worker hands to the relay. It is created per request and is not thread-safe.
// Its strings may be used after the handler returns (stream bodies are written later); Body and
// Query alias the client's request and are read only while Serve runs. Its fields are documented
// at [platform.Request]; it is defined there so that the platform packages (relay/claude) can read
// it without importing this package.
type Request = platform.Request

// Header is one HTTP header.
type Header = platform.Header

// Refresher renews an OAuth account's credential after a 401, for one retry of the account
// (Request.Refresh); documented at [platform.Refresher].
type Refresher = platform.Refresher

// Ops.
const (
	OpMessages    = platform.OpMessages
	OpCountTokens = platform.OpCountTokens
)

// Outcome is what happened, for the worker to report. Usage is nil when upstream reported none.
type Outcome struct {
	// Account that served the request (the last one tried), nil if none was tried.
	Account *crsv1.Account
	// Status sent to the client.
	Status int
	// Usage read from the response (SSE message_start/message_delta or JSON body).
	Usage *crsv1.UsageRecord
	// Events are account events observed on each attempt (429, 529, 401, ...) and a success event,
	// except a 401 handed to Request.Refresh (which reports it).
	Events []*crsv1.AccountEvent
	// Attempts made.
	Attempts int
	// FirstByte is the time to the first byte sent to the client (zero if none).
	FirstByte time.Duration
}

// Candidates yields upstream accounts in the order to try them. Next returns nil when there are
// no more. It is called from the request's goroutine only.
type Candidates interface {
	Next() *crsv1.Account
}
