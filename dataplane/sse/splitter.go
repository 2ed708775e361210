// Package sse splits a server-sent-events byte stream into events and reads fields out of one event,
// without decoding JSON and, on the hot path, without allocating. It knows the SSE wire format
// (https://html.spec.whatwg.org/multipage/server-sent-events.html) and nothing of any provider's
// event payloads; it depends on the standard library only.
package sse

import (
	"bytes"
	"errors"
	"io"
)

// Sizes used by NewSplitter when given zero.
const (
	// DefaultBufferSize is the initial read buffer. Anthropic events are mostly well under 1 KiB.
	DefaultBufferSize = 4 << 10
	// DefaultMaxEvent bounds how much of one event is held before it is handed out in fragments.
	DefaultMaxEvent = 1 << 20
)

// ErrClosed is returned by Next after the splitter was released.
var ErrClosed = errors.New("sse: splitter released")

// Splitter reads an SSE stream and returns it one event at a time. An event is everything up to and
// including the blank line that ends it ("\n\n", "\r\n\r\n", or the mixed "\n\r\n" and "\r\n\n");
// bytes are returned exactly as read, so concatenating everything Next returns reproduces the input.
// A bare "\r" line ending (allowed by the SSE spec, sent by no LLM API) is not treated as a boundary.
//
// A Splitter is created per stream and is not safe for concurrent use. The slice Next returns points
// into the Splitter's buffer and is valid only until the next call to Next or Reset.
type Splitter struct {
	r   io.Reader
	buf []byte
	// buf[start:end] is read but not yet returned; scan is where the search for a boundary resumes
	// (everything in buf[start:scan] is known to hold none).
	start, scan, end int
	max              int
	err              error
	partial          bool
}

// NewSplitter returns a Splitter reading r with an initial buffer of bufSize bytes that grows up to
// maxEvent bytes; an event larger than maxEvent is returned in fragments (see Partial).
// Zero or negative sizes select DefaultBufferSize and DefaultMaxEvent.
func NewSplitter(r io.Reader, bufSize, maxEvent int) *Splitter {
	if bufSize <= 0 {
		bufSize = DefaultBufferSize
	}
	if maxEvent <= 0 {
		maxEvent = DefaultMaxEvent
	}
	if maxEvent < 16 {
		maxEvent = 16
	}
	if bufSize > maxEvent {
		bufSize = maxEvent
	}
	return &Splitter{r: r, buf: make([]byte, bufSize), max: maxEvent}
}

// Reset makes s read a new stream, keeping its buffer (for reuse through a pool). A buffer that grew
// past keep bytes is dropped so that a pool does not pin memory after one huge event.
func (s *Splitter) Reset(r io.Reader, keep int) {
	if keep > 0 && cap(s.buf) > keep {
		s.buf = make([]byte, keep)
	}
	s.r = r
	s.start, s.scan, s.end = 0, 0, 0
	s.err = nil
	s.partial = false
}

// Partial reports whether the slice last returned by Next is a fragment of an event longer than the
// maximum event size rather than a whole event. The rest follows in the next calls; the last
// fragment of the event (the one ending with its blank line) is not partial.
func (s *Splitter) Partial() bool { return s.partial }

// Buffered returns the bytes read but not yet returned (an incomplete event), valid until the next
// call to Next.
func (s *Splitter) Buffered() []byte { return s.buf[s.start:s.end] }

// Next returns the next event. At the end of the stream the bytes after the last blank line, if any,
// are returned as a final event without a terminator, then (nil, io.EOF). A read error other than
// io.EOF is returned as is, after the complete events before it; the incomplete event it cut is left
// in Buffered.
func (s *Splitter) Next() ([]byte, error) {
	s.partial = false
	if s.r == nil {
		return nil, ErrClosed
	}
	empty := 0
	for {
		if i := s.boundary(); i >= 0 {
			ev := s.buf[s.start:i]
			s.start, s.scan = i, i
			return ev, nil
		}
		if s.err != nil {
			if s.err == io.EOF && s.end > s.start {
				ev := s.buf[s.start:s.end]
				s.start, s.scan = s.end, s.end
				return ev, nil
			}
			return nil, s.err
		}
		if s.end == len(s.buf) {
			if ev := s.makeRoom(); ev != nil {
				return ev, nil
			}
		}
		n, err := s.r.Read(s.buf[s.end:])
		if n < 0 || n > len(s.buf)-s.end {
			n, err = 0, io.ErrShortBuffer // a reader violating the io.Reader contract
		}
		s.end += n
		if err != nil {
			s.err = err
		}
		if n == 0 && err == nil {
			// A reader returning (0, nil) over and over is broken; give up as bufio.Reader does.
			if empty++; empty >= 100 {
				s.err = io.ErrNoProgress
			}
		} else {
			empty = 0
		}
	}
}

// boundary returns the index just past the blank line ending the first event in
// buf[start:end], or -1. It resumes at s.scan and leaves it where a later call must look again.
func (s *Splitter) boundary() int {
	b := s.buf[:s.end]
	i := s.scan
	for i < len(b) {
		j := bytes.IndexByte(b[i:], '\n')
		if j < 0 {
			s.scan = len(b)
			return -1
		}
		i += j
		// b[i] == '\n'. A blank line follows if the next line is empty: "\n" or "\r\n".
		switch {
		case i+1 >= len(b):
			s.scan = i
			return -1
		case b[i+1] == '\n':
			return i + 2
		case b[i+1] == '\r':
			if i+2 >= len(b) {
				s.scan = i
				return -1
			}
			if b[i+2] == '\n' {
				return i + 3
			}
		}
		i++
	}
	s.scan = i
	return -1
}

// makeRoom frees space at the end of the buffer: it drops what was returned, grows the buffer up
// to max, or, when one event fills max bytes, returns all of it but the last two bytes (which may
// begin the blank line) as a fragment.
func (s *Splitter) makeRoom() []byte {
	if s.start > 0 {
		n := copy(s.buf, s.buf[s.start:s.end])
		s.scan -= s.start
		s.start, s.end = 0, n
		return nil
	}
	if len(s.buf) < s.max {
		size := 2 * len(s.buf)
		if size > s.max {
			size = s.max
		}
		nb := make([]byte, size)
		copy(nb, s.buf[:s.end])
		s.buf = nb
		return nil
	}
	cut := s.end - 2
	ev := s.buf[:cut]
	s.start = cut
	if s.scan > cut {
		s.scan = cut
	}
	s.partial = true
	return ev
}
