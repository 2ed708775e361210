package fleetclient

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/types/known/durationpb"

	crsv1 "github.com/crsrelay/crs/gen/crs/v1"
)

func keyAcquire(reqID string, limit int32) *crsv1.LeaseAcquire {
	return &crsv1.LeaseAcquire{RequestId: reqID, Limits: []*crsv1.LeaseLimit{keyLimit("k", limit)}}
}

func (f *admitFake) acquireCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.acquires
}

func (f *admitFake) lastCount() int32 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.counts[len(f.counts)-1]
}

// TestCreditAdmitsWithoutRoundTrip: the first acquire asks for credit; the extra leases, and the
// leases finished requests give back, admit the next requests without a message; credit left
// unused for a trim period goes back to the control plane.
func TestCreditAdmitsWithoutRoundTrip(t *testing.T) {
	f := startAdmitFake(t, time.Minute)
	f.credit = true
	a := newAdmitter(t, f.addr, AdmitOptions{})
	ctx := context.Background()

	r, err := a.Acquire(ctx, keyAcquire("r0", 10))
	require.NoError(t, err)
	require.True(t, r.GetGranted())
	require.Equal(t, int32(2), f.lastCount(), "asks for one more than in use")
	require.Equal(t, 2, f.held(RefusedKey, "k"))
	first := r.GetLeaseId()

	// The extra lease serves the next request, and a released one the one after: no messages.
	r, err = a.Acquire(ctx, keyAcquire("r1", 10))
	require.NoError(t, err)
	require.Equal(t, "lease-r0-x0", r.GetLeaseId())
	a.Release(first)
	r2, err := a.Acquire(ctx, keyAcquire("r2", 10))
	require.NoError(t, err)
	require.Equal(t, first, r2.GetLeaseId(), "the lease given back admits the next request")
	require.Equal(t, 1, f.acquireCount(), "one round trip for three requests")
	require.Equal(t, 2, f.held(RefusedKey, "k"))
	require.Zero(t, f.releaseCount(first), "kept as credit, not released")

	// A third in flight needs a new lease; it asks for credit sized to what is in use.
	r3, err := a.Acquire(ctx, keyAcquire("r3", 10))
	require.NoError(t, err)
	require.Equal(t, "lease-r3", r3.GetLeaseId())
	require.Equal(t, int32(3), f.lastCount())
	require.Equal(t, 5, f.held(RefusedKey, "k"), "3 in use + 2 credit")

	// Requests end; after a trim period without use their leases go back.
	a.Release(r.GetLeaseId(), r2.GetLeaseId(), r3.GetLeaseId())
	require.Eventually(t, func() bool { return f.held(RefusedKey, "k") == 0 }, 2*time.Second, 5*time.Millisecond)
	require.Equal(t, 0, a.Held())
	require.Equal(t, 1, f.releaseCount(first))
}

// TestCreditNeverExceedsTheLimit: with credit, the leases in use and kept never pass the limit
// the control plane enforces; a refusal is passed to the caller.
func TestCreditNeverExceedsTheLimit(t *testing.T) {
	f := startAdmitFake(t, time.Minute)
	f.credit = true
	a := newAdmitter(t, f.addr, AdmitOptions{})
	ctx := context.Background()
	var leases []string
	for i := range 3 {
		r, err := a.Acquire(ctx, keyAcquire(fmt.Sprint("r", i), 3))
		require.NoError(t, err)
		require.True(t, r.GetGranted(), "acquire %d", i)
		leases = append(leases, r.GetLeaseId())
	}
	require.Len(t, map[string]bool{leases[0]: true, leases[1]: true, leases[2]: true}, 3)
	r, err := a.Acquire(ctx, keyAcquire("r3", 3))
	require.NoError(t, err)
	require.False(t, r.GetGranted())
	require.Equal(t, RefusedKey, r.GetRefusedScope())
	require.Equal(t, 3, f.held(RefusedKey, "k"))
}

// TestCreditReclaim: a reclaim gives the unused credit back at once; during the cooldown the
// pool asks for no credit and releases leases as requests end.
func TestCreditReclaim(t *testing.T) {
	f := startAdmitFake(t, time.Minute)
	f.credit = true
	a := newAdmitter(t, f.addr, AdmitOptions{})
	ctx := context.Background()
	r, err := a.Acquire(ctx, keyAcquire("r0", 10))
	require.NoError(t, err)
	require.Equal(t, 2, f.held(RefusedKey, "k"), "one in use, one credit")

	f.mu.Lock()
	push := f.push
	f.mu.Unlock()
	require.NoError(t, push(&crsv1.AdmitResponse{Reclaim: &crsv1.LeaseLimit{Scope: RefusedKey, Id: "k"}, Ttl: durationpb.New(time.Minute)}))
	require.Eventually(t, func() bool { return f.releaseCount("lease-r0-x0") == 1 }, time.Second, time.Millisecond,
		"unused credit released on reclaim")
	require.Equal(t, 1, f.held(RefusedKey, "k"), "the lease in use stays")

	r1, err := a.Acquire(ctx, keyAcquire("r1", 10))
	require.NoError(t, err)
	require.True(t, r1.GetGranted())
	require.Equal(t, int32(1), f.lastCount(), "no credit asked during the cooldown")
	a.Release(r.GetLeaseId(), r1.GetLeaseId())
	require.Eventually(t, func() bool { return f.held(RefusedKey, "k") == 0 }, time.Second, time.Millisecond)
	require.Less(t, f.acquireCount(), 3)
}

// TestCreditGoesBackOnClose: closing the Admitter releases the unused credit at once.
func TestCreditGoesBackOnClose(t *testing.T) {
	f := startAdmitFake(t, time.Minute)
	f.credit = true
	c, err := New(Options{Addr: f.addr, Token: token, MinBackoff: 20 * time.Millisecond, MaxBackoff: 100 * time.Millisecond})
	require.NoError(t, err)
	defer c.Close()
	a := NewAdmitter(c, AdmitOptions{})
	r, err := a.Acquire(context.Background(), keyAcquire("r0", 10))
	require.NoError(t, err)
	a.Release(r.GetLeaseId())
	require.Equal(t, 2, f.held(RefusedKey, "k"))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	require.NoError(t, a.Close(ctx))
	require.Equal(t, 0, f.held(RefusedKey, "k"))
}
