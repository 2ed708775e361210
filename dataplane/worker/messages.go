package worker

import (
	"errors"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
	"go.uber.org/zap"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/crsrelay/crs/dataplane/apierr"
	"github.com/crsrelay/crs/dataplane/auth"
	"github.com/crsrelay/crs/dataplane/fleetclient"
	"github.com/crsrelay/crs/dataplane/relay"
	"github.com/crsrelay/crs/dataplane/sched"
	"github.com/crsrelay/crs/dataplane/snapshot"
	crsv1 "github.com/crsrelay/crs/gen/crs/v1"
)

// Responses of the Messages routes (reference §1.3 steps 1-2, §1.3.5).
var (
	errNoClaudePermission = apierr.Nested(fasthttp.StatusForbidden, "permission_error", "此 API Key 无权访问 Claude 服务")
	// count_tokens words it in English.
	errNoClaudePermissionCount = apierr.Nested(fasthttp.StatusForbidden, "permission_error",
		"This API key does not have permission to access Claude")

	bodyNotObject        = []byte(`{"error":"Invalid request","message":"Request body must be a valid JSON object"}`)
	bodyMessagesNotArray = []byte(`{"error":"Invalid request","message":"Missing or invalid field: messages (must be an array)"}`)
	bodyMessagesEmpty    = []byte(`{"error":"Invalid request","message":"Messages array cannot be empty"}`)
)

// The scheduler's selections are the relay's candidates; the fleet client is the scheduler's binder.
var (
	_ relay.Candidates = (*sched.Selection)(nil)
	_ sched.Binder     = (*fleetclient.Client)(nil)
)

// ServiceClaude is the permission a key needs for the Claude routes.
const ServiceClaude = "claude"

// hasPermission reports whether a key may use a service: an empty list (or "all") allows every
// service (reference §2.1 permissions).
func hasPermission(k *crsv1.ApiKey, service string) bool {
	ps := k.GetPermissions()
	if len(ps) == 0 {
		return true
	}
	for _, p := range ps {
		if p == service || p == "all" {
			return true
		}
	}
	return false
}

// messages serves POST {/api,/claude}/v1/messages (reference §1.3).
func (w *Worker) messages(ctx *fasthttp.RequestCtx, c *call) {
	if !hasPermission(c.key, ServiceClaude) {
		writeError(ctx, errNoClaudePermission)
		return
	}
	m, err := sched.ParseMessages(ctx.PostBody())
	switch {
	case errors.Is(err, sched.ErrBodyNotObject):
		writeJSON(ctx, fasthttp.StatusBadRequest, bodyNotObject)
		return
	case errors.Is(err, sched.ErrMessagesNotArray):
		writeJSON(ctx, fasthttp.StatusBadRequest, bodyMessagesNotArray)
		return
	case errors.Is(err, sched.ErrMessagesEmpty):
		writeJSON(ctx, fasthttp.StatusBadRequest, bodyMessagesEmpty)
		return
	}
	// Reference §1.3 step 3: the model blacklist.
	if err := auth.CheckModel(c.key, m.Model); err != nil {
		writeError(ctx, err)
		return
	}
	w.relayClaude(ctx, c, relay.OpMessages, m)
}

// countTokens serves POST {/api,/claude}/v1/messages/count_tokens (reference §1.3.5): relayed like
// messages, without usage records; the body is passed on as it is.
func (w *Worker) countTokens(ctx *fasthttp.RequestCtx, c *call) {
	if !hasPermission(c.key, ServiceClaude) {
		writeError(ctx, errNoClaudePermissionCount)
		return
	}
	m, err := sched.ParseMessages(ctx.PostBody())
	if errors.Is(err, sched.ErrBodyNotObject) {
		writeJSON(ctx, fasthttp.StatusBadRequest, bodyNotObject)
		return
	}
	w.relayClaude(ctx, c, relay.OpCountTokens, m)
}

// relayClaude schedules Claude accounts for the request and hands it to the relay; done reports
// the outcome.
func (w *Worker) relayClaude(ctx *fasthttp.RequestCtx, c *call, op string, m sched.Messages) {
	started := ctx.Time()
	// Concurrency and window admission (admission.go); nil and no round trip for unlimited keys.
	adm, ok := w.admit(ctx, c, op == relay.OpCountTokens)
	if !ok {
		return
	}
	sel := w.sched.Claude(ctx, sched.Request{
		State:       c.state,
		Key:         c.key,
		Model:       m.Model,
		SessionHash: m.SessionHash,
		RequestID:   c.id,
	})
	if sel.Len() == 0 {
		if ce := w.log.Check(zap.DebugLevel, "no candidates"); ce != nil {
			ce.Write(zap.String("request_id", c.id), zap.String("key_id", c.key.GetId()),
				zap.String("model", m.Model), zap.String("reason", sel.Reason))
		}
		adm.release()
		writeError(ctx, apierr.New(fasthttp.StatusInternalServerError, apierr.ShapeFlatTimestamp,
			"Relay service error", "No available Claude accounts support the requested model: "+m.Model))
		return
	}
	cands, err := adm.candidates(sel)
	if err != nil {
		adm.release()
		writeError(ctx, err)
		return
	}
	body, query := ownedBody(ctx)
	req := &relay.Request{
		RequestID: c.id,
		KeyID:     c.key.GetId(),
		Endpoint:  string(ctx.Path()),
		Op:        op,
		Body:      body,
		Query:     query,
		Model:     m.Model,
		Stream:    m.Stream,
		Headers:   forwardedHeaders(&ctx.Request.Header),
		Started:   started,
		Refresh:   w.refresh,
	}
	route := c.route.name
	c.async = true
	w.inflight.Add(1)
	w.m.inflight.Add(1)
	if req.Stream {
		w.m.streams.Add(1)
	}
	var once atomic.Bool
	urgent := auth.SpendLimited(c.key)
	done := func(o *relay.Outcome) {
		if once.CompareAndSwap(false, true) {
			adm.release()
			w.finish(route, req, sel, o, urgent)
		}
	}
	c.relayDone = func(status int) { done(&relay.Outcome{Status: status}) }
	w.relay.Serve(ctx, req, cands, done)
}

// ownedBody returns copies of the request body and query string, which the relay may use after
// the handler returned, in one allocation. Neither has room to grow into the other.
func ownedBody(ctx *fasthttp.RequestCtx) (body, query []byte) {
	b, q := ctx.PostBody(), ctx.URI().QueryString()
	if len(b)+len(q) == 0 {
		return nil, nil
	}
	buf := make([]byte, len(b)+len(q))
	n := copy(buf, b)
	copy(buf[n:], q)
	body, query = buf[:n:n], buf[n:]
	if len(b) == 0 {
		body = nil
	}
	if len(q) == 0 {
		query = nil
	}
	return body, query
}

// finish runs once per relayed request, when the response is complete (possibly on the stream
// writer's goroutine): it reports usage and account events, binds the session, records metrics.
// urgentUsage sends the usage record at once (keys whose caps it settles).
func (w *Worker) finish(route string, req *relay.Request, sel *sched.Selection, o *relay.Outcome, urgentUsage bool) {
	defer w.inflight.Done()
	w.m.inflight.Add(-1)
	if req.Stream {
		w.m.streams.Add(-1)
	}
	if o == nil {
		o = &relay.Outcome{Status: fasthttp.StatusInternalServerError}
	}
	if u := o.Usage; u != nil && req.Op == relay.OpMessages {
		fillUsage(u, req, o)
		if urgentUsage {
			w.fleet.ReportUsageNow(u)
		} else {
			w.fleet.ReportUsage(u)
		}
	}
	st := w.fleet.State()
	for _, ev := range o.Events {
		if ev == nil || (ev.GetKind() == "success" && !successNews(st, ev)) {
			continue
		}
		if ev.GetRequestId() == "" {
			ev.RequestId = req.RequestID
		}
		w.fleet.ReportEvent(ev)
	}
	if o.Account != nil && o.Status >= 200 && o.Status < 300 {
		sel.Served(o.Account.GetId())
	}
	platform := o.Account.GetPlatform()
	if platform == "" && o.Account != nil {
		platform = ServiceClaude
	}
	w.m.relayed(route, platform, o, time.Since(req.Started))
}

// successNews reports whether a success event tells the control plane something: the account's
// pushed state is not plainly active (a limit that may be over, an error state) or the event's
// model family is marked limited. Successes on healthy accounts are not reported, so a busy
// worker does not send one event per request.
func successNews(st *snapshot.State, ev *crsv1.AccountEvent) bool {
	if st == nil {
		return false
	}
	a := st.Account(ev.GetAccountId())
	if a == nil {
		return false
	}
	s := a.GetStatus()
	if state := s.GetState(); state != "" && state != "active" {
		return true
	}
	return ev.GetModelFamily() != "" && s.GetFamilyLimitedUntil()[ev.GetModelFamily()] != nil
}

// fillUsage completes a usage record with what the worker knows, where the relay left it empty.
func fillUsage(u *crsv1.UsageRecord, req *relay.Request, o *relay.Outcome) {
	if u.RequestId == "" {
		u.RequestId = req.RequestID
	}
	if u.KeyId == "" {
		u.KeyId = req.KeyID
	}
	if u.AccountId == "" {
		u.AccountId = o.Account.GetId()
	}
	if u.AccountType == "" {
		u.AccountType = o.Account.GetType()
	}
	if u.Model == "" {
		u.Model = req.Model
	}
	if u.Status == 0 {
		u.Status = int32(o.Status)
	}
	if u.Endpoint == "" {
		u.Endpoint = req.Endpoint
	}
	if u.StartedAt == nil {
		u.StartedAt = timestamppb.New(req.Started)
	}
	if u.DurationMs == 0 {
		u.DurationMs = time.Since(req.Started).Milliseconds()
	}
	u.Stream = u.Stream || req.Stream
}

// forwardHeaders is the client header allow-list of reference §1.3.1 (src/utils/headerFilter.js
// filterForClaude), lowercase, without the hop-by-hop "connection". Everything else, the client's
// x-api-key and authorization first of all, stays in the worker. Each name maps to itself, so that
// forwardedHeaders reuses these strings instead of allocating names.
var forwardHeaders = func() map[string]string {
	m := map[string]string{}
	for _, h := range []string{
		"accept", "accept-language", "anthropic-beta", "anthropic-version",
		"anthropic-dangerous-direct-browser-access", "content-type", "sec-fetch-mode",
		"user-agent", "x-app",
		"x-stainless-arch", "x-stainless-helper-method", "x-stainless-lang", "x-stainless-os",
		"x-stainless-package-version", "x-stainless-retry-count", "x-stainless-runtime",
		"x-stainless-runtime-version", "x-stainless-timeout",
	} {
		m[h] = h
	}
	return m
}()

// forwardedHeaders copies the allow-listed client headers, with lowercase names. The values are
// copied into one string that they share (two allocations per request, not one per header).
func forwardedHeaders(h *fasthttp.RequestHeader) []relay.Header {
	type span struct {
		name       string
		start, end int
	}
	var (
		arr    [24]span
		found  = arr[:0]
		values = make([]byte, 0, 512)
		buf    [64]byte
	)
	for k, v := range h.All() {
		if len(k) > len(buf) {
			continue
		}
		lk := buf[:len(k)]
		for i, ch := range k {
			if 'A' <= ch && ch <= 'Z' {
				ch += 'a' - 'A'
			}
			lk[i] = ch
		}
		name, ok := forwardHeaders[string(lk)]
		if !ok {
			continue
		}
		found = append(found, span{name, len(values), len(values) + len(v)})
		values = append(values, v...)
	}
	all := string(values)
	out := make([]relay.Header, len(found))
	for i, f := range found {
		out[i] = relay.Header{Name: f.name, Value: all[f.start:f.end]}
	}
	return out
}
