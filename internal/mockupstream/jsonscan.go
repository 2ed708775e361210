package mockupstream

import "unicode/utf8"

// requestFields are the few fields of a Messages request body the mock needs.
type requestFields struct {
	// model is the model's JSON string literal, quotes and escapes included, aliasing the body; a
	// model that is not a string is left empty.
	model       []byte
	hasMessages bool
	stream      bool
}

// scanRequest validates body as JSON and picks model, messages and stream from its top-level
// object without decoding the rest, so a large Claude Code body costs one pass and no
// allocation. ok is false when body is not valid JSON or not an object.
func scanRequest(body []byte) (f requestFields, ok bool) {
	s := scanner{b: body}
	s.ws()
	if !s.eat('{') {
		return f, false
	}
	s.ws()
	if s.eat('}') {
		s.ws()
		return f, s.i == len(s.b)
	}
	for {
		s.ws()
		ks, ke, ok := s.str()
		if !ok {
			return f, false
		}
		key := s.b[ks:ke]
		s.ws()
		if !s.eat(':') {
			return f, false
		}
		s.ws()
		vs := s.i
		if !s.value(0) {
			return f, false
		}
		val := s.b[vs:s.i]
		switch string(key) {
		case "model":
			if val[0] == '"' {
				f.model = val
			}
		case "messages":
			f.hasMessages = len(val) > 0 && val[0] == '['
		case "stream":
			f.stream = string(val) == "true"
		}
		s.ws()
		if s.eat(',') {
			continue
		}
		if !s.eat('}') {
			return f, false
		}
		s.ws()
		return f, s.i == len(s.b)
	}
}

// maxDepth bounds nesting so a hostile body cannot recurse without limit.
const maxDepth = 512

type scanner struct {
	b []byte
	i int
}

func (s *scanner) ws() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

func (s *scanner) eat(c byte) bool {
	if s.i < len(s.b) && s.b[s.i] == c {
		s.i++
		return true
	}
	return false
}

// str consumes a JSON string and returns the bounds of its raw contents (escapes not decoded).
func (s *scanner) str() (start, end int, ok bool) {
	if !s.eat('"') {
		return 0, 0, false
	}
	start = s.i
	for s.i < len(s.b) {
		c := s.b[s.i]
		switch {
		case c == '"':
			end = s.i
			s.i++
			return start, end, true
		case c == '\\':
			s.i++
			if s.i >= len(s.b) {
				return 0, 0, false
			}
			switch s.b[s.i] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				s.i++
			case 'u':
				if s.i+5 > len(s.b) {
					return 0, 0, false
				}
				for _, h := range s.b[s.i+1 : s.i+5] {
					if !isHex(h) {
						return 0, 0, false
					}
				}
				s.i += 5
			default:
				return 0, 0, false
			}
		case c < 0x20:
			return 0, 0, false
		default:
			s.i++
		}
	}
	return 0, 0, false
}

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

func (s *scanner) digits() bool {
	st := s.i
	for s.i < len(s.b) && isDigit(s.b[s.i]) {
		s.i++
	}
	return s.i > st
}

func (s *scanner) number() bool {
	s.eat('-')
	if s.eat('0') {
		// a leading zero stands alone
	} else if !s.digits() {
		return false
	}
	if s.eat('.') && !s.digits() {
		return false
	}
	if s.i < len(s.b) && (s.b[s.i] == 'e' || s.b[s.i] == 'E') {
		s.i++
		if !s.eat('+') {
			s.eat('-')
		}
		if !s.digits() {
			return false
		}
	}
	return true
}

func (s *scanner) lit(w string) bool {
	if len(s.b)-s.i >= len(w) && string(s.b[s.i:s.i+len(w)]) == w {
		s.i += len(w)
		return true
	}
	return false
}

// value consumes one JSON value of any kind.
func (s *scanner) value(depth int) bool {
	if s.i >= len(s.b) || depth > maxDepth {
		return false
	}
	switch c := s.b[s.i]; {
	case c == '"':
		_, _, ok := s.str()
		return ok
	case c == '{':
		s.i++
		s.ws()
		if s.eat('}') {
			return true
		}
		for {
			s.ws()
			if _, _, ok := s.str(); !ok {
				return false
			}
			s.ws()
			if !s.eat(':') {
				return false
			}
			s.ws()
			if !s.value(depth + 1) {
				return false
			}
			s.ws()
			if s.eat(',') {
				continue
			}
			return s.eat('}')
		}
	case c == '[':
		s.i++
		s.ws()
		if s.eat(']') {
			return true
		}
		for {
			s.ws()
			if !s.value(depth + 1) {
				return false
			}
			s.ws()
			if s.eat(',') {
				continue
			}
			return s.eat(']')
		}
	case c == '-' || isDigit(c):
		return s.number()
	case c == 't':
		return s.lit("true")
	case c == 'f':
		return s.lit("false")
	case c == 'n':
		return s.lit("null")
	}
	return false
}

const hexDigits = "0123456789abcdef"

// appendJSONString appends s as a quoted JSON string. Invalid UTF-8 becomes U+FFFD, as
// encoding/json does.
func appendJSONString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, "\ufffd"...)
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}
