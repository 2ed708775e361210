// Package keyhash holds the two ways a presented "cr_" key is hashed to find its record. The
// control plane hashes at creation, workers at every request; both import this package so the
// constructions cannot drift apart. It depends on nothing but the standard library.
package keyhash

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
)

// Hash schemes, as stored in ApiKey.hash_scheme.
const (
	// SchemeHMAC is crs's own: hex(HMAC-SHA256(secret, key)).
	SchemeHMAC = "hmac-sha256"
	// SchemeLegacy is the Node.js service's (reference §2.2): hex(sha256(key + ENCRYPTION_KEY)).
	SchemeLegacy = "legacy-sha256"
)

// Prefix is what every crs key starts with.
const Prefix = "cr_"

// HMAC returns hex(HMAC-SHA256(secret, key)).
func HMAC(secret []byte, key []byte) string {
	m := hmac.New(sha256.New, secret)
	m.Write(key)
	var sum [sha256.Size]byte
	return hex.EncodeToString(m.Sum(sum[:0]))
}

// Legacy returns hex(sha256(key + secret)), the Node.js construction.
func Legacy(secret string, key []byte) string {
	h := sha256.New()
	h.Write(key)
	h.Write([]byte(secret))
	var sum [sha256.Size]byte
	return hex.EncodeToString(h.Sum(sum[:0]))
}
