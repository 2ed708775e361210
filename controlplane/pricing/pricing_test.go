package pricing

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

const eps = 1e-12

func TestCostBuiltin(t *testing.T) {
	tab := Builtin()
	tests := []struct {
		name   string
		model  string
		usage  Usage
		want   Breakdown
		source string
	}{
		{
			name:  "sonnet 4.5 every token kind",
			model: "claude-sonnet-4-5-20250929",
			usage: Usage{InputTokens: 1000, OutputTokens: 500, CacheWrite5mTokens: 2000, CacheWrite1hTokens: 1000, CacheReadTokens: 10000},
			// 1000×$3 + 500×$15 + 2000×$3.75 + 1000×$6 + 10000×$0.30, per MTok.
			want:   Breakdown{Input: 0.003, Output: 0.0075, CacheWrite5m: 0.0075, CacheWrite1h: 0.006, CacheRead: 0.003, Total: 0.027, FastMultiplier: 1},
			source: SourceBuiltin,
		},
		{
			name:   "opus 4.5 one million each",
			model:  "claude-opus-4-5",
			usage:  Usage{InputTokens: 1_000_000, OutputTokens: 1_000_000},
			want:   Breakdown{Input: 5, Output: 25, Total: 30, FastMultiplier: 1},
			source: SourceBuiltin,
		},
		{
			name:   "opus 4.1 old price tier",
			model:  "claude-opus-4-1-20250805",
			usage:  Usage{InputTokens: 100, OutputTokens: 100, CacheReadTokens: 1000},
			want:   Breakdown{Input: 0.0015, Output: 0.0075, CacheRead: 0.0015, Total: 0.0105, FastMultiplier: 1},
			source: SourceBuiltin,
		},
		{
			name:   "opus 4 dated id",
			model:  "claude-opus-4-20250514",
			usage:  Usage{CacheWrite1hTokens: 1_000_000},
			want:   Breakdown{CacheWrite1h: 30, Total: 30, FastMultiplier: 1},
			source: SourceBuiltin,
		},
		{
			name:   "haiku 4.5",
			model:  "claude-haiku-4-5-20251001",
			usage:  Usage{InputTokens: 2_000_000, OutputTokens: 200_000, CacheWrite5mTokens: 400_000},
			want:   Breakdown{Input: 2, Output: 1, CacheWrite5m: 0.5, Total: 3.5, FastMultiplier: 1},
			source: SourceBuiltin,
		},
		{
			name:   "haiku 3.5",
			model:  "claude-3-5-haiku-20241022",
			usage:  Usage{InputTokens: 1_000_000, OutputTokens: 1_000_000, CacheWrite1hTokens: 1_000_000, CacheReadTokens: 1_000_000},
			want:   Breakdown{Input: 0.8, Output: 4, CacheWrite1h: 1.6, CacheRead: 0.08, Total: 6.48, FastMultiplier: 1},
			source: SourceBuiltin,
		},
		{
			name:   "haiku 3",
			model:  "claude-3-haiku-20240307",
			usage:  Usage{InputTokens: 4_000_000, OutputTokens: 800_000},
			want:   Breakdown{Input: 1, Output: 1, Total: 2, FastMultiplier: 1},
			source: SourceBuiltin,
		},
		{
			name:   "bedrock id is normalized",
			model:  "us.anthropic.claude-sonnet-4-20250514-v1:0",
			usage:  Usage{InputTokens: 1_000_000},
			want:   Breakdown{Input: 3, Total: 3, FastMultiplier: 1},
			source: SourceBuiltin,
		},
		{
			name:   "bedrock id without region",
			model:  "anthropic.claude-3-7-sonnet-20250219-v1:0",
			usage:  Usage{OutputTokens: 1_000_000},
			want:   Breakdown{Output: 15, Total: 15, FastMultiplier: 1},
			source: SourceBuiltin,
		},
		{
			name:   "upper case exact",
			model:  "Claude-3-Opus-20240229",
			usage:  Usage{InputTokens: 1_000_000},
			want:   Breakdown{Input: 15, Total: 15, FastMultiplier: 1},
			source: SourceBuiltin,
		},
		{
			name:   "fuzzy: unknown date suffix of a known model",
			model:  "claude-sonnet-4-5-20991231",
			usage:  Usage{InputTokens: 1_000_000},
			want:   Breakdown{Input: 3, Total: 3, FastMultiplier: 1},
			source: SourceBuiltin,
		},
		{
			name:   "fuzzy prefers the longest contained name",
			model:  "claude-opus-4-5-20991231",
			usage:  Usage{InputTokens: 1_000_000},
			want:   Breakdown{Input: 5, Total: 5, FastMultiplier: 1},
			source: SourceBuiltin,
		},
		{
			name:   "ccr vendor prefix",
			model:  "ccr,claude-haiku-4-5",
			usage:  Usage{InputTokens: 1_000_000},
			want:   Breakdown{Input: 1, Total: 1, FastMultiplier: 1},
			source: SourceBuiltin,
		},
		{
			name:  "claude is flat above 200K even with 1M context",
			model: "claude-sonnet-4-5[1m]",
			usage: Usage{InputTokens: 300_000, CacheReadTokens: 100_000, Beta: BetaContext1M},
			// 300000×$3 + 100000×$0.30 per MTok.
			want:   Breakdown{Input: 0.9, CacheRead: 0.03, Total: 0.93, FastMultiplier: 1},
			source: SourceBuiltin,
		},
		{
			name:  "fast mode opus 4.6: 6x",
			model: "claude-opus-4-6",
			usage: Usage{InputTokens: 1000, OutputTokens: 1000, Beta: "interleaved-thinking-2025-05-14, fast-mode-2026-02-01", Speed: "fast"},
			// (1000×$5 + 1000×$25 per MTok) × 6.
			want:   Breakdown{Input: 0.03, Output: 0.15, Total: 0.18, FastMultiplier: 6},
			source: SourceBuiltin,
		},
		{
			name:   "fast mode opus 5: 2x",
			model:  "claude-opus-5",
			usage:  Usage{InputTokens: 1_000_000, Beta: BetaFastMode, Speed: "fast"},
			want:   Breakdown{Input: 10, Total: 10, FastMultiplier: 2},
			source: SourceBuiltin,
		},
		{
			name:   "fast beta without fast speed is standard",
			model:  "claude-opus-4-6",
			usage:  Usage{InputTokens: 1_000_000, Beta: BetaFastMode},
			want:   Breakdown{Input: 5, Total: 5, FastMultiplier: 1},
			source: SourceBuiltin,
		},
		{
			name:   "fast speed without the beta is standard",
			model:  "claude-opus-4-6",
			usage:  Usage{InputTokens: 1_000_000, Speed: "fast"},
			want:   Breakdown{Input: 5, Total: 5, FastMultiplier: 1},
			source: SourceBuiltin,
		},
		{
			name:  "unknown model: fallback price and flag",
			model: "some-unknown-model",
			usage: Usage{InputTokens: 1_000_000, OutputTokens: 1_000_000, CacheWrite5mTokens: 1_000_000, CacheReadTokens: 1_000_000},
			// $3 + $15 + $3.75 + $0.30.
			want:   Breakdown{Input: 3, Output: 15, CacheWrite5m: 3.75, CacheRead: 0.3, Total: 22.05, Fallback: true, FastMultiplier: 1},
			source: SourceFallback,
		},
		{
			name:   "empty model: fallback",
			model:  "",
			usage:  Usage{OutputTokens: 1000},
			want:   Breakdown{Output: 0.015, Total: 0.015, Fallback: true, FastMultiplier: 1},
			source: SourceFallback,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, source := tab.Cost(tt.model, tt.usage)
			require.Equal(t, tt.source, source)
			requireBreakdown(t, tt.want, got)
		})
	}
}

