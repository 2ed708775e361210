package claude

import (
	"bytes"
	"encoding/json"
	"errors"

	"github.com/crsrelay/crs/dataplane/jsonscan"
)

// usageEvent is what the usage reader needs from a message_start or message_delta event, or from
// a whole non-stream message: the fields of wireEvent. It is filled by scan (no encoding/json, no
// allocation) or, when scan declines, by decode (encoding/json, authoritative). Byte slices alias
// the input on the scan path.
type usageEvent struct {
	typ, model []byte
	// msg is set when "message" is an object; msgModel and msgUsage are its members.
	msg         bool
	msgModel    []byte
	msgUsage    wireUsage
	msgHasUsage bool
	usage       wireUsage
	hasUsage    bool
}

// errDecline ends a scan that cannot be sure to agree with encoding/json.
var errDecline = errors.New("leave to encoding/json")

// Member names of the objects usageEvent is read from (wireEvent, its message, wireUsage and its
// cache_creation), in the order of the bits that track duplicates.
var (
	eventNames    = []string{"type", "model", "message", "usage"}
	messageNames  = []string{"model", "usage"}
	usageNames    = []string{"input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens", "cache_creation", "speed"}
	ephemeralName = []string{"ephemeral_5m_input_tokens", "ephemeral_1h_input_tokens"}
)

// decode fills e from b with encoding/json. It reports false where encoding/json fails (and the
// usage reader ignores the input).
func (e *usageEvent) decode(b []byte) bool {
	var m wireEvent
	if json.Unmarshal(b, &m) != nil {
		return false
	}
	*e = usageEvent{typ: []byte(m.Type), model: []byte(m.Model)}
	if m.Message != nil {
		e.msg = true
		e.msgModel = []byte(m.Message.Model)
		if m.Message.Usage != nil {
			e.msgUsage, e.msgHasUsage = *m.Message.Usage, true
		}
	}
	if m.Usage != nil {
		e.usage, e.hasUsage = *m.Usage, true
	}
	return true
}

// scan fills e from b, a JSON object, by walking it once: members that do not matter are skipped
// (validated, not decoded). It reports false, leaving e unspecified, when b is not valid JSON or
// when it cannot be sure to read b as encoding/json would into wireEvent: a member name of
// interest in another case, escaped or repeated, a value of interest of another type, a count that
// is not an int64 literal, a string of interest that is not plain ASCII. Differential tests and a
// fuzz target pin scan to decode wherever scan reports true.
func (e *usageEvent) scan(b []byte) bool {
	*e = usageEvent{}
	i := jsonscan.SkipWS(b, 0)
	if i >= len(b) || b[i] != '{' {
		return false
	}
	var seen uint8
	end, err := jsonscan.EachMember(b, i, 0, func(key []byte, special bool, vs int) (int, error) {
		f, err := field(key, special, eventNames, &seen)
		if err != nil {
			return 0, err
		}
		switch f {
		case 0:
			v, end, err := plainString(b, vs)
			e.typ = v
			return end, err
		case 1:
			v, end, err := plainString(b, vs)
			e.model = v
			return end, err
		case 2:
			if b[vs] == 'n' {
				return jsonscan.SkipLiteral(b, vs, "null")
			}
			if b[vs] != '{' {
				return 0, errDecline
			}
			e.msg = true
			return e.scanMessage(b, vs)
		case 3:
			return scanUsage(b, vs, 1, &e.usage, &e.hasUsage)
		}
		return jsonscan.SkipValue(b, vs, 1)
	})
	if err != nil || jsonscan.SkipWS(b, end) != len(b) {
		return false
	}
	return true
}

// scanMessage reads the message object that starts at b[i].
func (e *usageEvent) scanMessage(b []byte, i int) (int, error) {
	var seen uint8
	return jsonscan.EachMember(b, i, 1, func(key []byte, special bool, vs int) (int, error) {
		f, err := field(key, special, messageNames, &seen)
		if err != nil {
			return 0, err
		}
		switch f {
		case 0:
			v, end, err := plainString(b, vs)
			e.msgModel = v
			return end, err
		case 1:
			return scanUsage(b, vs, 2, &e.msgUsage, &e.msgHasUsage)
		}
		return jsonscan.SkipValue(b, vs, 2)
	})
}

