package mockupstream

import (
	"bufio"
	"io"
	"net"
	"strconv"
	"time"
)

// Fixed events of every stream. The ping carries a space after the colon, as the real API's does.
const (
	eventContentBlockStart = "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n"
	eventPing              = "event: ping\ndata: {\"type\": \"ping\"}\n\n"
	eventContentBlockStop  = "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n"
	eventMessageStop       = "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"
	eventOverloaded        = "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n"
)

// appendUsage appends the usage object of message_start (outputTokens 1) or of a non-stream answer.
func appendUsage(dst []byte, b *behavior, outputTokens int) []byte {
	dst = append(dst, `{"input_tokens":`...)
	dst = strconv.AppendInt(dst, int64(b.InputTokens), 10)
	dst = append(dst, `,"cache_creation_input_tokens":`...)
	dst = strconv.AppendInt(dst, int64(b.CacheCreation5m+b.CacheCreation1h), 10)
	dst = append(dst, `,"cache_read_input_tokens":`...)
	dst = strconv.AppendInt(dst, int64(b.CacheRead), 10)
	dst = append(dst, `,"cache_creation":{"ephemeral_5m_input_tokens":`...)
	dst = strconv.AppendInt(dst, int64(b.CacheCreation5m), 10)
	dst = append(dst, `,"ephemeral_1h_input_tokens":`...)
	dst = strconv.AppendInt(dst, int64(b.CacheCreation1h), 10)
	dst = append(dst, `},"output_tokens":`...)
	dst = strconv.AppendInt(dst, int64(outputTokens), 10)
	return append(dst, `,"service_tier":"standard"}`...)
}

// appendMessage appends a complete non-stream answer. model is the request's model as a JSON string
// literal, quotes included.
func appendMessage(dst []byte, b *behavior, model, msgID []byte) []byte {
	dst = append(dst, `{"id":"`...)
	dst = append(dst, msgID...)
	dst = append(dst, `","type":"message","role":"assistant","model":`...)
	dst = append(dst, model...)
	dst = append(dst, `,"content":[{"type":"text","text":"`...)
	dst = append(dst, b.text...)
	dst = append(dst, `"}],"stop_reason":"end_turn","stop_sequence":null,"usage":`...)
	dst = appendUsage(dst, b, b.OutputTokens)
	return append(dst, '}')
}

// eventSeq renders the events of one stream in order:
//
//	0 message_start, 1 content_block_start, 2 ping, 3…3+Deltas-1 content_block_delta,
//	content_block_stop, message_delta, message_stop
//
// With ErrorAfterEvents = n > 0, event n is an in-band overloaded error and the last.
type eventSeq struct {
	b     *behavior
	model []byte // JSON string literal
	msgID []byte
	i     int
	done  bool
}

func (q *eventSeq) total() int { return q.b.Deltas + 6 }

// more reports whether an event is left.
func (q *eventSeq) more() bool { return !q.done && q.i < q.total() }

// delay is how long to wait before the next event.
func (q *eventSeq) delay() time.Duration {
	if q.i == 0 || !q.more() {
		return 0
	}
	return q.b.EventDelay
}

// next appends the next event to dst. ok is false when the stream has ended.
func (q *eventSeq) next(dst []byte) (out []byte, ok bool) {
	if !q.more() {
		q.done = true
		return dst, false
	}
	i, d := q.i, q.b.Deltas
	q.i++
	if n := q.b.ErrorAfterEvents; n > 0 && i == n {
		q.done = true
		return append(dst, eventOverloaded...), true
	}
	switch {
	case i == 0:
		dst = append(dst, "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\""...)
		dst = append(dst, q.msgID...)
		dst = append(dst, `","type":"message","role":"assistant","model":`...)
		dst = append(dst, q.model...)
		dst = append(dst, `,"content":[],"stop_reason":null,"stop_sequence":null,"usage":`...)
		dst = appendUsage(dst, q.b, 1)
		return append(dst, "}}\n\n"...), true
	case i == 1:
		return append(dst, eventContentBlockStart...), true
	case i == 2:
		return append(dst, eventPing...), true
	case i < 3+d:
		return append(dst, q.b.deltaEvent...), true
	case i == 3+d:
		return append(dst, eventContentBlockStop...), true
	case i == 4+d:
		dst = append(dst, "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":"...)
		dst = strconv.AppendInt(dst, int64(q.b.OutputTokens), 10)
		return append(dst, "}}\n\n"...), true
	default:
		return append(dst, eventMessageStop...), true
	}
}

// stream is the body of one streamed answer. It is an io.Reader that returns one SSE event per Read
// (split only if it exceeds fasthttp's 4 KiB copy buffer); fasthttp writes each Read as one chunk
// and flushes it (http.go writeBodyChunked), so every event reaches the client when it is
// rendered, without the goroutine and pipe of SetBodyStreamWriter. fasthttp calls Close once the
// body is written or abandoned, which ends the request's accounting and returns the stream to its
// pool. A stream is used by one connection goroutine at a time.
type stream struct {
	seq     eventSeq
	buf     []byte
	pending []byte
	tr      tracker
	release func(*stream)
}

// Read implements [io.Reader].
func (s *stream) Read(p []byte) (int, error) {
	if len(s.pending) == 0 {
		if d := s.seq.delay(); d > 0 {
			time.Sleep(d)
		}
		var ok bool
		s.buf, ok = s.seq.next(s.buf[:0])
		if !ok {
			return 0, io.EOF
		}
		s.pending = s.buf
	}
	n := copy(p, s.pending)
	s.pending = s.pending[n:]
	return n, nil
}

// Close implements [io.Closer]. It is safe to call more than once.
func (s *stream) Close() error {
	if s.seq.b == nil {
		return nil
	}
	s.tr.end(false)
	s.tr = tracker{}
	s.seq = eventSeq{model: s.seq.model[:0], msgID: s.seq.msgID[:0]}
	s.pending = nil
	s.buf = s.buf[:0]
	if s.release != nil {
		s.release(s)
	}
	return nil
}

// writeDisconnecting serves a stream that dies after n events: it writes head (a complete HTTP
// response header announcing a chunked body), then n events as chunks, then returns so that the
// caller closes the connection without the terminating chunk. Clients see an unexpected EOF.
func writeDisconnecting(c net.Conn, head []byte, seq *eventSeq, n int) {
	w := bufio.NewWriter(c)
	if _, err := w.Write(head); err != nil {
		return
	}
	var buf []byte
	for i := 0; i < n; i++ {
		if d := seq.delay(); d > 0 {
			time.Sleep(d)
		}
		var ok bool
		if buf, ok = seq.next(buf[:0]); !ok {
			break
		}
		w.WriteString(strconv.FormatInt(int64(len(buf)), 16))
		w.WriteString("\r\n")
		w.Write(buf)
		w.WriteString("\r\n")
		if err := w.Flush(); err != nil {
			return
		}
	}
	w.Flush()
}