func requireBreakdown(t *testing.T, want, got Breakdown) {
	t.Helper()
	require.InDelta(t, want.Input, got.Input, eps, "input")
	require.InDelta(t, want.Output, got.Output, eps, "output")
	require.InDelta(t, want.CacheWrite5m, got.CacheWrite5m, eps, "cache write 5m")
	require.InDelta(t, want.CacheWrite1h, got.CacheWrite1h, eps, "cache write 1h")
	require.InDelta(t, want.CacheRead, got.CacheRead, eps, "cache read")
	require.InDelta(t, want.Total, got.Total, eps, "total")
	require.Equal(t, want.Fallback, got.Fallback, "fallback")
	require.Equal(t, want.LongContext, got.LongContext, "long context")
	require.InDelta(t, want.FastMultiplier, got.FastMultiplier, eps, "fast multiplier")
}

const testFile = `{
  "sample_spec": {"input_cost_per_token": 0.0, "litellm_provider": "one of https://docs.litellm.ai/docs/providers", "max_tokens": "LEGACY parameter"},
  "claude-sonnet-4-5": {"input_cost_per_token": 4e-06, "output_cost_per_token": 2e-05, "litellm_provider": "anthropic"},
  "claude-opus-9": {"input_cost_per_token": 1e-05, "output_cost_per_token": 5e-05, "cache_creation_input_token_cost": 1.25e-05,
     "cache_creation_input_token_cost_above_1hr": 2e-05, "cache_read_input_token_cost": 1e-06, "provider_specific_entry": {"fast": 3.0}},
  "gemini-2.5-pro": {"input_cost_per_token": 1.25e-06, "output_cost_per_token": 1e-05, "cache_read_input_token_cost": 3.1e-07,
     "input_cost_per_token_above_200k_tokens": 2.5e-06, "output_cost_per_token_above_200k_tokens": 1.5e-05,
     "cache_read_input_token_cost_above_200k_tokens": 6.25e-07},
  "gpt-test-model": {"input_cost_per_token": 2e-06, "output_cost_per_token": 8e-06},
  "embedding-only": {"max_tokens": 8192},
  "not-an-object": 42
}`

