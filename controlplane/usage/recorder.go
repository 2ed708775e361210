package usage

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/crsrelay/crs/controlplane/pricing"
	"github.com/crsrelay/crs/controlplane/store"
	crsv1 "github.com/crsrelay/crs/gen/crs/v1"
	"github.com/crsrelay/crs/internal/period"
)

// Services that service rates are keyed by (Settings.service_rates, ApiKey.service_rates).
const (
	ServiceClaude  = "claude"
	ServiceCodex   = "codex"
	ServiceGemini  = "gemini"
	ServiceDroid   = "droid"
	ServiceBedrock = "bedrock"
	ServiceAzure   = "azure"
	ServiceCCR     = "ccr"
)

// accountServices maps account types to services (Node.js serviceRatesService
// getServiceFromAccountType).
var accountServices = map[string]string{
	"claude-official":  ServiceClaude,
	"claude-console":   ServiceClaude,
	"ccr":              ServiceCCR,
	"bedrock":          ServiceBedrock,
	"gemini":           ServiceGemini,
	"gemini-api":       ServiceGemini,
	"openai":           ServiceCodex,
	"openai-responses": ServiceCodex,
	"azure-openai":     ServiceAzure,
	"droid":            ServiceDroid,
}

// ServiceFor returns the service whose rates apply to a request on an account of accountType;
// for an unknown type it guesses from the model name, defaulting to claude (Node.js
// serviceRatesService getService).
func ServiceFor(accountType, model string) string {
	if s, ok := accountServices[accountType]; ok {
		return s
	}
	m := strings.ToLower(model)
	has := func(words ...string) bool {
		for _, w := range words {
			if strings.Contains(m, w) {
				return true
			}
		}
		return false
	}
	switch {
	case has("claude", "anthropic", "opus", "sonnet", "haiku"):
		return ServiceClaude
	case has("gpt", "codex", "o1", "o3", "o4"):
		return ServiceCodex
	case has("gemini"):
		return ServiceGemini
	case has("droid", "factory"):
		return ServiceDroid
	case has("bedrock", "amazon", "titan"):
		return ServiceBedrock
	case has("azure"):
		return ServiceAzure
	}
	return ServiceClaude
}

// Rate returns rates[service], or 1 when it is missing or not positive (rates are validated
// positive; a zero would otherwise make usage free by accident).
func Rate(rates map[string]float64, service string) float64 {
	if r, ok := rates[service]; ok && r > 0 {
		return r
	}
	return 1
}

// weeklyClaudeAccountTypes are the account types whose Claude-family usage counts toward a key's
// weekly Claude cost (reference §7.1).
var weeklyClaudeAccountTypes = map[string]bool{
	"claude-official": true,
	"claude-console":  true,
	"ccr":             true,
}

// UsageStore is the part of store.Store a Recorder writes to.
type UsageStore interface {
	RecordUsage(ctx context.Context, e *store.UsageEntry) (stored bool, err error)
}

// RecorderOptions configure a Recorder.
type RecorderOptions struct {
	// Store receives the entries.
	Store UsageStore
	// Pricing prices the records; nil = built-in prices.
	Pricing *pricing.Table
	// TZOffsetHours is the time zone of period labels, as a UTC offset in hours.
	TZOffsetHours int
	// Clock returns the current time; nil = time.Now.
	Clock func() time.Time
	// MaxFutureSkew: a record that says it started later than now+MaxFutureSkew (a worker's clock
	// is off) is labelled with now. 0 = 5 minutes.
	MaxFutureSkew time.Duration
}

// Recorder prices usage records and stores them. It is safe for concurrent use.
type Recorder struct {
	store   UsageStore
	pricing *pricing.Table
	labels  labelMemo
	now     func() time.Time
	skew    time.Duration
}

// NewRecorder returns a Recorder.
func NewRecorder(o RecorderOptions) *Recorder {
	r := &Recorder{store: o.Store, pricing: o.Pricing, now: o.Clock, skew: o.MaxFutureSkew}
	r.labels.loc = period.Zone(o.TZOffsetHours)
	if r.pricing == nil {
		r.pricing = pricing.Builtin()
	}
	if r.now == nil {
		r.now = time.Now
	}
	if r.skew <= 0 {
		r.skew = 5 * time.Minute
	}
	return r
}

