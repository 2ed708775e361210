//go:build !race

package worker

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/valyala/fasthttp"
	"go.uber.org/zap"

	"github.com/crsrelay/crs/dataplane/auth"
	"github.com/crsrelay/crs/dataplane/relay"
	"github.com/crsrelay/crs/dataplane/sched"
	"github.com/crsrelay/crs/dataplane/snapshot"
	crsv1 "github.com/crsrelay/crs/gen/crs/v1"
)

// TestUnlimitedKeyAdmissionAllocs pins what limits cost a key that has none (in a fleet without
// account limits): the policy says it does not apply, admission returns nothing, the candidates
// are the scheduler's own — no allocation and no Admit call (the race detector's
// instrumentation allocates, hence the build tag).
func TestUnlimitedKeyAdmissionAllocs(t *testing.T) {
	fa := newFakeAdmitter()
	w := &Worker{
		adm:    newAdmissions(Options{Admitter: fa, Now: time.Now}, zap.NewNop()),
		policy: auth.NewPolicy(auth.PolicyOptions{TZOffsetHours: 8}),
	}
	k := &crsv1.ApiKey{Id: "k", IsActive: true, TokenLimit: 100} // token_limit without a window is no limit
	st, err := snapshot.Apply(nil, &crsv1.SyncMessage{Version: 1, Body: &crsv1.SyncMessage_Snapshot{Snapshot: &crsv1.Snapshot{
		Keys:     []*crsv1.WorkerKey{{Hash: "h", Key: k}},
		Accounts: []*crsv1.Account{{Id: "a", Type: "claude-official"}},
	}}})
	require.NoError(t, err)
	var ctx fasthttp.RequestCtx
	c := &call{id: "r", key: k, state: st}
	sel := &sched.Selection{}
	allocs := testing.AllocsPerRun(200, func() {
		if w.policy.Applies(k, st) {
			t.Fatal("policy applies")
		}
		ad, ok := w.admit(&ctx, c, false)
		if !ok || ad != nil {
			t.Fatal("admitted with state")
		}
		cands, err := ad.candidates(sel)
		if err != nil || cands != relay.Candidates(sel) {
			t.Fatal("candidates changed")
		}
		ad.release()
	})
	require.Zero(t, allocs)
	require.Zero(t, fa.calls())
	require.Nil(t, c.relayDone)
}
