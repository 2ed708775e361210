package relay

import (
	"errors"
	"io"
	"time"

	"github.com/crsrelay/crs/dataplane/apierr"
	"github.com/crsrelay/crs/dataplane/relay/platform"
	"github.com/crsrelay/crs/dataplane/sse"
	crsv1 "github.com/crsrelay/crs/gen/crs/v1"
	"github.com/valyala/fasthttp"
	"go.uber.org/zap"
)

// stream commits the response to an upstream's 2xx SSE answer: status and headers now, the body
// later, pulled by fasthttp through a streamBody after Serve has returned. resp is handed over to
// the streamBody, which releases it.
func (c *call) stream(acct *crsv1.Account, up platform.Upstream, model string, resp *fasthttp.Response) {
	ctx := c.ctx
	ctx.SetStatusCode(fasthttp.StatusOK)
	setStreamHeaders(ctx)
	passStreamHeaders(&ctx.Response.Header, &resp.Header)
	// Send the headers as soon as the response starts, without waiting for the first event.
	ctx.Response.ImmediateHeaderFlush = true
	c.out.Status = fasthttp.StatusOK

	sp := c.r.getSplitter()
	sp.Reset(resp.BodyStream(), 0)
	ctx.Response.SetBodyStream(&streamBody{
		call:  *c,
		acct:  acct,
		model: model,
		resp:  resp,
		sp:    sp,
		usage: up.NewUsage(),
	}, -1)
}

// streamBody is the body of a streamed answer. fasthttp pulls it on the connection's goroutine after
// the handler returned: through WriteTo, which writes each SSE event as one chunk and flushes it, or
// through Read. It owns the upstream response, the splitter and the call until CloseWithError, which
// fasthttp calls exactly once when it is done with the body (also when the client left or the
// response was replaced), and which ends the request. It must not touch the RequestCtx (call.ctx).
// It is not safe for concurrent use.
type streamBody struct {
	call
	acct  *crsv1.Account
	model string
	resp  *fasthttp.Response
	sp    *sse.Splitter
	usage platform.UsageReader

	// pending is the rest of an event not yet returned by Read.
	pending []byte
	// fragment is set while a huge event is passing in pieces (not read for usage).
	fragment bool
	// ended is set once the upstream stream ended or broke (and the error event was produced).
	ended  bool
	closed bool
	// upstreamErr is why the upstream stream broke, nil if it ended normally.
	upstreamErr error
	errBuf      []byte
}

// SupportsBodyWriteTo implements [fasthttp.BodyWriterTo]: WriteTo does exactly what Read does.
func (b *streamBody) SupportsBodyWriteTo() bool { return true }

// WriteTo writes the stream event by event; fasthttp turns each Write into one flushed chunk. An
// error from w means the client is gone: WriteTo stops reading upstream and returns it, and
// CloseWithError closes the upstream connection.
func (b *streamBody) WriteTo(w io.Writer) (int64, error) {
	var n int64
	for {
		ev, err := b.next()
		if err != nil {
			return n, nil
		}
		m, err := w.Write(ev)
		n += int64(m)
		if err != nil {
			return n, err
		}
	}
}

// Read implements io.Reader for consumers that do not use WriteTo: it returns at most one event per
// call, so that each is flushed on its own.
func (b *streamBody) Read(p []byte) (int, error) {
	for len(b.pending) == 0 {
		ev, err := b.next()
		if err != nil {
			return 0, err
		}
		b.pending = ev
	}
	n := copy(p, b.pending)
	b.pending = b.pending[n:]
	return n, nil
}

// next returns the next bytes for the client: an upstream event (valid until the next call), the
// in-band error event after the upstream broke, or io.EOF.
func (b *streamBody) next() ([]byte, error) {
	if b.ended {
		return nil, io.EOF
	}
	ev, err := b.sp.Next()
	if err == nil {
		whole := !b.fragment && !b.sp.Partial()
		b.fragment = b.sp.Partial()
		if whole {
			b.usage.Event(ev)
		}
		if b.out.FirstByte == 0 {
			b.out.FirstByte = time.Since(b.req.Started)
		}
		return ev, nil
	}
	b.ended = true
	if errors.Is(err, io.EOF) {
		return nil, io.EOF
	}
	// The upstream connection broke or stalled for IdleTimeout after the answer started: failover
	// is over, so the client gets the error in-band, as Anthropic reports one (STYLE §3).
	b.upstreamErr = err
	b.r.log.Warn("upstream stream interrupted", zap.String("request_id", b.req.RequestID),
		zap.String("account_id", b.acct.GetId()), zap.Bool("timeout", isTimeout(err)),
		zap.Int("dropped_bytes", len(b.sp.Buffered())), zap.Error(err))
	if b.fragment {
		b.errBuf = append(b.errBuf, "\n\n"...) // end the event cut in the middle first
	}
	b.errBuf = apierr.AppendEvent(b.errBuf, apierr.StreamInterrupted, time.Now())
	return b.errBuf, nil
}

// CloseWithError implements [fasthttp.ReadCloserWithError]. fasthttp calls it when it is done with
// the body; err is the error writing to the client, if any. It closes the upstream response (which
// closes its connection unless the stream was read to the end, so an upstream still sending sees the
// client's departure), records usage and calls done.
func (b *streamBody) CloseWithError(err error) error {
	if b.closed {
		return nil
	}
	b.closed = true
	if err != nil || !b.ended {
		if ce := b.r.log.Check(zap.DebugLevel, "client left during stream"); ce != nil {
			ce.Write(zap.String("request_id", b.req.RequestID), zap.String("account_id", b.acct.GetId()), zap.Error(err))
		}
	}
	_ = b.resp.CloseBodyStream()
	fasthttp.ReleaseResponse(b.resp)
	b.resp = nil
	b.r.putSplitter(b.sp)
	b.sp = nil
	b.pending = nil

	var u *platform.Usage
	if got, ok := b.usage.Usage(); ok {
		u = &got
	}
	b.finish(u, b.model)
	return nil
}
