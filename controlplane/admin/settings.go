package admin

import (
	"context"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	crsv1 "github.com/crsrelay/crs/gen/crs/v1"
)

// DefaultSettings are the settings before the first UpdateSettings (reference §2.4 for the queue).
func DefaultSettings() *crsv1.Settings {
	return &crsv1.Settings{
		ServiceRates:                  map[string]float64{},
		StickySessionTtl:              durationpb.New(time.Hour),
		ConcurrentRequestQueueMaxSize: 3,
		ConcurrentRequestQueueTimeout: durationpb.New(10 * time.Second),
		ConcurrentRequestQueueEnabled: false,
		ClaudeCodeOnlyEnabled:         false,
		DedicatedAccountFallback:      false,
	}
}

// GetSettings implements [crsv1.AdminServiceServer.GetSettings].
func (s *Service) GetSettings(ctx context.Context, _ *crsv1.GetSettingsRequest) (*crsv1.Settings, error) {
	st, err := s.loadSettings(ctx)
	return st, s.toStatus(ctx, "GetSettings", err)
}

// UpdateSettings implements [crsv1.AdminServiceServer.UpdateSettings]. service_rates is replaced whole.
func (s *Service) UpdateSettings(ctx context.Context, req *crsv1.UpdateSettingsRequest) (*crsv1.Settings, error) {
	st, err := s.updateSettings(ctx, req)
	return st, s.toStatus(ctx, "UpdateSettings", err)
}

func (s *Service) updateSettings(ctx context.Context, req *crsv1.UpdateSettingsRequest) (*crsv1.Settings, error) {
	cur, err := s.loadSettings(ctx)
	if err != nil {
		return nil, err
	}
	next := proto.Clone(cur).(*crsv1.Settings)
	patch := req.GetSettings()
	if patch == nil {
		patch = &crsv1.Settings{}
	}
	if _, err := applyMask(next, patch, req.GetUpdateMask(), maskRules{}); err != nil {
		return nil, err
	}
	if err := checkSettings(next); err != nil {
		return nil, err
	}
	if err := s.store.PutSettings(ctx, next); err != nil {
		return nil, about(kindSettings, "", err)
	}
	return next, nil
}

// loadSettings returns the stored settings with defaults for what is unset.
func (s *Service) loadSettings(ctx context.Context) (*crsv1.Settings, error) {
	st, err := s.store.GetSettings(ctx)
	switch {
	case isNotFound(err):
		return DefaultSettings(), nil
	case err != nil:
		return nil, err
	}
	st = proto.Clone(st).(*crsv1.Settings)
	fillSettingsDefaults(st)
	return st, nil
}

func fillSettingsDefaults(st *crsv1.Settings) {
	d := DefaultSettings()
	if st.StickySessionTtl == nil {
		st.StickySessionTtl = d.StickySessionTtl
	}
	if st.ConcurrentRequestQueueTimeout == nil {
		st.ConcurrentRequestQueueTimeout = d.ConcurrentRequestQueueTimeout
	}
}

func checkSettings(st *crsv1.Settings) error {
	fillSettingsDefaults(st)
	var c checker
	c.rates("service_rates", st.ServiceRates)
	dur := func(field string, d *durationpb.Duration, min, max time.Duration) {
		if d.CheckValid() != nil || d.AsDuration() < min || d.AsDuration() > max {
			c.add(field, "must be between %s and %s", min, max)
		}
	}
	dur("sticky_session_ttl", st.StickySessionTtl, time.Minute, 30*24*time.Hour)
	dur("concurrent_request_queue_timeout", st.ConcurrentRequestQueueTimeout, time.Second, 10*time.Minute)
	c.nonNegative("concurrent_request_queue_max_size", int64(st.ConcurrentRequestQueueMaxSize), 10000)
	c.nonNegative("concurrent_request_queue_max_size_multiplier", int64(st.ConcurrentRequestQueueMaxSizeMultiplier), 100)
	return c.err()
}
