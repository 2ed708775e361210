// Package worker is the client-facing HTTP server of `crs worker`: a fasthttp server with the route
// table of the reference's data plane (§1.1-1.3, §1.3.5), which authenticates keys against the
// pushed snapshot (auth), picks accounts (sched), hands requests to the relay, and reports what
// happened to the control plane (fleetclient). It owns the worker's lifecycle: serve, then on
// shutdown stop accepting, let streams finish, and flush the report buffer.
//
// It holds nothing durable. It depends on the other dataplane packages, gen and fasthttp; never on
// controlplane.
package worker

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/valyala/fasthttp"
	"go.uber.org/zap"

	"github.com/crsrelay/crs/dataplane/auth"
	"github.com/crsrelay/crs/dataplane/fleetclient"
	"github.com/crsrelay/crs/dataplane/relay"
	"github.com/crsrelay/crs/dataplane/sched"
)

// Relayer forwards a request upstream and writes the answer; *relay.Relay implements it. done is
// called exactly once when the response is complete, possibly after Serve returned, from another
// goroutine.
type Relayer interface {
	Serve(ctx *fasthttp.RequestCtx, req *relay.Request, cands relay.Candidates, done func(*relay.Outcome))
}

var _ Relayer = (*relay.Relay)(nil)

// Defaults of Options.
const (
	DefaultAddr            = "0.0.0.0:3000"
	DefaultMaxBodySize     = 60 << 20
	DefaultReadTimeout     = 60 * time.Second
	DefaultIdleTimeout     = 605 * time.Second
	DefaultShutdownTimeout = 30 * time.Second
	DefaultVersion         = "dev"
)

// ErrNoDependency is returned by Run when Options lacks Relay or Fleet.
var ErrNoDependency = errors.New("worker: relay and fleet client are required")

// Options configure a Worker. Zero values take the defaults above.
type Options struct {
	// Addr is the listen address, host:port (config server.host and server.port).
	Addr string
	// Listener, when set, is served instead of listening on Addr (tests, socket activation).
	Listener net.Listener
	// Logger; default no logging.
	Logger *zap.Logger
	// Relay forwards requests upstream (relay.New).
	Relay Relayer
	// Fleet is the control plane client. The worker runs it (Run) and closes it when Run returns.
	Fleet *fleetclient.Client
	// Scheduler picks accounts; default sched.New with Fleet as the Binder.
	Scheduler *sched.Scheduler
	// MaxBodySize is the largest request body in bytes (config server.max_body_mb); larger ones
	// get 413. Default 60 MiB.
	MaxBodySize int
	// ReadTimeout bounds reading a request's headers and body. Default 60s. There is no write
	// timeout: it would cut long streams (the relay bounds upstream idleness instead).
	ReadTimeout time.Duration
	// IdleTimeout closes keep-alive connections idle that long. Default 605s (the reference's
	// keepAliveTimeout). Either timeout may end a wait up to 1/64 of the shorter one early (read
	// deadlines are moved only when that much is at stake; conn.go).
	IdleTimeout time.Duration
	// ShutdownTimeout bounds how long Run waits for requests and streams in progress after its
	// context ended. Default 30s. The report flush has its own bound (fleetclient FlushTimeout).
	ShutdownTimeout time.Duration
	// Version is reported by the health endpoints. Default "dev".
	Version string
	// Metrics receives the worker's metrics; nil creates a private set. GET /metrics writes it,
	// the fleet client's metrics and the process metrics.
	Metrics *metrics.Set
	// Now is the clock; default time.Now. Limit windows, days and weeks are judged by it.
	Now func() time.Time
	// TimezoneOffsetHours is the fixed UTC offset that days and weeks of cost limits are counted
	// in (config usage.timezone_offset_hours; it must be the control plane's). Zero = UTC.
	TimezoneOffsetHours int
	// Admitter grants concurrency leases and counts window requests; default
	// fleetclient.NewAdmitter(Fleet), which Run closes.
	Admitter Admitter
	// RefreshWait bounds how long a request whose OAuth account answered 401 waits for the control
	// plane to push a refreshed credential before it fails over (refresh.go). Default 5s;
	// negative: no wait, a 401 fails over at once.
	RefreshWait time.Duration
}