// scanUsage reads the usage value at b[i] (an object, or null for none) into u.
func scanUsage(b []byte, i, depth int, u *wireUsage, has *bool) (int, error) {
	if b[i] == 'n' {
		return jsonscan.SkipLiteral(b, i, "null")
	}
	if b[i] != '{' {
		return 0, errDecline
	}
	*has = true
	var seen uint8
	return jsonscan.EachMember(b, i, depth, func(key []byte, special bool, vs int) (int, error) {
		f, err := field(key, special, usageNames, &seen)
		if err != nil {
			return 0, err
		}
		switch f {
		case 0:
			return intValue(b, vs, &u.InputTokens)
		case 1:
			return intValue(b, vs, &u.OutputTokens)
		case 2:
			return intValue(b, vs, &u.CacheCreationInputTokens)
		case 3:
			return intValue(b, vs, &u.CacheReadInputTokens)
		case 4:
			if b[vs] == 'n' {
				return jsonscan.SkipLiteral(b, vs, "null")
			}
			if b[vs] != '{' {
				return 0, errDecline
			}
			var seen uint8
			return jsonscan.EachMember(b, vs, depth+1, func(key []byte, special bool, vs int) (int, error) {
				f, err := field(key, special, ephemeralName, &seen)
				if err != nil {
					return 0, err
				}
				switch f {
				case 0:
					return intValue(b, vs, &u.CacheCreation.Ephemeral5m)
				case 1:
					return intValue(b, vs, &u.CacheCreation.Ephemeral1h)
				}
				return jsonscan.SkipValue(b, vs, depth+2)
			})
		case 5:
			v, end, err := plainString(b, vs)
			if err == nil && v != nil {
				u.Speed = string(v)
			}
			return end, err
		}
		return jsonscan.SkipValue(b, vs, depth+1)
	})
}

// field returns the index of key in names, -1 for a member that does not matter. encoding/json
// matches names case-insensitively (with Unicode folding) and lets a repeated member overwrite or
// merge into the earlier one; scan declines all of that: names in another case, escaped or
// non-ASCII names, and repeats. seen tracks the names met so far.
func field(key []byte, special bool, names []string, seen *uint8) (int, error) {
	if special {
		return 0, errDecline
	}
	for i, n := range names {
		if string(key) == n {
			if *seen&(1<<i) != 0 {
				return 0, errDecline
			}
			*seen |= 1 << i
			return i, nil
		}
		if len(key) == len(n) && bytes.EqualFold(key, []byte(n)) {
			return 0, errDecline
		}
	}
	return -1, nil
}

// plainString reads a string member of interest at b[i]: its contents when it is plain printable
// ASCII, nil for null (encoding/json leaves the field as it was). Anything else declines.
func plainString(b []byte, i int) ([]byte, int, error) {
	switch b[i] {
	case '"':
		end, special, err := jsonscan.SkipString(b, i)
		if err != nil {
			return nil, 0, err
		}
		if special {
			return nil, 0, errDecline
		}
		return b[i+1 : end-1], end, nil
	case 'n':
		end, err := jsonscan.SkipLiteral(b, i, "null")
		return nil, end, err
	}
	return nil, 0, errDecline
}

// intValue reads an int64 member at b[i] into v: an integer literal in range, or null (v stays).
// Fractions, exponents and overflow are errors for encoding/json; scan declines them.
func intValue(b []byte, i int, v *int64) (int, error) {
	if b[i] == 'n' {
		return jsonscan.SkipLiteral(b, i, "null")
	}
	end, err := jsonscan.SkipNumber(b, i)
	if err != nil {
		return 0, err
	}
	lit := b[i:end]
	neg := lit[0] == '-'
	if neg {
		lit = lit[1:]
	}
	if len(lit) > 18 { // larger than any 18-digit number: leave range checks to strconv
		return 0, errDecline
	}
	var n int64
	for _, c := range lit {
		if !isDigit(c) {
			return 0, errDecline // a fraction or an exponent
		}
		n = n*10 + int64(c-'0')
	}
	if neg {
		n = -n
	}
	*v = n
	return end, nil
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }
