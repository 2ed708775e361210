// Package notify tells operators when an account or key needs attention: an account rate-limited,
// blocked, unauthorized, failing to refresh its token, in error, or recovered; a key that reached
// a spending cap (reference §8.5). Events go to the configured targets: a generic JSON webhook
// signed with HMAC-SHA256, Slack, Discord, Telegram, Feishu, DingTalk, WeCom, Bark and SMTP.
//
// Notify never blocks its caller: events wait in a bounded queue, workers send them to every
// matching target concurrently, each send with a timeout and retries with exponential backoff.
// With several control-plane replicas, each event is sent by one of them (a store lease per event
// id). Watcher turns store changes into events (one per account state transition).
//
// Targets are stored sealed in the store (TargetStore) and read at each delivery, so an edit
// through the admin API applies on every replica at once. The package depends on the store
// interface, controlplane/secret, controlplane/proxyhttp, controlplane/usage and the contract.
package notify

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/crsrelay/crs/controlplane/store"
	crsv1 "github.com/crsrelay/crs/gen/crs/v1"
)

// Event kinds (NotificationTarget.events filters on them).
const (
	KindRateLimited   = "account.rate_limited"
	KindBlocked       = "account.blocked"
	KindUnauthorized  = "account.unauthorized"
	KindRefreshFailed = "account.refresh_failed"
	KindError         = "account.error"
	KindRecovered     = "account.recovered"
	KindKeyCap        = "key.cap_reached"
	// KindTest is what TestNotification sends; targets always accept it.
	KindTest = "test"
)

// Kinds lists the kinds a target may subscribe to.
var Kinds = []string{KindRateLimited, KindBlocked, KindUnauthorized, KindRefreshFailed, KindError, KindRecovered, KindKeyCap}

// Event is one thing to tell operators.
type Event struct {
	// Kind is one of the Kind constants.
	Kind string
	// ID identifies the event across replicas: it is sent once per ID. Empty = no deduplication.
	ID string
	// Time the event happened.
	Time time.Time

	// Account events.
	AccountID, AccountName, Platform string
	// State is the account's new state, PrevState the one before.
	State, PrevState string
	// Family is the model family of a per-family rate limit (opus, sonnet...), else empty.
	Family string
	// Reason in words (upstream message, refresh error...).
	Reason string
	// Until is when the state ends by itself (zero = until something changes it).
	Until time.Time

	// Key events.
	KeyID, KeyName string
	// Cap is the limit reached: daily_cost, total_cost or weekly_opus_cost.
	Cap string
	// Limit and Spent in USD.
	Limit, Spent float64
}

// Defaults of Options.
const (
	DefaultQueueSize = 1000
	DefaultWorkers   = 2
	// DefaultRetries after the first try, waiting DefaultBackoff, then twice as long each time
	// (1 s, 2 s, 4 s), as the reference's retrySettings.
	DefaultRetries = 3
	DefaultBackoff = time.Second
	// DefaultTimeout of one send (the reference's 10 s).
	DefaultTimeout = 10 * time.Second
	// DefaultDedupTTL is how long an event id is remembered across replicas.
	DefaultDedupTTL = 24 * time.Hour
)

// TargetSource provides the current targets (TargetStore does).
type TargetSource interface {
	Load(ctx context.Context) ([]*crsv1.NotificationTarget, error)
}

// Options configure a Notifier.
type Options struct {
	// Targets to send to. Required.
	Targets TargetSource
	// Locks deduplicates events across replicas (lease "notify:<event id>"). Optional: without it
	// every replica sends its own events.
	Locks store.LockStore
	// Logger: default no-op.
	Logger *zap.Logger
	// QueueSize bounds waiting events; more are dropped (and logged). Default DefaultQueueSize.
	QueueSize int
	// Workers deliver events concurrently. Default DefaultWorkers.
	Workers int
	// Retries after a failed send; negative = none. Default DefaultRetries (0 means the default).
	Retries int
	// Backoff before the first retry, doubling. Default DefaultBackoff.
	Backoff time.Duration
	// Timeout of one send. Default DefaultTimeout.
	Timeout time.Duration
	// DedupTTL: default DefaultDedupTTL.
	DedupTTL time.Duration
	// Now is the clock: default time.Now.
	Now func() time.Time
}

// Notifier delivers events. Notify queues; Run delivers until its context ends. It is safe for
// concurrent use.
type Notifier struct {
	targets  TargetSource
	locks    store.LockStore
	log      *zap.Logger
	queue    chan Event
	workers  int
	retries  int
	backoff  time.Duration
	timeout  time.Duration
	dedupTTL time.Duration
	now      func() time.Time
	owner    string
	send     sender
}

// sender sends one event to one target (the real senders, or a fake in tests).
type sender func(ctx context.Context, t *crsv1.NotificationTarget, ev Event, timeout time.Duration) error

