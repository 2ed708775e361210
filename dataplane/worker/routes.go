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
	auth   bool
	handle func(w *Worker, ctx *fasthttp.RequestCtx, c *call)
}

// buildRoutes returns the route table, keyed by path. The reference mounts its Claude router on
// /api and /claude, and the router itself defines /claude/v1/messages and /api/event_logging/batch,
// so the doubled forms (/api/claude/..., /api/api/..., /claude/claude/...) exist as well (§1.1).
func (w *Worker) buildRoutes() map[string]*route {
	messages := &route{name: routeMessages, post: true, auth: true, handle: (*Worker).messages}
	countTokens := &route{name: routeCountTokens, post: true, auth: true, handle: (*Worker).countTokens}
	models := &route{name: routeModels, auth: true, handle: (*Worker).models}
	keyInfo := &route{name: routeKeyInfo, auth: true, handle: (*Worker).keyInfo}
	usage := &route{name: routeUsage, auth: true, handle: (*Worker).usage}
	me := &route{name: routeMe, auth: true, handle: (*Worker).me}
	health := &route{name: routeHealth, handle: (*Worker).health}
	eventLogging := &route{name: routeEventLogging, post: true, handle: (*Worker).eventLogging}
	probe := &route{name: routeProbe, handle: (*Worker).probe}

	t := map[string]*route{
		"/health":                         health,
		"/metrics":                        {name: routeMetrics, handle: (*Worker).metrics},
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
	w.paths = make(map[string]string, len(t))
	for p := range t {
		w.paths[p] = p
	}
	return t
}

var orgUsageRoute = &route{name: routeOrgUsage, auth: true, handle: (*Worker).orgUsage}

// lookup finds the route of a path: exactly, else as Express would match it (case-insensitive,
// one trailing slash ignored), else the parameterized /v1/organizations/:org_id/usage.
func (w *Worker) lookup(path []byte) *route {
	if r := w.routes[string(path)]; r != nil {
		return r
	}
	p := strings.ToLower(string(path))
	if len(p) > 1 {
		p = strings.TrimSuffix(p, "/")
	}
	if r := w.routes[p]; r != nil {
		return r
	}
	for _, mount := range [...]string{"/api/v1/organizations/", "/claude/v1/organizations/"} {
		if rest, ok := strings.CutPrefix(p, mount); ok {
			if org, ok := strings.CutSuffix(rest, "/usage"); ok && org != "" && !strings.Contains(org, "/") {
				return orgUsageRoute
			}
		}
	}
	return nil
}

// handle is the fasthttp handler: request id, routing, authentication, then the route.
func (w *Worker) handle(ctx *fasthttp.RequestCtx) {
	c := call{id: w.newRequestID()}
	ctx.Response.Header.SetCanonical(headerRequestID, []byte(c.id))
	defer w.recoverPanic(ctx, &c)

	r := w.lookup(ctx.Path())
	if r == nil || !r.allows(ctx) {
		w.notFound(ctx)
		w.m.request(routeNotFound, ctx.Response.StatusCode(), "")
		return
	}
	c.route = r
	if r.auth && !w.authenticate(ctx, &c) {
		w.m.request(r.name, ctx.Response.StatusCode(), "")
		return
	}
	r.handle(w, ctx, &c)
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
