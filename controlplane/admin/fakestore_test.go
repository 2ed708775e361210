package admin

import (
	"context"
	"errors"
	"sort"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/crsrelay/crs/controlplane/store"
	crsv1 "github.com/crsrelay/crs/gen/crs/v1"
)

// fakeStore is an in-memory store.Store for unit tests. It clones every value in and out, as a
// real backend (which serialises) effectively does. Usage queries answer from rows set by tests.
type fakeStore struct {
	mu       sync.Mutex
	keys     map[string]*store.Key
	accounts map[string]*store.Account
	groups   map[string]*crsv1.AccountGroup
	settings *crsv1.Settings
	secrets  map[string][]byte
	order    int
	created  map[string]int

	usageRows  []store.UsageRow
	lastQuery  store.UsageQuery
	failWith   error  // returned by some calls when set
	beforeSwap func() // called by SwapAccountCredentials before it looks
	pingFailed bool
}

var _ store.Store = (*fakeStore)(nil)

func newFakeStore() *fakeStore {
	return &fakeStore{
		keys: map[string]*store.Key{}, accounts: map[string]*store.Account{}, groups: map[string]*crsv1.AccountGroup{},
		secrets: map[string][]byte{}, created: map[string]int{},
	}
}

func cloneKey(k *store.Key) *store.Key {
	return &store.Key{Key: proto.Clone(k.Key).(*crsv1.ApiKey), Hash: k.Hash}
}

func cloneAccount(a *store.Account) *store.Account {
	return &store.Account{Account: proto.Clone(a.Account).(*crsv1.Account), SealedCredentials: append([]byte(nil), a.SealedCredentials...), Generation: a.Generation}
}

func (f *fakeStore) lock() func() { f.mu.Lock(); return f.mu.Unlock }

func (f *fakeStore) stamp(id string) { f.order++; f.created[id] = f.order }

func (f *fakeStore) sorted(ids []string) []string {
	sort.Slice(ids, func(i, j int) bool { return f.created[ids[i]] < f.created[ids[j]] })
	return ids
}

func (f *fakeStore) CreateKey(_ context.Context, k *store.Key) error {
	defer f.lock()()
	if f.failWith != nil {
		return f.failWith
	}
	if _, ok := f.keys[k.Key.Id]; ok {
		return store.ErrAlreadyExists
	}
	for _, o := range f.keys {
		if o.Hash == k.Hash {
			return store.ErrAlreadyExists
		}
	}
	f.keys[k.Key.Id] = cloneKey(k)
	f.stamp(k.Key.Id)
	return nil
}

func (f *fakeStore) GetKey(_ context.Context, id string) (*store.Key, error) {
	defer f.lock()()
	if f.failWith != nil {
		return nil, f.failWith
	}
	k, ok := f.keys[id]
	if !ok {
		return nil, store.ErrNotFound
	}
	return cloneKey(k), nil
}

func (f *fakeStore) KeyByHash(_ context.Context, hash string) (*store.Key, error) {
	defer f.lock()()
	for _, k := range f.keys {
		if k.Hash == hash {
			return cloneKey(k), nil
		}
	}
	return nil, store.ErrNotFound
}

func (f *fakeStore) UpdateKey(_ context.Context, k *store.Key) error {
	defer f.lock()()
	if _, ok := f.keys[k.Key.Id]; !ok {
		return store.ErrNotFound
	}
	f.keys[k.Key.Id] = cloneKey(k)
	return nil
}

func (f *fakeStore) DeleteKey(_ context.Context, id string) error {
	defer f.lock()()
	if _, ok := f.keys[id]; !ok {
		return store.ErrNotFound
	}
	delete(f.keys, id)
	return nil
}

func (f *fakeStore) ListKeys(context.Context) ([]*store.Key, error) {
	defer f.lock()()
	if f.failWith != nil {
		return nil, f.failWith
	}
	ids := make([]string, 0, len(f.keys))
	for id := range f.keys {
		ids = append(ids, id)
	}
	var out []*store.Key
	for _, id := range f.sorted(ids) {
		out = append(out, cloneKey(f.keys[id]))
	}
	return out, nil
}

func (f *fakeStore) CreateAccount(_ context.Context, a *store.Account) error {
	defer f.lock()()
	if _, ok := f.accounts[a.Account.Id]; ok {
		return store.ErrAlreadyExists
	}
	c := cloneAccount(a)
	c.Generation = 1
	f.accounts[a.Account.Id] = c
	f.stamp(a.Account.Id)
	return nil
}

func (f *fakeStore) GetAccount(_ context.Context, id string) (*store.Account, error) {
	defer f.lock()()
	a, ok := f.accounts[id]
	if !ok {
		return nil, store.ErrNotFound
	}
	return cloneAccount(a), nil
}

func (f *fakeStore) UpdateAccount(_ context.Context, a *store.Account) error {
	defer f.lock()()
	cur, ok := f.accounts[a.Account.Id]
	if !ok {
		return store.ErrNotFound
	}
	// As the contract says: the status is not part of an update.
	st := cur.Account.Status
	cur.Account = proto.Clone(a.Account).(*crsv1.Account)
	cur.Account.Status = st
	return nil
}

