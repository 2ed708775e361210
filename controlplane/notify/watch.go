package notify

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/crsrelay/crs/controlplane/store"
	crsv1 "github.com/crsrelay/crs/gen/crs/v1"
	"github.com/crsrelay/crs/internal/period"
)

// refreshFailedReason starts the reason of a state set by a failed token refresh (it is
// oauth.RefreshFailedReason; oauth's tests pin the text).
const refreshFailedReason = "token refresh failed"

// keyCheckInterval coalesces key usage changes.
const keyCheckInterval = time.Second

// Account states the watcher distinguishes (AccountStatus.state).
const (
	stateActive       = "active"
	stateRateLimited  = "rate_limited"
	stateBlocked      = "blocked"
	stateUnauthorized = "unauthorized"
	stateError        = "error"
)

// Notifiable is what the watcher sends events to (*Notifier).
type Notifiable interface {
	Notify(Event) bool
}

// WatcherOptions configure a Watcher.
type WatcherOptions struct {
	// Store to watch. Required.
	Store store.Store
	// Notifier receives the events. Required.
	Notifier Notifiable
	// Logger: default no-op.
	Logger *zap.Logger
	// TZOffsetHours is the usage time zone (key daily caps), as configured for usage.
	TZOffsetHours int
	// Now is the clock: default time.Now.
	Now func() time.Time
}

// Watcher turns store changes into events: one per account state transition (into
// rate_limited, blocked, unauthorized, error, a per-family rate limit, and back to active), and
// one per key and spending cap reached (daily and weekly caps once per period). Every replica
// runs one; the events' ids make the Notifier send each once.
type Watcher struct {
	st   store.Store
	n    Notifiable
	log  *zap.Logger
	tz   int
	now  func() time.Time
	mu   sync.Mutex
	last map[string]accountState
	// caps: "<key id>:<cap>" -> the period (day, week, limit) last notified for.
	caps map[string]string
}

// accountState is what the watcher remembers of an account.
type accountState struct {
	state, reason string
	changedAt     time.Time
	families      map[string]time.Time
}

// NewWatcher returns a Watcher.
func NewWatcher(o WatcherOptions) (*Watcher, error) {
	if o.Store == nil || o.Notifier == nil {
		return nil, errors.New("notify: watcher needs a store and a notifier")
	}
	w := &Watcher{st: o.Store, n: o.Notifier, log: o.Logger, tz: o.TZOffsetHours, now: o.Now,
		last: map[string]accountState{}, caps: map[string]string{}}
	if w.log == nil {
		w.log = zap.NewNop()
	}
	if w.now == nil {
		w.now = time.Now
	}
	return w, nil
}

