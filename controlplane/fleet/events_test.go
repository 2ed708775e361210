package fleet

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/types/known/timestamppb"

	crsv1 "github.com/crsrelay/crs/gen/crs/v1"
)

func TestDecideEvent(t *testing.T) {
	now := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	at := func(d time.Duration) *timestamppb.Timestamp { return timestamppb.New(now.Add(d)) }
	active := &crsv1.AccountStatus{State: StateActive}

	tests := []struct {
		name      string
		cur       *crsv1.AccountStatus
		ev        *crsv1.AccountEvent
		wantState string // "" = no change
		wantUntil time.Duration
		noUntil   bool
		family    map[string]time.Duration
		reason    string // substring of the new reason
	}{
		{
			name:      "429 with reset, no family: rate limited until reset",
			cur:       active,
			ev:        &crsv1.AccountEvent{Kind: EventRateLimited, UpstreamStatus: 429, Until: at(3 * time.Hour)},
			wantState: StateRateLimited, wantUntil: 3 * time.Hour, reason: "reset time upstream sent",
		},
		{
			name:      "429 with reset and family: only the family",
			cur:       active,
			ev:        &crsv1.AccountEvent{Kind: EventRateLimited, UpstreamStatus: 429, Until: at(time.Hour), ModelFamily: "Opus"},
			wantState: StateActive, noUntil: true, family: map[string]time.Duration{"opus": time.Hour}, reason: "opus models rate-limited",
		},
		{
			name: "family limit keeps a later existing one",
			cur: &crsv1.AccountStatus{State: StateActive,
				FamilyLimitedUntil: map[string]*timestamppb.Timestamp{"opus": at(2 * time.Hour)}},
			ev: &crsv1.AccountEvent{Kind: EventRateLimited, Until: at(time.Hour), ModelFamily: "opus"},
		},
		{
			name: "family limit extends an earlier one and keeps others",
			cur: &crsv1.AccountStatus{State: StateActive,
				FamilyLimitedUntil: map[string]*timestamppb.Timestamp{"opus": at(time.Hour), "haiku": at(time.Hour)}},
			ev:        &crsv1.AccountEvent{Kind: EventRateLimited, Until: at(2 * time.Hour), ModelFamily: "opus"},
			wantState: StateActive, noUntil: true, family: map[string]time.Duration{"opus": 2 * time.Hour, "haiku": time.Hour},
		},
		{
			name: "429 without reset: not marked",
			cur:  active,
			ev:   &crsv1.AccountEvent{Kind: EventRateLimited, UpstreamStatus: 429},
		},
		{
			name: "429 with a past reset: not marked",
			cur:  active,
			ev:   &crsv1.AccountEvent{Kind: EventRateLimited, Until: at(-time.Minute)},
		},
		{
			name:      "429 with an absurd reset is capped",
			cur:       active,
			ev:        &crsv1.AccountEvent{Kind: EventRateLimited, Until: at(365 * 24 * time.Hour)},
			wantState: StateRateLimited, wantUntil: maxRateLimit,
		},
		{
			name:      "overloaded: 10 minutes",
			cur:       active,
			ev:        &crsv1.AccountEvent{Kind: EventOverloaded, UpstreamStatus: 529},
			wantState: StateOverloaded, wantUntil: 10 * time.Minute, reason: "overloaded",
		},
		{
			name:      "overloaded with an end from the worker, capped at 30 minutes",
			cur:       active,
			ev:        &crsv1.AccountEvent{Kind: EventOverloaded, Until: at(2 * time.Hour)},
			wantState: StateOverloaded, wantUntil: 30 * time.Minute,
		},
		{
			name:      "unauthorized: 30 minutes",
			cur:       active,
			ev:        &crsv1.AccountEvent{Kind: EventUnauthorized, UpstreamStatus: 401, Reason: "invalid x-api-key"},
			wantState: StateUnauthorized, wantUntil: 30 * time.Minute, reason: "upstream 401: invalid x-api-key",
		},
		{
			name:      "forbidden: temp unavailable 30 minutes",
			cur:       active,
			ev:        &crsv1.AccountEvent{Kind: EventForbidden, UpstreamStatus: 403},
			wantState: StateTempUnavailable, wantUntil: 30 * time.Minute,
		},
		{
			name:      "server error: 5 minutes",
			cur:       active,
			ev:        &crsv1.AccountEvent{Kind: EventServerError, UpstreamStatus: 500},
			wantState: StateTempUnavailable, wantUntil: 5 * time.Minute,
		},
		{
			name:      "503: 1 minute",
			cur:       active,
			ev:        &crsv1.AccountEvent{Kind: EventServerError, UpstreamStatus: 503},
			wantState: StateTempUnavailable, wantUntil: time.Minute,
		},
		{
			name:      "blocked: no end",
			cur:       &crsv1.AccountStatus{State: StateRateLimited, Until: at(time.Hour)},
			ev:        &crsv1.AccountEvent{Kind: EventBlocked, UpstreamStatus: 400, Reason: "This organization has been disabled."},
			wantState: StateBlocked, noUntil: true, reason: "an admin must reset it",
		},
		{
			name: "blocked on a disabled account: kept",
			cur:  &crsv1.AccountStatus{State: StateDisabled},
			ev:   &crsv1.AccountEvent{Kind: EventBlocked},
		},
		{
			name: "a shorter mark does not replace a longer one",
			cur:  &crsv1.AccountStatus{State: StateRateLimited, Until: at(time.Hour)},
			ev:   &crsv1.AccountEvent{Kind: EventServerError, UpstreamStatus: 500},
		},
		{
			name:      "a longer mark replaces a shorter one",
			cur:       &crsv1.AccountStatus{State: StateTempUnavailable, Until: at(time.Minute)},
			ev:        &crsv1.AccountEvent{Kind: EventOverloaded},
			wantState: StateOverloaded, wantUntil: 10 * time.Minute,
		},
		{
			name: "timed marks never touch a state without an end",
			cur:  &crsv1.AccountStatus{State: StateBlocked},
			ev:   &crsv1.AccountEvent{Kind: EventUnauthorized},
		},
		{
			name: "error state needs an admin",
			cur:  &crsv1.AccountStatus{State: StateError},
			ev:   &crsv1.AccountEvent{Kind: EventRateLimited, Until: at(time.Hour)},
		},
		{
			name:      "success clears a timed state",
			cur:       &crsv1.AccountStatus{State: StateOverloaded, Until: at(5 * time.Minute), ChangedAt: at(-time.Minute)},
			ev:        &crsv1.AccountEvent{Kind: EventSuccess, ObservedAt: at(0)},
			wantState: StateActive, noUntil: true, reason: "overloaded",
		},
		{
			name: "success observed before the mark is stale",
			cur:  &crsv1.AccountStatus{State: StateOverloaded, Until: at(5 * time.Minute), ChangedAt: at(-time.Minute)},
			ev:   &crsv1.AccountEvent{Kind: EventSuccess, ObservedAt: at(-2 * time.Minute)},
		},
		{
			name: "success does not clear blocked",
			cur:  &crsv1.AccountStatus{State: StateBlocked},
			ev:   &crsv1.AccountEvent{Kind: EventSuccess},
		},
		{
			name: "success on an active account: nothing",
			cur:  active,
			ev:   &crsv1.AccountEvent{Kind: EventSuccess},
		},
		{
			name: "failure observed before an admin reset is stale",
			cur:  &crsv1.AccountStatus{State: StateActive, ChangedAt: at(-time.Second)},
			ev:   &crsv1.AccountEvent{Kind: EventOverloaded, ObservedAt: at(-time.Minute)},
		},
		{
			name:      "nil status counts as active",
			cur:       nil,
			ev:        &crsv1.AccountEvent{Kind: EventForbidden},
			wantState: StateTempUnavailable, wantUntil: 30 * time.Minute,
		},
		{
			name: "unknown kind",
			cur:  active,
			ev:   &crsv1.AccountEvent{Kind: "teapot"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := decideEvent(tt.cur, tt.ev, now)
			require.NotEmpty(t, d.why)
			if tt.wantState == "" {
				require.Nil(t, d.next, "expected no change, got %v (%s)", d.next, d.why)
				return
			}
			require.NotNil(t, d.next, "expected a change: %s", d.why)
			require.Equal(t, tt.wantState, d.next.GetState())
			if tt.noUntil {
				require.Nil(t, d.next.GetUntil())
			} else {
				require.True(t, d.next.GetUntil().AsTime().Equal(now.Add(tt.wantUntil)), "until %v", d.next.GetUntil().AsTime())
			}
			if tt.family != nil {
				require.Len(t, d.next.GetFamilyLimitedUntil(), len(tt.family))
				for f, until := range tt.family {
					require.True(t, d.next.GetFamilyLimitedUntil()[f].AsTime().Equal(now.Add(until)), f)
				}
			}
			if tt.reason != "" {
				require.Contains(t, d.next.GetReason(), tt.reason)
			}
			if tt.cur != nil {
				require.NotSame(t, tt.cur, d.next, "the current status is not modified")
			}
		})
	}
}

