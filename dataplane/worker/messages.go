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
	rc := w.newRelayCall(adm, c.route.name)
	w.sched.ClaudeInto(ctx, sched.Request{
		State:       c.state,
		Key:         c.key,
		Model:       m.Model,
		SessionHash: m.SessionHash,
		RequestID:   c.id,
		Now:         w.requestNow(ctx),
	}, &rc.sel)
	sel := &rc.sel
	if sel.Len() == 0 {
		if ce := w.log.Check(zap.DebugLevel, "no candidates"); ce != nil {
			ce.Write(zap.String("request_id", c.id), zap.String("key_id", c.key.GetId()),
				zap.String("model", m.Model), zap.String("reason", sel.Reason()))
		}
		adm.release()
		rc.recycle()
		writeError(ctx, apierr.New(fasthttp.StatusInternalServerError, apierr.ShapeFlatTimestamp,
			"Relay service error", "No available Claude accounts support the requested model: "+m.Model))
		return
	}
	cands, err := adm.candidates(sel)
	if err != nil {
		adm.release()
		rc.recycle()
		writeError(ctx, err)
		return
	}
	rc.req = relay.Request{
		RequestID: c.id,
		KeyID:     c.key.GetId(),
		Endpoint:  c.endpoint(ctx),
		Op:        op,
		// Not copied: the relay reads them only while Serve runs (see relay.Request).
		Body:    ctx.PostBody(),
		Query:   ctx.URI().QueryString(),
		Model:   m.Model,
		Stream:  m.Stream,
		Headers: appendForwarded(rc.headers[:0], &ctx.Request.Header),
		Started: started,
		Refresh: w.refresh,
	}
	rc.urgent = auth.SpendLimited(c.key)
	c.async = true
	w.inflight.Add(1)
	w.m.inflight.Add(1)
	if rc.req.Stream {
		w.m.streams.Add(1)
	}
	c.relay = rc
	w.relay.Serve(ctx, &rc.req, cands, rc.doneFunc)
	// The client's body is fasthttp's, reused once the response is written; a stream still being
	// written must not reach it (nothing does: this makes sure).
	rc.req.Body, rc.req.Query = nil, nil
}

// relayCall is one request the relay has taken: the Request, its candidates and what done needs,
// in one object. It is created per request and lives until done; done may run on the stream
// writer's goroutine, everything else on the handler's.
//
// relayCalls are recycled (Worker.relayCalls): at over a kilobyte, with pointers, allocating one
// per request cost more CPU, in the allocator and in the collector, than the rest of what the
// worker allocates. A relayCall goes back to the pool once both of its users let it go: the
// handler when it returns (handle), and the relay when it calls done. That relies on the relay
// calling done as the last thing it does with a request (relay serve.go finishUsage), touching
// neither req nor the candidates afterwards. The relayCall of a handler that panicked is never
// recycled: its handler share is not released, and the relay may still hold it.
type relayCall struct {
	w   *Worker
	adm *admission
	req relay.Request
	sel sched.Selection
	// route is the route's metric label; urgent sends the usage record at once (keys whose caps
	// it settles).
	route  string
	urgent bool
	once   atomic.Bool
	// users counts the handler and the relay until each let go of the relayCall (release).
	users atomic.Int32
	// doneFunc is done as a func value, made once per relayCall rather than once per request.
	doneFunc func(*relay.Outcome)
	// headers has room for the client headers Claude Code sends that forwardName allows (up to
	// 16; more spill to the heap).
	headers [16]relay.Header
}

// newRelayCall returns a relayCall for a request, recycled when one is free.
func (w *Worker) newRelayCall(adm *admission, route string) *relayCall {
	rc, _ := w.relayCalls.Get().(*relayCall)
	if rc == nil {
		rc = &relayCall{w: w}
		rc.doneFunc = rc.done
	}
	rc.adm, rc.route = adm, route
	rc.users.Store(2) // the handler and the relay
	return rc
}

