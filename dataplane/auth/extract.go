// Package auth finds the crs key a client presented and checks it against the pushed snapshot
// (reference §1.2 and §2.3): extraction, hashing, lookup, and the key's own validity (active,
// expiry, activation, owner) in Authenticate; then, in Policy, the steps that need nothing but the
// snapshot: client restrictions (validators as data, ClientSpec), the fixed window as pushed, and
// the daily, total and weekly cost caps; and the model blacklist of the Messages routes
// (CheckModel). Refusals carry the exact client-visible status, headers and JSON: Rejection for
// the fixed 401s, apierr.Error for the rest.
//
// It reads only the snapshot: no RPC, no store. Concurrency leases and the authoritative request
// count of a window need the control plane; the worker takes them (dataplane/worker admission.go).
// It depends on snapshot, apierr, internal/keyhash, gen and fasthttp.
package auth

import (
	"github.com/valyala/fasthttp"
)

// Canonical header names, so lookups skip fasthttp's key normalization.
var (
	hdrXAPIKey       = []byte("X-Api-Key")
	hdrXGoogAPIKey   = []byte("X-Goog-Api-Key")
	hdrAuthorization = []byte("Authorization")
	hdrAPIKey        = []byte("Api-Key")
)

// ExtractKey returns the key presented in req (reference §1.2): the first non-empty of the
// x-api-key, x-goog-api-key, authorization and api-key headers and the "key" query parameter,
// trimmed, with a leading "Bearer" and the whitespace after it removed (case-insensitive). A value
// that is empty after that is skipped. It returns nil when there is none.
//
// The result aliases req's memory: it is valid only until the handler returns. It does not
// allocate.
func ExtractKey(req *fasthttp.Request) []byte {
	for _, name := range [...][]byte{hdrXAPIKey, hdrXGoogAPIKey, hdrAuthorization, hdrAPIKey} {
		if k := candidate(req.Header.PeekCanonical(name)); k != nil {
			return k
		}
	}
	return candidate(req.URI().QueryArgs().Peek("key"))
}

// candidate applies the reference's trim and Bearer rules to one value; nil when it is empty.
func candidate(v []byte) []byte {
	v = trimSpace(v)
	if len(v) == 0 {
		return nil
	}
	// /^Bearer\s+/i: "Bearer" followed by at least one whitespace character.
	if len(v) > 6 && hasPrefixFold(v, "bearer") && isSpace(v[6]) {
		v = trimSpace(v[6:])
		if len(v) == 0 {
			return nil
		}
	}
	return v
}

func hasPrefixFold(b []byte, lowerPrefix string) bool {
	if len(b) < len(lowerPrefix) {
		return false
	}
	for i := 0; i < len(lowerPrefix); i++ {
		c := b[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != lowerPrefix[i] {
			return false
		}
	}
	return true
}

// isSpace is the ASCII part of JavaScript's \s (header values are ASCII).
func isSpace(c byte) bool {
	switch c {
	case ' ', '\t', '\n', '\v', '\f', '\r':
		return true
	}
	return false
}

func trimSpace(b []byte) []byte {
	for len(b) > 0 && isSpace(b[0]) {
		b = b[1:]
	}
	for len(b) > 0 && isSpace(b[len(b)-1]) {
		b = b[:len(b)-1]
	}
	return b
}
