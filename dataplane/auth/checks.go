package auth

import (
	"time"

	"github.com/valyala/fasthttp"

	"github.com/crsrelay/crs/dataplane/snapshot"
	crsv1 "github.com/crsrelay/crs/gen/crs/v1"
	"github.com/crsrelay/crs/internal/period"
)

// Input is what a policy check sees of one request. It is built per request by the worker after
// Authenticate succeeded and must not be retained after the handler returns (Path, UserAgent,
// Header and Body alias the request).
type Input struct {
	// Key is the authenticated key.
	Key *crsv1.ApiKey
	// State is the snapshot the key was found in.
	State *snapshot.State
	// Path is the client path, e.g. /api/v1/messages.
	Path []byte
	// UserAgent is the client's User-Agent header.
	UserAgent []byte
	// Header is the request's header, for the client validators' required headers; nil = none.
	Header *fasthttp.RequestHeader
	// Body is the raw request body, read only when a check needs a field of it (metadata.user_id
	// for claude_code, the model for the weekly Claude cost cap).
	Body []byte
	// Model is the requested model when the caller parsed it already; "" = read it from Body
	// when needed.
	Model string
	// CountTokens is set for count_tokens routes, which skip client restrictions and concurrency
	// limits (reference §2.3, isTokenCountRequest).
	CountTokens bool
	// Now is the request's clock reading; days, weeks and windows are judged at this instant.
	Now time.Time
}

// PolicyOptions configure a Policy.
type PolicyOptions struct {
	// TZOffsetHours is the fixed UTC offset of days and weeks (config usage.timezone_offset_hours,
	// the same value the control plane labels KeyUsageState.day and .week with).
	TZOffsetHours int
	// Clients define the allowed_clients ids; nil = DefaultClients(). An id a key lists that is
	// not defined here never matches (as in the reference, which skips unknown ids).
	Clients []ClientSpec
}

// Policy runs the policy steps of reference §2.3 that follow Authenticate and need nothing but
// the snapshot, in the reference's order:
//
//  4. client restriction (allowed_clients; skipped for count_tokens) -> 403 "Client not allowed"
//  5. Claude-Code-only (settings.claude_code_only_enabled or allowed_clients == [claude_code],
//     /api and /claude Messages paths; skipped for count_tokens) -> 403 client_validation_error
//  7. the fixed window as last pushed (requests, then tokens or cost) -> 429 "Rate limit exceeded"
//  8. daily cost >= daily_cost_limit -> 402 daily_cost_limit_exceeded
//  9. total cost >= total_cost_limit -> 402 total_cost_limit_exceeded
//  10. weekly Claude-family cost >= weekly_opus_cost_limit -> 402 weekly_opus_cost_limit_exceeded
//
// Step 6 (concurrency) and the authoritative count of step 7's requests take a round trip to the
// control plane (FleetService.Admit); the worker runs them after these, so a request refused here
// takes no slot and is not counted in the window. Step 7 here only refuses what the pushed state
// already shows to be over: counts only grow within a window, so a pushed count at or over its
// limit is over at every worker.
//
// A Policy is immutable and safe for concurrent use.
type Policy struct {
	tz      *time.Location
	clients map[string]*clientRule
	// claudeCode is the rule of step 5 (the claude_code entry of the client table).
	claudeCode *clientRule
}

// NewPolicy returns a Policy. It panics on a ClientSpec whose pattern does not compile: client
// specs are program data (DefaultClients), validated by tests and, once configurable, by config
// validation (see CompileClients).
func NewPolicy(o PolicyOptions) *Policy {
	specs := o.Clients
	if specs == nil {
		specs = DefaultClients()
	}
	rules, err := CompileClients(specs)
	if err != nil {
		panic(err)
	}
	p := &Policy{tz: period.Zone(o.TZOffsetHours), clients: rules}
	p.claudeCode = rules[ClientClaudeCode]
	return p
}

// Applies reports whether Check can refuse anything for this key under these settings. The
// worker calls Check only when it does, so keys without restrictions or limits cost one call of
// this, which does not allocate.
func (p *Policy) Applies(k *crsv1.ApiKey, st *snapshot.State) bool {
	return clientRestricted(k) ||
		st.Settings().GetClaudeCodeOnlyEnabled() ||
		SpendLimited(k)
}

// SpendLimited reports whether k has a limit that its usage settles (window tokens or cost, daily,
// total or weekly cost): such keys' usage is reported at once rather than batched.
func SpendLimited(k *crsv1.ApiKey) bool {
	return hasWindowLimit(k) || k.GetDailyCostLimit() > 0 || k.GetTotalCostLimit() > 0 || k.GetWeeklyOpusCostLimit() > 0
}

// Check runs the steps listed at Policy on one request and returns the first refusal: an
// *apierr.Error carrying the reference's status, headers and JSON body, with one of this
// package's sentinel errors as its cause. nil lets the request through.
func (p *Policy) Check(in *Input) error {
	if !in.CountTokens {
		if err := p.checkClients(in); err != nil {
			return err
		}
		if err := p.checkClaudeCodeOnly(in); err != nil {
			return err
		}
	}
	if err := checkWindow(in); err != nil {
		return err
	}
	if err := p.checkDailyCost(in); err != nil {
		return err
	}
	if err := checkTotalCost(in); err != nil {
		return err
	}
	return p.checkWeeklyCost(in)
}
