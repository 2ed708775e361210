package fleet

import (
	"context"
	"errors"
	"strconv"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/crsrelay/crs/controlplane/store"
	"github.com/crsrelay/crs/controlplane/store/embedded"
	crsv1 "github.com/crsrelay/crs/gen/crs/v1"
	"github.com/crsrelay/crs/internal/period"
)

func TestBind(t *testing.T) {
	st := openStore(t)
	for _, id := range []string{"a1", "a2"} {
		require.NoError(t, st.CreateAccount(t.Context(), testAccount(id, nil)))
	}
	h := start(t, st, nil)
	bind := func(session, account string, replace bool) (*crsv1.BindResponse, error) {
		return h.client.Bind(t.Context(), &crsv1.BindRequest{SessionHash: session, Platform: "claude", AccountId: account, Replace: replace})
	}

	r, err := bind("s1", "a1", false)
	require.NoError(t, err)
	require.Equal(t, "a1", r.GetAccountId())
	require.True(t, r.GetCreated())

	r, err = bind("s1", "a2", false)
	require.NoError(t, err)
	require.Equal(t, "a1", r.GetAccountId(), "the first binding wins")
	require.False(t, r.GetCreated())

	r, err = bind("s1", "a2", true)
	require.NoError(t, err)
	require.Equal(t, "a2", r.GetAccountId(), "replace rebinds")

	r, err = bind("s1", "a1", false)
	require.NoError(t, err)
	require.Equal(t, "a2", r.GetAccountId())

	// Same session on another platform is a different binding.
	r, err = h.client.Bind(t.Context(), &crsv1.BindRequest{SessionHash: "s1", Platform: "gemini", AccountId: "a1"})
	require.NoError(t, err)
	require.Equal(t, "a1", r.GetAccountId())

	// A short TTL from the request expires the binding.
	_, err = h.client.Bind(t.Context(), &crsv1.BindRequest{SessionHash: "s2", Platform: "claude", AccountId: "a1", Ttl: durationpb.New(50 * time.Millisecond)})
	require.NoError(t, err)
	time.Sleep(100 * time.Millisecond)
	r, err = bind("s2", "a2", false)
	require.NoError(t, err)
	require.Equal(t, "a2", r.GetAccountId(), "the expired binding is replaced")

	invalid := []struct {
		name string
		req  *crsv1.BindRequest
		code codes.Code
	}{
		{"no session", &crsv1.BindRequest{Platform: "claude", AccountId: "a1"}, codes.InvalidArgument},
		{"no platform", &crsv1.BindRequest{SessionHash: "s", AccountId: "a1"}, codes.InvalidArgument},
		{"no account", &crsv1.BindRequest{SessionHash: "s", Platform: "claude"}, codes.InvalidArgument},
		{"negative ttl", &crsv1.BindRequest{SessionHash: "s", Platform: "claude", AccountId: "a1", Ttl: durationpb.New(-time.Second)}, codes.InvalidArgument},
		{"unknown account", &crsv1.BindRequest{SessionHash: "s", Platform: "claude", AccountId: "nope"}, codes.NotFound},
	}
	for _, tt := range invalid {
		t.Run(tt.name, func(t *testing.T) {
			_, err := h.client.Bind(t.Context(), tt.req)
			require.Equal(t, tt.code, status.Code(err), "%v", err)
		})
	}
}

// report sends one batch on a new stream and returns its ack (or the stream's error).
func report(t *testing.T, c crsv1.FleetServiceClient, b *crsv1.ReportBatch) (*crsv1.ReportAck, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	rs, err := c.Report(ctx)
	require.NoError(t, err)
	require.NoError(t, rs.Send(b))
	ack, err := rs.Recv()
	if err == nil {
		require.NoError(t, rs.CloseSend())
	}
	return ack, err
}

func sonnetRecord(id, key string, started time.Time) *crsv1.UsageRecord {
	return &crsv1.UsageRecord{
		RequestId: id, KeyId: key, AccountId: "a1", AccountType: "claude-official",
		Model: "claude-sonnet-4-5-20250929", InputTokens: 1000, OutputTokens: 500,
		CacheCreation_5MTokens: 2000, CacheCreation_1HTokens: 1000, CacheReadTokens: 10000,
		Status: 200, StartedAt: timestamppb.New(started),
	}
}

