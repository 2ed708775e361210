package admin

import (
	"cmp"
	"context"
	"slices"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/crsrelay/crs/controlplane/store"
	crsv1 "github.com/crsrelay/crs/gen/crs/v1"
	"github.com/crsrelay/crs/internal/period"
)

// Usage scopes and granularities (store.UsageQuery).
const (
	scopeKey     = "key"
	scopeAccount = "account"
	scopeGlobal  = "global"

	granHour  = "hour"
	granDay   = "day"
	granMonth = "month"
	granTotal = "total"
)

// maxUsageBuckets bounds how many periods one report may span (about 41 days of hours).
const maxUsageBuckets = 1000

// Period label layouts: the ones usage records are aggregated under.
var periodLayouts = map[string]string{
	granHour:  period.HourLayout,
	granDay:   period.DayLayout,
	granMonth: period.MonthLayout,
}

// GetApiKeyUsage implements [crsv1.AdminServiceServer.GetApiKeyUsage].
func (s *Service) GetApiKeyUsage(ctx context.Context, req *crsv1.GetUsageRequest) (*crsv1.UsageReport, error) {
	r, err := s.keyUsage(ctx, req)
	return r, s.toStatus(ctx, "GetApiKeyUsage", err)
}

func (s *Service) keyUsage(ctx context.Context, req *crsv1.GetUsageRequest) (*crsv1.UsageReport, error) {
	if _, err := s.loadKey(ctx, req.GetId()); err != nil {
		return nil, err
	}
	return s.usage(ctx, scopeKey, req.GetId(), req)
}

// GetAccountUsage implements [crsv1.AdminServiceServer.GetAccountUsage].
func (s *Service) GetAccountUsage(ctx context.Context, req *crsv1.GetUsageRequest) (*crsv1.UsageReport, error) {
	r, err := s.accountUsage(ctx, req)
	return r, s.toStatus(ctx, "GetAccountUsage", err)
}

func (s *Service) accountUsage(ctx context.Context, req *crsv1.GetUsageRequest) (*crsv1.UsageReport, error) {
	if _, err := s.loadAccount(ctx, req.GetId()); err != nil {
		return nil, err
	}
	return s.usage(ctx, scopeAccount, req.GetId(), req)
}

// GetGlobalUsage implements [crsv1.AdminServiceServer.GetGlobalUsage]; id is ignored.
func (s *Service) GetGlobalUsage(ctx context.Context, req *crsv1.GetUsageRequest) (*crsv1.UsageReport, error) {
	r, err := s.usage(ctx, scopeGlobal, "", req)
	return r, s.toStatus(ctx, "GetGlobalUsage", err)
}

// usage answers a report from store.QueryUsage. Without by_model every period of the range has a
// bucket (zero when nothing was used), oldest first.
func (s *Service) usage(ctx context.Context, scope, id string, req *crsv1.GetUsageRequest) (*crsv1.UsageReport, error) {
	gran := req.GetGranularity()
	if gran == "" {
		gran = granDay
	}
	var periods []string
	if gran != granTotal {
		if _, ok := periodLayouts[gran]; !ok {
			return nil, invalid("granularity", "must be hour, day, month or total")
		}
		var err error
		periods, err = s.periods(gran, req.GetStartTime(), req.GetEndTime())
		if err != nil {
			return nil, err
		}
	}
	rows, err := s.store.QueryUsage(ctx, store.UsageQuery{Scope: scope, ID: id, Granularity: gran, Periods: periods, ByModel: req.GetByModel()})
	if err != nil {
		return nil, err
	}

	rep := &crsv1.UsageReport{Scope: scope, Id: id, Total: &crsv1.UsageTotals{}}
	order := map[string]int{}
	for i, p := range periods {
		order[p] = i
	}
	byPeriod := map[string]*crsv1.UsageBucket{}
	if !req.GetByModel() && gran != granTotal {
		for _, p := range periods {
			b := &crsv1.UsageBucket{Period: p, Totals: &crsv1.UsageTotals{}}
			byPeriod[p] = b
			rep.Buckets = append(rep.Buckets, b)
		}
	}
	for _, r := range rows {
		if r.Totals == nil {
			continue
		}
		addTotals(rep.Total, r.Totals)
		if b := byPeriod[r.Period]; b != nil {
			addTotals(b.Totals, r.Totals)
			continue
		}
		rep.Buckets = append(rep.Buckets, &crsv1.UsageBucket{Period: r.Period, Model: r.Model, Totals: r.Totals})
	}
	if req.GetByModel() {
		sortBuckets(rep.Buckets, order)
	}
	return rep, nil
}

