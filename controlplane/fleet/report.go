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
	"github.com/crsrelay/crs/controlplane/usage"
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
// store, one pipelined round trip on Redis.
func (s *Service) storeBatch(ctx context.Context, b *crsv1.ReportBatch) (*crsv1.ReportAck, error) {
	ack := &crsv1.ReportAck{BatchId: b.GetBatchId()}
	rates := s.cachedSettings().GetServiceRates()
	recs := b.GetRecords()
	keys := make([]*crsv1.ApiKey, len(recs))
	results := make([]usage.Result, len(recs))
	entries := make([]*store.UsageEntry, 0, len(recs))
	index := make([]int, 0, len(recs)) // entries[j] is recs[index[j]]
	for i, rec := range recs {
		if rec.GetRequestId() == "" {
			// Without a request id a record cannot be deduplicated; refusing the batch would make
			// the worker resend it forever, so the record is dropped (and not counted).
			s.log.Warn("usage record without request id dropped", zap.String("key_id", rec.GetKeyId()))
			continue
		}
		keys[i] = s.cachedKey(rec.GetKeyId())
		e, c := s.recorder.Entry(rec, keys[i], rates)
		results[i] = usage.Result{Entry: e, Cost: c}
		entries = append(entries, e)
		index = append(index, i)
	}
	if len(entries) > 0 {
		stored, err := s.st.RecordUsageBatch(ctx, entries)
		if err != nil {
			return nil, fmt.Errorf("record usage batch %d: %w", b.GetBatchId(), err)
		}
		for j, i := range index {
			results[i].Stored = stored[j]
			if stored[j] {
				// Tokens and rated cost settle the key's fixed window after the response (§2.5).
				s.addWindowUsage(ctx, keys[i], recs[i], results[i].Entry.RatedCost)
			}
		}
	}

	spent := map[string]struct{}{}
	firstUse := map[string]time.Time{}
	for i, rec := range recs {
		if rec.GetRequestId() == "" {
			continue
		}
		if results[i].Stored {
			ack.Stored++
			s.metrics.recordsStored.Inc()
			s.metrics.costUSD.Add(results[i].Entry.Cost)
			s.metrics.ratedCostUSD.Add(results[i].Entry.RatedCost)
			if results[i].Entry.RatedCost != 0 {
				spent[rec.GetKeyId()] = struct{}{}
			}
		} else {
			ack.Duplicates++
			s.metrics.recordsDuplicate.Inc()
		}
		// Also on duplicates: a resent batch must still activate a key whose first attempt
		// stored the records but failed to activate.
		if k := keys[i]; k != nil && needsActivation(k) {
			when := s.recorder.When(rec)
			if prev, ok := firstUse[k.GetId()]; !ok || when.Before(prev) {
				firstUse[k.GetId()] = when
			}
		}
	}
	for _, id := range sortedIDs(firstUse) {
		if err := s.activate(ctx, id, firstUse[id]); err != nil {
			return nil, err
		}
	}
	for _, ev := range b.GetEvents() {
		if err := s.applyEvent(ctx, ev); err != nil {
			return nil, err
		}
	}
	// The store publishes key_usage changes too; asking here as well makes the new spend reach
	// workers even when a notification is lost. Both coalesce into one refresh.
	for id := range spent {
		s.enqueue(store.Change{Kind: store.KindKeyUsage, ID: id})
	}
	return ack, nil
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
