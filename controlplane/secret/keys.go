package secret

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	"github.com/crsrelay/crs/internal/keyhash"
)

// Token prefixes. They make a leaked token recognisable (secret scanners, logs) and tell the two
// kinds apart; the rest is 64 lowercase hex characters (32 random bytes).
const (
	AdminTokenPrefix = "crs_admin_"
	FleetTokenPrefix = "crs_fleet_"
)

// ErrEmptyKey: ParseKey was given an empty string.
var ErrEmptyKey = errors.New("secret: encryption key is empty")

// ParseKey turns the configured security.encryption_key into a KeySize-byte key. Accepted, in this
// order: 64 hex characters; base64 (standard or URL alphabet, padded or not) of exactly 32 bytes.
// Any other non-empty string is stretched with SHA-256 and derived is true, so the caller can warn
// that a random key would be stronger.
func ParseKey(s string) (key []byte, derived bool, err error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, false, ErrEmptyKey
	}
	if len(s) == 2*KeySize {
		if b, err := hex.DecodeString(s); err == nil {
			return b, false, nil
		}
	}
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if b, err := enc.DecodeString(s); err == nil && len(b) == KeySize {
			return b, false, nil
		}
	}
	sum := sha256.Sum256([]byte(s))
	return sum[:], true, nil
}

// GenerateKey returns a new random KeySize-byte encryption key.
func GenerateKey() ([]byte, error) {
	return randomBytes(KeySize)
}

// EncodeKey renders a key the way ParseKey reads it back first: 64 lowercase hex characters.
func EncodeKey(key []byte) string {
	return hex.EncodeToString(key)
}

// NewAPIKey returns a new plaintext client key: "cr_" + 64 lowercase hex (32 random bytes), as the
// Node.js service makes them (reference §2.2).
func NewAPIKey() (string, error) {
	return randomToken(keyhash.Prefix)
}

// NewAdminToken returns a new admin bearer token: AdminTokenPrefix + 64 lowercase hex.
func NewAdminToken() (string, error) {
	return randomToken(AdminTokenPrefix)
}

// NewFleetToken returns a new worker bearer token: FleetTokenPrefix + 64 lowercase hex.
func NewFleetToken() (string, error) {
	return randomToken(FleetTokenPrefix)
}

// RandomBytes returns n bytes from the system's secure random source (HMAC secrets and the like).
func RandomBytes(n int) ([]byte, error) {
	return randomBytes(n)
}

func randomToken(prefix string) (string, error) {
	b, err := randomBytes(32)
	if err != nil {
		return "", err
	}
	return prefix + hex.EncodeToString(b), nil
}

func randomBytes(n int) ([]byte, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return nil, fmt.Errorf("secret: read random: %w", err)
	}
	return b, nil
}
