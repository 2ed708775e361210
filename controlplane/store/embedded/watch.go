package embedded

import (
	"context"
	"sync"

	"github.com/crsrelay/crs/controlplane/store"
)

// watchBuffer is each subscriber's channel capacity; changes beyond it are dropped for that
// subscriber (Watch is best effort; the fleet service resyncs periodically).
const watchBuffer = 1024

// hub fans changes out to Watch subscribers without ever blocking a writer.
type hub struct {
	mu     sync.Mutex
	subs   map[chan store.Change]struct{}
	closed bool
}

func (h *hub) init() { h.subs = make(map[chan store.Change]struct{}) }

func (h *hub) publish(cs changes) {
	if len(cs) == 0 {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for ch := range h.subs {
		for _, c := range cs {
			select {
			case ch <- c:
			default: // full: drop rather than block the writer
			}
		}
	}
}

func (h *hub) subscribe() (chan store.Change, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil, false
	}
	ch := make(chan store.Change, watchBuffer)
	h.subs[ch] = struct{}{}
	return ch, true
}

func (h *hub) unsubscribe(ch chan store.Change) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.subs[ch]; ok {
		delete(h.subs, ch)
		close(ch)
	}
}

// close ends every subscription.
func (h *hub) close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closed = true
	for ch := range h.subs {
		delete(h.subs, ch)
		close(ch)
	}
}

// Watch implements [store.Store.Watch]. Changes made through this Store after Watch returns are
// delivered on the channel, which is closed when ctx ends or the Store is closed.
func (s *Store) Watch(ctx context.Context) (<-chan store.Change, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	ch, ok := s.hub.subscribe()
	if !ok {
		return nil, errClosed
	}
	go func() {
		select {
		case <-ctx.Done():
		case <-s.stopSweep: // Close: hub.close ends the subscription
		}
		s.hub.unsubscribe(ch)
	}()
	return ch, nil
}
