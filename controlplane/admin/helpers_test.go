package admin

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/crsrelay/crs/controlplane/secret"
)

// testNow is the fixed clock of these tests: 2026-11-26 13:30 in UTC+8.
var testNow = time.Date(2026, 11, 26, 5, 30, 0, 0, time.UTC)

type fixture struct {
	svc    *Service
	store  *fakeStore
	sealer *secret.Sealer
	hmac   []byte
	logs   *observer.ObservedLogs
	ctx    context.Context
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	st := newFakeStore()
	key, err := secret.GenerateKey()
	require.NoError(t, err)
	sealer, err := secret.NewSealer(key)
	require.NoError(t, err)
	ctx := context.Background()
	hmac, err := LoadKeyHMACSecret(ctx, st)
	require.NoError(t, err)
	again, err := LoadKeyHMACSecret(ctx, st)
	require.NoError(t, err)
	require.Equal(t, hmac, again, "the hmac secret is created once")
	core, logs := observer.New(zap.DebugLevel)
	svc, err := New(Options{Store: st, Sealer: sealer, HMACSecret: hmac, Logger: zap.New(core), Now: func() time.Time { return testNow }})
	require.NoError(t, err)
	return &fixture{svc: svc, store: st, sealer: sealer, hmac: hmac, logs: logs, ctx: ctx}
}

// requireCode asserts err is a status with code and, when contains is not empty, a message
// containing it.
func requireCode(t *testing.T, err error, code codes.Code, contains string) {
	t.Helper()
	require.Error(t, err)
	st, ok := status.FromError(err)
	require.True(t, ok, "not a status: %v", err)
	require.Equal(t, code, st.Code(), "message: %s", st.Message())
	if contains != "" {
		require.Contains(t, st.Message(), contains)
	}
}

// jsonOf renders a message the way REST clients see it.
func jsonOf(t *testing.T, m proto.Message) string {
	t.Helper()
	b, err := protojson.Marshal(m)
	require.NoError(t, err)
	return string(b)
}

func strRepeat(c string, n int) string {
	b := make([]byte, 0, n)
	for range n {
		b = append(b, c...)
	}
	return string(b)
}