func TestCostFile(t *testing.T) {
	tab, err := Parse([]byte(testFile))
	require.NoError(t, err)
	tests := []struct {
		name   string
		model  string
		usage  Usage
		want   Breakdown
		source string
	}{
		{
			name:  "file overrides builtin; Claude cache prices derived from input",
			model: "claude-sonnet-4-5",
			usage: Usage{InputTokens: 1_000_000, OutputTokens: 1_000_000, CacheWrite5mTokens: 1_000_000, CacheWrite1hTokens: 1_000_000, CacheReadTokens: 1_000_000},
			// $4 + $20 + 1.25×$4 + 2×$4 + 0.1×$4.
			want:   Breakdown{Input: 4, Output: 20, CacheWrite5m: 5, CacheWrite1h: 8, CacheRead: 0.4, Total: 37.4, FastMultiplier: 1},
			source: SourceFile,
		},
		{
			name:   "builtin entries not in the file stay",
			model:  "claude-haiku-4-5",
			usage:  Usage{InputTokens: 1_000_000},
			want:   Breakdown{Input: 1, Total: 1, FastMultiplier: 1},
			source: SourceBuiltin,
		},
		{
			name:   "file adds a model with a fast multiplier",
			model:  "claude-opus-9",
			usage:  Usage{InputTokens: 100_000, CacheWrite1hTokens: 100_000, Beta: BetaFastMode, Speed: "fast"},
			want:   Breakdown{Input: 3, CacheWrite1h: 6, Total: 9, FastMultiplier: 3},
			source: SourceFile,
		},
		{
			name:  "non-Claude long context above 200K",
			model: "gemini-2.5-pro",
			usage: Usage{InputTokens: 300_000, OutputTokens: 1000, CacheReadTokens: 100_000, Beta: BetaContext1M},
			// 300000×2.5e-6 + 1000×1.5e-5 + 100000×6.25e-7.
			want:   Breakdown{Input: 0.75, Output: 0.015, CacheRead: 0.0625, Total: 0.8275, LongContext: true, FastMultiplier: 1},
			source: SourceFile,
		},
		{
			name:  "non-Claude long context below 200K",
			model: "gemini-2.5-pro",
			usage: Usage{InputTokens: 100_000, OutputTokens: 1000, Beta: BetaContext1M},
			// 100000×1.25e-6 + 1000×1e-5.
			want:   Breakdown{Input: 0.125, Output: 0.01, Total: 0.135, FastMultiplier: 1},
			source: SourceFile,
		},
		{
			name:  "non-Claude over 200K without 1M context asked",
			model: "gemini-2.5-pro",
			usage: Usage{InputTokens: 300_000},
			want:  Breakdown{Input: 0.375, Total: 0.375, FastMultiplier: 1},
			// 300000×1.25e-6.
			source: SourceFile,
		},
		{
			name:  "non-Claude without cache prices: writes at input price, reads free",
			model: "gpt-test-model",
			usage: Usage{CacheWrite5mTokens: 1000, CacheWrite1hTokens: 1000, CacheReadTokens: 1000},
			// 1000×2e-6 twice; reads 0.
			want:   Breakdown{CacheWrite5m: 0.002, CacheWrite1h: 0.002, Total: 0.004, FastMultiplier: 1},
			source: SourceFile,
		},
		{
			name:   "entry without prices is skipped",
			model:  "embedding-only",
			usage:  Usage{InputTokens: 1_000_000},
			want:   Breakdown{Input: 3, Total: 3, Fallback: true, FastMultiplier: 1},
			source: SourceFallback,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, source := tab.Cost(tt.model, tt.usage)
			require.Equal(t, tt.source, source)
			requireBreakdown(t, tt.want, got)
		})
	}
}

