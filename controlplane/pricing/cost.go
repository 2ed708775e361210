package pricing

import "strings"

// Anthropic beta flags that change pricing.
const (
	// BetaFastMode with speed "fast" multiplies every price by the model's fast multiplier.
	BetaFastMode = "fast-mode-2026-02-01"
	// BetaContext1M asks for the 1M-token context window.
	BetaContext1M = "context-1m-2025-08-07"
)

// longContextThreshold is the prompt size above which non-Claude long-context prices apply.
const longContextThreshold = 200_000

// Usage is what one request consumed, as reported by upstream, and the request options that
// change its price.
type Usage struct {
	InputTokens, OutputTokens int64
	// CacheWrite5mTokens and CacheWrite1hTokens are cache writes by TTL.
	CacheWrite5mTokens, CacheWrite1hTokens int64
	CacheReadTokens                        int64
	// Beta is the client's anthropic-beta header (comma-separated flags).
	Beta string
	// Speed is "fast" when the request or response asked for fast mode.
	Speed string
}

// Breakdown is the cost of one request in USD, by token kind.
type Breakdown struct {
	Input, Output, CacheWrite5m, CacheWrite1h, CacheRead float64
	// Total is the sum of the parts.
	Total float64
	// Fallback: the model is unknown and the fallback price was charged.
	Fallback bool
	// LongContext: the above-200K prices were charged.
	LongContext bool
	// FastMultiplier is the fast-mode multiplier applied (1 when not in fast mode).
	FastMultiplier float64
}

// Cost prices u for model (reference §7.3, detailed path): input and output at their prices,
// cache writes split by TTL (5-minute writes at the cache-write price, 1-hour writes at the
// above-1hr price), cache reads at the cache-read price. Missing cache prices of Claude models
// are derived from the input price (5m write 1.25×, 1h write 2×, read 0.1×); for other models a
// missing write price is the input price (1h: the 5m price) and a missing read price is 0.
// Claude is flat-priced above 200K tokens; other models use their above-200K prices when the
// request asked for 1M context (model "[1m]" or beta context-1m-2025-08-07) and the prompt
// (input + cache writes + cache reads) is over 200K tokens. Fast mode (beta fast-mode-2026-02-01
// and speed "fast") multiplies every price. The source is one of the Source* constants.
func (t *Table) Cost(model string, u Usage) (Breakdown, string) {
	p, source, found := t.Lookup(model)
	claude := isClaudeModel(model)

	in, out := p.Input, p.Output
	w5 := orDerived(p.CacheWrite5m, claude, 1.25*in, in)
	w1 := orDerived(p.CacheWrite1h, claude, 2*in, w5)
	rd := orDerived(p.CacheRead, claude, 0.1*in, 0)

	var b Breakdown
	prompt := u.InputTokens + u.CacheWrite5mTokens + u.CacheWrite1hTokens + u.CacheReadTokens
	if !claude && prompt > longContextThreshold &&
		(strings.Contains(strings.ToLower(model), "[1m]") || hasBeta(u.Beta, BetaContext1M)) {
		if p.InputAbove200K != nil || p.OutputAbove200K != nil || p.CacheWriteAbove200K != nil || p.CacheReadAbove200K != nil {
			b.LongContext = true
			in = orValue(p.InputAbove200K, in)
			out = orValue(p.OutputAbove200K, out)
			w5 = orValue(p.CacheWriteAbove200K, w5)
			w1 = orValue(p.CacheWriteAbove200K, w1)
			rd = orValue(p.CacheReadAbove200K, rd)
		}
	}

	b.FastMultiplier = 1
	if strings.EqualFold(u.Speed, "fast") && hasBeta(u.Beta, BetaFastMode) {
		b.FastMultiplier = p.FastMultiplier
		if b.FastMultiplier <= 0 {
			b.FastMultiplier = DefaultFastMultiplier
		}
	}
	m := b.FastMultiplier

	b.Input = float64(u.InputTokens) * in * m
	b.Output = float64(u.OutputTokens) * out * m
	b.CacheWrite5m = float64(u.CacheWrite5mTokens) * w5 * m
	b.CacheWrite1h = float64(u.CacheWrite1hTokens) * w1 * m
	b.CacheRead = float64(u.CacheReadTokens) * rd * m
	b.Total = b.Input + b.Output + b.CacheWrite5m + b.CacheWrite1h + b.CacheRead
	b.Fallback = !found
	return b, source
}

// orDerived returns *v, or when v is nil the Claude-derived price or the other default.
func orDerived(v *float64, claude bool, claudeDefault, otherDefault float64) float64 {
	if v != nil {
		return *v
	}
	if claude {
		return claudeDefault
	}
	return otherDefault
}

func orValue(v *float64, def float64) float64 {
	if v != nil {
		return *v
	}
	return def
}

// isClaudeModel reports whether model names an Anthropic model (for the Claude price rules).
func isClaudeModel(model string) bool {
	m := strings.ToLower(model)
	return strings.Contains(m, "claude") || strings.Contains(m, "anthropic")
}

// hasBeta reports whether the comma-separated anthropic-beta value lists flag.
func hasBeta(header, flag string) bool {
	for header != "" {
		var part string
		part, header, _ = strings.Cut(header, ",")
		if strings.EqualFold(strings.TrimSpace(part), flag) {
			return true
		}
	}
	return false
}
