package mockupstream

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"strings"
	"sync"
	"time"

	"github.com/valyala/fasthttp"
)

// RecordedRequest is one API request as the mock received it, for tests that check what a relay
// sent upstream (GET /__requests).
type RecordedRequest struct {
	Time  time.Time `json:"time"`
	Path  string    `json:"path"`
	Query string    `json:"query"`
	// Headers holds every request header by lowercase name; repeated headers are joined by ", ".
	Headers map[string]string `json:"headers"`
	// Credential is the x-api-key value, or the bearer token when there is no x-api-key.
	Credential string `json:"credential"`
	Model      string `json:"model"`
	Stream     bool   `json:"stream"`
	// BodySHA256 is the hex SHA-256 of the body as received.
	BodySHA256 string `json:"body_sha256"`
}

// recordCapacity is how many requests the ring keeps.
const recordCapacity = 1000

// recorder is a ring buffer of the last recordCapacity requests.
type recorder struct {
	mu   sync.Mutex
	ring []RecordedRequest
	next int
	full bool
}

func newRecorder() *recorder {
	return &recorder{ring: make([]RecordedRequest, recordCapacity)}
}

func (r *recorder) add(ctx *fasthttp.RequestCtx, cred []byte, f requestFields) {
	sum := sha256.Sum256(ctx.Request.Body())
	rec := RecordedRequest{
		Time:       time.Now(),
		Path:       string(ctx.Path()),
		Query:      string(ctx.URI().QueryString()),
		Headers:    make(map[string]string),
		Credential: string(cred),
		Model:      decodeString(f.model),
		Stream:     f.stream,
		BodySHA256: hex.EncodeToString(sum[:]),
	}
	for k, v := range ctx.Request.Header.All() {
		name := strings.ToLower(string(k))
		if prev, ok := rec.Headers[name]; ok {
			rec.Headers[name] = prev + ", " + string(v)
			continue
		}
		rec.Headers[name] = string(v)
	}
	r.put(rec)
}

func (r *recorder) put(rec RecordedRequest) {
	r.mu.Lock()
	r.ring[r.next] = rec
	r.next++
	if r.next == len(r.ring) {
		r.next, r.full = 0, true
	}
	r.mu.Unlock()
}

// list returns the recorded requests, oldest first.
func (r *recorder) list() []RecordedRequest {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]RecordedRequest, 0, len(r.ring))
	if r.full {
		out = append(out, r.ring[r.next:]...)
	}
	return append(out, r.ring[:r.next]...)
}

func (r *recorder) reset() {
	r.mu.Lock()
	clear(r.ring)
	r.next, r.full = 0, false
	r.mu.Unlock()
}

// decodeString decodes a JSON string literal; anything else gives "".
func decodeString(lit []byte) string {
	var v string
	if json.Unmarshal(lit, &v) != nil {
		return ""
	}
	return v
}
