package fleetclient

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"
	"google.golang.org/protobuf/proto"

	"github.com/crsrelay/crs/dataplane/fleetclient/fleettest"
	crsv1 "github.com/crsrelay/crs/gen/crs/v1"
)

const token = "fleet-token-for-tests"

func testSnapshot(keys ...string) *crsv1.Snapshot {
	s := &crsv1.Snapshot{Hashing: &crsv1.KeyHashing{HmacSecret: []byte("s")}}
	for _, k := range keys {
		s.Keys = append(s.Keys, &crsv1.WorkerKey{Hash: "hash-" + k, Key: &crsv1.ApiKey{Id: k, IsActive: true}})
	}
	return s
}

type harness struct {
	srv    *fleettest.Server
	c      *Client
	cancel context.CancelFunc
	done   chan struct{}
}

func start(t *testing.T, opts Options) *harness {
	t.Helper()
	srv := fleettest.Start(t, token)
	if opts.Addr == "" {
		opts.Addr = srv.Addr()
	}
	if opts.Token == "" {
		opts.Token = token
	}
	opts.Logger = zaptest.NewLogger(t)
	if opts.MaxBackoff == 0 {
		opts.MaxBackoff = 200 * time.Millisecond
	}
	if opts.BatchInterval == 0 {
		opts.BatchInterval = 20 * time.Millisecond
	}
	c, err := New(opts)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	h := &harness{srv: srv, c: c, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(h.done)
		_ = c.Run(ctx)
	}()
	t.Cleanup(func() {
		h.stop(t)
		_ = c.Close()
	})
	return h
}

// stop ends Run and waits for it (and its flush) to return.
func (h *harness) stop(t *testing.T) {
	t.Helper()
	h.cancel()
	select {
	case <-h.done:
	case <-time.After(15 * time.Second):
		t.Fatal("Run did not return")
	}
}

func waitReady(t *testing.T, c *Client) {
	t.Helper()
	select {
	case <-c.Ready():
	case <-time.After(5 * time.Second):
		t.Fatal("no snapshot")
	}
}

func record(id string) *crsv1.UsageRecord {
	return &crsv1.UsageRecord{RequestId: id, KeyId: "k1", InputTokens: 10, OutputTokens: 5}
}

func TestNewNeedsAddr(t *testing.T) {
	_, err := New(Options{})
	require.ErrorIs(t, err, ErrNoAddr)
}

func TestSyncSnapshotDeltaAndGap(t *testing.T) {
	h := start(t, Options{})
	require.Nil(t, h.c.State())
	require.Nil(t, h.c.Serving())
	h.srv.SetSnapshot(5, testSnapshot("k1"))
	waitReady(t, h.c)
	require.Equal(t, uint64(5), h.c.State().Version())
	require.Equal(t, "k1", h.c.State().KeyByHash("hash-k1").GetId())
	require.NotNil(t, h.c.Serving())

	h.srv.PushDelta(5, 6, &crsv1.Delta{UpsertKeys: testSnapshot("k2").Keys})
	require.Eventually(t, func() bool { return h.c.State().Version() == 6 }, 5*time.Second, 5*time.Millisecond)
	require.Equal(t, "k2", h.c.State().KeyByHash("hash-k2").GetId())

	// A gap: the client drops the stream and resyncs from a fresh snapshot.
	syncs := h.srv.SyncCount()
	h.srv.SetSnapshotQuiet(9, testSnapshot("k3"))
	h.srv.PushDelta(7, 8, &crsv1.Delta{})
	require.Eventually(t, func() bool { return h.c.State().Version() == 9 }, 5*time.Second, 5*time.Millisecond)
	require.Greater(t, h.srv.SyncCount(), syncs)
	require.Nil(t, h.c.State().KeyByHash("hash-k1"), "replaced by the new snapshot")
	require.Equal(t, "k3", h.c.State().KeyByHash("hash-k3").GetId())
}

