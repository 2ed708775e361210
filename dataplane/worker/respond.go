package worker

import (
	"bytes"
	"encoding/json"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/crsrelay/crs/dataplane/apierr"
)

// contentTypeJSON is what Express's res.json sends.
const contentTypeJSON = "application/json; charset=utf-8"

// writeJSON writes a JSON body (copied) with status.
func writeJSON(ctx *fasthttp.RequestCtx, status int, body []byte) {
	ctx.SetStatusCode(status)
	ctx.SetContentType(contentTypeJSON)
	ctx.SetBody(body)
}

// writeValue marshals v the way JSON.stringify would (no HTML escaping) and writes it.
func writeValue(ctx *fasthttp.RequestCtx, status int, v any) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		writeError(ctx, err)
		return
	}
	writeJSON(ctx, status, bytes.TrimSuffix(buf.Bytes(), []byte("\n")))
}

// writeError renders a client-visible error (apierr.Error) or a generic 500.
func writeError(ctx *fasthttp.RequestCtx, err error) { apierr.Write(ctx, err) }

func appendString(dst []byte, s string) []byte { return apierr.AppendString(dst, s) }

// appendTimestamp appends t as JavaScript's Date.toISOString writes it ("2026-11-26T13:00:00.000Z").
func appendTimestamp(dst []byte, t time.Time) []byte {
	dst = append(dst, '"')
	dst = t.UTC().AppendFormat(dst, "2006-01-02T15:04:05.000Z")
	return append(dst, '"')
}

// isoTime formats t like appendTimestamp, without quotes.
func isoTime(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000Z") }
