package claude

import "errors"

// A small validating JSON walker over raw bytes, for reading usage out of answers without
// encoding/json (usagescan.go): it visits the members of an object and skips the rest without
// building values, so a long answer costs one linear pass and no allocations. It accepts exactly
// the JSON grammar (RFC 8259) or reports errSyntax; usagescan.go falls back to encoding/json on
// any error, so only its acceptances need to agree with encoding/json, never its refusals.
// (dataplane/sched has a sibling walker for request bodies.)

// errSyntax is any JSON syntax error, or nesting deeper than maxDepth.
var errSyntax = errors.New("invalid json")

// maxDepth bounds nesting (encoding/json's limit), so hostile input cannot exhaust the stack.
const maxDepth = 10000

// strPlain marks the bytes a JSON string may hold as they are: everything but the quote, the
// backslash and control characters.
var strPlain = func() (t [256]bool) {
	for c := 0x20; c < 256; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

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
		return skipArray(b, i, depth)
	case c == 't':
		return skipLiteral(b, i, "true")
	case c == 'f':
		return skipLiteral(b, i, "false")
	case c == 'n':
		return skipLiteral(b, i, "null")
	case c == '-' || isDigit(c):
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
// quote), and whether it holds anything but printable ASCII (escapes or bytes >= 0x80), which
// callers that want its value leave to encoding/json.
func skipString(b []byte, i int) (end int, special bool, err error) {
	i++
	for i < len(b) {
		c := b[i]
		if strPlain[c] {
			if c >= 0x80 {
				special = true
			}
			i++
			continue
		}
		switch c {
		case '"':
			return i + 1, special, nil
		case '\\':
			special = true
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
		default: // a control character
			return 0, false, errSyntax
		}
	}
	return 0, false, errSyntax
}

// memberFunc is called for each member of an object with the raw key (between the quotes), whether
// the key holds anything but printable ASCII, and the index where the value starts. It must
// consume the value and return the index after it.
type memberFunc func(key []byte, special bool, vs int) (int, error)

// eachMember walks the object that starts at b[i] ('{') and returns the index after its '}'. A nil
// fn skips every value.
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
		ke, special, err := skipString(b, i)
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
			ve, err = fn(key, special, i)
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

// skipArray skips the array that starts at b[i] ('[') and returns the index after its ']'.
func skipArray(b []byte, i, depth int) (int, error) {
	if depth >= maxDepth {
		return 0, errSyntax
	}
	i = skipWS(b, i+1)
	if i < len(b) && b[i] == ']' {
		return i + 1, nil
	}
	for {
		ve, err := skipValue(b, i, depth+1)
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
