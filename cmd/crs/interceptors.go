package main

import (
	"context"
	"runtime/debug"
	"strings"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/crsrelay/crs/controlplane/admin"
)

// gRPC services and how their calls are authenticated.
const (
	adminServicePrefix = "/crs.v1.AdminService/"
	// FleetService checks the fleet token in each method (controlplane/fleet).
	fleetServicePrefix = "/crs.v1.FleetService/"
)

var (
	errUnauthenticated = status.Error(codes.Unauthenticated, "missing or invalid admin token")
	errNoAuthRule      = status.Error(codes.PermissionDenied, "method not served")
	errPanic           = status.Error(codes.Internal, "internal error")
)

// authorize applies the auth rule of a method: AdminService needs the admin bearer token,
// FleetService authenticates itself, anything else (a service added without a rule) is refused.
func authorize(ctx context.Context, auth *admin.TokenAuth, method string) error {
	switch {
	case strings.HasPrefix(method, adminServicePrefix):
		md, _ := metadata.FromIncomingContext(ctx)
		for _, v := range md.Get("authorization") {
			if tok, ok := admin.BearerToken(v); ok && auth.Verify(tok) {
				return nil
			}
		}
		return errUnauthenticated
	case strings.HasPrefix(method, fleetServicePrefix):
		return nil
	}
	return errNoAuthRule
}

func authUnary(auth *admin.TokenAuth) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, next grpc.UnaryHandler) (any, error) {
		if err := authorize(ctx, auth, info.FullMethod); err != nil {
			return nil, err
		}
		return next(ctx, req)
	}
}

func authStream(auth *admin.TokenAuth) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, next grpc.StreamHandler) error {
		if err := authorize(ss.Context(), auth, info.FullMethod); err != nil {
			return err
		}
		return next(srv, ss)
	}
}

// recoverUnary turns a panic into Internal and logs it with its stack.
func recoverUnary(log *zap.Logger) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, next grpc.UnaryHandler) (resp any, err error) {
		defer func() {
			if p := recover(); p != nil {
				log.Error("grpc handler panicked", zap.String("method", info.FullMethod), zap.Any("panic", p), zap.ByteString("stack", debug.Stack()))
				resp, err = nil, errPanic
			}
		}()
		return next(ctx, req)
	}
}

func recoverStream(log *zap.Logger) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, next grpc.StreamHandler) (err error) {
		defer func() {
			if p := recover(); p != nil {
				log.Error("grpc stream handler panicked", zap.String("method", info.FullMethod), zap.Any("panic", p), zap.ByteString("stack", debug.Stack()))
				err = errPanic
			}
		}()
		return next(srv, ss)
	}
}

// accessLogUnary writes one debug line per call: method, code, duration.
func accessLogUnary(log *zap.Logger) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, next grpc.UnaryHandler) (any, error) {
		start := time.Now()
		resp, err := next(ctx, req)
		if ce := log.Check(zap.DebugLevel, "grpc call"); ce != nil {
			ce.Write(zap.String("method", info.FullMethod), zap.String("code", status.Code(err).String()), zap.Duration("duration", time.Since(start)))
		}
		return resp, err
	}
}

func accessLogStream(log *zap.Logger) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, next grpc.StreamHandler) error {
		start := time.Now()
		err := next(srv, ss)
		if ce := log.Check(zap.DebugLevel, "grpc stream"); ce != nil {
			ce.Write(zap.String("method", info.FullMethod), zap.String("code", status.Code(err).String()), zap.Duration("duration", time.Since(start)))
		}
		return err
	}
}
