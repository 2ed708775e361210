package fleetclient

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"go.uber.org/zap"

	crsv1 "github.com/crsrelay/crs/gen/crs/v1"
)

// ReportUsage queues a usage record for delivery. The record must not be modified afterwards.
// It never blocks: when the buffer is full the oldest entry is dropped.
func (c *Client) ReportUsage(r *crsv1.UsageRecord) {
	if r != nil {
		repairRecord(r)
		c.add(item{rec: r})
	}
}

// urgentDelay is how long an urgent record may wait for others to share its batch. Each urgent
// batch is one store transaction (one fsync) on the control plane; 20 ms keeps that to 50 a
// second per worker under load, small next to the 50 ms in which the control plane coalesces the
// resulting spend into one push to the workers.
const urgentDelay = 20 * time.Millisecond

// ReportUsageNow is ReportUsage for a record whose key has spending or window limits: it goes out
// within urgentDelay, with whatever else is pending, instead of waiting for the next batch
// interval, so the control plane settles the key's caps within milliseconds and overshoot stays
// bounded by the requests in flight.
func (c *Client) ReportUsageNow(r *crsv1.UsageRecord) {
	if r != nil {
		repairRecord(r)
		c.addUrgent(item{rec: r})
	}
}

// ReportEvent queues an account event for delivery, like ReportUsage.
func (c *Client) ReportEvent(e *crsv1.AccountEvent) {
	if e != nil {
		repairEvent(e)
		c.add(item{ev: e})
	}
}

// ReportEventNow is ReportEvent for an event the control plane must act on at once (a 401 whose
// request waits for the refreshed credential): it goes out at once, with whatever else is
// pending, instead of waiting for the next batch interval.
func (c *Client) ReportEventNow(e *crsv1.AccountEvent) {
	if e != nil {
		repairEvent(e)
		c.addUrgent(item{ev: e})
	}
}

// Pending is the number of records and events not yet acknowledged.
func (c *Client) Pending() int { return c.buf.len() }

func (c *Client) add(it item) { c.addItem(it, false) }

func (c *Client) addUrgent(it item) { c.addItem(it, true) }

func (c *Client) addItem(it item, urgent bool) {
	if dropped := c.buf.add(it, c.opts.BatchSize, urgent); dropped {
		// One line per power of two, so a long outage does not flood the log.
		if n := c.buf.dropped.Get(); n&(n-1) == 0 {
			c.log.Warn("usage buffer full, dropped the oldest report",
				zap.Uint64("dropped_total", n), zap.Int("capacity", c.opts.UsageBuffer))
		}
	}
}

// item is one record or one event.
type item struct {
	rec *crsv1.UsageRecord
	ev  *crsv1.AccountEvent
}

// batch is items sent on the current Report stream and not acknowledged yet.
type batch struct {
	id    uint64
	items []item
	// msg is what is sent. take builds it under the buffer's lock: once the lock is released,
	// add may drop the oldest of items (a full buffer drops in-flight items first), so the sender
	// must not read items.
	msg *crsv1.ReportBatch
}

func (b *batch) proto() *crsv1.ReportBatch {
	pb := &crsv1.ReportBatch{BatchId: b.id}
	for _, it := range b.items {
		if it.rec != nil {
			pb.Records = append(pb.Records, it.rec)
		} else {
			pb.Events = append(pb.Events, it.ev)
		}
	}
	return pb
}

// reportBuffer holds what is not acknowledged yet: pending items (never sent on the current
// stream) and in-flight batches (sent, awaiting their ReportAck). Oldest first throughout:
// in-flight items are older than pending ones.
type reportBuffer struct {
	mu       sync.Mutex
	pending  []item
	head     int // pending[head:] are live
	inflight []*batch
	size     int
	max      int
	nextID   uint64
	dropped  *metrics.Counter
	notify   chan struct{} // a full batch is ready, or an urgent item arrived
	// urgent: an urgent item waits for the urgent timer. Set by the first urgent item, which
	// alone wakes the sender (the others of the same urgentDelay window do not: under load that
	// would be one goroutine wake-up per request); cleared when the timer sends the batch.
	urgent bool
}

