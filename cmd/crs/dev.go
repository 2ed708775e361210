package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"

	"go.uber.org/zap"

	"github.com/crsrelay/crs/controlplane/secret"
)

// runDev is `crs dev`: the control plane and one worker in one process, by default on
// the embedded store in -data-dir. Without security.encryption_key it uses
// <data_dir>/encryption.key, generating it on the first start.
func runDev(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg, log, err := startup("dev", args, stderr)
	if err != nil {
		return err
	}
	defer func() { _ = log.Sync() }()

	var key []byte
	if cfg.Security.EncryptionKey != "" {
		key, err = parseEncryptionKey(cfg.Security.EncryptionKey, log)
	} else {
		key, err = devEncryptionKey(cfg.Store.DataDir, log)
	}
	if err != nil {
		return err
	}

	cp, err := startControl(ctx, cfg, key, log, stdout)
	if err != nil {
		return err
	}
	_, port, _ := net.SplitHostPort(cp.grpcAddr)
	w, err := newWorker(cfg, log, net.JoinHostPort("127.0.0.1", port), cp.deps.fleetToken)
	if err != nil {
		cp.shutdown()
		return err
	}
	// The worker stops first (finishing streams and flushing usage to the control plane), then
	// the control plane: cpCtx ends only when the worker has returned.
	wctx, wcancel := context.WithCancel(ctx)
	defer wcancel()
	cpCtx, cpCancel := context.WithCancel(context.Background())
	werr := make(chan error, 1)
	go func() {
		err := w.Run(wctx)
		werr <- err
		cpCancel()
	}()
	log.Info("crs dev ready", zap.String("worker", workerAddr(cfg)), zap.String("admin", cp.httpAddr))
	cerr := cp.wait(cpCtx)
	wcancel()
	return errors.Join(<-werr, cerr)
}

// devEncryptionKey reads <dir>/encryption.key, creating it (0600, 64 hex characters) on the
// first start.
func devEncryptionKey(dir string, log *zap.Logger) ([]byte, error) {
	path := filepath.Join(dir, encryptionKeyFile)
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		key, _, err := secret.ParseKey(strings.TrimSpace(string(b)))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		return key, nil
	case !errors.Is(err, os.ErrNotExist):
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	key, err := secret.GenerateKey()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create data directory: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("create %s: %w", path, err)
	}
	_, werr := f.WriteString(secret.EncodeKey(key) + "\n")
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr != nil {
		return nil, fmt.Errorf("write %s: %w", path, werr)
	}
	log.Warn("generated an encryption key for development; keep it with the data", zap.String("file", path))
	return key, nil
}