// periods lists the labels of every period that overlaps [start, end) in the service's zone.
// Defaults: end = now; start such that the report has 24 hours, 7 days or 12 months, counting the
// current one.
func (s *Service) periods(gran string, startTS, endTS *timestamppb.Timestamp) ([]string, error) {
	var c checker
	if startTS != nil && startTS.CheckValid() != nil {
		c.add("start_time", "invalid timestamp")
	}
	if endTS != nil && endTS.CheckValid() != nil {
		c.add("end_time", "invalid timestamp")
	}
	if err := c.err(); err != nil {
		return nil, err
	}
	end := s.now()
	if endTS != nil {
		end = endTS.AsTime()
	}
	end = end.In(s.tz)
	var start time.Time
	if startTS != nil {
		start = startTS.AsTime().In(s.tz)
	} else {
		switch last := floorPeriod(gran, end.Add(-time.Nanosecond)); gran {
		case granHour:
			start = last.Add(-23 * time.Hour)
		case granDay:
			start = last.AddDate(0, 0, -6)
		default:
			start = last.AddDate(0, -11, 0)
		}
	}
	if !start.Before(end) {
		return nil, invalid("start_time", "must be before end_time")
	}
	layout := periodLayouts[gran]
	var out []string
	for t := floorPeriod(gran, start); t.Before(end); t = nextPeriod(gran, t) {
		if len(out) == maxUsageBuckets {
			return nil, invalid("start_time", "range spans more than %d %s buckets; narrow it or use a coarser granularity", maxUsageBuckets, gran)
		}
		out = append(out, t.Format(layout))
	}
	return out, nil
}

// floorPeriod returns the start of the period containing t (in t's zone).
func floorPeriod(gran string, t time.Time) time.Time {
	y, m, d := t.Date()
	switch gran {
	case granHour:
		return time.Date(y, m, d, t.Hour(), 0, 0, 0, t.Location())
	case granDay:
		return time.Date(y, m, d, 0, 0, 0, 0, t.Location())
	default:
		return time.Date(y, m, 1, 0, 0, 0, 0, t.Location())
	}
}

func nextPeriod(gran string, t time.Time) time.Time {
	switch gran {
	case granHour:
		return t.Add(time.Hour)
	case granDay:
		return t.AddDate(0, 0, 1)
	default:
		return t.AddDate(0, 1, 0)
	}
}

func addTotals(dst, src *crsv1.UsageTotals) {
	dst.Requests += src.Requests
	dst.InputTokens += src.InputTokens
	dst.OutputTokens += src.OutputTokens
	dst.CacheCreationTokens += src.CacheCreationTokens
	dst.CacheReadTokens += src.CacheReadTokens
	dst.CacheCreation_5MTokens += src.CacheCreation_5MTokens
	dst.CacheCreation_1HTokens += src.CacheCreation_1HTokens
	dst.AllTokens += src.AllTokens
	dst.Cost += src.Cost
	dst.RatedCost += src.RatedCost
}

// sortBuckets orders buckets by period (as listed) then model.
func sortBuckets(b []*crsv1.UsageBucket, order map[string]int) {
	slices.SortStableFunc(b, func(x, y *crsv1.UsageBucket) int {
		if c := cmp.Compare(order[x.Period], order[y.Period]); c != 0 {
			return c
		}
		return strings.Compare(x.Model, y.Model)
	})
}
