// Package usageagg is the usage aggregation model shared by the store backends: which aggregate
// cells one usage entry adds to, what it adds, and which cells a usage query reads. Backends only
// map a Cell to their own key layout, so both aggregate identically. It depends on the store
// interface package and the contract's generated types, nothing else.
package usageagg

import (
	"fmt"

	"github.com/crsrelay/crs/controlplane/store"
	crsv1 "github.com/crsrelay/crs/gen/crs/v1"
)

// Scopes of aggregates. Model totals are global totals split by model, so the "model" scope of
// a query reads global cells of one model; no cell has scope "model".
const (
	ScopeKey     = "key"
	ScopeAccount = "account"
	ScopeGlobal  = "global"
	ScopeModel   = "model"
)

// Granularities. GranWeekOpus is a key's Claude-family cost per week (store.UsageEntry.Week).
const (
	GranHour     = "hour"
	GranDay      = "day"
	GranMonth    = "month"
	GranTotal    = "total"
	GranWeekOpus = "week_opus"
)

// PeriodTotal is the only period label of GranTotal.
const PeriodTotal = "total"

// UnknownModel is the model label of entries whose record names no model.
const UnknownModel = "unknown"

// Cell names one aggregate: a scope and id, a granularity and period label, and a model when the
// cell is split by model (empty otherwise). Global cells have an empty ID.
type Cell struct {
	Scope, ID, Gran, Period, Model string
}

// Delta returns what e adds to each of its cells.
func Delta(e *store.UsageEntry) *crsv1.UsageTotals {
	d := &crsv1.UsageTotals{}
	AddEntry(d, e)
	return d
}

// AddEntry adds Delta(e) to dst without allocating it.
func AddEntry(dst *crsv1.UsageTotals, e *store.UsageEntry) {
	r := e.Record
	in, out := r.GetInputTokens(), r.GetOutputTokens()
	c5, c1 := r.GetCacheCreation_5MTokens(), r.GetCacheCreation_1HTokens()
	read := r.GetCacheReadTokens()
	dst.Requests++
	dst.InputTokens += in
	dst.OutputTokens += out
	dst.CacheCreationTokens += c5 + c1
	dst.CacheReadTokens += read
	dst.CacheCreation_5MTokens += c5
	dst.CacheCreation_1HTokens += c1
	dst.AllTokens += in + out + c5 + c1 + read
	dst.Cost += e.Cost
	dst.RatedCost += e.RatedCost
}

// Add adds d to dst.
func Add(dst, d *crsv1.UsageTotals) {
	dst.Requests += d.GetRequests()
	dst.InputTokens += d.GetInputTokens()
	dst.OutputTokens += d.GetOutputTokens()
	dst.CacheCreationTokens += d.GetCacheCreationTokens()
	dst.CacheReadTokens += d.GetCacheReadTokens()
	dst.CacheCreation_5MTokens += d.GetCacheCreation_5MTokens()
	dst.CacheCreation_1HTokens += d.GetCacheCreation_1HTokens()
	dst.AllTokens += d.GetAllTokens()
	dst.Cost += d.GetCost()
	dst.RatedCost += d.GetRatedCost()
}

// Model returns the model label e is split under.
func Model(e *store.UsageEntry) string {
	if m := e.Record.GetModel(); m != "" {
		return m
	}
	return UnknownModel
}

// Owner is one (scope, id) an entry is aggregated under.
type Owner struct{ Scope, ID string }

// Owners returns the scopes e counts toward: its key and account (when set) and global.
func Owners(e *store.UsageEntry) []Owner {
	owners := make([]Owner, 0, 3)
	if id := e.Record.GetKeyId(); id != "" {
		owners = append(owners, Owner{ScopeKey, id})
	}
	if id := e.Record.GetAccountId(); id != "" {
		owners = append(owners, Owner{ScopeAccount, id})
	}
	return append(owners, Owner{ScopeGlobal, ""})
}

