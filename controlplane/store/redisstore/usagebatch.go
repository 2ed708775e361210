package redisstore

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/crsrelay/crs/controlplane/store"
	"github.com/crsrelay/crs/controlplane/store/internal/usageagg"
	crsv1 "github.com/crsrelay/crs/gen/crs/v1"
)

// recordUsageScript stores a chunk of usage entries, grouped by the cells they share
// (usageagg.Groups). For each group it sets the dedup marker of each of its records, sums what
// the new ones add, and then increments each of the group's aggregate hashes once per field: a
// batch of a few thousand records mostly shares a few groups, so this is a few commands per
// record instead of one per record, cell and field.
//
// KEYS, per group: its nCells aggregate hashes, its nSets model sets, then the dedup key of
// each of its nRecs records.
// ARGV: dedup TTL seconds; the 9 hash field names (requests, then the 6 other integer fields,
// then the 2 float fields); the number of groups; then per group: nCells, nSets, nRecs, model,
// change (empty = none), nCells retention TTLs in seconds (0 = keep), and per record its 8
// increments in field order after requests (a record adds 1 request).
// A hash whose requests counter becomes the group's count of new records is new and gets its
// retention TTL, so EXPIRE runs once per aggregate, not once per request. Sums are Lua numbers
// (doubles), exact for the integer fields below 2^53.
// Returns one character per record, in KEYS order: '1' stored, '0' a duplicate request id.
var recordUsageScript = redis.NewScript(`
-- float formats x with the fewest digits that read back as x (HINCRBYFLOAT keeps them).
local function float(x)
  for p = 15, 16 do
    local s = string.format('%.' .. p .. 'g', x)
    if tonumber(s) == x then return s end
  end
  return string.format('%.17g', x)
end
local ttl = ARGV[1]
local F = {}
for f = 1, 9 do F[f] = ARGV[1 + f] end
local nGroups = tonumber(ARGV[11])
local a, k = 12, 1
local stored = {}
for g = 1, nGroups do
  local nCells, nSets, nRecs = tonumber(ARGV[a]), tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  local model, change = ARGV[a + 3], ARGV[a + 4]
  local ttls = a + 5
  a = ttls + nCells
  local cells, sets = k, k + nCells
  k = sets + nSets
  local n, sum = 0, {0, 0, 0, 0, 0, 0, 0, 0}
  for r = 1, nRecs do
    if redis.call('SET', KEYS[k], '1', 'NX', 'EX', ttl) then
      n = n + 1
      for f = 1, 8 do sum[f] = sum[f] + tonumber(ARGV[a + f - 1]) end
      stored[#stored + 1] = '1'
    else
      stored[#stored + 1] = '0'
    end
    k = k + 1
    a = a + 8
  end
  if n > 0 then
    for c = 0, nCells - 1 do
      local key = KEYS[cells + c]
      if redis.call('HINCRBY', key, F[1], n) == n then
        local t = ARGV[ttls + c]
        if t ~= '0' then redis.call('EXPIRE', key, t) end
      end
      for f = 1, 6 do
        if sum[f] ~= 0 then redis.call('HINCRBY', key, F[1 + f], string.format('%d', sum[f])) end
      end
      for f = 7, 8 do
        if sum[f] ~= 0 then redis.call('HINCRBYFLOAT', key, F[1 + f], float(sum[f])) end
      end
    end
    for s = sets, sets + nSets - 1 do redis.call('SADD', KEYS[s], model) end
    if change ~= '' then redis.call('PUBLISH', 'crs:changes', change) end
  end
end
return table.concat(stored)
`)

// usageChunk bounds the records of one script call: a call blocks Redis while it runs, so a
// large batch is split into calls of a few milliseconds at most, sent in one pipeline.
const usageChunk = 500

// RecordUsage implements [store.Store.RecordUsage] with the script of RecordUsageBatch.
func (s *Store) RecordUsage(ctx context.Context, e *store.UsageEntry) (bool, error) {
	stored, err := s.RecordUsageBatch(ctx, []*store.UsageEntry{e})
	if err != nil {
		return false, err
	}
	return stored[0], nil
}

