package e2e

import (
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/crsrelay/crs/internal/mockupstream"
	"github.com/crsrelay/crs/internal/testenv"
)

// restart stops the control plane with sig and starts it again on the same ports and store.
func (cp *controlPlane) restart(t *testing.T, sig syscall.Signal) {
	t.Helper()
	cp.proc.stop(sig)
	cp.proc = startProc(t, "control(restarted)", cp.env, "control")
	waitHTTP(t, cp.httpURL+"/readyz", 200, 30*time.Second)
}

// TestUsageSurvivesRestarts drives streaming load through two workers while one worker is
// restarted and the control plane is killed (SIGKILL) and restarted. Every response a client
// received completely is accounted exactly once: the key's totals equal the sum of the usage the
// clients saw. Workers buffer records while the control plane is away and resend unacknowledged
// batches; the control plane ignores duplicates by request id.
func TestUsageSurvivesRestarts(t *testing.T) {
	mock, mockURL := startMock(t)
	mock.Configure(mockupstream.Behavior{Deltas: 5, EventDelay: 2 * time.Millisecond, InputTokens: 11, OutputTokens: 7, CacheCreation5m: 3, CacheRead: 2}, nil)
	redisURL := "redis://" + testenv.StartRedis(t) + "/0"
	cp := startControl(t, controlOpts{RedisURL: redisURL})
	w1 := cp.startWorker(t)
	w2 := cp.startWorker(t)
	cp.createConsoleAccount(t, "a", mockURL, "sk-ant-a", 50)
	keyID, key := cp.createKey(t, nil)
	readAll(t, waitForRelay(t, w1, key, messagesBody("claude-sonnet-4-5", true, "")))
	readAll(t, waitForRelay(t, w2, key, messagesBody("claude-sonnet-4-5", true, "")))
	eventually(t, 5*time.Second, "warm-up usage recorded", func() bool { return keyTotals(t, cp, keyID).Requests == 2 })

	var (
		complete atomic.Int64
		input    atomic.Int64
		output   atomic.Int64
		stop     atomic.Bool
		wg       sync.WaitGroup
		workers  = []*worker{w1, w2}
		wmu      sync.Mutex
	)
	complete.Store(2)
	input.Store(22)
	output.Store(14)
	for c := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; !stop.Load(); i++ {
				wmu.Lock()
				w := workers[(c+i)%2]
				wmu.Unlock()
				resp, err := tryPost(w.url+"/api/v1/messages", key, messagesBody("claude-sonnet-4-5", true, ""))
				if err != nil {
					time.Sleep(20 * time.Millisecond)
					continue
				}
				events := readEventsQuiet(resp)
				u, ok := usageOfStream(events)
				if resp.StatusCode == 200 && ok {
					complete.Add(1)
					input.Add(u.Input)
					output.Add(u.Output)
				}
			}
		}()
	}

	time.Sleep(700 * time.Millisecond)
	// A worker goes away (graceful stop) and comes back on the same port.
	port := w2.port
	w2.proc.stop(syscall.SIGTERM)
	wmu.Lock()
	workers[1] = cp.startWorkerOnPort(t, port)
	wmu.Unlock()
	time.Sleep(500 * time.Millisecond)
	// The control plane dies hard; workers keep serving from their snapshots and buffer usage.
	cp.proc.stop(syscall.SIGKILL)
	time.Sleep(1500 * time.Millisecond)
	cp.restart(t, syscall.SIGKILL)
	time.Sleep(700 * time.Millisecond)
	stop.Store(true)
	wg.Wait()

	want := complete.Load()
	require.Greater(t, want, int64(20), "the load produced too few complete responses to mean anything")
	eventually(t, 15*time.Second, "every complete response accounted", func() bool {
		return keyTotals(t, cp, keyID).Requests >= want
	})
	time.Sleep(500 * time.Millisecond) // a late duplicate would show up now
	tot := keyTotals(t, cp, keyID)
	require.Equal(t, want, tot.Requests, "requests: nothing lost, nothing counted twice")
	require.Equal(t, input.Load(), tot.InputTokens)
	require.Equal(t, output.Load(), tot.OutputTokens)
	t.Logf("complete responses: %d, accounted: %d", want, tot.Requests)
}
