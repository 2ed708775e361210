package period

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func utc(s string) time.Time {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		panic(err)
	}
	return t
}

func TestPeriods(t *testing.T) {
	tests := []struct {
		name      string
		at        string
		tz        int
		day, hour int
		want      Labels
	}{
		{
			name: "utc+8 shifts the day",
			at:   "2026-11-26T16:00:00Z", tz: 8, day: 1, hour: 0,
			want: Labels{Hour: "2026-11-27T00", Day: "2026-11-27", Month: "2026-11", Week: "2026-11-23T00"},
		},
		{
			name: "last second of a monday week",
			at:   "2026-11-29T15:59:59Z", tz: 8, day: 1, hour: 0, // Sunday 23:59:59 local
			want: Labels{Hour: "2026-11-29T23", Day: "2026-11-29", Month: "2026-11", Week: "2026-11-23T00"},
		},
		{
			name: "first second of the next monday week",
			at:   "2026-11-29T16:00:00Z", tz: 8, day: 1, hour: 0, // Monday 00:00 local
			want: Labels{Hour: "2026-11-30T00", Day: "2026-11-30", Month: "2026-11", Week: "2026-11-30T00"},
		},
		{
			name: "wednesday 09:00 reset, one minute before",
			at:   "2026-11-25T00:59:00Z", tz: 8, day: 3, hour: 9, // Wednesday 08:59 local
			want: Labels{Hour: "2026-11-25T08", Day: "2026-11-25", Month: "2026-11", Week: "2026-11-18T09"},
		},
		{
			name: "wednesday 09:00 reset, at the reset",
			at:   "2026-11-25T01:00:00Z", tz: 8, day: 3, hour: 9,
			want: Labels{Hour: "2026-11-25T09", Day: "2026-11-25", Month: "2026-11", Week: "2026-11-25T09"},
		},
		{
			name: "sunday 23:00 reset, before it on sunday",
			at:   "2026-11-29T14:00:00Z", tz: 8, day: 7, hour: 23, // Sunday 22:00 local
			want: Labels{Hour: "2026-11-29T22", Day: "2026-11-29", Month: "2026-11", Week: "2026-11-22T23"},
		},
		{
			name: "sunday 23:00 reset, after it",
			at:   "2026-11-29T15:30:00Z", tz: 8, day: 7, hour: 23, // Sunday 23:30 local
			want: Labels{Hour: "2026-11-29T23", Day: "2026-11-29", Month: "2026-11", Week: "2026-11-29T23"},
		},
		{
			name: "month and year boundary, week starts in the old year",
			at:   "2026-12-31T16:00:00Z", tz: 8, day: 1, hour: 0, // Friday 2027-01-01 00:00 local
			want: Labels{Hour: "2027-01-01T00", Day: "2027-01-01", Month: "2027-01", Week: "2026-12-28T00"},
		},
		{
			name: "negative offset",
			at:   "2026-12-01T03:00:00Z", tz: -5, day: 1, hour: 0, // Monday 2026-11-30 22:00 local
			want: Labels{Hour: "2026-11-30T22", Day: "2026-11-30", Month: "2026-11", Week: "2026-11-30T00"},
		},
		{
			name: "out-of-range reset day and hour default to monday 00:00",
			at:   "2026-11-26T04:00:00Z", tz: 0, day: 0, hour: 24,
			want: Labels{Hour: "2026-11-26T04", Day: "2026-11-26", Month: "2026-11", Week: "2026-11-23T00"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			require.Equal(t, tt.want, Of(utc(tt.at), Zone(tt.tz), tt.day, tt.hour))
		})
	}
}

func TestNextDay(t *testing.T) {
	got := NextDay(utc("2026-11-26T16:30:00Z"), Zone(8)) // 2026-11-27 00:30 local
	require.True(t, got.Equal(utc("2026-11-27T16:00:00Z")), got)
}

func TestIsClaudeFamily(t *testing.T) {
	tests := []struct {
		model string
		want  bool
	}{
		{"claude-sonnet-4-5-20250929", true},
		{"claude-3-opus-20240229", true},
		{"us.anthropic.claude-sonnet-4-20250514-v1:0", true},
		{"anthropic.claude-haiku-4-5-20251001-v1:0", true},
		{"ccr,claude-opus-4-5", true},
		{"CCR, Claude-Opus-4-5", true},
		{"opus", true},
		{"some-sonnet-proxy", true},
		{"gpt-5", false},
		{"gemini-2.5-pro", false},
		{"claude", false},
		{"ccr,", false},
		{"", false},
	}
	for _, tt := range tests {
		t.Run(tt.model, func(t *testing.T) {
			require.Equal(t, tt.want, IsClaudeFamily(tt.model))
		})
	}
}
