package fleet

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	crsv1 "github.com/crsrelay/crs/gen/crs/v1"
)

func creditReq(count int32, limits ...*crsv1.LeaseLimit) *crsv1.AdmitRequest {
	r := acquireReq("", limits...)
	r.GetAcquire().Count = count
	return r
}

// TestAdmitCreditGrants: an acquire with count > 1 on one limit gets extra leases, at most half
// the free slots; with a window, or two limits, it gets none.
func TestAdmitCreditGrants(t *testing.T) {
	st := openStore(t)
	ctx := t.Context()
	require.NoError(t, st.CreateKey(ctx, testKey("k10", func(k *crsv1.ApiKey) { k.ConcurrencyLimit = 10 })))
	require.NoError(t, st.CreateKey(ctx, testKey("k2", func(k *crsv1.ApiKey) { k.ConcurrencyLimit = 100 })))
	require.NoError(t, st.CreateAccount(ctx, testAccount("a1", func(a *crsv1.Account) { a.MaxConcurrency = 100 })))
	h, l := startLimited(t, st, nil)
	a := h.admit(t)

	// 1 granted, 9 free: 4 extra (half of the free slots, rounded down), not the 7 asked.
	r := a.do(t, creditReq(8, keyLim("k10", 10)))
	requireGrant(t, r)
	require.Len(t, r.GetExtraLeaseIds(), 4)
	require.Equal(t, 5, leasesOn(t, h, l, "key", "k10"))
	// 5 held, 4 free after the first: 2 extra.
	r = a.do(t, creditReq(8, keyLim("k10", 10)))
	requireGrant(t, r)
	require.Len(t, r.GetExtraLeaseIds(), 2)
	seen := map[string]bool{}
	for _, id := range append([]string{r.GetLeaseId()}, r.GetExtraLeaseIds()...) {
		require.False(t, seen[id], "lease ids are unique")
		seen[id] = true
	}
	// count asked is the bound.
	r = a.do(t, creditReq(2, keyLim("k2", 100)))
	requireGrant(t, r)
	require.Len(t, r.GetExtraLeaseIds(), 1)
	// Two limits: no credit.
	r = a.do(t, creditReq(8, keyLim("k2", 100), accLim("a1", 100)))
	requireGrant(t, r)
	require.Empty(t, r.GetExtraLeaseIds())
	// Too large a count is malformed.
	a.send(t, creditReq(maxCredit+1, keyLim("k2", 100)))
	_, err := a.recv(t)
	require.Error(t, err)
}

// TestAdmitCreditReclaim: a worker sits on unused credit of a limit another worker needs. The
// refused acquire makes the control plane reclaim the credit: the holder is told (seq 0,
// reclaim set, cooldown in ttl), gives its unused leases back, and the waiting acquire is
// granted instead of refused. During the cooldown no credit is granted on that limit.
func TestAdmitCreditReclaim(t *testing.T) {
	st := openStore(t)
	require.NoError(t, st.CreateKey(t.Context(), testKey("k3", func(k *crsv1.ApiKey) { k.ConcurrencyLimit = 3 })))
	h, l := startLimited(t, st, nil)
	holder, other := h.admit(t), h.admit(t)

	r := holder.do(t, creditReq(4, keyLim("k3", 3)))
	requireGrant(t, r)
	require.Len(t, r.GetExtraLeaseIds(), 1, "(3-1)/2 free slots")
	unused := r.GetExtraLeaseIds()[0]
	requireGrant(t, other.acquire(t, "", keyLim("k3", 3)))
	require.Equal(t, 3, leasesOn(t, h, l, "key", "k3"))

	// The limit is full, one slot of it unused credit of holder's.
	seq := other.send(t, acquireReq("", keyLim("k3", 3)))
	rc, err := holder.recv(t)
	require.NoError(t, err)
	require.Zero(t, rc.GetSeq(), "a reclaim is sent unasked")
	require.Equal(t, "key", rc.GetReclaim().GetScope())
	require.Equal(t, "k3", rc.GetReclaim().GetId())
	require.Equal(t, creditCooldown, rc.GetTtl().AsDuration())
	require.True(t, holder.release(t, unused).GetGranted())
	got, err := other.recv(t)
	require.NoError(t, err)
	require.Equal(t, seq, got.GetSeq())
	requireGrant(t, got)

	// Full with nothing to reclaim from: refused at once; and no credit during the cooldown.
	start := time.Now()
	requireRefusal(t, other.acquire(t, "", keyLim("k3", 3)), "key", 3, 3)
	require.Less(t, time.Since(start), reclaimWait, "no wait without credit to reclaim")
	require.True(t, other.release(t, got.GetLeaseId()).GetGranted())
	r = other.do(t, creditReq(4, keyLim("k3", 3)))
	requireGrant(t, r)
	require.Empty(t, r.GetExtraLeaseIds(), "no credit while the limit cools down")
}

// TestAdmitCreditReclaimNotAnswered: a holder that does not give back in time leaves the
// waiting acquire refused after reclaimWait, never granted beyond the limit.
func TestAdmitCreditReclaimNotAnswered(t *testing.T) {
	st := openStore(t)
	require.NoError(t, st.CreateKey(t.Context(), testKey("k3", func(k *crsv1.ApiKey) { k.ConcurrencyLimit = 3 })))
	h, l := startLimited(t, st, nil)
	holder, other := h.admit(t), h.admit(t)
	r := holder.do(t, creditReq(4, keyLim("k3", 3)))
	requireGrant(t, r)
	require.Len(t, r.GetExtraLeaseIds(), 1)
	requireGrant(t, other.acquire(t, "", keyLim("k3", 3)))

	start := time.Now()
	requireRefusal(t, other.acquire(t, "", keyLim("k3", 3)), "key", 3, 3)
	require.GreaterOrEqual(t, time.Since(start), reclaimWait, "waited for the reclaimed credit")
	rc, err := holder.recv(t)
	require.NoError(t, err)
	require.Equal(t, "k3", rc.GetReclaim().GetId())
	require.Equal(t, 3, leasesOn(t, h, l, "key", "k3"))
}
