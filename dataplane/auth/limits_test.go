package auth

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/crsrelay/crs/dataplane/snapshot"
	crsv1 "github.com/crsrelay/crs/gen/crs/v1"
)

// capInput is a request at now for a key with pushed usage u, in the reference's default zone
// (UTC+8).
func capInput(t *testing.T, k *crsv1.ApiKey, u *crsv1.KeyUsageState, model string, now time.Time) *Input {
	t.Helper()
	st := policyState(t, k, u, nil)
	return &Input{Key: st.KeyByHash("h"), State: st, Path: []byte("/api/v1/messages"), Model: model, Now: now}
}

func TestWindowLimits(t *testing.T) {
	p := NewPolicy(PolicyOptions{TZOffsetHours: 8})
	start := time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC)
	win := func(req, tok int64, cost float64) *crsv1.KeyUsageState {
		return &crsv1.KeyUsageState{WindowStart: timestamppb.New(start), WindowRequests: req, WindowTokens: tok, WindowCost: cost}
	}
	key := func(req int32, tok int64, cost float64) *crsv1.ApiKey {
		return &crsv1.ApiKey{IsActive: true, RateLimitWindow: 60, RateLimitRequests: req, TokenLimit: tok, RateLimitCost: cost}
	}
	at := start.Add(17*time.Minute + 30*time.Second) // 42.5 minutes left: the reference rounds up to 43
	tests := []struct {
		name  string
		key   *crsv1.ApiKey
		usage *crsv1.KeyUsageState
		now   time.Time
		cause error
		want  string
	}{
		{"requests at the limit", key(10, 0, 0), win(10, 0, 0), at, ErrWindowRequests,
			`{"error":"Rate limit exceeded","message":"已达到请求次数限制 (10 次)，将在 43 分钟后重置","currentRequests":10,"requestLimit":10,"resetAt":"2026-03-02T11:00:00.000Z","remainingMinutes":43}`},
		{"requests below the limit", key(10, 0, 0), win(9, 0, 0), at, nil, ""},
		{"tokens at the limit", key(0, 1000, 0), win(3, 1000, 0), at, ErrWindowTokens,
			`{"error":"Rate limit exceeded","message":"已达到 Token 使用限制 (1000 tokens)，将在 43 分钟后重置","currentTokens":1000,"tokenLimit":1000,"resetAt":"2026-03-02T11:00:00.000Z","remainingMinutes":43}`},
		{"tokens over the limit", key(0, 1000, 0), win(3, 1500, 0), at, ErrWindowTokens, ""},
		{"tokens below the limit", key(0, 1000, 0), win(3, 999, 0), at, nil, ""},
		{"cost at the limit", key(0, 0, 2.5), win(3, 50, 2.5), at, ErrWindowCost,
			`{"error":"Rate limit exceeded","message":"已达到费用限制 ($2.5)，将在 43 分钟后重置","currentCost":2.5,"costLimit":2.5,"resetAt":"2026-03-02T11:00:00.000Z","remainingMinutes":43}`},
		{"cost is ignored when a token limit is set", key(0, 1000, 1), win(3, 10, 5), at, nil, ""},
		{"requests checked before tokens", key(5, 10, 0), win(5, 20, 0), at, ErrWindowRequests, ""},
		{"last minute rounds up to 1", key(10, 0, 0), win(10, 0, 0), start.Add(59*time.Minute + 59*time.Second), ErrWindowRequests,
			`{"error":"Rate limit exceeded","message":"已达到请求次数限制 (10 次)，将在 1 分钟后重置","currentRequests":10,"requestLimit":10,"resetAt":"2026-03-02T11:00:00.000Z","remainingMinutes":1}`},
		// Reset: now - start >= window ends the window, whatever its counters.
		{"window ended: requests reset", key(10, 0, 0), win(10, 0, 0), start.Add(time.Hour), nil, ""},
		{"window ended: tokens reset", key(0, 1000, 0), win(1, 5000, 0), start.Add(2 * time.Hour), nil, ""},
		{"window ended: cost reset", key(0, 0, 1), win(1, 0, 9), start.Add(time.Hour + time.Millisecond), nil, ""},
		{"no window running", key(10, 0, 0), &crsv1.KeyUsageState{WindowRequests: 99}, at, nil, ""},
		{"no usage pushed", key(10, 0, 0), nil, at, nil, ""},
		{"window length 0 disables", &crsv1.ApiKey{IsActive: true, RateLimitRequests: 1}, win(10, 0, 0), at, nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := p.Check(capInput(t, tt.key, tt.usage, "claude-sonnet-4-5", tt.now))
			if tt.cause == nil {
				require.NoError(t, err)
				return
			}
			require.ErrorIs(t, err, tt.cause)
			r := render(t, err)
			require.Equal(t, 429, r.status)
			require.Empty(t, r.header["retry-after"], "the reference sends no Retry-After for windows")
			if tt.want != "" {
				require.Equal(t, tt.want, r.body)
			}
		})
	}
}

