package embedded

import (
	"bytes"
	"context"
	"fmt"
	"slices"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"

	"github.com/crsrelay/crs/controlplane/store"
	"github.com/crsrelay/crs/controlplane/store/internal/records"
	crsv1 "github.com/crsrelay/crs/gen/crs/v1"
)

// CreateAccount implements [store.Store.CreateAccount].
func (s *Store) CreateAccount(ctx context.Context, a *store.Account) error {
	if err := records.CheckAccount(a); err != nil {
		return err
	}
	id := a.Account.GetId()
	msg, err := records.EncodePublic(a.Account)
	if err != nil {
		return err
	}
	status, err := encodeStatus(id, a.Account.GetStatus())
	if err != nil {
		return err
	}
	rec := envelope{msg: msg, extra: a.SealedCredentials, generation: a.Generation}.marshal()
	return s.update(ctx, func(tx *bolt.Tx, ch *changes) error {
		accounts := tx.Bucket(bucketAccounts)
		if accounts.Get([]byte(id)) != nil {
			return fmt.Errorf("create account %s: %w", id, store.ErrAlreadyExists)
		}
		if err := accounts.Put([]byte(id), rec); err != nil {
			return fmt.Errorf("create account %s: %w", id, err)
		}
		if status != nil {
			if err := tx.Bucket(bucketAccountStatus).Put([]byte(id), status); err != nil {
				return fmt.Errorf("create account %s: %w", id, err)
			}
		}
		ch.add(store.KindAccount, id)
		return nil
	})
}

// GetAccount implements [store.Store.GetAccount].
func (s *Store) GetAccount(ctx context.Context, id string) (*store.Account, error) {
	var a *store.Account
	err := s.view(ctx, func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketAccounts).Get([]byte(id))
		if v == nil {
			return fmt.Errorf("account %s: %w", id, store.ErrNotFound)
		}
		var err error
		a, err = decodeAccount(tx, id, v)
		return err
	})
	return a, err
}

// UpdateAccount implements [store.Store.UpdateAccount]. It keeps the stored credentials,
// generation and status.
func (s *Store) UpdateAccount(ctx context.Context, a *store.Account) error {
	if err := records.CheckAccount(a); err != nil {
		return err
	}
	id := a.Account.GetId()
	msg, err := records.EncodePublic(a.Account)
	if err != nil {
		return err
	}
	return s.modifyAccount(ctx, id, func(env *envelope) error {
		env.msg = msg
		return nil
	})
}

// SwapAccountCredentials implements [store.Store.SwapAccountCredentials].
func (s *Store) SwapAccountCredentials(ctx context.Context, id string, wantGeneration int64, sealed []byte) (int64, error) {
	sealed = bytes.Clone(sealed)
	err := s.modifyAccount(ctx, id, func(env *envelope) error {
		if env.generation != wantGeneration {
			return fmt.Errorf("swap account %s credentials: generation is %d, not %d: %w",
				id, env.generation, wantGeneration, store.ErrConflict)
		}
		env.extra, env.generation = sealed, wantGeneration+1
		return nil
	})
	if err != nil {
		return 0, err
	}
	return wantGeneration + 1, nil
}

// SetAccountStatus implements [store.Store.SetAccountStatus]: it writes only the account_status
// entry. A nil st clears the status.
func (s *Store) SetAccountStatus(ctx context.Context, id string, st *crsv1.AccountStatus) error {
	status, err := encodeStatus(id, st)
	if err != nil {
		return err
	}
	return s.update(ctx, func(tx *bolt.Tx, ch *changes) error {
		if tx.Bucket(bucketAccounts).Get([]byte(id)) == nil {
			return fmt.Errorf("set account status: account %s: %w", id, store.ErrNotFound)
		}
		b := tx.Bucket(bucketAccountStatus)
		var err error
		if status == nil {
			err = b.Delete([]byte(id))
		} else {
			err = b.Put([]byte(id), status)
		}
		if err != nil {
			return fmt.Errorf("set account %s status: %w", id, err)
		}
		ch.add(store.KindAccount, id)
		return nil
	})
}

