package keyhash

import (
	"crypto/sha256"
	"encoding/hex"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestLegacyMatchesNodeConstruction(t *testing.T) {
	// sha256_hex(plaintext + ENCRYPTION_KEY), string concatenation (reference §14).
	key := "cr_" + "ab12"
	secret := "CHANGE-THIS-32-CHARACTER-KEY-NOW"
	sum := sha256.Sum256([]byte(key + secret))
	require.Equal(t, hex.EncodeToString(sum[:]), Legacy(secret, []byte(key)))
}

func TestHMACDependsOnSecret(t *testing.T) {
	a := HMAC([]byte("s1"), []byte("cr_x"))
	b := HMAC([]byte("s2"), []byte("cr_x"))
	require.Len(t, a, 64)
	require.NotEqual(t, a, b)
	require.Equal(t, a, HMAC([]byte("s1"), []byte("cr_x")))
}