// sonnetCost is sonnetRecord's list price: 1000×$3 + 500×$15 + 2000×$3.75 + 1000×$6 +
// 10000×$0.30 per MTok.
const sonnetCost = 0.027

func TestReportStoresPricesAndAcks(t *testing.T) {
	st := openStore(t)
	ctx := t.Context()
	require.NoError(t, st.CreateKey(ctx, testKey("k1", func(k *crsv1.ApiKey) {
		k.DailyCostLimit = 10
		k.ServiceRates = map[string]float64{"claude": 1.5}
	})))
	require.NoError(t, st.CreateAccount(ctx, testAccount("a1", nil)))
	require.NoError(t, st.PutSettings(ctx, &crsv1.Settings{ServiceRates: map[string]float64{"claude": 2}}))
	h := start(t, st, nil)
	w := h.sync(t, "w")
	snap, version := w.snapshot(t)
	require.Len(t, snap.GetKeyUsage(), 1, "a key with a cost limit has its spend pushed")
	require.Zero(t, snap.GetKeyUsage()[0].GetDailyCost())

	started := h.clock.Now().Add(-time.Minute)
	batch := &crsv1.ReportBatch{BatchId: 7, Records: []*crsv1.UsageRecord{
		sonnetRecord("r1", "k1", started), sonnetRecord("r2", "k1", started),
		sonnetRecord("r1", "k1", started),         // the same request twice in one batch
		{KeyId: "k1", Model: "claude-sonnet-4-5"}, // no request id: dropped
	}}
	ack, err := report(t, h.client, batch)
	require.NoError(t, err)
	require.Equal(t, uint64(7), ack.GetBatchId())
	require.Equal(t, int32(2), ack.GetStored())
	require.Equal(t, int32(1), ack.GetDuplicates())

	// Stored before the ack: the aggregates are readable now.
	rows, err := st.QueryUsage(ctx, store.UsageQuery{Scope: "key", ID: "k1", Granularity: "total"})
	require.NoError(t, err)
	require.Len(t, rows, 1)
	tot := rows[0].Totals
	require.Equal(t, int64(2), tot.GetRequests())
	require.InDelta(t, 2*sonnetCost, tot.GetCost(), 1e-12)
	require.InDelta(t, 2*sonnetCost*2*1.5, tot.GetRatedCost(), 1e-12, "global rate 2 × key rate 1.5")

	// The worker learns the new spend of the key.
	d, version := w.deltaUntil(t, version, time.Second, func(d *crsv1.Delta) bool { return len(d.GetKeyUsage()) > 0 })
	ku := d.GetKeyUsage()[0]
	labels := period.Of(h.clock.Now(), period.Zone(8), 1, 0)
	require.Equal(t, "k1", ku.GetKeyId())
	require.Equal(t, labels.Day, ku.GetDay())
	require.Equal(t, labels.Week, ku.GetWeek())
	require.InDelta(t, 2*sonnetCost*3, ku.GetDailyCost(), 1e-12)
	require.InDelta(t, 2*sonnetCost*3, ku.GetTotalCost(), 1e-12)
	require.InDelta(t, 2*sonnetCost*3, ku.GetWeeklyOpusCost(), 1e-12, "claude-official sonnet counts toward the weekly Claude cost")

	// Resending the batch (a lost ack) stores nothing twice.
	ack, err = report(t, h.client, batch)
	require.NoError(t, err)
	require.Equal(t, int32(0), ack.GetStored())
	require.Equal(t, int32(3), ack.GetDuplicates())
	rows, err = st.QueryUsage(ctx, store.UsageQuery{Scope: "key", ID: "k1", Granularity: "total"})
	require.NoError(t, err)
	require.Equal(t, int64(2), rows[0].Totals.GetRequests())

	// Several batches on one stream are acked in order.
	rs, err := h.client.Report(t.Context())
	require.NoError(t, err)
	for i := uint64(10); i < 13; i++ {
		require.NoError(t, rs.Send(&crsv1.ReportBatch{BatchId: i, Records: []*crsv1.UsageRecord{sonnetRecord("multi-"+string(rune('a'+i)), "k1", started)}}))
	}
	for i := uint64(10); i < 13; i++ {
		ack, err := rs.Recv()
		require.NoError(t, err)
		require.Equal(t, i, ack.GetBatchId())
		require.Equal(t, int32(1), ack.GetStored())
	}
	require.NoError(t, rs.CloseSend())
	_ = version
}

