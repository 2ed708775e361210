package store

import (
	"context"
	"time"
)

// LockStore holds named leases for work that must run once across control-plane replicas
// (token refresh of one account, one notification of one transition). A lease ends when its
// owner unlocks it or its TTL passes, so a replica that dies leaks nothing.
type LockStore interface {
	// TryLock takes the lease name for owner for ttl (which must be positive) and reports whether
	// it did. It returns false when another owner holds an unexpired lease; when owner already
	// holds it, the lease is extended to ttl from now and the result is true.
	TryLock(ctx context.Context, name, owner string, ttl time.Duration) (bool, error)
	// Unlock ends the lease name if owner holds it (compare-and-delete); otherwise it changes
	// nothing and returns nil.
	Unlock(ctx context.Context, name, owner string) error
}

// OAuthSessionStore keeps the short-lived state of OAuth flows between "start" and "exchange"
// (PKCE verifier, state, proxy), as blobs the caller seals.
type OAuthSessionStore interface {
	// PutOAuthSession stores blob under id for ttl (positive), replacing any session with that id.
	PutOAuthSession(ctx context.Context, id string, blob []byte, ttl time.Duration) error
	// TakeOAuthSession returns the session and deletes it in one step, so two exchanges can never
	// use one session. A missing or expired session is ErrNotFound.
	TakeOAuthSession(ctx context.Context, id string) ([]byte, error)
}

// ConfigBlobStore keeps small named configuration documents the control plane owns (the
// notification targets), as opaque bytes the caller encodes and seals. Writes publish no Change:
// readers load the blob when they need it.
type ConfigBlobStore interface {
	// GetConfigBlob returns the blob, or ErrNotFound before the first PutConfigBlob.
	GetConfigBlob(ctx context.Context, name string) ([]byte, error)
	// PutConfigBlob replaces the blob.
	PutConfigBlob(ctx context.Context, name string, blob []byte) error
}

// Coordinator is what the OAuth flows, the token refresher and the notifier need of a backend
// beyond [Store]. The embedded and Redis stores implement it.
type Coordinator interface {
	LockStore
	OAuthSessionStore
	ConfigBlobStore
}