func TestServesLastSnapshotWhileDisconnected(t *testing.T) {
	h := start(t, Options{StaleAfter: 300 * time.Millisecond})
	h.srv.SetSnapshot(1, testSnapshot("k1"))
	waitReady(t, h.c)
	require.True(t, h.c.Connected())

	h.srv.Stop()
	require.Eventually(t, func() bool { return !h.c.Connected() }, 5*time.Second, 5*time.Millisecond)
	require.NotNil(t, h.c.Serving(), "still serving right after the loss")
	require.Equal(t, "k1", h.c.State().KeyByHash("hash-k1").GetId())
	require.Eventually(t, func() bool { return h.c.Serving() == nil }, 5*time.Second, 10*time.Millisecond, "stale")
	require.NotNil(t, h.c.State(), "the state is kept")

	h.srv.Restart(t)
	require.Eventually(t, func() bool { return h.c.Connected() && h.c.Serving() != nil }, 10*time.Second, 10*time.Millisecond)
}

func TestWrongTokenNeverReady(t *testing.T) {
	h := start(t, Options{Token: "wrong"})
	h.srv.SetSnapshot(1, testSnapshot("k1"))
	_, err := h.c.Bind(context.Background(), &crsv1.BindRequest{SessionHash: "s", AccountId: "a"})
	require.ErrorContains(t, err, "invalid fleet token")
	select {
	case <-h.c.Ready():
		t.Fatal("ready with a wrong token")
	case <-time.After(300 * time.Millisecond):
	}
}

func TestBind(t *testing.T) {
	h := start(t, Options{})
	resp, err := h.c.Bind(context.Background(), &crsv1.BindRequest{SessionHash: "s", Platform: "claude", AccountId: "a"})
	require.NoError(t, err)
	require.Equal(t, "a", resp.GetAccountId())
	require.True(t, resp.GetCreated())
	resp, err = h.c.Bind(context.Background(), &crsv1.BindRequest{SessionHash: "s", Platform: "claude", AccountId: "b"})
	require.NoError(t, err)
	require.Equal(t, "a", resp.GetAccountId())

	h.srv.Stop()
	start := time.Now()
	_, err = h.c.Bind(context.Background(), &crsv1.BindRequest{SessionHash: "s", AccountId: "b"})
	require.Error(t, err)
	require.Less(t, time.Since(start), 2*time.Second, "bounded by BindTimeout")
}

func TestReportDelivered(t *testing.T) {
	h := start(t, Options{BatchSize: 3})
	for i := range 7 {
		h.c.ReportUsage(record(fmt.Sprintf("r%d", i)))
	}
	h.c.ReportEvent(&crsv1.AccountEvent{AccountId: "a1", Kind: "rate_limited", RequestId: "r1"})
	require.Eventually(t, func() bool { return len(h.srv.Records()) == 7 && len(h.srv.Events()) == 1 }, 5*time.Second, 5*time.Millisecond)
	require.Eventually(t, func() bool { return h.c.Pending() == 0 }, 5*time.Second, 5*time.Millisecond)
	got := h.srv.Records()
	for i, r := range got {
		require.Equal(t, fmt.Sprintf("r%d", i), r.GetRequestId(), "order kept")
	}
	require.Equal(t, "rate_limited", h.srv.Events()[0].GetKind())

	var buf bytes.Buffer
	h.c.WriteMetrics(&buf)
	require.Contains(t, buf.String(), "crs_worker_report_acked_total 8")
	require.Contains(t, buf.String(), "crs_worker_usage_buffer_size 0")
}

// A client's raw byte in a header or model name must not stop reporting: protobuf refuses to
// marshal invalid UTF-8, and the refused batch would be resent forever, holding back every record
// queued after it.
func TestReportRepairsInvalidUTF8(t *testing.T) {
	h := start(t, Options{BatchSize: 2})
	bad := record("r0")
	bad.AnthropicBeta = "claude-code-20250219,\xff\xfe"
	bad.Model = "claude-\xc3"
	h.c.ReportUsage(bad)
	h.c.ReportUsageNow(record("r1"))
	h.c.ReportEvent(&crsv1.AccountEvent{AccountId: "a1", Kind: "blocked", Reason: "banned \xff"})
	require.Eventually(t, func() bool { return len(h.srv.Records()) == 2 && len(h.srv.Events()) == 1 }, 5*time.Second, 5*time.Millisecond)
	got := h.srv.Records()
	require.Equal(t, "claude-code-20250219,\uFFFD", got[0].GetAnthropicBeta(), "invalid bytes become U+FFFD, valid ones stay")
	require.Equal(t, "claude-\uFFFD", got[0].GetModel())
	require.Equal(t, "r1", got[1].GetRequestId(), "the records after the repaired one are delivered too")
	require.Equal(t, "banned \uFFFD", h.srv.Events()[0].GetReason())
}