// failingStore fails usage writes while fail is set.
type failingStore struct {
	store.Store
	fail atomic.Bool
}

func (f *failingStore) RecordUsage(ctx context.Context, e *store.UsageEntry) (bool, error) {
	if f.fail.Load() {
		return false, errors.New("disk full")
	}
	return f.Store.RecordUsage(ctx, e)
}

func (f *failingStore) RecordUsageBatch(ctx context.Context, es []*store.UsageEntry) ([]bool, error) {
	if f.fail.Load() {
		return nil, errors.New("disk full")
	}
	return f.Store.RecordUsageBatch(ctx, es)
}

func TestReportNoAckWhenStoringFails(t *testing.T) {
	st := openStore(t)
	fs := &failingStore{Store: st}
	fs.fail.Store(true)
	h := start(t, fs, nil)
	batch := &crsv1.ReportBatch{BatchId: 1, Records: []*crsv1.UsageRecord{sonnetRecord("r1", "k1", time.Now())}}
	_, err := report(t, h.client, batch)
	require.Equal(t, codes.Unavailable, status.Code(err), "%v", err)

	fs.fail.Store(false)
	ack, err := report(t, h.client, batch)
	require.NoError(t, err)
	require.Equal(t, int32(1), ack.GetStored())
}

func TestReportActivatesKeyAtFirstUse(t *testing.T) {
	st := openStore(t)
	ctx := t.Context()
	for id, unit := range map[string]string{"days-key": "days", "hours-key": "hours"} {
		require.NoError(t, st.CreateKey(ctx, testKey(id, func(k *crsv1.ApiKey) {
			k.ExpirationMode = "activation"
			k.IsActivated = false
			k.ActivationDays = 2
			k.ActivationUnit = unit
		})))
	}
	h := start(t, st, nil)
	w := h.sync(t, "w")
	_, version := w.snapshot(t)

	first := h.clock.Now().Add(-10 * time.Minute).Truncate(time.Second)
	ack, err := report(t, h.client, &crsv1.ReportBatch{BatchId: 1, Records: []*crsv1.UsageRecord{
		sonnetRecord("r2", "days-key", first.Add(time.Minute)),
		sonnetRecord("r1", "days-key", first),
		sonnetRecord("r3", "hours-key", first),
	}})
	require.NoError(t, err)
	require.Equal(t, int32(3), ack.GetStored())

	for id, valid := range map[string]time.Duration{"days-key": 48 * time.Hour, "hours-key": 2 * time.Hour} {
		k, err := st.GetKey(ctx, id)
		require.NoError(t, err)
		require.True(t, k.Key.GetIsActivated(), id)
		require.True(t, k.Key.GetActivatedAt().AsTime().Equal(first), "%s activated at the earliest first use", id)
		require.True(t, k.Key.GetExpiresAt().AsTime().Equal(first.Add(valid)), "%s expires %v after first use", id, valid)
		require.Equal(t, "hash-"+id, k.Hash)
	}
	seen := map[string]bool{}
	w.deltaUntil(t, version, time.Second, func(d *crsv1.Delta) bool {
		for _, k := range d.GetUpsertKeys() {
			if k.GetKey().GetIsActivated() {
				seen[k.GetKey().GetId()] = true
			}
		}
		return len(seen) == 2
	})

	// A later record does not move the activation.
	_, err = report(t, h.client, &crsv1.ReportBatch{BatchId: 2, Records: []*crsv1.UsageRecord{sonnetRecord("r4", "days-key", first.Add(time.Hour))}})
	require.NoError(t, err)
	k, err := st.GetKey(ctx, "days-key")
	require.NoError(t, err)
	require.True(t, k.Key.GetActivatedAt().AsTime().Equal(first))
}

// accountStatus reads an account's stored status.
func accountStatus(t *testing.T, st store.Store, id string) *crsv1.AccountStatus {
	t.Helper()
	a, err := st.GetAccount(t.Context(), id)
	require.NoError(t, err)
	return a.Account.GetStatus()
}

