// Package apierr renders the errors clients see: one Error type carrying the HTTP status, the body
// shape of the route's dialect, a safe message and the cause, and the in-band SSE error events of a
// stream. The shapes are copied from the Node.js original (reference §1.3, §2.3, §13.3), which uses
// several on purpose; clients parse them, so every shape here is pinned by a test.
//
// It depends on fasthttp for writing only and knows nothing of keys, accounts or upstreams.
package apierr

import (
	"encoding/json"
	"errors"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/valyala/fasthttp"
)

// Shape is the JSON layout of an error body.
type Shape uint8

// Shapes, by example (Field values follow the shown keys, in order):
const (
	// ShapeFlat is {"error":"<Code>","message":"<Message>"}, the Node relay's most common shape
	// (auth failures, validation, rate and concurrency limits).
	ShapeFlat Shape = iota
	// ShapeFlatTimestamp is ShapeFlat with "timestamp":"<RFC 3339 UTC, ms>" last, for relay and
	// upstream failures (502 "Upstream service unavailable", 504 "Upstream timeout", ...).
	ShapeFlatTimestamp
	// ShapeNested is {"error":{"type":"<Code>","message":"<Message>"}} (permission and model
	// restrictions, 402 cost limits with "code" inside, client validation).
	ShapeNested
	// ShapeAnthropic is Anthropic's own {"type":"error","error":{"type":"<Code>","message":"<Message>"}}.
	ShapeAnthropic
	// ShapeOpenAI is {"error":{"message":"<Message>","type":"<Code>","code":"<InnerCode>"}}.
	ShapeOpenAI
)

// Error is an error a client sees. The zero Status means 500. Error is a value type built by the
// constructors below; the With methods return modified copies, so package-level templates are safe.
type Error struct {
	// Status is the HTTP status code.
	Status int
	// Shape is the body layout.
	Shape Shape
	// Code is the error string of ShapeFlat ("Invalid API key") or the type of the nested shapes
	// ("permission_error").
	Code string
	// Message is safe to show to the client.
	Message string
	// InnerCode is "code" inside the nested error object (ShapeNested, ShapeOpenAI); omitted if empty.
	InnerCode string
	// Fields are extra top-level members after the standard ones (currentCost, resetAt, ...).
	Fields []Field
	// Headers are set on the response (Retry-After, ...).
	Headers []Header
	// Cause is what went wrong inside, for logs; it never reaches the client.
	Cause error
}

// Field is one extra top-level member of an error body. Value is marshaled with encoding/json.
type Field struct {
	Name  string
	Value any
}

// Header is a response header of an error.
type Header struct{ Name, Value string }

// New returns an Error. It is the general constructor; Flat, Nested, Anthropic and OpenAI are the
// common cases.
func New(status int, shape Shape, code, message string) *Error {
	return &Error{Status: status, Shape: shape, Code: code, Message: message}
}

// Flat returns a ShapeFlat error: {"error":code,"message":message}.
func Flat(status int, code, message string) *Error {
	return New(status, ShapeFlat, code, message)
}

// Nested returns a ShapeNested error: {"error":{"type":typ,"message":message}}.
func Nested(status int, typ, message string) *Error {
	return New(status, ShapeNested, typ, message)
}

// Anthropic returns Anthropic's error shape: {"type":"error","error":{"type":typ,"message":message}}.
// Types are Anthropic's: invalid_request_error, authentication_error, permission_error,
// not_found_error, rate_limit_error, api_error, overloaded_error.
func Anthropic(status int, typ, message string) *Error {
	return New(status, ShapeAnthropic, typ, message)
}

// OpenAI returns the OpenAI error shape: {"error":{"message":message,"type":typ,"code":code}}.
func OpenAI(status int, typ, code, message string) *Error {
	e := New(status, ShapeOpenAI, typ, message)
	e.InnerCode = code
	return e
}

// Error implements error. It includes the cause, so it is for logs, not for clients.
func (e *Error) Error() string {
	msg := strconv.Itoa(e.status()) + " " + e.Code
	if e.Message != "" {
		msg += ": " + e.Message
	}
	if e.Cause != nil {
		msg += ": " + e.Cause.Error()
	}
	return msg
}

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Cause }

// WithCause returns a copy of e with the cause set.
func (e *Error) WithCause(err error) *Error {
	c := *e
	c.Cause = err
	return &c
}

// WithFields returns a copy of e with extra top-level members appended.
func (e *Error) WithFields(f ...Field) *Error {
	c := *e
	c.Fields = append(append([]Field(nil), e.Fields...), f...)
	return &c
}

// WithHeader returns a copy of e that also sets a response header.
func (e *Error) WithHeader(name, value string) *Error {
	c := *e
	c.Headers = append(append([]Header(nil), e.Headers...), Header{name, value})
	return &c
}

func (e *Error) status() int {
	if e.Status == 0 {
		return fasthttp.StatusInternalServerError
	}
	return e.Status
}

