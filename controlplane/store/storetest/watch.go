package storetest

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/crsrelay/crs/controlplane/store"
	crsv1 "github.com/crsrelay/crs/gen/crs/v1"
)

// watchWait bounds how long a change may take to arrive.
const watchWait = 5 * time.Second

// ExpectChanges reads len(want) changes from ch and requires them to be want, in order.
func ExpectChanges(t *testing.T, ch <-chan store.Change, want ...store.Change) {
	t.Helper()
	var got []store.Change
	timeout := time.After(watchWait)
	for len(got) < len(want) {
		select {
		case c, ok := <-ch:
			require.True(t, ok, "watch channel closed after %v, want %v", got, want)
			got = append(got, c)
		case <-timeout:
			require.FailNow(t, "changes did not arrive", "got %v, want %v", got, want)
		}
	}
	require.Equal(t, want, got)
}

func watch(t *testing.T, s store.Store) <-chan store.Change {
	t.Helper()
	c, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	ch, err := s.Watch(c)
	require.NoError(t, err)
	return ch
}

var watchTests = []test{
	{"EveryMutationKind", func(t *testing.T, s store.Store) {
		ch := watch(t, s)
		steps := []struct {
			name string
			do   func() error
			want store.Change
		}{
			{"create key", func() error { return s.CreateKey(ctx(t), newKey("k1", "h1", 1)) }, store.Change{Kind: store.KindKey, ID: "k1"}},
			{"update key", func() error { return s.UpdateKey(ctx(t), newKey("k1", "h2", 1)) }, store.Change{Kind: store.KindKey, ID: "k1"}},
			{"create account", func() error { return s.CreateAccount(ctx(t), newAccount("a1", 1)) }, store.Change{Kind: store.KindAccount, ID: "a1"}},
			{"update account", func() error { return s.UpdateAccount(ctx(t), newAccount("a1", 1)) }, store.Change{Kind: store.KindAccount, ID: "a1"}},
			{"swap credentials", func() error {
				_, err := s.SwapAccountCredentials(ctx(t), "a1", 1, []byte("v2"))
				return err
			}, store.Change{Kind: store.KindAccount, ID: "a1"}},
			{"set status", func() error {
				return s.SetAccountStatus(ctx(t), "a1", &crsv1.AccountStatus{State: "overloaded"})
			}, store.Change{Kind: store.KindAccount, ID: "a1"}},
			{"create group", func() error { return s.CreateGroup(ctx(t), newGroup("g1", 1)) }, store.Change{Kind: store.KindGroup, ID: "g1"}},
			{"update group", func() error { return s.UpdateGroup(ctx(t), newGroup("g1", 2)) }, store.Change{Kind: store.KindGroup, ID: "g1"}},
			{"put settings", func() error { return s.PutSettings(ctx(t), &crsv1.Settings{ClaudeCodeOnlyEnabled: true}) }, store.Change{Kind: store.KindSettings}},
			{"record usage", func() error {
				_, err := s.RecordUsage(ctx(t), u1.entry())
				return err
			}, store.Change{Kind: store.KindKeyUsage, ID: u1.key}},
			{"delete group", func() error { return s.DeleteGroup(ctx(t), "g1") }, store.Change{Kind: store.KindGroup, ID: "g1"}},
			{"delete account", func() error { return s.DeleteAccount(ctx(t), "a1") }, store.Change{Kind: store.KindAccount, ID: "a1"}},
			{"delete key", func() error { return s.DeleteKey(ctx(t), "k1") }, store.Change{Kind: store.KindKey, ID: "k1"}},
		}
		for _, st := range steps {
			require.NoError(t, st.do(), st.name)
			ExpectChanges(t, ch, st.want)
		}
	}},
	{"NoChangeWithoutMutation", func(t *testing.T, s store.Store) {
		require.NoError(t, s.CreateKey(ctx(t), newKey("k1", "h1", 1)))
		_, err := s.RecordUsage(ctx(t), u1.entry())
		require.NoError(t, err)
		ch := watch(t, s)
		// Failed mutations, reads, duplicate usage, secrets and bindings publish nothing...
		require.ErrorIs(t, s.CreateKey(ctx(t), newKey("k1", "h9", 1)), store.ErrAlreadyExists)
		require.ErrorIs(t, s.UpdateGroup(ctx(t), newGroup("g9", 1)), store.ErrNotFound)
		_, err = s.SwapAccountCredentials(ctx(t), "a9", 0, nil)
		require.ErrorIs(t, err, store.ErrNotFound)
		stored, err := s.RecordUsage(ctx(t), u1.entry())
		require.NoError(t, err)
		require.False(t, stored)
		_, err = s.GetKey(ctx(t), "k1")
		require.NoError(t, err)
		_, err = s.PutSecretIfAbsent(ctx(t), "x", []byte("y"))
		require.NoError(t, err)
		_, _, err = s.Bind(ctx(t), "claude", "s1", "a1", time.Hour, false)
		require.NoError(t, err)
		// ...so the next change seen is this one.
		require.NoError(t, s.CreateGroup(ctx(t), newGroup("g1", 1)))
		ExpectChanges(t, ch, store.Change{Kind: store.KindGroup, ID: "g1"})
	}},
	{"EverySubscriberAndCancel", func(t *testing.T, s store.Store) {
		c1, cancel1 := context.WithCancel(context.Background())
		defer cancel1()
		ch1, err := s.Watch(c1)
		require.NoError(t, err)
		ch2 := watch(t, s)

		require.NoError(t, s.PutSettings(ctx(t), &crsv1.Settings{}))
		ExpectChanges(t, ch1, store.Change{Kind: store.KindSettings})
		ExpectChanges(t, ch2, store.Change{Kind: store.KindSettings})

		cancel1()
		deadline := time.After(watchWait)
		for closed := false; !closed; {
			select {
			case _, ok := <-ch1:
				closed = !ok
			case <-deadline:
				require.FailNow(t, "channel not closed after its context ended")
			}
		}
		// The other subscriber is unaffected.
		require.NoError(t, s.CreateGroup(ctx(t), newGroup("g1", 1)))
		ExpectChanges(t, ch2, store.Change{Kind: store.KindGroup, ID: "g1"})
	}},
	{"SlowSubscriberNeverBlocksWriters", func(t *testing.T, s store.Store) {
		_ = watch(t, s) // never read
		const writers, each = 16, 100
		var wg sync.WaitGroup
		done := make(chan struct{})
		for w := range writers {
			wg.Go(func() {
				for i := range each {
					e := u2
					e.req = fmt.Sprintf("w%d-%d", w, i)
					if _, err := s.RecordUsage(ctx(t), e.entry()); err != nil {
						t.Errorf("record: %v", err)
						return
					}
				}
			})
		}
		go func() { wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(60 * time.Second):
			require.FailNow(t, "writers blocked behind a subscriber that does not read")
		}
		// A new subscriber still gets changes.
		ch := watch(t, s)
		require.NoError(t, s.CreateGroup(ctx(t), newGroup("g1", 1)))
		for {
			select {
			case c := <-ch:
				if c == (store.Change{Kind: store.KindGroup, ID: "g1"}) {
					return
				}
			case <-time.After(watchWait):
				require.FailNow(t, "new subscriber got no change")
			}
		}
	}},
}