func TestReportAccountEvents(t *testing.T) {
	st := openStore(t)
	ctx := t.Context()
	for _, id := range []string{"a1", "a2", "a3", "a4", "a5", "protected"} {
		require.NoError(t, st.CreateAccount(ctx, testAccount(id, func(a *crsv1.Account) {
			a.DisableAutoProtection = id == "protected"
		})))
	}
	h := start(t, st, func(o *Options) { o.RecoveryInterval = time.Hour })
	w := h.sync(t, "w")
	_, version := w.snapshot(t)
	now := h.clock.Now()
	reset := now.Add(2 * time.Hour).Truncate(time.Second)
	ev := func(account, kind string, status int32, until time.Time, family string) *crsv1.AccountEvent {
		e := &crsv1.AccountEvent{AccountId: account, Kind: kind, UpstreamStatus: status, ModelFamily: family,
			Reason: "upstream says no", ObservedAt: timestamppb.New(now), RequestId: "req-" + account}
		if !until.IsZero() {
			e.Until = timestamppb.New(until)
		}
		return e
	}

	_, err := report(t, h.client, &crsv1.ReportBatch{BatchId: 1, Events: []*crsv1.AccountEvent{
		ev("a1", EventRateLimited, 429, reset, "opus"),
		ev("a2", EventRateLimited, 429, reset, ""),
		ev("a3", EventRateLimited, 429, time.Time{}, ""),
		ev("a4", EventOverloaded, 529, time.Time{}, ""),
		ev("a5", EventBlocked, 403, time.Time{}, ""),
		ev("protected", EventBlocked, 403, time.Time{}, ""),
		ev("missing", EventBlocked, 403, time.Time{}, ""),
	}})
	require.NoError(t, err)

	a1 := accountStatus(t, st, "a1")
	require.Equal(t, StateActive, a1.GetState(), "a family limit keeps the account active")
	require.True(t, a1.GetFamilyLimitedUntil()["opus"].AsTime().Equal(reset))
	require.Contains(t, a1.GetReason(), "opus")

	a2 := accountStatus(t, st, "a2")
	require.Equal(t, StateRateLimited, a2.GetState())
	require.True(t, a2.GetUntil().AsTime().Equal(reset))
	require.Contains(t, a2.GetReason(), "upstream 429: upstream says no")

	require.Equal(t, StateActive, accountStatus(t, st, "a3").GetState(), "429 without reset is not marked")
	require.Empty(t, accountStatus(t, st, "a3").GetReason())

	a4 := accountStatus(t, st, "a4")
	require.Equal(t, StateOverloaded, a4.GetState())
	require.True(t, a4.GetUntil().AsTime().Equal(now.Add(10*time.Minute)))

	a5 := accountStatus(t, st, "a5")
	require.Equal(t, StateBlocked, a5.GetState())
	require.Nil(t, a5.GetUntil())

	require.Equal(t, StateActive, accountStatus(t, st, "protected").GetState(), "auto protection disabled")

	// Workers see the new states.
	changed := map[string]string{}
	_, version = w.deltaUntil(t, version, time.Second, func(d *crsv1.Delta) bool {
		for _, a := range d.GetUpsertAccounts() {
			changed[a.GetId()] = a.GetStatus().GetState()
		}
		return len(changed) == 4
	})
	require.Equal(t, map[string]string{"a1": StateActive, "a2": StateRateLimited, "a4": StateOverloaded, "a5": StateBlocked}, changed)

	// A success observed later clears the timed states, not the block.
	h.clock.Advance(time.Second)
	later := h.clock.Now()
	succ := func(id string) *crsv1.AccountEvent {
		return &crsv1.AccountEvent{AccountId: id, Kind: EventSuccess, UpstreamStatus: 200, ObservedAt: timestamppb.New(later)}
	}
	_, err = report(t, h.client, &crsv1.ReportBatch{BatchId: 2, Events: []*crsv1.AccountEvent{succ("a2"), succ("a4"), succ("a5")}})
	require.NoError(t, err)
	require.Equal(t, StateActive, accountStatus(t, st, "a2").GetState())
	require.Contains(t, accountStatus(t, st, "a2").GetReason(), "successfully")
	require.Equal(t, StateActive, accountStatus(t, st, "a4").GetState())
	require.Equal(t, StateBlocked, accountStatus(t, st, "a5").GetState(), "blocked needs an admin")

	// A stale failure observed before that success does not re-mark.
	_, err = report(t, h.client, &crsv1.ReportBatch{BatchId: 3, Events: []*crsv1.AccountEvent{ev("a4", EventOverloaded, 529, time.Time{}, "")}})
	require.NoError(t, err)
	require.Equal(t, StateActive, accountStatus(t, st, "a4").GetState())
}

