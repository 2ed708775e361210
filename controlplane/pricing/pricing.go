// Package pricing holds the USD per-token prices of LLM models and turns a request's token counts
// into a cost. It ships built-in list prices for Claude models and reads overrides and additions
// from a LiteLLM-format JSON file (model_prices_and_context_window.json, reference §7.3).
//
// A Table is immutable once built and safe for concurrent use; to pick up a new pricing file,
// build a new Table. The package depends on the standard library only.
package pricing

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"regexp"
	"sort"
	"strings"
	"sync"
)

// Price sources, as returned by [Table.Lookup] and [Table.Cost].
const (
	// SourceBuiltin: the built-in list price table.
	SourceBuiltin = "builtin"
	// SourceFile: the pricing file.
	SourceFile = "file"
	// SourceFallback: the model is unknown; the fallback price was used.
	SourceFallback = "unknown-fallback"
)

// ErrNoPrices: a pricing file holds no usable model price.
var ErrNoPrices = errors.New("pricing: no model prices in file")

// Price is a model's price in USD per token. Optional fields are nil when the source did not
// set them; [Table.Cost] derives them (reference §7.3, "Claude fallbacks").
type Price struct {
	Input, Output float64
	// CacheWrite5m is the price of a cache write with a 5-minute TTL.
	CacheWrite5m *float64
	// CacheWrite1h is the price of a cache write with a 1-hour TTL.
	CacheWrite1h *float64
	CacheRead    *float64
	// Above200K prices apply to non-Claude models when a long-context request's prompt is over
	// 200K tokens; nil = same as below.
	InputAbove200K, OutputAbove200K, CacheWriteAbove200K, CacheReadAbove200K *float64
	// FastMultiplier multiplies every price of a fast-mode request; 0 = DefaultFastMultiplier.
	FastMultiplier float64
}

// DefaultFastMultiplier is the fast-mode multiplier of a model whose entry sets none
// (LiteLLM provider_specific_entry.fast, reference §7.3).
const DefaultFastMultiplier = 6

// perMTok is one million: list prices are quoted per million tokens.
const perMTok = 1e6

func ptr(v float64) *float64 { return &v }

// listPrice builds a Price from per-MTok list prices.
func listPrice(input, output, write5m, write1h, read, fast float64) Price {
	return Price{
		Input:          input / perMTok,
		Output:         output / perMTok,
		CacheWrite5m:   ptr(write5m / perMTok),
		CacheWrite1h:   ptr(write1h / perMTok),
		CacheRead:      ptr(read / perMTok),
		FastMultiplier: fast,
	}
}

// fallbackPrice is charged for unknown models: $3 / $15 / $3.75 / $0.30 per MTok, the
// "unknown" row of the Node.js costCalculator.js (reference §7.3). The 1h write follows the
// Claude rule (2× input).
var fallbackPrice = listPrice(3, 15, 3.75, 6, 0.30, 0)

// builtin are Anthropic's published list prices per MTok: input, output, 5m cache write, 1h
// cache write, cache read (https://platform.claude.com/docs/en/about-claude/pricing), and the
// fast-mode multiplier where Anthropic offers fast mode (6× on Opus 4.6/4.7, 2× on Opus 4.8 and
// later). Claude is flat-priced above 200K tokens, so no long-context tier is set.
var builtin = []struct {
	names []string
	price Price
}{
	{[]string{"claude-opus-5-5"}, listPrice(4, 20, 5, 8, 0.20, 2)},
	{[]string{"claude-opus-5"}, listPrice(5, 25, 6.25, 10, 0.50, 2)},
	{[]string{"claude-opus-4-8"}, listPrice(5, 25, 6.25, 10, 0.50, 2)},
	{[]string{"claude-opus-4-7"}, listPrice(5, 25, 6.25, 10, 0.50, 6)},
	{[]string{"claude-opus-4-6"}, listPrice(5, 25, 6.25, 10, 0.50, 6)},
	{[]string{"claude-opus-4-5", "claude-opus-4-5-20251101"}, listPrice(5, 25, 6.25, 10, 0.50, 0)},
	{[]string{"claude-opus-4-1", "claude-opus-4-1-20250805"}, listPrice(15, 75, 18.75, 30, 1.50, 0)},
	{[]string{"claude-opus-4-0", "claude-opus-4-20250514"}, listPrice(15, 75, 18.75, 30, 1.50, 0)},
	{[]string{"claude-3-opus-20240229", "claude-3-opus-latest"}, listPrice(15, 75, 18.75, 30, 1.50, 0)},
	{[]string{"claude-sonnet-5-5"}, listPrice(2, 10, 2.50, 4, 0.10, 0)},
	{[]string{"claude-sonnet-5"}, listPrice(2, 10, 2.50, 4, 0.20, 0)},
	{[]string{"claude-sonnet-4-6"}, listPrice(3, 15, 3.75, 6, 0.30, 0)},
	{[]string{"claude-sonnet-4-5", "claude-sonnet-4-5-20250929"}, listPrice(3, 15, 3.75, 6, 0.30, 0)},
	{[]string{"claude-sonnet-4-0", "claude-sonnet-4-20250514"}, listPrice(3, 15, 3.75, 6, 0.30, 0)},
	{[]string{"claude-3-7-sonnet-20250219", "claude-3-7-sonnet-latest"}, listPrice(3, 15, 3.75, 6, 0.30, 0)},
	{[]string{"claude-3-5-sonnet-20241022", "claude-3-5-sonnet-20240620", "claude-3-5-sonnet-latest"}, listPrice(3, 15, 3.75, 6, 0.30, 0)},
	{[]string{"claude-haiku-4-5", "claude-haiku-4-5-20251001"}, listPrice(1, 5, 1.25, 2, 0.10, 0)},
	{[]string{"claude-3-5-haiku-20241022", "claude-3-5-haiku-latest"}, listPrice(0.80, 4, 1, 1.60, 0.08, 0)},
	{[]string{"claude-3-haiku-20240307"}, listPrice(0.25, 1.25, 0.30, 0.50, 0.03, 0)},
	{[]string{"claude-fable-5-1"}, listPrice(10, 50, 12.50, 20, 0.25, 0)},
	{[]string{"claude-fable-5"}, listPrice(10, 50, 12.50, 20, 1, 0)},
}

