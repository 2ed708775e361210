package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/protobuf/proto"

	"github.com/crsrelay/crs/cmd/crs/internal/config"
	"github.com/crsrelay/crs/controlplane/admin"
	"github.com/crsrelay/crs/controlplane/adminhttp"
	"github.com/crsrelay/crs/controlplane/fleet"
	"github.com/crsrelay/crs/controlplane/pricing"
	"github.com/crsrelay/crs/controlplane/secret"
	"github.com/crsrelay/crs/controlplane/store"
	"github.com/crsrelay/crs/controlplane/store/embedded"
	"github.com/crsrelay/crs/controlplane/store/redisstore"
	crsv1 "github.com/crsrelay/crs/gen/crs/v1"
)

// Files crs writes into the data directory, all mode 0600.
const (
	adminTokenFile    = "admin.token"
	fleetTokenFile    = "fleet.token"
	encryptionKeyFile = "encryption.key"
)

// Store secrets cmd/crs keeps (admin keeps its own, see controlplane/admin).
const (
	// fleetTokenSecret holds the generated fleet token, sealed with the encryption key.
	fleetTokenSecret = "fleet_token"
	// keyCheckSecret holds a value sealed with the encryption key the store was first used
	// with, so starting with another key fails at once instead of on the first account read.
	keyCheckSecret = "encryption_key_check"
)

// runControl is `crs control`: the control plane alone, for production. It refuses to start
// without security.encryption_key.
func runControl(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg, log, err := startup("control", args, stderr)
	if err != nil {
		return err
	}
	defer func() { _ = log.Sync() }()
	if cfg.Security.EncryptionKey == "" {
		return errors.New("security.encryption_key: required by crs control (64 hex characters, e.g. `openssl rand -hex 32`, " +
			"or base64 of 32 bytes; set CRS_SECURITY__ENCRYPTION_KEY or the config file); crs dev generates one")
	}
	key, err := parseEncryptionKey(cfg.Security.EncryptionKey, log)
	if err != nil {
		return err
	}
	cp, err := startControl(ctx, cfg, key, log, stdout)
	if err != nil {
		return err
	}
	return cp.wait(ctx)
}

// parseEncryptionKey reads the configured key, warning when it had to be derived.
func parseEncryptionKey(s config.Secret, log *zap.Logger) ([]byte, error) {
	key, derived, err := secret.ParseKey(s.Value())
	if err != nil {
		return nil, fmt.Errorf("security.encryption_key: %w", err)
	}
	if derived {
		log.Warn("security.encryption_key is neither 64 hex characters nor base64 of 32 bytes: " +
			"using its SHA-256; a random key (openssl rand -hex 32) is stronger")
	}
	return key, nil
}

// controlDeps is what the control plane built at start, for the services it registers.
type controlDeps struct {
	cfg     config.Config
	log     *zap.Logger
	store   store.Store
	sealer  *secret.Sealer
	metrics *metrics.Set
	// fleetToken is what workers must present (configured or generated).
	fleetToken string
}

// openAccount returns a stored account with its credentials (and proxy) in clear text; it is
// what FleetService pushes to workers.
func (d *controlDeps) openAccount(a *store.Account) (*crsv1.Account, error) {
	out := proto.Clone(a.Account).(*crsv1.Account)
	if len(a.SealedCredentials) == 0 {
		return out, nil
	}
	if err := d.sealer.OpenCredentials(a.SealedCredentials, out); err != nil {
		return nil, fmt.Errorf("open credentials of account %s: %w", out.GetId(), err)
	}
	return out, nil
}