func newReportBuffer(max int) *reportBuffer {
	return &reportBuffer{max: max, notify: make(chan struct{}, 1), dropped: new(metrics.Counter)}
}

// urgentPending reports whether an urgent item waits for the urgent timer.
func (b *reportBuffer) urgentPending() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.urgent
}

// clearUrgent is called when the urgent timer fired, before the pending items are taken: an
// urgent item added from then on starts the next window.
func (b *reportBuffer) clearUrgent() {
	b.mu.Lock()
	b.urgent = false
	b.mu.Unlock()
}

func (b *reportBuffer) len() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.size
}

// add appends it, dropping the oldest entry when full; it reports whether one was dropped. An
// urgent item wakes the sender even when the batch is not full.
func (b *reportBuffer) add(it item, batchSize int, urgent bool) (dropped bool) {
	b.mu.Lock()
	if b.size >= b.max {
		b.dropOldestLocked()
		dropped = true
	}
	b.pending = append(b.pending, it)
	b.size++
	full := len(b.pending)-b.head >= batchSize
	firstUrgent := urgent && !b.urgent
	if urgent {
		b.urgent = true
	}
	b.mu.Unlock()
	if dropped {
		b.dropped.Inc()
	}
	if full || firstUrgent {
		select {
		case b.notify <- struct{}{}:
		default:
		}
	}
	return dropped
}

func (b *reportBuffer) dropOldestLocked() {
	for _, bt := range b.inflight {
		if len(bt.items) > 0 {
			bt.items[0] = item{}
			bt.items = bt.items[1:]
			b.size--
			return
		}
	}
	if b.head < len(b.pending) {
		b.pending[b.head] = item{}
		b.head++
		b.size--
		b.compactLocked()
	}
}

// compactLocked reclaims the consumed front of pending once it is most of the slice.
func (b *reportBuffer) compactLocked() {
	if b.head > 1024 && b.head*2 > len(b.pending) {
		n := copy(b.pending, b.pending[b.head:])
		clear(b.pending[n:])
		b.pending = b.pending[:n]
		b.head = 0
	}
}

// take moves up to n pending items into a new in-flight batch. Unless force is set it waits for
// a full batch. It returns nil when there is nothing to send.
func (b *reportBuffer) take(n int, force bool) *batch {
	b.mu.Lock()
	defer b.mu.Unlock()
	live := len(b.pending) - b.head
	if live == 0 || (live < n && !force) {
		return nil
	}
	k := min(n, live)
	bt := &batch{items: make([]item, k)}
	copy(bt.items, b.pending[b.head:b.head+k])
	clear(b.pending[b.head : b.head+k])
	b.head += k
	if b.head == len(b.pending) {
		b.pending, b.head = b.pending[:0], 0
	} else {
		b.compactLocked()
	}
	b.nextID++
	bt.id = b.nextID
	bt.msg = bt.proto()
	b.inflight = append(b.inflight, bt)
	return bt
}

// ack removes an acknowledged batch and returns how many items it held.
func (b *reportBuffer) ack(id uint64) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	for i, bt := range b.inflight {
		if bt.id == id {
			n := len(bt.items)
			b.size -= n
			b.inflight = append(b.inflight[:i], b.inflight[i+1:]...)
			return n
		}
	}
	return 0
}

// requeue puts every in-flight item back in front of the pending ones, in order, for a new
// stream to send again (the control plane drops duplicates by request id).
func (b *reportBuffer) requeue() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	var n int
	for _, bt := range b.inflight {
		n += len(bt.items)
	}
	if n == 0 {
		b.inflight = b.inflight[:0]
		return 0
	}
	merged := make([]item, 0, n+len(b.pending)-b.head)
	for _, bt := range b.inflight {
		merged = append(merged, bt.items...)
	}
	merged = append(merged, b.pending[b.head:]...)
	b.pending, b.head, b.inflight = merged, 0, b.inflight[:0]
	return n
}

