package redisstore

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"

	"github.com/redis/go-redis/v9"
	"google.golang.org/protobuf/proto"

	"github.com/crsrelay/crs/controlplane/store"
	"github.com/crsrelay/crs/controlplane/store/internal/records"
	crsv1 "github.com/crsrelay/crs/gen/crs/v1"
)

var accountFields = []string{"pb", "sealed", "gen", "status"}

// CreateAccount implements [store.Store.CreateAccount].
func (s *Store) CreateAccount(ctx context.Context, a *store.Account) error {
	if err := records.CheckAccount(a); err != nil {
		return err
	}
	id := a.Account.GetId()
	pb, err := records.EncodePublic(a.Account)
	if err != nil {
		return err
	}
	hasStatus, status := "0", []byte(nil)
	if st := a.Account.GetStatus(); st != nil {
		if status, err = proto.Marshal(st); err != nil {
			return fmt.Errorf("encode account %s status: %w", id, err)
		}
		hasStatus = "1"
	}
	return s.runScript(ctx, createAccountScript, "create account "+id,
		[]string{accountPrefix + id, accountsSet},
		id, pb, a.SealedCredentials, strconv.FormatInt(a.Generation, 10), hasStatus, status,
		changePayload(store.KindAccount, id))
}

// GetAccount implements [store.Store.GetAccount].
func (s *Store) GetAccount(ctx context.Context, id string) (*store.Account, error) {
	vals, err := s.rdb.HMGet(ctx, accountPrefix+id, accountFields...).Result()
	if err != nil {
		return nil, fmt.Errorf("get account %s: %w", id, err)
	}
	return decodeAccount(id, vals)
}

// UpdateAccount implements [store.Store.UpdateAccount]: it writes only the pb field, so the
// credentials, generation and status are kept.
func (s *Store) UpdateAccount(ctx context.Context, a *store.Account) error {
	if err := records.CheckAccount(a); err != nil {
		return err
	}
	id := a.Account.GetId()
	pb, err := records.EncodePublic(a.Account)
	if err != nil {
		return err
	}
	return s.runScript(ctx, setFieldScript, "update account "+id,
		[]string{accountPrefix + id}, "pb", pb, changePayload(store.KindAccount, id))
}

// SwapAccountCredentials implements [store.Store.SwapAccountCredentials].
func (s *Store) SwapAccountCredentials(ctx context.Context, id string, wantGeneration int64, sealed []byte) (int64, error) {
	next := wantGeneration + 1
	err := s.runScript(ctx, swapCredentialsScript, "swap account "+id+" credentials",
		[]string{accountPrefix + id},
		strconv.FormatInt(wantGeneration, 10), strconv.FormatInt(next, 10), sealed,
		changePayload(store.KindAccount, id))
	if err != nil {
		return 0, err
	}
	return next, nil
}

// SetAccountStatus implements [store.Store.SetAccountStatus]: it writes only the status field.
// A nil st clears the status.
func (s *Store) SetAccountStatus(ctx context.Context, id string, st *crsv1.AccountStatus) error {
	key, change := accountPrefix+id, changePayload(store.KindAccount, id)
	if st == nil {
		return s.runScript(ctx, delFieldScript, "set account "+id+" status", []string{key}, "status", change)
	}
	status, err := proto.Marshal(st)
	if err != nil {
		return fmt.Errorf("encode account %s status: %w", id, err)
	}
	return s.runScript(ctx, setFieldScript, "set account "+id+" status", []string{key}, "status", status, change)
}

// DeleteAccount implements [store.Store.DeleteAccount].
func (s *Store) DeleteAccount(ctx context.Context, id string) error {
	return s.runScript(ctx, deleteRecordScript, "delete account "+id,
		[]string{accountPrefix + id, accountsSet}, id, changePayload(store.KindAccount, id))
}

// ListAccounts implements [store.Store.ListAccounts].
func (s *Store) ListAccounts(ctx context.Context) ([]*store.Account, error) {
	ids, err := s.rdb.SMembers(ctx, accountsSet).Result()
	if err != nil {
		return nil, fmt.Errorf("list accounts: %w", err)
	}
	pipe := s.rdb.Pipeline()
	cmds := make([]*redis.SliceCmd, len(ids))
	for i, id := range ids {
		cmds[i] = pipe.HMGet(ctx, accountPrefix+id, accountFields...)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, fmt.Errorf("list accounts: %w", err)
	}
	out := make([]*store.Account, 0, len(ids))
	for i, c := range cmds {
		a, err := decodeAccount(ids[i], c.Val())
		if isNotFound(err) {
			continue // deleted since SMEMBERS
		}
		if err != nil {
			return nil, fmt.Errorf("list accounts: %w", err)
		}
		out = append(out, a)
	}
	slices.SortFunc(out, func(a, b *store.Account) int {
		return records.CompareCreated(a.Account.GetCreatedAt(), a.Account.GetId(), b.Account.GetCreatedAt(), b.Account.GetId())
	})
	return out, nil
}

// decodeAccount decodes HMGET pb sealed gen status.
func decodeAccount(id string, vals []any) (*store.Account, error) {
	pb, ok := vals[0].(string)
	if !ok {
		return nil, fmt.Errorf("account %s: %w", id, store.ErrNotFound)
	}
	var acc crsv1.Account
	if err := proto.Unmarshal([]byte(pb), &acc); err != nil {
		return nil, fmt.Errorf("decode account %s: %w", id, err)
	}
	a := &store.Account{Account: &acc}
	if sealed, ok := vals[1].(string); ok {
		a.SealedCredentials = []byte(sealed)
	}
	if gen, ok := vals[2].(string); ok {
		g, err := strconv.ParseInt(gen, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("decode account %s generation: %w", id, err)
		}
		a.Generation = g
	}
	if status, ok := vals[3].(string); ok {
		var st crsv1.AccountStatus
		if err := proto.Unmarshal([]byte(status), &st); err != nil {
			return nil, fmt.Errorf("decode account %s status: %w", id, err)
		}
		acc.Status = &st
	}
	return a, nil
}

func isNotFound(err error) bool { return errors.Is(err, store.ErrNotFound) }
