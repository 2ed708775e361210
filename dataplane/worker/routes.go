package worker

import (
	"errors"
	"runtime/debug"
	"strings"

	"github.com/valyala/fasthttp"
	"go.uber.org/zap"

	"github.com/crsrelay/crs/dataplane/auth"
	"github.com/crsrelay/crs/dataplane/relay"
	"github.com/crsrelay/crs/dataplane/snapshot"
	crsv1 "github.com/crsrelay/crs/gen/crs/v1"
)

// Route names, used as the "route" metric label.
const (
	routeMessages     = "messages"
	routeCountTokens  = "count_tokens"
	routeModels       = "models"
	routeKeyInfo      = "key_info"
	routeUsage        = "usage"
	routeMe           = "me"
	routeOrgUsage     = "org_usage"
	routeHealth       = "health"
	routeEventLogging = "event_logging"
	routeProbe        = "probe"
	routeMetrics      = "metrics"
	routeNotFound     = "not_found"
	routeTooLarge     = "body_too_large"
)

// call is the per-request state handlers share. It lives for one handler invocation; handlers
// that hand the request to the relay copy what done needs.
type call struct {
	id    string
	route *route
	// path is the route table's string of the request path when it matched as it is, else "".
	path  string
	state *snapshot.State
	key   *crsv1.ApiKey
	// async is set when the relay took the request: done records the metrics.
	async bool
	// relayDone releases what admission holds if the handler panics before the relay has the
	// request; relay, once the relay has it, reports a missing Outcome instead.
	relayDone func(status int)
	relay     *relayCall
}

// route is one entry of the route table.
type route struct {
	name string
	// post routes accept POST; the others GET and HEAD (as Express routes GET handlers).
	post bool
	// auth routes need a key and a snapshot.
	auth bool
}

// serve runs the handler of route r (by its name: each name has one handler). Calling the
// handlers directly, rather than through a func field, lets the compiler see that none keeps c,
// so a request's call stays on handle's stack instead of costing an allocation.
func (w *Worker) serve(r *route, ctx *fasthttp.RequestCtx, c *call) {
	switch r.name {
	case routeMessages:
		w.messages(ctx, c)
	case routeCountTokens:
		w.countTokens(ctx, c)
	case routeModels:
		w.models(ctx, c)
	case routeKeyInfo:
		w.keyInfo(ctx, c)
	case routeUsage:
		w.usage(ctx, c)
	case routeMe:
		w.me(ctx, c)
	case routeOrgUsage:
		w.orgUsage(ctx, c)
	case routeHealth:
		w.health(ctx, c)
	case routeEventLogging:
		w.eventLogging(ctx, c)
	case routeProbe:
		w.probe(ctx, c)
	case routeMetrics:
		w.metrics(ctx, c)
	default:
		panic("worker: route without a handler: " + r.name)
	}
}

// buildRoutes returns the route table, keyed by path. The reference mounts its Claude router on
// /api and /claude, and the router itself defines /claude/v1/messages and /api/event_logging/batch,
// so the doubled forms (/api/claude/..., /api/api/..., /claude/claude/...) exist as well (§1.1).
func (w *Worker) buildRoutes() map[string]routeEntry {
	messages := &route{name: routeMessages, post: true, auth: true}
	countTokens := &route{name: routeCountTokens, post: true, auth: true}
	models := &route{name: routeModels, auth: true}
	keyInfo := &route{name: routeKeyInfo, auth: true}
	usage := &route{name: routeUsage, auth: true}
	me := &route{name: routeMe, auth: true}
	health := &route{name: routeHealth}
	eventLogging := &route{name: routeEventLogging, post: true}
	probe := &route{name: routeProbe}

	t := map[string]*route{
		"/health":                         health,
		"/metrics":                        {name: routeMetrics},
		"/":                               probe,
		"/api/event_logging/batch":        eventLogging,
		"/api/api/event_logging/batch":    eventLogging,
		"/claude/api/event_logging/batch": eventLogging,
	}
	for _, mount := range []string{"/api", "/claude"} {
		t[mount] = probe
		t[mount+"/v1/messages"] = messages
		t[mount+"/claude/v1/messages"] = messages
		t[mount+"/v1/messages/count_tokens"] = countTokens
		t[mount+"/v1/models"] = models
		t[mount+"/v1/key-info"] = keyInfo
		t[mount+"/v1/usage"] = usage
		t[mount+"/v1/me"] = me
		t[mount+"/health"] = health
	}
	table := make(map[string]routeEntry, len(t))
	for p, r := range t {
		table[p] = routeEntry{route: r, path: p}
	}
	return table
}

