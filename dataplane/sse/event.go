package sse

import "bytes"

// Field returns the value of the first line of ev whose field name is name ("event", "data", "id"),
// without the one optional space after the colon and without the line ending; nil if there is none.
// The result aliases ev. Comment lines (starting with ':') never match.
func Field(ev []byte, name string) []byte {
	for len(ev) > 0 {
		line := ev
		if i := bytes.IndexByte(ev, '\n'); i >= 0 {
			line, ev = ev[:i], ev[i+1:]
		} else {
			ev = nil
		}
		if v, ok := fieldValue(line, name); ok {
			return v
		}
	}
	return nil
}

// Data returns the event's data: the value of its one data line, aliasing ev, or, when it has
// several, their values joined by "\n" and appended to scratch[:0] (per the SSE spec). Nil if the
// event has no data line.
func Data(ev, scratch []byte) []byte {
	var first []byte
	n := 0
	for rest := ev; len(rest) > 0; {
		line := rest
		if i := bytes.IndexByte(rest, '\n'); i >= 0 {
			line, rest = rest[:i], rest[i+1:]
		} else {
			rest = nil
		}
		v, ok := fieldValue(line, "data")
		if !ok {
			continue
		}
		switch n {
		case 0:
			first = v
		case 1:
			scratch = append(append(append(scratch[:0], first...), '\n'), v...)
		default:
			scratch = append(append(scratch, '\n'), v...)
		}
		n++
	}
	if n > 1 {
		return scratch
	}
	return first
}

// fieldValue reports whether line is the field name and returns its value.
func fieldValue(line []byte, name string) ([]byte, bool) {
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	if len(line) < len(name) || string(line[:len(name)]) != name {
		return nil, false
	}
	v := line[len(name):]
	switch {
	case len(v) == 0:
		return v, true // "data" alone is a field with an empty value
	case v[0] != ':':
		return nil, false
	}
	v = v[1:]
	if len(v) > 0 && v[0] == ' ' {
		v = v[1:]
	}
	return v, true
}

// AppendEvent appends one event with the given type and a single data line to dst:
// "event: <typ>\ndata: <data>\n\n". data must not contain a newline (JSON from encoding/json and
// from package apierr never does).
func AppendEvent(dst []byte, typ string, data []byte) []byte {
	dst = append(dst, "event: "...)
	dst = append(dst, typ...)
	dst = append(dst, "\ndata: "...)
	dst = append(dst, data...)
	return append(dst, "\n\n"...)
}
