package storetest

import (
	"bytes"
	"errors"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/crsrelay/crs/controlplane/store"
	crsv1 "github.com/crsrelay/crs/gen/crs/v1"
)

func newAccount(id string, created int64) *store.Account {
	return &store.Account{
		Account: &crsv1.Account{
			Id:           id,
			Name:         "account " + id,
			Type:         "claude-official",
			Platform:     "claude",
			Priority:     50,
			Schedulable:  proto.Bool(true),
			AccountType:  "shared",
			ModelMapping: map[string]string{"a": "b"},
			// Public part of the credentials: secrets cleared by the caller.
			Credentials: &crsv1.Account_Oauth{Oauth: &crsv1.OAuthCredential{
				ExpiresAt: ts(3600), Scopes: []string{"user:inference"},
			}},
			Status:    &crsv1.AccountStatus{State: "active", ChangedAt: ts(created)},
			CreatedAt: ts(created),
			UpdatedAt: ts(created),
		},
		SealedCredentials: []byte("sealed-" + id),
		Generation:        1,
	}
}

var accountTests = []test{
	{"CreateGet", func(t *testing.T, s store.Store) {
		a := newAccount("a1", 1)
		require.NoError(t, s.CreateAccount(ctx(t), a))
		got, err := s.GetAccount(ctx(t), "a1")
		require.NoError(t, err)
		requireEqual(t, a, got)

		require.ErrorIs(t, s.CreateAccount(ctx(t), newAccount("a1", 2)), store.ErrAlreadyExists)
		got, err = s.GetAccount(ctx(t), "a1")
		require.NoError(t, err)
		requireEqual(t, a, got, "a failed create must not overwrite")
	}},
	{"CreateWithoutStatus", func(t *testing.T, s store.Store) {
		a := newAccount("a1", 1)
		a.Account.Status = nil
		a.Generation = 0
		a.SealedCredentials = nil
		require.NoError(t, s.CreateAccount(ctx(t), a))
		got, err := s.GetAccount(ctx(t), "a1")
		require.NoError(t, err)
		requireEqual(t, a, got)
	}},
	{"UpdateKeepsCredentialsGenerationAndStatus", func(t *testing.T, s store.Store) {
		require.NoError(t, s.CreateAccount(ctx(t), newAccount("a1", 1)))
		st := &crsv1.AccountStatus{State: "rate_limited", Reason: "429", Until: ts(900)}
		require.NoError(t, s.SetAccountStatus(ctx(t), "a1", st))

		upd := newAccount("a1", 1)
		upd.Account.Name = "renamed"
		upd.Account.Priority = 10
		upd.Account.Status = &crsv1.AccountStatus{State: "active"} // ignored
		upd.SealedCredentials = []byte("must be ignored")
		upd.Generation = 99
		require.NoError(t, s.UpdateAccount(ctx(t), upd))

		got, err := s.GetAccount(ctx(t), "a1")
		require.NoError(t, err)
		want := newAccount("a1", 1)
		want.Account.Name = "renamed"
		want.Account.Priority = 10
		want.Account.Status = st
		requireEqual(t, want, got)
	}},
	{"SwapCredentials", func(t *testing.T, s store.Store) {
		require.NoError(t, s.CreateAccount(ctx(t), newAccount("a1", 1)))

		gen, err := s.SwapAccountCredentials(ctx(t), "a1", 1, []byte("v2"))
		require.NoError(t, err)
		require.Equal(t, int64(2), gen)
		got, err := s.GetAccount(ctx(t), "a1")
		require.NoError(t, err)
		require.Equal(t, int64(2), got.Generation)
		require.Equal(t, []byte("v2"), got.SealedCredentials)

		// Stale generation: conflict, nothing changes.
		_, err = s.SwapAccountCredentials(ctx(t), "a1", 1, []byte("stale"))
		require.ErrorIs(t, err, store.ErrConflict)
		got, err = s.GetAccount(ctx(t), "a1")
		require.NoError(t, err)
		require.Equal(t, int64(2), got.Generation)
		require.Equal(t, []byte("v2"), got.SealedCredentials)

		gen, err = s.SwapAccountCredentials(ctx(t), "a1", 2, []byte("v3"))
		require.NoError(t, err)
		require.Equal(t, int64(3), gen)

		// The public part is untouched by swaps.
		want := newAccount("a1", 1)
		want.SealedCredentials, want.Generation = []byte("v3"), 3
		got, err = s.GetAccount(ctx(t), "a1")
		require.NoError(t, err)
		requireEqual(t, want, got)
	}},
	{"ConcurrentSwapOneWins", func(t *testing.T, s store.Store) {
		require.NoError(t, s.CreateAccount(ctx(t), newAccount("a1", 1)))
		const n = 16
		var (
			wg        sync.WaitGroup
			mu        sync.Mutex
			winners   [][]byte
			conflicts int
		)
		for i := range n {
			wg.Go(func() {
				sealed := []byte{byte(i)}
				_, err := s.SwapAccountCredentials(ctx(t), "a1", 1, sealed)
				mu.Lock()
				defer mu.Unlock()
				switch {
				case err == nil:
					winners = append(winners, sealed)
				case errors.Is(err, store.ErrConflict):
					conflicts++
				default:
					t.Errorf("swap %d: unexpected error %v", i, err)
				}
			})
		}
		wg.Wait()
		require.Len(t, winners, 1)
		require.Equal(t, n-1, conflicts)
		got, err := s.GetAccount(ctx(t), "a1")
		require.NoError(t, err)
		require.Equal(t, int64(2), got.Generation)
		require.True(t, bytes.Equal(winners[0], got.SealedCredentials), "stored credentials are the winner's")
	}},
	{"SetStatus", func(t *testing.T, s store.Store) {
		require.NoError(t, s.CreateAccount(ctx(t), newAccount("a1", 1)))
		st := &crsv1.AccountStatus{
			State:              "rate_limited",
			Reason:             "upstream 429",
			Until:              ts(600),
			FamilyLimitedUntil: map[string]*timestamppb.Timestamp{"opus": ts(1200)},
			ChangedAt:          ts(5),
		}
		require.NoError(t, s.SetAccountStatus(ctx(t), "a1", st))
		got, err := s.GetAccount(ctx(t), "a1")
		require.NoError(t, err)
		want := newAccount("a1", 1)
		want.Account.Status = st
		requireEqual(t, want, got)

		list, err := s.ListAccounts(ctx(t))
		require.NoError(t, err)
		require.Len(t, list, 1)
		requireEqual(t, want, list[0], "listed accounts carry their status")

		// Credentials and generation are untouched.
		gen, err := s.SwapAccountCredentials(ctx(t), "a1", 1, []byte("v2"))
		require.NoError(t, err)
		require.Equal(t, int64(2), gen)

		// An empty status is a status; nil clears it.
		require.NoError(t, s.SetAccountStatus(ctx(t), "a1", &crsv1.AccountStatus{}))
		got, err = s.GetAccount(ctx(t), "a1")
		require.NoError(t, err)
		require.NotNil(t, got.Account.GetStatus(), "empty status kept as present")
		require.NoError(t, s.SetAccountStatus(ctx(t), "a1", nil))
		got, err = s.GetAccount(ctx(t), "a1")
		require.NoError(t, err)
		require.Nil(t, got.Account.GetStatus(), "nil status clears it")
		require.Equal(t, "account a1", got.Account.GetName())
	}},
	{"UnknownID", func(t *testing.T, s store.Store) {
		_, err := s.GetAccount(ctx(t), "nope")
		require.ErrorIs(t, err, store.ErrNotFound)
		require.ErrorIs(t, s.UpdateAccount(ctx(t), newAccount("nope", 1)), store.ErrNotFound)
		_, err = s.SwapAccountCredentials(ctx(t), "nope", 0, []byte("x"))
		require.ErrorIs(t, err, store.ErrNotFound)
		require.ErrorIs(t, s.SetAccountStatus(ctx(t), "nope", &crsv1.AccountStatus{State: "active"}), store.ErrNotFound)
		require.ErrorIs(t, s.DeleteAccount(ctx(t), "nope"), store.ErrNotFound)
		// None of them created the account.
		_, err = s.GetAccount(ctx(t), "nope")
		require.ErrorIs(t, err, store.ErrNotFound)
		list, err := s.ListAccounts(ctx(t))
		require.NoError(t, err)
		require.Empty(t, list)
	}},
	{"DeleteAndListOrder", func(t *testing.T, s store.Store) {
		for _, a := range []*store.Account{newAccount("c", 3), newAccount("b", 1), newAccount("a", 1), newAccount("x", 2)} {
			require.NoError(t, s.CreateAccount(ctx(t), a))
		}
		require.NoError(t, s.DeleteAccount(ctx(t), "x"))
		_, err := s.GetAccount(ctx(t), "x")
		require.ErrorIs(t, err, store.ErrNotFound)
		list, err := s.ListAccounts(ctx(t))
		require.NoError(t, err)
		require.Len(t, list, 3)
		for i, want := range []*store.Account{newAccount("a", 1), newAccount("b", 1), newAccount("c", 3)} {
			requireEqual(t, want, list[i])
		}
		// A deleted account's id can be reused, with nothing left of the old one.
		fresh := newAccount("x", 9)
		fresh.Account.Status = nil
		fresh.Generation = 0
		require.NoError(t, s.CreateAccount(ctx(t), fresh))
		got, err := s.GetAccount(ctx(t), "x")
		require.NoError(t, err)
		requireEqual(t, fresh, got)
	}},
}
