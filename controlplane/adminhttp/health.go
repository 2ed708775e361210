package adminhttp

import (
	"context"
	_ "embed"
	"net/http"

	"github.com/VictoriaMetrics/metrics"
	"go.uber.org/zap"
)

// openAPI is gen/admin.swagger.json, copied here by `make generate` (a test keeps them equal).
//
//go:embed openapi.json
var openAPI []byte

func serveOpenAPI(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(openAPI)
}

func (h *handler) healthz(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, `{"status":"ok"}`)
}

// readyz answers 200 while the store answers a ping and 503 otherwise; a change either way is
// logged once.
func (h *handler) readyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), readyTimeout)
	defer cancel()
	if err := h.store.Ping(ctx); err != nil {
		if h.ready.Swap(2) != 2 {
			h.log.Warn("not ready: store unreachable", zap.Error(err))
		}
		writeJSON(w, http.StatusServiceUnavailable, `{"status":"unavailable","reason":"store unreachable"}`)
		return
	}
	if h.ready.Swap(1) == 2 {
		h.log.Info("ready again: store reachable")
	}
	writeJSON(w, http.StatusOK, `{"status":"ok"}`)
}

func (h *handler) writeMetrics(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	h.metrics.WritePrometheus(w)
	metrics.WriteProcessMetrics(w)
}

func (h *handler) notFound(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusNotFound, `{"code":5,"message":"not found"}`)
}

func writeJSON(w http.ResponseWriter, code int, body string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_, _ = w.Write([]byte(body))
}
