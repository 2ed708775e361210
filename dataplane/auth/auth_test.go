package auth

import (
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/valyala/fasthttp"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/crsrelay/crs/dataplane/snapshot"
	crsv1 "github.com/crsrelay/crs/gen/crs/v1"
	"github.com/crsrelay/crs/internal/keyhash"
)

const (
	goodKey   = "cr_0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	legacyKey = "cr_fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210"
)

var (
	hmacSecret   = []byte("0123456789abcdef0123456789abcdef")
	legacySecret = "node-encryption-key"
)

func request(headers map[string]string, query string) *fasthttp.Request {
	req := &fasthttp.Request{}
	req.SetRequestURI("/api/v1/messages" + query)
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	return req
}

func TestExtractKey(t *testing.T) {
	tests := []struct {
		name    string
		headers map[string]string
		query   string
		want    string
	}{
		{"none", nil, "", ""},
		{"x-api-key", map[string]string{"x-api-key": "cr_a"}, "", "cr_a"},
		{"x-goog-api-key", map[string]string{"x-goog-api-key": "cr_b"}, "", "cr_b"},
		{"authorization bearer", map[string]string{"Authorization": "Bearer cr_c"}, "", "cr_c"},
		{"bearer case-insensitive and extra space", map[string]string{"authorization": "bEaReR \t cr_c "}, "", "cr_c"},
		{"bearer without space is kept", map[string]string{"authorization": "Bearercr_c"}, "", "Bearercr_c"},
		{"bare bearer word is a key", map[string]string{"authorization": "Bearer"}, "", "Bearer"},
		{"api-key", map[string]string{"api-key": "cr_d"}, "", "cr_d"},
		{"query", nil, "?key=cr_e", "cr_e"},
		{"query is url-decoded", nil, "?a=1&key=cr%5Fe", "cr_e"},
		{"order: x-api-key wins", map[string]string{"x-api-key": "cr_1", "x-goog-api-key": "cr_2", "authorization": "Bearer cr_3", "api-key": "cr_4"}, "?key=cr_5", "cr_1"},
		{"order: x-goog before authorization", map[string]string{"x-goog-api-key": "cr_2", "authorization": "Bearer cr_3"}, "", "cr_2"},
		{"order: authorization before api-key", map[string]string{"authorization": "cr_3", "api-key": "cr_4"}, "", "cr_3"},
		{"order: header before query", map[string]string{"api-key": "cr_4"}, "?key=cr_5", "cr_4"},
		{"blank header skipped", map[string]string{"x-api-key": "   ", "api-key": "cr_4"}, "", "cr_4"},
		// The value is trimmed before the Bearer rule, so "Bearer   " is the key "Bearer" (as in Node).
		{"bearer with nothing after is the word", map[string]string{"authorization": "Bearer   ", "api-key": "cr_4"}, "", "Bearer"},
		{"trimmed", map[string]string{"x-api-key": "  cr_t\t"}, "", "cr_t"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := ExtractKey(request(tt.headers, tt.query))
			if tt.want == "" {
				require.Nil(t, got)
				return
			}
			require.Equal(t, tt.want, string(got))
		})
	}
}

func testState(t testing.TB, keys ...*crsv1.WorkerKey) *snapshot.State {
	t.Helper()
	st, err := snapshot.Apply(nil, &crsv1.SyncMessage{Version: 1, Body: &crsv1.SyncMessage_Snapshot{Snapshot: &crsv1.Snapshot{
		Keys:    keys,
		Hashing: &crsv1.KeyHashing{HmacSecret: hmacSecret, LegacySecret: legacySecret},
	}}})
	require.NoError(t, err)
	return st
}

func hmacKey(plain string, k *crsv1.ApiKey) *crsv1.WorkerKey {
	return &crsv1.WorkerKey{Hash: keyhash.HMAC(hmacSecret, []byte(plain)), Key: k}
}

