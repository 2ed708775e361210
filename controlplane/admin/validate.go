package admin

import (
	"fmt"
	"math"
	"net/url"
	"strings"
	"unicode/utf8"
)

// Size limits of free-form inputs.
const (
	maxName        = 100
	maxDescription = 500
	maxTags        = 50
	maxTagLen      = 50
	maxListLen     = 200 // restricted models, model mapping entries, scopes...
	maxItemLen     = 200 // one model name, one id reference...
	maxURLLen      = 2048
	maxSecretLen   = 16384
	maxShortText   = 100
	maxCost        = 1e9
)

// checker collects field violations; err returns them as one *ValidationError.
type checker struct {
	v []FieldViolation
}

func (c *checker) add(field, format string, args ...any) {
	c.v = append(c.v, FieldViolation{Field: field, Description: fmt.Sprintf(format, args...)})
}

func (c *checker) err() error {
	if len(c.v) == 0 {
		return nil
	}
	return &ValidationError{Violations: c.v}
}

// invalid is a one-violation ValidationError.
func invalid(field, format string, args ...any) error {
	var c checker
	c.add(field, format, args...)
	return c.err()
}

// length checks a string's length in characters.
func (c *checker) length(field, s string, min, max int) {
	n := utf8.RuneCountInString(s)
	if !utf8.ValidString(s) {
		c.add(field, "must be valid UTF-8")
		return
	}
	switch {
	case min > 0 && n == 0:
		if min == 1 {
			c.add(field, "required (1-%d characters)", max)
		} else {
			c.add(field, "required (%d-%d characters)", min, max)
		}
	case n < min || n > max:
		if min > 0 {
			c.add(field, "must be %d-%d characters", min, max)
		} else {
			c.add(field, "must be at most %d characters", max)
		}
	}
}

func (c *checker) nonNegative(field string, n int64, max int64) {
	if n < 0 || n > max {
		c.add(field, "must be 0-%d", max)
	}
}

func (c *checker) money(field string, x float64) {
	if math.IsNaN(x) || math.IsInf(x, 0) || x < 0 || x > maxCost {
		c.add(field, "must be a number 0-%g", float64(maxCost))
	}
}

func (c *checker) oneOf(field, s string, allowed ...string) {
	for _, a := range allowed {
		if s == a {
			return
		}
	}
	c.add(field, "must be one of %s", strings.Join(allowed, ", "))
}

// stringList checks a list's size, each item's length, and that every item is in allowed (if any).
func (c *checker) stringList(field string, items []string, maxItems, maxLen int, allowed ...string) {
	if len(items) > maxItems {
		c.add(field, "at most %d entries", maxItems)
		return
	}
	seen := map[string]bool{}
	for i, it := range items {
		f := fmt.Sprintf("%s[%d]", field, i)
		if it == "" || utf8.RuneCountInString(it) > maxLen {
			c.add(f, "must be 1-%d characters", maxLen)
			continue
		}
		if len(allowed) > 0 {
			ok := false
			for _, a := range allowed {
				ok = ok || it == a
			}
			if !ok {
				c.add(f, "%q is not one of %s", it, strings.Join(allowed, ", "))
				continue
			}
		}
		if seen[it] {
			c.add(f, "duplicate %q", it)
		}
		seen[it] = true
	}
}

// httpURL checks an optional (unless required) http(s) URL with a host.
func (c *checker) httpURL(field, s string, required bool) {
	if s == "" {
		if required {
			c.add(field, "required")
		}
		return
	}
	if len(s) > maxURLLen {
		c.add(field, "must be at most %d characters", maxURLLen)
		return
	}
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		c.add(field, "must be an http:// or https:// URL")
	}
}

// rates checks a service → multiplier map.
func (c *checker) rates(field string, m map[string]float64) {
	for k, v := range m {
		f := field + "." + k
		if !contains(services, k) {
			c.add(f, "unknown service (want one of %s)", strings.Join(services, ", "))
			continue
		}
		if math.IsNaN(v) || math.IsInf(v, 0) || v < 0 || v > 1000 {
			c.add(f, "must be a number 0-1000")
		}
	}
}

// services that have cost multipliers (service_rates keys).
var services = []string{"claude", "codex", "gemini", "droid", "bedrock", "azure", "ccr"}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
