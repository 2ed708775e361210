package admin

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"strings"

	"github.com/crsrelay/crs/controlplane/secret"
	"github.com/crsrelay/crs/controlplane/store"
)

// TokenAuth checks admin bearer tokens. It keeps only the SHA-256 of the accepted token and
// compares digests in constant time, so neither the token nor its length leaks through timing.
// It is safe for concurrent use.
type TokenAuth struct {
	sum [sha256.Size]byte
}

// NewTokenAuth accepts exactly the given token.
func NewTokenAuth(token string) *TokenAuth {
	return &TokenAuth{sum: sha256.Sum256([]byte(token))}
}

// NewTokenAuthFromHash accepts the token whose SHA-256 is sum.
func NewTokenAuthFromHash(sum []byte) (*TokenAuth, error) {
	if len(sum) != sha256.Size {
		return nil, fmt.Errorf("admin token hash is %d bytes, want %d", len(sum), sha256.Size)
	}
	a := &TokenAuth{}
	copy(a.sum[:], sum)
	return a, nil
}

// Verify reports whether presented is the admin token.
func (a *TokenAuth) Verify(presented string) bool {
	got := sha256.Sum256([]byte(presented))
	return subtle.ConstantTimeCompare(got[:], a.sum[:]) == 1
}

// BearerToken extracts the token of an "Authorization: Bearer <token>" value.
func BearerToken(authorization string) (string, bool) {
	scheme, tok, ok := strings.Cut(strings.TrimSpace(authorization), " ")
	if !ok || !strings.EqualFold(scheme, "bearer") {
		return "", false
	}
	tok = strings.TrimSpace(tok)
	return tok, tok != ""
}

// EnsureAdminToken decides which admin token is accepted. A configured token wins and nothing is
// stored. Otherwise the SHA-256 of a token is kept in the store secret AdminTokenSecretName: the
// first start generates a token and returns it in generated (the caller shows it once); later
// starts, and other replicas, find the hash and return generated == "".
func EnsureAdminToken(ctx context.Context, st store.Store, configured string) (auth *TokenAuth, generated string, err error) {
	if configured != "" {
		return NewTokenAuth(configured), "", nil
	}
	stored, err := st.GetSecret(ctx, AdminTokenSecretName)
	switch {
	case err == nil:
		a, err := NewTokenAuthFromHash(stored)
		return a, "", err
	case !errors.Is(err, store.ErrNotFound):
		return nil, "", fmt.Errorf("read %s: %w", AdminTokenSecretName, err)
	}
	tok, err := secret.NewAdminToken()
	if err != nil {
		return nil, "", err
	}
	sum := sha256.Sum256([]byte(tok))
	stored, err = st.PutSecretIfAbsent(ctx, AdminTokenSecretName, sum[:])
	if err != nil {
		return nil, "", fmt.Errorf("store %s: %w", AdminTokenSecretName, err)
	}
	a, err := NewTokenAuthFromHash(stored)
	if err != nil {
		return nil, "", err
	}
	if subtle.ConstantTimeCompare(stored, sum[:]) == 1 {
		return a, tok, nil
	}
	// Another replica generated one first; it shows its own token.
	return a, "", nil
}
