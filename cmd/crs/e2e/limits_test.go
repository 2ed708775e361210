package e2e

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/crsrelay/crs/internal/mockupstream"
)

// leaseTTL is the control plane's lease TTL in these tests (config control.lease_ttl).
const leaseTTL = 3 * time.Second

// limitsCluster is a control plane with a short lease TTL, three workers and the mock upstream
// behind one claude-console account.
type limitsCluster struct {
	cp      *controlPlane
	workers []*worker
	mock    *mockupstream.Server
	cred    string
}

func startLimitsCluster(t *testing.T) *limitsCluster {
	t.Helper()
	mock, mockURL := startMock(t)
	cp := startControl(t, controlOpts{Env: []string{"CRS_CONTROL__LEASE_TTL=" + leaseTTL.String()}})
	c := &limitsCluster{cp: cp, mock: mock, cred: "sk-ant-limits"}
	for range 3 {
		// Workers count days in the control plane's zone (the harness runs it in UTC).
		c.workers = append(c.workers, cp.startWorker(t, "CRS_USAGE__TIMEZONE_OFFSET_HOURS=0"))
	}
	cp.createConsoleAccount(t, "limits", mockURL, c.cred, 50)
	return c
}

// waitKey waits until every worker serves the key (the key reached their snapshots).
func (c *limitsCluster) waitKey(t *testing.T, key string) {
	t.Helper()
	for _, w := range c.workers {
		eventually(t, 10*time.Second, "key reaches "+w.url, func() bool {
			req, _ := http.NewRequest("GET", w.url+"/api/v1/key-info", nil)
			req.Header.Set("x-api-key", key)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				return false
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			return resp.StatusCode == 200
		})
	}
}

// slow makes the mock's streams take about n × delay, with 25 input and 15 output tokens.
func (c *limitsCluster) behave(n int, delay time.Duration) {
	c.mock.Configure(mockupstream.Behavior{Deltas: n, DeltaText: "x", EventDelay: delay, InputTokens: 25, OutputTokens: 15}, nil)
}

