package embedded

import (
	"fmt"
	"runtime"
	"strconv"
	"sync/atomic"
	"testing"

	"github.com/crsrelay/crs/controlplane/store"
	crsv1 "github.com/crsrelay/crs/gen/crs/v1"
)

func benchEntry(i int64) *store.UsageEntry {
	return &store.UsageEntry{
		Record: &crsv1.UsageRecord{RequestId: fmt.Sprint("r", i), KeyId: "k1", AccountId: "a1", Model: "claude-sonnet-4",
			InputTokens: 100, OutputTokens: 50, CacheReadTokens: 1000},
		Cost: 0.01, RatedCost: 0.01, ClaudeFamily: true,
		Hour: "2026-11-26T13", Day: "2026-11-26", Month: "2026-11", Week: "2026-11-23T00",
	}
}

// BenchmarkRecordUsage measures one usage record (25 aggregate cells and a dedup entry), one
// caller at a time and from many goroutines.
func BenchmarkRecordUsage(b *testing.B) {
	b.Run("sequential", func(b *testing.B) {
		s, err := Open(b.TempDir())
		if err != nil {
			b.Fatal(err)
		}
		defer s.Close()
		for i := range int64(b.N) {
			if _, err := s.RecordUsage(b.Context(), benchEntry(i)); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("parallel", func(b *testing.B) {
		s, err := Open(b.TempDir())
		if err != nil {
			b.Fatal(err)
		}
		defer s.Close()
		var n atomic.Int64
		b.SetParallelism(8)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := s.RecordUsage(b.Context(), benchEntry(n.Add(1))); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}

// batchEntries returns one report batch as a worker sends it: n records of a few keys, accounts
// and models within one hour, with request ids as dataplane/worker newRequestID makes them (a
// per-process prefix and a base-36 sequence), starting after seq.
func batchEntries(seq uint64, n int) []*store.UsageEntry {
	models := []string{"claude-sonnet-4", "claude-opus-4", "claude-3-5-haiku"}
	es := make([]*store.UsageEntry, n)
	for i := range es {
		id := "0c1a2b3d4e5f-" + strconv.FormatUint(seq+uint64(i), 36)
		es[i] = &store.UsageEntry{
			Record: &crsv1.UsageRecord{RequestId: id, KeyId: fmt.Sprint("k", i%4), AccountId: fmt.Sprint("a", i%2),
				Model: models[i%len(models)], InputTokens: 100, OutputTokens: 50, CacheReadTokens: 1000},
			Cost: 0.01, RatedCost: 0.01, ClaudeFamily: true,
			Hour: "2026-11-26T13", Day: "2026-11-26", Month: "2026-11", Week: "2026-11-23T00",
		}
	}
	return es
}

// BenchmarkRecordUsageBatch measures the control plane's ingestion path: batches of 500 records
// and 2000 (a worker's largest, fleetclient.DefaultBatchSize), into a store that keeps growing,
// as under load. It reports the cost per record; building the entries is outside the timer. The
// commit's fsync is turned off: it is one per batch whatever the code does, and its wait would
// drown the CPU cost measured here.
func BenchmarkRecordUsageBatch(b *testing.B) {
	for _, size := range []int{500, 2000} {
		b.Run(strconv.Itoa(size), func(b *testing.B) { benchRecordUsageBatch(b, size) })
	}
}

func benchRecordUsageBatch(b *testing.B, size int) {
	s, err := Open(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	s.db.NoSync = true
	var seq uint64 = 1 << 40 // 8 base-36 digits, as after a while of uptime
	var ms0, ms1 runtime.MemStats
	var mallocs uint64
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		es := batchEntries(seq, size)
		seq += uint64(size)
		runtime.ReadMemStats(&ms0)
		b.StartTimer()
		if _, err := s.RecordUsageBatch(b.Context(), es); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		runtime.ReadMemStats(&ms1)
		mallocs += ms1.Mallocs - ms0.Mallocs
		b.StartTimer()
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*size), "ns/record")
	b.ReportMetric(float64(mallocs)/float64(b.N*size), "allocs/record")
}
