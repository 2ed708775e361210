package embedded

import (
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	bolt "go.etcd.io/bbolt"

	"github.com/crsrelay/crs/controlplane/store"
	crsv1 "github.com/crsrelay/crs/gen/crs/v1"
)

func TestParseWorkerID(t *testing.T) {
	tests := []struct {
		id     string
		prefix string
		seq    uint64
		ok     bool
	}{
		{"0123456789ab-0", "0123456789ab-", 0, true},
		{"0123456789ab-z", "0123456789ab-", 35, true},
		{"0123456789ab-10", "0123456789ab-", 36, true},
		{"0123456789ab-" + strconv.FormatUint(^uint64(0), 36), "0123456789ab-", ^uint64(0), true},
		{"0123456789ab-3w5e11264sgsg", "", 0, false}, // 2^64: overflows
		{"0123456789ab-010", "", 0, false},           // leading zero
		{"0123456789ab-1A", "", 0, false},            // upper case digit
		{"0123456789AB-10", "", 0, false},            // upper case prefix
		{"0123456789xy-10", "", 0, false},            // prefix not hex
		{"0123456789ab_10", "", 0, false},            // no dash
		{"0123456789ab-", "", 0, false},              // no sequence
		{"0123456789ab-1-", "", 0, false},
		{"r1", "", 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.id, func(t *testing.T) {
			prefix, seq, ok := parseWorkerID(tt.id)
			require.Equal(t, tt.ok, ok)
			require.Equal(t, tt.prefix, prefix)
			require.Equal(t, tt.seq, seq)
			if ok {
				require.Equal(t, tt.id, prefix+strconv.FormatUint(seq, 36), "canonical ids only")
			}
		})
	}
}

func workerEntries(prefix string, seqs ...uint64) []*store.UsageEntry {
	es := make([]*store.UsageEntry, len(seqs))
	for i, n := range seqs {
		es[i] = &store.UsageEntry{Record: &crsv1.UsageRecord{RequestId: prefix + strconv.FormatUint(n, 36), KeyId: "k"}}
	}
	return es
}

func countTrue(bs []bool) int {
	n := 0
	for _, b := range bs {
		if b {
			n++
		}
	}
	return n
}

func TestWorkerIDsDedupAcrossBlocks(t *testing.T) {
	s := openT(t, t.TempDir())
	ctx := t.Context()
	// Every sequence number of three blocks, in uneven batches, each stored exactly once even
	// when sent again in other batches.
	var seqs []uint64
	for n := range uint64(3 * seqBlockBits) {
		seqs = append(seqs, n)
	}
	for _, batch := range [][]uint64{seqs[:1000], seqs[1000:5000], seqs[5000:]} {
		stored, err := s.RecordUsageBatch(ctx, workerEntries("0123456789ab-", batch...))
		require.NoError(t, err)
		require.Equal(t, len(batch), countTrue(stored))
	}
	for _, batch := range [][]uint64{seqs[:7000], seqs[7000:]} {
		stored, err := s.RecordUsageBatch(ctx, workerEntries("0123456789ab-", batch...))
		require.NoError(t, err)
		require.Zero(t, countTrue(stored))
	}
	require.Equal(t, 3, s.count(t, bucketUsageSeq), "one entry per block")
	require.Zero(t, s.count(t, bucketUsageReq))
	rows, err := s.QueryUsage(ctx, store.UsageQuery{Scope: "key", ID: "k", Granularity: "total"})
	require.NoError(t, err)
	require.Equal(t, int64(len(seqs)), rows[0].Totals.GetRequests())
}

func TestWorkerIDBlocksExpire(t *testing.T) {
	s := openT(t, t.TempDir())
	ctx := t.Context()
	now := time.Now()
	s.now = func() time.Time { return now }
	stored, err := s.RecordUsageBatch(ctx, workerEntries("0123456789ab-", 1, 2))
	require.NoError(t, err)
	require.Equal(t, []bool{true, true}, stored)

	// A block written again lives DedupTTL from its last write: the id stored first is
	// remembered at least DedupTTL.
	now = now.Add(DedupTTL - time.Hour)
	stored, err = s.RecordUsageBatch(ctx, workerEntries("0123456789ab-", 1, 3))
	require.NoError(t, err)
	require.Equal(t, []bool{false, true}, stored)
	require.NoError(t, s.sweep(now.Add(2*time.Hour)))
	require.Equal(t, 1, s.count(t, bucketUsageSeq), "the block was written an hour ago")

	// Past DedupTTL an expired block reads as empty, and the sweep deletes it and its index.
	now = now.Add(DedupTTL)
	stored, err = s.RecordUsageBatch(ctx, workerEntries("0123456789ab-", 3))
	require.NoError(t, err)
	require.Equal(t, []bool{true}, stored, "remembered no longer than DedupTTL after the block's last write")
	require.NoError(t, s.sweep(now.Add(DedupTTL)))
	require.Zero(t, s.count(t, bucketUsageSeq))
	require.Zero(t, s.count(t, bucketUsageSeqExp))
}

func TestWorkerIDsStoredByEarlierVersionAreDuplicates(t *testing.T) {
	s := openT(t, t.TempDir())
	ctx := t.Context()
	// Before usage_seq, every id had its own usage_req entry.
	require.NoError(t, s.db.Update(func(tx *bolt.Tx) error {
		return putExpiring(tx.Bucket(bucketUsageReq), tx.Bucket(bucketUsageReqExp),
			[]byte("0123456789ab-5"), time.Now().Add(DedupTTL), nil)
	}))
	stored, err := s.RecordUsageBatch(ctx, workerEntries("0123456789ab-", 4, 5, 6))
	require.NoError(t, err)
	require.Equal(t, []bool{true, false, true}, stored)
}
