package mockupstream

import (
	"sync"
	"sync/atomic"
)

// Stats is what GET /__stats returns: counters since start or the last reset.
type Stats struct {
	// Requests counts API requests (the /__ routes excluded), rejected ones included.
	Requests int64 `json:"requests"`
	// InFlight is the number of API requests being answered now; a stream counts until its last byte.
	InFlight int64 `json:"in_flight"`
	// MaxInFlight is the highest InFlight seen.
	MaxInFlight int64 `json:"max_in_flight"`
	// Failures counts answers with a non-2xx status, injected or not.
	Failures int64 `json:"failures"`
	// ByCredential has the same counters per upstream credential (x-api-key or bearer token).
	ByCredential map[string]CredentialStats `json:"by_credential"`
}

// CredentialStats are the counters of one upstream credential.
type CredentialStats struct {
	Requests    int64 `json:"requests"`
	InFlight    int64 `json:"in_flight"`
	MaxInFlight int64 `json:"max_in_flight"`
	Failures    int64 `json:"failures"`
}

// counters are lock-free request counters.
type counters struct {
	requests    atomic.Int64
	inFlight    atomic.Int64
	maxInFlight atomic.Int64
	failures    atomic.Int64
}

func (c *counters) begin() {
	c.requests.Add(1)
	n := c.inFlight.Add(1)
	for {
		m := c.maxInFlight.Load()
		if n <= m || c.maxInFlight.CompareAndSwap(m, n) {
			return
		}
	}
}

func (c *counters) end(failed bool) {
	c.inFlight.Add(-1)
	if failed {
		c.failures.Add(1)
	}
}

func (c *counters) snapshot() CredentialStats {
	return CredentialStats{
		Requests:    c.requests.Load(),
		InFlight:    c.inFlight.Load(),
		MaxInFlight: c.maxInFlight.Load(),
		Failures:    c.failures.Load(),
	}
}

// stats holds the global counters and one set per credential.
type stats struct {
	// total is replaced on reset; requests in flight keep the pointer they started with.
	total atomic.Pointer[counters]
	mu    sync.RWMutex
	creds map[string]*counters
}

func newStats() *stats {
	s := &stats{creds: make(map[string]*counters)}
	s.total.Store(new(counters))
	return s
}

// forCredential returns the counters of cred, creating them on first use. The read path does not
// allocate: indexing a map with string(b) is optimised by the compiler.
func (s *stats) forCredential(cred []byte) *counters {
	s.mu.RLock()
	c := s.creds[string(cred)]
	s.mu.RUnlock()
	if c != nil {
		return c
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if c = s.creds[string(cred)]; c == nil {
		c = new(counters)
		s.creds[string(cred)] = c
	}
	return c
}

// reset starts new counters. Requests already in flight finish on the old ones, so in_flight right
// after a reset counts only requests that started after it.
func (s *stats) reset() {
	s.total.Store(new(counters))
	s.mu.Lock()
	s.creds = make(map[string]*counters)
	s.mu.Unlock()
}

func (s *stats) snapshot() Stats {
	t := s.total.Load().snapshot()
	out := Stats{
		Requests: t.Requests, InFlight: t.InFlight, MaxInFlight: t.MaxInFlight, Failures: t.Failures,
		ByCredential: make(map[string]CredentialStats),
	}
	s.mu.RLock()
	for k, c := range s.creds {
		out.ByCredential[k] = c.snapshot()
	}
	s.mu.RUnlock()
	return out
}

// tracker is the accounting of one request: global and (once known) per-credential counters.
// end must be called exactly once.
type tracker struct {
	total, cred *counters
}

func (t tracker) end(failed bool) {
	t.total.end(failed)
	if t.cred != nil {
		t.cred.end(failed)
	}
}
