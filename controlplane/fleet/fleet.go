// Package fleet implements FleetService, the control plane's side of the worker contract
// (proto/crs/v1/fleet.proto): it keeps an in-memory copy of what workers serve from (keys,
// accounts with opened credentials, groups, settings, key hashing secrets, key spend), streams it
// to workers as a snapshot followed by versioned deltas (Sync), stores sticky-session bindings
// (Bind), stores usage records and upstream account events that workers report (Report), and
// grants concurrency leases and counts fixed-window requests across the fleet (Admit).
//
// The cache is refreshed from store.Watch (changes coalesced for a few milliseconds into one
// delta), by a periodic full reload that heals missed notifications, and after every report.
// Account states set by events end by themselves through a recovery tick.
//
// The package depends on the store interface, pricing, usage and the contract's generated types.
// It never imports the data plane, and it does not decrypt credentials itself: the caller passes
// Options.OpenAccount.
package fleet

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"github.com/VictoriaMetrics/metrics"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/crsrelay/crs/controlplane/pricing"
	"github.com/crsrelay/crs/controlplane/store"
	"github.com/crsrelay/crs/controlplane/usage"
	crsv1 "github.com/crsrelay/crs/gen/crs/v1"
)

// HMACSecretName is the store secret holding the HMAC-SHA256 key that crs key hashes use. Admin
// and fleet both create it with PutSecretIfAbsent, so whichever runs first decides it.
const HMACSecretName = "key_hmac_secret"

// Defaults of the tuning options.
const (
	DefaultCoalesceWindow   = 50 * time.Millisecond
	DefaultResyncInterval   = 30 * time.Second
	DefaultRecoveryInterval = 5 * time.Second
	DefaultStreamQueue      = 256
	DefaultStickyTTL        = time.Hour
	DefaultLeaseTTL         = 30 * time.Second
)

// Options configure a Service. Store, Logger and FleetToken are required in production; the
// rest have defaults.
type Options struct {
	// Store is the control plane's persistence; its Watch feeds the cache.
	Store store.Store
	// Logger is named "fleet" by New; nil = no logging.
	Logger *zap.Logger
	// OpenAccount returns the account of a stored record with its credentials oneof (and proxy)
	// in clear text, e.g. secret.Sealer.OpenCredentials on a clone of a.Account. nil = push the
	// public part only (tests).
	OpenAccount func(*store.Account) (*crsv1.Account, error)
	// Pricing prices usage records; nil = built-in prices.
	Pricing *pricing.Table
	// TZOffsetHours is the time zone of usage periods and daily limits ([usage]
	// timezone_offset_hours).
	TZOffsetHours int
	// FleetToken is what workers present as "authorization: Bearer <token>". Empty = every call
	// is refused.
	FleetToken string
	// LegacySecret is the Node.js ENCRYPTION_KEY that imported keys were hashed with
	// ([security] legacy_encryption_key); empty when no key was imported.
	LegacySecret string
	// Clock returns the current time; nil = time.Now.
	Clock func() time.Time
	// Limits holds concurrency leases and fixed windows (embedded.NewLimits or
	// redisstore.NewLimits over Store). nil = Admit answers Unimplemented and no window usage is
	// kept or pushed.
	Limits store.LimitStore
	// Locks makes the recovery tick run on one replica at a time (the store's LockStore; both
	// backends have one). nil = every replica recovers (fine for one replica).
	Locks store.LockStore
	// LeaseTTL is how long a lease lives without renewal (default 30s); workers renew every
	// LeaseTTL/3.
	LeaseTTL time.Duration

	// Metrics receives the fleet's metrics (workers connected, snapshot version, usage records,
	// cost, account events); nil = a private set.
	Metrics *metrics.Set

	// CoalesceWindow is how long changes are collected into one delta (default 50ms).
	CoalesceWindow time.Duration
	// ResyncInterval is the period of the full reload that heals missed changes (default 30s).
	ResyncInterval time.Duration
	// RecoveryInterval is the period of the tick that ends expired account states (default 5s).
	RecoveryInterval time.Duration
	// StreamQueue is how many messages a Sync stream may fall behind before it is closed
	// (default 256); the worker then reconnects and gets a snapshot.
	StreamQueue int
}

// Service implements crsv1.FleetServiceServer. Build it with New, register it with Register, and
// run Run for as long as it serves; its methods are safe for concurrent use.
type Service struct {
	crsv1.UnimplementedFleetServiceServer

	log       *zap.Logger
	metrics   *fleetMetrics
	st        store.Store
	limits    store.LimitStore
	credit    *credits
	locks     store.LockStore
	owner     string // this replica's name in store locks
	leaseTTL  time.Duration
	open      func(*store.Account) (*crsv1.Account, error)
	recorder  *usage.Recorder
	now       func() time.Time
	tz        int
	legacy    string
	tokenHash [sha256.Size]byte
	tokenSet  bool

	coalesce, resync, recovery time.Duration
	queue                      int

	ready     chan struct{}
	readyOnce sync.Once

	// mu guards the cache, the version, the subscribers and closed.
	mu      sync.RWMutex
	cache   *cache
	version uint64
	subs    map[*subscriber]struct{}
	closed  bool

	// changes feeds the applier: store.Watch changes and internal refresh requests.
	changes chan store.Change
	// reload asks the applier for a full reload (a change was dropped or a refresh failed).
	reload atomic.Bool

	// statusMu serializes account status read-modify-writes in this process.
	statusMu sync.Mutex
	// activated remembers keys this process activated recently (key id -> time.Time), so a burst
	// of records does not re-read the key for each.
	activated sync.Map
	// openFailed remembers accounts whose credentials did not open (id -> generation), to log
	// once per generation.
	openFailed sync.Map
}