// TestLimitsAcrossWorkers is issue 4's multi-process test: one control plane, three workers and
// the mock; a key with concurrencyLimit 3 driven by 30 parallel clients spread over the workers;
// the token, cost and daily windows crossed by parallel clients with the overshoot measured; and a
// worker killed with SIGKILL while it holds slots, which are free again within the lease TTL.
func TestLimitsAcrossWorkers(t *testing.T) {
	c := startLimitsCluster(t)

	t.Run("concurrency 3 across 3 workers", func(t *testing.T) {
		_, key := c.cp.createKey(t, map[string]any{"concurrencyLimit": 3})
		c.waitKey(t, key)
		c.behave(8, 40*time.Millisecond) // ~320ms streams
		before := c.mock.Stats().ByCredential[c.cred].Requests

		const clients = 30
		var (
			wg       sync.WaitGroup
			ok       atomic.Int64
			refusals atomic.Int64
			bad      = make(chan string, clients)
		)
		deadline := time.Now().Add(60 * time.Second)
		for i := range clients {
			w := c.workers[i%len(c.workers)]
			wg.Go(func() {
				for time.Now().Before(deadline) {
					resp, err := tryPost(w.url+"/api/v1/messages", key, messagesBody("claude-sonnet-4-5", true, ""))
					if err != nil {
						bad <- err.Error()
						return
					}
					body, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					switch resp.StatusCode {
					case 200:
						if !strings.Contains(string(body), "event: message_stop") {
							bad <- "incomplete stream: " + string(body)
						}
						ok.Add(1)
						return
					case 429:
						refusals.Add(1)
						const want = `{"error":"Concurrency limit exceeded","message":"Too many concurrent requests. Limit: 3 concurrent requests","currentConcurrency":3,"concurrencyLimit":3}`
						if string(body) != want || resp.Header.Get("Retry-After") != "1" {
							bad <- fmt.Sprintf("429 not as documented: %s retry-after %q", body, resp.Header.Get("Retry-After"))
							return
						}
						time.Sleep(100 * time.Millisecond) // a client honouring Retry-After would wait 1s
					default:
						bad <- fmt.Sprintf("status %d: %s", resp.StatusCode, body)
						return
					}
				}
				bad <- "client did not get through before the deadline"
			})
		}
		wg.Wait()
		close(bad)
		for msg := range bad {
			t.Error(msg)
		}
		st := c.mock.Stats().ByCredential[c.cred]
		t.Logf("30 clients: %d served, %d refused with 429 on the way; mock max in flight %d", ok.Load(), refusals.Load(), st.MaxInFlight)
		require.EqualValues(t, clients, ok.Load(), "every client eventually got through")
		require.Greater(t, refusals.Load(), int64(0), "the limit was reached")
		require.LessOrEqual(t, st.MaxInFlight, int64(3), "never more than 3 in flight upstream for the key")
		require.EqualValues(t, clients, st.Requests-before, "refused requests never reached upstream")
	})

	t.Run("unlimited keys take no admission round trip", func(t *testing.T) {
		_, key := c.cp.createKey(t, nil)
		c.waitKey(t, key)
		c.behave(2, 0)
		w := c.workers[0]
		before := workerMetric(t, w, "crs_worker_admit_acquires_total")
		for range 5 {
			resp := post(t, w.url+"/api/v1/messages", key, messagesBody("claude-sonnet-4-5", false, ""))
			require.Equal(t, 200, resp.StatusCode)
			readAll(t, resp)
		}
		require.Equal(t, before, workerMetric(t, w, "crs_worker_admit_acquires_total"))
	})

	// Token and cost windows and the daily cap are settled after the response: a request is
	// admitted unless the pushed state already shows the limit reached. The overshoot is the
	// requests in flight when the limit is crossed plus those that start before the crossing's
	// spend is pushed back: the report batch interval (200ms), the control plane's coalescing
	// (50ms) and a store write. Clients here send back to back, 300ms requests: the round that
	// starts as the crossing round ends is admitted, the next one is refused, so the overshoot is
	// about 2 × clients − 1; it is asserted against clients × (1 + ceil(600ms / 300ms)).
	const (
		clients  = 9 // three per worker
		reqTime  = 300 * time.Millisecond
		maxDelay = 600 * time.Millisecond
	)
	c.behave(6, reqTime/6)
	for _, tc := range []struct {
		name   string
		fields map[string]any
		// per request: 40 tokens; 25 × $3/M + 15 × $15/M = $0.0003 for claude-sonnet-4-5.
		limitRequests float64
		unit          string
		perRequest    float64
		refusal       string
	}{
		{"token window", map[string]any{"rateLimitWindow": 60, "tokenLimit": 400}, 10, "tokens", 40, "已达到 Token 使用限制 (400 tokens)"},
		{"cost window", map[string]any{"rateLimitWindow": 60, "rateLimitCost": 0.003}, 10, "USD", 0.0003, "已达到费用限制 ($0.003)"},
		{"daily cost", map[string]any{"dailyCostLimit": 0.003}, 10, "USD", 0.0003, "已达到每日费用限制 ($0.003)"},
	} {
		t.Run(tc.name+" overshoot", func(t *testing.T) {
			keyID, key := c.cp.createKey(t, tc.fields)
			c.waitKey(t, key)
			var (
				wg      sync.WaitGroup
				served  atomic.Int64
				refused atomic.Int64
				bad     = make(chan string, clients)
			)
			for i := range clients {
				w := c.workers[i%len(c.workers)]
				wg.Go(func() {
					for range 100 {
						resp, err := tryPost(w.url+"/api/v1/messages", key, messagesBody("claude-sonnet-4-5", false, ""))
						if err != nil {
							bad <- err.Error()
							return
						}
						body, _ := io.ReadAll(resp.Body)
						resp.Body.Close()
						switch resp.StatusCode {
						case 200:
							served.Add(1)
						case 402, 429:
							if !strings.Contains(string(body), tc.refusal) {
								bad <- fmt.Sprintf("%d: %s", resp.StatusCode, body)
							}
							refused.Add(1)
							return
						default:
							bad <- fmt.Sprintf("status %d: %s", resp.StatusCode, body)
							return
						}
					}
					bad <- "never refused"
				})
			}
			wg.Wait()
			close(bad)
			for msg := range bad {
				t.Error(msg)
			}
			eventually(t, 10*time.Second, "usage recorded", func() bool { return keyTotals(t, c.cp, keyID).Requests == served.Load() })
			tot := keyTotals(t, c.cp, keyID)
			spent := float64(tot.InputTokens + tot.OutputTokens)
			limit := tc.limitRequests * tc.perRequest
			if tc.unit == "USD" {
				spent = tot.RatedCost
			}
			over := served.Load() - int64(tc.limitRequests)
			t.Logf("%s: limit %.4g %s (%d requests); %d clients served %d requests = %.4g %s: overshoot %d requests (%.4g %s)",
				tc.name, limit, tc.unit, int(tc.limitRequests), clients, served.Load(), spent, tc.unit, over, spent-limit, tc.unit)
			require.GreaterOrEqual(t, served.Load(), int64(tc.limitRequests), "the limit is not hit early")
			bound := int64(clients) * (1 + int64((maxDelay+reqTime-1)/reqTime))
			require.LessOrEqual(t, over, bound, "overshoot bounded by the requests in flight and the push delay")
			require.EqualValues(t, clients, refused.Load())
			// Every worker refuses now, without a request in flight anywhere.
			for _, w := range c.workers {
				resp := post(t, w.url+"/api/v1/messages", key, messagesBody("claude-sonnet-4-5", false, ""))
				body := readAll(t, resp)
				require.Contains(t, []int{402, 429}, resp.StatusCode, "%s", body)
				require.Contains(t, string(body), tc.refusal)
			}
		})
	}

	t.Run("SIGKILL frees slots within the lease TTL", func(t *testing.T) {
		_, key := c.cp.createKey(t, map[string]any{"concurrencyLimit": 3})
		c.waitKey(t, key)
		c.behave(2000, 25*time.Millisecond) // ~50s streams
		victim, other := c.workers[0], c.workers[1]
		inflight := c.mock.Stats().ByCredential[c.cred].InFlight
		for range 3 {
			resp := post(t, victim.url+"/api/v1/messages", key, messagesBody("claude-sonnet-4-5", true, ""))
			require.Equal(t, 200, resp.StatusCode)
			go func() { io.Copy(io.Discard, resp.Body); resp.Body.Close() }()
		}
		eventually(t, 5*time.Second, "3 streams upstream", func() bool {
			return c.mock.Stats().ByCredential[c.cred].InFlight == inflight+3
		})
		c.behave(2, 0)
		// Past the TTL the streams still hold their slots: the victim renews them.
		time.Sleep(leaseTTL + time.Second)
		resp := post(t, other.url+"/api/v1/messages", key, messagesBody("claude-sonnet-4-5", false, ""))
		require.Equal(t, 429, resp.StatusCode, "the victim holds every slot: %s", readAll(t, resp))

		victim.proc.stop(syscall.SIGKILL)
		killed := time.Now()
		// Right after the kill the slots are still taken: nobody released them.
		resp = post(t, other.url+"/api/v1/messages", key, messagesBody("claude-sonnet-4-5", false, ""))
		require.Equal(t, 429, resp.StatusCode, "%s", readAll(t, resp))
		var freed time.Duration
		eventually(t, leaseTTL+3*time.Second, "slots freed", func() bool {
			resp, err := tryPost(other.url+"/api/v1/messages", key, messagesBody("claude-sonnet-4-5", false, ""))
			if err != nil {
				return false
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 {
				freed = time.Since(killed)
				return true
			}
			return false
		})
		t.Logf("slots of the killed worker free again %s after SIGKILL (lease TTL %s)", freed.Round(10*time.Millisecond), leaseTTL)
		require.LessOrEqual(t, freed, leaseTTL+500*time.Millisecond, "freed within the lease TTL")
	})
}

// workerMetric reads one counter from a worker's /metrics.
func workerMetric(t *testing.T, w *worker, name string) string {
	t.Helper()
	resp, err := http.Get(w.url + "/metrics")
	require.NoError(t, err)
	body := readAll(t, resp)
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			return v
		}
	}
	t.Fatalf("metric %s not found", name)
	return ""
}