func (b *reportBuffer) inflightCount() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.inflight)
}

// errDrained ends delivery when everything was acknowledged after shutdown began.
var errDrained = errors.New("drained")

// reportLoop delivers the buffer over Report streams until ctx ends and the buffer is empty, or
// until FlushTimeout passed since ctx ended.
func (c *Client) reportLoop(ctx context.Context) {
	// hard outlives ctx by FlushTimeout: streams and waits derive from it, so delivery continues
	// while draining and nothing blocks past the deadline (not even opening a stream).
	hard, cancelHard := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelHard()
	stop := context.AfterFunc(ctx, func() { time.AfterFunc(c.opts.FlushTimeout, cancelHard) })
	defer stop()

	backoff := c.opts.MinBackoff
	for {
		acked, err := c.reportStream(ctx, hard)
		if n := c.buf.requeue(); n > 0 {
			c.log.Debug("report stream ended with unacknowledged records; resending", zap.Int("records", n))
		}
		if errors.Is(err, errDrained) {
			return
		}
		if hard.Err() != nil {
			if n := c.buf.len(); n > 0 {
				c.log.Warn("shutdown: reports not delivered before the flush deadline", zap.Int("lost", n))
			}
			return
		}
		if acked {
			backoff = c.opts.MinBackoff
		}
		c.log.Debug("report stream ended", zap.Error(err))
		if !sleep(hard, jitter(backoff)) {
			continue // the deadline passed: the next round reports what is lost
		}
		backoff = min(2*backoff, c.opts.MaxBackoff)
	}
}

// reportStream runs one Report stream; acked tells whether any batch was acknowledged on it.
// Once ctx ended it sends everything and returns errDrained when all is acknowledged.
func (c *Client) reportStream(ctx, hard context.Context) (acked bool, err error) {
	runDone := ctx.Done()
	draining := ctx.Err() != nil
	if draining && c.buf.len() == 0 {
		return false, errDrained
	}
	sctx, cancel := context.WithCancel(hard)
	defer cancel()
	stream, err := c.api.Report(sctx)
	if err != nil {
		return false, fmt.Errorf("open report: %w", err)
	}
	acks := make(chan *crsv1.ReportAck)
	recvErr := make(chan error, 1)
	go func() {
		for {
			a, err := stream.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			select {
			case acks <- a:
			case <-sctx.Done():
				return
			}
		}
	}()

	ticker := time.NewTicker(c.opts.BatchInterval)
	defer ticker.Stop()
	urgent := time.NewTimer(time.Hour)
	urgent.Stop()
	defer urgent.Stop()
	urgentArmed := false
	// Whatever is pending (resent after a reconnect, or queued while down) goes out at once,
	// urgent items of a broken stream's window included.
	force := true
	c.buf.clearUrgent()
	for {
		for c.buf.inflightCount() < c.opts.MaxInflight {
			bt := c.buf.take(c.opts.BatchSize, force || draining)
			if bt == nil {
				break
			}
			if err := stream.Send(bt.msg); err != nil {
				return acked, fmt.Errorf("send report batch: %w", err)
			}
		}
		force = false
		if draining && c.buf.len() == 0 {
			_ = stream.CloseSend()
			return acked, errDrained
		}
		select {
		case <-c.buf.notify:
			// An urgent record goes out within urgentDelay, together with the urgent records that
			// arrive meanwhile: under load they still travel in batches, not one message each.
			if !urgentArmed && c.buf.urgentPending() {
				urgent.Reset(urgentDelay)
				urgentArmed = true
			}
		case <-urgent.C:
			urgentArmed = false
			force = true
			c.buf.clearUrgent()
		case <-ticker.C:
			force = true
		case a := <-acks:
			n := c.buf.ack(a.GetBatchId())
			c.acked.Add(n)
			acked = true
		case err := <-recvErr:
			return acked, fmt.Errorf("receive report ack: %w", err)
		case <-runDone:
			runDone, draining = nil, true
		case <-hard.Done():
			return acked, fmt.Errorf("report: %w", hard.Err())
		}
	}
}