// New returns a Notifier.
func New(o Options) (*Notifier, error) {
	if o.Targets == nil {
		return nil, errors.New("notify: a target source is required")
	}
	n := &Notifier{
		targets: o.Targets, locks: o.Locks, log: o.Logger, workers: o.Workers, retries: o.Retries,
		backoff: o.Backoff, timeout: o.Timeout, dedupTTL: o.DedupTTL, now: o.Now, send: send,
	}
	if n.log == nil {
		n.log = zap.NewNop()
	}
	size := o.QueueSize
	if size <= 0 {
		size = DefaultQueueSize
	}
	n.queue = make(chan Event, size)
	if n.workers <= 0 {
		n.workers = DefaultWorkers
	}
	switch {
	case n.retries == 0:
		n.retries = DefaultRetries
	case n.retries < 0:
		n.retries = 0
	}
	if n.backoff <= 0 {
		n.backoff = DefaultBackoff
	}
	if n.timeout <= 0 {
		n.timeout = DefaultTimeout
	}
	if n.dedupTTL <= 0 {
		n.dedupTTL = DefaultDedupTTL
	}
	if n.now == nil {
		n.now = time.Now
	}
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		return nil, fmt.Errorf("notify: read random: %w", err)
	}
	n.owner = "notifier-" + hex.EncodeToString(b)
	return n, nil
}

// Notify queues ev and returns at once; it reports false when the queue is full and ev was
// dropped.
func (n *Notifier) Notify(ev Event) bool {
	if ev.Time.IsZero() {
		ev.Time = n.now()
	}
	select {
	case n.queue <- ev:
		return true
	default:
		n.log.Warn("notification queue full; event dropped", zap.String("kind", ev.Kind), zap.String("account_id", ev.AccountID), zap.String("key_id", ev.KeyID))
		return false
	}
}

// Run delivers queued events until ctx ends (events still queued then are dropped); it returns
// ctx's error.
func (n *Notifier) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	for range n.workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-ctx.Done():
					return
				case ev := <-n.queue:
					n.deliver(ctx, ev)
				}
			}
		}()
	}
	wg.Wait()
	return ctx.Err()
}

// deliver sends ev to every enabled target subscribed to its kind, once across replicas.
func (n *Notifier) deliver(ctx context.Context, ev Event) {
	if ev.ID != "" && n.locks != nil {
		got, err := n.locks.TryLock(ctx, "notify:"+ev.ID, n.owner, n.dedupTTL)
		if err != nil {
			n.log.Warn("notification dedup lease; sending anyway", zap.String("kind", ev.Kind), zap.Error(err))
		} else if !got {
			return // another replica sends it
		}
	}
	targets, err := n.targets.Load(ctx)
	if err != nil {
		n.log.Error("load notification targets", zap.Error(err))
		return
	}
	var wg sync.WaitGroup
	for _, t := range targets {
		if !t.GetEnabled() || !subscribed(t, ev.Kind) {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			attempts, err := n.sendWithRetry(ctx, t, ev)
			if err != nil && ctx.Err() == nil {
				n.log.Warn("notification not delivered", zap.String("target_id", t.GetId()), zap.String("type", TypeOf(t)),
					zap.String("kind", ev.Kind), zap.Int("attempts", attempts), zap.Error(err))
			}
		}()
	}
	wg.Wait()
}

// subscribed reports whether t wants events of kind (tests always pass).
func subscribed(t *crsv1.NotificationTarget, kind string) bool {
	return kind == KindTest || len(t.GetEvents()) == 0 || slices.Contains(t.GetEvents(), kind)
}

// sendWithRetry sends ev to t, retrying failures that may pass (network, timeouts, 408, 429,
// 5xx) after Backoff, 2×Backoff, 4×Backoff... It returns the number of tries and the last error.
func (n *Notifier) sendWithRetry(ctx context.Context, t *crsv1.NotificationTarget, ev Event) (int, error) {
	wait := n.backoff
	for attempt := 1; ; attempt++ {
		err := n.send(ctx, t, ev, n.timeout)
		if err == nil {
			return attempt, nil
		}
		if attempt > n.retries || !retryable(err) {
			return attempt, err
		}
		select {
		case <-ctx.Done():
			return attempt, err
		case <-time.After(wait):
		}
		wait *= 2
	}
}

// Test sends a test event to each target now (enabled or not), with retries, and reports the
// outcome per target.
func (n *Notifier) Test(ctx context.Context, targets []*crsv1.NotificationTarget) []*crsv1.NotificationTestResult {
	ev := Event{Kind: KindTest, Time: n.now(), Reason: "This is a test notification from crs."}
	out := make([]*crsv1.NotificationTestResult, len(targets))
	var wg sync.WaitGroup
	for i, t := range targets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			attempts, err := n.sendWithRetry(ctx, t, ev)
			r := &crsv1.NotificationTestResult{TargetId: t.GetId(), Name: t.GetName(), Type: TypeOf(t), Delivered: err == nil, Attempts: int32(attempts)}
			if err != nil {
				r.Error = err.Error()
			}
			out[i] = r
		}()
	}
	wg.Wait()
	return out
}
