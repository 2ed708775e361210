package notify

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/crsrelay/crs/controlplane/store"
	"github.com/crsrelay/crs/controlplane/store/embedded"
	crsv1 "github.com/crsrelay/crs/gen/crs/v1"
	"github.com/crsrelay/crs/internal/period"
)

// collector records events.
type collector struct {
	mu  sync.Mutex
	evs []Event
}

func (c *collector) Notify(ev Event) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.evs = append(c.evs, ev)
	return true
}

func (c *collector) take() []Event {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := c.evs
	c.evs = nil
	return out
}

func openStore(t *testing.T) *embedded.Store {
	t.Helper()
	st, err := embedded.Open(t.TempDir())
	require.NoError(t, err)
	t.Cleanup(func() { _ = st.Close() })
	return st
}

func TestAccountTransitions(t *testing.T) {
	st := openStore(t)
	ctx := t.Context()
	require.NoError(t, st.CreateAccount(ctx, &store.Account{Account: &crsv1.Account{
		Id: "a1", Name: "team", Type: "claude-official", Platform: "claude",
		Status: &crsv1.AccountStatus{State: "active", ChangedAt: timestamppb.Now()},
	}}))
	c := &collector{}
	w, err := NewWatcher(WatcherOptions{Store: st, Notifier: c, Logger: zaptest.NewLogger(t)})
	require.NoError(t, err)
	require.NoError(t, w.Seed(ctx))

	future := time.Now().Add(time.Hour)
	steps := []struct {
		name   string
		status *crsv1.AccountStatus
		want   []string // kinds
		family string
	}{
		{"rate limited", &crsv1.AccountStatus{State: "rate_limited", Reason: "429", Until: timestamppb.New(future)}, []string{KindRateLimited}, ""},
		{"limit extended", &crsv1.AccountStatus{State: "rate_limited", Reason: "429 again", Until: timestamppb.New(future.Add(time.Hour))}, nil, ""},
		{"recovered", &crsv1.AccountStatus{State: "active"}, []string{KindRecovered}, ""},
		{"overloaded is not notified", &crsv1.AccountStatus{State: "overloaded", Until: timestamppb.New(future)}, nil, ""},
		{"back from overloaded is not a recovery", &crsv1.AccountStatus{State: "active"}, nil, ""},
		{"worker 401", &crsv1.AccountStatus{State: "unauthorized", Reason: "credentials refused"}, []string{KindUnauthorized}, ""},
		{"refresh then fails", &crsv1.AccountStatus{State: "unauthorized", Reason: "token refresh failed: token endpoint answered 400 invalid_grant"}, []string{KindRefreshFailed}, ""},
		{"blocked", &crsv1.AccountStatus{State: "blocked", Reason: "organization has been disabled"}, []string{KindBlocked}, ""},
		{"admin reset", &crsv1.AccountStatus{State: "active"}, []string{KindRecovered}, ""},
		{"family limit", &crsv1.AccountStatus{State: "active", FamilyLimitedUntil: map[string]*timestamppb.Timestamp{"opus": timestamppb.New(future)}}, []string{KindRateLimited}, "opus"},
		{"family limit again", &crsv1.AccountStatus{State: "active", FamilyLimitedUntil: map[string]*timestamppb.Timestamp{"opus": timestamppb.New(future)}}, nil, ""},
		{"family recovered", &crsv1.AccountStatus{State: "active"}, []string{KindRecovered}, "opus"},
		{"error", &crsv1.AccountStatus{State: "error", Reason: "credentials cannot be opened"}, []string{KindError}, ""},
	}
	var ids []string
	for i, s := range steps {
		s.status.ChangedAt = timestamppb.New(time.Now().Add(time.Duration(i) * time.Millisecond))
		require.NoError(t, st.SetAccountStatus(ctx, "a1", s.status))
		w.Account(ctx, "a1")
		got := c.take()
		var kinds []string
		for _, ev := range got {
			kinds = append(kinds, ev.Kind)
			require.Equal(t, "a1", ev.AccountID, s.name)
			require.Equal(t, "team", ev.AccountName)
			require.Equal(t, s.family, ev.Family, s.name)
			require.NotEmpty(t, ev.ID)
			require.NotContains(t, ids, ev.ID, "event ids are unique per transition")
			ids = append(ids, ev.ID)
		}
		require.Equal(t, s.want, kinds, s.name)
	}

	require.NoError(t, st.DeleteAccount(ctx, "a1"))
	w.Account(ctx, "a1")
	require.Empty(t, c.take())
}

