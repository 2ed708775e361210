package usage

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/crsrelay/crs/controlplane/store"
	crsv1 "github.com/crsrelay/crs/gen/crs/v1"
	"github.com/crsrelay/crs/internal/period"
)

func utc(s string) time.Time {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		panic(err)
	}
	return t
}

func TestServiceFor(t *testing.T) {
	tests := []struct {
		accountType, model, want string
	}{
		{"claude-official", "gpt-5", ServiceClaude},
		{"claude-console", "claude-sonnet-4-5", ServiceClaude},
		{"ccr", "claude-sonnet-4-5", ServiceCCR},
		{"bedrock", "claude-sonnet-4-5", ServiceBedrock},
		{"gemini-api", "gemini-2.5-pro", ServiceGemini},
		{"openai-responses", "gpt-5", ServiceCodex},
		{"azure-openai", "gpt-4.1", ServiceAzure},
		{"droid", "claude-opus-4-5", ServiceDroid},
		{"", "gpt-5-codex", ServiceCodex},
		{"", "gemini-2.5-flash", ServiceGemini},
		{"", "mystery", ServiceClaude},
	}
	for _, tt := range tests {
		t.Run(tt.accountType+"/"+tt.model, func(t *testing.T) {
			require.Equal(t, tt.want, ServiceFor(tt.accountType, tt.model))
		})
	}
}

// fakeUsageStore records entries and deduplicates by request id.
type fakeUsageStore struct {
	mu      sync.Mutex
	seen    map[string]bool
	entries []*store.UsageEntry
	err     error
}

func (f *fakeUsageStore) RecordUsage(_ context.Context, e *store.UsageEntry) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return false, f.err
	}
	if f.seen == nil {
		f.seen = map[string]bool{}
	}
	if f.seen[e.Record.GetRequestId()] {
		return false, nil
	}
	f.seen[e.Record.GetRequestId()] = true
	f.entries = append(f.entries, e)
	return true, nil
}

func TestRecorder(t *testing.T) {
	now := utc("2026-11-26T04:00:00Z")     // Thursday 12:00 at UTC+8
	started := utc("2026-11-25T15:30:00Z") // Wednesday 23:30 at UTC+8

	tests := []struct {
		name         string
		rec          *crsv1.UsageRecord
		key          *crsv1.ApiKey
		global       map[string]float64
		wantCost     float64
		wantRated    float64
		wantService  string
		wantClaude   bool
		wantLabels   period.Labels
		wantFallback bool
	}{
		{
			name: "official claude with global and key rates",
			rec: &crsv1.UsageRecord{RequestId: "r1", KeyId: "k1", AccountId: "a1", AccountType: "claude-official",
				Model: "claude-sonnet-4-5-20250929", InputTokens: 1000, OutputTokens: 500, StartedAt: timestamppb.New(started)},
			key:    &crsv1.ApiKey{Id: "k1", ServiceRates: map[string]float64{"claude": 1.5, "gemini": 9}, WeeklyResetDay: 3, WeeklyResetHour: 9},
			global: map[string]float64{"claude": 2},
			// 1000×$3 + 500×$15 per MTok = 0.0105; × 2 × 1.5.
			wantCost: 0.0105, wantRated: 0.0315, wantService: ServiceClaude, wantClaude: true,
			wantLabels: period.Labels{Hour: "2026-11-25T23", Day: "2026-11-25", Month: "2026-11", Week: "2026-11-25T09"},
		},
		{
			name: "bedrock claude model: bedrock rate, not weekly claude",
			rec: &crsv1.UsageRecord{RequestId: "r2", KeyId: "k1", AccountType: "bedrock",
				Model: "us.anthropic.claude-sonnet-4-20250514-v1:0", InputTokens: 1_000_000, StartedAt: timestamppb.New(started)},
			key:      &crsv1.ApiKey{Id: "k1"},
			global:   map[string]float64{"claude": 2, "bedrock": 0.5},
			wantCost: 3, wantRated: 1.5, wantService: ServiceBedrock, wantClaude: false,
			wantLabels: period.Labels{Hour: "2026-11-25T23", Day: "2026-11-25", Month: "2026-11", Week: "2026-11-23T00"},
		},
		{
			name: "ccr counts toward weekly claude; zero rate means 1",
			rec: &crsv1.UsageRecord{RequestId: "r3", KeyId: "k1", AccountType: "ccr",
				Model: "claude-haiku-4-5", OutputTokens: 1_000_000},
			key:      &crsv1.ApiKey{Id: "k1", ServiceRates: map[string]float64{"ccr": 0}},
			global:   nil,
			wantCost: 5, wantRated: 5, wantService: ServiceCCR, wantClaude: true,
			wantLabels: period.Labels{Hour: "2026-11-26T12", Day: "2026-11-26", Month: "2026-11", Week: "2026-11-23T00"},
		},
		{
			name: "future start is replaced by now; deleted key",
			rec: &crsv1.UsageRecord{RequestId: "r4", KeyId: "gone", AccountType: "claude-console",
				Model: "mystery-model", InputTokens: 1_000_000, StartedAt: timestamppb.New(now.Add(time.Hour))},
			key:      nil,
			global:   map[string]float64{"claude": 1.2},
			wantCost: 3, wantRated: 3.6, wantService: ServiceClaude, wantClaude: false, wantFallback: true,
			wantLabels: period.Labels{Hour: "2026-11-26T12", Day: "2026-11-26", Month: "2026-11", Week: "2026-11-23T00"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs := &fakeUsageStore{}
			r := NewRecorder(RecorderOptions{Store: fs, TZOffsetHours: 8, Clock: func() time.Time { return now }})
			res, err := r.Record(t.Context(), tt.rec, tt.key, tt.global)
			require.NoError(t, err)
			require.True(t, res.Stored)
			require.Len(t, fs.entries, 1)
			e := fs.entries[0]
			require.Same(t, tt.rec, e.Record)
			require.InDelta(t, tt.wantCost, e.Cost, 1e-12)
			require.InDelta(t, tt.wantRated, e.RatedCost, 1e-12)
			require.Equal(t, tt.wantClaude, e.ClaudeFamily)
			require.Equal(t, tt.wantLabels, period.Labels{Hour: e.Hour, Day: e.Day, Month: e.Month, Week: e.Week})
			require.Equal(t, tt.wantService, res.Cost.Service)
			require.Equal(t, tt.wantFallback, res.Cost.Breakdown.Fallback)

			// The same request id again is a duplicate.
			res, err = r.Record(t.Context(), tt.rec, tt.key, tt.global)
			require.NoError(t, err)
			require.False(t, res.Stored)
			require.Len(t, fs.entries, 1)
		})
	}
}

func TestRecorderStoreError(t *testing.T) {
	boom := errors.New("boom")
	r := NewRecorder(RecorderOptions{Store: &fakeUsageStore{err: boom}})
	_, err := r.Record(t.Context(), &crsv1.UsageRecord{RequestId: "r1"}, nil, nil)
	require.ErrorIs(t, err, boom)
	require.Contains(t, err.Error(), "r1")
}
