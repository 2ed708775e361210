package main

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/crsrelay/crs/controlplane/admin"
)

func TestAuthorize(t *testing.T) {
	auth := admin.NewTokenAuth("the-admin-token-123")
	withAuth := func(v string) context.Context {
		return metadata.NewIncomingContext(context.Background(), metadata.Pairs("authorization", v))
	}
	tests := []struct {
		name   string
		ctx    context.Context
		method string
		want   codes.Code
	}{
		{"admin with token", withAuth("Bearer the-admin-token-123"), "/crs.v1.AdminService/ListApiKeys", codes.OK},
		{"admin without token", context.Background(), "/crs.v1.AdminService/ListApiKeys", codes.Unauthenticated},
		{"admin with wrong token", withAuth("Bearer nope"), "/crs.v1.AdminService/ListApiKeys", codes.Unauthenticated},
		{"admin with fleet-style basic", withAuth("Basic the-admin-token-123"), "/crs.v1.AdminService/GetSettings", codes.Unauthenticated},
		{"fleet checks itself", context.Background(), "/crs.v1.FleetService/Sync", codes.OK},
		{"service without a rule", withAuth("Bearer the-admin-token-123"), "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", codes.PermissionDenied},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			require.Equal(t, tt.want, status.Code(authorize(tt.ctx, auth, tt.method)))
		})
	}
}

func TestRecoverUnary(t *testing.T) {
	core, logs := observer.New(zap.DebugLevel)
	ic := recoverUnary(zap.New(core))
	_, err := ic(context.Background(), nil, &grpc.UnaryServerInfo{FullMethod: "/crs.v1.AdminService/GetSettings"},
		func(context.Context, any) (any, error) { panic("boom") })
	require.Equal(t, codes.Internal, status.Code(err))
	require.Equal(t, "internal error", status.Convert(err).Message())
	entries := logs.FilterMessage("grpc handler panicked").All()
	require.Len(t, entries, 1)
	require.Equal(t, "boom", entries[0].ContextMap()["panic"])

	ok, err := ic(context.Background(), nil, &grpc.UnaryServerInfo{}, func(context.Context, any) (any, error) { return "fine", nil })
	require.NoError(t, err)
	require.Equal(t, "fine", ok)
}
