package admin

import (
	"crypto/sha256"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestEnsureAdminToken(t *testing.T) {
	f := newFixture(t)

	a, generated, err := EnsureAdminToken(f.ctx, f.store, "")
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(generated, "crs_admin_"))
	require.True(t, a.Verify(generated))
	require.False(t, a.Verify(generated+"x"))
	require.False(t, a.Verify(""))
	sum := sha256.Sum256([]byte(generated))
	stored, err := f.store.GetSecret(f.ctx, AdminTokenSecretName)
	require.NoError(t, err)
	require.Equal(t, sum[:], stored, "only the hash is stored")

	// A later start finds it and generates nothing.
	b, again, err := EnsureAdminToken(f.ctx, f.store, "")
	require.NoError(t, err)
	require.Empty(t, again)
	require.True(t, b.Verify(generated))

	// A configured token wins.
	c, none, err := EnsureAdminToken(f.ctx, f.store, "configured-token-1234")
	require.NoError(t, err)
	require.Empty(t, none)
	require.True(t, c.Verify("configured-token-1234"))
	require.False(t, c.Verify(generated))
}

func TestBearerToken(t *testing.T) {
	tests := []struct {
		in   string
		want string
		ok   bool
	}{
		{"Bearer abc", "abc", true},
		{"bearer   abc ", "abc", true},
		{"Basic abc", "", false},
		{"Bearer", "", false},
		{"Bearer ", "", false},
		{"", "", false},
		{"abc", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, ok := BearerToken(tt.in)
			require.Equal(t, tt.ok, ok)
			require.Equal(t, tt.want, got)
		})
	}
}
