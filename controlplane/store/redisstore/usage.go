package redisstore

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/crsrelay/crs/controlplane/store"
	"github.com/crsrelay/crs/controlplane/store/internal/usageagg"
	crsv1 "github.com/crsrelay/crs/gen/crs/v1"
)

// DedupTTL is how long a usage request id is remembered.
const DedupTTL = 7 * 24 * time.Hour

// Retention of aggregates by granularity, counted from the first request of the period (so
// always longer than the period itself). Month and total aggregates are kept. Without it, hourly
// hashes (several per key, account and model every hour) would grow Redis without bound; the
// admin's default report ranges (24 hours, 7 days, 12 months) lie well inside.
var retention = map[string]time.Duration{
	usageagg.GranHour:     35 * 24 * time.Hour,
	usageagg.GranDay:      400 * 24 * time.Hour,
	usageagg.GranWeekOpus: 35 * 24 * time.Hour,
}

// Aggregate hash fields.
const (
	fRequests  = "requests"
	fInput     = "input"
	fOutput    = "output"
	fCC5m      = "cc5m"
	fCC1h      = "cc1h"
	fCacheRead = "cache_read"
	fAll       = "all"
	fCost      = "cost"
	fRatedCost = "rated_cost"
)

// cellKey is the Redis key of an aggregate cell (see the package doc).
func cellKey(c usageagg.Cell) string {
	k := usagePrefix + c.Scope + ":" + c.ID + ":" + c.Gran + ":" + c.Period
	if c.Model != "" {
		k += modelCellMarker + c.Model
	}
	return k
}

func modelsKey(scope, id string) string { return usageModelsPfx + scope + ":" + id }

// QueryUsage implements [store.Store.QueryUsage].
func (s *Store) QueryUsage(ctx context.Context, q store.UsageQuery) ([]store.UsageRow, error) {
	p, err := usageagg.Resolve(q)
	if err != nil {
		return nil, err
	}
	if !p.ByModel || p.Model != "" {
		cells := make([]usageagg.Cell, len(p.Periods))
		for i, period := range p.Periods {
			cells[i] = usageagg.Cell{Scope: p.Scope, ID: p.ID, Gran: p.Gran, Period: period, Model: p.Model}
		}
		totals, err := s.readCells(ctx, cells)
		if err != nil {
			return nil, fmt.Errorf("query usage: %w", err)
		}
		i := 0
		return usageagg.Rows(p, func(usageagg.Cell) (*crsv1.UsageTotals, error) {
			t := totals[i]
			i++
			return t, nil
		})
	}

	models, err := s.rdb.SMembers(ctx, modelsKey(p.Scope, p.ID)).Result()
	if err != nil {
		return nil, fmt.Errorf("query usage: models: %w", err)
	}
	slices.Sort(models)
	var cells []usageagg.Cell
	for _, period := range p.Periods {
		for _, m := range models {
			cells = append(cells, usageagg.Cell{Scope: p.Scope, ID: p.ID, Gran: p.Gran, Period: period, Model: m})
		}
	}
	totals, err := s.readCells(ctx, cells)
	if err != nil {
		return nil, fmt.Errorf("query usage: %w", err)
	}
	var rows []store.UsageRow
	for i, c := range cells {
		if totals[i] != nil {
			rows = append(rows, store.UsageRow{Period: c.Period, Model: c.Model, Totals: totals[i]})
		}
	}
	return rows, nil
}

// KeySpend implements [store.Store.KeySpend].
func (s *Store) KeySpend(ctx context.Context, keyID, day, week string) (store.KeySpend, error) {
	daily, total, weekly := usageagg.SpendCells(keyID, day, week)
	pipe := s.rdb.Pipeline()
	cmds := []*redis.StringCmd{
		pipe.HGet(ctx, cellKey(daily), fRatedCost),
		pipe.HGet(ctx, cellKey(total), fRatedCost),
		pipe.HGet(ctx, cellKey(weekly), fRatedCost),
	}
	if _, err := pipe.Exec(ctx); err != nil && !isNil(err) {
		return store.KeySpend{}, fmt.Errorf("key spend %s: %w", keyID, err)
	}
	var v [3]float64
	for i, c := range cmds {
		f, err := c.Float64()
		if isNil(err) {
			continue
		}
		if err != nil {
			return store.KeySpend{}, fmt.Errorf("key spend %s: %w", keyID, err)
		}
		v[i] = f
	}
	return store.KeySpend{DailyCost: v[0], TotalCost: v[1], WeeklyOpusCost: v[2]}, nil
}

// readCells reads cells in one pipeline; a cell with nothing recorded is nil.
func (s *Store) readCells(ctx context.Context, cells []usageagg.Cell) ([]*crsv1.UsageTotals, error) {
	if len(cells) == 0 {
		return nil, nil
	}
	pipe := s.rdb.Pipeline()
	cmds := make([]*redis.MapStringStringCmd, len(cells))
	for i, c := range cells {
		cmds[i] = pipe.HGetAll(ctx, cellKey(c))
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, err
	}
	out := make([]*crsv1.UsageTotals, len(cells))
	for i, c := range cmds {
		h := c.Val()
		if len(h) == 0 {
			continue
		}
		t, err := decodeTotals(h)
		if err != nil {
			return nil, fmt.Errorf("cell %s: %w", cellKey(cells[i]), err)
		}
		out[i] = t
	}
	return out, nil
}

func decodeTotals(h map[string]string) (*crsv1.UsageTotals, error) {
	var t crsv1.UsageTotals
	for field, dst := range map[string]*int64{
		fRequests: &t.Requests, fInput: &t.InputTokens, fOutput: &t.OutputTokens,
		fCC5m: &t.CacheCreation_5MTokens, fCC1h: &t.CacheCreation_1HTokens,
		fCacheRead: &t.CacheReadTokens, fAll: &t.AllTokens,
	} {
		if v, ok := h[field]; ok {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return nil, fmt.Errorf("field %s: %w", field, err)
			}
			*dst = n
		}
	}
	for field, dst := range map[string]*float64{fCost: &t.Cost, fRatedCost: &t.RatedCost} {
		if v, ok := h[field]; ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				return nil, fmt.Errorf("field %s: %w", field, err)
			}
			*dst = f
		}
	}
	t.CacheCreationTokens = t.CacheCreation_5MTokens + t.CacheCreation_1HTokens
	return &t, nil
}