var _ crsv1.FleetServiceServer = (*Service)(nil)

// changeQueue is the capacity of the applier's input; when it is full, changes are dropped and a
// full reload is done instead.
const changeQueue = 4096

// New returns a Service. It does no I/O; Run loads the state.
func New(o Options) *Service {
	s := &Service{
		log:      o.Logger,
		st:       o.Store,
		limits:   o.Limits,
		credit:   newCredits(),
		locks:    o.Locks,
		owner:    replicaName(),
		leaseTTL: o.LeaseTTL,
		open:     o.OpenAccount,
		now:      o.Clock,
		tz:       o.TZOffsetHours,
		legacy:   o.LegacySecret,
		coalesce: o.CoalesceWindow,
		resync:   o.ResyncInterval,
		recovery: o.RecoveryInterval,
		queue:    o.StreamQueue,
		ready:    make(chan struct{}),
		subs:     make(map[*subscriber]struct{}),
		changes:  make(chan store.Change, changeQueue),
	}
	if s.log == nil {
		s.log = zap.NewNop()
	}
	s.log = s.log.Named("fleet")
	if s.now == nil {
		s.now = time.Now
	}
	if s.coalesce <= 0 {
		s.coalesce = DefaultCoalesceWindow
	}
	if s.resync <= 0 {
		s.resync = DefaultResyncInterval
	}
	if s.recovery <= 0 {
		s.recovery = DefaultRecoveryInterval
	}
	if s.queue <= 0 {
		s.queue = DefaultStreamQueue
	}
	if s.leaseTTL <= 0 {
		s.leaseTTL = DefaultLeaseTTL
	}
	if o.FleetToken != "" {
		s.tokenHash = sha256.Sum256([]byte(o.FleetToken))
		s.tokenSet = true
	} else {
		s.log.Warn("no fleet token configured; every worker call will be refused")
	}
	s.metrics = newFleetMetrics(o.Metrics, s)
	s.recorder = usage.NewRecorder(usage.RecorderOptions{
		Store:         o.Store,
		Pricing:       o.Pricing,
		TZOffsetHours: o.TZOffsetHours,
		Clock:         s.now,
	})
	return s
}

// Register registers s on r. Every FleetService method checks the fleet token itself, so no
// interceptor is needed and other services on the same server keep their own auth.
func (s *Service) Register(r grpc.ServiceRegistrar) {
	crsv1.RegisterFleetServiceServer(r, s)
}

// Ready reports whether the initial state load has completed (for /readyz).
func (s *Service) Ready() bool {
	select {
	case <-s.ready:
		return true
	default:
		return false
	}
}

// replicaName names this process in store locks: host name, process id and a random suffix.
func replicaName() string {
	host, _ := os.Hostname()
	var b [4]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("%s-%d-%x", host, os.Getpid(), b)
}

// Version returns the version of the state workers are served.
func (s *Service) Version() uint64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.version
}

// Status errors returned to workers.
var (
	errUnauthenticated = status.Error(codes.Unauthenticated, "missing or invalid fleet token")
	errNotReady        = status.Error(codes.Unavailable, "control plane is loading its state")
	errStopping        = status.Error(codes.Unavailable, "control plane is stopping")
	errFellBehind      = status.Error(codes.ResourceExhausted, "worker fell behind the delta stream; reconnect for a snapshot")
	errInternal        = status.Error(codes.Internal, "internal error")
)

// authorize checks the "authorization: Bearer <fleet token>" metadata in constant time.
func (s *Service) authorize(ctx context.Context) error {
	if !s.tokenSet {
		return errUnauthenticated
	}
	md, _ := metadata.FromIncomingContext(ctx)
	for _, v := range md.Get("authorization") {
		scheme, token, ok := strings.Cut(strings.TrimSpace(v), " ")
		if !ok || !strings.EqualFold(scheme, "bearer") {
			continue
		}
		got := sha256.Sum256([]byte(strings.TrimSpace(token)))
		if subtle.ConstantTimeCompare(got[:], s.tokenHash[:]) == 1 {
			return nil
		}
	}
	return errUnauthenticated
}

// waitReady waits for the initial load, or returns Unavailable when ctx ends first.
func (s *Service) waitReady(ctx context.Context) error {
	select {
	case <-s.ready:
		return nil
	case <-ctx.Done():
		return errNotReady
	}
}

// rpcError maps an error from a store or a context to the status workers see.
func (s *Service) rpcError(ctx context.Context, what string, err error) error {
	if _, ok := status.FromError(err); ok && status.Code(err) != codes.Unknown {
		return err
	}
	if ctx.Err() != nil {
		return status.FromContextError(ctx.Err()).Err()
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return status.FromContextError(err).Err()
	}
	s.log.Error(what+" failed", zap.Error(err))
	return errInternal
}