// Worker is the data-plane HTTP server. Build it with New, start it with Run.
type Worker struct {
	opts   Options
	log    *zap.Logger
	relay  Relayer
	fleet  *fleetclient.Client
	sched  *sched.Scheduler
	auth   auth.Authenticator
	policy *auth.Policy
	adm    *admissions
	srv    *fasthttp.Server
	routes map[string]routeEntry
	m      *workerMetrics
	now    func() time.Time
	// realClock is set when now is time.Now (Options.Now unset): a request is then judged at the
	// time fasthttp read it, without reading the clock again (requestNow).
	realClock bool

	idPrefix string

	// relayCalls recycles the per-request state of relayed requests (relayCall).
	relayCalls sync.Pool

	// refresh renews credentials refused with 401 (refresh.go); nil without a fleet client.
	refresh relay.Refresher

	limitLabel string
	bodyLimit  []byte

	// Written by every request, so each on a cache line of its own: their writes would otherwise
	// evict the read-mostly fields above from the other cores' caches (false sharing).
	_     cacheLinePad
	idSeq atomic.Uint64
	_     cacheLinePad
	// inflight counts requests handed to the relay whose done was not called yet.
	inflight sync.WaitGroup
	_        cacheLinePad
}

// cacheLinePad separates fields that different cores write from the ones around them (64 bytes:
// the cache line of the CPUs the worker runs on).
type cacheLinePad [64]byte

// New returns a Worker. It does not listen: Run does.
func New(opts Options) *Worker {
	if opts.Addr == "" {
		opts.Addr = DefaultAddr
	}
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	if opts.MaxBodySize <= 0 {
		opts.MaxBodySize = DefaultMaxBodySize
	}
	if opts.ReadTimeout <= 0 {
		opts.ReadTimeout = DefaultReadTimeout
	}
	if opts.IdleTimeout <= 0 {
		opts.IdleTimeout = DefaultIdleTimeout
	}
	if opts.ShutdownTimeout <= 0 {
		opts.ShutdownTimeout = DefaultShutdownTimeout
	}
	if opts.Version == "" {
		opts.Version = DefaultVersion
	}
	if opts.Metrics == nil {
		opts.Metrics = metrics.NewSet()
	}
	realClock := opts.Now == nil
	if realClock {
		opts.Now = time.Now
	}
	if opts.RefreshWait == 0 {
		opts.RefreshWait = DefaultRefreshWait
	}
	w := &Worker{
		opts:   opts,
		log:    opts.Logger,
		relay:  opts.Relay,
		fleet:  opts.Fleet,
		sched:  opts.Scheduler,
		policy: auth.NewPolicy(auth.PolicyOptions{TZOffsetHours: opts.TimezoneOffsetHours}),
		now:    opts.Now,

		realClock: realClock,
	}
	w.adm = newAdmissions(opts, opts.Logger)
	if w.fleet != nil && opts.RefreshWait > 0 {
		w.refresh = &credentialWait{src: w.fleet, wait: opts.RefreshWait, poll: refreshPoll}
	}
	if w.sched == nil {
		var b sched.Binder
		if w.fleet != nil {
			b = w.fleet
		}
		w.sched = sched.New(sched.Options{Logger: opts.Logger.Named("sched"), Binder: b, Now: opts.Now})
	}
	var p [6]byte
	_, _ = rand.Read(p[:])
	w.idPrefix = hex.EncodeToString(p[:]) + "-"
	w.limitLabel = strconv.Itoa(opts.MaxBodySize/(1<<20)) + "MB"
	w.bodyLimit = []byte(`{"error":"Payload Too Large","message":"Request body size exceeds limit","limit":"` + w.limitLabel + `"}`)
	w.m = newWorkerMetrics(opts.Metrics)
	w.routes = w.buildRoutes()
	w.srv = &fasthttp.Server{
		Handler:                       w.handle,
		ErrorHandler:                  w.handleError,
		MaxRequestBodySize:            opts.MaxBodySize,
		ReadTimeout:                   opts.ReadTimeout,
		IdleTimeout:                   opts.IdleTimeout,
		ReadBufferSize:                32 << 10, // Claude Code sends a few KiB of headers
		NoDefaultServerHeader:         true,
		DisablePreParseMultipartForm:  true,
		DisableHeaderNamesNormalizing: false,
		Logger:                        fasthttpLogger{opts.Logger.Named("http")},
	}
	return w
}