func TestRecoveryEndsExpiredStates(t *testing.T) {
	st := openStore(t)
	h := start(t, st, func(o *Options) { o.OpenAccount = openTest })
	now := h.clock.Now()
	require.NoError(t, st.CreateAccount(t.Context(), testAccount("a1", func(a *crsv1.Account) {
		a.Status = &crsv1.AccountStatus{
			State: StateRateLimited, Reason: "limited", Until: timestamppb.New(now.Add(time.Minute)),
			ChangedAt:          timestamppb.New(now),
			FamilyLimitedUntil: map[string]*timestamppb.Timestamp{"opus": timestamppb.New(now.Add(time.Minute)), "haiku": timestamppb.New(now.Add(time.Hour))},
		}
	})))
	w := h.sync(t, "w")
	_, version := w.snapshot(t)

	time.Sleep(100 * time.Millisecond) // several recovery ticks: nothing is due yet
	require.Equal(t, StateRateLimited, accountStatus(t, st, "a1").GetState())

	h.clock.Advance(2 * time.Minute)
	d, _ := w.deltaUntil(t, version, time.Second, func(d *crsv1.Delta) bool {
		return len(d.GetUpsertAccounts()) > 0 && d.GetUpsertAccounts()[0].GetStatus().GetState() == StateActive
	})
	got := d.GetUpsertAccounts()[0]
	require.Nil(t, got.GetStatus().GetUntil())
	require.Contains(t, got.GetStatus().GetReason(), "rate_limited ended")
	require.NotContains(t, got.GetStatus().GetFamilyLimitedUntil(), "opus", "expired family limit dropped")
	require.Contains(t, got.GetStatus().GetFamilyLimitedUntil(), "haiku", "running family limit kept")
	require.Equal(t, "sk-sealed:a1", got.GetApiKey().GetApiKey())
}

// TestRecoveryRunsOnTheReplicaHoldingTheLease: with two replicas on one store, only the one that
// holds the recovery lease writes recoveries; the other's ticks change nothing.
func TestRecoveryRunsOnTheReplicaHoldingTheLease(t *testing.T) {
	st := openStore(t)
	// Another replica holds the lease (it re-takes it every tick while alive).
	ok, err := st.TryLock(t.Context(), recoveryLock, "other-replica", time.Hour)
	require.NoError(t, err)
	require.True(t, ok)
	h := start(t, st, func(o *Options) { o.OpenAccount = openTest; o.Locks = st })
	now := h.clock.Now()
	require.NoError(t, st.CreateAccount(t.Context(), testAccount("a1", func(a *crsv1.Account) {
		a.Status = &crsv1.AccountStatus{State: StateOverloaded, Reason: "529", Until: timestamppb.New(now.Add(time.Minute)), ChangedAt: timestamppb.New(now)}
	})))
	h.clock.Advance(2 * time.Minute)
	time.Sleep(150 * time.Millisecond) // several ticks of this replica
	require.Equal(t, StateOverloaded, accountStatus(t, st, "a1").GetState(), "the replica without the lease must not recover")

	// The other replica dies: its lease is released (or expires), and this one takes over.
	require.NoError(t, st.Unlock(t.Context(), recoveryLock, "other-replica"))
	require.Eventually(t, func() bool { return accountStatus(t, st, "a1").GetState() == StateActive }, 2*time.Second, 10*time.Millisecond)
}

// countingLimits counts AddWindowUsage calls.
type countingLimits struct {
	store.LimitStore
	adds atomic.Int32
}

func (c *countingLimits) AddWindowUsage(ctx context.Context, keyID string, window time.Duration, tokens int64, cost float64, now time.Time) error {
	c.adds.Add(1)
	return c.LimitStore.AddWindowUsage(ctx, keyID, window, tokens, cost, now)
}

