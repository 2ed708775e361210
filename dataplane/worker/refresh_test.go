package worker

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/crsrelay/crs/dataplane/snapshot"
	crsv1 "github.com/crsrelay/crs/gen/crs/v1"
)

// fakeRefreshSource is a pushed state the test replaces, and the events reported at once.
type fakeRefreshSource struct {
	st     atomic.Pointer[snapshot.State]
	mu     sync.Mutex
	events []*crsv1.AccountEvent
}

func (f *fakeRefreshSource) ReportEventNow(ev *crsv1.AccountEvent) {
	f.mu.Lock()
	f.events = append(f.events, ev)
	f.mu.Unlock()
}

func (f *fakeRefreshSource) State() *snapshot.State { return f.st.Load() }

func (f *fakeRefreshSource) push(t *testing.T, version uint64, accts ...*crsv1.Account) {
	t.Helper()
	f.st.Store(stateOf(t, version, accts...))
}

func stateOf(t *testing.T, version uint64, accts ...*crsv1.Account) *snapshot.State {
	t.Helper()
	st, err := snapshot.Apply(nil, &crsv1.SyncMessage{Version: version, Body: &crsv1.SyncMessage_Snapshot{
		Snapshot: &crsv1.Snapshot{Accounts: accts}}})
	require.NoError(t, err)
	return st
}

func oauthAccount(token string, gen int64) *crsv1.Account {
	return &crsv1.Account{Id: "a", Type: "claude-official", Credentials: &crsv1.Account_Oauth{
		Oauth: &crsv1.OAuthCredential{AccessToken: token, Generation: gen}}}
}

func TestCredentialWait(t *testing.T) {
	used := oauthAccount("at-old", 3)
	ev := &crsv1.AccountEvent{AccountId: "a", Kind: "unauthorized", RequestId: "r1"}

	t.Run("the pushed renewal is returned as soon as it arrives", func(t *testing.T) {
		src := &fakeRefreshSource{}
		src.push(t, 1, used)
		cw := &credentialWait{src: src, wait: 5 * time.Second, poll: 5 * time.Millisecond}
		next := stateOf(t, 2, oauthAccount("at-new", 4))
		go func() {
			time.Sleep(100 * time.Millisecond)
			src.st.Store(next)
		}()
		start := time.Now()
		got := cw.Refreshed(used, ev)
		require.NotNil(t, got)
		require.Equal(t, "at-new", got.GetOauth().GetAccessToken())
		require.Less(t, time.Since(start), 2*time.Second)
		src.mu.Lock()
		defer src.mu.Unlock()
		require.Equal(t, []*crsv1.AccountEvent{ev}, src.events, "reported before waiting")
	})
	t.Run("nothing renewed in time: nil after the wait", func(t *testing.T) {
		src := &fakeRefreshSource{}
		src.push(t, 1, used)
		cw := &credentialWait{src: src, wait: 150 * time.Millisecond, poll: 5 * time.Millisecond}
		start := time.Now()
		require.Nil(t, cw.Refreshed(used, ev))
		require.GreaterOrEqual(t, time.Since(start), 150*time.Millisecond)
		require.Less(t, time.Since(start), time.Second)
		require.Len(t, src.events, 1)
	})
	t.Run("no state yet: nil after the wait", func(t *testing.T) {
		src := &fakeRefreshSource{}
		cw := &credentialWait{src: src, wait: 50 * time.Millisecond, poll: 5 * time.Millisecond}
		require.Nil(t, cw.Refreshed(used, ev))
	})
}

func TestRenewed(t *testing.T) {
	used := oauthAccount("at-old", 3)
	tests := []struct {
		name string
		cur  *crsv1.Account
		want bool
	}{
		{"same credential", oauthAccount("at-old", 3), false},
		{"higher generation", oauthAccount("at-old", 4), true},
		{"another token", oauthAccount("at-new", 3), true},
		{"no token", oauthAccount("", 9), false},
		{"no oauth", &crsv1.Account{Id: "a"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			require.Equal(t, tt.want, renewed(tt.cur, used))
		})
	}
}