// DeleteAccount implements [store.Store.DeleteAccount].
func (s *Store) DeleteAccount(ctx context.Context, id string) error {
	return s.update(ctx, func(tx *bolt.Tx, ch *changes) error {
		accounts := tx.Bucket(bucketAccounts)
		if accounts.Get([]byte(id)) == nil {
			return fmt.Errorf("delete account %s: %w", id, store.ErrNotFound)
		}
		if err := accounts.Delete([]byte(id)); err != nil {
			return fmt.Errorf("delete account %s: %w", id, err)
		}
		if err := tx.Bucket(bucketAccountStatus).Delete([]byte(id)); err != nil {
			return fmt.Errorf("delete account %s: %w", id, err)
		}
		ch.add(store.KindAccount, id)
		return nil
	})
}

// ListAccounts implements [store.Store.ListAccounts].
func (s *Store) ListAccounts(ctx context.Context) ([]*store.Account, error) {
	var out []*store.Account
	err := s.view(ctx, func(tx *bolt.Tx) error {
		return tx.Bucket(bucketAccounts).ForEach(func(id, v []byte) error {
			a, err := decodeAccount(tx, string(id), v)
			if err != nil {
				return fmt.Errorf("list accounts: %w", err)
			}
			out = append(out, a)
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	slices.SortFunc(out, func(a, b *store.Account) int {
		return records.CompareCreated(a.Account.GetCreatedAt(), a.Account.GetId(), b.Account.GetCreatedAt(), b.Account.GetId())
	})
	return out, nil
}

// modifyAccount rewrites the account envelope of id with fn, in one transaction.
func (s *Store) modifyAccount(ctx context.Context, id string, fn func(*envelope) error) error {
	return s.update(ctx, func(tx *bolt.Tx, ch *changes) error {
		accounts := tx.Bucket(bucketAccounts)
		v := accounts.Get([]byte(id))
		if v == nil {
			return fmt.Errorf("account %s: %w", id, store.ErrNotFound)
		}
		env, err := unmarshalEnvelope(v)
		if err != nil {
			return fmt.Errorf("account %s: %w", id, err)
		}
		if err := fn(&env); err != nil {
			return err
		}
		if err := accounts.Put([]byte(id), env.marshal()); err != nil {
			return fmt.Errorf("write account %s: %w", id, err)
		}
		ch.add(store.KindAccount, id)
		return nil
	})
}

// encodeStatus encodes st; nil for no status, a non-nil (possibly empty) slice otherwise, so an
// empty status is still stored as present.
func encodeStatus(id string, st *crsv1.AccountStatus) ([]byte, error) {
	if st == nil {
		return nil, nil
	}
	b, err := proto.MarshalOptions{}.MarshalAppend(make([]byte, 0, proto.Size(st)+1), st)
	if err != nil {
		return nil, fmt.Errorf("encode account %s status: %w", id, err)
	}
	return b, nil
}

func decodeAccount(tx *bolt.Tx, id string, v []byte) (*store.Account, error) {
	env, err := unmarshalEnvelope(v)
	if err != nil {
		return nil, fmt.Errorf("account %s: %w", id, err)
	}
	var acc crsv1.Account
	if err := proto.Unmarshal(env.msg, &acc); err != nil {
		return nil, fmt.Errorf("decode account %s: %w", id, err)
	}
	if sv := tx.Bucket(bucketAccountStatus).Get([]byte(id)); sv != nil {
		var st crsv1.AccountStatus
		if err := proto.Unmarshal(sv, &st); err != nil {
			return nil, fmt.Errorf("decode account %s status: %w", id, err)
		}
		acc.Status = &st
	}
	return &store.Account{Account: &acc, SealedCredentials: env.extra, Generation: env.generation}, nil
}
