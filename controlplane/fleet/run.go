package fleet

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/crsrelay/crs/controlplane/store"
	crsv1 "github.com/crsrelay/crs/gen/crs/v1"
)

// retryDelay is the pause before retrying a failed load, watch or refresh.
const retryDelay = time.Second

// Run loads the state (retrying until the store answers), then keeps it current until ctx ends:
// it applies store changes, reloads everything every ResyncInterval, and ends expired account
// states every RecoveryInterval. When it returns, every Sync stream has been closed. It returns
// nil when ctx ends.
func (s *Service) Run(ctx context.Context) error {
	defer s.closeAll()

	watch, err := s.st.Watch(ctx)
	if err != nil {
		s.log.Warn("store watch failed; retrying", zap.Error(err))
		watch = nil
	}
	var hashing *crsv1.KeyHashing
	for {
		c, err := s.initialLoad(ctx, &hashing)
		if err == nil {
			s.mu.Lock()
			s.cache, s.version = c, 1
			s.mu.Unlock()
			break
		}
		if ctx.Err() != nil {
			return nil
		}
		s.log.Warn("initial state load failed; retrying", zap.Error(err))
		if !sleep(ctx, retryDelay) {
			return nil
		}
	}
	s.readyOnce.Do(func() { close(s.ready) })
	s.mu.RLock()
	s.log.Info("fleet state loaded", zap.Int("keys", len(s.cache.keys)),
		zap.Int("accounts", len(s.cache.accounts)), zap.Int("groups", len(s.cache.groups)))
	s.mu.RUnlock()

	done := make(chan struct{}, 2)
	go func() { s.watchLoop(ctx, watch); done <- struct{}{} }()
	go func() { s.recoveryLoop(ctx); done <- struct{}{} }()
	s.applyLoop(ctx, hashing)
	<-done
	<-done
	return nil
}

func (s *Service) initialLoad(ctx context.Context, hashing **crsv1.KeyHashing) (*cache, error) {
	if *hashing == nil {
		h, err := s.loadHashing(ctx)
		if err != nil {
			return nil, err
		}
		*hashing = h
	}
	return s.loadAll(ctx, *hashing)
}

// sleep waits d or until ctx ends; it reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// enqueue hands a change to the applier; when its queue is full the change is dropped and a
// full reload is requested instead.
func (s *Service) enqueue(c store.Change) {
	select {
	case s.changes <- c:
	default:
		s.reload.Store(true)
	}
}

// watchLoop forwards store changes to the applier, resubscribing when the watch ends (for
// example when Redis reconnects). After a resubscription it requests a full reload, since
// changes may have been missed in between.
func (s *Service) watchLoop(ctx context.Context, ch <-chan store.Change) {
	for {
		if ch != nil && !s.forward(ctx, ch) {
			return
		}
		if !sleep(ctx, retryDelay) {
			return
		}
		var err error
		ch, err = s.st.Watch(ctx)
		if err != nil {
			s.log.Warn("store watch failed; retrying", zap.Error(err))
			ch = nil
			continue
		}
		s.reload.Store(true)
		s.enqueue(store.Change{Kind: kindReload})
	}
}

// forward enqueues changes from ch until it closes (true) or ctx ends (false).
func (s *Service) forward(ctx context.Context, ch <-chan store.Change) bool {
	for {
		select {
		case <-ctx.Done():
			return false
		case c, ok := <-ch:
			if !ok {
				return ctx.Err() == nil
			}
			s.enqueue(c)
		}
	}
}

// kindReload is an internal change kind that only wakes the applier (to act on s.reload).
const kindReload = "_reload"

