package admin

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/crsrelay/crs/controlplane/store"
	crsv1 "github.com/crsrelay/crs/gen/crs/v1"
)

func TestUsagePeriods(t *testing.T) {
	f := newFixture(t) // now = 2026-11-26 13:30 UTC+8
	ts := func(s string) *timestamppb.Timestamp {
		tm, err := time.Parse(time.RFC3339, s)
		require.NoError(t, err)
		return timestamppb.New(tm)
	}
	tests := []struct {
		name        string
		gran        string
		start, end  *timestamppb.Timestamp
		first, last string
		n           int
		wantErr     string
	}{
		{name: "default days", gran: "day", first: "2026-11-20", last: "2026-11-26", n: 7},
		{name: "default hours", gran: "hour", first: "2026-11-25T14", last: "2026-11-26T13", n: 24},
		{name: "default months", gran: "month", first: "2025-12", last: "2026-11", n: 12},
		{name: "days in UTC+8", gran: "day", start: ts("2026-11-01T15:59:00Z"), end: ts("2026-11-01T16:00:00Z"), first: "2026-11-01", last: "2026-11-01", n: 1},
		{name: "day boundary", gran: "day", start: ts("2026-11-01T16:00:00Z"), end: ts("2026-11-03T16:00:00Z"), first: "2026-11-02", last: "2026-11-03", n: 2},
		{name: "too many hours", gran: "hour", start: ts("2026-01-01T00:00:00Z"), end: ts("2026-11-01T00:00:00Z"), wantErr: "start_time: range spans more than 1000"},
		{name: "start after end", gran: "day", start: ts("2026-11-02T00:00:00Z"), end: ts("2026-11-01T00:00:00Z"), wantErr: "start_time: must be before end_time"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := f.svc.periods(tt.gran, tt.start, tt.end)
			if tt.wantErr != "" {
				require.ErrorContains(t, err, tt.wantErr)
				return
			}
			require.NoError(t, err)
			require.Len(t, p, tt.n)
			require.Equal(t, tt.first, p[0])
			require.Equal(t, tt.last, p[len(p)-1])
		})
	}
}

func TestUsageReports(t *testing.T) {
	f := newFixture(t)
	k := createKey(t, f, &crsv1.ApiKey{Name: "k"})
	tot := func(req int64, cost float64) *crsv1.UsageTotals {
		return &crsv1.UsageTotals{Requests: req, InputTokens: req * 10, AllTokens: req * 10, Cost: cost, RatedCost: cost}
	}
	f.store.usageRows = []store.UsageRow{
		{Period: "2026-11-26", Totals: tot(2, 0.5)},
		{Period: "2026-11-24", Totals: tot(1, 0.25)},
	}
	rep, err := f.svc.GetApiKeyUsage(f.ctx, &crsv1.GetUsageRequest{Id: k.ApiKey.Id})
	require.NoError(t, err)
	require.Equal(t, store.UsageQuery{Scope: "key", ID: k.ApiKey.Id, Granularity: "day", Periods: f.store.lastQuery.Periods}, f.store.lastQuery)
	require.Len(t, f.store.lastQuery.Periods, 7)
	require.Equal(t, "key", rep.Scope)
	require.Len(t, rep.Buckets, 7, "every day has a bucket")
	require.Equal(t, "2026-11-20", rep.Buckets[0].Period)
	require.Zero(t, rep.Buckets[0].Totals.Requests)
	require.Equal(t, int64(1), rep.Buckets[4].Totals.Requests)
	require.Equal(t, int64(2), rep.Buckets[6].Totals.Requests)
	require.Equal(t, int64(3), rep.Total.Requests)
	require.InDelta(t, 0.75, rep.Total.Cost, 1e-9)

	f.store.usageRows = []store.UsageRow{
		{Period: "2026-11", Model: "claude-sonnet-4", Totals: tot(1, 1)},
		{Period: "2026-10", Model: "claude-opus-4", Totals: tot(2, 2)},
		{Period: "2026-11", Model: "claude-haiku-4", Totals: tot(3, 3)},
	}
	rep, err = f.svc.GetGlobalUsage(f.ctx, &crsv1.GetUsageRequest{Id: "ignored", Granularity: "month", ByModel: true})
	require.NoError(t, err)
	require.Equal(t, "global", f.store.lastQuery.Scope)
	require.Empty(t, f.store.lastQuery.ID)
	require.True(t, f.store.lastQuery.ByModel)
	require.Len(t, rep.Buckets, 3)
	require.Equal(t, []string{"2026-10/claude-opus-4", "2026-11/claude-haiku-4", "2026-11/claude-sonnet-4"},
		[]string{rep.Buckets[0].Period + "/" + rep.Buckets[0].Model, rep.Buckets[1].Period + "/" + rep.Buckets[1].Model, rep.Buckets[2].Period + "/" + rep.Buckets[2].Model})
	require.Equal(t, int64(6), rep.Total.Requests)

	a := createAccount(t, f, validAccount("claude-official"))
	f.store.usageRows = []store.UsageRow{{Period: "total", Totals: tot(9, 9)}}
	rep, err = f.svc.GetAccountUsage(f.ctx, &crsv1.GetUsageRequest{Id: a.Id, Granularity: "total"})
	require.NoError(t, err)
	require.Empty(t, f.store.lastQuery.Periods)
	require.Equal(t, "total", f.store.lastQuery.Granularity)
	require.Len(t, rep.Buckets, 1)
	require.Equal(t, int64(9), rep.Total.Requests)

	_, err = f.svc.GetGlobalUsage(f.ctx, &crsv1.GetUsageRequest{Granularity: "week"})
	requireCode(t, err, codes.InvalidArgument, "granularity: must be hour, day, month or total")
}
