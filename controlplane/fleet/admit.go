package fleet

import (
	"context"
	"crypto/rand"
	"errors"
	"io"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/crsrelay/crs/controlplane/store"
	crsv1 "github.com/crsrelay/crs/gen/crs/v1"
)

// Values of AdmitResponse.refused_scope.
const (
	// RefusedKey and RefusedAccount: that concurrency limit is full (current = leases held).
	RefusedKey     = store.ScopeKey
	RefusedAccount = store.ScopeAccount
	// RefusedWindowRequests: the key's fixed window has rate_limit_requests requests already
	// (reference §2.5); reset_at is when it ends.
	RefusedWindowRequests = "window_requests"
	// RefusedLease answers a renew some of whose leases were not held (expired, released or
	// unknown): lease_id lists them, comma-separated, and current counts them. The others were
	// renewed.
	RefusedLease = "lease"
	// RefusedUnavailable: the limit store failed; nothing was taken. Workers answer it like the
	// reference's 503 "Failed to acquire concurrency slot due to internal error" (§2.4).
	RefusedUnavailable = "unavailable"
)

// Admit bounds.
const (
	// maxAcquireLimits bounds the limits of one acquire (a key and a few accounts at most).
	maxAcquireLimits = 8
	// maxLeaseIDs bounds the lease ids of one renew or release; workers split larger batches.
	maxLeaseIDs = 1000
	// admitParallelism bounds the requests of one stream handled at once. A worker multiplexes
	// all its requests on one stream, so they are handled concurrently (answers carry seq and may
	// come out of order); beyond this the stream is not read, which pushes back on the worker.
	admitParallelism = 64
	// admitStoreTimeout bounds one store call. Store calls do not use the stream's context: a
	// worker that goes away must not abort a grant half-way (it would hold a slot nobody knows).
	admitStoreTimeout = 5 * time.Second
)

var errNoLimits = status.Error(codes.Unimplemented, "this control plane keeps no limits (no limit store configured)")

// Admit implements [crsv1.FleetServiceServer.Admit]: one long-lived stream per worker over which
// it acquires, renews and releases concurrency leases and counts fixed-window requests.
//
// A stream that ends, for whatever reason, releases nothing: its leases stay until they are
// released (on any stream, for instance after the worker reconnected) or their TTL passes
// without renewal, so a worker that dies leaks nothing for longer than the TTL and a worker that
// reconnects keeps its leases. A grant whose answer could not be sent is released at once,
// since no worker knows its lease id.
//
// A malformed request ends the stream with InvalidArgument; a store failure only refuses that
// request (RefusedUnavailable).
func (s *Service) Admit(stream crsv1.FleetService_AdmitServer) error {
	ctx := stream.Context()
	if err := s.authorize(ctx); err != nil {
		return err
	}
	if s.limits == nil {
		return errNoLimits
	}
	if err := s.waitReady(ctx); err != nil {
		return err
	}
	conn := &admitConn{send: stream.Send}
	defer s.credit.gone(conn)
	var wg sync.WaitGroup
	sem := make(chan struct{}, admitParallelism)
	defer wg.Wait() // answers of requests in flight are sent before the stream ends
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := validateAdmit(req); err != nil {
			return err
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			resp := s.admit(ctx, req, conn)
			if err := conn.sendLocked(resp); err != nil && req.GetAcquire() != nil && resp.GetLeaseId() != "" {
				for _, id := range append([]string{resp.GetLeaseId()}, resp.GetExtraLeaseIds()...) {
					s.releaseQuietly(ctx, id, "grant not delivered")
				}
			}
		}()
	}
}

