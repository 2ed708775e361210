package jsonscan

import (
	"bytes"
	"unicode/utf16"
	"unicode/utf8"
)

// Span is the raw bytes of one value, b[Start:End]. The zero Span is "absent".
type Span struct{ Start, End int }

// OK reports whether the span is present.
func (s Span) OK() bool { return s.End > s.Start }

// NonEmpty reports whether a string span (quotes included) decodes to a non-empty string: every
// escape decodes to at least one byte, so only "" is empty.
func (s Span) NonEmpty() bool { return s.End-s.Start > 2 }

// StringSpan consumes the value at b[i] (at nesting depth depth) and returns its span when it is a
// string (quotes included), or the zero span for any other value, and the index after it.
func StringSpan(b []byte, i, depth int) (Span, int, error) {
	if i < len(b) && b[i] == '"' {
		end, _, err := SkipString(b, i)
		return Span{i, end}, end, err
	}
	end, err := SkipValue(b, i, depth)
	return Span{}, end, err
}

// KeyIs reports whether a raw object key, as passed to a MemberFunc, equals name once decoded.
func KeyIs(key []byte, special bool, name string) bool {
	if !special || bytes.IndexByte(key, '\\') < 0 {
		return string(key) == name
	}
	if len(key) < len(name) { // decoding never lengthens
		return false
	}
	var buf [64]byte
	return string(AppendUnescaped(buf[:0], key)) == name
}

// KeyBuf is room for a decoded key (KeyName); names longer than that are never what a caller
// switches on.
type KeyBuf [32]byte

// KeyName returns the decoded name of a raw object key, as passed to a MemberFunc, for a switch
// over the names a caller knows: the key itself when it holds no escape (almost always), else its
// decoded value in buf, or nil when that would not fit buf (no name of the switch is that long).
// One switch on the result replaces a KeyIs per case, which would look for escapes every time.
func KeyName(buf *KeyBuf, key []byte, special bool) []byte {
	if !special || bytes.IndexByte(key, '\\') < 0 {
		return key
	}
	if d := AppendUnescaped(buf[:0], key); len(d) <= len(buf) {
		return d
	}
	return nil
}

// DecodeString appends the decoded value of the string span s of b (quotes included) to dst.
func DecodeString(dst, b []byte, s Span) []byte {
	return AppendUnescaped(dst, b[s.Start+1:s.End-1])
}

// AppendUnescaped appends the decoded value of JSON string contents s (between the quotes, already
// validated by SkipString) to dst. Escaped lone surrogates become U+FFFD, as encoding/json and
// JavaScript's UTF-8 encoder do. Raw bytes are copied as they are, even invalid UTF-8.
func AppendUnescaped(dst, s []byte) []byte {
	for i := 0; i < len(s); {
		c := s[i]
		if c != '\\' {
			j := len(s)
			if k := bytes.IndexByte(s[i+1:], '\\'); k >= 0 {
				j = i + 1 + k
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
