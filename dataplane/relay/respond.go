package relay

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/crsrelay/crs/dataplane/apierr"
	"github.com/crsrelay/crs/dataplane/relay/platform"
	crsv1 "github.com/crsrelay/crs/gen/crs/v1"
	"github.com/valyala/fasthttp"
	"go.uber.org/zap"
)

// respondBuffered passes a whole 2xx answer to the client: status, filtered headers and body, with
// usage read from the body. It owns and releases resp.
func (c *call) respondBuffered(acct *crsv1.Account, up platform.Upstream, model string, resp *fasthttp.Response) {
	defer fasthttp.ReleaseResponse(resp)
	body, err := readBody(resp, c.r.o.MaxResponseBodySize)
	if err != nil {
		c.r.log.Warn("upstream body unreadable", zap.String("request_id", c.req.RequestID),
			zap.String("account_id", acct.GetId()), zap.Error(err))
		e := transportError(classifyTransport(err))
		if errors.Is(err, fasthttp.ErrBodyTooLarge) {
			e = apierr.UpstreamTooLarge
		}
		c.writeError(e)
		c.finish()
		return
	}
	status := resp.StatusCode()
	c.ctx.SetStatusCode(status)
	passHeaders(&c.ctx.Response.Header, &resp.Header)
	c.out.Status = status
	c.out.FirstByte = time.Since(c.req.Started)

	var u *platform.Usage
	if c.req.Op != OpCountTokens {
		if got, ok := bodyUsage(up, body, model); ok {
			u = &got
		}
	}
	setBody(&c.ctx.Response, resp, body)
	// The answer was complete when it was passed on: its duration is the time to the first byte.
	c.finishUsage(u, model, c.out.FirstByte)
}

// bodyUsage reads the usage of a whole non-stream body: through the upstream's BodyUsage when it
// has one (no reader to allocate), else through a UsageReader.
func bodyUsage(up platform.Upstream, body []byte, model string) (platform.Usage, bool) {
	if bu, ok := up.(platform.BodyUsage); ok {
		return bu.BodyUsage(body, model)
	}
	ur := up.NewUsage()
	ur.Body(body)
	return ur.Usage()
}

// setBody makes body, read from the upstream response up, the client response's body. When body is
// up's own buffer the two responses swap buffers instead of copying (both stay pooled); a decoded
// body is copied.
//
// The buffer up gets back is the client response's previous one, which fasthttp has emptied
// (length 0). It is handed over at its full length: fasthttp's body pool sizes itself by the
// lengths it is given back (bytebufferpool calibration) and drops buffers larger than most of
// them, so a pool fed empty buffers would drop every one and allocate a new buffer, and grow it,
// for every upstream answer.
func setBody(dst, up *fasthttp.Response, body []byte) {
	if b := up.Body(); len(b) == len(body) && len(b) > 0 && &b[0] == &body[0] {
		old := dst.SwapBody(b)
		up.SwapBody(old[:cap(old)])
		return
	}
	dst.SetBody(body)
}

// respondError passes an upstream error answer to the client. A stream request gets HTTP 200
// text/event-stream with one event: error carrying the upstream status and body (reference §1.3.2);
// any other request gets the upstream status, filtered headers and body.
func (c *call) respondError(status int, h *fasthttp.ResponseHeader, body []byte) {
	ctx := c.ctx
	if c.req.Stream {
		ctx.SetStatusCode(fasthttp.StatusOK)
		setStreamHeaders(ctx)
		ctx.Response.SetBodyRaw(apierr.AppendStreamUpstreamError(nil, status, body, time.Now()))
		c.out.Status = fasthttp.StatusOK
		c.out.FirstByte = time.Since(c.req.Started)
		return
	}
	ctx.SetStatusCode(status)
	passHeaders(&ctx.Response.Header, h)
	ctx.Response.SetBody(body)
	c.out.Status = status
	c.out.FirstByte = time.Since(c.req.Started)
}

// setStreamHeaders sets the headers of an SSE answer (reference §1.3 step 5).
// The names are in canonical form, for SetCanonical: Set would normalize them on every request.
func setStreamHeaders(ctx *fasthttp.RequestCtx) {
	h := &ctx.Response.Header
	h.SetContentType("text/event-stream")
	h.SetCanonical([]byte("Cache-Control"), []byte("no-cache"))
	if !ctx.Request.Header.ConnectionClose() {
		h.SetCanonical([]byte("Connection"), []byte("keep-alive"))
	}
	// nginx buffers proxied responses unless told not to.
	h.SetCanonical([]byte("X-Accel-Buffering"), []byte("no"))
}

// passStreamHeaders copies the upstream headers a stream answer keeps: the request id and the rate
// limit state (anthropic-ratelimit-*), which clients such as Claude Code display. They are added
// after the ones dst has, as passHeaders adds them.
func passStreamHeaders(dst, src *fasthttp.ResponseHeader) {
	var p headerPass
	p.start(dst)
	for k, v := range src.All() {
		if bytes.EqualFold(k, []byte("request-id")) || hasPrefixFold(k, "anthropic-ratelimit-") {
			p.add(k, v)
		}
	}
}