func TestDailyCost(t *testing.T) {
	p := NewPolicy(PolicyOptions{TZOffsetHours: 8})
	k := &crsv1.ApiKey{IsActive: true, DailyCostLimit: 5}
	// 2026-03-02 17:30 UTC is 2026-03-03 01:30 in UTC+8: the day is 2026-03-03, it resets at
	// 2026-03-04 00:00 +08:00 = 2026-03-03T16:00Z.
	now := time.Date(2026, 3, 2, 17, 30, 0, 0, time.UTC)
	const want = `{"error":{"type":"insufficient_quota","message":"已达到每日费用限制 ($5)","code":"daily_cost_limit_exceeded"},"currentCost":5.25,"costLimit":5,"resetAt":"2026-03-03T16:00:00.000Z"}`
	tests := []struct {
		name  string
		usage *crsv1.KeyUsageState
		now   time.Time
		want  string
	}{
		{"over", &crsv1.KeyUsageState{Day: "2026-03-03", DailyCost: 5.25}, now, want},
		{"at the limit", &crsv1.KeyUsageState{Day: "2026-03-03", DailyCost: 5}, now, "402"},
		{"below", &crsv1.KeyUsageState{Day: "2026-03-03", DailyCost: 4.99}, now, ""},
		// The pushed spend is labelled with yesterday (UTC date of now): a new day, spend 0.
		{"label of another day counts 0", &crsv1.KeyUsageState{Day: "2026-03-02", DailyCost: 50}, now, ""},
		{"resets at local midnight", &crsv1.KeyUsageState{Day: "2026-03-03", DailyCost: 50}, time.Date(2026, 3, 3, 16, 0, 0, 0, time.UTC), ""},
		{"one second before local midnight", &crsv1.KeyUsageState{Day: "2026-03-03", DailyCost: 50}, time.Date(2026, 3, 3, 15, 59, 59, 0, time.UTC), "402"},
		{"no usage", nil, now, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := p.Check(capInput(t, k, tt.usage, "claude-sonnet-4-5", tt.now))
			if tt.want == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorIs(t, err, ErrDailyCost)
			r := render(t, err)
			require.Equal(t, 402, r.status)
			if tt.want != "402" {
				require.Equal(t, tt.want, r.body)
			}
		})
	}
	t.Run("zone is configurable", func(t *testing.T) {
		utc := NewPolicy(PolicyOptions{TZOffsetHours: 0})
		u := &crsv1.KeyUsageState{Day: "2026-03-02", DailyCost: 6}
		r := render(t, utc.Check(capInput(t, k, u, "", now)))
		require.Contains(t, r.body, `"resetAt":"2026-03-03T00:00:00.000Z"`)
		require.NoError(t, p.Check(capInput(t, k, u, "", now)), "in UTC+8 it is already 2026-03-03")
	})
	t.Run("the control plane's zone wins over the worker's", func(t *testing.T) {
		// The worker is configured for UTC+8 but the snapshot says the control plane labels
		// spend in UTC: the day is judged in UTC, so the pushed "2026-03-02" spend counts.
		in := capInput(t, k, &crsv1.KeyUsageState{Day: "2026-03-02", DailyCost: 6}, "", now)
		snap := &crsv1.Snapshot{
			Keys:                []*crsv1.WorkerKey{{Hash: "h", Key: k}},
			Hashing:             &crsv1.KeyHashing{HmacSecret: hmacSecret},
			KeyUsage:            []*crsv1.KeyUsageState{{KeyId: k.Id, Day: "2026-03-02", DailyCost: 6}},
			TimezoneOffsetHours: proto.Int32(0),
		}
		st, err := snapshot.Apply(nil, &crsv1.SyncMessage{Version: 1, Body: &crsv1.SyncMessage_Snapshot{Snapshot: snap}})
		require.NoError(t, err)
		in.State, in.Key = st, st.KeyByHash("h")
		r := render(t, p.Check(in))
		require.Equal(t, 402, r.status)
		require.Contains(t, r.body, `"resetAt":"2026-03-03T00:00:00.000Z"`)
	})
}

