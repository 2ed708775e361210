package auth

import (
	"encoding/json"
	"errors"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/crsrelay/crs/dataplane/apierr"
	crsv1 "github.com/crsrelay/crs/gen/crs/v1"
	"github.com/crsrelay/crs/internal/period"
)

// Sentinel causes of limit refusals.
var (
	ErrWindowRequests  = errors.New("auth: fixed window request limit reached")
	ErrWindowTokens    = errors.New("auth: fixed window token limit reached")
	ErrWindowCost      = errors.New("auth: fixed window cost limit reached")
	ErrDailyCost       = errors.New("auth: daily cost limit reached")
	ErrTotalCost       = errors.New("auth: total cost limit reached")
	ErrWeeklyOpusCost  = errors.New("auth: weekly Claude cost limit reached")
	ErrModelRestricted = errors.New("auth: model restricted for this key")
)

// zoneOf is the zone days and weeks are judged in: the control plane's (pushed in the snapshot),
// so worker and control plane can never disagree on a day; the configured one only when the
// snapshot carries none.
func (p *Policy) zoneOf(in *Input) *time.Location {
	if z := in.State.Zone(); z != nil {
		return z
	}
	return p.tz
}

// hasWindowLimit: a window length and at least one of its three limits (reference §2.3 step 7).
func hasWindowLimit(k *crsv1.ApiKey) bool {
	return k.GetRateLimitWindow() > 0 &&
		(k.GetRateLimitRequests() > 0 || k.GetTokenLimit() > 0 || k.GetRateLimitCost() > 0)
}

// HasWindowLimit reports whether a key has a fixed window (reference §2.3 step 7): such a key's
// requests are counted at admission (FleetService.Admit window_key_id), which also starts the
// window the control plane adds tokens and cost to.
func HasWindowLimit(k *crsv1.ApiKey) bool { return hasWindowLimit(k) }

// checkWindow is reference §2.3 step 7 against the pushed window (KeyUsageState): requests,
// then tokens when token_limit is set, else cost. A window is over when now - start >= length.
func checkWindow(in *Input) error {
	k := in.Key
	if !hasWindowLimit(k) {
		return nil
	}
	u := in.State.KeyUsage(k.GetId())
	ws := u.GetWindowStart()
	if ws == nil || (ws.GetSeconds() == 0 && ws.GetNanos() == 0) {
		return nil
	}
	length := time.Duration(k.GetRateLimitWindow()) * time.Minute
	reset := ws.AsTime().Add(length)
	if !in.Now.Before(reset) {
		return nil // the window ended; the next counted request starts a new one
	}
	if lim := int64(k.GetRateLimitRequests()); lim > 0 && u.GetWindowRequests() >= lim {
		return WindowRequestsError(u.GetWindowRequests(), lim, reset, in.Now)
	}
	if lim := k.GetTokenLimit(); lim > 0 {
		if u.GetWindowTokens() >= lim {
			return windowError(ErrWindowTokens,
				"已达到 Token 使用限制 ("+strconv.FormatInt(lim, 10)+" tokens)，将在 ",
				"currentTokens", u.GetWindowTokens(), "tokenLimit", lim, reset, in.Now)
		}
	} else if lim := k.GetRateLimitCost(); lim > 0 && u.GetWindowCost() >= lim {
		return windowError(ErrWindowCost, "已达到费用限制 ($"+jsNumber(lim)+")，将在 ",
			"currentCost", u.GetWindowCost(), "costLimit", lim, reset, in.Now)
	}
	return nil
}

// WindowRequestsError is the 429 of reference §2.3 step 7 for the request count: current
// requests of the window, the key's limit, and when the window resets.
func WindowRequestsError(current, limit int64, reset, now time.Time) error {
	return windowError(ErrWindowRequests, "已达到请求次数限制 ("+strconv.FormatInt(limit, 10)+" 次)，将在 ",
		"currentRequests", current, "requestLimit", limit, reset, now)
}

// windowError builds {"error":"Rate limit exceeded","message":"<prefix>M 分钟后重置",<cur>,<lim>,
// "resetAt","remainingMinutes"} with M = ceil((reset - now) / 1 minute), as the reference does.
func windowError(cause error, prefix, curName string, cur any, limName string, lim any, reset, now time.Time) error {
	remaining := int64(math.Ceil(float64(reset.Sub(now).Milliseconds()) / 60000))
	return apierr.Flat(fasthttp.StatusTooManyRequests, "Rate limit exceeded",
		prefix+strconv.FormatInt(remaining, 10)+" 分钟后重置").
		WithFields(
			apierr.Field{Name: curName, Value: cur},
			apierr.Field{Name: limName, Value: lim},
			apierr.Field{Name: "resetAt", Value: reset},
			apierr.Field{Name: "remainingMinutes", Value: remaining},
		).WithCause(cause)
}

