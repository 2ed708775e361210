package sched

import (
	"errors"
	"unicode/utf16"
	"unicode/utf8"
)

// A small validating JSON walker over raw bytes: it visits the members the scheduler needs and
// skips the rest without building values, so a megabyte of conversation costs one linear pass and
// no allocations. Strings are decoded only when a caller asks (decodeString).

// errSyntax is any JSON syntax error.
var errSyntax = errors.New("invalid json")

// maxDepth bounds nesting, as encoding/json does, so hostile input cannot exhaust the stack.
const maxDepth = 10000

// span is the raw bytes of one value, [start, end) in the body. The zero span is "absent".
type span struct{ start, end int }

func (s span) ok() bool { return s.end > s.start }

func skipWS(b []byte, i int) int {
	for i < len(b) {
		switch b[i] {
		case ' ', '\t', '\n', '\r':
			i++
		default:
			return i
		}
	}
	return i
}

// skipValue returns the index just after the value that starts at b[i].
func skipValue(b []byte, i, depth int) (int, error) {
	if i >= len(b) {
		return 0, errSyntax
	}
	switch c := b[i]; {
	case c == '"':
		end, _, err := skipString(b, i)
		return end, err
	case c == '{':
		return eachMember(b, i, depth, nil)
	case c == '[':
		return eachElement(b, i, depth, nil)
	case c == 't':
		return skipLiteral(b, i, "true")
	case c == 'f':
		return skipLiteral(b, i, "false")
	case c == 'n':
		return skipLiteral(b, i, "null")
	case c == '-' || ('0' <= c && c <= '9'):
		return skipNumber(b, i)
	}
	return 0, errSyntax
}

