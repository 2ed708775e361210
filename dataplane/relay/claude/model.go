package claude

import (
	"github.com/crsrelay/crs/dataplane/apierr"
	"github.com/crsrelay/crs/dataplane/jsonscan"
)

// spliceModel returns a copy of body, a JSON object, with the value of its top-level "model" member
// replaced by the JSON string model. It scans the bytes instead of decoding them, so everything else
// (member order, spacing, numbers, unknown fields) stays exactly as the client sent it, and body
// itself is never written to (a failover attempt reuses it). ok is false if body is not an object
// with a top-level "model" string; nested "model" keys (in tools, messages...) are not touched.
func spliceModel(body []byte, model string) (out []byte, ok bool) {
	start, end, ok := findTopLevelString(body, "model")
	if !ok {
		return nil, false
	}
	out = make([]byte, 0, len(body)-(end-start)+len(model)+2)
	out = append(out, body[:start]...)
	out = apierr.AppendString(out, model)
	out = append(out, body[end:]...)
	return out, true
}

// findTopLevelString returns the span body[start:end] of the string value (with its quotes) of the
// top-level member key of the JSON object body. It validates only as much as it needs to walk the
// object; on malformed input it returns ok=false rather than guessing.
func findTopLevelString(body []byte, key string) (start, end int, ok bool) {
	i := jsonscan.SkipWS(body, 0)
	if i >= len(body) || body[i] != '{' {
		return 0, 0, false
	}
	i++
	for {
		i = jsonscan.SkipWS(body, i)
		if i >= len(body) {
			return 0, 0, false
		}
		if body[i] == '}' {
			return 0, 0, false
		}
		if body[i] != '"' {
			return 0, 0, false
		}
		ks := i
		ke, ok := skipLooseString(body, i)
		if !ok {
			return 0, 0, false
		}
		i = jsonscan.SkipWS(body, ke)
		if i >= len(body) || body[i] != ':' {
			return 0, 0, false
		}
		i = jsonscan.SkipWS(body, i+1)
		if i >= len(body) {
			return 0, 0, false
		}
		vs := i
		ve, ok := skipLooseValue(body, i)
		if !ok {
			return 0, 0, false
		}
		// Keys are compared raw: "model" has no escapes, and an escaped spelling of it is not worth
		// a decoder here.
		if string(body[ks+1:ke-1]) == key {
			if body[vs] != '"' {
				return 0, 0, false
			}
			return vs, ve, true
		}
		i = jsonscan.SkipWS(body, ve)
		if i >= len(body) {
			return 0, 0, false
		}
		switch body[i] {
		case ',':
			i++
		case '}':
			return 0, 0, false
		default:
			return 0, 0, false
		}
	}
}

// skipLooseString returns the index just past the string starting at b[i] == '"'.
func skipLooseString(b []byte, i int) (int, bool) {
	for i++; i < len(b); i++ {
		switch b[i] {
		case '\\':
			i++
		case '"':
			return i + 1, true
		}
	}
	return 0, false
}

// skipLooseValue returns the index just past the JSON value starting at b[i]. Objects and arrays are
// skipped by counting brackets outside strings; scalars run to the next delimiter.
func skipLooseValue(b []byte, i int) (int, bool) {
	switch b[i] {
	case '"':
		return skipLooseString(b, i)
	case '{', '[':
		depth := 0
		for ; i < len(b); i++ {
			switch b[i] {
			case '"':
				e, ok := skipLooseString(b, i)
				if !ok {
					return 0, false
				}
				i = e - 1
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1, true
				}
			}
		}
		return 0, false
	default:
		s := i
		for i < len(b) {
			switch b[i] {
			case ',', '}', ']', ' ', '\t', '\n', '\r':
				return i, i > s
			}
			i++
		}
		return i, i > s
	}
}
