// Package store defines the control plane's durable state: API keys, upstream accounts, groups,
// settings, usage aggregates, sticky bindings and server secrets. Two backends implement it:
// embedded (bbolt, one node, durable in the data directory) and redisstore (go-redis, shared by
// control-plane replicas). storetest holds the conformance suite both must pass.
//
// The store knows nothing of gRPC, HTTP or the data plane. Values are the contract's protobuf
// messages; secrets arrive already sealed (encrypted) and key plaintexts never arrive at all.
package store

import (
	"context"
	"errors"
	"time"

	crsv1 "github.com/crsrelay/crs/gen/crs/v1"
)

// Sentinel errors callers branch on with errors.Is.
var (
	// ErrNotFound: no record with that id (or hash, or name).
	ErrNotFound = errors.New("store: not found")
	// ErrAlreadyExists: a record with that id or key hash exists already.
	ErrAlreadyExists = errors.New("store: already exists")
	// ErrConflict: a compare-and-swap lost (stale credential generation).
	ErrConflict = errors.New("store: conflict")
)

// Key is an API key as stored: its policy and the hash its plaintext is found by.
type Key struct {
	Key *crsv1.ApiKey
	// Hash is the lowercase hex hash of the plaintext under Key.HashScheme.
	Hash string
}

// Account is an account as stored: the public part, with every credential secret cleared, and the
// credentials oneof sealed (AES-256-GCM of its protobuf encoding) by the caller.
type Account struct {
	Account *crsv1.Account
	// SealedCredentials is opaque to the store.
	SealedCredentials []byte
	// Generation increments on every credential write (see SwapAccountCredentials).
	Generation int64
}

// Change names a record that changed, so every replica can refresh what it pushes to workers.
type Change struct {
	// Kind is one of the Kind* constants.
	Kind string
	// ID of the record; empty for settings.
	ID string
}

// Change kinds.
const (
	KindKey      = "key"
	KindAccount  = "account"
	KindGroup    = "group"
	KindSettings = "settings"
	// KindKeyUsage: a key's spending changed (usage recorded), for limit checks on workers.
	KindKeyUsage = "key_usage"
)

// UsageEntry is one usage record with the cost the control plane computed for it and the periods
// (in the configured time zone) it is aggregated into.
type UsageEntry struct {
	Record *crsv1.UsageRecord
	// Cost at list price and after service rates, USD.
	Cost, RatedCost float64
	// ClaudeFamily: counts toward the weekly Claude ("opus") cost.
	ClaudeFamily bool
	// Period labels: Hour "2006-01-02T15", Day "2006-01-02", Month "2006-01", Week = label of the
	// key's current week start ("2006-01-02T15").
	Hour, Day, Month, Week string
}

// UsageQuery selects aggregates of one scope.
type UsageQuery struct {
	// Scope is "key", "account", "global" or "model" (the global totals of one model).
	Scope string
	// ID of the key or account, or the model name; empty for global.
	ID string
	// Granularity is "hour", "day", "month" or "total".
	Granularity string
	// Periods are the labels wanted (ignored for "total").
	Periods []string
	// ByModel splits each period by model.
	ByModel bool
}

// UsageRow is the totals of one (period, model) cell; Model is empty unless ByModel.
type UsageRow struct {
	Period string
	Model  string
	Totals *crsv1.UsageTotals
}

// KeySpend is what limit checks need of a key's spending.
type KeySpend struct {
	DailyCost, TotalCost, WeeklyOpusCost float64
}

