package fleet

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/crsrelay/crs/controlplane/store"
	crsv1 "github.com/crsrelay/crs/gen/crs/v1"
)

// errStoreFailed tells the worker to resend the batch later.
var errStoreFailed = status.Error(codes.Unavailable, "storing the report failed; resend it")

// Report implements [crsv1.FleetServiceServer.Report]: each batch's usage records are priced and
// stored (the store drops request ids it has seen), its account events applied, and only then
// acknowledged. A batch that fails to store ends the stream unacknowledged, so the worker
// resends it.
func (s *Service) Report(stream crsv1.FleetService_ReportServer) error {
	ctx := stream.Context()
	if err := s.authorize(ctx); err != nil {
		return err
	}
	if err := s.waitReady(ctx); err != nil {
		return err
	}
	for {
		b, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		ack, err := s.storeBatch(ctx, b)
		if err != nil {
			if ctx.Err() != nil {
				return status.FromContextError(ctx.Err()).Err()
			}
			s.log.Error("report batch not stored; the worker will resend it",
				zap.Uint64("batch_id", b.GetBatchId()), zap.Error(err))
			return errStoreFailed
		}
		if err := stream.Send(ack); err != nil {
			return err
		}
	}
}

// storeBatch stores one batch and returns its acknowledgement. The batch's records are priced
// here and written with one RecordUsageBatch call: one transaction (one fsync) on the embedded
// store, one pipelined round trip on Redis. A batch holds thousands of records of a few keys, so
// what depends only on the key (cache reads, window usage, activation, spend notifications) is
// done once per key.
func (s *Service) storeBatch(ctx context.Context, b *crsv1.ReportBatch) (*crsv1.ReportAck, error) {
	ack := &crsv1.ReportAck{BatchId: b.GetBatchId()}
	rates := s.cachedSettings().GetServiceRates()
	now := s.now() // the batch's arrival: one clock read for all its records
	recs := b.GetRecords()
	keys := batchKeys{s: s}
	slab := make([]store.UsageEntry, len(recs)) // one allocation for the batch's entries
	entries := make([]*store.UsageEntry, 0, len(recs))
	for i, rec := range recs {
		if rec.GetRequestId() == "" {
			// Without a request id a record cannot be deduplicated; refusing the batch would make
			// the worker resend it forever, so the record is dropped (and not counted).
			s.log.Warn("usage record without request id dropped", zap.String("key_id", rec.GetKeyId()))
			continue
		}
		s.recorder.EntryAt(&slab[i], rec, keys.get(rec.GetKeyId()).key, rates, now)
		entries = append(entries, &slab[i])
	}
	var stored []bool
	if len(entries) > 0 {
		var err error
		stored, err = s.st.RecordUsageBatch(ctx, entries)
		if err != nil {
			return nil, fmt.Errorf("record usage batch %d: %w", b.GetBatchId(), err)
		}
	}

	var cost, rated float64
	for j, e := range entries {
		k := keys.get(e.Record.GetKeyId())
		if stored[j] {
			ack.Stored++
			cost += e.Cost
			rated += e.RatedCost
			k.stored(e)
		} else {
			ack.Duplicates++
		}
		// Also on duplicates: a resent batch must still activate a key whose first attempt
		// stored the records but failed to activate.
		if k.activates() {
			k.use(s.recorder.WhenAt(e.Record, now))
		}
	}
	s.metrics.recordsStored.Add(int(ack.Stored))
	s.metrics.recordsDuplicate.Add(int(ack.Duplicates))
	s.metrics.costUSD.Add(cost)
	s.metrics.ratedCostUSD.Add(rated)
	s.addBatchWindowUsage(ctx, &keys)

	for _, id := range sortedIDs(keys.byID) {
		if k := keys.byID[id]; !k.firstUse.IsZero() {
			if err := s.activate(ctx, id, k.firstUse); err != nil {
				return nil, err
			}
		}
	}
	for _, ev := range b.GetEvents() {
		if err := s.applyEvent(ctx, ev); err != nil {
			return nil, err
		}
	}
	// The store publishes key_usage changes too; asking here as well makes the new spend reach
	// workers even when a notification is lost. Both coalesce into one refresh.
	for _, k := range keys.list {
		if k.spent {
			s.enqueue(store.Change{Kind: store.KindKeyUsage, ID: k.id})
		}
	}
	return ack, nil
}

