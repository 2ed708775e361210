package fleetclient

import (
	"context"
	"errors"

	crsv1 "github.com/crsrelay/crs/gen/crs/v1"
)

// ErrAdmitNotImplemented is returned by every Admitter method until the Admit stream exists.
var ErrAdmitNotImplemented = errors.New("fleetclient: admit not implemented")

// Admitter will hold the worker's one long-lived FleetService.Admit stream: it sends
// LeaseAcquire / LeaseRenew / LeaseRelease with a sequence number, matches AdmitResponses by seq,
// renews granted leases before their TTL, and releases them when a request ends (reference §2.4,
// concurrency limits per key and per account, plus the fixed request window).
//
// NEXT ISSUE (policy): implement it; the auth.PolicyChecks concurrency and window steps call
// Acquire and arrange Release. Until then it refuses everything with ErrAdmitNotImplemented.
type Admitter struct {
	c *Client
}

// Admitter returns the client's lease manager.
func (c *Client) Admitter() *Admitter { return &Admitter{c: c} }

// Acquire asks for one slot on each of req's limits, all or nothing.
func (a *Admitter) Acquire(ctx context.Context, req *crsv1.LeaseAcquire) (*crsv1.AdmitResponse, error) {
	return nil, ErrAdmitNotImplemented
}

// Release gives leases back.
func (a *Admitter) Release(leaseIDs ...string) error {
	return ErrAdmitNotImplemented
}
