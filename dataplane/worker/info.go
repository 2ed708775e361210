package worker

import (
	"slices"

	"github.com/valyala/fasthttp"

	"github.com/crsrelay/crs/dataplane/snapshot"
)

// claudeModels is the static list of GET /v1/models (reference §1.3.5, src/services/modelService.js,
// Claude part), ordered by id as the reference sorts it.
var claudeModels = []string{
	"claude-3-5-haiku-20241022",
	"claude-3-7-sonnet-20250219",
	"claude-haiku-4-5-20251001",
	"claude-opus-4-1-20250805",
	"claude-opus-4-20250514",
	"claude-opus-4-5-20251101",
	"claude-sonnet-4-20250514",
	"claude-sonnet-4-5-20250929",
}

type modelEntry struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Created int64  `json:"created"`
	OwnedBy string `json:"owned_by"`
}

// models serves GET /v1/models: the static list minus the key's restricted models (a blacklist).
func (w *Worker) models(ctx *fasthttp.RequestCtx, c *call) {
	now := w.now().Unix()
	data := make([]modelEntry, 0, len(claudeModels))
	restricted := c.key.GetEnableModelRestriction()
	for _, id := range claudeModels {
		if restricted && slices.Contains(c.key.GetRestrictedModels(), id) {
			continue
		}
		data = append(data, modelEntry{ID: id, Object: "model", Created: now, OwnedBy: "anthropic"})
	}
	writeValue(ctx, fasthttp.StatusOK, struct {
		Object string       `json:"object"`
		Data   []modelEntry `json:"data"`
	}{"list", data})
}

// usageTotals is one period of the reference's usage object (redis.getUsageStats).
type usageTotals struct {
	Tokens            int64 `json:"tokens"`
	InputTokens       int64 `json:"inputTokens"`
	OutputTokens      int64 `json:"outputTokens"`
	CacheCreateTokens int64 `json:"cacheCreateTokens"`
	CacheReadTokens   int64 `json:"cacheReadTokens"`
	AllTokens         int64 `json:"allTokens"`
	Requests          int64 `json:"requests"`
}

// usageStats is the reference's usage object. The snapshot carries costs and the current window
// of a key, not its token totals, so the totals are zero until the contract pushes them.
type usageStats struct {
	Total         usageTotals `json:"total"`
	Daily         usageTotals `json:"daily"`
	Monthly       usageTotals `json:"monthly"`
	Averages      averages    `json:"averages"`
	RecentRecords []struct{}  `json:"recentRecords"`
}

type averages struct {
	RPM           float64 `json:"rpm"`
	TPM           float64 `json:"tpm"`
	DailyRequests float64 `json:"dailyRequests"`
	DailyTokens   float64 `json:"dailyTokens"`
}

func (w *Worker) usageOf(c *call) usageStats {
	return usageStats{RecentRecords: []struct{}{}}
}

// keyInfo serves GET /v1/key-info.
func (w *Worker) keyInfo(ctx *fasthttp.RequestCtx, c *call) {
	type keyInfo struct {
		ID         string     `json:"id"`
		Name       string     `json:"name"`
		TokenLimit int64      `json:"tokenLimit"`
		Usage      usageStats `json:"usage"`
	}
	writeValue(ctx, fasthttp.StatusOK, struct {
		KeyInfo   keyInfo `json:"keyInfo"`
		Timestamp string  `json:"timestamp"`
	}{keyInfo{c.key.GetId(), c.key.GetName(), c.key.GetTokenLimit(), w.usageOf(c)}, isoTime(w.now())})
}

// usage serves GET /v1/usage.
func (w *Worker) usage(ctx *fasthttp.RequestCtx, c *call) {
	type limits struct {
		Tokens   int64 `json:"tokens"`
		Requests int64 `json:"requests"`
	}
	writeValue(ctx, fasthttp.StatusOK, struct {
		Usage     usageStats `json:"usage"`
		Limits    limits     `json:"limits"`
		Timestamp string     `json:"timestamp"`
	}{w.usageOf(c), limits{Tokens: c.key.GetTokenLimit()}, isoTime(w.now())})
}

// me serves GET /v1/me (Claude Code asks for it).
func (w *Worker) me(ctx *fasthttp.RequestCtx, c *call) {
	name := c.key.GetName()
	if name == "" {
		name = "API User"
	}
	writeValue(ctx, fasthttp.StatusOK, struct {
		ID          string `json:"id"`
		Type        string `json:"type"`
		DisplayName string `json:"display_name"`
		CreatedAt   string `json:"created_at"`
	}{"user_" + c.key.GetId(), "user", name, isoTime(w.now())})
}

// orgUsage serves GET /v1/organizations/:org_id/usage: the credit balance is the key's token
// limit minus its used tokens (zero, see usageStats).
func (w *Worker) orgUsage(ctx *fasthttp.RequestCtx, c *call) {
	type balance struct {
		Type          string `json:"type"`
		CreditBalance int64  `json:"credit_balance"`
	}
	writeValue(ctx, fasthttp.StatusOK, struct {
		Object string    `json:"object"`
		Data   []balance `json:"data"`
	}{"usage", []balance{{"credit_balance", c.key.GetTokenLimit()}}})
}

// health serves GET /health, /api/health, /claude/health: 200 once the worker serves a snapshot,
// 503 before the first one or when it went stale.
func (w *Worker) health(ctx *fasthttp.RequestCtx, _ *call) {
	st := w.fleet.Serving()
	var active, total int
	if st != nil {
		now := w.now()
		for _, a := range st.Accounts() {
			total++
			if (a.Schedulable == nil || *a.Schedulable) && snapshot.AccountActive(a, now) {
				active++
			}
		}
	}
	status, code := "healthy", fasthttp.StatusOK
	if st == nil {
		status, code = "unhealthy", fasthttp.StatusServiceUnavailable
	}
	writeValue(ctx, code, struct {
		Status         string `json:"status"`
		Service        string `json:"service"`
		Version        string `json:"version"`
		Healthy        bool   `json:"healthy"`
		ActiveAccounts int    `json:"activeAccounts"`
		TotalAccounts  int    `json:"totalAccounts"`
		Timestamp      string `json:"timestamp"`
	}{status, "claude-relay-service", w.opts.Version, st != nil, active, total, isoTime(w.now())})
}

var bodySuccess = []byte(`{"success":true}`)

// eventLogging swallows Claude Code's telemetry (POST /api/event_logging/batch and the doubled
// /api/api/... that Claude Code really calls).
func (w *Worker) eventLogging(ctx *fasthttp.RequestCtx, _ *call) {
	writeJSON(ctx, fasthttp.StatusOK, bodySuccess)
}

var bodyProbe = []byte(`{"status":"ok","service":"claude-relay-service"}`)

// probe answers HEAD and GET on "/", "/api" and "/claude", which Claude Code uses to check the
// base URL.
func (w *Worker) probe(ctx *fasthttp.RequestCtx, _ *call) {
	writeJSON(ctx, fasthttp.StatusOK, bodyProbe)
}
