// Package fleettest is an in-process fake control plane for tests of the worker side: a real
// gRPC FleetService on a loopback port that serves a snapshot and pushed deltas, keeps session
// bindings, and stores Report batches (deduplicated by request id, as the real one does). It can
// be stopped and restarted on the same address to test reconnects.
//
// It is imported from _test.go files only and depends on gen, grpc and testing.
package fleettest

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	crsv1 "github.com/crsrelay/crs/gen/crs/v1"
)

// Server is a fake FleetService. Its methods are safe for concurrent use.
type Server struct {
	crsv1.UnimplementedFleetServiceServer

	token string
	addr  string

	mu        sync.Mutex
	gs        *grpc.Server
	snapshot  *crsv1.SyncMessage
	subs      map[chan *crsv1.SyncMessage]struct{}
	records   []*crsv1.UsageRecord
	seen      map[string]bool
	events    []*crsv1.AccountEvent
	batches   int
	dups      int
	binds     map[string]string
	bindCalls []*crsv1.BindRequest
	syncs     int
	holdAcks  bool
}

// Start serves a fake FleetService on a free loopback port until the test ends. Every RPC must
// carry "authorization: Bearer <token>".
func Start(t testing.TB, token string) *Server {
	t.Helper()
	s := &Server{
		token: token,
		subs:  map[chan *crsv1.SyncMessage]struct{}{},
		seen:  map[string]bool{},
		binds: map[string]string{},
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("fleettest: listen: %v", err)
	}
	s.addr = lis.Addr().String()
	s.serve(lis)
	t.Cleanup(s.Stop)
	return s
}

func (s *Server) serve(lis net.Listener) {
	gs := grpc.NewServer(
		grpc.UnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			if err := s.auth(ctx); err != nil {
				return nil, err
			}
			return h(ctx, req)
		}),
		grpc.StreamInterceptor(func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			if err := s.auth(ss.Context()); err != nil {
				return err
			}
			return h(srv, ss)
		}),
	)
	crsv1.RegisterFleetServiceServer(gs, s)
	s.mu.Lock()
	s.gs = gs
	s.mu.Unlock()
	go func() { _ = gs.Serve(lis) }()
}

func (s *Server) auth(ctx context.Context) error {
	md, _ := metadata.FromIncomingContext(ctx)
	if v := md.Get("authorization"); len(v) != 1 || v[0] != "Bearer "+s.token {
		return status.Error(codes.Unauthenticated, "invalid fleet token")
	}
	return nil
}

// Addr is the server's host:port.
func (s *Server) Addr() string { return s.addr }

// Stop kills the server: open streams break, new connections are refused.
func (s *Server) Stop() {
	s.mu.Lock()
	gs := s.gs
	s.gs = nil
	s.mu.Unlock()
	if gs != nil {
		gs.Stop()
	}
}

// Restart serves again on the same address after Stop.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	var (
		lis net.Listener
		err error
	)
	for range 50 {
		if lis, err = net.Listen("tcp", s.addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("fleettest: listen again on %s: %v", s.addr, err)
	}
	s.serve(lis)
}

// SetSnapshot sets what new Sync streams receive first, and pushes it to open ones.
func (s *Server) SetSnapshot(version uint64, snap *crsv1.Snapshot) {
	msg := &crsv1.SyncMessage{Version: version, Body: &crsv1.SyncMessage_Snapshot{Snapshot: snap}}
	s.mu.Lock()
	s.snapshot = msg
	s.mu.Unlock()
	s.Push(msg)
}

// SetSnapshotQuiet sets what new Sync streams receive first without pushing it to open ones.
func (s *Server) SetSnapshotQuiet(version uint64, snap *crsv1.Snapshot) {
	s.mu.Lock()
	s.snapshot = &crsv1.SyncMessage{Version: version, Body: &crsv1.SyncMessage_Snapshot{Snapshot: snap}}
	s.mu.Unlock()
}

// Push sends a message to every open Sync stream.
func (s *Server) Push(msg *crsv1.SyncMessage) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for ch := range s.subs {
		ch <- msg
	}
}

// PushDelta sends a delta from base to version to every open Sync stream.
func (s *Server) PushDelta(base, version uint64, d *crsv1.Delta) {
	d.BaseVersion = base
	s.Push(&crsv1.SyncMessage{Version: version, Body: &crsv1.SyncMessage_Delta{Delta: d}})
}

// HoldAcks makes Report store batches without acknowledging them (true) or acknowledge them
// (false, the default).
func (s *Server) HoldAcks(hold bool) {
	s.mu.Lock()
	s.holdAcks = hold
	s.mu.Unlock()
}

// Records returns the stored usage records, deduplicated, in arrival order.
func (s *Server) Records() []*crsv1.UsageRecord {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*crsv1.UsageRecord(nil), s.records...)
}

// Events returns the stored account events in arrival order.
func (s *Server) Events() []*crsv1.AccountEvent {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*crsv1.AccountEvent(nil), s.events...)
}

// Duplicates is how many records arrived again after being stored.
func (s *Server) Duplicates() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.dups
}

// BindCalls returns the Bind requests received.
func (s *Server) BindCalls() []*crsv1.BindRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*crsv1.BindRequest(nil), s.bindCalls...)
}

// SyncCount is how many Sync streams were opened.
func (s *Server) SyncCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.syncs
}

// Sync implements [crsv1.FleetServiceServer.Sync].
func (s *Server) Sync(_ *crsv1.SyncRequest, stream grpc.ServerStreamingServer[crsv1.SyncMessage]) error {
	ch := make(chan *crsv1.SyncMessage, 64)
	s.mu.Lock()
	s.syncs++
	first := s.snapshot
	s.subs[ch] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.subs, ch)
		s.mu.Unlock()
	}()
	if first == nil {
		return status.Error(codes.Unavailable, "no snapshot yet")
	}
	if err := stream.Send(first); err != nil {
		return err
	}
	for {
		select {
		case msg := <-ch:
			if err := stream.Send(msg); err != nil {
				return err
			}
		case <-stream.Context().Done():
			return nil
		}
	}
}

// Bind implements [crsv1.FleetServiceServer.Bind].
func (s *Server) Bind(_ context.Context, req *crsv1.BindRequest) (*crsv1.BindResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.bindCalls = append(s.bindCalls, proto.Clone(req).(*crsv1.BindRequest))
	if cur, ok := s.binds[req.GetSessionHash()]; ok && !req.GetReplace() {
		return &crsv1.BindResponse{AccountId: cur}, nil
	}
	s.binds[req.GetSessionHash()] = req.GetAccountId()
	return &crsv1.BindResponse{AccountId: req.GetAccountId(), Created: true}, nil
}

// Report implements [crsv1.FleetServiceServer.Report].
func (s *Server) Report(stream grpc.BidiStreamingServer[crsv1.ReportBatch, crsv1.ReportAck]) error {
	for {
		b, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		s.mu.Lock()
		s.batches++
		ack := &crsv1.ReportAck{BatchId: b.GetBatchId()}
		for _, r := range b.GetRecords() {
			if s.seen[r.GetRequestId()] {
				s.dups++
				ack.Duplicates++
				continue
			}
			s.seen[r.GetRequestId()] = true
			s.records = append(s.records, r)
			ack.Stored++
		}
		s.events = append(s.events, b.GetEvents()...)
		hold := s.holdAcks
		s.mu.Unlock()
		if hold {
			continue
		}
		if err := stream.Send(ack); err != nil {
			return err
		}
	}
}
