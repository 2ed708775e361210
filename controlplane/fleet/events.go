package fleet

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	crsv1 "github.com/crsrelay/crs/gen/crs/v1"
)

// Account states (AccountStatus.state).
const (
	StateActive          = "active"
	StateRateLimited     = "rate_limited"
	StateOverloaded      = "overloaded"
	StateTempUnavailable = "temp_unavailable"
	StateUnauthorized    = "unauthorized"
	StateBlocked         = "blocked"
	StateDisabled        = "disabled"
	StateError           = "error"
)

// Account event kinds (AccountEvent.kind).
const (
	EventRateLimited  = "rate_limited"
	EventOverloaded   = "overloaded"
	EventUnauthorized = "unauthorized"
	EventForbidden    = "forbidden"
	EventBlocked      = "blocked"
	EventServerError  = "server_error"
	EventSuccess      = "success"
)

// How long event-driven states last when upstream gave no end (reference §4.4 default TTLs).
const (
	overloadedFor   = 10 * time.Minute // 529
	unauthorizedFor = 30 * time.Minute // 401 (token refresh comes with the OAuth work)
	forbiddenFor    = 30 * time.Minute // 403
	serverErrorFor  = 5 * time.Minute  // 5xx, timeouts
	unavailableFor  = time.Minute      // 503
	// maxCustomTTL caps an upstream-provided end of a temporary state
	// (UPSTREAM_ERROR_MAX_CUSTOM_TTL_SECONDS in the reference).
	maxCustomTTL = 30 * time.Minute
	// maxRateLimit caps a rate-limit reset time; weekly limits reset within 7 days, anything later
	// is a bogus header.
	maxRateLimit = 8 * 24 * time.Hour
	// maxReasonMessage bounds the upstream message quoted in a reason.
	maxReasonMessage = 200
)

// decision is what an event or the recovery tick does to an account's status.
type decision struct {
	// next is the new status; nil = leave the status alone.
	next *crsv1.AccountStatus
	// why explains the decision (the reason of next, or why nothing changed), for logs.
	why string
}

func keep(format string, args ...any) decision {
	return decision{why: fmt.Sprintf(format, args...)}
}

// stateOf returns cur's state, "active" when unset.
func stateOf(cur *crsv1.AccountStatus) string {
	if st := cur.GetState(); st != "" {
		return st
	}
	return StateActive
}

func ts(t time.Time) string { return t.UTC().Format(time.RFC3339) }

// upstreamPart describes what upstream said, for reasons: "upstream 429: <message>".
func upstreamPart(ev *crsv1.AccountEvent) string {
	var b strings.Builder
	b.WriteString("upstream")
	if ev.GetUpstreamStatus() > 0 {
		fmt.Fprintf(&b, " %d", ev.GetUpstreamStatus())
	}
	if msg := strings.TrimSpace(ev.GetReason()); msg != "" {
		if len(msg) > maxReasonMessage {
			msg = msg[:maxReasonMessage] + "…"
		}
		b.WriteString(": ")
		b.WriteString(msg)
	}
	return b.String()
}

// decideEvent returns what ev does to an account whose status is cur (reference §4.4, adapted):
//
//   - events observed before the status last changed are stale and ignored (an admin reset or a
//     newer mark wins over an older observation);
//   - rate_limited with an end and a model family limits only that family (the state stays);
//     with an end and no family the account is rate_limited until then; without an end it is not
//     marked (a 429 without a reset header is passed through);
//   - overloaded → overloaded for 10m; unauthorized → unauthorized for 30m; forbidden →
//     temp_unavailable for 30m; server_error → temp_unavailable for 5m (503: 1m); an end sent by
//     the worker replaces these defaults, capped at 30m;
//   - blocked → blocked until an admin resets it;
//   - a temporary mark never shortens or replaces a state that lasts longer, and never touches a
//     state without an end (blocked, disabled, error: those need an admin);
//   - success ends a temporary state (one with an end); it does not clear family limits, which
//     end at their reset time.
func decideEvent(cur *crsv1.AccountStatus, ev *crsv1.AccountEvent, now time.Time) decision {
	state := stateOf(cur)
	at := now
	if ev.GetObservedAt() != nil && ev.GetObservedAt().IsValid() && ev.GetObservedAt().AsTime().Unix() > 0 {
		at = ev.GetObservedAt().AsTime()
	}
	if changed := cur.GetChangedAt(); changed != nil && at.Before(changed.AsTime()) {
		return keep("%s event observed at %s, before the status changed at %s: stale", ev.GetKind(), ts(at), ts(changed.AsTime()))
	}
	var until time.Time
	if ev.GetUntil() != nil && ev.GetUntil().IsValid() {
		until = ev.GetUntil().AsTime()
	}
	custom := func(def time.Duration) time.Time {
		if until.After(now) {
			if max := now.Add(maxCustomTTL); until.After(max) {
				return max
			}
			return until
		}
		return now.Add(def)
	}

	switch ev.GetKind() {
	case EventRateLimited:
		if until.IsZero() {
			return keep("%s without a reset time: not marked (reference §4.4)", upstreamPart(ev))
		}
		if !until.After(now) {
			return keep("%s with a reset time already past (%s): not marked", upstreamPart(ev), ts(until))
		}
		if max := now.Add(maxRateLimit); until.After(max) {
			until = max
		}
		if family := strings.ToLower(ev.GetModelFamily()); family != "" {
			if old, ok := cur.GetFamilyLimitedUntil()[family]; ok && !old.AsTime().Before(until) {
				return keep("%s models already rate-limited until %s", family, ts(old.AsTime()))
			}
			next := clone(cur)
			if next.FamilyLimitedUntil == nil {
				next.FamilyLimitedUntil = map[string]*timestamppb.Timestamp{}
			}
			next.FamilyLimitedUntil[family] = timestamppb.New(until)
			if state == StateActive {
				next.State = StateActive
				next.Reason = fmt.Sprintf("%s models rate-limited until %s, other models still served (%s)", family, ts(until), upstreamPart(ev))
			}
			return decision{next: next, why: fmt.Sprintf("%s models rate-limited until %s", family, ts(until))}
		}
		return mark(cur, StateRateLimited, until, now,
			fmt.Sprintf("rate-limited until %s, the reset time upstream sent (%s)", ts(until), upstreamPart(ev)))
	case EventOverloaded:
		u := custom(overloadedFor)
		return mark(cur, StateOverloaded, u, now, fmt.Sprintf("overloaded; paused until %s (%s)", ts(u), upstreamPart(ev)))
	case EventUnauthorized:
		u := custom(unauthorizedFor)
		return mark(cur, StateUnauthorized, u, now, fmt.Sprintf("credentials refused; paused until %s (%s)", ts(u), upstreamPart(ev)))
	case EventForbidden:
		u := custom(forbiddenFor)
		return mark(cur, StateTempUnavailable, u, now, fmt.Sprintf("access forbidden; paused until %s (%s)", ts(u), upstreamPart(ev)))
	case EventServerError:
		def := serverErrorFor
		if ev.GetUpstreamStatus() == 503 {
			def = unavailableFor
		}
		u := custom(def)
		return mark(cur, StateTempUnavailable, u, now, fmt.Sprintf("upstream error; paused until %s (%s)", ts(u), upstreamPart(ev)))
	case EventBlocked:
		if state == StateDisabled || state == StateBlocked {
			return keep("account is %s already", state)
		}
		next := clone(cur)
		next.State = StateBlocked
		next.Until = nil
		next.ChangedAt = timestamppb.New(now)
		next.Reason = fmt.Sprintf("blocked by upstream; an admin must reset it (%s)", upstreamPart(ev))
		return decision{next: next, why: next.Reason}
	case EventSuccess:
		if state == StateActive {
			return keep("active already")
		}
		if cur.GetUntil() == nil {
			return keep("state %s has no end; only an admin clears it", state)
		}
		next := clone(cur)
		next.State = StateActive
		next.Until = nil
		next.ChangedAt = timestamppb.New(now)
		next.Reason = fmt.Sprintf("upstream answered successfully at %s; %s (until %s) cleared", ts(at), state, ts(cur.GetUntil().AsTime()))
		return decision{next: next, why: next.Reason}
	default:
		return keep("unknown event kind %q ignored", ev.GetKind())
	}
}

// mark sets a temporary state unless the current one lasts longer or has no end.
func mark(cur *crsv1.AccountStatus, state string, until, now time.Time, reason string) decision {
	if curState := stateOf(cur); curState != StateActive {
		if cur.GetUntil() == nil {
			return keep("account is %s with no end; %s not applied", curState, state)
		}
		if cur.GetUntil().AsTime().After(until) {
			return keep("account is %s until %s, later than %s: kept", curState, ts(cur.GetUntil().AsTime()), ts(until))
		}
	}
	next := clone(cur)
	next.State = state
	next.Until = timestamppb.New(until)
	next.ChangedAt = timestamppb.New(now)
	next.Reason = reason
	return decision{next: next, why: reason}
}

// decideRecovery ends a temporary state whose end has passed and drops expired family limits.
func decideRecovery(cur *crsv1.AccountStatus, now time.Time) decision {
	next := clone(cur)
	changed := false
	var ended []string
	for family, until := range next.GetFamilyLimitedUntil() {
		if !until.AsTime().After(now) {
			delete(next.FamilyLimitedUntil, family)
			ended = append(ended, family)
			changed = true
		}
	}
	state := stateOf(cur)
	if state != StateActive && cur.GetUntil() != nil && !cur.GetUntil().AsTime().After(now) {
		next.State = StateActive
		next.Until = nil
		next.ChangedAt = timestamppb.New(now)
		next.Reason = fmt.Sprintf("%s ended at %s; active again", state, ts(cur.GetUntil().AsTime()))
		changed = true
	} else if len(ended) > 0 && state == StateActive {
		sort.Strings(ended)
		next.Reason = fmt.Sprintf("rate limit of %s models ended", strings.Join(ended, ", "))
	}
	if !changed {
		return keep("nothing expired")
	}
	return decision{next: next, why: next.GetReason()}
}

// needsRecovery is a cheap check on a cached status before decideRecovery on a fresh one.
func needsRecovery(cur *crsv1.AccountStatus, now time.Time) bool {
	if stateOf(cur) != StateActive && cur.GetUntil() != nil && !cur.GetUntil().AsTime().After(now) {
		return true
	}
	for _, until := range cur.GetFamilyLimitedUntil() {
		if !until.AsTime().After(now) {
			return true
		}
	}
	return false
}

func clone(st *crsv1.AccountStatus) *crsv1.AccountStatus {
	if st == nil {
		return &crsv1.AccountStatus{State: StateActive}
	}
	return proto.Clone(st).(*crsv1.AccountStatus)
}
