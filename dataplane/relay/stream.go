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
		conn:  connOf(resp),
		sp:    sp,
		usage: up.NewUsage(),
	}, -1)
}

// streamBody is the body of a streamed answer. fasthttp pulls it on the connection's goroutine after
// the handler returned: through WriteTo, which writes the events as chunks and flushes them, or
// through Read. It owns the upstream response, the splitter and the call until CloseWithError, which
// fasthttp calls exactly once when it is done with the body (also when the client left or the
// response was replaced), and which ends the request. It must not touch the RequestCtx (call.ctx).
// It is not safe for concurrent use.
type streamBody struct {
	call
	acct  *crsv1.Account
	model string
	resp  *fasthttp.Response
	// conn is the upstream connection resp is read from, nil if unknown (then every event is
	// flushed on its own).
	conn  *deadlineConn
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

	// WriteTo state: the client writer, events received but not written yet, bytes written, and
	// the error that ended writing (the client left).
	w       io.Writer
	batch   *[]byte
	written int64
	werr    error
}

// maxBatch is how many bytes of events WriteTo holds before it writes them even though more are
// already received.
const maxBatch = 32 << 10

// SupportsBodyWriteTo implements [fasthttp.BodyWriterTo]: WriteTo sends what Read would, and
// each event reaches the client before the relay waits for the next one.
func (b *streamBody) SupportsBodyWriteTo() bool { return true }

// WriteTo writes the stream to w, which fasthttp turns into one flushed chunk per Write. Events
// that arrived together are written together: each event is held only while the next one is
// already received, and everything held is written before the relay waits for the upstream
// (beforeRead, called by the upstream connection before it reads from the network). So the client
// sees every event as soon as a relay writing one chunk per event would, with one write (one
// syscall, one chunk) for all the events that arrived in one read. An error from w means the
// client is gone: WriteTo stops reading upstream and returns it, and CloseWithError closes the
// upstream connection.
func (b *streamBody) WriteTo(w io.Writer) (int64, error) {
	if b.conn == nil {
		return b.writeEach(w)
	}
	b.w = w
	b.batch = b.r.getBatch()
	b.conn.setReader(b)
	for {
		ev, err := b.next()
		if b.werr != nil {
			return b.written, b.werr
		}
		if err != nil {
			return b.written, b.flush()
		}
		*b.batch = append(*b.batch, ev...)
		if len(*b.batch) >= maxBatch {
			if err := b.flush(); err != nil {
				return b.written, err
			}
		}
	}
}

// writeEach writes every event as its own chunk, for a stream whose connection is unknown.
func (b *streamBody) writeEach(w io.Writer) (int64, error) {
	for {
		ev, err := b.next()
		if err != nil {
			return b.written, nil
		}
		m, err := w.Write(ev)
		b.written += int64(m)
		if err != nil {
			return b.written, err
		}
	}
}

// beforeRead implements netReader: the upstream connection is about to wait for bytes, so
// everything received goes to the client first. A failed write fails the read, which ends the
// stream without waiting for the upstream.
func (b *streamBody) beforeRead() error {
	if b.werr != nil {
		return b.werr
	}
	return b.flush()
}

// flush writes the held events as one chunk.
func (b *streamBody) flush() error {
	if b.werr != nil || len(*b.batch) == 0 {
		return b.werr
	}
	m, err := b.w.Write(*b.batch)
	b.written += int64(m)
	*b.batch = (*b.batch)[:0]
	if err != nil {
		b.werr = err
	}
	return err
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
	if b.werr != nil {
		return nil, b.werr // the read failed because the client is gone (beforeRead)
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
	if b.conn != nil {
		b.conn.setReader(nil)
		b.conn = nil
	}
	if b.batch != nil {
		b.r.putBatch(b.batch)
		b.batch = nil
	}
	b.w = nil
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
	b.finishUsage(u, b.model, time.Since(b.req.Started))
	return nil
}