// passHeaders copies upstream response headers to the client, except hop-by-hop headers (RFC 9110
// §7.6.1; std net/http/httputil hopHeaders), the framing ones fasthttp writes itself
// (Content-Length, Transfer-Encoding), Content-Encoding (bodies are passed decoded, reference §1.3
// step 11), and Set-Cookie (the upstream's cookies belong to its domain and account, not to the
// relay's clients). The headers dst has already stay, before the copied ones.
func passHeaders(dst, src *fasthttp.ResponseHeader) {
	var p headerPass
	p.start(dst)
	for k, v := range src.All() {
		if dropResponseHeader(k) {
			continue
		}
		if len(k) == len("content-type") && bytes.EqualFold(k, []byte("content-type")) {
			dst.SetContentTypeBytes(v)
			continue
		}
		p.add(k, v)
	}
}

// headerPass adds upstream headers to a client response, after the ones it has, under the same
// names: as AddBytesKV with normalizing off would, only cheaper. It lives for one copy and holds
// the names of dst's headers, aliasing dst and the headers copied (which must not change).
//
// The upstream's names are in fasthttp's canonical form already (the upstream clients normalize
// the names they parse, and fail builds its header with Add, which does too), so most are set
// with SetCanonical, which neither re-validates nor re-normalizes them: AddBytesKV does both, for
// every header, a third of the cost of a copy. SetCanonical replaces a header of the same name,
// so a name dst has already (the worker's, or an upstream header repeated) is added through
// AddBytesKV, beside the other.
type headerPass struct {
	dst *fasthttp.ResponseHeader
	n   int
	// names holds dst's header names, n of them while n <= len(names); past that every name
	// counts as present, and every header is added through AddBytesKV (correct, only slower).
	names [32][]byte
}

// start readies p to add to dst.
func (p *headerPass) start(dst *fasthttp.ResponseHeader) {
	p.dst = dst
	for k := range dst.All() {
		p.note(k)
	}
}

// add adds k: v to dst.
func (p *headerPass) add(k, v []byte) {
	if p.has(k) {
		if !p.dst.DisableNormalizing() {
			defer p.dst.EnableNormalizing()
		}
		p.dst.AddBytesKV(k, v)
		return
	}
	p.note(k)
	p.dst.SetCanonical(k, v)
}

func (p *headerPass) note(k []byte) {
	if p.n < len(p.names) {
		p.names[p.n] = k
	}
	p.n++
}

func (p *headerPass) has(k []byte) bool {
	if p.n > len(p.names) {
		return true
	}
	for _, n := range p.names[:p.n] {
		if string(n) == string(k) {
			return true
		}
	}
	return false
}

func dropResponseHeader(k []byte) bool {
	switch len(k) {
	case 2:
		return bytes.EqualFold(k, []byte("te"))
	case 7:
		return bytes.EqualFold(k, []byte("upgrade")) || bytes.EqualFold(k, []byte("trailer"))
	case 10:
		return bytes.EqualFold(k, []byte("connection")) || bytes.EqualFold(k, []byte("keep-alive")) ||
			bytes.EqualFold(k, []byte("set-cookie"))
	case 14:
		return bytes.EqualFold(k, []byte("content-length"))
	case 16:
		return bytes.EqualFold(k, []byte("content-encoding")) || bytes.EqualFold(k, []byte("proxy-connection"))
	case 17:
		return bytes.EqualFold(k, []byte("transfer-encoding"))
	case 18:
		return bytes.EqualFold(k, []byte("proxy-authenticate"))
	case 19:
		return bytes.EqualFold(k, []byte("proxy-authorization"))
	}
	return false
}

func hasPrefixFold(s []byte, prefix string) bool {
	return len(s) >= len(prefix) && bytes.EqualFold(s[:len(prefix)], []byte(prefix))
}

// copyHeaders returns owned copies of h's headers, for an answer that outlives its response.
func copyHeaders(h *fasthttp.ResponseHeader) []Header {
	var out []Header
	for k, v := range h.All() {
		out = append(out, Header{Name: string(k), Value: string(v)})
	}
	return out
}

// isEventStream reports whether an upstream answered with an SSE body.
func isEventStream(h *fasthttp.ResponseHeader) bool {
	return hasPrefixFold(bytes.TrimSpace(h.ContentType()), "text/event-stream")
}

// readBody returns resp's whole body, decoded, reading a streamed one up to limit bytes. Upstreams
// are asked for identity; one that compresses anyway is decoded here, because bodies are read for
// usage and errors, and Content-Encoding is not passed on.
func readBody(resp *fasthttp.Response, limit int) ([]byte, error) {
	if resp.IsBodyStream() {
		b, err := io.ReadAll(io.LimitReader(resp.BodyStream(), int64(limit)+1))
		if err != nil {
			return nil, fmt.Errorf("read upstream body: %w", err)
		}
		if len(b) > limit {
			return nil, fasthttp.ErrBodyTooLarge
		}
		// Keep the body in resp for BodyUncompressed; this also closes the stream and returns the
		// connection to the pool.
		resp.SetBodyRaw(b)
	}
	if ce := resp.Header.ContentEncoding(); len(ce) == 0 || bytes.EqualFold(ce, []byte("identity")) {
		return resp.Body(), nil
	}
	b, err := resp.BodyUncompressedWithLimit(limit)
	if err != nil {
		return nil, fmt.Errorf("decode upstream body: %w", err)
	}
	return b, nil
}
