package usageagg

import (
	"testing"

	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	"github.com/crsrelay/crs/controlplane/store"
	crsv1 "github.com/crsrelay/crs/gen/crs/v1"
)

func TestCells(t *testing.T) {
	full := func() *store.UsageEntry {
		return &store.UsageEntry{
			Record:       &crsv1.UsageRecord{RequestId: "r", KeyId: "k", AccountId: "a", Model: "m"},
			ClaudeFamily: true,
			Hour:         "2026-11-26T13", Day: "2026-11-26", Month: "2026-11", Week: "2026-11-23T00",
		}
	}
	tests := []struct {
		name   string
		modify func(e *store.UsageEntry)
		want   int
	}{
		// 3 owners x 4 granularities x (unsplit + model) + weekly opus.
		{"everything", func(*store.UsageEntry) {}, 3*4*2 + 1},
		{"not claude family", func(e *store.UsageEntry) { e.ClaudeFamily = false }, 3 * 4 * 2},
		{"no account", func(e *store.UsageEntry) { e.Record.AccountId = "" }, 2*4*2 + 1},
		{"no key: no weekly cell", func(e *store.UsageEntry) { e.Record.KeyId = "" }, 2 * 4 * 2},
		{"only total label", func(e *store.UsageEntry) { e.Hour, e.Day, e.Month, e.Week = "", "", "", "" }, 3 * 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := full()
			tt.modify(e)
			cells := Cells(e)
			require.Len(t, cells, tt.want)
			seen := map[Cell]bool{}
			for _, c := range cells {
				require.False(t, seen[c], "duplicate cell %+v", c)
				seen[c] = true
				require.NotEqual(t, ScopeModel, c.Scope)
			}
		})
	}
}

func TestDelta(t *testing.T) {
	e := &store.UsageEntry{
		Record: &crsv1.UsageRecord{InputTokens: 1, OutputTokens: 2, CacheCreation_5MTokens: 4, CacheCreation_1HTokens: 8, CacheReadTokens: 16},
		Cost:   0.5, RatedCost: 0.25,
	}
	want := &crsv1.UsageTotals{
		Requests: 1, InputTokens: 1, OutputTokens: 2, CacheCreationTokens: 12, CacheReadTokens: 16,
		CacheCreation_5MTokens: 4, CacheCreation_1HTokens: 8, AllTokens: 31, Cost: 0.5, RatedCost: 0.25,
	}
	got := Delta(e)
	require.True(t, proto.Equal(want, got), "got %v", got)
	Add(got, Delta(e))
	require.Equal(t, int64(62), got.GetAllTokens())
	require.Equal(t, int64(2), got.GetRequests())
}

func TestResolve(t *testing.T) {
	tests := []struct {
		name    string
		q       store.UsageQuery
		want    Plan
		wantErr bool
	}{
		{"key day", store.UsageQuery{Scope: "key", ID: "k", Granularity: "day", Periods: []string{"d1"}},
			Plan{Scope: "key", ID: "k", Gran: "day", Periods: []string{"d1"}}, false},
		{"total replaces periods", store.UsageQuery{Scope: "account", ID: "a", Granularity: "total", Periods: []string{"x"}},
			Plan{Scope: "account", ID: "a", Gran: "total", Periods: []string{"total"}}, false},
		{"global ignores id", store.UsageQuery{Scope: "global", ID: "junk", Granularity: "month", ByModel: true},
			Plan{Scope: "global", Gran: "month", ByModel: true}, false},
		{"model reads global cells of the model", store.UsageQuery{Scope: "model", ID: "m", Granularity: "hour", Periods: []string{"h"}},
			Plan{Scope: "global", Gran: "hour", Periods: []string{"h"}, Model: "m"}, false},
		{"unknown scope", store.UsageQuery{Scope: "user", ID: "u", Granularity: "day"}, Plan{}, true},
		{"unknown granularity", store.UsageQuery{Scope: "key", ID: "k", Granularity: "week"}, Plan{}, true},
		{"key without id", store.UsageQuery{Scope: "key", Granularity: "day"}, Plan{}, true},
		{"model without id", store.UsageQuery{Scope: "model", Granularity: "day"}, Plan{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Resolve(tt.q)
			if tt.wantErr {
				require.Error(t, err)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.want, got)
		})
	}
}

func TestGroupsShareCells(t *testing.T) {
	entry := func(req, key, model, hour string, claude bool) *store.UsageEntry {
		return &store.UsageEntry{
			Record:       &crsv1.UsageRecord{RequestId: req, KeyId: key, AccountId: "a", Model: model},
			ClaudeFamily: claude,
			Hour:         hour, Day: "2026-11-26", Month: "2026-11", Week: "2026-11-23T00",
		}
	}
	es := []*store.UsageEntry{
		entry("r1", "k1", "m", "2026-11-26T13", true),
		entry("r2", "k2", "m", "2026-11-26T13", true),
		entry("r3", "k1", "m", "2026-11-26T13", true),       // same as r1
		entry("r4", "k1", "m", "2026-11-26T14", true),       // other hour
		entry("r5", "k1", "", "2026-11-26T13", true),        // unknown model
		entry("r6", "k1", "unknown", "2026-11-26T13", true), // same cells as r5
		entry("r7", "k1", "m", "2026-11-26T13", false),      // no weekly cell
	}
	var g Groups
	got := make([]int, len(es))
	for i, e := range es {
		got[i] = g.Of(e)
	}
	require.Equal(t, []int{0, 1, 0, 2, 3, 3, 4}, got)
	require.Equal(t, 5, g.Len())
	for i, e := range es {
		// The contract: an entry's cells are its group's cells.
		require.Equal(t, Cells(e), Cells(g.Entry(got[i])), "entry %s", e.Record.GetRequestId())
	}
	require.Same(t, es[0], g.Entry(0), "a group is represented by its first entry")
}
