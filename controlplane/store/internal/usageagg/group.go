package usageagg

import "github.com/crsrelay/crs/controlplane/store"

// GroupKey is everything [Cells] reads from an entry: entries with equal GroupKeys add to the
// same cells. A report batch holds thousands of entries but few GroupKeys (a worker's 200 ms of
// traffic mostly shares key, account, model and hour), so backends compute cells per group.
type GroupKey struct {
	Key, Account, Model    string
	Hour, Day, Month, Week string
	ClaudeFamily           bool
}

// KeyOf returns e's GroupKey. Week and ClaudeFamily only matter together with a key (the weekly
// cell is a key's), but are kept as they are: a finer group is never wrong, only less shared.
func KeyOf(e *store.UsageEntry) GroupKey {
	return GroupKey{
		Key:          e.Record.GetKeyId(),
		Account:      e.Record.GetAccountId(),
		Model:        Model(e),
		Hour:         e.Hour,
		Day:          e.Day,
		Month:        e.Month,
		Week:         e.Week,
		ClaudeFamily: e.ClaudeFamily,
	}
}

// Groups numbers the GroupKeys of a batch in first-seen order. The zero value is ready to use;
// it is not safe for concurrent use.
type Groups struct {
	index map[GroupKey]int
	first []*store.UsageEntry
}

// Of returns the number of e's group (0, 1, ... in first-seen order), adding the group if new.
func (g *Groups) Of(e *store.UsageEntry) int {
	k := KeyOf(e)
	if i, ok := g.index[k]; ok {
		return i
	}
	if g.index == nil {
		g.index = map[GroupKey]int{}
	}
	i := len(g.first)
	g.index[k] = i
	g.first = append(g.first, e)
	return i
}

// Len returns the number of groups.
func (g *Groups) Len() int { return len(g.first) }

// Entry returns the first entry of group i; its [Cells] are those of every entry of the group.
func (g *Groups) Entry(i int) *store.UsageEntry { return g.first[i] }