// recycle puts rc back into the pool at once: for a relayCall the relay never saw.
func (rc *relayCall) recycle() {
	w, done := rc.w, rc.doneFunc
	*rc = relayCall{w: w, doneFunc: done}
	w.relayCalls.Put(rc)
}

// release is called by each of the relayCall's two users when it is done with it; the last one
// recycles it.
func (rc *relayCall) release() {
	if rc.users.Add(-1) == 0 {
		rc.recycle()
	}
}

// done is the relay's completion callback: it runs finish once, whichever of the relay and a
// handler panic (recoverPanic) calls it first, then releases the relay's share of rc.
func (rc *relayCall) done(o *relay.Outcome) {
	if rc.once.CompareAndSwap(false, true) {
		rc.adm.release()
		rc.w.finish(rc.route, &rc.req, &rc.sel, o, rc.urgent)
		rc.release()
	}
}

// endpoint returns the request path as a string for usage records: the route table's own string
// when the path is one of its keys as it is (no allocation), a copy otherwise.
func (c *call) endpoint(ctx *fasthttp.RequestCtx) string {
	if c.path != "" {
		return c.path
	}
	return string(ctx.Path())
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

// forwardName returns the allow-listed name (lowercase) of a client header, "" for a header that
// stays in the worker. The allow-list is reference §1.3.1 (src/utils/headerFilter.js
// filterForClaude), without the hop-by-hop "connection": everything else, the client's x-api-key
// and authorization first of all, stays in the worker. The names are constants, so the forwarded
// headers reuse them instead of allocating names.
//
// key is as fasthttp's server holds it: in canonical form (Anthropic-Version), which it gives
// every valid name it reads (Server.DisableHeaderNamesNormalizing is off), so no case folding is
// needed here. A name it leaves as sent is not a valid token, and none of these.
func forwardName(key []byte) string {
	switch string(key) {
	case "Accept":
		return "accept"
	case "Accept-Language":
		return "accept-language"
	case "Anthropic-Beta":
		return "anthropic-beta"
	case "Anthropic-Version":
		return "anthropic-version"
	case "Anthropic-Dangerous-Direct-Browser-Access":
		return "anthropic-dangerous-direct-browser-access"
	case "Content-Type":
		return "content-type"
	case "Sec-Fetch-Mode":
		return "sec-fetch-mode"
	case "User-Agent":
		return "user-agent"
	case "X-App":
		return "x-app"
	case "X-Stainless-Arch":
		return "x-stainless-arch"
	case "X-Stainless-Helper-Method":
		return "x-stainless-helper-method"
	case "X-Stainless-Lang":
		return "x-stainless-lang"
	case "X-Stainless-Os":
		return "x-stainless-os"
	case "X-Stainless-Package-Version":
		return "x-stainless-package-version"
	case "X-Stainless-Retry-Count":
		return "x-stainless-retry-count"
	case "X-Stainless-Runtime":
		return "x-stainless-runtime"
	case "X-Stainless-Runtime-Version":
		return "x-stainless-runtime-version"
	case "X-Stainless-Timeout":
		return "x-stainless-timeout"
	}
	return ""
}

// appendForwarded appends the allow-listed client headers to dst, with lowercase names. The
// values are copied into one string that they share: one allocation per request, and none for
// the headers while dst has room.
//
// One pass: the entries are appended with their names while the values are gathered in a buffer
// on the stack, and get their values once the shared string exists.
func appendForwarded(dst []relay.Header, h *fasthttp.RequestHeader) []relay.Header {
	var (
		valueArr [1024]byte // Claude Code sends a few hundred bytes; more spill to the heap
		values   = valueArr[:0]
		lenArr   [24]int32
		lens     = lenArr[:0]
	)
	first := len(dst)
	for k, v := range h.All() {
		name := forwardName(k)
		if name == "" {
			continue
		}
		dst = append(dst, relay.Header{Name: name})
		lens = append(lens, int32(len(v)))
		values = append(values, v...)
	}
	all := string(values)
	for i, n := range lens {
		dst[first+i].Value, all = all[:n], all[n:]
	}
	return dst
}