// checkDailyCost is reference §2.3 step 8: rated cost of the current day (configured zone).
func (p *Policy) checkDailyCost(in *Input) error {
	lim := in.Key.GetDailyCostLimit()
	if lim <= 0 {
		return nil
	}
	u := in.State.KeyUsage(in.Key.GetId())
	var cost float64
	if d := u.GetDay(); d != "" && d == in.Now.In(p.zoneOf(in)).Format(period.DayLayout) {
		cost = u.GetDailyCost()
	}
	if cost < lim {
		return nil
	}
	return quotaError(ErrDailyCost, "已达到每日费用限制 ($"+jsNumber(lim)+")", "daily_cost_limit_exceeded").
		WithFields(
			apierr.Field{Name: "currentCost", Value: cost},
			apierr.Field{Name: "costLimit", Value: lim},
			apierr.Field{Name: "resetAt", Value: period.NextDay(in.Now, p.zoneOf(in))},
		)
}

// checkTotalCost is reference §2.3 step 9: rated cost over the key's lifetime.
func checkTotalCost(in *Input) error {
	lim := in.Key.GetTotalCostLimit()
	if lim <= 0 {
		return nil
	}
	cost := in.State.KeyUsage(in.Key.GetId()).GetTotalCost()
	if cost < lim {
		return nil
	}
	return quotaError(ErrTotalCost, "已达到总费用限制 ($"+jsNumber(lim)+")", "total_cost_limit_exceeded").
		WithFields(
			apierr.Field{Name: "currentCost", Value: cost},
			apierr.Field{Name: "costLimit", Value: lim},
		)
}

// checkWeeklyCost is reference §2.3 step 10: for a Claude-family model, the rated Claude cost of
// the key's current week (reset day and hour in the configured zone).
func (p *Policy) checkWeeklyCost(in *Input) error {
	k := in.Key
	lim := k.GetWeeklyOpusCostLimit()
	if lim <= 0 {
		return nil
	}
	u := in.State.KeyUsage(k.GetId())
	start := period.WeekStart(in.Now, p.zoneOf(in), int(k.GetWeeklyResetDay()), int(k.GetWeeklyResetHour()))
	var cost float64
	if w := u.GetWeek(); w != "" && w == start.Format(period.WeekLayout) {
		cost = u.GetWeeklyOpusCost()
	}
	if cost < lim {
		return nil
	}
	// Only now is the model needed: most requests never parse the body for it.
	model := in.Model
	if model == "" {
		model = bodyModel(in.Body)
	}
	if !period.IsClaudeFamily(model) {
		return nil
	}
	return quotaError(ErrWeeklyOpusCost, "已达到 Claude 模型周费用限制 ($"+jsNumber(lim)+")", "weekly_opus_cost_limit_exceeded").
		WithFields(
			apierr.Field{Name: "currentCost", Value: cost},
			apierr.Field{Name: "costLimit", Value: lim},
			apierr.Field{Name: "resetAt", Value: start.AddDate(0, 0, 7)},
		)
}

// quotaError is the 402 {"error":{"type":"insufficient_quota","message":…,"code":…}} of cost caps:
// 402 rather than 429 so that clients do not retry (reference §13 item 4).
func quotaError(cause error, message, code string) *apierr.Error {
	e := apierr.Nested(fasthttp.StatusPaymentRequired, "insufficient_quota", message)
	e.InnerCode = code
	e.Cause = cause
	return e
}

// jsNumber formats a number as JavaScript's String(n) does in a template literal, for the
// messages' "($X)" (5 → "5", 0.5 → "0.5"); encoding/json follows the same ES6 number rules.
func jsNumber(f float64) string {
	b, err := json.Marshal(f)
	if err != nil {
		return strconv.FormatFloat(f, 'g', -1, 64)
	}
	return string(b)
}

// bodyModel returns body.model when it is a string, else "".
func bodyModel(body []byte) string {
	var b struct {
		Model json.RawMessage `json:"model"`
	}
	if json.Unmarshal(body, &b) != nil || len(b.Model) == 0 || b.Model[0] != '"' {
		return ""
	}
	var m string
	_ = json.Unmarshal(b.Model, &m)
	return m
}

// errModelRestricted is reference §1.3 step 3's refusal.
var errModelRestricted = apierr.Nested(fasthttp.StatusForbidden, "forbidden", "暂无该模型访问权限").
	WithCause(ErrModelRestricted)

// CheckModel is reference §1.3 step 3, the model blacklist of the Messages routes: when the key
// enables model restriction and restricted_models lists the requested model (a "ccr," vendor
// prefix stripped, src/utils/modelHelper.js getEffectiveModel), it returns the 403
// {"error":{"type":"forbidden","message":"暂无该模型访问权限"}}. restricted_models is a blacklist
// (reference §13). It does not allocate when the model is allowed.
func CheckModel(k *crsv1.ApiKey, model string) error {
	if !k.GetEnableModelRestriction() || len(k.GetRestrictedModels()) == 0 {
		return nil
	}
	m := strings.TrimSpace(model)
	if len(m) >= 4 && strings.EqualFold(m[:4], "ccr,") {
		m = strings.TrimSpace(m[4:])
	}
	for _, r := range k.GetRestrictedModels() {
		if r == m {
			return errModelRestricted
		}
	}
	return nil
}