func TestReportAddsWindowUsageOncePerKey(t *testing.T) {
	st := openStore(t)
	ctx := t.Context()
	for _, id := range []string{"kw1", "kw2"} {
		require.NoError(t, st.CreateKey(ctx, testKey(id, func(k *crsv1.ApiKey) {
			k.RateLimitWindow = 60
			k.TokenLimit = 1_000_000
		})))
	}
	require.NoError(t, st.CreateKey(ctx, testKey("free", nil)))
	counting := &countingLimits{}
	h, l := startLimited(t, st, func(o *Options) {
		counting.LimitStore = o.Limits
		o.Limits = counting
	})
	for _, id := range []string{"kw1", "kw2"} {
		_, counted, err := l.CountWindowRequest(ctx, id, time.Hour, 0, h.clock.Now())
		require.NoError(t, err)
		require.True(t, counted, "a window runs")
	}

	now := h.clock.Now()
	ack, err := report(t, h.client, &crsv1.ReportBatch{BatchId: 1, Records: []*crsv1.UsageRecord{
		sonnetRecord("r1", "kw1", now), sonnetRecord("r2", "kw2", now), sonnetRecord("r3", "kw1", now),
		sonnetRecord("r4", "free", now), sonnetRecord("r5", "kw1", now),
		sonnetRecord("r3", "kw1", now), // a duplicate adds nothing
	}})
	require.NoError(t, err)
	require.Equal(t, int32(5), ack.GetStored())
	require.Equal(t, int32(2), counting.adds.Load(), "one window update per key with a window")

	const tokens = 1000 + 500 + 2000 + 1000 + 10000
	for id, n := range map[string]int64{"kw1": 3, "kw2": 1} {
		w, err := l.GetWindow(ctx, id, time.Hour, h.clock.Now())
		require.NoError(t, err)
		require.Equal(t, n*tokens, w.Tokens, id)
		require.InDelta(t, float64(n)*sonnetCost, w.Cost, 1e-12, id)
	}

	// A resent batch is all duplicates: the windows do not move.
	ack, err = report(t, h.client, &crsv1.ReportBatch{BatchId: 1, Records: []*crsv1.UsageRecord{
		sonnetRecord("r1", "kw1", now), sonnetRecord("r2", "kw2", now),
	}})
	require.NoError(t, err)
	require.Equal(t, int32(2), ack.GetDuplicates())
	require.Equal(t, int32(2), counting.adds.Load())
	w, err := l.GetWindow(ctx, "kw1", time.Hour, h.clock.Now())
	require.NoError(t, err)
	require.Equal(t, int64(3*tokens), w.Tokens)
}

// cpuTime returns the CPU time this process used so far, user and system: the benchmark below
// reports it per record, since its wall time is mostly the commit's fsync.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkStoreBatch measures the control plane's work per usage record: pricing, labelling
// and storing batches of a few keys and models, as Report does after decoding a batch. Workers
// send 500 records at most per batch (fleetclient.DefaultBatchSize) and at least every 200 ms.
// cpu-ns/record includes the garbage collector's share and the commit's fsync.
func BenchmarkStoreBatch(b *testing.B) {
	for _, size := range []int{500, 2000} {
		b.Run(strconv.Itoa(size), func(b *testing.B) { benchStoreBatch(b, size) })
	}
}

func benchStoreBatch(b *testing.B, size int) {
	st, err := embedded.Open(b.TempDir())
	require.NoError(b, err)
	defer st.Close()
	keys := []string{"k0", "k1", "k2", "k3"}
	for _, id := range keys {
		require.NoError(b, st.CreateKey(b.Context(), testKey(id, nil)))
	}
	s := New(Options{Store: st, TZOffsetHours: 8})
	ctx, cancel := context.WithCancel(b.Context())
	defer cancel()
	go func() { _ = s.Run(ctx) }()
	require.Eventually(b, s.Ready, 5*time.Second, time.Millisecond)

	models := []string{"claude-sonnet-4-5-20250929", "claude-opus-4-1", "claude-3-5-haiku-20241022"}
	now := time.Now()
	var seq uint64 = 1 << 40
	batch := func() *crsv1.ReportBatch {
		recs := make([]*crsv1.UsageRecord, size)
		for i := range recs {
			r := sonnetRecord("0c1a2b3d4e5f-"+strconv.FormatUint(seq, 36), keys[i%len(keys)], now)
			r.Model = models[i%len(models)]
			recs[i] = r
			seq++
		}
		return &crsv1.ReportBatch{BatchId: seq, Records: recs}
	}
	var cpu time.Duration
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		bt := batch()
		cpu0 := cpuTime(b)
		b.StartTimer()
		ack, err := s.storeBatch(ctx, bt)
		b.StopTimer()
		cpu += cpuTime(b) - cpu0
		if err != nil || int(ack.GetStored()) != size {
			b.Fatalf("stored %d of %d: %v", ack.GetStored(), size, err)
		}
		b.StartTimer()
	}
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N*size), "cpu-ns/record")
}