// registerFleet registers FleetService on srv and returns its background loop (run until the
// control plane stops). FleetService checks the fleet token itself, so grpcAuth lets its methods
// through.
func registerFleet(srv *grpc.Server, d *controlDeps) (run func(context.Context) error, err error) {
	prices, err := pricing.LoadFile(d.cfg.Usage.PricingFile)
	if err != nil {
		return nil, fmt.Errorf("usage.pricing_file: %w", err)
	}
	limits, err := limitStore(d.store)
	if err != nil {
		return nil, err
	}
	locks, _ := d.store.(store.LockStore) // both backends have one
	svc := fleet.New(fleet.Options{
		Store:         d.store,
		Limits:        limits,
		Locks:         locks,
		Metrics:       d.metrics,
		Logger:        d.log,
		OpenAccount:   d.openAccount,
		Pricing:       prices,
		TZOffsetHours: d.cfg.Usage.TimezoneOffsetHours,
		LeaseTTL:      d.cfg.Control.LeaseTTL,
		FleetToken:    d.fleetToken,
		LegacySecret:  d.cfg.Security.LegacyEncryptionKey.Value(),
	})
	svc.Register(srv)
	return svc.Run, nil
}

// controlPlane is a running control plane: the store, the gRPC server (AdminService,
// FleetService) and the HTTP server (admin REST, health, metrics).
type controlPlane struct {
	deps     *controlDeps
	grpcSrv  *grpc.Server
	httpSrv  *http.Server
	grpcAddr string // actual listen address, host:port
	httpAddr string

	serveErr chan error // the first server failure
	bgCancel context.CancelFunc
	bg       sync.WaitGroup
}

// startControl opens the store, settles the server secrets, builds the services and starts
// listening. On error nothing is left running.
func startControl(ctx context.Context, cfg config.Config, encKey []byte, log *zap.Logger, stdout io.Writer) (_ *controlPlane, err error) {
	st, err := openStore(ctx, cfg.Store)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			_ = st.Close()
		}
	}()
	sealer, err := secret.NewSealer(encKey)
	if err != nil {
		return nil, err
	}
	if err := checkEncryptionKey(ctx, st, sealer); err != nil {
		return nil, err
	}
	hmacSecret, err := admin.LoadKeyHMACSecret(ctx, st)
	if err != nil {
		return nil, err
	}
	adminAuth, err := ensureAdminToken(ctx, st, cfg, log, stdout)
	if err != nil {
		return nil, err
	}
	fleetToken, err := ensureFleetToken(ctx, st, sealer, cfg, log)
	if err != nil {
		return nil, err
	}
	d := &controlDeps{cfg: cfg, log: log, store: st, sealer: sealer, metrics: metrics.NewSet(), fleetToken: fleetToken}

	keeping, err := newAccountKeeping(cfg, st, sealer, log)
	if err != nil {
		return nil, err
	}
	adminSvc, err := admin.New(keeping.adminOptions(admin.Options{
		Store: st, Sealer: sealer, HMACSecret: hmacSecret, Logger: log.Named("admin"),
		TimeZone: admin.TimeZone(cfg.Usage.TimezoneOffsetHours),
	}))
	if err != nil {
		return nil, err
	}

	grpcSrv := grpc.NewServer(
		grpc.ChainUnaryInterceptor(accessLogUnary(log), recoverUnary(log), authUnary(adminAuth)),
		grpc.ChainStreamInterceptor(accessLogStream(log), recoverStream(log), authStream(adminAuth)),
		// Workers hold long streams and ping to detect dead peers: allow it, and ping them too.
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
	)
	crsv1.RegisterAdminServiceServer(grpcSrv, adminSvc)
	fleetRun, err := registerFleet(grpcSrv, d)
	if err != nil {
		return nil, fmt.Errorf("register fleet service: %w", err)
	}

	h, err := adminhttp.New(ctx, adminhttp.Options{Admin: adminSvc, Auth: adminAuth, Store: st, Logger: log.Named("http"), Metrics: d.metrics})
	if err != nil {
		return nil, err
	}

	grpcLis, err := net.Listen("tcp", net.JoinHostPort(cfg.Control.Host, strconv.Itoa(cfg.Control.GRPCPort)))
	if err != nil {
		return nil, fmt.Errorf("control.grpc_port: %w", err)
	}
	httpLis, err := net.Listen("tcp", net.JoinHostPort(cfg.Control.Host, strconv.Itoa(cfg.Control.HTTPPort)))
	if err != nil {
		_ = grpcLis.Close()
		return nil, fmt.Errorf("control.http_port: %w", err)
	}

	cp := &controlPlane{
		deps: d, grpcSrv: grpcSrv, httpSrv: adminhttp.Server(httpLis.Addr().String(), h),
		grpcAddr: grpcLis.Addr().String(), httpAddr: httpLis.Addr().String(),
		serveErr: make(chan error, 2),
	}
	go func() {
		if err := grpcSrv.Serve(grpcLis); err != nil {
			cp.serveErr <- fmt.Errorf("grpc server: %w", err)
		}
	}()
	go func() {
		if err := cp.httpSrv.Serve(httpLis); err != nil && !errors.Is(err, http.ErrServerClosed) {
			cp.serveErr <- fmt.Errorf("http server: %w", err)
		}
	}()
	bgCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	cp.bgCancel = cancel
	loops := keeping.loops()
	loops["fleet service"] = fleetRun
	for name, run := range loops {
		cp.bg.Add(1)
		go func() {
			defer cp.bg.Done()
			if err := run(bgCtx); !isStop(err) {
				log.Error(name+" stopped", zap.Error(err))
			}
		}()
	}
	log.Info("control plane started",
		zap.String("grpc_addr", cp.grpcAddr), zap.String("http_addr", cp.httpAddr),
		zap.String("store", cfg.Store.Driver), zap.String("version", version))
	return cp, nil
}