// Cost is how a record was priced.
type Cost struct {
	Breakdown pricing.Breakdown
	// Source is where the price came from (pricing.Source*).
	Source string
	// Service is the service whose rates applied; Rate is global rate × key rate.
	Service string
	Rate    float64
}

// When returns the moment a record is labelled with: its start, unless unset or further in the
// future than the allowed clock skew, then now.
func (r *Recorder) When(rec *crsv1.UsageRecord) time.Time { return r.WhenAt(rec, r.now()) }

// WhenAt is When with now as the current time (a report batch's records share one).
func (r *Recorder) WhenAt(rec *crsv1.UsageRecord, now time.Time) time.Time {
	if rec.GetStartedAt() == nil || !rec.GetStartedAt().IsValid() {
		return now
	}
	t := rec.GetStartedAt().AsTime()
	if t.IsZero() || t.Unix() <= 0 || t.After(now.Add(r.skew)) {
		return now
	}
	return t
}

// Entry prices rec and returns the store entry for it. key is the record's key (nil when it is
// gone: then no key rate applies and the week starts on Monday 00:00); globalRates are the
// settings' service rates.
func (r *Recorder) Entry(rec *crsv1.UsageRecord, key *crsv1.ApiKey, globalRates map[string]float64) (*store.UsageEntry, Cost) {
	e := &store.UsageEntry{}
	c := r.EntryAt(e, rec, key, globalRates, r.now())
	return e, c
}

// EntryAt is Entry writing the entry to e (overwritten whole), with now as the current time: a
// caller with a batch of records allocates their entries at once and reads the clock once.
func (r *Recorder) EntryAt(e *store.UsageEntry, rec *crsv1.UsageRecord, key *crsv1.ApiKey, globalRates map[string]float64, now time.Time) Cost {
	b, source := r.pricing.Cost(rec.GetModel(), pricing.Usage{
		InputTokens:        rec.GetInputTokens(),
		OutputTokens:       rec.GetOutputTokens(),
		CacheWrite5mTokens: rec.GetCacheCreation_5MTokens(),
		CacheWrite1hTokens: rec.GetCacheCreation_1HTokens(),
		CacheReadTokens:    rec.GetCacheReadTokens(),
		Beta:               rec.GetAnthropicBeta(),
		Speed:              rec.GetSpeed(),
	})
	service := ServiceFor(rec.GetAccountType(), rec.GetModel())
	rate := Rate(globalRates, service) * Rate(key.GetServiceRates(), service)
	labels := r.labels.of(r.WhenAt(rec, now), int(key.GetWeeklyResetDay()), int(key.GetWeeklyResetHour()))
	*e = store.UsageEntry{
		Record:       rec,
		Cost:         b.Total,
		RatedCost:    b.Total * rate,
		ClaudeFamily: weeklyClaudeAccountTypes[rec.GetAccountType()] && period.IsClaudeFamily(rec.GetModel()),
		Hour:         labels.Hour,
		Day:          labels.Day,
		Month:        labels.Month,
		Week:         labels.Week,
	}
	return Cost{Breakdown: b, Source: source, Service: service, Rate: rate}
}

// Result is what Record did with one record.
type Result struct {
	Entry *store.UsageEntry
	Cost  Cost
	// Stored is false when a record with the same request id was stored before.
	Stored bool
}

// Record prices rec (see [Recorder.Entry]) and stores it with store.RecordUsage, which
// deduplicates by request id.
func (r *Recorder) Record(ctx context.Context, rec *crsv1.UsageRecord, key *crsv1.ApiKey, globalRates map[string]float64) (Result, error) {
	e, c := r.Entry(rec, key, globalRates)
	stored, err := r.store.RecordUsage(ctx, e)
	if err != nil {
		return Result{}, fmt.Errorf("record usage %s: %w", rec.GetRequestId(), err)
	}
	return Result{Entry: e, Cost: c, Stored: stored}, nil
}