// entry is one priced model name.
type entry struct {
	price  Price
	source string
	// norm is the name lower-cased without '-' and '_', for fuzzy matching.
	norm string
}

// Table maps model names to prices. It is immutable and safe for concurrent use.
type Table struct {
	entries map[string]*entry
	// sorted holds the entries' names in order, so fuzzy matching is deterministic.
	sorted []string
	// memo caches resolved lookups: model name -> *entry (nil = unknown). Models are few;
	// memoN, guarded by memoMu, bounds it to maxMemo names.
	memo   sync.Map
	memoMu sync.Mutex
	memoN  int
}

// maxMemo bounds the lookup cache, in case clients send arbitrary model names.
const maxMemo = 10000

// Builtin returns a table of the built-in prices only.
func Builtin() *Table {
	return newTable(nil)
}

// LoadFile returns the built-in prices overridden and extended by the LiteLLM-format JSON file at
// path. An empty path returns Builtin().
func LoadFile(path string) (*Table, error) {
	if path == "" {
		return Builtin(), nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("pricing: read %s: %w", path, err)
	}
	t, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("pricing: %s: %w", path, err)
	}
	return t, nil
}

// fileEntry is the part of a LiteLLM model entry crs reads (USD per token).
type fileEntry struct {
	Input                 *float64                   `json:"input_cost_per_token"`
	Output                *float64                   `json:"output_cost_per_token"`
	CacheWrite            *float64                   `json:"cache_creation_input_token_cost"`
	CacheWrite1h          *float64                   `json:"cache_creation_input_token_cost_above_1hr"`
	CacheRead             *float64                   `json:"cache_read_input_token_cost"`
	InputAbove200K        *float64                   `json:"input_cost_per_token_above_200k_tokens"`
	OutputAbove200K       *float64                   `json:"output_cost_per_token_above_200k_tokens"`
	CacheWriteAbove200K   *float64                   `json:"cache_creation_input_token_cost_above_200k_tokens"`
	CacheReadAbove200K    *float64                   `json:"cache_read_input_token_cost_above_200k_tokens"`
	ProviderSpecificEntry map[string]json.RawMessage `json:"provider_specific_entry"`
}

// Parse returns the built-in prices overridden and extended by data, a LiteLLM-format JSON
// object mapping model names to entries. Entries without input and output prices (such as
// LiteLLM's "sample_spec") and entries that are not objects are skipped.
func Parse(data []byte) (*Table, error) {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, fmt.Errorf("parse pricing json: %w", err)
	}
	file := make(map[string]Price, len(raw))
	for name, msg := range raw {
		var fe fileEntry
		if err := json.Unmarshal(msg, &fe); err != nil {
			continue // not an object of the expected shape (LiteLLM's sample_spec has strings)
		}
		if fe.Input == nil && fe.Output == nil {
			continue
		}
		if name == "sample_spec" {
			continue
		}
		p := Price{
			CacheWrite5m:        fe.CacheWrite,
			CacheWrite1h:        fe.CacheWrite1h,
			CacheRead:           fe.CacheRead,
			InputAbove200K:      fe.InputAbove200K,
			OutputAbove200K:     fe.OutputAbove200K,
			CacheWriteAbove200K: fe.CacheWriteAbove200K,
			CacheReadAbove200K:  fe.CacheReadAbove200K,
		}
		if fe.Input != nil {
			p.Input = *fe.Input
		}
		if fe.Output != nil {
			p.Output = *fe.Output
		}
		if f, ok := fe.ProviderSpecificEntry["fast"]; ok {
			var v float64
			if json.Unmarshal(f, &v) == nil && v > 0 {
				p.FastMultiplier = v
			}
		}
		file[name] = p
	}
	if len(file) == 0 {
		return nil, ErrNoPrices
	}
	return newTable(file), nil
}

