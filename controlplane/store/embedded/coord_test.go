package embedded

import (
	"path/filepath"
	"testing"

	"github.com/crsrelay/crs/controlplane/store"
	"github.com/crsrelay/crs/controlplane/store/storetest"
)

func TestCoordConformance(t *testing.T) {
	storetest.RunCoord(t,
		func(t *testing.T) store.Store { return openT(t, t.TempDir()) },
		storetest.WithReopen(func(t *testing.T, closed store.Store) store.Store {
			return openT(t, filepath.Dir(closed.(*Store).Path()))
		}),
	)
}