// A record of a spend-limited key does not wait for the batch interval (nor for a full batch):
// it leaves at once, taking what is pending with it.
func TestReportUsageNowSkipsTheBatchWait(t *testing.T) {
	h := start(t, Options{BatchSize: 500, BatchInterval: time.Hour})
	time.Sleep(200 * time.Millisecond) // the Report stream is up; what is pending at connect goes at once
	h.c.ReportUsage(record("batched"))
	time.Sleep(100 * time.Millisecond)
	require.Empty(t, h.srv.Records(), "an ordinary record waits for the interval or a full batch")
	began := time.Now()
	h.c.ReportUsageNow(record("urgent"))
	require.Eventually(t, func() bool { return len(h.srv.Records()) == 2 }, 2*time.Second, time.Millisecond)
	require.Less(t, time.Since(began), time.Second)
	got := h.srv.Records()
	require.Equal(t, "batched", got[0].GetRequestId())
	require.Equal(t, "urgent", got[1].GetRequestId())
}

// Urgent records keep leaving promptly window after window: the first of a window wakes the
// sender, the window's others share its batch, and the next window starts afresh.
func TestReportUsageNowWindows(t *testing.T) {
	h := start(t, Options{BatchSize: 500, BatchInterval: time.Hour})
	time.Sleep(200 * time.Millisecond) // the Report stream is up
	for round := range 5 {
		began := time.Now()
		for i := range 3 {
			h.c.ReportUsageNow(record(fmt.Sprintf("u%d-%d", round, i)))
		}
		want := 3 * (round + 1)
		require.Eventually(t, func() bool { return len(h.srv.Records()) == want }, 2*time.Second, time.Millisecond, "round %d", round)
		require.Less(t, time.Since(began), 500*time.Millisecond, "round %d waited for the interval", round)
	}
}

// An event the control plane must act on at once (a 401 whose request waits for the refreshed
// credential) does not wait for the batch interval either.
func TestReportEventNowSkipsTheBatchWait(t *testing.T) {
	h := start(t, Options{BatchSize: 500, BatchInterval: time.Hour})
	time.Sleep(200 * time.Millisecond) // the Report stream is up
	h.c.ReportEvent(&crsv1.AccountEvent{AccountId: "a1", Kind: "success", RequestId: "r0"})
	time.Sleep(100 * time.Millisecond)
	require.Empty(t, h.srv.Events(), "an ordinary event waits for the interval or a full batch")
	began := time.Now()
	h.c.ReportEventNow(&crsv1.AccountEvent{AccountId: "a1", Kind: "unauthorized", RequestId: "r1"})
	require.Eventually(t, func() bool { return len(h.srv.Events()) == 2 }, 2*time.Second, time.Millisecond)
	require.Less(t, time.Since(began), time.Second)
	require.Equal(t, "unauthorized", h.srv.Events()[1].GetKind())
}

func TestReportSurvivesControlPlaneRestart(t *testing.T) {
	h := start(t, Options{BatchSize: 2})
	h.srv.HoldAcks(true)
	for i := range 5 {
		h.c.ReportUsage(record(fmt.Sprintf("r%d", i)))
	}
	// Stored but not acknowledged: the client must keep them.
	require.Eventually(t, func() bool { return len(h.srv.Records()) == 5 }, 5*time.Second, 5*time.Millisecond)
	require.Equal(t, 5, h.c.Pending())

	h.srv.Stop()
	for i := 5; i < 8; i++ {
		h.c.ReportUsage(record(fmt.Sprintf("r%d", i))) // queued while down
	}
	require.Equal(t, 8, h.c.Pending())
	h.srv.HoldAcks(false)
	h.srv.Restart(t)

	require.Eventually(t, func() bool { return h.c.Pending() == 0 }, 10*time.Second, 10*time.Millisecond)
	recs := h.srv.Records()
	require.Len(t, recs, 8, "none lost")
	require.Equal(t, 5, h.srv.Duplicates(), "unacknowledged batches were resent")
}

