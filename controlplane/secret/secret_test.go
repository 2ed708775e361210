package secret

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	crsv1 "github.com/crsrelay/crs/gen/crs/v1"
)

func testSealer(t *testing.T) *Sealer {
	t.Helper()
	k, err := GenerateKey()
	require.NoError(t, err)
	s, err := NewSealer(k)
	require.NoError(t, err)
	return s
}

func TestNewSealerRejectsWrongKeySize(t *testing.T) {
	for _, n := range []int{0, 16, 31, 33, 64} {
		_, err := NewSealer(make([]byte, n))
		require.ErrorIs(t, err, ErrKeySize, "size %d", n)
	}
}

func TestSealOpen(t *testing.T) {
	s := testSealer(t)
	pt := []byte("top secret")
	a, err := s.Seal(pt, []byte("aad"))
	require.NoError(t, err)
	b, err := s.Seal(pt, []byte("aad"))
	require.NoError(t, err)
	require.NotEqual(t, a, b, "nonces must differ")
	require.Equal(t, sealVersion, a[0])
	require.False(t, bytes.Contains(a, pt), "plaintext visible in sealed bytes")

	got, err := s.Open(a, []byte("aad"))
	require.NoError(t, err)
	require.Equal(t, pt, got)

	tests := []struct {
		name   string
		sealed []byte
		aad    string
		sealer *Sealer
	}{
		{"wrong aad", a, "other", s},
		{"wrong key", a, "aad", testSealer(t)},
		{"truncated", a[:10], "aad", s},
		{"empty", nil, "aad", s},
		{"bad version", append([]byte{9}, a[1:]...), "aad", s},
		{"flipped bit", func() []byte { c := bytes.Clone(a); c[len(c)-1] ^= 1; return c }(), "aad", s},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tt.sealer.Open(tt.sealed, []byte(tt.aad))
			require.ErrorIs(t, err, ErrOpen)
		})
	}
}

func TestSealCredentialsRoundTrip(t *testing.T) {
	s := testSealer(t)
	exp := timestamppb.Now()
	tests := []struct {
		name string
		acct *crsv1.Account
	}{
		{"api key", &crsv1.Account{Id: "a1", Credentials: &crsv1.Account_ApiKey{ApiKey: &crsv1.ApiKeyCredential{ApiKey: "sk-ant-secret"}}}},
		{"oauth", &crsv1.Account{Id: "a2", Credentials: &crsv1.Account_Oauth{Oauth: &crsv1.OAuthCredential{AccessToken: "at", RefreshToken: "rt", ExpiresAt: exp, Scopes: []string{"user:inference"}}}}},
		{"aws", &crsv1.Account{Id: "a3", Credentials: &crsv1.Account_Aws{Aws: &crsv1.AwsCredential{AccessKeyId: "AKIA", SecretAccessKey: "sk", Region: "us-east-1"}}}},
		{"azure with proxy", &crsv1.Account{Id: "a4", Proxy: "socks5://u:pw@h:1080", Credentials: &crsv1.Account_Azure{Azure: &crsv1.AzureCredential{Endpoint: "https://x", ApiKey: "k"}}}},
		{"none", &crsv1.Account{Id: "a5"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			orig := proto.Clone(tt.acct).(*crsv1.Account)
			tt.acct.Name = "not sealed"
			sealed, err := s.SealCredentials(tt.acct)
			require.NoError(t, err)
			require.False(t, bytes.Contains(sealed, []byte("sk-ant-secret")), "plaintext visible")

			into := &crsv1.Account{Id: tt.acct.Id, Name: "kept", Proxy: "http://h:1"}
			require.NoError(t, s.OpenCredentials(sealed, into))
			require.Equal(t, "kept", into.Name)
			want := proto.Clone(orig).(*crsv1.Account)
			want.Name = "kept"
			if want.Proxy == "" {
				want.Proxy = "http://h:1"
			}
			require.True(t, proto.Equal(want, into), "got %v want %v", into, want)

			other := &crsv1.Account{Id: "someone-else"}
			require.ErrorIs(t, s.OpenCredentials(sealed, other), ErrOpen)
		})
	}
}

func TestParseKey(t *testing.T) {
	raw := bytes.Repeat([]byte{0xab}, KeySize)
	tests := []struct {
		name        string
		in          string
		want        []byte
		wantDerived bool
		wantErr     error
	}{
		{"hex", hex.EncodeToString(raw), raw, false, nil},
		{"hex upper with spaces", "  " + strings.ToUpper(hex.EncodeToString(raw)) + "\n", raw, false, nil},
		{"base64 std", base64.StdEncoding.EncodeToString(raw), raw, false, nil},
		{"base64 raw url", base64.RawURLEncoding.EncodeToString(raw), raw, false, nil},
		{"passphrase", "correct horse battery staple", nil, true, nil},
		{"base64 of 16 bytes is derived", base64.StdEncoding.EncodeToString(raw[:16]), nil, true, nil},
		{"empty", "   ", nil, false, ErrEmptyKey},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, derived, err := ParseKey(tt.in)
			if tt.wantErr != nil {
				require.ErrorIs(t, err, tt.wantErr)
				return
			}
			require.NoError(t, err)
			require.Len(t, got, KeySize)
			require.Equal(t, tt.wantDerived, derived)
			if tt.want != nil {
				require.Equal(t, tt.want, got)
			}
		})
	}
	a, _, _ := ParseKey("same phrase")
	b, _, _ := ParseKey("same phrase")
	require.Equal(t, a, b, "derivation must be deterministic")

	k, err := GenerateKey()
	require.NoError(t, err)
	back, derived, err := ParseKey(EncodeKey(k))
	require.NoError(t, err)
	require.False(t, derived)
	require.Equal(t, k, back)
}

func TestGenerators(t *testing.T) {
	tests := []struct {
		name string
		gen  func() (string, error)
		re   string
	}{
		{"api key", NewAPIKey, `^cr_[0-9a-f]{64}$`},
		{"admin token", NewAdminToken, `^crs_admin_[0-9a-f]{64}$`},
		{"fleet token", NewFleetToken, `^crs_fleet_[0-9a-f]{64}$`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, err := tt.gen()
			require.NoError(t, err)
			b, err := tt.gen()
			require.NoError(t, err)
			require.Regexp(t, regexp.MustCompile(tt.re), a)
			require.NotEqual(t, a, b)
		})
	}
}
