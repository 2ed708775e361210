package sched

import (
	"regexp"
	"strconv"
	"strings"

	"github.com/crsrelay/crs/dataplane/snapshot"
	crsv1 "github.com/crsrelay/crs/gen/crs/v1"
)

// families are the model families upstream rate-limits separately, in the reference's matching
// order (src/utils/modelHelper.js RATE_LIMITED_MODEL_FAMILIES).
var families = [...]string{"opus", "sonnet", "haiku", "fable"}

// ModelFamily returns the rate-limit family of a model (opus, sonnet, haiku, fable), or "".
func ModelFamily(model string) string { return familyOf(strings.ToLower(model)) }

func familyOf(lower string) string {
	for _, f := range families {
		if strings.Contains(lower, f) {
			return f
		}
	}
	return ""
}

// model is the requested model with what ModelSupported and the family checks read of its name,
// worked out once per request rather than once per account.
type model struct {
	name, family string
	// claude: the name contains claude, sonnet, opus or haiku, as written.
	claude bool
	// opus: the name contains "opus" in any case.
	opus bool
}

func modelOf(name string) model {
	lower := strings.ToLower(name)
	return model{
		name:   name,
		family: familyOf(lower),
		claude: strings.Contains(name, "claude") || strings.Contains(name, "sonnet") ||
			strings.Contains(name, "opus") || strings.Contains(name, "haiku"),
		opus: strings.Contains(lower, "opus"),
	}
}

// ModelSupported reports whether account a can serve model (reference §4.1
// _isModelSupportedByAccount). An empty model is supported everywhere.
//   - claude-official: the model names a Claude model (contains claude, sonnet, opus or haiku);
//     Opus needs a paid plan: not on "free", and only Opus 4.5 or newer on "claude_pro".
//   - claude-console: model_mapping is empty or has the model as a key (exact, then
//     case-insensitive).
func ModelSupported(a *crsv1.Account, model string) bool { return modelOf(model).supportedBy(a) }

// supportedBy is ModelSupported for the request's model.
func (m model) supportedBy(a *crsv1.Account) bool {
	if m.name == "" {
		return true
	}
	switch a.GetType() {
	case snapshot.TypeClaudeOfficial:
		if !m.claude {
			return false
		}
		if m.opus {
			switch a.GetSubscription() {
			case "free":
				return false
			case "claude_pro":
				return isOpus45OrNewer(m.name)
			}
		}
		return true
	case snapshot.TypeClaudeConsole:
		mapping := a.GetModelMapping()
		if len(mapping) == 0 {
			return true
		}
		if _, ok := mapping[m.name]; ok {
			return true
		}
		for k := range mapping {
			if strings.EqualFold(k, m.name) {
				return true
			}
		}
		return false
	}
	return true
}

var (
	opusOldFormat = regexp.MustCompile(`claude[- ](\d+)(?:[.-](\d+))?[- ]opus`)
	opusDotFormat = regexp.MustCompile(`opus[- ]?(\d+)\.(\d+)`)
)

// isOpus45OrNewer transcribes src/utils/modelHelper.js isOpus45OrNewer: claude-3-opus (old
// format), opus-4.5 (dot format), opus-4-5-20251101 / opus-4-20250514 (hyphen format; a minor
// version is 1-2 digits followed by an 8-digit date or the end), opus-latest.
func isOpus45OrNewer(model string) bool {
	m := strings.ToLower(model)
	idx := strings.Index(m, "opus")
	if idx < 0 {
		return false
	}
	if strings.Contains(m, "opus-latest") || strings.Contains(m, "opus_latest") {
		return true
	}
	atLeast45 := func(major, minor int) bool { return major > 4 || (major == 4 && minor >= 5) }
	if g := opusOldFormat.FindStringSubmatch(m); g != nil {
		return atLeast45(atoi(g[1]), atoi(g[2]))
	}
	if g := opusDotFormat.FindStringSubmatch(m); g != nil {
		return atLeast45(atoi(g[1]), atoi(g[2]))
	}
	// Hyphen format: /^[- ](\d+)(?:[- ](\d{1,2})(?=[- ]\d{8}|$))?/ on what follows "opus".
	rest := m[idx+4:]
	if rest == "" || (rest[0] != '-' && rest[0] != ' ') {
		return false
	}
	i := 1
	for i < len(rest) && isDigit(rest[i]) {
		i++
	}
	if i == 1 {
		return false
	}
	major, minor := atoi(rest[1:i]), 0
	if i < len(rest) && (rest[i] == '-' || rest[i] == ' ') {
		for n := 2; n >= 1; n-- { // greedy, then backtrack
			j := i + 1 + n
			if j > len(rest) || !allDigits(rest[i+1:j]) {
				continue
			}
			if after := rest[j:]; after == "" ||
				((after[0] == '-' || after[0] == ' ') && len(after) >= 9 && allDigits(after[1:9])) {
				minor = atoi(rest[i+1 : j])
				break
			}
		}
	}
	return atLeast45(major, minor)
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if !isDigit(s[i]) {
			return false
		}
	}
	return s != ""
}

// atoi parses a digit string, 0 when empty; huge values saturate, which keeps "newer" true.
func atoi(s string) int {
	if s == "" {
		return 0
	}
	n, err := strconv.Atoi(s)
	if err != nil {
		return int(^uint(0) >> 1)
	}
	return n
}
