package admin

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	crsv1 "github.com/crsrelay/crs/gen/crs/v1"
)

func TestSettings(t *testing.T) {
	f := newFixture(t)
	got, err := f.svc.GetSettings(f.ctx, &crsv1.GetSettingsRequest{})
	require.NoError(t, err)
	require.Equal(t, time.Hour, got.StickySessionTtl.AsDuration())
	require.Equal(t, int32(3), got.ConcurrentRequestQueueMaxSize)
	require.Equal(t, 10*time.Second, got.ConcurrentRequestQueueTimeout.AsDuration())
	require.Empty(t, got.ServiceRates)
	require.False(t, got.ConcurrentRequestQueueEnabled)

	upd, err := f.svc.UpdateSettings(f.ctx, &crsv1.UpdateSettingsRequest{
		Settings:   &crsv1.Settings{ServiceRates: map[string]float64{"claude": 1.5}, ClaudeCodeOnlyEnabled: true, StickySessionTtl: durationpb.New(time.Minute)},
		UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"service_rates", "claudeCodeOnlyEnabled"}},
	})
	require.NoError(t, err)
	require.Equal(t, map[string]float64{"claude": 1.5}, upd.ServiceRates)
	require.True(t, upd.ClaudeCodeOnlyEnabled)
	require.Equal(t, time.Hour, upd.StickySessionTtl.AsDuration(), "not in mask")

	again, err := f.svc.GetSettings(f.ctx, &crsv1.GetSettingsRequest{})
	require.NoError(t, err)
	require.True(t, again.ClaudeCodeOnlyEnabled)

	// Clearing a duration restores its default.
	cleared, err := f.svc.UpdateSettings(f.ctx, &crsv1.UpdateSettingsRequest{Settings: &crsv1.Settings{}, UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"sticky_session_ttl"}}})
	require.NoError(t, err)
	require.Equal(t, time.Hour, cleared.StickySessionTtl.AsDuration())

	tests := []struct {
		name string
		s    *crsv1.Settings
		path string
		want string
	}{
		{"ttl too short", &crsv1.Settings{StickySessionTtl: durationpb.New(time.Second)}, "sticky_session_ttl", "sticky_session_ttl: must be between"},
		{"ttl too long", &crsv1.Settings{StickySessionTtl: durationpb.New(365 * 24 * time.Hour)}, "sticky_session_ttl", "sticky_session_ttl:"},
		{"timeout", &crsv1.Settings{ConcurrentRequestQueueTimeout: durationpb.New(time.Hour)}, "concurrent_request_queue_timeout", "concurrent_request_queue_timeout:"},
		{"queue size", &crsv1.Settings{ConcurrentRequestQueueMaxSize: -1}, "concurrent_request_queue_max_size", "concurrent_request_queue_max_size:"},
		{"unknown rate", &crsv1.Settings{ServiceRates: map[string]float64{"x": 1}}, "service_rates", "service_rates.x: unknown service"},
		{"unknown path", &crsv1.Settings{}, "colour", "update_mask: unknown field"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := f.svc.UpdateSettings(f.ctx, &crsv1.UpdateSettingsRequest{Settings: tt.s, UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{tt.path}}})
			requireCode(t, err, codes.InvalidArgument, tt.want)
		})
	}
}