func TestDecideRecovery(t *testing.T) {
	now := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	at := func(d time.Duration) *timestamppb.Timestamp { return timestamppb.New(now.Add(d)) }
	tests := []struct {
		name      string
		cur       *crsv1.AccountStatus
		wantState string // "" = no change
		family    []string
	}{
		{"ended state", &crsv1.AccountStatus{State: StateRateLimited, Until: at(-time.Second)}, StateActive, nil},
		{"running state", &crsv1.AccountStatus{State: StateRateLimited, Until: at(time.Second)}, "", nil},
		{"state without end", &crsv1.AccountStatus{State: StateBlocked}, "", nil},
		{"active", &crsv1.AccountStatus{State: StateActive}, "", nil},
		{
			"expired family dropped, running kept",
			&crsv1.AccountStatus{State: StateActive, FamilyLimitedUntil: map[string]*timestamppb.Timestamp{"opus": at(-time.Second), "sonnet": at(time.Hour)}},
			StateActive, []string{"sonnet"},
		},
		{
			"family expiry on a running state keeps the state",
			&crsv1.AccountStatus{State: StateOverloaded, Until: at(time.Minute), FamilyLimitedUntil: map[string]*timestamppb.Timestamp{"opus": at(-time.Second)}},
			StateOverloaded, []string{},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			require.Equal(t, tt.wantState != "", needsRecovery(tt.cur, now))
			d := decideRecovery(tt.cur, now)
			if tt.wantState == "" {
				require.Nil(t, d.next)
				return
			}
			require.NotNil(t, d.next)
			require.Equal(t, tt.wantState, d.next.GetState())
			if tt.wantState == StateActive {
				require.Nil(t, d.next.GetUntil())
			}
			if tt.family != nil {
				got := []string{}
				for f := range d.next.GetFamilyLimitedUntil() {
					got = append(got, f)
				}
				require.ElementsMatch(t, tt.family, got)
			}
		})
	}
}