func (f *fakeStore) SwapAccountCredentials(_ context.Context, id string, want int64, sealed []byte) (int64, error) {
	if f.beforeSwap != nil {
		f.beforeSwap()
	}
	defer f.lock()()
	cur, ok := f.accounts[id]
	if !ok {
		return 0, store.ErrNotFound
	}
	if cur.Generation != want {
		return 0, store.ErrConflict
	}
	cur.SealedCredentials = append([]byte(nil), sealed...)
	cur.Generation++
	return cur.Generation, nil
}

func (f *fakeStore) SetAccountStatus(_ context.Context, id string, st *crsv1.AccountStatus) error {
	defer f.lock()()
	cur, ok := f.accounts[id]
	if !ok {
		return store.ErrNotFound
	}
	cur.Account.Status = proto.Clone(st).(*crsv1.AccountStatus)
	return nil
}

func (f *fakeStore) DeleteAccount(_ context.Context, id string) error {
	defer f.lock()()
	if _, ok := f.accounts[id]; !ok {
		return store.ErrNotFound
	}
	delete(f.accounts, id)
	return nil
}

func (f *fakeStore) ListAccounts(context.Context) ([]*store.Account, error) {
	defer f.lock()()
	ids := make([]string, 0, len(f.accounts))
	for id := range f.accounts {
		ids = append(ids, id)
	}
	var out []*store.Account
	for _, id := range f.sorted(ids) {
		out = append(out, cloneAccount(f.accounts[id]))
	}
	return out, nil
}

func (f *fakeStore) CreateGroup(_ context.Context, g *crsv1.AccountGroup) error {
	defer f.lock()()
	if _, ok := f.groups[g.Id]; ok {
		return store.ErrAlreadyExists
	}
	f.groups[g.Id] = proto.Clone(g).(*crsv1.AccountGroup)
	f.stamp(g.Id)
	return nil
}

func (f *fakeStore) GetGroup(_ context.Context, id string) (*crsv1.AccountGroup, error) {
	defer f.lock()()
	g, ok := f.groups[id]
	if !ok {
		return nil, store.ErrNotFound
	}
	return proto.Clone(g).(*crsv1.AccountGroup), nil
}

func (f *fakeStore) UpdateGroup(_ context.Context, g *crsv1.AccountGroup) error {
	defer f.lock()()
	if _, ok := f.groups[g.Id]; !ok {
		return store.ErrNotFound
	}
	f.groups[g.Id] = proto.Clone(g).(*crsv1.AccountGroup)
	return nil
}

func (f *fakeStore) DeleteGroup(_ context.Context, id string) error {
	defer f.lock()()
	if _, ok := f.groups[id]; !ok {
		return store.ErrNotFound
	}
	delete(f.groups, id)
	return nil
}

func (f *fakeStore) ListGroups(context.Context) ([]*crsv1.AccountGroup, error) {
	defer f.lock()()
	ids := make([]string, 0, len(f.groups))
	for id := range f.groups {
		ids = append(ids, id)
	}
	var out []*crsv1.AccountGroup
	for _, id := range f.sorted(ids) {
		out = append(out, proto.Clone(f.groups[id]).(*crsv1.AccountGroup))
	}
	return out, nil
}

func (f *fakeStore) GetSettings(context.Context) (*crsv1.Settings, error) {
	defer f.lock()()
	if f.settings == nil {
		return nil, store.ErrNotFound
	}
	return proto.Clone(f.settings).(*crsv1.Settings), nil
}

func (f *fakeStore) PutSettings(_ context.Context, s *crsv1.Settings) error {
	defer f.lock()()
	f.settings = proto.Clone(s).(*crsv1.Settings)
	return nil
}

func (f *fakeStore) GetSecret(_ context.Context, name string) ([]byte, error) {
	defer f.lock()()
	v, ok := f.secrets[name]
	if !ok {
		return nil, store.ErrNotFound
	}
	return append([]byte(nil), v...), nil
}

func (f *fakeStore) PutSecretIfAbsent(_ context.Context, name string, value []byte) ([]byte, error) {
	defer f.lock()()
	if v, ok := f.secrets[name]; ok {
		return append([]byte(nil), v...), nil
	}
	f.secrets[name] = append([]byte(nil), value...)
	return append([]byte(nil), value...), nil
}

func (f *fakeStore) RecordUsageBatch(_ context.Context, es []*store.UsageEntry) ([]bool, error) {
	return nil, errors.New("fake store: usage not supported")
}

func (f *fakeStore) RecordUsage(context.Context, *store.UsageEntry) (bool, error) {
	return false, errors.New("fake: not implemented")
}

func (f *fakeStore) QueryUsage(_ context.Context, q store.UsageQuery) ([]store.UsageRow, error) {
	defer f.lock()()
	f.lastQuery = q
	return f.usageRows, nil
}

func (f *fakeStore) KeySpend(context.Context, string, string, string) (store.KeySpend, error) {
	return store.KeySpend{}, nil
}

func (f *fakeStore) Bind(context.Context, string, string, string, time.Duration, bool) (string, bool, error) {
	return "", false, errors.New("fake: not implemented")
}

func (f *fakeStore) Watch(ctx context.Context) (<-chan store.Change, error) {
	ch := make(chan store.Change)
	go func() { <-ctx.Done(); close(ch) }()
	return ch, nil
}

func (f *fakeStore) Ping(context.Context) error {
	defer f.lock()()
	if f.pingFailed {
		return errors.New("fake: unreachable")
	}
	return nil
}

func (f *fakeStore) Close() error { return nil }