// validateAdmit checks what a well-behaved worker never sends.
func validateAdmit(req *crsv1.AdmitRequest) error {
	switch op := req.GetOp().(type) {
	case *crsv1.AdmitRequest_Acquire:
		a := op.Acquire
		if len(a.GetLimits()) > maxAcquireLimits {
			return status.Errorf(codes.InvalidArgument, "acquire.limits: more than %d", maxAcquireLimits)
		}
		if a.GetCount() < 0 || a.GetCount() > maxCredit {
			return status.Errorf(codes.InvalidArgument, "acquire.count: %d is not in [0, %d]", a.GetCount(), maxCredit)
		}
		for i, l := range a.GetLimits() {
			switch {
			case l.GetScope() != store.ScopeKey && l.GetScope() != store.ScopeAccount:
				return status.Errorf(codes.InvalidArgument, "acquire.limits[%d].scope: %q is not %q or %q", i, l.GetScope(), store.ScopeKey, store.ScopeAccount)
			case l.GetId() == "":
				return status.Errorf(codes.InvalidArgument, "acquire.limits[%d].id: required", i)
			}
		}
	case *crsv1.AdmitRequest_Renew:
		return validateLeaseIDs("renew", op.Renew.GetLeaseIds())
	case *crsv1.AdmitRequest_Release:
		return validateLeaseIDs("release", op.Release.GetLeaseIds())
	default:
		return status.Error(codes.InvalidArgument, "op: one of acquire, renew, release is required")
	}
	return nil
}

func validateLeaseIDs(op string, ids []string) error {
	if len(ids) > maxLeaseIDs {
		return status.Errorf(codes.InvalidArgument, "%s.lease_ids: more than %d", op, maxLeaseIDs)
	}
	for i, id := range ids {
		if id == "" {
			return status.Errorf(codes.InvalidArgument, "%s.lease_ids[%d]: empty", op, i)
		}
	}
	return nil
}

// admit answers one validated request from the stream conn.
func (s *Service) admit(streamCtx context.Context, req *crsv1.AdmitRequest, conn *admitConn) *crsv1.AdmitResponse {
	// Not tied to the stream, so a disconnect cannot abort a grant halfway. No per-call timer
	// either (one per request showed up in profiles): the store bounds its own calls (embedded
	// leases are in memory; go-redis has read and write timeouts).
	ctx := context.WithoutCancel(streamCtx)
	resp := &crsv1.AdmitResponse{Seq: req.GetSeq()}
	switch op := req.GetOp().(type) {
	case *crsv1.AdmitRequest_Acquire:
		s.acquire(ctx, op.Acquire, resp, conn)
	case *crsv1.AdmitRequest_Renew:
		s.renew(ctx, op.Renew.GetLeaseIds(), resp)
	case *crsv1.AdmitRequest_Release:
		if err := s.limits.ReleaseLeases(ctx, op.Release.GetLeaseIds()); err != nil {
			s.log.Warn("lease release failed; the leases expire by their TTL", zap.Error(err))
			resp.RefusedScope = RefusedUnavailable
			return resp
		}
		resp.Granted = true
	}
	return resp
}

// acquire takes a slot on every concurrency limit, then counts the request in the key's fixed
// window, in the reference's order (§2.3 steps 6 and 7): a request refused for concurrency is
// not counted in the window, and one refused by the window gives its slots back. An acquire
// asking for credit (count > 1) may get more leases on its one limit (credit.go).
func (s *Service) acquire(ctx context.Context, a *crsv1.LeaseAcquire, resp *crsv1.AdmitResponse, conn *admitConn) {
	limits := s.currentLimits(a.GetLimits())
	var leaseID string
	if len(limits) > 0 {
		leaseID = rand.Text()
		got, err := s.acquireReclaiming(ctx, leaseID, limits)
		if err != nil {
			s.log.Warn("lease acquire failed", zap.String("request_id", a.GetRequestId()), zap.Error(err))
			// The store may have applied it before failing to answer: give it back.
			s.releaseQuietly(ctx, leaseID, "acquire failed")
			resp.RefusedScope = RefusedUnavailable
			return
		}
		if !got.Granted {
			resp.RefusedScope = got.Refused.Scope
			resp.Current = int64(got.Current)
			resp.Limit = int64(got.Refused.Limit)
			return
		}
	}
	now := s.now()
	if id := a.GetWindowKeyId(); id != "" {
		if k := s.cachedKey(id); hasWindowLimit(k) {
			win := windowOf(k)
			w, counted, err := s.limits.CountWindowRequest(ctx, id, win, int64(k.GetRateLimitRequests()), now)
			if err != nil || !counted {
				if leaseID != "" {
					s.releaseQuietly(ctx, leaseID, "window refused")
				}
				if err != nil {
					s.log.Warn("window count failed", zap.String("key_id", id), zap.Error(err))
					resp.RefusedScope = RefusedUnavailable
					return
				}
				resp.RefusedScope = RefusedWindowRequests
				resp.Current = w.Requests
				resp.Limit = int64(k.GetRateLimitRequests())
				resp.ResetAt = timestamppb.New(w.End(win))
				return
			}
		}
	}
	resp.Granted = true
	if leaseID != "" {
		resp.LeaseId = leaseID
		resp.Ttl = durationpb.New(s.leaseTTL)
		if creditEligible(a, limits) {
			s.grantCredit(ctx, conn, a, limits[0], resp, now)
		}
	}
}

