// Command crs-bench is the `make bench` driver: it starts crs-mock and `crs dev` on free ports,
// creates a console account and client keys through the admin REST API, then loads the mock directly
// and through the relay with identical Claude Code-shaped requests (non-stream and stream) and
// prints requests/s, latency percentiles, the relay/direct ratios and the worker's memory. The load
// generator is a fasthttp HostClient with one connection per concurrent request.
//
// With -direct-only it needs only crs-mock and measures the baseline.
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
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "crs-bench:", err)
		}
		os.Exit(1)
	}
}

// run parses args and runs the benchmark; children are stopped before it returns.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o, err := parseOptions(args, stderr)
	if err != nil {
		return err
	}
	return bench(ctx, o, stdout, stderr)
}