func TestTotalCost(t *testing.T) {
	p := NewPolicy(PolicyOptions{TZOffsetHours: 8})
	k := &crsv1.ApiKey{IsActive: true, TotalCostLimit: 100}
	now := time.Date(2026, 3, 2, 12, 0, 0, 0, time.UTC)

	err := p.Check(capInput(t, k, &crsv1.KeyUsageState{TotalCost: 100.125}, "", now))
	require.ErrorIs(t, err, ErrTotalCost)
	r := render(t, err)
	require.Equal(t, 402, r.status)
	require.Equal(t, `{"error":{"type":"insufficient_quota","message":"已达到总费用限制 ($100)","code":"total_cost_limit_exceeded"},"currentCost":100.125,"costLimit":100}`, r.body)

	require.NoError(t, p.Check(capInput(t, k, &crsv1.KeyUsageState{TotalCost: 99.99}, "", now)))
	// Raising the limit (a quota card) lets the key through again.
	k2 := &crsv1.ApiKey{IsActive: true, TotalCostLimit: 150}
	require.NoError(t, p.Check(capInput(t, k2, &crsv1.KeyUsageState{TotalCost: 100.125}, "", now)))
}

func TestWeeklyOpusCost(t *testing.T) {
	p := NewPolicy(PolicyOptions{TZOffsetHours: 8})
	// Week starts Wednesday (3) at 09:00 local (UTC+8) = Wednesday 01:00 UTC.
	k := &crsv1.ApiKey{IsActive: true, WeeklyOpusCostLimit: 20, WeeklyResetDay: 3, WeeklyResetHour: 9}
	// Friday 2026-03-06 12:00 UTC; the week began Wednesday 2026-03-04 09:00 local.
	now := time.Date(2026, 3, 6, 12, 0, 0, 0, time.UTC)
	week := "2026-03-04T09"
	const want = `{"error":{"type":"insufficient_quota","message":"已达到 Claude 模型周费用限制 ($20)","code":"weekly_opus_cost_limit_exceeded"},"currentCost":21.5,"costLimit":20,"resetAt":"2026-03-11T01:00:00.000Z"}`
	tests := []struct {
		name  string
		usage *crsv1.KeyUsageState
		model string
		body  string
		now   time.Time
		want  string
	}{
		{"over, claude model", &crsv1.KeyUsageState{Week: week, WeeklyOpusCost: 21.5}, "claude-opus-4-1-20250805", "", now, want},
		{"over, model read from the body", &crsv1.KeyUsageState{Week: week, WeeklyOpusCost: 21.5}, "", `{"model":"claude-sonnet-4-5","messages":[]}`, now, want},
		{"over, ccr prefix and bare family name", &crsv1.KeyUsageState{Week: week, WeeklyOpusCost: 21.5}, "ccr,opus", "", now, want},
		{"over, non-Claude model passes", &crsv1.KeyUsageState{Week: week, WeeklyOpusCost: 21.5}, "gpt-5", "", now, ""},
		{"over, no model passes", &crsv1.KeyUsageState{Week: week, WeeklyOpusCost: 21.5}, "", `{"messages":[]}`, now, ""},
		{"below", &crsv1.KeyUsageState{Week: week, WeeklyOpusCost: 19.99}, "claude-opus-4-1", "", now, ""},
		{"label of the previous week counts 0", &crsv1.KeyUsageState{Week: "2026-02-25T09", WeeklyOpusCost: 99}, "claude-opus-4-1", "", now, ""},
		{"resets at the reset hour", &crsv1.KeyUsageState{Week: week, WeeklyOpusCost: 99}, "claude-opus-4-1", "", time.Date(2026, 3, 11, 1, 0, 0, 0, time.UTC), ""},
		{"one second before the reset", &crsv1.KeyUsageState{Week: week, WeeklyOpusCost: 99}, "claude-opus-4-1", "", time.Date(2026, 3, 11, 0, 59, 59, 0, time.UTC), "402"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := capInput(t, k, tt.usage, tt.model, tt.now)
			in.Body = []byte(tt.body)
			err := p.Check(in)
			if tt.want == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorIs(t, err, ErrWeeklyOpusCost)
			r := render(t, err)
			require.Equal(t, 402, r.status)
			if tt.want != "402" {
				require.Equal(t, tt.want, r.body)
			}
		})
	}
	t.Run("default week is Monday 00:00", func(t *testing.T) {
		k := &crsv1.ApiKey{IsActive: true, WeeklyOpusCostLimit: 1}
		// Sunday 2026-03-08 15:59 UTC = Sunday 23:59 local: still the week of Monday 2026-03-02.
		sun := time.Date(2026, 3, 8, 15, 59, 0, 0, time.UTC)
		u := &crsv1.KeyUsageState{Week: "2026-03-02T00", WeeklyOpusCost: 1}
		r := render(t, p.Check(capInput(t, k, u, "claude-haiku-4-5", sun)))
		require.Contains(t, r.body, `"resetAt":"2026-03-08T16:00:00.000Z"`)
		require.NoError(t, p.Check(capInput(t, k, u, "claude-haiku-4-5", sun.Add(time.Minute))))
	})
}