// wait blocks until ctx ends or a server fails, then stops everything gracefully.
func (cp *controlPlane) wait(ctx context.Context) error {
	var err error
	select {
	case <-ctx.Done():
		cp.deps.log.Info("shutting down")
	case err = <-cp.serveErr:
		cp.deps.log.Error("server failed; shutting down", zap.Error(err))
	}
	cp.shutdown()
	return err
}

// shutdown stops accepting, lets in-flight calls finish within control.shutdown_timeout, stops
// the background loops and closes the store.
func (cp *controlPlane) shutdown() {
	timeout := cp.deps.cfg.Control.ShutdownTimeout
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()

	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		if err := cp.httpSrv.Shutdown(ctx); err != nil {
			_ = cp.httpSrv.Close()
		}
	}()
	go func() {
		defer wg.Done()
		done := make(chan struct{})
		go func() { cp.grpcSrv.GracefulStop(); close(done) }()
		select {
		case <-done:
		case <-ctx.Done():
			// Long-lived worker streams never end by themselves: cut them.
			cp.grpcSrv.Stop()
			<-done
		}
	}()
	wg.Wait()

	cp.bgCancel()
	bgDone := make(chan struct{})
	go func() { cp.bg.Wait(); close(bgDone) }()
	select {
	case <-bgDone:
	case <-time.After(timeout):
		cp.deps.log.Warn("background loops did not stop in time")
	}
	if err := cp.deps.store.Close(); err != nil {
		cp.deps.log.Warn("close store", zap.Error(err))
	}
	cp.deps.log.Info("stopped")
}

// openStore opens the configured backend.
func openStore(ctx context.Context, c config.Store) (store.Store, error) {
	switch c.Driver {
	case config.DriverEmbedded:
		st, err := embedded.Open(c.DataDir)
		if err != nil {
			return nil, fmt.Errorf("open embedded store in %s: %w", c.DataDir, err)
		}
		return st, nil
	case config.DriverRedis:
		st, err := redisstore.New(ctx, c.RedisURL.Value())
		if err != nil {
			return nil, fmt.Errorf("open redis store: %w", err)
		}
		return st, nil
	}
	return nil, fmt.Errorf("store.driver: unknown driver %q", c.Driver)
}

