// Package period holds how crs cuts time for usage and limits: the labels of an hour, a day, a
// month and a key's week in a fixed UTC offset (the Node.js service's TIMEZONE_OFFSET, reference
// §6 "TZ date"), and which models count toward the weekly Claude cost. The control plane labels
// usage with it and workers judge daily and weekly caps with it, so the two cannot disagree. It
// depends on nothing but the standard library.
package period

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
func Zone(offsetHours int) *time.Location {
	return time.FixedZone("", offsetHours*3600)
}

// Of returns the labels of t in loc, with the week starting on ISO weekday resetDay
// (1=Monday..7=Sunday; out of range = Monday) at resetHour (0-23; out of range = 0), as keys
// define their weekly Claude cost window (reference §2.1).
func Of(t time.Time, loc *time.Location, resetDay, resetHour int) Labels {
	local := t.In(loc)
	return Labels{
		Hour:  local.Format(HourLayout),
		Day:   local.Format(DayLayout),
		Month: local.Format(MonthLayout),
		Week:  WeekStart(t, loc, resetDay, resetHour).Format(WeekLayout),
	}
}

// WeekStart returns the start of the week containing t in loc for a week that starts on ISO
// weekday resetDay at resetHour; see [Of] for the defaults.
func WeekStart(t time.Time, loc *time.Location, resetDay, resetHour int) time.Time {
	if resetDay < 1 || resetDay > 7 {
		resetDay = 1
	}
	if resetHour < 0 || resetHour > 23 {
		resetHour = 0
	}
	local := t.In(loc)
	iso := int(local.Weekday()) // Sunday = 0
	if iso == 0 {
		iso = 7
	}
	back := (iso - resetDay + 7) % 7
	y, m, d := local.Date()
	start := time.Date(y, m, d-back, resetHour, 0, 0, 0, loc)
	if start.After(local) {
		start = start.AddDate(0, 0, -7)
	}
	return start
}

// NextDay returns the start of the day after t's day in loc (when a daily cap resets). The
// reference answers the server's OS midnight while it counts days in TIMEZONE_OFFSET (a quirk,
// reference §13); crs uses the one zone for both.
func NextDay(t time.Time, loc *time.Location) time.Time {
	y, m, d := t.In(loc).Date()
	return time.Date(y, m, d+1, 0, 0, 0, 0, loc)
}

// IsClaudeFamily reports whether model counts toward the weekly Claude cost (reference §2.3, end;
// src/utils/modelHelper.js isClaudeFamilyModel): after a "ccr," vendor prefix, a name containing
// "claude-" (Anthropic and Bedrock ids), or, as a fallback, one of the family words opus, sonnet,
// haiku.
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
