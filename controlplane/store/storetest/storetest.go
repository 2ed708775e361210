// Package storetest is the conformance suite every [store.Store] backend must pass. A backend's
// test calls Run with a constructor of fresh, empty stores; every behaviour the interface
// documents is checked here, once, so backends cannot drift apart.
//
// It is imported only by tests. It depends on the store interface, the contract's generated
// types, testify and go-cmp (protocmp).
package storetest

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/crsrelay/crs/controlplane/store"
)

// Option configures Run.
type Option func(*config)

type config struct {
	reopen func(t *testing.T, closed store.Store) store.Store
}

// WithReopen enables the durability tests: the suite writes records, calls Close on the store,
// and calls reopen to get a new Store on the same backend (same directory, same Redis), which
// must return everything written. reopen receives the closed store so it can find its location.
func WithReopen(reopen func(t *testing.T, closed store.Store) store.Store) Option {
	return func(c *config) { c.reopen = reopen }
}

// Run runs the conformance suite. newStore must return a fresh, empty store for each call and
// arrange (with t.Cleanup) for it to be closed; Close may then be called twice. Subtests run in
// parallel, each on its own store.
func Run(t *testing.T, newStore func(t *testing.T) store.Store, opts ...Option) {
	var cfg config
	for _, o := range opts {
		o(&cfg)
	}
	groups := []struct {
		name  string
		tests []test
	}{
		{"Keys", keyTests},
		{"Accounts", accountTests},
		{"Groups", groupTests},
		{"Settings", settingsTests},
		{"Secrets", secretTests},
		{"Usage", usageTests},
		{"Bind", bindTests},
		{"Watch", watchTests},
		{"Ping", pingTests},
	}
	for _, g := range groups {
		t.Run(g.name, func(t *testing.T) {
			for _, tc := range g.tests {
				t.Run(tc.name, func(t *testing.T) {
					t.Parallel()
					tc.run(t, newStore(t))
				})
			}
		})
	}
	t.Run("Reopen", func(t *testing.T) {
		if cfg.reopen == nil {
			t.Skip("backend is not durable across Close (no WithReopen)")
		}
		t.Parallel()
		testReopen(t, newStore(t), cfg.reopen)
	})
}

type test struct {
	name string
	run  func(t *testing.T, s store.Store)
}

// ctx returns a context for one test step, bounded so a hung backend fails instead of hanging.
func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	t.Cleanup(cancel)
	return c
}

// cmpOpts compare protobuf messages by content and treat nil and empty slices and maps alike.
var cmpOpts = []cmp.Option{protocmp.Transform(), cmpopts.EquateEmpty()}

// requireEqual fails the test with a diff when want and got differ (protobuf-aware).
func requireEqual(t *testing.T, want, got any, msgAndArgs ...any) {
	t.Helper()
	if d := cmp.Diff(want, got, cmpOpts...); d != "" {
		require.FailNow(t, fmt.Sprintf("mismatch (-want +got):\n%s", d), msgAndArgs...)
	}
}

// ts is a fixed timestamp n seconds after a base time.
func ts(n int64) *timestamppb.Timestamp {
	return timestamppb.New(time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC).Add(time.Duration(n) * time.Second))
}