// batchKey is what storeBatch gathers about one key id of a report batch.
type batchKey struct {
	id  string
	key *crsv1.ApiKey // from the cache; nil when the key is unknown (deleted)
	// records stored for a key with a fixed window, and their window tokens and rated cost.
	windowRecords int
	windowTokens  int64
	windowCost    float64
	// firstUse is the earliest start of the batch's records of an activation-mode key not yet
	// activated (zero otherwise).
	firstUse time.Time
	// spent: a stored record had a rated cost, so the key's spend changed.
	spent bool
}

// stored notes an entry of the key that was stored: its rated cost changed the key's spend, and
// its tokens and rated cost settle the key's fixed window after the response (§2.5).
func (k *batchKey) stored(e *store.UsageEntry) {
	if e.RatedCost != 0 {
		k.spent = true
	}
	if !hasWindowLimit(k.key) {
		return
	}
	k.windowRecords++
	k.windowTokens += windowTokens(e.Record)
	k.windowCost += e.RatedCost
}

// activates reports whether the key starts its validity at first use and has not yet.
func (k *batchKey) activates() bool { return k.key != nil && needsActivation(k.key) }

// use notes a record of an activating key (stored or duplicate) that started at when.
func (k *batchKey) use(when time.Time) {
	if k.firstUse.IsZero() || when.Before(k.firstUse) {
		k.firstUse = when
	}
}

// batchKeys are the keys of one report batch, each read from the cache once. Not safe for
// concurrent use.
type batchKeys struct {
	s    *Service
	byID map[string]*batchKey
	list []*batchKey // first-seen order
	last *batchKey   // the previous lookup, which the next often repeats
}

// get returns the batch's entry for key id id, reading the cache on first use.
func (b *batchKeys) get(id string) *batchKey {
	if b.last != nil && b.last.id == id {
		return b.last
	}
	k, ok := b.byID[id]
	if !ok {
		if b.byID == nil {
			b.byID = map[string]*batchKey{}
		}
		k = &batchKey{id: id, key: b.s.cachedKey(id)}
		b.byID[id] = k
		b.list = append(b.list, k)
	}
	b.last = k
	return k
}

// addBatchWindowUsage adds the batch's stored records to their keys' fixed windows: one store
// call per key, not one per record (each a write transaction on the embedded store). Adding the
// sum is adding the records one by one at the same moment. A failure is logged, not returned:
// the records are stored already, so a resent batch would not add them again.
func (s *Service) addBatchWindowUsage(ctx context.Context, keys *batchKeys) {
	if s.limits == nil {
		return
	}
	for _, k := range keys.list {
		if k.windowRecords == 0 || (k.windowTokens == 0 && k.windowCost == 0) {
			continue
		}
		if err := s.limits.AddWindowUsage(ctx, k.id, windowOf(k.key), k.windowTokens, k.windowCost, s.now()); err != nil {
			s.log.Warn("window usage not added", zap.String("key_id", k.id), zap.Int("records", k.windowRecords),
				zap.Error(fmt.Errorf("add window usage: %w", err)))
		}
	}
}

// Key expiration modes.
const (
	expirationActivation = "activation"
	unitHours            = "hours"
	// defaultActivationDays applies when an activation-mode key has no activation_days
	// (reference §2.1).
	defaultActivationDays = 30
	// activationMemo is how long a key this process activated is not re-read for activation.
	activationMemo = time.Minute
)

func needsActivation(k *crsv1.ApiKey) bool {
	return k.GetExpirationMode() == expirationActivation && !k.GetIsActivated()
}

// activate starts an activation-mode key's validity at its first use: is_activated, activated_at
// and expires_at = first use + activation_days (in activation_unit). The key is re-read first, so
// a key activated meanwhile (by this or another replica) is left alone.
func (s *Service) activate(ctx context.Context, keyID string, firstUse time.Time) error {
	if at, ok := s.activated.Load(keyID); ok && s.now().Sub(at.(time.Time)) < activationMemo {
		return nil
	}
	k, err := s.st.GetKey(ctx, keyID)
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("get key %s for activation: %w", keyID, err)
	}
	if !needsActivation(k.Key) {
		s.activated.Store(keyID, s.now())
		return nil
	}
	days := int(k.Key.GetActivationDays())
	if days <= 0 {
		days = defaultActivationDays
	}
	unit := 24 * time.Hour
	if k.Key.GetActivationUnit() == unitHours {
		unit = time.Hour
	}
	next := &store.Key{Key: cloneKey(k.Key), Hash: k.Hash}
	next.Key.IsActivated = true
	next.Key.ActivatedAt = timestamppb.New(firstUse)
	next.Key.ExpiresAt = timestamppb.New(firstUse.Add(time.Duration(days) * unit))
	if err := s.st.UpdateKey(ctx, next); err != nil {
		return fmt.Errorf("activate key %s: %w", keyID, err)
	}
	s.activated.Store(keyID, s.now())
	s.enqueue(store.Change{Kind: store.KindKey, ID: keyID})
	s.log.Info("key activated at first use", zap.String("key_id", keyID),
		zap.Time("expires_at", next.Key.GetExpiresAt().AsTime()))
	return nil
}

