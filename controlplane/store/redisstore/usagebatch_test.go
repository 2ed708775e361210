package redisstore

import (
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/crsrelay/crs/controlplane/store"
	crsv1 "github.com/crsrelay/crs/gen/crs/v1"
	"github.com/crsrelay/crs/internal/testenv"
)

// TestRecordUsageBatchChunksAndReloads pins what the conformance suite cannot see: a batch
// larger than one script call, with a duplicate that lands in another call than its first
// occurrence, and a server that lost its scripts (restart, SCRIPT FLUSH) between batches.
func TestRecordUsageBatchChunksAndReloads(t *testing.T) {
	s := newStore(t, "redis://"+testenv.StartRedis(t)+"/0")
	entry := func(id string) *store.UsageEntry {
		return &store.UsageEntry{
			Record: &crsv1.UsageRecord{RequestId: id, KeyId: "k1", Model: "m", InputTokens: 3},
			Cost:   0.25, RatedCost: 0.5, Day: "2026-11-26",
		}
	}
	const n = 2*usageChunk + 10
	es := make([]*store.UsageEntry, 0, n+1)
	for i := range n {
		es = append(es, entry("r"+strconv.Itoa(i)))
	}
	es = append(es, entry("r3")) // in the last call; r3 is in the first
	stored, err := s.RecordUsageBatch(t.Context(), es)
	require.NoError(t, err)
	for i, ok := range stored {
		require.Equal(t, i < n, ok, "entry %d", i)
	}

	require.NoError(t, s.rdb.ScriptFlush(t.Context()).Err())
	stored, err = s.RecordUsageBatch(t.Context(), []*store.UsageEntry{entry("r1"), entry("new")})
	require.NoError(t, err)
	require.Equal(t, []bool{false, true}, stored, "the script is sent again when Redis lost it")

	rows, err := s.QueryUsage(t.Context(), store.UsageQuery{Scope: "key", ID: "k1", Granularity: "day", Periods: []string{"2026-11-26"}})
	require.NoError(t, err)
	require.Len(t, rows, 1)
	got := rows[0].Totals
	require.Equal(t, int64(n+1), got.GetRequests())
	require.Equal(t, int64(3*(n+1)), got.GetInputTokens())
	require.InDelta(t, 0.25*(n+1), got.GetCost(), 1e-9)
	require.InDelta(t, 0.5*(n+1), got.GetRatedCost(), 1e-9)
}
