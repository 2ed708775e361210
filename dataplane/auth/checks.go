package auth

import (
	"time"

	"github.com/crsrelay/crs/dataplane/snapshot"
	crsv1 "github.com/crsrelay/crs/gen/crs/v1"
)

// Input is what a policy check sees of one request. It is built per request by the worker after
// Authenticate succeeded and must not be retained after the handler returns (Path and UserAgent
// alias the request).
type Input struct {
	// Key is the authenticated key.
	Key *crsv1.ApiKey
	// State is the snapshot the key was found in.
	State *snapshot.State
	// Path is the client path, e.g. /api/v1/messages.
	Path []byte
	// UserAgent is the client's User-Agent header.
	UserAgent []byte
	// Model is the requested model, when the route has one.
	Model string
	// CountTokens is set for count_tokens routes, which skip client restrictions and concurrency
	// limits (reference §2.3, isTokenCountRequest).
	CountTokens bool
	// Now is the request's clock reading.
	Now time.Time
}

// Check is one policy step. It returns nil to let the request through, or an error the worker
// renders for the client (a *Rejection, or another error type the worker knows).
type Check func(in *Input) error

// Checks is an ordered list of policy steps; the first refusal wins.
type Checks []Check

// Run runs the checks in order and returns the first refusal.
func (cs Checks) Run(in *Input) error {
	for _, c := range cs {
		if err := c(in); err != nil {
			return err
		}
	}
	return nil
}

// PolicyChecks returns the policy steps that follow Authenticate, in the reference's order.
//
// NEXT ISSUE (policy): add here, in this order, reference §2.3 steps 4-10:
//  4. client restriction (allowed_clients; skipped when CountTokens) -> 403 "Client not allowed"
//  5. Claude-Code-only (settings.claude_code_only_enabled or allowed_clients == [claude_code])
//  6. per-key concurrency (concurrency_limit > 0; skipped when CountTokens) -> Admit lease
//  7. fixed rate-limit window (requests / tokens / cost) -> 429
//  8. daily cost >= daily_cost_limit -> 402 (KeyUsageState.daily_cost)
//  9. total cost >= total_cost_limit -> 402 (KeyUsageState.total_cost)
//  10. weekly Claude-family cost >= weekly_opus_cost_limit -> 402 (KeyUsageState.weekly_opus_cost)
//
// Checks that take a lease (concurrency) also need a release when the request ends; that is a
// change to this signature the next issue makes.
func PolicyChecks() Checks {
	return nil
}
