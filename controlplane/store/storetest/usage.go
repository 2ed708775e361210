package storetest

import (
	"fmt"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/stretchr/testify/require"

	"github.com/crsrelay/crs/controlplane/store"
	crsv1 "github.com/crsrelay/crs/gen/crs/v1"
)

// usageCmpOpts also tolerate rounding: backends may sum costs in other float widths.
var usageCmpOpts = append(append([]cmp.Option{}, cmpOpts...), cmpopts.EquateApprox(0, 1e-9))

func requireRows(t *testing.T, want, got []store.UsageRow, msgAndArgs ...any) {
	t.Helper()
	if d := cmp.Diff(want, got, usageCmpOpts...); d != "" {
		require.FailNow(t, fmt.Sprintf("usage rows mismatch (-want +got):\n%s", d), msgAndArgs...)
	}
}

type entrySpec struct {
	req, key, account, model string
	in, out, c5, c1, read    int64
	cost, rated              float64
	claude                   bool
	hour, day, month, week   string
}

func (e entrySpec) entry() *store.UsageEntry {
	return &store.UsageEntry{
		Record: &crsv1.UsageRecord{
			RequestId:              e.req,
			KeyId:                  e.key,
			AccountId:              e.account,
			AccountType:            "claude-official",
			Model:                  e.model,
			InputTokens:            e.in,
			OutputTokens:           e.out,
			CacheCreation_5MTokens: e.c5,
			CacheCreation_1HTokens: e.c1,
			CacheReadTokens:        e.read,
			Status:                 200,
			StartedAt:              ts(0),
		},
		Cost: e.cost, RatedCost: e.rated, ClaudeFamily: e.claude,
		Hour: e.hour, Day: e.day, Month: e.month, Week: e.week,
	}
}

// sum is the expected aggregate of specs, computed independently of any backend.
func sum(specs ...entrySpec) *crsv1.UsageTotals {
	t := &crsv1.UsageTotals{}
	for _, e := range specs {
		t.Requests++
		t.InputTokens += e.in
		t.OutputTokens += e.out
		t.CacheCreation_5MTokens += e.c5
		t.CacheCreation_1HTokens += e.c1
		t.CacheCreationTokens += e.c5 + e.c1
		t.CacheReadTokens += e.read
		t.AllTokens += e.in + e.out + e.c5 + e.c1 + e.read
		t.Cost += e.cost
		t.RatedCost += e.rated
	}
	return t
}

var (
	u1 = entrySpec{req: "r1", key: "k1", account: "a1", model: "m-opus", in: 100, out: 50, c5: 10, c1: 5, read: 20,
		cost: 1.0, rated: 0.5, claude: true, hour: "2026-11-26T13", day: "2026-11-26", month: "2026-11", week: "2026-11-23T00"}
	u2 = entrySpec{req: "r2", key: "k1", account: "a2", model: "m-haiku", in: 10, out: 5,
		cost: 0.1, rated: 0.05, hour: "2026-11-26T13", day: "2026-11-26", month: "2026-11", week: "2026-11-23T00"}
	u3 = entrySpec{req: "r3", key: "k1", account: "a1", model: "m-opus", in: 1, read: 3,
		cost: 2, rated: 1, claude: true, hour: "2026-11-27T01", day: "2026-11-27", month: "2026-11", week: "2026-11-23T00"}
	u4 = entrySpec{req: "r4", key: "k2", account: "a1", model: "m-haiku", in: 7, out: 1, c1: 2,
		cost: 0.25, rated: 0.25, claude: true, hour: "2026-12-01T00", day: "2026-12-01", month: "2026-12", week: "2026-11-30T00"}
)

func recordAll(t *testing.T, s store.Store, specs ...entrySpec) {
	t.Helper()
	for _, e := range specs {
		stored, err := s.RecordUsage(ctx(t), e.entry())
		require.NoError(t, err)
		require.True(t, stored, "request %s", e.req)
	}
}

func row(period, model string, totals *crsv1.UsageTotals) store.UsageRow {
	return store.UsageRow{Period: period, Model: model, Totals: totals}
}