// Run serves until ctx ends, then shuts down gracefully: it stops accepting connections, waits up
// to ShutdownTimeout for requests and streams in progress, then lets the fleet client deliver the
// report buffer (up to its FlushTimeout) and closes it.
func (w *Worker) Run(ctx context.Context) error {
	if w.relay == nil || w.fleet == nil {
		return ErrNoDependency
	}
	ln := w.opts.Listener
	if ln == nil {
		var err error
		if ln, err = net.Listen("tcp", w.opts.Addr); err != nil {
			return fmt.Errorf("listen on %s: %w", w.opts.Addr, err)
		}
	}
	// The fleet client outlives ctx: reports of requests still running must be delivered.
	fleetCtx, stopFleet := context.WithCancel(context.WithoutCancel(ctx))
	fleetDone := make(chan struct{})
	go func() {
		defer close(fleetDone)
		_ = w.fleet.Run(fleetCtx)
	}()
	serveErr := make(chan error, 1)
	go func() { serveErr <- w.srv.Serve(deadlineListener{Listener: ln, slack: w.deadlineSlack()}) }()
	w.log.Info("worker listening", zap.String("addr", ln.Addr().String()),
		zap.String("worker_id", w.fleet.WorkerID()))

	var runErr error
	select {
	case <-ctx.Done():
	case err := <-serveErr:
		if err != nil {
			runErr = fmt.Errorf("serve http: %w", err)
		}
	}

	w.log.Info("worker shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), w.opts.ShutdownTimeout)
	if err := w.srv.ShutdownWithContext(sctx); err != nil {
		w.log.Warn("connections still open at the shutdown deadline", zap.Error(err))
	}
	if !waitGroup(sctx, &w.inflight) {
		w.log.Warn("requests still relaying at the shutdown deadline")
	}
	cancel()
	w.sched.Wait()
	actx, acancel := context.WithTimeout(context.Background(), 5*time.Second)
	w.adm.close(actx) // releases of the last requests are sent; leases not released expire
	acancel()
	stopFleet()
	<-fleetDone
	if err := w.fleet.Close(); err != nil {
		w.log.Debug("close fleet client", zap.Error(err))
	}
	w.log.Info("worker stopped", zap.Int("unreported", w.fleet.Pending()))
	return runErr
}

// deadlineSlack is how much earlier than asked a client connection's read deadline may fall
// (lazyDeadlineConn): 1/64 of the shorter of the read and idle timeouts (under a second with the
// defaults).
func (w *Worker) deadlineSlack() time.Duration {
	return min(w.opts.ReadTimeout, w.opts.IdleTimeout) / 64
}

// waitGroup waits for wg or ctx; it reports whether wg finished.
func waitGroup(ctx context.Context, wg *sync.WaitGroup) bool {
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return true
	case <-ctx.Done():
		return false
	}
}

// requestNow is the time a request is judged at (key expiry, limit windows, account states): when
// fasthttp read it, or with an injected clock (tests), that clock's time.
func (w *Worker) requestNow(ctx *fasthttp.RequestCtx) time.Time {
	if w.realClock {
		return ctx.Time()
	}
	return w.now()
}

// newRequestID returns a request id unique across workers: a random per-process prefix and a
// sequence number.
func (w *Worker) newRequestID() string {
	n := w.idSeq.Add(1)
	var buf [40]byte // 13 prefix bytes and at most 13 base-36 digits: the copy below is the only allocation
	b := append(buf[:0], w.idPrefix...)
	b = strconv.AppendUint(b, n, 36)
	return string(b)
}

// fasthttpLogger sends fasthttp's own messages (connection errors) to zap at debug level.
type fasthttpLogger struct{ l *zap.Logger }

// Printf implements [fasthttp.Logger].
func (f fasthttpLogger) Printf(format string, args ...any) {
	if ce := f.l.Check(zap.DebugLevel, "fasthttp"); ce != nil {
		ce.Write(zap.String("detail", fmt.Sprintf(format, args...)))
	}
}
