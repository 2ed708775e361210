// Command crs is the one crs binary: `crs control` (the control plane), `crs worker` (a data-plane
// worker), `crs dev` (everything in one process on the embedded store), `crs version` and `crs help`. main only wires signals and
// the exit code; run does the work and is what tests call.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/crsrelay/crs/cmd/crs/internal/config"
)

func main() {
	startPprof()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "crs:", err)
		os.Exit(1)
	}
}

// errUsage is returned for a missing or unknown subcommand, after the usage text is printed.
var errUsage = errors.New("usage: crs <command> [flags]; see crs help")

const usage = `crs — a relay for LLM APIs.

Usage:
  crs control [flags]   run the control plane (admin API, FleetService)
  crs worker [flags]    run a data-plane worker (clients connect here; needs worker.control_addr
                        and security.fleet_token)
  crs dev [flags]       run control plane and worker in one process (embedded store in -data-dir)
  crs version           print version and commit
  crs help              print this text

Flags (control, worker, dev):
  -config path          TOML config file (or CRS_CONFIG); every key is also CRS_<SECTION>__<KEY>
  -port, -admin-port, -grpc-port, -data-dir, -store, -log-level, -log-format
See deploy/crs.example.toml for every setting.
`

// run runs the subcommand in args[0] until ctx ends (servers) or it is done (version, help).
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errUsage
	}
	var err error
	switch args[0] {
	case "control":
		err = runControl(ctx, args[1:], stdout, stderr)
	case "dev":
		err = runDev(ctx, args[1:], stdout, stderr)
	case "worker":
		err = runWorker(ctx, args[1:], stdout, stderr)
	case "version", "-version", "--version":
		printVersion(stdout)
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
	default:
		fmt.Fprint(stderr, usage)
		return fmt.Errorf("unknown command %q: %w", args[0], errUsage)
	}
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	return err
}

// startup reads and validates a server subcommand's configuration and builds its logger; the
// caller syncs the logger when it returns.
func startup(name string, args []string, stderr io.Writer) (config.Config, *zap.Logger, error) {
	cfg, err := loadConfig(name, args, stderr)
	if err != nil {
		return cfg, nil, err
	}
	log, err := newLogger(cfg.Log, stderr)
	return cfg, log, err
}

// loadConfig reads and validates the configuration of a subcommand.
func loadConfig(name string, args []string, stderr io.Writer) (config.Config, error) {
	cfg, err := config.Load(name, args, os.Environ(), stderr)
	if err != nil {
		return cfg, err
	}
	if err := cfg.Validate(); err != nil {
		return cfg, fmt.Errorf("invalid configuration:\n%w", err)
	}
	return cfg, nil
}

// newLogger builds the process's root logger: the only one; packages get it (or a Named child)
// passed in.
func newLogger(c config.Log, w io.Writer) (*zap.Logger, error) {
	level, err := zapcore.ParseLevel(c.Level)
	if err != nil {
		return nil, fmt.Errorf("log.level: %w", err)
	}
	ec := zap.NewProductionEncoderConfig()
	ec.EncodeTime = zapcore.ISO8601TimeEncoder
	var enc zapcore.Encoder
	if c.Format == "json" {
		enc = zapcore.NewJSONEncoder(ec)
	} else {
		ec.EncodeLevel = zapcore.CapitalLevelEncoder
		enc = zapcore.NewConsoleEncoder(ec)
	}
	core := zapcore.NewCore(enc, zapcore.Lock(zapcore.AddSync(w)), level)
	return zap.New(core, zap.ErrorOutput(zapcore.Lock(zapcore.AddSync(w)))), nil
}