// routeEntry is a route under one of its paths. path is the table's own string of the path, so
// that a request's path becomes a string (for usage records) without a copy.
type routeEntry struct {
	route *route
	path  string
}

var orgUsageRoute = &route{name: routeOrgUsage, auth: true}

// lookup finds the route of a path: exactly, else as Express would match it (case-insensitive,
// one trailing slash ignored), else the parameterized /v1/organizations/:org_id/usage. exact is
// the route table's string of the path when the path is one of its keys as it is, else "".
func (w *Worker) lookup(path []byte) (r *route, exact string) {
	if e, ok := w.routes[string(path)]; ok {
		return e.route, e.path
	}
	p := strings.ToLower(string(path))
	if len(p) > 1 {
		p = strings.TrimSuffix(p, "/")
	}
	if e, ok := w.routes[p]; ok {
		return e.route, ""
	}
	for _, mount := range [...]string{"/api/v1/organizations/", "/claude/v1/organizations/"} {
		if rest, ok := strings.CutPrefix(p, mount); ok {
			if org, ok := strings.CutSuffix(rest, "/usage"); ok && org != "" && !strings.Contains(org, "/") {
				return orgUsageRoute, ""
			}
		}
	}
	return nil, ""
}

// handle is the fasthttp handler: request id, routing, authentication, then the route.
func (w *Worker) handle(ctx *fasthttp.RequestCtx) {
	c := call{id: w.newRequestID()}
	ctx.Response.Header.SetCanonical(headerRequestID, []byte(c.id))
	defer w.recoverPanic(ctx, &c)

	r, exact := w.lookup(ctx.Path())
	if r == nil || !r.allows(ctx) {
		w.notFound(ctx)
		w.m.request(routeNotFound, ctx.Response.StatusCode(), "")
		return
	}
	c.route, c.path = r, exact
	if r.auth && !w.authenticate(ctx, &c) {
		w.m.request(r.name, ctx.Response.StatusCode(), "")
		return
	}
	w.serve(r, ctx, &c)
	if c.relay != nil {
		c.relay.release() // not after a panic: recoverPanic leaves the relayCall to the collector
	}
	if !c.async {
		w.m.request(r.name, ctx.Response.StatusCode(), "")
	}
}

// headerRequestID is X-Request-ID in the form fasthttp writes it, set as it is (SetCanonical) to
// spare normalizing the name on every request.
var headerRequestID = []byte("X-Request-Id")

func (r *route) allows(ctx *fasthttp.RequestCtx) bool {
	if r.post {
		return ctx.IsPost()
	}
	return ctx.IsGet() || ctx.IsHead()
}

// Responses before authentication.
var (
	bodyStarting = []byte(`{"error":"Service starting","message":"Waiting for control plane state"}`)
	bodyStale    = []byte(`{"error":"Service unavailable","message":"Control plane state is stale"}`)
)

// authenticate runs key extraction, reference §2.3 steps 1-3 and the policy checks; on refusal it
// writes the response and returns false.
func (w *Worker) authenticate(ctx *fasthttp.RequestCtx, c *call) bool {
	st := w.fleet.Serving()
	if st == nil {
		body := bodyStarting
		if w.fleet.State() != nil {
			body = bodyStale
		}
		writeJSON(ctx, fasthttp.StatusServiceUnavailable, body)
		return false
	}
	now := w.requestNow(ctx)
	key, err := w.auth.Authenticate(st, auth.ExtractKey(&ctx.Request), now)
	if err != nil {
		w.reject(ctx, c, err)
		return false
	}
	c.state, c.key = st, key
	if w.policy.Applies(key, st) {
		in := auth.Input{
			Key:         key,
			State:       st,
			Path:        ctx.Path(),
			UserAgent:   ctx.Request.Header.UserAgent(),
			Header:      &ctx.Request.Header,
			Body:        ctx.PostBody(),
			CountTokens: c.route.name == routeCountTokens,
			Now:         now,
		}
		if err := w.policy.Check(&in); err != nil {
			w.reject(ctx, c, err)
			return false
		}
	}
	return true
}