func TestFlushOnShutdown(t *testing.T) {
	h := start(t, Options{BatchSize: 1000, BatchInterval: time.Hour})
	for i := range 10 {
		h.c.ReportUsage(record(fmt.Sprintf("r%d", i)))
	}
	h.stop(t)
	require.Len(t, h.srv.Records(), 10)
	require.Zero(t, h.c.Pending())
}

func TestFlushDeadlineWhenControlPlaneIsDown(t *testing.T) {
	h := start(t, Options{FlushTimeout: 300 * time.Millisecond})
	h.srv.Stop()
	h.c.ReportUsage(record("lost"))
	began := time.Now()
	h.stop(t)
	require.Less(t, time.Since(began), 3*time.Second)
	require.Equal(t, 1, h.c.Pending(), "reported as lost, not silently dropped")
}

func TestBufferDropsOldestWhenFull(t *testing.T) {
	h := start(t, Options{UsageBuffer: 3})
	h.srv.Stop()
	for i := range 5 {
		h.c.ReportUsage(record(fmt.Sprintf("r%d", i)))
	}
	require.Equal(t, 3, h.c.Pending())
	var buf bytes.Buffer
	h.c.WriteMetrics(&buf)
	require.Contains(t, buf.String(), "crs_worker_usage_buffer_dropped_total 2")

	h.srv.Restart(t)
	require.Eventually(t, func() bool { return h.c.Pending() == 0 }, 10*time.Second, 10*time.Millisecond)
	var ids []string
	for _, r := range h.srv.Records() {
		ids = append(ids, r.GetRequestId())
	}
	require.Equal(t, []string{"r2", "r3", "r4"}, ids)
}

// A full buffer drops its oldest item even when it is in flight, while the sender may be
// marshalling that batch without the lock: the sender reads only the message take built.
// Run with -race (make test does).
func TestReportBufferDropWhileSending(t *testing.T) {
	b := newReportBuffer(100)
	for i := range 100 {
		b.add(item{rec: record(fmt.Sprintf("r%d", i))}, 1000, false)
	}
	bt := b.take(100, true)
	require.Len(t, bt.msg.GetRecords(), 100)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range 150 {
			b.add(item{rec: record(fmt.Sprintf("s%d", i))}, 1000, false)
		}
	}()
	for range 20 {
		_, err := proto.Marshal(bt.msg)
		require.NoError(t, err)
	}
	<-done
	require.Len(t, bt.msg.GetRecords(), 100, "the message sent keeps what it was built with")
	require.Empty(t, bt.items, "the in-flight items were dropped for newer ones")
	require.Equal(t, 100, b.len())
}

func TestReportBuffer(t *testing.T) {
	it := func(id string) item { return item{rec: record(id)} }
	idsOf := func(b *batch) []string {
		var out []string
		for _, x := range b.items {
			out = append(out, x.rec.GetRequestId())
		}
		return out
	}
	b := newReportBuffer(5)
	for _, id := range []string{"a", "b", "c"} {
		b.add(it(id), 2, false)
	}
	require.Nil(t, b.take(5, false), "not full and not forced")
	b1 := b.take(2, false)
	require.Equal(t, []string{"a", "b"}, idsOf(b1))
	b2 := b.take(2, true)
	require.Equal(t, []string{"c"}, idsOf(b2))
	require.Nil(t, b.take(2, true))
	require.Equal(t, 3, b.len())

	require.Equal(t, 1, b.ack(b2.id))
	require.Zero(t, b.ack(999), "unknown batch")
	require.Equal(t, 2, b.len())

	b.add(it("d"), 2, false)
	require.Equal(t, 2, b.requeue())
	b3 := b.take(10, true)
	require.Equal(t, []string{"a", "b", "d"}, idsOf(b3), "resent first, in order")

	// Full: the oldest goes, even when it is in flight.
	b.add(it("e"), 10, false)
	b.add(it("f"), 10, false)
	require.True(t, b.add(it("g"), 10, false))
	require.Equal(t, 5, b.len())
	require.Equal(t, []string{"b", "d"}, idsOf(b3))
	require.Equal(t, uint64(1), b.dropped.Get())
	b.requeue()
	require.Equal(t, []string{"b", "d", "e", "f", "g"}, idsOf(b.take(10, true)))
}