func TestAuthenticate(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	past := timestamppb.New(now.Add(-time.Hour))
	future := timestamppb.New(now.Add(time.Hour))
	keyFor := func(plain string, k *crsv1.ApiKey) *snapshot.State {
		k.Id = "key-1"
		return testState(t, hmacKey(plain, k))
	}
	tests := []struct {
		name     string
		st       *snapshot.State
		key      string
		wantErr  *Rejection
		wantBody string
	}{
		{"missing", keyFor(goodKey, &crsv1.ApiKey{IsActive: true}), "", RejectMissing,
			`{"error":"Missing API key","message":"Please provide an API key in the x-api-key, x-goog-api-key, or Authorization header"}`},
		{"too short", keyFor(goodKey, &crsv1.ApiKey{IsActive: true}), "cr_123456", RejectMalformed,
			`{"error":"Invalid API key format","message":"API key format is invalid"}`},
		{"too long", keyFor(goodKey, &crsv1.ApiKey{IsActive: true}), "cr_" + string(make([]byte, 510)), RejectMalformed, ""},
		{"wrong prefix", keyFor(goodKey, &crsv1.ApiKey{IsActive: true}), "sk-ant-0123456789", RejectBadPrefix,
			`{"error":"Invalid API key","message":"Invalid API key format"}`},
		{"unknown", keyFor(goodKey, &crsv1.ApiKey{IsActive: true}), "cr_ffffffffffffffff", RejectUnknown,
			`{"error":"Invalid API key","message":"API key not found"}`},
		{"disabled", keyFor(goodKey, &crsv1.ApiKey{IsActive: false}), goodKey, RejectDisabled,
			`{"error":"Invalid API key","message":"API key is disabled"}`},
		{"expired", keyFor(goodKey, &crsv1.ApiKey{IsActive: true, ExpirationMode: "fixed", IsActivated: true, ExpiresAt: past}), goodKey, RejectExpired,
			`{"error":"Invalid API key","message":"API key has expired"}`},
		{"owner disabled", keyFor(goodKey, &crsv1.ApiKey{IsActive: true, OwnerDisabled: true}), goodKey, RejectOwnerDisabled,
			`{"error":"Invalid API key","message":"User account is disabled"}`},
		{"ok", keyFor(goodKey, &crsv1.ApiKey{IsActive: true}), goodKey, nil, ""},
		{"ok not yet expired", keyFor(goodKey, &crsv1.ApiKey{IsActive: true, ExpiresAt: future}), goodKey, nil, ""},
		{"ok zero expiry means unset", keyFor(goodKey, &crsv1.ApiKey{IsActive: true, ExpiresAt: &timestamppb.Timestamp{}}), goodKey, nil, ""},
		{"activation mode not activated is accepted", keyFor(goodKey, &crsv1.ApiKey{IsActive: true, ExpirationMode: "activation", ActivationDays: 30, ExpiresAt: past}), goodKey, nil, ""},
		{"activation mode activated and expired", keyFor(goodKey, &crsv1.ApiKey{IsActive: true, ExpirationMode: "activation", IsActivated: true, ExpiresAt: past}), goodKey, RejectExpired, ""},
		{"legacy hash", testState(t, &crsv1.WorkerKey{Hash: keyhash.Legacy(legacySecret, []byte(legacyKey)), Key: &crsv1.ApiKey{Id: "legacy", IsActive: true}}), legacyKey, nil, ""},
	}
	var a Authenticator
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k, err := a.Authenticate(tt.st, []byte(tt.key), now)
			if tt.wantErr == nil {
				require.NoError(t, err)
				require.NotNil(t, k)
				return
			}
			require.Nil(t, k)
			var rej *Rejection
			require.True(t, errors.As(err, &rej))
			require.Same(t, tt.wantErr, rej)
			require.Equal(t, 401, rej.Status)
			require.ErrorIs(t, err, tt.wantErr.Cause)
			if tt.wantBody != "" {
				require.JSONEq(t, tt.wantBody, string(rej.Body))
				require.Equal(t, tt.wantBody, string(rej.Body), "key order as Express writes it")
			}
		})
	}
}

func TestAuthenticateFollowsSecretChange(t *testing.T) {
	var a Authenticator
	now := time.Now()
	st1 := testState(t, hmacKey(goodKey, &crsv1.ApiKey{Id: "k", IsActive: true}))
	_, err := a.Authenticate(st1, []byte(goodKey), now)
	require.NoError(t, err)

	// The control plane rotated the HMAC secret: the cached hasher must not be reused.
	other := []byte("another-secret-another-secret-00")
	st2, err := snapshot.Apply(nil, &crsv1.SyncMessage{Version: 2, Body: &crsv1.SyncMessage_Snapshot{Snapshot: &crsv1.Snapshot{
		Keys:    []*crsv1.WorkerKey{{Hash: keyhash.HMAC(other, []byte(goodKey)), Key: &crsv1.ApiKey{Id: "k", IsActive: true}}},
		Hashing: &crsv1.KeyHashing{HmacSecret: other},
	}}})
	require.NoError(t, err)
	_, err = a.Authenticate(st2, []byte(goodKey), now)
	require.NoError(t, err)
	_, err = a.Authenticate(st1, []byte(goodKey), now)
	require.NoError(t, err)
}

func BenchmarkExtractAndAuthenticate(b *testing.B) {
	st := testState(b, hmacKey(goodKey, &crsv1.ApiKey{Id: "k", IsActive: true}))
	req := request(map[string]string{"Authorization": "Bearer " + goodKey}, "")
	var a Authenticator
	now := time.Now()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := a.Authenticate(st, ExtractKey(req), now); err != nil {
			b.Fatal(err)
		}
	}
}

func FuzzExtractKey(f *testing.F) {
	f.Add("x-api-key", "cr_abc", "")
	f.Add("authorization", "Bearer cr_abc", "")
	f.Add("authorization", "bearer\t\t", "?key=cr_q")
	f.Add("api-key", "  ", "?key=%20cr_%41")
	f.Fuzz(func(t *testing.T, name, value, query string) {
		req := &fasthttp.Request{}
		req.SetRequestURI("/x" + query)
		req.Header.Set(name, value)
		k := ExtractKey(req)
		if k == nil {
			return
		}
		if len(trimSpace(k)) != len(k) || len(k) == 0 {
			t.Fatalf("key %q is empty or untrimmed", k)
		}
		if hasPrefixFold(k, "bearer") && len(k) > 6 && isSpace(k[6]) {
			t.Fatalf("bearer prefix left in %q", k)
		}
	})
}
