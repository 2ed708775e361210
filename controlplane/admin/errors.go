package admin

import (
	"context"
	"errors"
	"strings"

	"go.uber.org/zap"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/crsrelay/crs/controlplane/store"
)

// FieldViolation is one invalid input, named by its proto field path ("name", "oauth.access_token").
type FieldViolation struct {
	Field, Description string
}

// ValidationError lists every invalid field of a request. It becomes InvalidArgument with a
// google.rpc.BadRequest detail.
type ValidationError struct {
	Violations []FieldViolation
}

func (e *ValidationError) Error() string {
	parts := make([]string, len(e.Violations))
	for i, v := range e.Violations {
		parts[i] = v.Field + ": " + v.Description
	}
	return strings.Join(parts, "; ")
}

// resourceError says which record a store error was about, for the NotFound message.
type resourceError struct {
	kind, id string
	err      error
}

func (e *resourceError) Error() string { return e.kind + " " + e.id + ": " + e.err.Error() }
func (e *resourceError) Unwrap() error { return e.err }

// about tags a store error with the record it concerns; nil stays nil.
func about(kind, id string, err error) error {
	if err == nil {
		return nil
	}
	return &resourceError{kind: kind, id: id, err: err}
}

// Record kinds, as they appear in messages ("api key 1234 not found").
const (
	kindKey      = "api key"
	kindAccount  = "account"
	kindGroup    = "group"
	kindSettings = "settings"
)

// toStatus is the one place errors become gRPC statuses: validation → InvalidArgument naming the
// fields, store.ErrNotFound → NotFound naming the record, ErrAlreadyExists → AlreadyExists,
// ErrConflict → FailedPrecondition, context ends → Canceled/DeadlineExceeded, anything else →
// Internal with a generic message (the cause is logged, never sent).
func (s *Service) toStatus(ctx context.Context, method string, err error) error {
	if err == nil {
		return nil
	}
	var ve *ValidationError
	if errors.As(err, &ve) {
		st := status.New(codes.InvalidArgument, ve.Error())
		br := &errdetails.BadRequest{}
		for _, v := range ve.Violations {
			br.FieldViolations = append(br.FieldViolations, &errdetails.BadRequest_FieldViolation{Field: v.Field, Description: v.Description})
		}
		if withDetails, derr := st.WithDetails(br); derr == nil {
			st = withDetails
		}
		return st.Err()
	}
	var re *resourceError
	hasRecord := errors.As(err, &re)
	switch {
	case errors.Is(err, store.ErrNotFound):
		if hasRecord {
			return status.Errorf(codes.NotFound, "%s %s not found", re.kind, re.id)
		}
		return status.Error(codes.NotFound, "not found")
	case errors.Is(err, store.ErrAlreadyExists):
		if hasRecord {
			return status.Errorf(codes.AlreadyExists, "%s %s already exists", re.kind, re.id)
		}
		return status.Error(codes.AlreadyExists, "already exists")
	case errors.Is(err, store.ErrConflict):
		return status.Error(codes.FailedPrecondition, "the record changed concurrently; retry")
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, "request canceled")
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, "deadline exceeded")
	}
	if st, ok := status.FromError(err); ok && st.Code() != codes.Unknown {
		return err
	}
	s.log.Error("admin request failed", zap.String("method", method), zap.Error(err))
	return status.Error(codes.Internal, "internal error")
}

func isNotFound(err error) bool { return errors.Is(err, store.ErrNotFound) }
