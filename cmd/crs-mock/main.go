// Command crs-mock runs the mock Anthropic upstream (internal/mockupstream) as a process, for
// integration tests of crs binaries and for `make bench`. It prints "listening on <addr>" on stdout
// once it accepts connections and exits on SIGINT or SIGTERM. Behaviour can be changed while it runs
// with POST /__config.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/pprof"
	"syscall"

	"github.com/crsrelay/crs/internal/mockupstream"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "crs-mock:", err)
		}
		os.Exit(2)
	}
}

// run starts the mock as args say and serves until ctx ends.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("crs-mock", flag.ContinueOnError)
	fs.SetOutput(stderr)
	b := mockupstream.DefaultBehavior()
	addr := fs.String("addr", "127.0.0.1:0", "listen address; port 0 picks a free one")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile to this file until exit")
	record := fs.Bool("record", true, "keep the last 1000 requests for GET /__requests (turn off for benchmarks)")
	fs.IntVar(&b.Deltas, "deltas", b.Deltas, "content_block_delta events per stream")
	fs.StringVar(&b.DeltaText, "delta-text", b.DeltaText, "text of each delta")
	fs.DurationVar(&b.FirstByteDelay, "first-byte-delay", b.FirstByteDelay, "delay before the first byte")
	fs.DurationVar(&b.EventDelay, "event-delay", b.EventDelay, "delay between stream events")
	fs.IntVar(&b.InputTokens, "input-tokens", b.InputTokens, "usage.input_tokens")
	fs.IntVar(&b.OutputTokens, "output-tokens", b.OutputTokens, "usage.output_tokens")
	fs.IntVar(&b.CacheCreation5m, "cache-creation-5m", b.CacheCreation5m, "usage.cache_creation.ephemeral_5m_input_tokens")
	fs.IntVar(&b.CacheCreation1h, "cache-creation-1h", b.CacheCreation1h, "usage.cache_creation.ephemeral_1h_input_tokens")
	fs.IntVar(&b.CacheRead, "cache-read", b.CacheRead, "usage.cache_read_input_tokens")
	fs.IntVar(&b.FailStatus, "fail-status", b.FailStatus, "fail requests with this HTTP status (0: never)")
	fs.IntVar(&b.FailTimes, "fail-times", b.FailTimes, "fail this many requests then succeed (0 or -1: always)")
	fs.StringVar(&b.FailBody, "fail-body", b.FailBody, "error body: a JSON object verbatim, or the error message")
	fs.DurationVar(&b.ResetAfter, "reset-after", b.ResetAfter, "429: anthropic-ratelimit-unified-reset and retry-after this far ahead")
	fs.IntVar(&b.DisconnectAfterEvents, "disconnect-after-events", b.DisconnectAfterEvents, "streams: close the connection after this many events")
	fs.IntVar(&b.ErrorAfterEvents, "error-after-events", b.ErrorAfterEvents, "streams: in-band overloaded error after this many events")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}

	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return fmt.Errorf("cpu profile: %w", err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return fmt.Errorf("cpu profile: %w", err)
		}
		defer pprof.StopCPUProfile()
	}
	srv := mockupstream.New(mockupstream.Config{Default: b, Record: *record})
	bound, err := srv.Start(*addr)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "listening on %s\n", bound)
	<-ctx.Done()
	return srv.Close()
}