// Run watches until ctx ends and returns its error. It subscribes first, then learns every
// account's current state (which emits nothing), so no transition after the start is missed.
func (w *Watcher) Run(ctx context.Context) error {
	for {
		err := w.watchOnce(ctx)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		w.log.Warn("notification watch ended; restarting", zap.Error(err))
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

func (w *Watcher) watchOnce(ctx context.Context) error {
	ch, err := w.st.Watch(ctx)
	if err != nil {
		return fmt.Errorf("watch store: %w", err)
	}
	if err := w.Seed(ctx); err != nil {
		return err
	}
	// Key usage changes with every request: check each key at most once per keyCheckInterval.
	pending := map[string]struct{}{}
	tick := time.NewTicker(keyCheckInterval)
	defer tick.Stop()
	for {
		select {
		case c, ok := <-ch:
			if !ok {
				return errors.New("store closed the watch")
			}
			switch c.Kind {
			case store.KindAccount:
				w.Account(ctx, c.ID)
			case store.KindKeyUsage:
				pending[c.ID] = struct{}{}
			}
		case <-tick.C:
			for id := range pending {
				w.KeyUsage(ctx, id)
				delete(pending, id)
			}
		}
	}
}

// Seed learns every account's current state without emitting anything.
func (w *Watcher) Seed(ctx context.Context) error {
	all, err := w.st.ListAccounts(ctx)
	if err != nil {
		return fmt.Errorf("list accounts: %w", err)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, a := range all {
		w.last[a.Account.GetId()] = stateOf(a.Account)
	}
	return nil
}

func stateOf(a *crsv1.Account) accountState {
	st := a.GetStatus()
	s := accountState{state: st.GetState(), reason: st.GetReason(), families: map[string]time.Time{}}
	if s.state == "" {
		s.state = stateActive
	}
	if st.GetChangedAt() != nil {
		s.changedAt = st.GetChangedAt().AsTime()
	}
	for f, until := range st.GetFamilyLimitedUntil() {
		s.families[f] = until.AsTime()
	}
	return s
}

// kindOf is the event kind of being in state s ("" = nothing to tell).
func kindOf(s accountState) string {
	switch s.state {
	case stateRateLimited:
		return KindRateLimited
	case stateBlocked:
		return KindBlocked
	case stateUnauthorized:
		if strings.HasPrefix(s.reason, refreshFailedReason) {
			return KindRefreshFailed
		}
		return KindUnauthorized
	case stateError:
		if strings.HasPrefix(s.reason, refreshFailedReason) {
			return KindRefreshFailed
		}
		return KindError
	}
	return ""
}

// Account compares account id's state with the last one seen and emits the transitions.
func (w *Watcher) Account(ctx context.Context, id string) {
	a, err := w.st.GetAccount(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		w.mu.Lock()
		delete(w.last, id)
		w.mu.Unlock()
		return
	}
	if err != nil {
		w.log.Warn("read account for notifications", zap.String("account_id", id), zap.Error(err))
		return
	}
	cur := stateOf(a.Account)
	w.mu.Lock()
	prev, known := w.last[id]
	w.last[id] = cur
	w.mu.Unlock()
	if !known {
		return // created after the seed: nothing happened to it yet
	}
	for _, ev := range transitions(a.Account, prev, cur, w.now()) {
		w.n.Notify(ev)
	}
}

// transitions lists the events between two states of account a.
func transitions(a *crsv1.Account, prev, cur accountState, now time.Time) []Event {
	base := Event{
		AccountID: a.GetId(), AccountName: a.GetName(), Platform: a.GetPlatform(),
		State: cur.state, PrevState: prev.state, Reason: cur.reason, Time: now,
	}
	if u := a.GetStatus().GetUntil(); u != nil {
		base.Until = u.AsTime()
	}
	stamp := strconv.FormatInt(cur.changedAt.UnixNano(), 10)
	var out []Event
	prevKind, curKind := kindOf(prev), kindOf(cur)
	switch {
	case curKind != "" && (curKind != prevKind || (cur.state != prev.state)):
		ev := base
		ev.Kind, ev.ID = curKind, "account:"+a.GetId()+":"+curKind+":"+stamp
		out = append(out, ev)
	case cur.state == stateActive && prevKind != "":
		ev := base
		ev.Kind, ev.ID = KindRecovered, "account:"+a.GetId()+":recovered:"+stamp
		ev.Until = time.Time{}
		out = append(out, ev)
	}
	for f, until := range cur.families {
		if old, ok := prev.families[f]; ok && old.After(now) || !until.After(now) {
			continue
		}
		ev := base
		ev.Kind, ev.Family, ev.Until = KindRateLimited, f, until
		ev.ID = "account:" + a.GetId() + ":family:" + f + ":" + strconv.FormatInt(until.Unix(), 10)
		out = append(out, ev)
	}
	for f, until := range prev.families {
		if _, still := cur.families[f]; still {
			continue
		}
		ev := base
		ev.Kind, ev.Family, ev.Until, ev.Reason = KindRecovered, f, time.Time{}, f+" models are served again"
		ev.ID = "account:" + a.GetId() + ":family-recovered:" + f + ":" + strconv.FormatInt(until.Unix(), 10)
		out = append(out, ev)
	}
	return out
}

// KeyUsage checks key id's spending against its caps and emits one event per cap reached (per
// day for the daily cap, per week for the weekly one).
func (w *Watcher) KeyUsage(ctx context.Context, id string) {
	k, err := w.st.GetKey(ctx, id)
	if err != nil {
		return
	}
	key := k.Key
	if key.GetDailyCostLimit() <= 0 && key.GetTotalCostLimit() <= 0 && key.GetWeeklyOpusCostLimit() <= 0 {
		return
	}
	now := w.now()
	l := period.Of(now, period.Zone(w.tz), int(key.GetWeeklyResetDay()), int(key.GetWeeklyResetHour()))
	sp, err := w.st.KeySpend(ctx, id, l.Day, l.Week)
	if err != nil {
		w.log.Warn("read key spend for notifications", zap.String("key_id", id), zap.Error(err))
		return
	}
	for _, c := range []struct {
		cap, period  string
		limit, spent float64
	}{
		{"daily_cost", l.Day, key.GetDailyCostLimit(), sp.DailyCost},
		{"total_cost", strconv.FormatFloat(key.GetTotalCostLimit(), 'f', -1, 64), key.GetTotalCostLimit(), sp.TotalCost},
		{"weekly_opus_cost", l.Week, key.GetWeeklyOpusCostLimit(), sp.WeeklyOpusCost},
	} {
		if c.limit <= 0 || c.spent < c.limit {
			continue
		}
		evID := "key:" + id + ":" + c.cap + ":" + c.period
		w.mu.Lock()
		seen := w.caps[id+":"+c.cap] == c.period
		w.caps[id+":"+c.cap] = c.period
		w.mu.Unlock()
		if seen {
			continue
		}
		w.n.Notify(Event{
			Kind: KindKeyCap, ID: evID, Time: now, KeyID: id, KeyName: key.GetName(),
			Cap: c.cap, Limit: c.limit, Spent: c.spent,
			Reason: fmt.Sprintf("requests are refused until the %s limit resets or is raised", capName(c.cap)),
		})
	}
}
