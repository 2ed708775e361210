// Package jsonscan is a small validating JSON walker over raw bytes. It visits the members of
// objects and the elements of arrays through callbacks and skips everything else without building
// values, so a megabyte of conversation costs one linear pass and no allocation. Strings are
// decoded only when a caller asks (DecodeString, AppendUnescaped).
//
// It accepts exactly the JSON grammar of RFC 8259, nesting up to MaxDepth, or reports ErrSyntax.
// It does not check that strings are valid UTF-8 (raw bytes are kept as they are) and it does not
// interpret values beyond their grammar, so callers that must agree with encoding/json keep it as
// their fallback: they take what the walker reads when they can be sure it means the same, and
// hand anything else (an error, an escaped or non-ASCII name, a repeated member...) to
// encoding/json.
package jsonscan

import (
	"encoding/binary"
	"errors"
	"math/bits"
)

// ErrSyntax is any JSON syntax error, or nesting deeper than MaxDepth.
var ErrSyntax = errors.New("jsonscan: invalid json")

// MaxDepth bounds nesting (encoding/json's limit), so hostile input cannot exhaust the stack. The
// depth of a value is the number of arrays and objects around it; the walk fails when an array or
// object is met at depth MaxDepth.
const MaxDepth = 10000

// SkipWS returns the index of the first byte at or after b[i] that is not JSON whitespace.
func SkipWS(b []byte, i int) int {
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

// SkipValue returns the index just after the value that starts at b[i], at nesting depth depth.
func SkipValue(b []byte, i, depth int) (int, error) {
	if i >= len(b) {
		return 0, ErrSyntax
	}
	switch c := b[i]; {
	case c == '"':
		end, _, err := SkipString(b, i)
		return end, err
	case c == '{':
		return EachMember(b, i, depth, nil)
	case c == '[':
		return EachElement(b, i, depth, nil)
	case c == 't':
		return SkipLiteral(b, i, "true")
	case c == 'f':
		return SkipLiteral(b, i, "false")
	case c == 'n':
		return SkipLiteral(b, i, "null")
	case c == '-' || isDigit(c):
		return SkipNumber(b, i)
	}
	return 0, ErrSyntax
}

// SkipLiteral returns the index after lit ("true", "false" or "null") when b holds it at i.
func SkipLiteral(b []byte, i int, lit string) (int, error) {
	if len(b)-i < len(lit) || string(b[i:i+len(lit)]) != lit {
		return 0, ErrSyntax
	}
	return i + len(lit), nil
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// SkipNumber returns the index after the number that starts at b[i], which must match the JSON
// number grammar: -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?
func SkipNumber(b []byte, i int) (int, error) {
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
		return 0, ErrSyntax
	}
	if i < len(b) && b[i] == '.' {
		i++
		if i >= len(b) || !isDigit(b[i]) {
			return 0, ErrSyntax
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
			return 0, ErrSyntax
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

// SkipString returns the index after the closing quote of the string that starts at b[i] (a
// quote), and whether the string is special: it holds escapes or bytes >= 0x80. The raw contents
// of a string that is not special are its value, in ASCII.
//
// Runs of ordinary bytes are skipped eight at a time (see stopMask): message texts and system
// prompts, tens of kilobytes per request, are most of what the hot path walks.
func SkipString(b []byte, i int) (end int, special bool, err error) {
	var high uint64 // the OR of the raw bytes: bit 7 of some byte is set when some byte is >= 0x80
	i++
	for {
		for i+8 <= len(b) {
			x := binary.LittleEndian.Uint64(b[i:])
			if m := stopMask(x); m != 0 {
				n := bits.TrailingZeros64(m) / 8 // the first byte that stops the run
				high |= x & (1<<(8*n) - 1)
				i += n
				break
			}
			high |= x
			i += 8
		}
		if i >= len(b) {
			return 0, false, ErrSyntax
		}
		c := b[i]
		switch {
		case c == '"':
			return i + 1, special || high&hiBits != 0, nil
		case c == '\\':
			special = true
			if i+1 >= len(b) {
				return 0, false, ErrSyntax
			}
			switch b[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				if i+6 > len(b) || !isHex(b[i+2]) || !isHex(b[i+3]) || !isHex(b[i+4]) || !isHex(b[i+5]) {
					return 0, false, ErrSyntax
				}
				i += 6
			default:
				return 0, false, ErrSyntax
			}
		case c < 0x20: // a control character
			return 0, false, ErrSyntax
		default:
			high |= uint64(c)
			i++
		}
	}
}

// Byte-parallel constants: 0x01 and 0x80 in each byte of a word.
const (
	loBits = 0x0101010101010101
	hiBits = 0x8080808080808080
)

// stopMask returns a mask whose lowest set bit is bit 7 of the first byte of x (little endian:
// the first of eight string bytes) that ends a run of ordinary string bytes: a quote, a backslash
// or a control character; 0 when there is none. It is the classic "has zero byte" test
// ((v-0x01..) &^ v & 0x80..) on x^'"', x^'\\' and, for bytes below 0x20, x itself: a borrow can
// flag a byte wrongly only above a byte that is rightly flagged, so the lowest flag is exact.
func stopMask(x uint64) uint64 {
	q := x ^ (loBits * '"')
	s := x ^ (loBits * '\\')
	return ((q-loBits)&^q | (s-loBits)&^s | (x-loBits*0x20)&^x) & hiBits
}

// MemberFunc is called for each member of an object with the raw key (between the quotes), whether
// the key is special (escapes or non-ASCII, see SkipString), and the index where the value starts (b[vs] exists). It
// must consume the value and return the index after it.
type MemberFunc func(key []byte, special bool, vs int) (int, error)

// EachMember walks the object that starts at b[i] ('{'), at nesting depth depth, and returns the
// index after its '}'. Members are visited in order, repeats included. A nil fn skips every
// value; fn's values are at depth+1.
func EachMember(b []byte, i, depth int, fn MemberFunc) (int, error) {
	if depth >= MaxDepth {
		return 0, ErrSyntax
	}
	i = SkipWS(b, i+1)
	if i < len(b) && b[i] == '}' {
		return i + 1, nil
	}
	for {
		if i >= len(b) || b[i] != '"' {
			return 0, ErrSyntax
		}
		ke, special, err := SkipString(b, i)
		if err != nil {
			return 0, err
		}
		key := b[i+1 : ke-1]
		i = SkipWS(b, ke)
		if i >= len(b) || b[i] != ':' {
			return 0, ErrSyntax
		}
		i = SkipWS(b, i+1)
		if i >= len(b) {
			return 0, ErrSyntax // callbacks may read b[vs]
		}
		var ve int
		if fn != nil {
			ve, err = fn(key, special, i)
		} else {
			ve, err = SkipValue(b, i, depth+1)
		}
		if err != nil {
			return 0, err
		}
		i = SkipWS(b, ve)
		if i >= len(b) {
			return 0, ErrSyntax
		}
		switch b[i] {
		case ',':
			i = SkipWS(b, i+1)
		case '}':
			return i + 1, nil
		default:
			return 0, ErrSyntax
		}
	}
}

// ElementFunc is called for each element of an array with its position n (from 0) and the index
// where it starts (b[vs] exists). It must consume the element and return the index after it.
type ElementFunc func(n, vs int) (int, error)

// EachElement walks the array that starts at b[i] ('['), at nesting depth depth, and returns the
// index after its ']'. A nil fn skips every element; fn's elements are at depth+1.
func EachElement(b []byte, i, depth int, fn ElementFunc) (int, error) {
	if depth >= MaxDepth {
		return 0, ErrSyntax
	}
	i = SkipWS(b, i+1)
	if i < len(b) && b[i] == ']' {
		return i + 1, nil
	}
	for n := 0; ; n++ {
		if i >= len(b) {
			return 0, ErrSyntax // callbacks may read b[vs]
		}
		var (
			ve  int
			err error
		)
		if fn != nil {
			ve, err = fn(n, i)
		} else {
			ve, err = SkipValue(b, i, depth+1)
		}
		if err != nil {
			return 0, err
		}
		i = SkipWS(b, ve)
		if i >= len(b) {
			return 0, ErrSyntax
		}
		switch b[i] {
		case ',':
			i = SkipWS(b, i+1)
		case ']':
			return i + 1, nil
		default:
			return 0, ErrSyntax
		}
	}
}