// currentLimits returns the limits to enforce: the control plane's current value for keys and
// accounts it knows (a worker's snapshot may be a moment old), the worker's otherwise; limits
// that are 0 (unlimited) are dropped.
func (s *Service) currentLimits(in []*crsv1.LeaseLimit) []store.LeaseLimit {
	out := make([]store.LeaseLimit, 0, len(in))
	for _, l := range in {
		n := int(l.GetLimit())
		switch l.GetScope() {
		case store.ScopeKey:
			if k := s.cachedKey(l.GetId()); k != nil {
				n = int(k.GetConcurrencyLimit())
			}
		case store.ScopeAccount:
			if acc := s.cachedAccount(l.GetId()); acc != nil {
				n = int(acc.GetMaxConcurrency())
			}
		}
		if n > 0 {
			out = append(out, store.LeaseLimit{Scope: l.GetScope(), ID: l.GetId(), Limit: n})
		}
	}
	return out
}

// renew extends the leases still held; the answer names those that were not.
func (s *Service) renew(ctx context.Context, ids []string, resp *crsv1.AdmitResponse) {
	missing, err := s.limits.RenewLeases(ctx, ids, s.leaseTTL, s.now())
	if err != nil {
		s.log.Warn("lease renew failed", zap.Int("leases", len(ids)), zap.Error(err))
		resp.RefusedScope = RefusedUnavailable
		return
	}
	resp.Ttl = durationpb.New(s.leaseTTL)
	if len(missing) == 0 {
		resp.Granted = true
		return
	}
	resp.RefusedScope = RefusedLease
	resp.LeaseId = strings.Join(missing, ",")
	resp.Current = int64(len(missing))
}

// releaseQuietly releases a lease nobody will release otherwise; on failure it expires by TTL.
func (s *Service) releaseQuietly(ctx context.Context, leaseID, why string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), admitStoreTimeout)
	defer cancel()
	if err := s.limits.ReleaseLeases(ctx, []string{leaseID}); err != nil {
		s.log.Warn("lease release failed; it expires by its TTL", zap.String("reason", why), zap.Error(err))
	}
}

// hasWindowLimit reports whether a key has a fixed window (reference §2.3 step 7: a window
// length and at least one of its three limits).
func hasWindowLimit(k *crsv1.ApiKey) bool {
	return k.GetRateLimitWindow() > 0 &&
		(k.GetRateLimitRequests() > 0 || k.GetTokenLimit() > 0 || k.GetRateLimitCost() > 0)
}

// windowOf returns the length of a key's fixed window.
func windowOf(k *crsv1.ApiKey) time.Duration {
	return time.Duration(k.GetRateLimitWindow()) * time.Minute
}

// windowTokens is what a record adds to a window's tokens (reference §2.5: input + output +
// cache creation + cache read).
func windowTokens(r *crsv1.UsageRecord) int64 {
	return r.GetInputTokens() + r.GetOutputTokens() + r.GetCacheCreation_5MTokens() +
		r.GetCacheCreation_1HTokens() + r.GetCacheReadTokens()
}