// limitStore returns the concurrency leases and fixed windows of the opened backend. The embedded
// one keeps leases in this process's memory, so there must be exactly one per process.
func limitStore(st store.Store) (store.LimitStore, error) {
	switch st := st.(type) {
	case *embedded.Store:
		return embedded.NewLimits(st), nil
	case *redisstore.Store:
		return redisstore.NewLimits(st), nil
	}
	return nil, fmt.Errorf("store %T has no limit store", st)
}

// checkEncryptionKey makes sure the key opens what this store's first start sealed.
func checkEncryptionKey(ctx context.Context, st store.Store, sealer *secret.Sealer) error {
	aad := []byte("crs/encryption-key-check/v1")
	probe, err := sealer.Seal([]byte("crs"), aad)
	if err != nil {
		return err
	}
	stored, err := st.PutSecretIfAbsent(ctx, keyCheckSecret, probe)
	if err != nil {
		return fmt.Errorf("store %s: %w", keyCheckSecret, err)
	}
	if _, err := sealer.Open(stored, aad); err != nil {
		return errors.New("security.encryption_key: not the key this store was first started with " +
			"(its account credentials could not be opened); restore the original key")
	}
	return nil
}

// ensureAdminToken settles the admin token (see admin.EnsureAdminToken). A generated token is
// printed once to stdout and written to <data_dir>/admin.token; it is never logged.
func ensureAdminToken(ctx context.Context, st store.Store, cfg config.Config, log *zap.Logger, stdout io.Writer) (*admin.TokenAuth, error) {
	auth, generated, err := admin.EnsureAdminToken(ctx, st, cfg.Security.AdminToken.Value())
	if err != nil || generated == "" {
		return auth, err
	}
	path := filepath.Join(cfg.Store.DataDir, adminTokenFile)
	if err := writeSecretFile(path, generated); err != nil {
		return nil, err
	}
	fmt.Fprintf(stdout, "admin token: %s\n", generated)
	fmt.Fprintf(stdout, "(shown once; also saved to %s, mode 0600)\n", path)
	log.Info("generated the admin token", zap.String("file", path))
	return auth, nil
}

// ensureFleetToken returns the configured fleet token, or the one kept (sealed) in the store,
// generating it on the first start. It is written to <data_dir>/fleet.token when that file is
// missing, for workers started by hand.
func ensureFleetToken(ctx context.Context, st store.Store, sealer *secret.Sealer, cfg config.Config, log *zap.Logger) (string, error) {
	if t := cfg.Security.FleetToken.Value(); t != "" {
		return t, nil
	}
	aad := []byte("crs/fleet-token/v1")
	fresh, err := secret.NewFleetToken()
	if err != nil {
		return "", err
	}
	sealed, err := sealer.Seal([]byte(fresh), aad)
	if err != nil {
		return "", err
	}
	stored, err := st.PutSecretIfAbsent(ctx, fleetTokenSecret, sealed)
	if err != nil {
		return "", fmt.Errorf("store %s: %w", fleetTokenSecret, err)
	}
	tok, err := sealer.Open(stored, aad)
	if err != nil {
		return "", fmt.Errorf("open %s: %w", fleetTokenSecret, err)
	}
	path := filepath.Join(cfg.Store.DataDir, fleetTokenFile)
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		if err := writeSecretFile(path, string(tok)); err != nil {
			return "", err
		}
		log.Info("wrote the fleet token", zap.String("file", path))
	}
	return string(tok), nil
}

// writeSecretFile writes value and a newline to path (mode 0600), creating its directory (0700).
func writeSecretFile(path, value string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("create data directory: %w", err)
	}
	if err := os.WriteFile(path, []byte(value+"\n"), 0o600); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	// WriteFile keeps the mode of an existing file: make sure.
	if err := os.Chmod(path, 0o600); err != nil {
		return fmt.Errorf("chmod %s: %w", path, err)
	}
	return nil
}