// Cells returns every cell e adds Delta(e) to: for each owner and each granularity with a label
// (hour, day, month, and total always), the unsplit cell and the cell of e's model; plus the key's
// weekly Claude-family cell when e.ClaudeFamily and e.Week are set.
func Cells(e *store.UsageEntry) []Cell {
	model := Model(e)
	periods := [...]struct{ gran, label string }{
		{GranHour, e.Hour}, {GranDay, e.Day}, {GranMonth, e.Month}, {GranTotal, PeriodTotal},
	}
	owners := Owners(e)
	cells := make([]Cell, 0, len(owners)*len(periods)*2+1)
	for _, o := range owners {
		for _, p := range periods {
			if p.label == "" {
				continue
			}
			cells = append(cells,
				Cell{Scope: o.Scope, ID: o.ID, Gran: p.gran, Period: p.label},
				Cell{Scope: o.Scope, ID: o.ID, Gran: p.gran, Period: p.label, Model: model})
		}
	}
	if key := e.Record.GetKeyId(); key != "" && e.ClaudeFamily && e.Week != "" {
		cells = append(cells, Cell{Scope: ScopeKey, ID: key, Gran: GranWeekOpus, Period: e.Week})
	}
	return cells
}

// SpendCells returns the cells whose RatedCost make up a key's KeySpend: daily, total, weekly opus.
func SpendCells(keyID, day, week string) (daily, total, weeklyOpus Cell) {
	return Cell{Scope: ScopeKey, ID: keyID, Gran: GranDay, Period: day},
		Cell{Scope: ScopeKey, ID: keyID, Gran: GranTotal, Period: PeriodTotal},
		Cell{Scope: ScopeKey, ID: keyID, Gran: GranWeekOpus, Period: week}
}

// Plan is a validated usage query in terms of cells.
type Plan struct {
	// Scope and ID of the cells read (global and "" for a model query).
	Scope, ID string
	Gran      string
	// Periods to read, in the order asked (["total"] for GranTotal).
	Periods []string
	// ByModel: rows are split by model.
	ByModel bool
	// Model, when set, restricts reading to that model's cells (a "model" scope query).
	Model string
}

// Resolve validates q and turns it into a Plan.
func Resolve(q store.UsageQuery) (Plan, error) {
	p := Plan{Scope: q.Scope, ID: q.ID, Gran: q.Granularity, Periods: q.Periods, ByModel: q.ByModel}
	switch q.Scope {
	case ScopeKey, ScopeAccount:
		if q.ID == "" {
			return Plan{}, fmt.Errorf("store: usage query of scope %q needs an id", q.Scope)
		}
	case ScopeGlobal:
		p.ID = ""
	case ScopeModel:
		if q.ID == "" {
			return Plan{}, fmt.Errorf("store: usage query of scope %q needs a model", q.Scope)
		}
		p.Scope, p.ID, p.Model = ScopeGlobal, "", q.ID
	default:
		return Plan{}, fmt.Errorf("store: unknown usage scope %q", q.Scope)
	}
	switch q.Granularity {
	case GranHour, GranDay, GranMonth:
	case GranTotal:
		p.Periods = []string{PeriodTotal}
	default:
		return Plan{}, fmt.Errorf("store: unknown usage granularity %q", q.Granularity)
	}
	return p, nil
}

// Rows lists the rows of an unsplit plan (or a model plan): one per period, in order, using
// get to read each cell (nil = nothing recorded, reported as zero totals). For a model plan split
// by model, rows without data are left out, as in every split result.
func Rows(p Plan, get func(Cell) (*crsv1.UsageTotals, error)) ([]store.UsageRow, error) {
	rows := make([]store.UsageRow, 0, len(p.Periods))
	for _, period := range p.Periods {
		t, err := get(Cell{Scope: p.Scope, ID: p.ID, Gran: p.Gran, Period: period, Model: p.Model})
		if err != nil {
			return nil, err
		}
		row := store.UsageRow{Period: period, Totals: t}
		if p.ByModel {
			if t == nil {
				continue
			}
			row.Model = p.Model
		}
		if row.Totals == nil {
			row.Totals = &crsv1.UsageTotals{}
		}
		rows = append(rows, row)
	}
	return rows, nil
}
