package oauth

import (
	"errors"
	"fmt"
)

// Sentinel errors callers branch on with errors.Is.
var (
	// ErrUnknownProvider: no provider of that name is configured.
	ErrUnknownProvider = errors.New("oauth: unknown provider")
	// ErrSessionNotFound: the flow session does not exist, was used, or expired (10 minutes).
	ErrSessionNotFound = errors.New("oauth: session not found or expired")
	// ErrBadCode: the pasted code or callback URL holds no usable authorization code.
	ErrBadCode = errors.New("oauth: bad authorization code")
	// ErrStateMismatch: the callback's state is not the session's (a code from another flow).
	ErrStateMismatch = errors.New("oauth: state does not match the session")
	// ErrNotRefreshable: the account is not an OAuth account of a refreshable type, or it has no
	// refresh token (setup tokens).
	ErrNotRefreshable = errors.New("oauth: account cannot be refreshed")
	// ErrUnreachable: the token endpoint could not be reached or did not answer in time (network,
	// proxy, timeout); trying later may work. Proxy failures also match proxyhttp.ErrProxy.
	ErrUnreachable = errors.New("token endpoint not reached")
	// ErrBusy: another refresh of the account (in another replica) held the lock for too long.
	ErrBusy = errors.New("oauth: refresh in progress elsewhere")
)

// UpstreamError is a token endpoint's refusal: its HTTP status and OAuth error.
type UpstreamError struct {
	// Status is the HTTP status code.
	Status int
	// Code is the OAuth error ("invalid_grant", "refresh_token_reused"...), when the body had one.
	Code string
	// Description is the provider's message, trimmed.
	Description string
}

func (e *UpstreamError) Error() string {
	s := fmt.Sprintf("token endpoint answered %d", e.Status)
	if e.Code != "" {
		s += " " + e.Code
	}
	if e.Description != "" {
		s += ": " + e.Description
	}
	return s
}

// Permanent reports whether retrying the same request cannot succeed: the grant or the client was
// refused (4xx other than 408 and 429). A refresh token refused this way needs a new
// authorization by a human.
func (e *UpstreamError) Permanent() bool {
	return e.Status >= 400 && e.Status < 500 && e.Status != 408 && e.Status != 429
}
