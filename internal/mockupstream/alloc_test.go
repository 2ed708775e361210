//go:build !race

package mockupstream

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// The per-request parts of the hot path must not allocate: the mock is the benchmarks' baseline.
func TestHotPathAllocations(t *testing.T) {
	body := []byte(streamBody)
	set := newBehaviorSet(DefaultBehavior(), map[string]Behavior{"b": DefaultBehavior()})
	st := newStats()
	st.forCredential([]byte("a"))
	cred := []byte("a")
	buf := make([]byte, 0, 4096)
	tests := map[string]func(){
		"scanRequest": func() { scanRequest(body) },
		"lookup":      func() { set.lookup(cred) },
		"counters":    func() { c := st.forCredential(cred); c.begin(); c.end(false) },
		"events": func() {
			q := eventSeq{b: set.def, model: []byte(`"m"`), msgID: []byte("msg_01x")}
			for {
				var ok bool
				if buf, ok = q.next(buf[:0]); !ok {
					return
				}
			}
		},
		"appendID": func() { var a [32]byte; appendID(a[:0], requestIDPrefix, requestIDRand) },
	}
	for name, fn := range tests {
		t.Run(name, func(t *testing.T) {
			require.Zero(t, testing.AllocsPerRun(100, fn))
		})
	}
}
