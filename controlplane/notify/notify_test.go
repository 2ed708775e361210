package notify

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"

	"github.com/crsrelay/crs/controlplane/secret"
	"github.com/crsrelay/crs/controlplane/store/embedded"
	crsv1 "github.com/crsrelay/crs/gen/crs/v1"
)

// staticTargets is a TargetSource with fixed targets.
type staticTargets []*crsv1.NotificationTarget

func (s staticTargets) Load(context.Context) ([]*crsv1.NotificationTarget, error) { return s, nil }

func webhookTo(url string, events ...string) *crsv1.NotificationTarget {
	return &crsv1.NotificationTarget{Id: "t-" + url, Name: "hook", Enabled: true, Events: events,
		Target: &crsv1.NotificationTarget_Webhook{Webhook: &crsv1.WebhookTarget{Url: url}}}
}

func newNotifier(t *testing.T, o Options) *Notifier {
	t.Helper()
	if o.Logger == nil {
		o.Logger = zaptest.NewLogger(t)
	}
	if o.Backoff == 0 {
		o.Backoff = 10 * time.Millisecond
	}
	n, err := New(o)
	require.NoError(t, err)
	return n
}

func run(t *testing.T, n *Notifier) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = n.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
}

func TestRetriesUntilDelivered(t *testing.T) {
	r := newReceiver(t, "", answer{500, "boom"}, answer{502, "bad gateway"})
	n := newNotifier(t, Options{Targets: staticTargets{webhookTo(r.URL)}})
	run(t, n)
	require.True(t, n.Notify(sampleEvent))
	require.Eventually(t, func() bool { return len(r.requests()) == 3 }, 5*time.Second, 10*time.Millisecond)
	time.Sleep(100 * time.Millisecond)
	require.Len(t, r.requests(), 3, "fails twice, succeeds the third time, then stops")
	for _, req := range r.requests() {
		require.Equal(t, string(r.requests()[0].Body), string(req.Body), "a retry resends the same body")
	}
}

func TestRetryBackoffDoubles(t *testing.T) {
	r := newReceiver(t, "", answer{500, ""}, answer{500, ""}, answer{500, ""}, answer{500, ""})
	n := newNotifier(t, Options{Targets: staticTargets{webhookTo(r.URL)}, Backoff: 50 * time.Millisecond})
	start := time.Now()
	res := n.Test(t.Context(), []*crsv1.NotificationTarget{webhookTo(r.URL)})
	elapsed := time.Since(start)
	require.Len(t, res, 1)
	require.False(t, res[0].GetDelivered())
	require.Equal(t, int32(4), res[0].GetAttempts(), "the first try and 3 retries")
	require.Contains(t, res[0].GetError(), "answered 500")
	require.GreaterOrEqual(t, elapsed, 350*time.Millisecond, "waits 50+100+200 ms")
	require.Less(t, elapsed, 2*time.Second)
}

func TestNoRetryOnRefusal(t *testing.T) {
	r := newReceiver(t, "", answer{400, "bad"})
	n := newNotifier(t, Options{Targets: staticTargets{}})
	res := n.Test(t.Context(), []*crsv1.NotificationTarget{webhookTo(r.URL)})
	require.Equal(t, int32(1), res[0].GetAttempts())
	require.Len(t, r.requests(), 1)
}

func TestNotifyNeverBlocks(t *testing.T) {
	n := newNotifier(t, Options{Targets: staticTargets{}, QueueSize: 1})
	done := make(chan [2]bool)
	go func() { done <- [2]bool{n.Notify(sampleEvent), n.Notify(sampleEvent)} }()
	select {
	case got := <-done:
		require.Equal(t, [2]bool{true, false}, got, "the second event is dropped, not waited for")
	case <-time.After(time.Second):
		t.Fatal("Notify blocked")
	}
}

func TestFiltersByEventAndEnabled(t *testing.T) {
	all, blockedOnly, recoveredOnly, disabled := newReceiver(t, ""), newReceiver(t, ""), newReceiver(t, ""), newReceiver(t, "")
	off := webhookTo(disabled.URL)
	off.Enabled = false
	n := newNotifier(t, Options{Targets: staticTargets{
		webhookTo(all.URL), webhookTo(blockedOnly.URL, KindBlocked), webhookTo(recoveredOnly.URL, KindRecovered), off,
	}})
	run(t, n)
	n.Notify(sampleEvent)
	require.Eventually(t, func() bool { return len(all.requests()) == 1 && len(blockedOnly.requests()) == 1 }, 5*time.Second, 10*time.Millisecond)
	time.Sleep(50 * time.Millisecond)
	require.Empty(t, recoveredOnly.requests())
	require.Empty(t, disabled.requests())
}

func TestOneDeliveryAcrossReplicas(t *testing.T) {
	st, err := embedded.Open(t.TempDir())
	require.NoError(t, err)
	t.Cleanup(func() { _ = st.Close() })
	r := newReceiver(t, "")
	a := newNotifier(t, Options{Targets: staticTargets{webhookTo(r.URL)}, Locks: st})
	b := newNotifier(t, Options{Targets: staticTargets{webhookTo(r.URL)}, Locks: st})
	run(t, a)
	run(t, b)
	a.Notify(sampleEvent)
	b.Notify(sampleEvent)
	other := sampleEvent
	other.ID = "e2"
	b.Notify(other)
	require.Eventually(t, func() bool { return len(r.requests()) == 2 }, 5*time.Second, 10*time.Millisecond)
	time.Sleep(100 * time.Millisecond)
	require.Len(t, r.requests(), 2, "one delivery per event id")
}

func TestTargetStoreSealsSecrets(t *testing.T) {
	st, err := embedded.Open(t.TempDir())
	require.NoError(t, err)
	t.Cleanup(func() { _ = st.Close() })
	k, err := secret.GenerateKey()
	require.NoError(t, err)
	sealer, err := secret.NewSealer(k)
	require.NoError(t, err)
	ts := NewTargetStore(st, sealer)

	got, err := ts.Load(t.Context())
	require.NoError(t, err)
	require.Empty(t, got, "no targets before the first save")

	in := []*crsv1.NotificationTarget{
		{Id: "t1", Name: "ops", Enabled: true, Target: &crsv1.NotificationTarget_Telegram{Telegram: &crsv1.TelegramTarget{BotToken: "123:SECRETTOKEN", ChatId: "1"}}},
		{Id: "t2", Name: "mail", Target: &crsv1.NotificationTarget_Smtp{Smtp: &crsv1.SmtpTarget{Host: "h", Password: "hunter2", From: "a@b", To: []string{"c@d"}}}},
	}
	require.NoError(t, ts.Save(t.Context(), in))
	blob, err := st.GetConfigBlob(t.Context(), TargetsBlob)
	require.NoError(t, err)
	require.False(t, strings.Contains(string(blob), "SECRETTOKEN") || strings.Contains(string(blob), "hunter2"), "secrets visible at rest")

	got, err = ts.Load(t.Context())
	require.NoError(t, err)
	require.Len(t, got, 2)
	require.Equal(t, "123:SECRETTOKEN", got[0].GetTelegram().GetBotToken())
	require.Equal(t, TypeTelegram, got[0].GetType())
	require.Equal(t, TypeSMTP, got[1].GetType())
}
