package storetest

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/crsrelay/crs/controlplane/store"
	crsv1 "github.com/crsrelay/crs/gen/crs/v1"
)

// testReopen writes one record of each kind, closes s, reopens the backend and reads them back.
func testReopen(t *testing.T, s store.Store, reopen func(t *testing.T, closed store.Store) store.Store) {
	key := newKey("k1", "h1", 1)
	require.NoError(t, s.CreateKey(ctx(t), key))
	acc := newAccount("a1", 1)
	require.NoError(t, s.CreateAccount(ctx(t), acc))
	gen, err := s.SwapAccountCredentials(ctx(t), "a1", acc.Generation, []byte("v2"))
	require.NoError(t, err)
	st := &crsv1.AccountStatus{State: "blocked", Reason: "test"}
	require.NoError(t, s.SetAccountStatus(ctx(t), "a1", st))
	group := newGroup("g1", 1)
	require.NoError(t, s.CreateGroup(ctx(t), group))
	settings := &crsv1.Settings{ClaudeCodeOnlyEnabled: true}
	require.NoError(t, s.PutSettings(ctx(t), settings))
	_, err = s.PutSecretIfAbsent(ctx(t), "fleet_token", []byte("tok"))
	require.NoError(t, err)
	recordAll(t, s, u1)
	workerEntry := u4
	workerEntry.key, workerEntry.req = "k-worker", workerID(4096)
	recordAll(t, s, workerEntry)
	requireBind(t, s, "claude", "s1", "a1", time.Hour, false, "a1", true)

	require.NoError(t, s.Close())
	s = reopen(t, s)

	got, err := s.KeyByHash(ctx(t), "h1")
	require.NoError(t, err)
	requireEqual(t, key, got)
	gotAcc, err := s.GetAccount(ctx(t), "a1")
	require.NoError(t, err)
	wantAcc := newAccount("a1", 1)
	wantAcc.Account.Status, wantAcc.SealedCredentials, wantAcc.Generation = st, []byte("v2"), gen
	requireEqual(t, wantAcc, gotAcc)
	gotGroup, err := s.GetGroup(ctx(t), "g1")
	require.NoError(t, err)
	requireEqual(t, group, gotGroup)
	gotSettings, err := s.GetSettings(ctx(t))
	require.NoError(t, err)
	requireEqual(t, settings, gotSettings)
	secret, err := s.GetSecret(ctx(t), "fleet_token")
	require.NoError(t, err)
	require.Equal(t, []byte("tok"), secret)
	rows, err := s.QueryUsage(ctx(t), store.UsageQuery{Scope: "key", ID: "k1", Granularity: "total"})
	require.NoError(t, err)
	requireRows(t, []store.UsageRow{row("total", "", sum(u1))}, rows)
	stored, err := s.RecordUsage(ctx(t), u1.entry())
	require.NoError(t, err)
	require.False(t, stored, "request ids are remembered across reopen")
	stored, err = s.RecordUsage(ctx(t), workerEntry.entry())
	require.NoError(t, err)
	require.False(t, stored, "worker request ids are remembered across reopen")
	requireBind(t, s, "claude", "s1", "a2", time.Hour, false, "a1", false)
}
