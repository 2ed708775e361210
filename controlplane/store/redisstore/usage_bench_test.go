package redisstore

import (
	"fmt"
	"strconv"
	"strings"
	"testing"

	"github.com/crsrelay/crs/controlplane/store"
	crsv1 "github.com/crsrelay/crs/gen/crs/v1"
	"github.com/crsrelay/crs/internal/testenv"
)

// benchBatch returns one report batch as a worker sends it: n records of a few keys, accounts and
// models within one hour, with ids in the workers' format, starting after seq.
func benchBatch(seq uint64, n int) []*store.UsageEntry {
	models := []string{"claude-sonnet-4", "claude-opus-4", "claude-3-5-haiku"}
	es := make([]*store.UsageEntry, n)
	for i := range es {
		es[i] = &store.UsageEntry{
			Record: &crsv1.UsageRecord{RequestId: "0c1a2b3d4e5f-" + strconv.FormatUint(seq+uint64(i), 36),
				KeyId: fmt.Sprint("k", i%4), AccountId: fmt.Sprint("a", i%2), Model: models[i%len(models)],
				InputTokens: 100, OutputTokens: 50, CacheReadTokens: 1000},
			Cost: 0.01, RatedCost: 0.01, ClaudeFamily: true,
			Hour: "2026-11-26T13", Day: "2026-11-26", Month: "2026-11", Week: "2026-11-23T00",
		}
	}
	return es
}

// redisCPU returns the server's user+system CPU seconds so far (INFO cpu).
func redisCPU(b *testing.B, s *Store) float64 {
	info, err := s.rdb.Info(b.Context(), "cpu").Result()
	if err != nil {
		b.Fatal(err)
	}
	var total float64
	for _, line := range strings.Split(info, "\r\n") {
		for _, f := range []string{"used_cpu_user:", "used_cpu_sys:"} {
			if v, ok := strings.CutPrefix(line, f); ok {
				x, err := strconv.ParseFloat(v, 64)
				if err != nil {
					b.Fatal(err)
				}
				total += x
			}
		}
	}
	return total
}

// BenchmarkRecordUsageBatch measures batches of 500 records (a worker's largest,
// fleetclient.DefaultBatchSize) and 2000: the time per record as the control plane waits for
// it, and the Redis server's CPU per record.
func BenchmarkRecordUsageBatch(b *testing.B) {
	for _, size := range []int{500, 2000} {
		b.Run(strconv.Itoa(size), func(b *testing.B) { benchRecordUsageBatch(b, size) })
	}
}

func benchRecordUsageBatch(b *testing.B, size int) {
	s, err := New(b.Context(), "redis://"+testenv.StartRedis(b)+"/0")
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	var seq uint64 = 1 << 40
	cpu0 := redisCPU(b, s)
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		es := benchBatch(seq, size)
		seq += uint64(size)
		b.StartTimer()
		if _, err := s.RecordUsageBatch(b.Context(), es); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*size), "ns/record")
	b.ReportMetric((redisCPU(b, s)-cpu0)*1e9/float64(b.N*size), "redis-cpu-ns/record")
}
