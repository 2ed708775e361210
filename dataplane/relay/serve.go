package relay

import (
	"errors"
	"sync"
	"time"

	"github.com/crsrelay/crs/dataplane/apierr"
	"github.com/crsrelay/crs/dataplane/relay/claude"
	"github.com/crsrelay/crs/dataplane/relay/platform"
	"github.com/crsrelay/crs/dataplane/sse"
	crsv1 "github.com/crsrelay/crs/gen/crs/v1"
	"github.com/valyala/fasthttp"
	"go.uber.org/zap"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Options configures a Relay. Zero fields take the defaults documented on each.
type Options struct {
	// Logger receives failed attempts and broken streams; nil logs nothing.
	Logger *zap.Logger
	// ClaudeBaseURL is where claude-official accounts go unless their base_url says otherwise.
	// Default "https://api.anthropic.com".
	ClaudeBaseURL string
	// ConnectTimeout bounds establishing a connection to an upstream. Default 10s.
	ConnectTimeout time.Duration
	// FirstByteTimeout bounds the wait for an upstream's first response byte after the request
	// was sent (and the time to send the request). Default 300s.
	FirstByteTimeout time.Duration
	// IdleTimeout bounds every later wait for upstream bytes: the gap between two SSE events, or
	// between two reads of a body. A stream may run for any length of time while bytes keep coming.
	// Default 300s. Both timeouts may end a wait up to 1/64 of their length early (deadlines are
	// moved only when that much is at stake; transport.go deadlineSlack).
	IdleTimeout time.Duration
	// MaxAttempts is how many candidates one request may try. Default 3.
	MaxAttempts int
	// MaxResponseBodySize bounds a buffered (non-stream or error) upstream body. Default 64 MiB.
	MaxResponseBodySize int
	// Dial, when set, opens the connections to upstreams instead of direct TCP (bounded by
	// ConnectTimeout): benchmarks and tests use in-memory pipes. Accounts with a proxy still
	// dial their proxy.
	Dial fasthttp.DialFunc
}

// Defaults of Options.
const (
	DefaultConnectTimeout      = 10 * time.Second
	DefaultFirstByteTimeout    = 300 * time.Second
	DefaultIdleTimeout         = 300 * time.Second
	DefaultMaxAttempts         = 3
	DefaultMaxResponseBodySize = 64 << 20
)

// maxEvent is the largest SSE event the splitter holds whole (larger ones pass in fragments and are
// not read for usage); keepSplitterBuffer is the largest buffer a pooled splitter keeps.
const (
	maxEvent           = 4 << 20
	keepSplitterBuffer = 64 << 10
	keepBatchBuffer    = 64 << 10
)

// Relay forwards client requests to upstream accounts. It is safe for concurrent use; one Relay
// serves a whole worker, sharing its upstream connection pools across requests.
type Relay struct {
	log       *zap.Logger
	o         Options
	tr        *transport
	proxyMu   sync.RWMutex
	proxies   map[string]proxied // by proxy URL
	official  *claude.Official
	console   claude.Console
	splitters sync.Pool // *sse.Splitter, reset, buffer at most keepSplitterBuffer
	batches   sync.Pool // *[]byte, empty, capacity at most keepBatchBuffer
}

// New returns a Relay with o's zero fields set to their defaults.
func New(o Options) *Relay {
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	if o.ClaudeBaseURL == "" {
		o.ClaudeBaseURL = claude.DefaultBaseURL
	}
	if o.ConnectTimeout <= 0 {
		o.ConnectTimeout = DefaultConnectTimeout
	}
	if o.FirstByteTimeout <= 0 {
		o.FirstByteTimeout = DefaultFirstByteTimeout
	}
	if o.IdleTimeout <= 0 {
		o.IdleTimeout = DefaultIdleTimeout
	}
	if o.MaxAttempts <= 0 {
		o.MaxAttempts = DefaultMaxAttempts
	}
	if o.MaxResponseBodySize <= 0 {
		o.MaxResponseBodySize = DefaultMaxResponseBodySize
	}
	uris := &claude.URICache{}
	return &Relay{
		log:      o.Logger.Named("relay"),
		o:        o,
		tr:       newTransport(&o, o.Dial),
		official: &claude.Official{BaseURL: o.ClaudeBaseURL, URIs: uris},
		console:  claude.Console{URIs: uris},
	}
}

// upstream returns the Upstream serving acct's type, nil if the relay has none.
func (r *Relay) upstream(acct *crsv1.Account) platform.Upstream {
	switch acct.GetType() {
	case claude.TypeOfficial:
		return r.official
	case claude.TypeConsole:
		return r.console
	}
	return nil
}

// Serve relays req to the first candidate that answers and writes the answer to ctx. done is called
// exactly once when the response is complete: before Serve returns for a buffered answer, and for a
// stream from the goroutine fasthttp writes the response body with, after Serve returned (that is
// also where it learns that the client left). done gets the Outcome to report; it must not keep ctx.
// done is the relay's last use of req and cands: neither is touched after it is called, so the
// caller may reuse them from then on (the worker recycles their memory).
// When Serve returns, status, headers and body of ctx.Response are set; the caller must not change
// them (a stream's body is pulled by fasthttp later, and replacing it ends the stream).
//
// Candidates are tried in order, at most Options.MaxAttempts of them, as long as nothing was sent to
// the client: a connection error, a timeout before the response headers, 401, 403, 429, 529 or 5xx
// move on to the next one, each recorded as an account event. A 401 from an OAuth account, when
// the request has a Refresher, is handed to it instead (it reports the event at once and waits for
// a renewed credential): with one, the same account is tried once more (not counted against
// MaxAttempts). An account with a proxy is reached through it (transportFor); a proxy that fails
// is the account's failure like a connection error. A client error (400, 404, 413...) is
// passed through. When every attempt failed the last upstream answer is passed through (as an
// in-band event: error for a stream request), or, if none answered, 502/504 JSON.
func (r *Relay) Serve(ctx *fasthttp.RequestCtx, req *Request, cands Candidates, done func(*Outcome)) {
	blk := &outcomeBlock{}
	c := call{r: r, ctx: ctx, req: req, out: &blk.out, blk: blk, done: done}
	for c.out.Attempts-c.retries < r.o.MaxAttempts {
		acct := cands.Next()
		if acct == nil {
			break
		}
		up := r.upstream(acct)
		if up == nil {
			r.log.Warn("account type not served by this relay, skipped",
				zap.String("request_id", req.RequestID), zap.String("account_id", acct.GetId()),
				zap.String("account_type", acct.GetType()))
			continue
		}
		c.out.Account = acct
		c.out.Attempts++
		if c.attempt(acct, up) {
			return
		}
		if fresh := c.refreshed(acct); fresh != nil {
			// The same account once more, with its renewed credential; this retry does not count
			// against MaxAttempts, and a second 401 fails over.
			c.out.Account = fresh
			c.out.Attempts++
			c.retries++
			c.retrying = true
			decided := c.attempt(fresh, up)
			c.retrying = false
			if decided {
				return
			}
		}
	}
	c.fail()
}

// refreshed returns acct with a renewed credential when its last attempt met 401 and the
// request's Refresher got one in time, nil otherwise.
func (c *call) refreshed(acct *crsv1.Account) *crsv1.Account {
	ev := c.unauthorized
	if ev == nil {
		return nil
	}
	c.unauthorized = nil
	fresh := c.req.Refresh.Refreshed(acct, ev)
	if fresh == nil {
		c.r.log.Info("no renewed credential after 401; failing over", zap.String("request_id", c.req.RequestID),
			zap.String("account_id", acct.GetId()))
		return nil
	}
	c.r.log.Info("credential renewed after 401; retrying the account", zap.String("request_id", c.req.RequestID),
		zap.String("account_id", acct.GetId()))
	return fresh
}

// call is the state of one Serve. It is created per request and is not thread-safe; once a stream
// is handed to fasthttp it belongs to the streamBody.
type call struct {
	r    *Relay
	ctx  *fasthttp.RequestCtx
	req  *Request
	out  *Outcome
	blk  *outcomeBlock // holds out
	done func(*Outcome)
	last failure
	// retries counts attempts that retried an account with a renewed credential; retrying is set
	// during such an attempt.
	retries  int
	retrying bool
	// unauthorized is the event of a 401 from an OAuth account, kept out of out.Events for the
	// Refresher (see refreshed); set by attempt, taken by refreshed.
	unauthorized *crsv1.AccountEvent
}

// outcomeBlock is an Outcome with room for what it points to in the common case (one event, one
// usage record), so that a request allocates them at once. What done hands on (the record, the
// events) keeps the block alive as long as needed.
type outcomeBlock struct {
	out      Outcome
	events   [1]*crsv1.AccountEvent
	event    crsv1.AccountEvent
	observed timestamppb.Timestamp
	usage    crsv1.UsageRecord
	started  timestamppb.Timestamp
	used     bool // event is taken
}

// failure is the last failed attempt, for the answer when every attempt failed.
type failure struct {
	// transport is set when no upstream answered.
	transport *transportFailure
	// tooLarge is set when the answer exceeded MaxResponseBodySize.
	tooLarge bool
	// status, header and body of the last upstream HTTP error otherwise; owned copies.
	status int
	header []Header
	body   []byte
}

// attempt tries one account. It returns true when the response was decided (a success or an error
// passed through), false to try the next candidate.
func (c *call) attempt(acct *crsv1.Account, up platform.Upstream) bool {
	r, req := c.r, c.req
	upReq := fasthttp.AcquireRequest()
	model, err := up.Build(acct, req, upReq)
	if err != nil {
		fasthttp.ReleaseRequest(upReq)
		r.log.Warn("account unusable", zap.String("request_id", req.RequestID),
			zap.String("account_id", acct.GetId()), zap.Error(err))
		c.event(acct, platform.Verdict{Kind: platform.EventServerError, Reason: err.Error()}, 0)
		f := failRefused
		c.last = failure{transport: &f}
		return false
	}
	tr, err := r.transportFor(acct)
	if err != nil {
		fasthttp.ReleaseRequest(upReq)
		r.log.Warn("account unusable", zap.String("request_id", req.RequestID),
			zap.String("account_id", acct.GetId()), zap.Error(err))
		c.event(acct, platform.Verdict{Kind: platform.EventServerError, Reason: "proxy: " + err.Error()}, 0)
		f := failRefused
		c.last = failure{transport: &f}
		return false
	}
	client := tr.unary
	if req.Stream {
		client = tr.stream
	}
	resp := fasthttp.AcquireResponse()
	err = client.Do(upReq, resp)
	fasthttp.ReleaseRequest(upReq)
	if err != nil {
		fasthttp.ReleaseResponse(resp)
		return c.transportError(acct, err)
	}

	status := resp.StatusCode()
	if status >= 200 && status < 300 {
		c.event(acct, platform.Verdict{Kind: platform.EventSuccess}, status)
		if req.Stream && isEventStream(&resp.Header) {
			c.stream(acct, up, model, resp)
			return true
		}
		c.respondBuffered(acct, up, model, resp)
		return true
	}

	body, err := readBody(resp, r.o.MaxResponseBodySize)
	if err != nil {
		fasthttp.ReleaseResponse(resp)
		return c.transportError(acct, err)
	}
	v := up.Classify(status, &resp.Header, body, model)
	switch {
	case v.Kind == platform.EventUnauthorized && v.Failover && c.mayRefresh(acct):
		// Reported by the Refresher at once, not with the outcome (see refreshed).
		c.unauthorized = c.newEvent(acct, v, status)
	case v.Kind != "":
		c.event(acct, v, status)
	}
	if !v.Failover {
		if fb, ok := up.(platform.Fallback); ok {
			if alt, ok := fb.Fallback(req, status); ok {
				fasthttp.ReleaseResponse(resp)
				apierr.WriteJSON(c.ctx, fasthttp.StatusOK, alt)
				c.out.Status = fasthttp.StatusOK
				c.finish()
				return true
			}
		}
		c.respondError(status, &resp.Header, body)
		fasthttp.ReleaseResponse(resp)
		c.finish()
		return true
	}
	r.log.Warn("upstream attempt failed", zap.String("request_id", req.RequestID),
		zap.String("account_id", acct.GetId()), zap.Int("attempt", c.out.Attempts),
		zap.Int("upstream_status", status), zap.String("reason", v.Reason))
	c.last = failure{status: status, header: copyHeaders(&resp.Header), body: append([]byte(nil), body...)}
	fasthttp.ReleaseResponse(resp)
	return false
}

// transportError records an attempt that got no usable answer. A body over the size limit ends
// the request (every account would send the same); anything else tries the next candidate.
func (c *call) transportError(acct *crsv1.Account, err error) bool {
	if errors.Is(err, fasthttp.ErrBodyTooLarge) {
		c.last = failure{tooLarge: true}
		c.fail()
		return true
	}
	f := classifyTransport(err)
	reason := "upstream " + f.String()
	// A proxy that cannot be reached or refuses the tunnel is the account's failure, named as such;
	// the client is told the upstream could not be reached.
	var pe *proxyError
	if errors.As(err, &pe) {
		f, reason = failRefused, pe.Error()
	}
	c.r.log.Warn("upstream attempt failed", zap.String("request_id", c.req.RequestID),
		zap.String("account_id", acct.GetId()), zap.Int("attempt", c.out.Attempts),
		zap.Stringer("failure", f), zap.Error(err))
	// Running out of local connections to a host is this worker's limit, not the account's fault.
	if !errors.Is(err, fasthttp.ErrNoFreeConns) {
		c.event(acct, platform.Verdict{Kind: platform.EventServerError, Reason: reason}, 0)
	}
	c.last = failure{transport: &f}
	return false
}

// fail answers when no attempt succeeded.
func (c *call) fail() {
	switch l := &c.last; {
	case c.out.Attempts == 0:
		c.writeError(apierr.NoAccount)
	case l.tooLarge:
		c.writeError(apierr.UpstreamTooLarge)
	case l.transport != nil:
		c.writeError(transportError(*l.transport))
	default:
		var h fasthttp.ResponseHeader
		for _, kv := range l.header {
			h.Add(kv.Name, kv.Value)
		}
		c.respondError(l.status, &h, l.body)
	}
	c.finish()
}

func (c *call) writeError(e *apierr.Error) {
	apierr.Write(c.ctx, e)
	c.out.Status = e.Status
}

func transportError(f transportFailure) *apierr.Error {
	switch f {
	case failTimeout:
		return apierr.UpstreamTimeout
	case failDNS:
		return apierr.UpstreamDNS
	case failReset:
		return apierr.UpstreamConnection
	}
	return apierr.UpstreamUnavailable
}

// mayRefresh reports whether a 401 from acct may wait for a renewed credential: the request has a
// Refresher, acct holds OAuth credentials, and this is not already the retry of acct.
func (c *call) mayRefresh(acct *crsv1.Account) bool {
	return c.req.Refresh != nil && !c.retrying && acct.GetOauth() != nil
}

// event appends an account event for acct to the outcome.
func (c *call) event(acct *crsv1.Account, v platform.Verdict, status int) {
	var e *crsv1.AccountEvent
	var observed *timestamppb.Timestamp
	if b := c.blk; !b.used {
		b.used = true
		e, observed = &b.event, &b.observed
		c.out.Events = b.events[:0]
	} else {
		e, observed = &crsv1.AccountEvent{}, &timestamppb.Timestamp{}
	}
	c.fillEvent(e, observed, acct, v, status)
	c.out.Events = append(c.out.Events, e)
}

// newEvent returns an account event for acct that is not part of the outcome.
func (c *call) newEvent(acct *crsv1.Account, v platform.Verdict, status int) *crsv1.AccountEvent {
	e := &crsv1.AccountEvent{}
	c.fillEvent(e, &timestamppb.Timestamp{}, acct, v, status)
	return e
}

func (c *call) fillEvent(e *crsv1.AccountEvent, observed *timestamppb.Timestamp, acct *crsv1.Account, v platform.Verdict, status int) {
	setTimestamp(observed, time.Now())
	e.AccountId = acct.GetId()
	e.Kind = v.Kind
	e.UpstreamStatus = int32(status)
	e.ModelFamily = v.Family
	e.Reason = v.Reason
	e.ObservedAt = observed
	e.RequestId = c.req.RequestID
	if !v.Until.IsZero() {
		e.Until = timestamppb.New(v.Until)
	}
}

// setTimestamp sets ts to t, as timestamppb.New does without allocating.
func setTimestamp(ts *timestamppb.Timestamp, t time.Time) {
	ts.Seconds = t.Unix()
	ts.Nanos = int32(t.Nanosecond())
}

// finish calls done, for an answer without usage.
func (c *call) finish() { c.finishUsage(nil, "", 0) }

// finishUsage fills the usage record (if upstream reported usage) and calls done. model is the
// model asked upstream, used when upstream did not name one; elapsed is how long the request took
// (the caller has read the clock already).
func (c *call) finishUsage(u *platform.Usage, model string, elapsed time.Duration) {
	req, out := c.req, c.out
	if u != nil && req.Op != OpCountTokens {
		m := u.Model
		if m == "" {
			m = model
		}
		if m == "" {
			m = req.Model
		}
		setTimestamp(&c.blk.started, req.Started)
		out.Usage = &c.blk.usage
		*out.Usage = crsv1.UsageRecord{
			RequestId:              req.RequestID,
			KeyId:                  req.KeyID,
			AccountId:              out.Account.GetId(),
			AccountType:            out.Account.GetType(),
			Model:                  m,
			InputTokens:            u.InputTokens,
			OutputTokens:           u.OutputTokens,
			CacheCreation_5MTokens: u.CacheCreation5mTokens,
			CacheCreation_1HTokens: u.CacheCreation1hTokens,
			CacheReadTokens:        u.CacheReadTokens,
			Status:                 int32(out.Status),
			DurationMs:             elapsed.Milliseconds(),
			Stream:                 req.Stream,
			StartedAt:              &c.blk.started,
			Endpoint:               req.Endpoint,
			AnthropicBeta:          clientHeader(req, "anthropic-beta"),
			Speed:                  u.Speed,
		}
	}
	if c.done != nil {
		c.done(out)
	}
}

// clientHeader returns the value of the client's header name (lowercase), "" if absent.
func clientHeader(req *Request, name string) string {
	for _, h := range req.Headers {
		if len(h.Name) == len(name) && (h.Name == name || equalFoldASCII(h.Name, name)) {
			return h.Value
		}
	}
	return ""
}

func equalFoldASCII(a, b string) bool {
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

// getSplitter returns a pooled splitter reading src.
func (r *Relay) getSplitter() *sse.Splitter {
	if s, ok := r.splitters.Get().(*sse.Splitter); ok {
		return s
	}
	return sse.NewSplitter(nil, 0, maxEvent)
}

func (r *Relay) putSplitter(s *sse.Splitter) {
	s.Reset(nil, keepSplitterBuffer)
	r.splitters.Put(s)
}

// getBatch returns a pooled, empty buffer for the events a stream holds (streamBody.WriteTo).
func (r *Relay) getBatch() *[]byte {
	if b, ok := r.batches.Get().(*[]byte); ok {
		return b
	}
	b := make([]byte, 0, 4<<10)
	return &b
}

func (r *Relay) putBatch(b *[]byte) {
	if cap(*b) > keepBatchBuffer {
		return
	}
	*b = (*b)[:0]
	r.batches.Put(b)
}
