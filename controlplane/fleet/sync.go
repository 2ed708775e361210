package fleet

import (
	"go.uber.org/zap"
	"google.golang.org/grpc/status"

	crsv1 "github.com/crsrelay/crs/gen/crs/v1"
)

// subscriber is one Sync stream's queue of deltas.
type subscriber struct {
	worker string
	ch     chan *crsv1.SyncMessage
	// err is why ch was closed (set before closing, read after).
	err error
}

// subscribe registers a stream and returns its snapshot; both happen under one lock, so the
// stream gets every delta after the snapshot's version and none before.
func (s *Service) subscribe(worker string) (*subscriber, *crsv1.SyncMessage, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, nil, errStopping
	}
	sub := &subscriber{worker: worker, ch: make(chan *crsv1.SyncMessage, s.queue)}
	s.subs[sub] = struct{}{}
	return sub, s.snapshotLocked(), nil
}

// unsubscribe removes sub if it is still registered.
func (s *Service) unsubscribe(sub *subscriber) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.subs, sub)
}

// broadcastLocked queues msg on every stream; a stream whose queue is full is closed with
// errFellBehind (its worker reconnects and gets a snapshot). s.mu must be held.
func (s *Service) broadcastLocked(msg *crsv1.SyncMessage) {
	for sub := range s.subs {
		select {
		case sub.ch <- msg:
		default:
			s.dropLocked(sub, errFellBehind)
			s.log.Warn("worker fell behind; closing its sync stream", zap.String("worker_id", sub.worker))
		}
	}
}

func (s *Service) dropLocked(sub *subscriber, err error) {
	delete(s.subs, sub)
	sub.err = err
	close(sub.ch)
}

// closeAll ends every stream (the service is stopping) and refuses new ones.
func (s *Service) closeAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	for sub := range s.subs {
		s.dropLocked(sub, errStopping)
	}
}

// Sync implements [crsv1.FleetServiceServer.Sync]: a snapshot at the current version, then every
// delta in version order until the worker leaves, falls behind, or the service stops.
func (s *Service) Sync(req *crsv1.SyncRequest, stream crsv1.FleetService_SyncServer) error {
	ctx := stream.Context()
	if err := s.authorize(ctx); err != nil {
		return err
	}
	if err := s.waitReady(ctx); err != nil {
		return err
	}
	sub, snap, err := s.subscribe(req.GetWorkerId())
	if err != nil {
		return err
	}
	defer s.unsubscribe(sub)
	s.metrics.workers.Inc()
	defer s.metrics.workers.Dec()
	log := s.log.With(zap.String("worker_id", req.GetWorkerId()))
	log.Info("worker connected", zap.Uint64("version", snap.GetVersion()))
	if err := stream.Send(snap); err != nil {
		return err
	}
	for {
		select {
		case <-ctx.Done():
			log.Info("worker disconnected")
			return status.FromContextError(ctx.Err()).Err()
		case msg, ok := <-sub.ch:
			if !ok {
				return sub.err
			}
			if err := stream.Send(msg); err != nil {
				return err
			}
		}
	}
}