var usageTests = []test{
	{"BatchEqualsOneByOne", func(t *testing.T, s store.Store) {
		// A batch aggregates exactly like single records, reports which entries were new (a
		// duplicate inside the batch and one stored before both count once), and a retried batch
		// changes nothing.
		recordAll(t, s, u2)
		dupOfU1 := u1
		stored, err := s.RecordUsageBatch(ctx(t), []*store.UsageEntry{u1.entry(), u2.entry(), u3.entry(), dupOfU1.entry()})
		require.NoError(t, err)
		require.Equal(t, []bool{true, false, true, false}, stored)
		again, err := s.RecordUsageBatch(ctx(t), []*store.UsageEntry{u1.entry(), u3.entry()})
		require.NoError(t, err)
		require.Equal(t, []bool{false, false}, again)
		rows, err := s.QueryUsage(ctx(t), store.UsageQuery{Scope: "key", ID: "k1", Granularity: "total"})
		require.NoError(t, err)
		requireRows(t, []store.UsageRow{row("total", "", sum(u1, u2, u3))}, rows)
		spend, err := s.KeySpend(ctx(t), "k1", "2026-11-26", "2026-11-23T00")
		require.NoError(t, err)
		require.InDelta(t, 0.55, spend.DailyCost, 1e-9)
		require.InDelta(t, 1.55, spend.TotalCost, 1e-9)
		_, err = s.RecordUsageBatch(ctx(t), []*store.UsageEntry{u4.entry(), {Record: &crsv1.UsageRecord{}}})
		require.Error(t, err, "an entry without request id fails the batch")
	}},
	{"Aggregates", func(t *testing.T, s store.Store) {
		recordAll(t, s, u1, u2, u3, u4)
		zero := &crsv1.UsageTotals{}
		for _, tc := range []struct {
			name string
			q    store.UsageQuery
			want []store.UsageRow
		}{
			{"key hours, zero-filled", store.UsageQuery{Scope: "key", ID: "k1", Granularity: "hour",
				Periods: []string{"2026-11-26T13", "2026-11-26T14", "2026-11-27T01"}},
				[]store.UsageRow{row("2026-11-26T13", "", sum(u1, u2)), row("2026-11-26T14", "", zero), row("2026-11-27T01", "", sum(u3))}},
			{"key days", store.UsageQuery{Scope: "key", ID: "k1", Granularity: "day", Periods: []string{"2026-11-26", "2026-11-27"}},
				[]store.UsageRow{row("2026-11-26", "", sum(u1, u2)), row("2026-11-27", "", sum(u3))}},
			{"key month", store.UsageQuery{Scope: "key", ID: "k1", Granularity: "month", Periods: []string{"2026-11", "2026-12"}},
				[]store.UsageRow{row("2026-11", "", sum(u1, u2, u3)), row("2026-12", "", zero)}},
			{"key total ignores periods", store.UsageQuery{Scope: "key", ID: "k1", Granularity: "total", Periods: []string{"2026-11"}},
				[]store.UsageRow{row("total", "", sum(u1, u2, u3))}},
			{"other key", store.UsageQuery{Scope: "key", ID: "k2", Granularity: "total"},
				[]store.UsageRow{row("total", "", sum(u4))}},
			{"unknown key is zero", store.UsageQuery{Scope: "key", ID: "k9", Granularity: "total"},
				[]store.UsageRow{row("total", "", zero)}},
			{"key days by model", store.UsageQuery{Scope: "key", ID: "k1", Granularity: "day",
				Periods: []string{"2026-11-26", "2026-11-27", "2026-11-28"}, ByModel: true},
				[]store.UsageRow{row("2026-11-26", "m-haiku", sum(u2)), row("2026-11-26", "m-opus", sum(u1)), row("2026-11-27", "m-opus", sum(u3))}},
			{"key total by model", store.UsageQuery{Scope: "key", ID: "k1", Granularity: "total", ByModel: true},
				[]store.UsageRow{row("total", "m-haiku", sum(u2)), row("total", "m-opus", sum(u1, u3))}},
			{"account total", store.UsageQuery{Scope: "account", ID: "a1", Granularity: "total"},
				[]store.UsageRow{row("total", "", sum(u1, u3, u4))}},
			{"account hours", store.UsageQuery{Scope: "account", ID: "a2", Granularity: "hour", Periods: []string{"2026-11-26T13"}},
				[]store.UsageRow{row("2026-11-26T13", "", sum(u2))}},
			{"account months by model", store.UsageQuery{Scope: "account", ID: "a1", Granularity: "month",
				Periods: []string{"2026-11", "2026-12"}, ByModel: true},
				[]store.UsageRow{row("2026-11", "m-opus", sum(u1, u3)), row("2026-12", "m-haiku", sum(u4))}},
			{"global total", store.UsageQuery{Scope: "global", Granularity: "total"},
				[]store.UsageRow{row("total", "", sum(u1, u2, u3, u4))}},
			{"global days", store.UsageQuery{Scope: "global", Granularity: "day", Periods: []string{"2026-11-26", "2026-12-01"}},
				[]store.UsageRow{row("2026-11-26", "", sum(u1, u2)), row("2026-12-01", "", sum(u4))}},
			{"global month by model", store.UsageQuery{Scope: "global", Granularity: "month", Periods: []string{"2026-11"}, ByModel: true},
				[]store.UsageRow{row("2026-11", "m-haiku", sum(u2)), row("2026-11", "m-opus", sum(u1, u3))}},
			{"model total", store.UsageQuery{Scope: "model", ID: "m-opus", Granularity: "total"},
				[]store.UsageRow{row("total", "", sum(u1, u3))}},
			{"model months", store.UsageQuery{Scope: "model", ID: "m-haiku", Granularity: "month", Periods: []string{"2026-11", "2026-12", "2027-01"}},
				[]store.UsageRow{row("2026-11", "", sum(u2)), row("2026-12", "", sum(u4)), row("2027-01", "", zero)}},
			{"model months by model leaves out empty periods", store.UsageQuery{Scope: "model", ID: "m-haiku", Granularity: "month",
				Periods: []string{"2026-11", "2027-01"}, ByModel: true},
				[]store.UsageRow{row("2026-11", "m-haiku", sum(u2))}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				got, err := s.QueryUsage(ctx(t), tc.q)
				require.NoError(t, err)
				requireRows(t, tc.want, got)
			})
		}
	}},
	{"WorkerRequestIDs", testWorkerRequestIDs},
	{"DuplicateRequestID", func(t *testing.T, s store.Store) {
		recordAll(t, s, u1)
		dup := u4
		dup.req = u1.req
		stored, err := s.RecordUsage(ctx(t), dup.entry())
		require.NoError(t, err)
		require.False(t, stored, "a second record with the same request id is not stored")

		for _, q := range []store.UsageQuery{
			{Scope: "global", Granularity: "total"},
			{Scope: "key", ID: "k1", Granularity: "total"},
		} {
			got, err := s.QueryUsage(ctx(t), q)
			require.NoError(t, err)
			requireRows(t, []store.UsageRow{row("total", "", sum(u1))}, got, "scope %s", q.Scope)
		}
		got, err := s.QueryUsage(ctx(t), store.UsageQuery{Scope: "key", ID: "k2", Granularity: "total"})
		require.NoError(t, err)
		requireRows(t, []store.UsageRow{row("total", "", &crsv1.UsageTotals{})}, got, "the duplicate's key got nothing")
		spend, err := s.KeySpend(ctx(t), "k1", u1.day, u1.week)
		require.NoError(t, err)
		require.InDelta(t, 0.5, spend.TotalCost, 1e-9)
	}},
	{"ConcurrentDuplicates", func(t *testing.T, s store.Store) {
		// Every worker reports the same 10 requests (as after retried report batches).
		const workers, requests = 6, 10
		var (
			wg     sync.WaitGroup
			mu     sync.Mutex
			stored int
		)
		for w := range workers {
			wg.Go(func() {
				for i := range requests {
					e := u2
					e.req = fmt.Sprintf("req-%d", (i+w)%requests)
					ok, err := s.RecordUsage(ctx(t), e.entry())
					if err != nil {
						t.Errorf("record: %v", err)
						return
					}
					if ok {
						mu.Lock()
						stored++
						mu.Unlock()
					}
				}
			})
		}
		wg.Wait()
		require.Equal(t, requests, stored, "each request id is stored exactly once")
		specs := make([]entrySpec, requests)
		for i := range specs {
			specs[i] = u2
		}
		got, err := s.QueryUsage(ctx(t), store.UsageQuery{Scope: "key", ID: "k1", Granularity: "day", Periods: []string{u2.day}})
		require.NoError(t, err)
		requireRows(t, []store.UsageRow{row(u2.day, "", sum(specs...))}, got)
	}},
	{"KeySpend", func(t *testing.T, s store.Store) {
		recordAll(t, s, u1, u2, u3, u4)
		for _, tc := range []struct {
			name           string
			key, day, week string
			want           store.KeySpend
		}{
			// Weekly opus counts only Claude-family entries (u1, u3; not u2).
			{"first day", "k1", "2026-11-26", "2026-11-23T00", store.KeySpend{DailyCost: 0.55, TotalCost: 1.55, WeeklyOpusCost: 1.5}},
			{"second day", "k1", "2026-11-27", "2026-11-23T00", store.KeySpend{DailyCost: 1, TotalCost: 1.55, WeeklyOpusCost: 1.5}},
			{"next week", "k1", "2026-11-30", "2026-11-30T00", store.KeySpend{TotalCost: 1.55}},
			{"other key", "k2", "2026-12-01", "2026-11-30T00", store.KeySpend{DailyCost: 0.25, TotalCost: 0.25, WeeklyOpusCost: 0.25}},
			{"unknown key", "k9", "2026-12-01", "2026-11-30T00", store.KeySpend{}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				got, err := s.KeySpend(ctx(t), tc.key, tc.day, tc.week)
				require.NoError(t, err)
				require.InDelta(t, tc.want.DailyCost, got.DailyCost, 1e-9, "daily")
				require.InDelta(t, tc.want.TotalCost, got.TotalCost, 1e-9, "total")
				require.InDelta(t, tc.want.WeeklyOpusCost, got.WeeklyOpusCost, 1e-9, "weekly opus")
			})
		}
	}},
	{"MissingModelIsUnknown", func(t *testing.T, s store.Store) {
		e := u1
		e.model = ""
		recordAll(t, s, e)
		got, err := s.QueryUsage(ctx(t), store.UsageQuery{Scope: "key", ID: "k1", Granularity: "total", ByModel: true})
		require.NoError(t, err)
		requireRows(t, []store.UsageRow{row("total", "unknown", sum(e))}, got)
	}},
	{"EntryWithoutAccount", func(t *testing.T, s store.Store) {
		e := u1
		e.account = ""
		recordAll(t, s, e)
		got, err := s.QueryUsage(ctx(t), store.UsageQuery{Scope: "global", Granularity: "total"})
		require.NoError(t, err)
		requireRows(t, []store.UsageRow{row("total", "", sum(e))}, got)
		got, err = s.QueryUsage(ctx(t), store.UsageQuery{Scope: "account", ID: "a1", Granularity: "total"})
		require.NoError(t, err)
		requireRows(t, []store.UsageRow{row("total", "", &crsv1.UsageTotals{})}, got)
	}},
	{"InvalidQuery", func(t *testing.T, s store.Store) {
		for _, q := range []store.UsageQuery{
			{Scope: "user", ID: "u", Granularity: "total"},
			{Scope: "key", ID: "k1", Granularity: "week"},
			{Scope: "key", Granularity: "total"},
			{Scope: "model", Granularity: "total"},
		} {
			_, err := s.QueryUsage(ctx(t), q)
			require.Error(t, err, "%+v", q)
		}
		_, err := s.RecordUsage(ctx(t), &store.UsageEntry{Record: &crsv1.UsageRecord{KeyId: "k1"}})
		require.Error(t, err, "a record without request id")
	}},
}