// applyEvent applies one account event to its account's status.
func (s *Service) applyEvent(ctx context.Context, ev *crsv1.AccountEvent) error {
	s.metrics.accountEvent(ev.GetKind())
	cached := s.cachedAccount(ev.GetAccountId())
	if cached == nil || cached.GetDisableAutoProtection() {
		return nil
	}
	// Successes are frequent: skip the store read when the cached status has nothing to clear.
	if ev.GetKind() == EventSuccess && (stateOf(cached.GetStatus()) == StateActive || cached.GetStatus().GetUntil() == nil) {
		return nil
	}
	return s.updateStatus(ctx, ev.GetAccountId(), func(a *crsv1.Account) decision {
		if a.GetDisableAutoProtection() {
			return keep("auto protection disabled")
		}
		return decideEvent(a.GetStatus(), ev, s.now())
	}, zap.String("event", ev.GetKind()), zap.Int32("upstream_status", ev.GetUpstreamStatus()),
		zap.String("request_id", ev.GetRequestId()))
}

// updateStatus re-reads an account's status, asks decide what it becomes, and stores it with
// SetAccountStatus (only the status is written). Status writes of this process are serialized;
// with several control-plane replicas this read-modify-write needs a store lock per account
// (a later issue).
func (s *Service) updateStatus(ctx context.Context, accountID string, decide func(*crsv1.Account) decision, fields ...zap.Field) error {
	s.statusMu.Lock()
	defer s.statusMu.Unlock()
	a, err := s.st.GetAccount(ctx, accountID)
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("get account %s: %w", accountID, err)
	}
	d := decide(a.Account)
	log := s.log.With(append(fields, zap.String("account_id", accountID))...)
	if d.next == nil {
		if ce := log.Check(zap.DebugLevel, "account status kept"); ce != nil {
			ce.Write(zap.String("reason", d.why))
		}
		return nil
	}
	if err := s.st.SetAccountStatus(ctx, accountID, d.next); err != nil {
		return fmt.Errorf("set account %s status: %w", accountID, err)
	}
	s.enqueue(store.Change{Kind: store.KindAccount, ID: accountID})
	log.Info("account status changed", zap.String("state", d.next.GetState()), zap.String("reason", d.why))
	return nil
}

// recoveryLoop ends expired account states every RecoveryInterval.
func (s *Service) recoveryLoop(ctx context.Context) {
	t := time.NewTicker(s.recovery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.recover(ctx)
		}
	}
}

// recoveryLock is the store lease under which one control-plane replica runs recovery.
const recoveryLock = "fleet:recovery"

// recover makes accounts whose state ended active again and drops expired family limits. With
// Options.Locks, it runs on one replica at a time: the one holding the recovery lease, which it
// keeps (re-taking it each tick) for as long as it is alive, so each transition is written once.
func (s *Service) recover(ctx context.Context) {
	now := s.now()
	var due []string
	s.mu.RLock()
	for id, a := range s.cache.accounts {
		if needsRecovery(a.GetStatus(), now) {
			due = append(due, id)
		}
	}
	s.mu.RUnlock()
	if len(due) == 0 {
		return
	}
	if s.locks != nil {
		ok, err := s.locks.TryLock(ctx, recoveryLock, s.owner, 3*s.recovery)
		if err != nil || !ok {
			if err != nil && ctx.Err() == nil {
				s.log.Warn("recovery lease not taken; another tick will retry", zap.Error(err))
			}
			return
		}
	}
	for _, id := range due {
		err := s.updateStatus(ctx, id, func(a *crsv1.Account) decision {
			return decideRecovery(a.GetStatus(), s.now())
		}, zap.String("event", "recovery"))
		if err != nil && ctx.Err() == nil {
			s.log.Warn("account recovery failed", zap.String("account_id", id), zap.Error(err))
		}
	}
}