// reject writes a refusal: an auth.Rejection as it is, anything else through apierr.
func (w *Worker) reject(ctx *fasthttp.RequestCtx, c *call, err error) {
	var rej *auth.Rejection
	if errors.As(err, &rej) {
		writeJSON(ctx, rej.Status, rej.Body)
		if ce := w.log.Check(zap.DebugLevel, "request refused"); ce != nil {
			ce.Write(zap.String("request_id", c.id), zap.String("reason", rej.Cause.Error()))
		}
		return
	}
	writeError(ctx, err)
}

// notFound is the reference's 404 (§0, app.js): {error, message:"Route <url> not found", timestamp}.
func (w *Worker) notFound(ctx *fasthttp.RequestCtx) {
	b := append(make([]byte, 0, 96), `{"error":"Not Found","message":`...)
	b = appendString(b, "Route "+string(ctx.RequestURI())+" not found")
	b = append(b, `,"timestamp":`...)
	b = appendTimestamp(b, w.now())
	b = append(b, '}')
	writeJSON(ctx, fasthttp.StatusNotFound, b)
}

// handleError answers requests fasthttp could not read: 413 for a body over the limit (the
// reference's requestSizeLimit shape), 408 on a read timeout, 400 otherwise.
func (w *Worker) handleError(ctx *fasthttp.RequestCtx, err error) {
	ctx.Response.Header.Set("X-Request-ID", w.newRequestID())
	var netErr interface{ Timeout() bool }
	switch {
	case errors.Is(err, fasthttp.ErrBodyTooLarge):
		writeJSON(ctx, fasthttp.StatusRequestEntityTooLarge, w.bodyLimit)
		w.m.request(routeTooLarge, fasthttp.StatusRequestEntityTooLarge, "")
		return
	case errors.As(err, &netErr) && netErr.Timeout():
		writeJSON(ctx, fasthttp.StatusRequestTimeout, []byte(`{"error":"Request Timeout","message":"Request took too long to process"}`))
	default:
		writeJSON(ctx, fasthttp.StatusBadRequest, []byte(`{"error":"Bad Request","message":"Error when parsing request"}`))
	}
}

// recoverPanic turns a handler panic into the reference's errorHandler 500 (§0) and keeps the
// worker up.
func (w *Worker) recoverPanic(ctx *fasthttp.RequestCtx, c *call) {
	p := recover()
	if p == nil {
		return
	}
	w.m.panics.Inc()
	w.log.Error("handler panic", zap.String("request_id", c.id), zap.Any("panic", p),
		zap.ByteString("stack", debug.Stack()))
	switch {
	case c.relay != nil:
		c.relay.done(&relay.Outcome{Status: fasthttp.StatusInternalServerError})
	case c.relayDone != nil:
		c.relayDone(fasthttp.StatusInternalServerError)
	}
	ctx.Response.Reset()
	ctx.Response.Header.Set("X-Request-ID", c.id)
	b := append([]byte(nil), `{"error":"Internal Server Error","message":"Something went wrong","requestId":`...)
	b = appendString(b, c.id)
	b = append(b, `,"timestamp":`...)
	b = appendTimestamp(b, w.now())
	b = append(b, '}')
	writeJSON(ctx, fasthttp.StatusInternalServerError, b)
	name := routeNotFound
	if c.route != nil {
		name = c.route.name
	}
	if !c.async {
		w.m.request(name, fasthttp.StatusInternalServerError, "")
	}
}
