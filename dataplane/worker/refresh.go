package worker

import (
	"time"

	"github.com/crsrelay/crs/dataplane/relay"
	"github.com/crsrelay/crs/dataplane/snapshot"
	crsv1 "github.com/crsrelay/crs/gen/crs/v1"
)

// Defaults of the wait for a renewed credential after a 401 (Options.RefreshWait).
const (
	DefaultRefreshWait = 5 * time.Second
	refreshPoll        = 20 * time.Millisecond
)

// refreshSource is what the credential wait needs of the fleet client.
type refreshSource interface {
	ReportEventNow(*crsv1.AccountEvent)
	State() *snapshot.State
}

// credentialWait is the relay's Refresher (issue 5, "Refresh"): a 401 from an OAuth account is
// reported at once, the control plane refreshes the token and pushes it, and the request waits
// (up to wait) for the pushed account to retry it once.
type credentialWait struct {
	src        refreshSource
	wait, poll time.Duration
}

var _ relay.Refresher = (*credentialWait)(nil)

// Refreshed implements [relay.Refresher]: it reports ev urgently, then watches the pushed state
// for acct with a newer credential until wait has passed.
func (cw *credentialWait) Refreshed(acct *crsv1.Account, ev *crsv1.AccountEvent) *crsv1.Account {
	cw.src.ReportEventNow(ev)
	deadline := time.Now().Add(cw.wait)
	for {
		if st := cw.src.State(); st != nil {
			if a := st.Account(acct.GetId()); a != nil && renewed(a, acct) {
				return a
			}
		}
		left := time.Until(deadline)
		if left <= 0 {
			return nil
		}
		time.Sleep(min(cw.poll, left))
	}
}

// renewed reports whether cur holds a newer OAuth credential than used: a higher generation, or
// another access token (credentials written without generations).
func renewed(cur, used *crsv1.Account) bool {
	c, u := cur.GetOauth(), used.GetOauth()
	if c == nil || c.GetAccessToken() == "" {
		return false
	}
	return c.GetGeneration() > u.GetGeneration() || c.GetAccessToken() != u.GetAccessToken()
}