// AppendJSON appends the error's JSON body to dst. now is used by ShapeFlatTimestamp.
func (e *Error) AppendJSON(dst []byte, now time.Time) []byte {
	switch e.Shape {
	case ShapeFlat, ShapeFlatTimestamp:
		dst = append(dst, `{"error":`...)
		dst = AppendString(dst, e.Code)
		dst = append(dst, `,"message":`...)
		dst = AppendString(dst, e.Message)
		if e.Shape == ShapeFlatTimestamp {
			dst = append(dst, `,"timestamp":`...)
			dst = appendTimestamp(dst, now)
		}
	case ShapeNested, ShapeAnthropic:
		if e.Shape == ShapeAnthropic {
			dst = append(dst, `{"type":"error","error":{"type":`...)
		} else {
			dst = append(dst, `{"error":{"type":`...)
		}
		dst = AppendString(dst, e.Code)
		dst = append(dst, `,"message":`...)
		dst = AppendString(dst, e.Message)
		if e.InnerCode != "" {
			dst = append(dst, `,"code":`...)
			dst = AppendString(dst, e.InnerCode)
		}
		dst = append(dst, '}')
	case ShapeOpenAI:
		dst = append(dst, `{"error":{"message":`...)
		dst = AppendString(dst, e.Message)
		dst = append(dst, `,"type":`...)
		dst = AppendString(dst, e.Code)
		dst = append(dst, `,"code":`...)
		if e.InnerCode != "" {
			dst = AppendString(dst, e.InnerCode)
		} else {
			dst = append(dst, "null"...)
		}
		dst = append(dst, '}')
	default:
		dst = append(dst, `{"error":"Relay service error","message":"Internal server error"`...)
	}
	for _, f := range e.Fields {
		dst = append(dst, ',')
		dst = AppendString(dst, f.Name)
		dst = append(dst, ':')
		dst = appendValue(dst, f.Value)
	}
	return append(dst, '}')
}

// Write renders err on ctx: an *Error (found with errors.As) with its status, headers and body,
// anything else as a generic 500 {"error":"Relay service error",...} whose message does not include
// err. It replaces any status, content type and body already set.
func Write(ctx *fasthttp.RequestCtx, err error) {
	var e *Error
	if !errors.As(err, &e) {
		e = internal
	}
	ctx.Response.ResetBody()
	ctx.SetStatusCode(e.status())
	ctx.SetContentType("application/json; charset=utf-8")
	for _, h := range e.Headers {
		ctx.Response.Header.Set(h.Name, h.Value)
	}
	ctx.Response.SetBodyRaw(e.AppendJSON(nil, time.Now()))
}

// WriteJSON writes a JSON body with the given status, replacing anything already set. body is
// copied.
func WriteJSON(ctx *fasthttp.RequestCtx, status int, body []byte) {
	ctx.SetStatusCode(status)
	ctx.SetContentType("application/json; charset=utf-8")
	ctx.SetBody(body)
}

// internal is what an error that is not an *Error becomes (reference §1.3 step 13, "else 500").
var internal = New(fasthttp.StatusInternalServerError, ShapeFlatTimestamp, "Relay service error", "Internal server error")

// appendTimestamp appends t as a JSON string in the format of JavaScript's Date.toISOString, which
// is RFC 3339 in UTC with milliseconds ("2026-11-26T13:00:00.000Z").
func appendTimestamp(dst []byte, t time.Time) []byte {
	dst = append(dst, '"')
	dst = t.UTC().AppendFormat(dst, "2006-01-02T15:04:05.000Z07:00")
	return append(dst, '"')
}

// appendValue appends v as JSON: strings, numbers and booleans directly, anything else through
// encoding/json (null if it cannot be marshaled).
func appendValue(dst []byte, v any) []byte {
	switch x := v.(type) {
	case string:
		return AppendString(dst, x)
	case int:
		return strconv.AppendInt(dst, int64(x), 10)
	case int64:
		return strconv.AppendInt(dst, x, 10)
	case float64:
		return appendFloat(dst, x)
	case bool:
		return strconv.AppendBool(dst, x)
	case time.Time:
		return appendTimestamp(dst, x)
	case nil:
		return append(dst, "null"...)
	}
	b, err := json.Marshal(v)
	if err != nil {
		return append(dst, "null"...)
	}
	return append(dst, b...)
}

// AppendString appends s as a JSON string the way JavaScript's JSON.stringify writes it: only '"',
// '\\' and control characters are escaped (no HTML escaping), and invalid UTF-8 becomes U+FFFD, so
// the result is always valid JSON.
func AppendString(dst []byte, s string) []byte {
	const hex = "0123456789abcdef"
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
			case '\b':
				dst = append(dst, '\\', 'b')
			case '\f':
				dst = append(dst, '\\', 'f')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, "\ufffd"...)
			i++
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

func appendFloat(dst []byte, f float64) []byte {
	b, err := json.Marshal(f) // NaN and Inf are not JSON
	if err != nil {
		return append(dst, "null"...)
	}
	return append(dst, b...)
}