// Store is the control plane's persistence. Implementations are safe for concurrent use.
// Every mutation of keys, accounts, groups, settings or key usage publishes a Change to Watch
// subscribers of every replica sharing the backend.
type Store interface {
	// Keys.
	CreateKey(ctx context.Context, k *Key) error
	GetKey(ctx context.Context, id string) (*Key, error)
	// KeyByHash finds a key by the hash of its plaintext.
	KeyByHash(ctx context.Context, hash string) (*Key, error)
	// UpdateKey replaces a key; when Hash changed the old hash stops finding it.
	UpdateKey(ctx context.Context, k *Key) error
	DeleteKey(ctx context.Context, id string) error
	// ListKeys returns every key, ordered by creation time then id.
	ListKeys(ctx context.Context) ([]*Key, error)

	// Accounts.
	CreateAccount(ctx context.Context, a *Account) error
	GetAccount(ctx context.Context, id string) (*Account, error)
	// UpdateAccount replaces the public part (a.Account). It never changes credentials, their
	// generation or the status: SealedCredentials, Generation and a.Account.Status are ignored (see
	// SwapAccountCredentials and SetAccountStatus), so an edit cannot undo a concurrent status change.
	UpdateAccount(ctx context.Context, a *Account) error
	// SwapAccountCredentials stores sealed credentials if the stored generation is wantGeneration,
	// and sets it to wantGeneration+1. Otherwise it returns ErrConflict and changes nothing.
	SwapAccountCredentials(ctx context.Context, id string, wantGeneration int64, sealed []byte) (newGeneration int64, err error)
	// SetAccountStatus replaces only the status part of an account (no whole-record rewrite); a
	// nil st clears it.
	SetAccountStatus(ctx context.Context, id string, st *crsv1.AccountStatus) error
	DeleteAccount(ctx context.Context, id string) error
	// ListAccounts returns every account, ordered by creation time then id.
	ListAccounts(ctx context.Context) ([]*Account, error)

	// Groups.
	CreateGroup(ctx context.Context, g *crsv1.AccountGroup) error
	GetGroup(ctx context.Context, id string) (*crsv1.AccountGroup, error)
	UpdateGroup(ctx context.Context, g *crsv1.AccountGroup) error
	DeleteGroup(ctx context.Context, id string) error
	ListGroups(ctx context.Context) ([]*crsv1.AccountGroup, error)

	// Settings; GetSettings returns ErrNotFound before the first PutSettings.
	GetSettings(ctx context.Context) (*crsv1.Settings, error)
	PutSettings(ctx context.Context, s *crsv1.Settings) error

	// Secrets: small named server secrets (admin token hash, HMAC key, generated encryption key).
	// PutSecretIfAbsent stores value unless name exists, and returns what is stored afterwards.
	GetSecret(ctx context.Context, name string) ([]byte, error)
	PutSecretIfAbsent(ctx context.Context, name string, value []byte) ([]byte, error)

	// Usage. RecordUsage stores e and adds it to every aggregate (key, account, model, key×model,
	// global × hour, day, month, total; key daily/total/weekly cost) atomically, unless a record with
	// the same request id was stored before, in which case it changes nothing and returns false.
	// Request ids are remembered for 7 days. Model aggregates are the global ones split by model; a
	// record without a model counts under the model "unknown". Period labels left empty in e are
	// skipped (the total is always added).
	RecordUsage(ctx context.Context, e *UsageEntry) (stored bool, err error)
	// RecordUsageBatch is RecordUsage for many entries at once (one transaction or one round trip):
	// stored[i] tells whether es[i] was new. On error nothing may be assumed stored; retrying the
	// whole batch is safe because duplicates are ignored.
	RecordUsageBatch(ctx context.Context, es []*UsageEntry) (stored []bool, err error)
	// QueryUsage without ByModel returns one row per period, in the order of q.Periods, with zero
	// totals where nothing was recorded; with ByModel only the (period, model) cells that have
	// usage, by period (in the order of q.Periods) then model name. An unknown scope or
	// granularity, or a key, account or model scope without ID, is an error.
	QueryUsage(ctx context.Context, q UsageQuery) ([]UsageRow, error)
	// KeySpend returns a key's rated costs for the given day and week labels and in total.
	KeySpend(ctx context.Context, keyID, day, week string) (KeySpend, error)

	// Bind returns the account bound to (platform, session) and binds accountID if there is none
	// (or if replace). Bindings expire ttl (which must be positive) after they were last set;
	// returning an existing binding does not extend it.
	Bind(ctx context.Context, platform, session, accountID string, ttl time.Duration, replace bool) (bound string, created bool, err error)

	// Watch delivers changes made after it returns, until ctx ends or the store is closed (then the
	// channel is closed). Delivery is best effort (a subscriber that falls behind may miss changes;
	// the fleet service resyncs periodically).
	Watch(ctx context.Context) (<-chan Change, error)

	// Ping checks that the backend is reachable (for /readyz).
	Ping(ctx context.Context) error
	Close() error
}
