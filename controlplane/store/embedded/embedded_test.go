package embedded

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	bolt "go.etcd.io/bbolt"

	"github.com/crsrelay/crs/controlplane/store"
	"github.com/crsrelay/crs/controlplane/store/storetest"
	crsv1 "github.com/crsrelay/crs/gen/crs/v1"
)

func openT(t *testing.T, dir string) *Store {
	t.Helper()
	s, err := Open(dir)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, s.Close()) })
	return s
}

func TestConformance(t *testing.T) {
	storetest.Run(t,
		func(t *testing.T) store.Store { return openT(t, t.TempDir()) },
		storetest.WithReopen(func(t *testing.T, closed store.Store) store.Store {
			return openT(t, filepath.Dir(closed.(*Store).Path()))
		}),
	)
}

func TestOpenCreatesPrivateFile(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "nested", "data")
	s := openT(t, dir)
	require.Equal(t, filepath.Join(dir, FileName), s.Path())
	fi, err := os.Stat(s.Path())
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), fi.Mode().Perm())
}

func TestOpenTwiceFailsOnLock(t *testing.T) {
	dir := t.TempDir()
	_ = openT(t, dir)
	_, err := open(dir, 50*time.Millisecond)
	require.Error(t, err, "a second process (or Store) must not open the same file")
}

func TestSweepDeletesExpired(t *testing.T) {
	s := openT(t, t.TempDir())
	ctx := t.Context()
	_, _, err := s.Bind(ctx, "claude", "old", "a1", time.Minute, false)
	require.NoError(t, err)
	_, _, err = s.Bind(ctx, "claude", "fresh", "a2", 3*time.Hour, false)
	require.NoError(t, err)
	// Rebinding moves the expiry: the sweep must use the current one, not the first.
	_, _, err = s.Bind(ctx, "claude", "rebound", "a3", time.Minute, false)
	require.NoError(t, err)
	_, _, err = s.Bind(ctx, "claude", "rebound", "a4", 3*time.Hour, true)
	require.NoError(t, err)
	_, err = s.RecordUsage(ctx, &store.UsageEntry{Record: &crsv1.UsageRecord{RequestId: "r1"}})
	require.NoError(t, err)

	require.NoError(t, s.sweep(time.Now().Add(2*time.Hour)))

	require.Equal(t, 2, s.count(t, bucketBind), "fresh and rebound stay")
	require.Equal(t, 2, s.count(t, bucketBindExp))
	require.Equal(t, 1, s.count(t, bucketUsageReq), "request ids live 7 days")

	require.NoError(t, s.sweep(time.Now().Add(DedupTTL+time.Hour)))
	require.Zero(t, s.count(t, bucketBind))
	require.Zero(t, s.count(t, bucketBindExp))
	require.Zero(t, s.count(t, bucketUsageReq))
	require.Zero(t, s.count(t, bucketUsageReqExp))
}

func (s *Store) count(t *testing.T, bucket []byte) int {
	t.Helper()
	n := 0
	require.NoError(t, s.db.View(func(tx *bolt.Tx) error {
		n = tx.Bucket(bucket).Stats().KeyN
		return nil
	}))
	return n
}
