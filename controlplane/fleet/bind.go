package fleet

import (
	"context"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	crsv1 "github.com/crsrelay/crs/gen/crs/v1"
)

// Bind limits.
const (
	maxSessionHash = 256
	maxBindTTL     = 30 * 24 * time.Hour
)

// Bind implements [crsv1.FleetServiceServer.Bind]: it returns the account bound to the session,
// binding the proposed account when there is none (or when replace is set), for the request's
// TTL or the settings' sticky TTL.
func (s *Service) Bind(ctx context.Context, req *crsv1.BindRequest) (*crsv1.BindResponse, error) {
	if err := s.authorize(ctx); err != nil {
		return nil, err
	}
	if err := s.waitReady(ctx); err != nil {
		return nil, err
	}
	switch {
	case req.GetSessionHash() == "":
		return nil, status.Error(codes.InvalidArgument, "session_hash: required")
	case len(req.GetSessionHash()) > maxSessionHash:
		return nil, status.Errorf(codes.InvalidArgument, "session_hash: longer than %d bytes", maxSessionHash)
	case req.GetPlatform() == "":
		return nil, status.Error(codes.InvalidArgument, "platform: required")
	case req.GetAccountId() == "":
		return nil, status.Error(codes.InvalidArgument, "account_id: required")
	case req.GetTtl() != nil && (!req.GetTtl().IsValid() || req.GetTtl().AsDuration() < 0):
		return nil, status.Error(codes.InvalidArgument, "ttl: must be a positive duration")
	}
	if s.cachedAccount(req.GetAccountId()) == nil {
		return nil, status.Errorf(codes.NotFound, "account_id: no account %q", req.GetAccountId())
	}
	ttl := req.GetTtl().AsDuration()
	if ttl <= 0 {
		ttl = s.cachedSettings().GetStickySessionTtl().AsDuration()
	}
	if ttl <= 0 {
		ttl = DefaultStickyTTL
	}
	if ttl > maxBindTTL {
		ttl = maxBindTTL
	}
	bound, created, err := s.st.Bind(ctx, req.GetPlatform(), req.GetSessionHash(), req.GetAccountId(), ttl, req.GetReplace())
	if err != nil {
		return nil, s.rpcError(ctx, "bind", err)
	}
	return &crsv1.BindResponse{AccountId: bound, Created: created}, nil
}

func cloneKey(k *crsv1.ApiKey) *crsv1.ApiKey {
	return proto.Clone(k).(*crsv1.ApiKey)
}
