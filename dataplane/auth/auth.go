package auth

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"hash"
	"sync"
	"sync/atomic"
	"time"

	"github.com/crsrelay/crs/dataplane/snapshot"
	crsv1 "github.com/crsrelay/crs/gen/crs/v1"
	"github.com/crsrelay/crs/internal/keyhash"
)

// Sentinel causes of a Rejection; match them with errors.Is.
var (
	ErrMissingKey    = errors.New("auth: missing api key")
	ErrMalformedKey  = errors.New("auth: api key length out of range")
	ErrBadPrefix     = errors.New("auth: api key without the crs prefix")
	ErrUnknownKey    = errors.New("auth: api key not found")
	ErrKeyDisabled   = errors.New("auth: api key disabled")
	ErrKeyExpired    = errors.New("auth: api key expired")
	ErrOwnerDisabled = errors.New("auth: owner user disabled")
)

// Rejection is a refusal the client sees: an HTTP status and a JSON body, with the cause behind
// Unwrap. The values below are shared and never modified; Body must not be modified either.
type Rejection struct {
	Status int
	Body   []byte
	Cause  error
}

// Error implements error.
func (r *Rejection) Error() string { return r.Cause.Error() }

// Unwrap returns the sentinel cause.
func (r *Rejection) Unwrap() error { return r.Cause }

func reject(status int, body string, cause error) *Rejection {
	return &Rejection{Status: status, Body: []byte(body), Cause: cause}
}

// The responses of reference §2.3 steps 1-3, byte for byte as Express's res.json writes them.
var (
	RejectMissing = reject(401,
		`{"error":"Missing API key","message":"Please provide an API key in the x-api-key, x-goog-api-key, or Authorization header"}`,
		ErrMissingKey)
	RejectMalformed = reject(401,
		`{"error":"Invalid API key format","message":"API key format is invalid"}`, ErrMalformedKey)
	RejectBadPrefix = reject(401,
		`{"error":"Invalid API key","message":"Invalid API key format"}`, ErrBadPrefix)
	RejectUnknown = reject(401,
		`{"error":"Invalid API key","message":"API key not found"}`, ErrUnknownKey)
	RejectDisabled = reject(401,
		`{"error":"Invalid API key","message":"API key is disabled"}`, ErrKeyDisabled)
	RejectExpired = reject(401,
		`{"error":"Invalid API key","message":"API key has expired"}`, ErrKeyExpired)
	RejectOwnerDisabled = reject(401,
		`{"error":"Invalid API key","message":"User account is disabled"}`, ErrOwnerDisabled)
)

// Key length bounds of reference §2.3 step 2.
const (
	minKeyLen = 10
	maxKeyLen = 512
)

// Authenticator checks presented keys against a snapshot. It keeps pooled hash states per
// hashing secret, so Authenticate does not allocate on a hit. Safe for concurrent use; the zero
// value is ready.
type Authenticator struct {
	hmac   atomic.Pointer[hasher]
	legacy atomic.Pointer[hasher]
}

// hasher is a pool of hash states keyed to one secret.
type hasher struct {
	secret []byte
	pool   sync.Pool // *hashState
}

// hashState is one reusable hash computation with its output buffers, so nothing escapes to the
// heap per call.
type hashState struct {
	h   hash.Hash
	sum [sha256.Size]byte
	hex [2 * sha256.Size]byte
}

func newHMACHasher(secret []byte) *hasher {
	h := &hasher{secret: bytes.Clone(secret)}
	h.pool.New = func() any { return &hashState{h: hmac.New(sha256.New, h.secret)} }
	return h
}

func newLegacyHasher(secret string) *hasher {
	return &hasher{secret: []byte(secret), pool: sync.Pool{New: func() any { return &hashState{h: sha256.New()} }}}
}

// forSecret returns the cached hasher for secret, replacing it when the secret changed.
func forSecret(p *atomic.Pointer[hasher], secret []byte, build func() *hasher) *hasher {
	if h := p.Load(); h != nil && bytes.Equal(h.secret, secret) {
		return h
	}
	h := build()
	p.Store(h)
	return h
}

// lookupHMAC hashes key with keyhash.SchemeHMAC and looks it up.
func (a *Authenticator) lookupHMAC(st *snapshot.State, key []byte) *crsv1.ApiKey {
	secret := st.HMACSecret()
	h := forSecret(&a.hmac, secret, func() *hasher { return newHMACHasher(secret) })
	hs := h.pool.Get().(*hashState)
	hs.h.Reset()
	hs.h.Write(key)
	hs.h.Sum(hs.sum[:0])
	hex.Encode(hs.hex[:], hs.sum[:])
	k := st.KeyByHashBytes(hs.hex[:])
	h.pool.Put(hs)
	return k
}

// lookupLegacy hashes key with keyhash.SchemeLegacy (sha256(key + secret)) and looks it up.
func (a *Authenticator) lookupLegacy(st *snapshot.State, key []byte) *crsv1.ApiKey {
	secret := st.LegacySecret()
	if secret == "" {
		return nil
	}
	h := a.legacy.Load()
	if h == nil || string(h.secret) != secret {
		h = newLegacyHasher(secret)
		a.legacy.Store(h)
	}
	hs := h.pool.Get().(*hashState)
	hs.h.Reset()
	hs.h.Write(key)
	hs.h.Write(h.secret)
	hs.h.Sum(hs.sum[:0])
	hex.Encode(hs.hex[:], hs.sum[:])
	k := st.KeyByHashBytes(hs.hex[:])
	h.pool.Put(hs)
	return k
}

// Lookup finds the key record for a presented key: HMAC first, then the legacy construction when
// the snapshot has a legacy secret. It returns nil when neither matches.
func (a *Authenticator) Lookup(st *snapshot.State, key []byte) *crsv1.ApiKey {
	if k := a.lookupHMAC(st, key); k != nil {
		return k
	}
	return a.lookupLegacy(st, key)
}

// Authenticate runs reference §2.3 steps 1-3 for a key returned by ExtractKey (nil = none):
// presence, length, prefix, lookup, active, expiry, owner. It returns the key record, or a
// *Rejection (one of the Reject* values).
//
// Activation mode: a key that has not been activated yet is accepted; the control plane
// activates it (sets activated_at and expires_at) when it stores the key's first usage record,
// and pushes the result. Until then it has no expiry to check.
func (a *Authenticator) Authenticate(st *snapshot.State, key []byte, now time.Time) (*crsv1.ApiKey, error) {
	if len(key) == 0 {
		return nil, RejectMissing
	}
	if len(key) < minKeyLen || len(key) > maxKeyLen {
		return nil, RejectMalformed
	}
	if !bytes.HasPrefix(key, []byte(keyhash.Prefix)) {
		return nil, RejectBadPrefix
	}
	k := a.Lookup(st, key)
	if k == nil {
		return nil, RejectUnknown
	}
	if !k.GetIsActive() {
		return nil, RejectDisabled
	}
	if !(k.GetExpirationMode() == "activation" && !k.GetIsActivated()) {
		// A zero timestamp is treated as unset, like a missing one.
		if exp := k.GetExpiresAt(); exp != nil && (exp.GetSeconds() != 0 || exp.GetNanos() != 0) && now.After(exp.AsTime()) {
			return nil, RejectExpired
		}
	}
	if k.GetOwnerDisabled() {
		return nil, RejectOwnerDisabled
	}
	return k, nil
}
