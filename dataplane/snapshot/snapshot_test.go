package snapshot

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	crsv1 "github.com/crsrelay/crs/gen/crs/v1"
)

func wk(id, hash string) *crsv1.WorkerKey {
	return &crsv1.WorkerKey{Hash: hash, Key: &crsv1.ApiKey{Id: id, Name: "key " + id, IsActive: true}}
}

func acct(id, typ string) *crsv1.Account {
	return &crsv1.Account{Id: id, Type: typ, Name: "account " + id}
}

func snapMsg(version uint64, s *crsv1.Snapshot) *crsv1.SyncMessage {
	return &crsv1.SyncMessage{Version: version, Body: &crsv1.SyncMessage_Snapshot{Snapshot: s}}
}

func deltaMsg(version uint64, d *crsv1.Delta) *crsv1.SyncMessage {
	return &crsv1.SyncMessage{Version: version, Body: &crsv1.SyncMessage_Delta{Delta: d}}
}

func baseSnapshot() *crsv1.SyncMessage {
	return snapMsg(10, &crsv1.Snapshot{
		Keys:     []*crsv1.WorkerKey{wk("k1", "h1"), wk("k2", "h2")},
		Accounts: []*crsv1.Account{acct("b", TypeClaudeConsole), acct("a", TypeClaudeOfficial), acct("c", TypeClaudeOfficial)},
		Groups:   []*crsv1.AccountGroup{{Id: "g1", Platform: "claude", AccountIds: []string{"a", "c"}}},
		Settings: &crsv1.Settings{StickySessionTtl: durationpb.New(time.Hour)},
		Hashing:  &crsv1.KeyHashing{HmacSecret: []byte("secret"), LegacySecret: "legacy"},
		KeyUsage: []*crsv1.KeyUsageState{{KeyId: "k1", DailyCost: 1.5}},
	})
}

func ids(as []*crsv1.Account) []string {
	out := make([]string, len(as))
	for i, a := range as {
		out[i] = a.GetId()
	}
	return out
}

func TestApplySnapshot(t *testing.T) {
	s, err := Apply(nil, baseSnapshot())
	require.NoError(t, err)
	require.Equal(t, uint64(10), s.Version())
	require.Equal(t, "k1", s.KeyByHash("h1").GetId())
	require.Equal(t, "k2", s.KeyByHashBytes([]byte("h2")).GetId())
	require.Nil(t, s.KeyByHash("nope"))
	require.Equal(t, 2, s.KeyCount())
	require.Equal(t, []string{"a", "b", "c"}, ids(s.Accounts()))
	require.Equal(t, []string{"a", "c"}, ids(s.AccountsOfType(TypeClaudeOfficial)))
	require.Equal(t, []string{"b"}, ids(s.AccountsOfType(TypeClaudeConsole)))
	require.Equal(t, "g1", s.Group("g1").GetId())
	require.Equal(t, time.Hour, s.Settings().GetStickySessionTtl().AsDuration())
	require.Equal(t, []byte("secret"), s.HMACSecret())
	require.Equal(t, "legacy", s.LegacySecret())
	require.InDelta(t, 1.5, s.KeyUsage("k1").GetDailyCost(), 1e-9)
	require.Nil(t, s.KeyUsage("k2"))

	// A second snapshot replaces everything.
	s2, err := Apply(s, snapMsg(3, &crsv1.Snapshot{Keys: []*crsv1.WorkerKey{wk("k9", "h9")}}))
	require.NoError(t, err)
	require.Equal(t, uint64(3), s2.Version())
	require.Nil(t, s2.KeyByHash("h1"))
	require.Equal(t, "k9", s2.KeyByHash("h9").GetId())
	require.Empty(t, s2.Accounts())
	require.NotNil(t, s2.Settings(), "settings never nil")
	require.Empty(t, s2.HMACSecret())
}