func TestCapOrderAndCountTokens(t *testing.T) {
	p := NewPolicy(PolicyOptions{TZOffsetHours: 8})
	now := time.Date(2026, 3, 2, 12, 0, 0, 0, time.UTC)
	k := &crsv1.ApiKey{IsActive: true, RateLimitWindow: 60, RateLimitRequests: 1, DailyCostLimit: 1, TotalCostLimit: 1, WeeklyOpusCostLimit: 1}
	u := &crsv1.KeyUsageState{WindowStart: timestamppb.New(now), WindowRequests: 1, Day: "2026-03-02", DailyCost: 2, TotalCost: 2, Week: "2026-03-02T00", WeeklyOpusCost: 2}
	in := capInput(t, k, u, "claude-opus-4-1", now)
	require.ErrorIs(t, p.Check(in), ErrWindowRequests, "window (step 7) before daily (step 8)")
	k.RateLimitWindow = 0
	require.ErrorIs(t, p.Check(capInput(t, k, u, "claude-opus-4-1", now)), ErrDailyCost)
	k.DailyCostLimit = 0
	require.ErrorIs(t, p.Check(capInput(t, k, u, "claude-opus-4-1", now)), ErrTotalCost)
	k.TotalCostLimit = 0
	require.ErrorIs(t, p.Check(capInput(t, k, u, "claude-opus-4-1", now)), ErrWeeklyOpusCost)

	// count_tokens skips client restrictions only: caps apply to it as in the reference.
	in = capInput(t, &crsv1.ApiKey{IsActive: true, TotalCostLimit: 1}, &crsv1.KeyUsageState{TotalCost: 1}, "", now)
	in.CountTokens = true
	require.ErrorIs(t, p.Check(in), ErrTotalCost)
}

func TestCheckModel(t *testing.T) {
	k := &crsv1.ApiKey{EnableModelRestriction: true, RestrictedModels: []string{"claude-opus-4-1-20250805", "claude-3-haiku"}}
	for _, tt := range []struct {
		model   string
		refused bool
	}{
		{"claude-opus-4-1-20250805", true},
		{"ccr,claude-opus-4-1-20250805", true},
		{"CCR, claude-3-haiku ", true},
		{"claude-sonnet-4-5", false},
		{"Claude-3-Haiku", false}, // exact match, as includes() is
		{"", false},
	} {
		err := CheckModel(k, tt.model)
		if !tt.refused {
			require.NoError(t, err, tt.model)
			continue
		}
		require.ErrorIs(t, err, ErrModelRestricted, tt.model)
		r := render(t, err)
		require.Equal(t, 403, r.status)
		require.Equal(t, `{"error":{"type":"forbidden","message":"暂无该模型访问权限"}}`, r.body)
	}
	require.NoError(t, CheckModel(&crsv1.ApiKey{RestrictedModels: []string{"m"}}, "m"), "restriction disabled")
	require.NoError(t, CheckModel(&crsv1.ApiKey{EnableModelRestriction: true}, "m"), "empty list")
}

func TestApplies(t *testing.T) {
	p := NewPolicy(PolicyOptions{})
	for _, tt := range []struct {
		name string
		key  *crsv1.ApiKey
		want bool
	}{
		{"plain", &crsv1.ApiKey{IsActive: true, ConcurrencyLimit: 5, TokenLimit: 100}, false},
		{"window", &crsv1.ApiKey{RateLimitWindow: 1, RateLimitCost: 1}, true},
		{"window without limits", &crsv1.ApiKey{RateLimitWindow: 1}, false},
		{"daily", &crsv1.ApiKey{DailyCostLimit: 1}, true},
		{"total", &crsv1.ApiKey{TotalCostLimit: 1}, true},
		{"weekly", &crsv1.ApiKey{WeeklyOpusCostLimit: 1}, true},
		{"clients", &crsv1.ApiKey{EnableClientRestriction: true, AllowedClients: []string{"claude_code"}}, true},
		{"clients enabled, empty list", &crsv1.ApiKey{EnableClientRestriction: true}, false},
	} {
		st := policyState(t, tt.key, nil, nil)
		require.Equal(t, tt.want, p.Applies(st.KeyByHash("h"), st), tt.name)
	}
}