func TestKeyCapOncePerPeriod(t *testing.T) {
	st := openStore(t)
	ctx := t.Context()
	require.NoError(t, st.CreateKey(ctx, &store.Key{Key: &crsv1.ApiKey{Id: "k1", Name: "alice", DailyCostLimit: 1}, Hash: "h"}))
	c := &collector{}
	w, err := NewWatcher(WatcherOptions{Store: st, Notifier: c, TZOffsetHours: 8})
	require.NoError(t, err)
	l := period.Of(time.Now(), period.Zone(8), 1, 0)
	record := func(id string, cost float64) {
		_, err := st.RecordUsage(ctx, &store.UsageEntry{Record: &crsv1.UsageRecord{RequestId: id, KeyId: "k1"}, RatedCost: cost, Day: l.Day, Week: l.Week})
		require.NoError(t, err)
	}
	record("r1", 0.5)
	w.KeyUsage(ctx, "k1")
	require.Empty(t, c.take(), "under the cap")
	record("r2", 0.6)
	w.KeyUsage(ctx, "k1")
	got := c.take()
	require.Len(t, got, 1)
	require.Equal(t, KindKeyCap, got[0].Kind)
	require.Equal(t, "daily_cost", got[0].Cap)
	require.InDelta(t, 1.1, got[0].Spent, 1e-9)
	require.Equal(t, "key:k1:daily_cost:"+l.Day, got[0].ID)
	require.Equal(t, "API key reached its daily cost limit: alice", got[0].Title())
	record("r3", 0.1)
	w.KeyUsage(ctx, "k1")
	require.Empty(t, c.take(), "once per day")
}

// TestWatchToReceiver runs the whole chain: a status change in the store reaches a webhook once,
// even with two replicas watching, and survives a receiver that fails twice.
func TestWatchToReceiver(t *testing.T) {
	st := openStore(t)
	ctx := t.Context()
	require.NoError(t, st.CreateAccount(ctx, &store.Account{Account: &crsv1.Account{
		Id: "a1", Name: "team", Type: "claude-official", Platform: "claude", Status: &crsv1.AccountStatus{State: "active"},
	}}))
	r := newReceiver(t, "", answer{503, "down"}, answer{503, "down"})
	for range 2 { // two replicas
		n := newNotifier(t, Options{Targets: staticTargets{webhookTo(r.URL)}, Locks: st})
		run(t, n)
		w, err := NewWatcher(WatcherOptions{Store: st, Notifier: n, Logger: zaptest.NewLogger(t)})
		require.NoError(t, err)
		wctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { _ = w.Run(wctx); close(done) }()
		t.Cleanup(func() { cancel(); <-done })
	}
	time.Sleep(100 * time.Millisecond) // both watchers subscribed and seeded
	require.NoError(t, st.SetAccountStatus(ctx, "a1", &crsv1.AccountStatus{
		State: "blocked", Reason: "OAuth authentication is currently not allowed", ChangedAt: timestamppb.Now(),
	}))
	require.Eventually(t, func() bool { return len(r.requests()) == 3 }, 5*time.Second, 10*time.Millisecond)
	time.Sleep(200 * time.Millisecond)
	require.Len(t, r.requests(), 3, "one notification (two failed tries and a delivery), not one per replica")
	m := decode(t, r.requests()[2].Body)
	require.Equal(t, KindBlocked, m["type"])
}