func TestApplyDelta(t *testing.T) {
	base, err := Apply(nil, baseSnapshot())
	require.NoError(t, err)

	tests := []struct {
		name  string
		delta *crsv1.Delta
		check func(t *testing.T, s *State)
	}{
		{
			name:  "upsert new key",
			delta: &crsv1.Delta{BaseVersion: 10, UpsertKeys: []*crsv1.WorkerKey{wk("k3", "h3")}},
			check: func(t *testing.T, s *State) {
				require.Equal(t, "k3", s.KeyByHash("h3").GetId())
				require.Equal(t, "k1", s.KeyByHash("h1").GetId())
			},
		},
		{
			name:  "regenerated key loses its old hash",
			delta: &crsv1.Delta{BaseVersion: 10, UpsertKeys: []*crsv1.WorkerKey{wk("k1", "h1new")}},
			check: func(t *testing.T, s *State) {
				require.Nil(t, s.KeyByHash("h1"))
				require.Equal(t, "k1", s.KeyByHash("h1new").GetId())
				require.Equal(t, 2, s.KeyCount())
			},
		},
		{
			name:  "delete key and its usage",
			delta: &crsv1.Delta{BaseVersion: 10, DeleteKeyIds: []string{"k1", "unknown"}},
			check: func(t *testing.T, s *State) {
				require.Nil(t, s.KeyByHash("h1"))
				require.Nil(t, s.KeyUsage("k1"))
				require.Equal(t, 1, s.KeyCount())
			},
		},
		{
			name: "accounts upsert and delete reindex",
			delta: &crsv1.Delta{
				BaseVersion:      10,
				UpsertAccounts:   []*crsv1.Account{acct("0", TypeClaudeOfficial), {Id: "b", Type: TypeClaudeConsole, Priority: 7}},
				DeleteAccountIds: []string{"c"},
			},
			check: func(t *testing.T, s *State) {
				require.Equal(t, []string{"0", "a", "b"}, ids(s.Accounts()))
				require.Equal(t, []string{"0", "a"}, ids(s.AccountsOfType(TypeClaudeOfficial)))
				require.Equal(t, int32(7), s.Account("b").GetPriority())
				require.Nil(t, s.Account("c"))
			},
		},
		{
			name: "groups, settings and key usage",
			delta: &crsv1.Delta{
				BaseVersion:    10,
				UpsertGroups:   []*crsv1.AccountGroup{{Id: "g2"}},
				DeleteGroupIds: []string{"g1"},
				Settings:       &crsv1.Settings{ClaudeCodeOnlyEnabled: true},
				KeyUsage:       []*crsv1.KeyUsageState{{KeyId: "k2", TotalCost: 9}},
			},
			check: func(t *testing.T, s *State) {
				require.Nil(t, s.Group("g1"))
				require.NotNil(t, s.Group("g2"))
				require.True(t, s.Settings().GetClaudeCodeOnlyEnabled())
				require.InDelta(t, 9.0, s.KeyUsage("k2").GetTotalCost(), 1e-9)
				require.InDelta(t, 1.5, s.KeyUsage("k1").GetDailyCost(), 1e-9)
			},
		},
		{
			name:  "delta without settings keeps them",
			delta: &crsv1.Delta{BaseVersion: 10},
			check: func(t *testing.T, s *State) {
				require.Equal(t, time.Hour, s.Settings().GetStickySessionTtl().AsDuration())
				require.Equal(t, []byte("secret"), s.HMACSecret())
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			next, err := Apply(base, deltaMsg(11, tt.delta))
			require.NoError(t, err)
			require.Equal(t, uint64(11), next.Version())
			tt.check(t, next)

			// The base state is untouched.
			require.Equal(t, uint64(10), base.Version())
			require.Equal(t, "k1", base.KeyByHash("h1").GetId())
			require.Equal(t, 2, base.KeyCount())
			require.Equal(t, []string{"a", "b", "c"}, ids(base.Accounts()))
			require.NotNil(t, base.Group("g1"))
			require.False(t, base.Settings().GetClaudeCodeOnlyEnabled())
			require.Nil(t, base.KeyUsage("k2"))
		})
	}
}

func TestApplyErrors(t *testing.T) {
	base, err := Apply(nil, baseSnapshot())
	require.NoError(t, err)
	tests := []struct {
		name string
		cur  *State
		msg  *crsv1.SyncMessage
		want error
	}{
		{"delta before snapshot", nil, deltaMsg(2, &crsv1.Delta{BaseVersion: 1}), ErrGap},
		{"delta skips a version", base, deltaMsg(12, &crsv1.Delta{BaseVersion: 11}), ErrGap},
		{"delta on an older base", base, deltaMsg(10, &crsv1.Delta{BaseVersion: 9}), ErrGap},
		{"empty message", base, &crsv1.SyncMessage{Version: 11}, ErrEmptyMessage},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Apply(tt.cur, tt.msg)
			require.ErrorIs(t, err, tt.want)
		})
	}
}

func TestHolder(t *testing.T) {
	var h Holder
	require.Nil(t, h.Load())
	_, err := h.Apply(deltaMsg(1, &crsv1.Delta{}))
	require.ErrorIs(t, err, ErrGap)
	require.Nil(t, h.Load())

	s, err := h.Apply(baseSnapshot())
	require.NoError(t, err)
	require.Same(t, s, h.Load())

	_, err = h.Apply(deltaMsg(13, &crsv1.Delta{BaseVersion: 12}))
	require.ErrorIs(t, err, ErrGap)
	require.Same(t, s, h.Load(), "a failed apply keeps the current state")

	s2, err := h.Apply(deltaMsg(11, &crsv1.Delta{BaseVersion: 10}))
	require.NoError(t, err)
	require.Same(t, s2, h.Load())
}

func TestAccountActive(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct {
		name   string
		status *crsv1.AccountStatus
		want   bool
	}{
		{"no status", nil, true},
		{"empty state", &crsv1.AccountStatus{}, true},
		{"active", &crsv1.AccountStatus{State: "active"}, true},
		{"rate limited, no end", &crsv1.AccountStatus{State: "rate_limited"}, false},
		{"rate limited until future", &crsv1.AccountStatus{State: "rate_limited", Until: timestamppb.New(now.Add(time.Minute))}, false},
		{"rate limited until past", &crsv1.AccountStatus{State: "rate_limited", Until: timestamppb.New(now.Add(-time.Minute))}, true},
		{"blocked", &crsv1.AccountStatus{State: "blocked"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			require.Equal(t, tt.want, AccountActive(&crsv1.Account{Status: tt.status}, now))
		})
	}
}
