package usage

import (
	"sync/atomic"
	"time"

	"github.com/crsrelay/crs/internal/period"
)

// labelSlots is the size of a Recorder's label memo: a few hours of a few weekly resets.
const labelSlots = 8

// labelMemo remembers the period labels of recent hours. Every label names an hour or a longer
// period that starts on an hour of the recorder's zone (a whole number of hours from UTC), and
// a key's week starts on an hour too, so all moments of one hour share their labels; a report
// batch holds thousands of records of one or two hours, and formatting four labels per record
// was a sixth of the control plane's cost per record. It is safe for concurrent use: each slot
// holds an immutable entry, replaced whole.
type labelMemo struct {
	loc   *time.Location
	slots [labelSlots]atomic.Pointer[labelEntry]
}

type labelEntry struct {
	hour                int64 // Unix time / 3600
	resetDay, resetHour int
	labels              period.Labels
}

// of returns period.Of(t, m.loc, resetDay, resetHour).
func (m *labelMemo) of(t time.Time, resetDay, resetHour int) period.Labels {
	sec := t.Unix()
	hour := sec / 3600
	if sec < 0 && sec%3600 != 0 {
		hour-- // floor, not truncation
	}
	slot := &m.slots[(uint64(hour)+uint64(resetDay)*3+uint64(resetHour)*5)%labelSlots]
	if e := slot.Load(); e != nil && e.hour == hour && e.resetDay == resetDay && e.resetHour == resetHour {
		return e.labels
	}
	labels := period.Of(t, m.loc, resetDay, resetHour)
	slot.Store(&labelEntry{hour: hour, resetDay: resetDay, resetHour: resetHour, labels: labels})
	return labels
}
