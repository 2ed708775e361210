package storetest

import (
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/crsrelay/crs/controlplane/store"
)

// workerPrefix is a request id prefix as dataplane/worker newRequestID makes it: 12 hex digits
// of a per-process random value and '-'; a base-36 sequence number follows.
const workerPrefix = "0a1b2c3d4e5f-"

func workerID(seq uint64) string { return workerPrefix + strconv.FormatUint(seq, 36) }

// testWorkerRequestIDs pins deduplication of ids in the workers' format, which a backend may
// keep in a compact form (the embedded store keeps bits per block of sequence numbers): batches
// that straddle blocks and digit counts, duplicates inside a batch and across batches, another
// worker's prefix, and look-alike ids that are not canonical base 36 and so are different ids.
func testWorkerRequestIDs(t *testing.T, s store.Store) {
	entries := func(ids ...string) []*store.UsageEntry {
		es := make([]*store.UsageEntry, len(ids))
		for i, id := range ids {
			e := u2
			e.req = id
			es[i] = e.entry()
		}
		return es
	}
	record := func(ids ...string) []bool {
		t.Helper()
		stored, err := s.RecordUsageBatch(ctx(t), entries(ids...))
		require.NoError(t, err)
		return stored
	}

	first := []string{
		workerID(35), workerID(36), // "z", "10": the sequence gains a digit
		workerID(4095), workerID(4096), workerID(4097), // a block boundary for 4096-id blocks
		workerID(1<<40 - 1), workerID(1 << 40), // far apart
		workerID(36), // a duplicate inside the batch
		"fedcba987654-" + strconv.FormatUint(4096, 36), // another worker, same sequence
	}
	require.Equal(t, []bool{true, true, true, true, true, true, true, false, true}, record(first...))

	again := []string{
		workerID(4096), workerID(4098), workerID(35), // resent and new mixed
		workerPrefix + "0" + strconv.FormatUint(4096, 36), // leading zero: another id
		workerPrefix + "10" + "",                          // "10" = 36: stored before
		"0A1B2C3D4E5F-10",                                 // upper case: another id
		workerPrefix + "Z",                                // upper case digit: another id
		workerPrefix,                                      // no sequence
		workerPrefix + "zzzzzzzzzzzzzzzzz",                // beyond 64 bits: an id all the same
	}
	require.Equal(t, []bool{false, true, false, true, false, true, true, true, true}, record(again...))
	require.Equal(t, make([]bool, len(again)), record(again...), "a resent batch is all duplicates")

	specs := make([]entrySpec, 8+6)
	for i := range specs {
		specs[i] = u2
	}
	rows, err := s.QueryUsage(ctx(t), store.UsageQuery{Scope: "key", ID: u2.key, Granularity: "total"})
	require.NoError(t, err)
	requireRows(t, []store.UsageRow{row("total", "", sum(specs...))}, rows, "each new id counts once")
}