// RecordUsageBatch implements [store.Store.RecordUsageBatch]: one pipelined round trip of
// recordUsageScript calls, each atomic on its own.
func (s *Store) RecordUsageBatch(ctx context.Context, es []*store.UsageEntry) ([]bool, error) {
	for _, e := range es {
		if e == nil || e.Record == nil || e.Record.GetRequestId() == "" {
			return nil, fmt.Errorf("record usage: empty request id")
		}
	}
	if len(es) == 0 {
		return nil, nil
	}
	var calls []*usageCall
	for start := 0; start < len(es); start += usageChunk {
		calls = append(calls, newUsageCall(es, start, min(start+usageChunk, len(es))))
	}
	if err := s.runUsageCalls(ctx, calls); err != nil {
		return nil, fmt.Errorf("record usage batch: %w", err)
	}
	stored := make([]bool, len(es))
	for _, c := range calls {
		res, err := c.cmd.Text()
		if err != nil {
			return nil, fmt.Errorf("record usage batch: %w", err)
		}
		if len(res) != len(c.order) {
			return nil, fmt.Errorf("record usage batch: script answered %d results for %d records", len(res), len(c.order))
		}
		for j, i := range c.order {
			stored[i] = res[j] == '1'
		}
	}
	return stored, nil
}

// runUsageCalls sends every call in one pipeline by script hash. Calls that found the script not
// loaded (a restarted or flushed Redis) did nothing, and are sent again with the script's text.
func (s *Store) runUsageCalls(ctx context.Context, calls []*usageCall) error {
	pipe := s.rdb.Pipeline()
	for _, c := range calls {
		c.cmd = recordUsageScript.EvalSha(ctx, pipe, c.keys, c.args...)
	}
	if _, err := pipe.Exec(ctx); err != nil && !redis.HasErrorPrefix(err, "NOSCRIPT") {
		return err
	}
	var again []*usageCall
	for _, c := range calls {
		if redis.HasErrorPrefix(c.cmd.Err(), "NOSCRIPT") {
			again = append(again, c)
		}
	}
	if len(again) == 0 {
		return nil
	}
	pipe = s.rdb.Pipeline()
	for _, c := range again {
		c.cmd = recordUsageScript.Eval(ctx, pipe, c.keys, c.args...)
	}
	_, err := pipe.Exec(ctx)
	return err
}

// usageCall is one recordUsageScript call: the entries es[start:end], grouped.
type usageCall struct {
	keys []string
	args []any
	// order[j] is the index in es of the j-th record the script visits (its j-th result).
	order []int
	cmd   *redis.Cmd
}

// newUsageCall builds the script's keys and arguments for es[start:end].
func newUsageCall(es []*store.UsageEntry, start, end int) *usageCall {
	var groups usageagg.Groups
	var members [][]int
	for i := start; i < end; i++ {
		g := groups.Of(es[i])
		if g == len(members) {
			members = append(members, nil)
		}
		members[g] = append(members[g], i)
	}
	c := &usageCall{order: make([]int, 0, end-start)}
	c.args = append(c.args, int64(DedupTTL/time.Second),
		fRequests, fInput, fOutput, fCC5m, fCC1h, fCacheRead, fAll, fCost, fRatedCost, groups.Len())
	for g := range groups.Len() {
		first := groups.Entry(g)
		cells := usageagg.Cells(first)
		owners := usageagg.Owners(first)
		for _, cell := range cells {
			c.keys = append(c.keys, cellKey(cell))
		}
		for _, o := range owners {
			c.keys = append(c.keys, modelsKey(o.Scope, o.ID))
		}
		change := ""
		if key := first.Record.GetKeyId(); key != "" {
			change = changePayload(store.KindKeyUsage, key)
		}
		c.args = append(c.args, len(cells), len(owners), len(members[g]), usageagg.Model(first), change)
		for _, cell := range cells {
			c.args = append(c.args, int64(retention[cell.Gran]/time.Second))
		}
		for _, i := range members[g] {
			c.keys = append(c.keys, usageReqPrefix+es[i].Record.GetRequestId())
			var d crsv1.UsageTotals
			usageagg.AddEntry(&d, es[i])
			c.args = append(c.args, d.InputTokens, d.OutputTokens, d.CacheCreation_5MTokens,
				d.CacheCreation_1HTokens, d.CacheReadTokens, d.AllTokens, d.Cost, d.RatedCost)
			c.order = append(c.order, i)
		}
	}
	return c
}