func skipLiteral(b []byte, i int, lit string) (int, error) {
	if len(b)-i < len(lit) || string(b[i:i+len(lit)]) != lit {
		return 0, errSyntax
	}
	return i + len(lit), nil
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// skipNumber accepts the JSON number grammar: -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?
func skipNumber(b []byte, i int) (int, error) {
	if i < len(b) && b[i] == '-' {
		i++
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case i < len(b) && '1' <= b[i] && b[i] <= '9':
		for i < len(b) && isDigit(b[i]) {
			i++
		}
	default:
		return 0, errSyntax
	}
	if i < len(b) && b[i] == '.' {
		i++
		if i >= len(b) || !isDigit(b[i]) {
			return 0, errSyntax
		}
		for i < len(b) && isDigit(b[i]) {
			i++
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		if i >= len(b) || !isDigit(b[i]) {
			return 0, errSyntax
		}
		for i < len(b) && isDigit(b[i]) {
			i++
		}
	}
	return i, nil
}

func isHex(c byte) bool {
	return ('0' <= c && c <= '9') || ('a' <= c && c <= 'f') || ('A' <= c && c <= 'F')
}

// skipString returns the index after the closing quote of the string that starts at b[i] (a
// quote), and whether it contains escapes.
func skipString(b []byte, i int) (end int, escaped bool, err error) {
	i++
	for i < len(b) {
		c := b[i]
		switch {
		case c == '"':
			return i + 1, escaped, nil
		case c == '\\':
			escaped = true
			if i+1 >= len(b) {
				return 0, false, errSyntax
			}
			switch b[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				if i+6 > len(b) || !isHex(b[i+2]) || !isHex(b[i+3]) || !isHex(b[i+4]) || !isHex(b[i+5]) {
					return 0, false, errSyntax
				}
				i += 6
			default:
				return 0, false, errSyntax
			}
		case c < 0x20:
			return 0, false, errSyntax
		default:
			i++
		}
	}
	return 0, false, errSyntax
}

// memberFunc is called for each member of an object with the raw key (between the quotes) and the
// index where the value starts. It must consume the value and return the index after it; a nil
// memberFunc skips every value.
type memberFunc func(key []byte, keyEscaped bool, vs int) (int, error)

// eachMember walks the object that starts at b[i] ('{') and returns the index after its '}'.
func eachMember(b []byte, i, depth int, fn memberFunc) (int, error) {
	if depth >= maxDepth {
		return 0, errSyntax
	}
	i = skipWS(b, i+1)
	if i < len(b) && b[i] == '}' {
		return i + 1, nil
	}
	for {
		if i >= len(b) || b[i] != '"' {
			return 0, errSyntax
		}
		ke, esc, err := skipString(b, i)
		if err != nil {
			return 0, err
		}
		key := b[i+1 : ke-1]
		i = skipWS(b, ke)
		if i >= len(b) || b[i] != ':' {
			return 0, errSyntax
		}
		i = skipWS(b, i+1)
		if i >= len(b) {
			return 0, errSyntax // callbacks may read b[vs]
		}
		var ve int
		if fn != nil {
			ve, err = fn(key, esc, i)
		} else {
			ve, err = skipValue(b, i, depth+1)
		}
		if err != nil {
			return 0, err
		}
		i = skipWS(b, ve)
		if i >= len(b) {
			return 0, errSyntax
		}
		switch b[i] {
		case ',':
			i = skipWS(b, i+1)
		case '}':
			return i + 1, nil
		default:
			return 0, errSyntax
		}
	}
}

// elementFunc is called for each element of an array with its index and start; it must consume
// the element and return the index after it.
type elementFunc func(n, vs int) (int, error)

// eachElement walks the array that starts at b[i] ('[') and returns the index after its ']'.
func eachElement(b []byte, i, depth int, fn elementFunc) (int, error) {
	if depth >= maxDepth {
		return 0, errSyntax
	}
	i = skipWS(b, i+1)
	if i < len(b) && b[i] == ']' {
		return i + 1, nil
	}
	for n := 0; ; n++ {
		if i >= len(b) {
			return 0, errSyntax // callbacks may read b[vs]
		}
		var (
			ve  int
			err error
		)
		if fn != nil {
			ve, err = fn(n, i)
		} else {
			ve, err = skipValue(b, i, depth+1)
		}
		if err != nil {
			return 0, err
		}
		i = skipWS(b, ve)
		if i >= len(b) {
			return 0, errSyntax
		}
		switch b[i] {
		case ',':
			i = skipWS(b, i+1)
		case ']':
			return i + 1, nil
		default:
			return 0, errSyntax
		}
	}
}

// keyIs reports whether a raw object key equals name once decoded.
func keyIs(key []byte, escaped bool, name string) bool {
	if !escaped {
		return string(key) == name
	}
	var buf [64]byte
	return string(appendUnescaped(buf[:0], key)) == name
}

// stringSpan consumes the value at b[i] and returns its span when it is a string (quotes
// included), or the zero span for any other value.
func stringSpan(b []byte, i, depth int) (span, int, error) {
	if i < len(b) && b[i] == '"' {
		end, _, err := skipString(b, i)
		return span{i, end}, end, err
	}
	end, err := skipValue(b, i, depth)
	return span{}, end, err
}

// nonEmptyString reports whether a string span decodes to a non-empty string (every escape
// decodes to at least one byte, so only "" is empty).
func nonEmptyString(s span) bool { return s.end-s.start > 2 }

// decodeString appends the decoded contents of the string span s (quotes included) to dst.
func decodeString(dst, b []byte, s span) []byte {
	return appendUnescaped(dst, b[s.start+1:s.end-1])
}

// appendUnescaped decodes JSON string contents (already validated by skipString). Escaped lone
// surrogates become U+FFFD, as encoding/json and JavaScript's UTF-8 encoder do. Raw bytes are
// copied as they are.
func appendUnescaped(dst, s []byte) []byte {
	for i := 0; i < len(s); {
		c := s[i]
		if c != '\\' {
			j := i + 1
			for j < len(s) && s[j] != '\\' {
				j++
			}
			dst = append(dst, s[i:j]...)
			i = j
			continue
		}
		if i+1 >= len(s) {
			return dst
		}
		switch s[i+1] {
		case '"', '\\', '/':
			dst = append(dst, s[i+1])
		case 'b':
			dst = append(dst, '\b')
		case 'f':
			dst = append(dst, '\f')
		case 'n':
			dst = append(dst, '\n')
		case 'r':
			dst = append(dst, '\r')
		case 't':
			dst = append(dst, '\t')
		case 'u':
			r := hex4(s[i+2 : i+6])
			i += 6
			if utf16.IsSurrogate(r) {
				if i+6 <= len(s) && s[i] == '\\' && s[i+1] == 'u' {
					if dec := utf16.DecodeRune(r, hex4(s[i+2:i+6])); dec != utf8.RuneError {
						dst = utf8.AppendRune(dst, dec)
						i += 6
						continue
					}
				}
				r = utf8.RuneError
			}
			dst = utf8.AppendRune(dst, r)
			continue
		}
		i += 2
	}
	return dst
}

func hex4(b []byte) rune {
	var r rune
	for _, c := range b[:4] {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c = c - 'a' + 10
		case 'A' <= c && c <= 'F':
			c = c - 'A' + 10
		}
		r = r<<4 | rune(c)
	}
	return r
}