func TestLookup(t *testing.T) {
	tab := Builtin()
	tests := []struct {
		name      string
		model     string
		wantInput float64
		found     bool
	}{
		{"exact alias", "claude-sonnet-4-0", 3e-6, true},
		{"vertex at-sign", "claude-opus-4-1@20250805", 15e-6, true},
		{"bedrock global profile", "global.anthropic.claude-haiku-4-5-20251001-v1:0", 1e-6, true},
		{"bedrock eu profile", "eu.anthropic.claude-opus-4-5-20251101-v1:0", 5e-6, true},
		{"new opus point release", "claude-opus-4-7-20260301", 5e-6, true},
		{"family keyword alone is contained in a name", "sonnet-4-5", 3e-6, true},
		{"too short to match fuzzily", "opus", 3e-6, false},
		{"unknown", "gpt-nothing", 3e-6, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, source, found := tab.Lookup(tt.model)
			require.Equal(t, tt.found, found)
			require.InDelta(t, tt.wantInput, p.Input, eps)
			if !found {
				require.Equal(t, SourceFallback, source)
			}
			// A second lookup is served from the memo with the same answer.
			p2, source2, found2 := tab.Lookup(tt.model)
			require.Equal(t, p, p2)
			require.Equal(t, source, source2)
			require.Equal(t, found, found2)
		})
	}
}

func TestParseErrors(t *testing.T) {
	_, err := Parse([]byte(`not json`))
	require.Error(t, err)
	_, err = Parse([]byte(`{"sample_spec": {"input_cost_per_token": 0}}`))
	require.ErrorIs(t, err, ErrNoPrices)
	_, err = Parse([]byte(`{}`))
	require.ErrorIs(t, err, ErrNoPrices)
}

func TestLoadFile(t *testing.T) {
	tab, err := LoadFile("")
	require.NoError(t, err)
	require.Equal(t, Builtin().Len(), tab.Len())

	path := filepath.Join(t.TempDir(), "model_prices.json")
	require.NoError(t, os.WriteFile(path, []byte(testFile), 0o600))
	tab, err = LoadFile(path)
	require.NoError(t, err)
	_, source, found := tab.Lookup("gpt-test-model")
	require.True(t, found)
	require.Equal(t, SourceFile, source)

	_, err = LoadFile(filepath.Join(t.TempDir(), "missing.json"))
	require.Error(t, err)
}
