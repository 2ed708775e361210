package redisstore

import (
	"context"
	"fmt"

	"github.com/redis/go-redis/v9"

	"github.com/crsrelay/crs/controlplane/store"
)

// watchBuffer is each subscriber's channel capacity; changes beyond it are dropped for that
// subscriber (Watch is best effort; the fleet service resyncs periodically).
const watchBuffer = 1024

// Watch implements [store.Store.Watch]: it subscribes to crs:changes on its own connection, so it
// sees the changes of every replica sharing this Redis. The subscription is confirmed before
// Watch returns: every change published afterwards is delivered unless the subscriber falls
// behind. go-redis resubscribes after a lost connection; changes published meanwhile are lost.
// The channel is closed when ctx ends or the Store is closed.
func (s *Store) Watch(ctx context.Context) (<-chan store.Change, error) {
	ps := s.rdb.Subscribe(ctx, ChangesChannel)
	if _, err := ps.Receive(ctx); err != nil {
		_ = ps.Close()
		return nil, fmt.Errorf("redisstore: watch: %w", err)
	}
	msgs := ps.Channel(redis.WithChannelSize(watchBuffer))
	out := make(chan store.Change, watchBuffer)
	go func() {
		defer close(out)
		defer ps.Close()
		for {
			select {
			case <-ctx.Done():
				return
			case <-s.done:
				return
			case m, ok := <-msgs:
				if !ok {
					return
				}
				c, ok := parseChange(m.Payload)
				if !ok {
					continue
				}
				select {
				case out <- c:
				default: // full: drop rather than stall the subscription
				}
			}
		}
	}()
	return out, nil
}
