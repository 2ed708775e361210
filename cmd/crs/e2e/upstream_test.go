package e2e

import (
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/crsrelay/crs/internal/mockupstream"
)

// startMock starts the in-repo mock Anthropic API on a loopback port and returns it with its base URL.
func startMock(t *testing.T) (*mockupstream.Server, string) {
	t.Helper()
	m := mockupstream.New(mockupstream.Config{Record: true})
	addr, err := m.Start("127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { _ = m.Close() })
	return m, "http://" + addr
}

// scriptedUpstream answers /v1/messages with fixed bytes, event by event with a delay between
// events, and records when it wrote each event: the test compares what the client got with what
// was sent, byte for byte and in time.
type scriptedUpstream struct {
	URL    string
	events [][]byte
	delay  time.Duration

	mu     sync.Mutex
	sentAt []time.Time
}

func startScripted(t *testing.T, events [][]byte, delay time.Duration) *scriptedUpstream {
	t.Helper()
	s := &scriptedUpstream{events: events, delay: delay}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	srv := &http.Server{Handler: s}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	s.URL = "http://" + ln.Addr().String()
	return s
}

func (s *scriptedUpstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("request-id", "req_scripted")
	w.WriteHeader(200)
	fl := w.(http.Flusher)
	s.mu.Lock()
	s.sentAt = s.sentAt[:0]
	s.mu.Unlock()
	for i, ev := range s.events {
		if i > 0 {
			time.Sleep(s.delay)
		}
		s.mu.Lock()
		s.sentAt = append(s.sentAt, time.Now())
		s.mu.Unlock()
		_, _ = w.Write(ev)
		fl.Flush()
	}
}

func (s *scriptedUpstream) sendTimes() []time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]time.Time(nil), s.sentAt...)
}
