//go:build !race

package auth

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	crsv1 "github.com/crsrelay/crs/gen/crs/v1"
)

// TestHitPathAllocs pins the hot path: extracting, hashing and looking up a known key allocates
// nothing (the race detector's instrumentation allocates, hence the build tag).
func TestHitPathAllocs(t *testing.T) {
	st := testState(t, hmacKey(goodKey, &crsv1.ApiKey{Id: "k", IsActive: true}))
	var a Authenticator
	now := time.Now()
	for _, hdr := range []string{"x-api-key", "authorization"} {
		t.Run(hdr, func(t *testing.T) {
			v := goodKey
			if hdr == "authorization" {
				v = "Bearer " + goodKey
			}
			req := request(map[string]string{hdr: v}, "")
			allocs := testing.AllocsPerRun(200, func() {
				k, err := a.Authenticate(st, ExtractKey(req), now)
				if err != nil || k == nil {
					t.Fatal("no key", err)
				}
			})
			require.Zero(t, allocs)
		})
	}
	t.Run("query", func(t *testing.T) {
		req := request(nil, "?key="+goodKey)
		allocs := testing.AllocsPerRun(200, func() {
			if _, err := a.Authenticate(st, ExtractKey(req), now); err != nil {
				t.Fatal(err)
			}
		})
		require.Zero(t, allocs)
	})
	t.Run("rejection", func(t *testing.T) {
		req := request(map[string]string{"x-api-key": "cr_unknown-unknown"}, "")
		allocs := testing.AllocsPerRun(200, func() {
			if _, err := a.Authenticate(st, ExtractKey(req), now); err != RejectUnknown {
				t.Fatal(err)
			}
		})
		require.Zero(t, allocs)
	})
}

// TestUnlimitedKeyPolicyAllocs pins what a key without restrictions or limits costs after
// Authenticate: Policy.Applies says no and the model check passes, without allocating.
func TestUnlimitedKeyPolicyAllocs(t *testing.T) {
	p := NewPolicy(PolicyOptions{TZOffsetHours: 8})
	k := &crsv1.ApiKey{Id: "k", IsActive: true, ConcurrencyLimit: 3, EnableModelRestriction: true, RestrictedModels: []string{"x"}}
	st := policyState(t, k, nil, nil)
	allocs := testing.AllocsPerRun(200, func() {
		if p.Applies(k, st) || CheckModel(k, "claude-sonnet-4-5") != nil {
			t.Fatal("refused")
		}
	})
	require.Zero(t, allocs)
}
