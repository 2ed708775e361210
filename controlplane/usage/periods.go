// Package usage turns what workers report into what the store aggregates: the period labels of a
// moment in the configured time zone (a fixed UTC offset, reference §6 "TZ date"), the cost of a
// usage record at list price and after service rates, and the store.UsageEntry that
// store.RecordUsage adds to every aggregate.
//
// It depends on the store interface, the pricing table and the contract's generated types; it
// knows nothing of gRPC or the data plane.
package usage

import (
	"strings"
	"time"
)

// Label layouts.
const (
	HourLayout  = "2006-01-02T15"
	DayLayout   = "2006-01-02"
	MonthLayout = "2006-01"
	// WeekLayout formats a week's start (same as an hour label).
	WeekLayout = "2006-01-02T15"
)

// Labels are the period labels of one moment.
type Labels struct {
	Hour, Day, Month string
	// Week is the start of the key's current week ("2006-01-02T15").
	Week string
}

// Zone returns the fixed zone of a UTC offset in hours.
func Zone(tzOffsetHours int) *time.Location {
	return time.FixedZone("", tzOffsetHours*3600)
}

// Periods returns the labels of t in the time zone tzOffsetHours, with the week starting on ISO
// weekday weeklyResetDay (1=Monday..7=Sunday; out of range = Monday) at weeklyResetHour (0-23;
// out of range = 0), as keys define their weekly Claude cost window (reference §2.1).
func Periods(t time.Time, tzOffsetHours int, weeklyResetDay, weeklyResetHour int) Labels {
	local := t.In(Zone(tzOffsetHours))
	return Labels{
		Hour:  local.Format(HourLayout),
		Day:   local.Format(DayLayout),
		Month: local.Format(MonthLayout),
		Week:  WeekStart(t, tzOffsetHours, weeklyResetDay, weeklyResetHour).Format(WeekLayout),
	}
}

// WeekStart returns the start of the week containing t (in the zone tzOffsetHours) for a week
// that starts on ISO weekday weeklyResetDay at weeklyResetHour; see [Periods] for defaults.
func WeekStart(t time.Time, tzOffsetHours int, weeklyResetDay, weeklyResetHour int) time.Time {
	if weeklyResetDay < 1 || weeklyResetDay > 7 {
		weeklyResetDay = 1
	}
	if weeklyResetHour < 0 || weeklyResetHour > 23 {
		weeklyResetHour = 0
	}
	local := t.In(Zone(tzOffsetHours))
	iso := int(local.Weekday()) // Sunday = 0
	if iso == 0 {
		iso = 7
	}
	back := (iso - weeklyResetDay + 7) % 7
	y, m, d := local.Date()
	start := time.Date(y, m, d-back, weeklyResetHour, 0, 0, 0, local.Location())
	if start.After(local) {
		start = start.AddDate(0, 0, -7)
	}
	return start
}

// NextDay returns the start of the day after t's day in the zone tzOffsetHours.
func NextDay(t time.Time, tzOffsetHours int) time.Time {
	local := t.In(Zone(tzOffsetHours))
	y, m, d := local.Date()
	return time.Date(y, m, d+1, 0, 0, 0, 0, local.Location())
}

// IsClaudeFamily reports whether model is a Claude model for the weekly Claude cost (reference
// §2.3, end): after a "ccr," vendor prefix, a name containing "claude-" (Anthropic and Bedrock
// ids), or, as a fallback, one of the family words opus, sonnet, haiku.
func IsClaudeFamily(model string) bool {
	m := strings.ToLower(strings.TrimSpace(model))
	if rest, ok := strings.CutPrefix(m, "ccr,"); ok {
		m = strings.TrimSpace(rest)
	}
	if m == "" {
		return false
	}
	if strings.Contains(m, "claude-") {
		return true
	}
	return strings.Contains(m, "opus") || strings.Contains(m, "sonnet") || strings.Contains(m, "haiku")
}