// newTable merges the built-in prices with file (which wins on equal names).
func newTable(file map[string]Price) *Table {
	t := &Table{entries: make(map[string]*entry, len(builtin)*2+len(file))}
	add := func(name string, p Price, source string) {
		key := strings.ToLower(strings.TrimSpace(name))
		if key == "" {
			return
		}
		t.entries[key] = &entry{price: p, source: source, norm: fuzzyNorm(key)}
	}
	for _, b := range builtin {
		for _, n := range b.names {
			add(n, b.price, SourceBuiltin)
		}
	}
	for n, p := range file {
		add(n, p, SourceFile)
	}
	t.sorted = make([]string, 0, len(t.entries))
	for n := range t.entries {
		t.sorted = append(t.sorted, n)
	}
	sort.Strings(t.sorted)
	return t
}

// Len returns how many model names the table prices.
func (t *Table) Len() int { return len(t.entries) }

// Lookup returns the price of model and its source (the Price's pointer fields are shared with
// the table: read only); found is false when the fallback price was
// returned (source SourceFallback). Matching follows reference §7.3: exact (case-insensitive),
// then without a vendor prefix ("ccr,"), a "[1m]" suffix, a Bedrock region prefix ("us.", "eu.",
// "apac.", ...), "anthropic." and a "-vN:N" version suffix, each tried exactly, and last a fuzzy
// match: lower-case without '-' and '_', one name containing the other (the longest contained
// table name wins, then the shortest containing one, then alphabetical order).
func (t *Table) Lookup(model string) (p Price, source string, found bool) {
	var e *entry
	if v, ok := t.memo.Load(model); ok {
		e = v.(*entry)
	} else {
		e = t.resolve(model)
		t.memoMu.Lock()
		if t.memoN < maxMemo {
			t.memoN++
			t.memo.Store(model, e)
		}
		t.memoMu.Unlock()
	}
	if e == nil {
		return fallbackPrice, SourceFallback, false
	}
	return e.price, e.source, true
}

var (
	bedrockRegion  = regexp.MustCompile(`^(us|eu|apac|ap|jp|au|ca|global|us-gov)\.`)
	bedrockVersion = regexp.MustCompile(`-v\d+(:\d+)?$`)
	contextSuffix  = regexp.MustCompile(`\[[0-9a-z]+\]$`)
)

// resolve finds the entry of model, or nil.
func (t *Table) resolve(model string) *entry {
	m := strings.ToLower(strings.TrimSpace(model))
	if m == "" {
		return nil
	}
	if e := t.entries[m]; e != nil {
		return e
	}
	steps := []func(string) string{
		func(s string) string { return strings.TrimPrefix(s, "ccr,") },
		func(s string) string { return contextSuffix.ReplaceAllString(s, "") },
		func(s string) string { return bedrockRegion.ReplaceAllString(s, "") },
		func(s string) string { return strings.TrimPrefix(s, "anthropic.") },
		func(s string) string { return bedrockVersion.ReplaceAllString(s, "") },
		func(s string) string { return strings.ReplaceAll(s, "@", "-") }, // Vertex "claude-x@date"
	}
	for _, step := range steps {
		next := step(m)
		if next == m {
			continue
		}
		m = next
		if e := t.entries[m]; e != nil {
			return e
		}
	}
	return t.fuzzy(fuzzyNorm(m))
}

// minFuzzy is the shortest normalized name that takes part in fuzzy matching, either way;
// shorter ones ("gpt", "o1") would match almost anything.
const minFuzzy = 5

// fuzzy returns the best entry whose normalized name contains norm or is contained in it.
func (t *Table) fuzzy(norm string) *entry {
	if norm == "" {
		return nil
	}
	var contained, containing *entry
	for _, name := range t.sorted {
		e := t.entries[name]
		switch {
		case len(e.norm) < minFuzzy:
		case strings.Contains(norm, e.norm):
			if contained == nil || len(e.norm) > len(contained.norm) {
				contained = e
			}
		case len(norm) >= minFuzzy && strings.Contains(e.norm, norm):
			if containing == nil || len(e.norm) < len(containing.norm) {
				containing = e
			}
		}
	}
	if contained != nil {
		return contained
	}
	return containing
}

// fuzzyNorm lower-cases s and removes '-' and '_'.
func fuzzyNorm(s string) string {
	return strings.NewReplacer("-", "", "_", "").Replace(strings.ToLower(s))
}
