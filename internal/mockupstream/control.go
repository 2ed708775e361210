package mockupstream

import (
	"encoding/json"

	"github.com/valyala/fasthttp"
)

// The /__ routes let another process script the mock (a test driving crs binaries, the bench
// driver). They need no credential.

// handleConfig serves POST /__config (replace the behaviours, see [ConfigRequest]) and
// GET /__config (the behaviours in force).
func (s *Server) handleConfig(ctx *fasthttp.RequestCtx) {
	switch {
	case ctx.IsPost():
		req, err := parseConfigRequest(ctx.Request.Body())
		if err != nil {
			controlError(ctx, fasthttp.StatusBadRequest, err.Error())
			return
		}
		s.Configure(req.Default, req.Credentials)
		writeJSON(ctx, s.currentConfig())
	case ctx.IsGet():
		writeJSON(ctx, s.currentConfig())
	default:
		controlError(ctx, fasthttp.StatusMethodNotAllowed, "use GET or POST")
	}
}

func (s *Server) currentConfig() ConfigRequest {
	set := s.behaviors.Load()
	out := ConfigRequest{Default: set.def.Behavior, Credentials: make(map[string]Behavior, len(set.creds))}
	for k, b := range set.creds {
		out.Credentials[k] = b.Behavior
	}
	return out
}

// handleReset serves POST /__reset: counters and recorded requests are cleared.
func (s *Server) handleReset(ctx *fasthttp.RequestCtx) {
	if !ctx.IsPost() {
		controlError(ctx, fasthttp.StatusMethodNotAllowed, "use POST")
		return
	}
	s.Reset()
	writeJSON(ctx, map[string]bool{"ok": true})
}

// handleStats serves GET /__stats, a [Stats].
func (s *Server) handleStats(ctx *fasthttp.RequestCtx) {
	writeJSON(ctx, s.Stats())
}

// handleRequests serves GET /__requests, the recorded requests oldest first. With recording off it
// answers 409 rather than an empty list a test could mistake for "nothing was sent".
func (s *Server) handleRequests(ctx *fasthttp.RequestCtx) {
	if s.rec == nil {
		controlError(ctx, fasthttp.StatusConflict, "recording is off (Config.Record=false, crs-mock -record=false)")
		return
	}
	writeJSON(ctx, s.rec.list())
}

func writeJSON(ctx *fasthttp.RequestCtx, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		controlError(ctx, fasthttp.StatusInternalServerError, err.Error())
		return
	}
	ctx.SetContentType("application/json")
	ctx.SetBody(b)
}

func controlError(ctx *fasthttp.RequestCtx, status int, msg string) {
	b, _ := json.Marshal(map[string]string{"error": msg})
	ctx.SetStatusCode(status)
	ctx.SetContentType("application/json")
	ctx.SetBody(b)
}