// applyLoop is the only writer of the cache: it coalesces changes into one refresh per window
// and runs the periodic full reload.
func (s *Service) applyLoop(ctx context.Context, hashing *crsv1.KeyHashing) {
	resync := time.NewTicker(s.resync)
	defer resync.Stop()
	var retry <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case c := <-s.changes:
			batch := map[store.Change]struct{}{c: {}}
			window := time.NewTimer(s.coalesce)
		collect:
			for {
				select {
				case c := <-s.changes:
					batch[c] = struct{}{}
				case <-window.C:
					break collect
				case <-ctx.Done():
					window.Stop()
					return
				}
			}
			if s.reload.Swap(false) {
				s.fullReload(ctx, hashing)
			} else {
				s.refresh(ctx, batch)
			}
		case <-resync.C:
			s.reload.Store(false)
			s.fullReload(ctx, hashing)
		case <-retry:
			retry = nil
			if s.reload.Swap(false) {
				s.fullReload(ctx, hashing)
			}
		}
		if retry == nil && s.reload.Load() {
			retry = time.After(retryDelay)
		}
	}
}

// fullReload reads everything and broadcasts what differs from the cache.
func (s *Service) fullReload(ctx context.Context, hashing *crsv1.KeyHashing) {
	fresh, err := s.loadAll(ctx, hashing)
	if err != nil {
		if ctx.Err() == nil {
			s.log.Warn("full state reload failed; retrying", zap.Error(err))
			s.reload.Store(true)
		}
		return
	}
	s.mu.RLock()
	p := fullPatch(s.cache, fresh)
	s.mu.RUnlock()
	if msg := s.apply(p); msg != nil {
		s.log.Debug("full reload found changes", zap.Uint64("version", msg.GetVersion()))
	}
}

// refresh re-reads the records named by batch and broadcasts what changed.
func (s *Service) refresh(ctx context.Context, batch map[store.Change]struct{}) {
	p, err := s.read(ctx, batch)
	if err != nil {
		if ctx.Err() == nil {
			s.log.Warn("refresh after store change failed; reloading everything", zap.Error(err))
			s.reload.Store(true)
		}
		return
	}
	s.apply(p)
}

// read builds a patch from fresh reads of the changed records.
func (s *Service) read(ctx context.Context, batch map[store.Change]struct{}) (*patch, error) {
	p := newPatch()
	now := s.now()
	var usageKeys []string
	for c := range batch {
		switch c.Kind {
		case store.KindKey:
			k, err := s.st.GetKey(ctx, c.ID)
			if errors.Is(err, store.ErrNotFound) {
				p.keys[c.ID] = nil
				continue
			}
			if err != nil {
				return nil, fmt.Errorf("get key %s: %w", c.ID, err)
			}
			p.keys[c.ID] = &crsv1.WorkerKey{Hash: k.Hash, Key: k.Key}
			usageKeys = append(usageKeys, c.ID) // limits or week start may have changed
		case store.KindKeyUsage:
			usageKeys = append(usageKeys, c.ID)
		case store.KindAccount:
			a, err := s.st.GetAccount(ctx, c.ID)
			if errors.Is(err, store.ErrNotFound) {
				p.accounts[c.ID] = nil
				continue
			}
			if err != nil {
				return nil, fmt.Errorf("get account %s: %w", c.ID, err)
			}
			p.accounts[c.ID] = s.openAccount(a)
		case store.KindGroup:
			g, err := s.st.GetGroup(ctx, c.ID)
			if errors.Is(err, store.ErrNotFound) {
				p.groups[c.ID] = nil
				continue
			}
			if err != nil {
				return nil, fmt.Errorf("get group %s: %w", c.ID, err)
			}
			p.groups[c.ID] = g
		case store.KindSettings:
			st, err := s.loadSettings(ctx)
			if err != nil {
				return nil, err
			}
			p.settings = st
		}
	}
	for _, id := range usageKeys {
		if _, done := p.usage[id]; done {
			continue
		}
		k := p.keys[id].GetKey()
		if k == nil {
			if _, deleted := p.keys[id]; deleted {
				continue
			}
			k = s.cachedKey(id)
		}
		if k == nil || !hasUsageLimit(k) {
			continue
		}
		u, err := s.keyUsage(ctx, k, now)
		if err != nil {
			return nil, err
		}
		p.usage[id] = u
	}
	return p, nil
}
