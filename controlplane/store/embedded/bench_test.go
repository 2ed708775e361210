package embedded

import (
	"fmt"
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
