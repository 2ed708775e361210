// Package secret seals account credentials at rest (AES-256-GCM) and generates the random secrets
// crs hands out: "cr_" API keys, the admin token and the fleet token.
//
// It depends on the contract (gen/crs/v1) and the standard library only: no store, no gRPC, no
// logging. The caller decides where the encryption key comes from (see ParseKey) and where sealed
// bytes are kept.
package secret

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"errors"
	"fmt"
)

// KeySize is the AES-256 key length in bytes.
const KeySize = 32

// sealVersion is the first byte of every sealed value; a future format changes it.
const sealVersion byte = 1

// Sentinel errors.
var (
	// ErrKeySize: the encryption key is not KeySize bytes.
	ErrKeySize = errors.New("secret: encryption key must be 32 bytes")
	// ErrOpen: a sealed value cannot be opened: wrong key, corrupted or truncated bytes, or a
	// value sealed for another account.
	ErrOpen = errors.New("secret: cannot open sealed value (wrong encryption key or corrupted data)")
)

// Sealer encrypts and authenticates small values with AES-256-GCM. It is safe for concurrent use.
type Sealer struct {
	aead cipher.AEAD
}

// NewSealer returns a Sealer for a KeySize-byte key.
func NewSealer(key []byte) (*Sealer, error) {
	if len(key) != KeySize {
		return nil, ErrKeySize
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("secret: new cipher: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("secret: new gcm: %w", err)
	}
	return &Sealer{aead: aead}, nil
}

// Seal encrypts plaintext bound to aad (authenticated, not encrypted; Open needs the same aad).
// The output is version byte + random 12-byte nonce + ciphertext and tag.
func (s *Sealer) Seal(plaintext, aad []byte) ([]byte, error) {
	ns := s.aead.NonceSize()
	out := make([]byte, 1+ns, 1+ns+len(plaintext)+s.aead.Overhead())
	out[0] = sealVersion
	if _, err := rand.Read(out[1 : 1+ns]); err != nil {
		return nil, fmt.Errorf("secret: read nonce: %w", err)
	}
	return s.aead.Seal(out, out[1:1+ns], plaintext, aad), nil
}

// Open reverses Seal. Any failure is ErrOpen.
func (s *Sealer) Open(sealed, aad []byte) ([]byte, error) {
	ns := s.aead.NonceSize()
	if len(sealed) < 1+ns+s.aead.Overhead() || sealed[0] != sealVersion {
		return nil, ErrOpen
	}
	pt, err := s.aead.Open(nil, sealed[1:1+ns], sealed[1+ns:], aad)
	if err != nil {
		return nil, ErrOpen
	}
	return pt, nil
}
