package adminhttp

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/crsrelay/crs/controlplane/admin"
)

// unauthenticatedMessage is the message of every 401, whatever was wrong with the token.
const unauthenticatedMessage = "missing or invalid admin token"

// serveAdmin runs one /admin/v1/ request: count it, recover a panic, check the token, bound the
// body, then hand it to the gateway.
func (h *handler) serveAdmin(w http.ResponseWriter, r *http.Request) {
	rec := &recorder{ResponseWriter: w, route: "unmatched"}
	defer func() {
		if p := recover(); p != nil {
			h.log.Error("admin http handler panicked", zap.Any("panic", p), zap.String("path", r.URL.Path), zap.Stack("stack"))
			if !rec.wrote {
				h.writeError(rec, r, http.StatusInternalServerError, status.Error(codes.Internal, "internal error"))
			}
		}
		h.metrics.GetOrCreateCounter(fmt.Sprintf(`crs_admin_requests_total{route=%q,status="%d"}`, rec.route, rec.statusCode())).Inc()
	}()
	// Responses may carry a plaintext key (create, regenerate): never cache them.
	w.Header().Set("Cache-Control", "no-store")

	tok, ok := admin.BearerToken(r.Header.Get("Authorization"))
	if !ok || !h.auth.Verify(tok) {
		rec.route = "unauthenticated"
		h.writeError(&challenge{rec}, r, http.StatusUnauthorized, status.Error(codes.Unauthenticated, unauthenticatedMessage))
		return
	}

	if r.Body != nil && r.Body != http.NoBody {
		if r.ContentLength > MaxBodyBytes {
			h.writeError(rec, r, http.StatusRequestEntityTooLarge, errTooLarge)
			return
		}
		body, err := io.ReadAll(io.LimitReader(r.Body, MaxBodyBytes+1))
		if err != nil {
			h.writeError(rec, r, http.StatusBadRequest, status.Error(codes.InvalidArgument, "could not read the request body"))
			return
		}
		if len(body) > MaxBodyBytes {
			h.writeError(rec, r, http.StatusRequestEntityTooLarge, errTooLarge)
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
	}
	h.gw.ServeHTTP(rec, r)
}

var errTooLarge = status.Error(codes.InvalidArgument, "request body is larger than "+strconv.Itoa(MaxBodyBytes>>20)+" MiB")

// writeError answers with the gateway's error body ({"code":..,"message":..,"details":[..]}) and
// the given HTTP status.
func (h *handler) writeError(w http.ResponseWriter, r *http.Request, httpStatus int, err error) {
	_, out := runtime.MarshalerForRequest(h.gw, r)
	runtime.HTTPError(r.Context(), h.gw, out, w, r, &runtime.HTTPStatusError{HTTPStatus: httpStatus, Err: err})
}

// routeLabel is a gateway middleware that records the matched route pattern for the request
// counter (bounded cardinality: one value per RPC, never a raw path).
func (h *handler) routeLabel(next runtime.HandlerFunc) runtime.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request, params map[string]string) {
		if rec, ok := w.(*recorder); ok {
			if p, ok := runtime.HTTPPattern(r.Context()); ok {
				rec.route = r.Method + " " + strings.ReplaceAll(p.String(), "=*}", "}")
			}
		}
		next(w, r, params)
	}
}

// recorder remembers the status written and the route matched.
type recorder struct {
	http.ResponseWriter
	route  string
	status int
	wrote  bool
}

func (r *recorder) WriteHeader(code int) {
	if !r.wrote {
		r.status, r.wrote = code, true
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(b []byte) (int, error) {
	if !r.wrote {
		r.status, r.wrote = http.StatusOK, true
	}
	return r.ResponseWriter.Write(b)
}

func (r *recorder) statusCode() int {
	if !r.wrote {
		return http.StatusOK
	}
	return r.status
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// challenge sets a proper WWW-Authenticate on a 401 (the gateway puts the status message there).
type challenge struct {
	http.ResponseWriter
}

func (c *challenge) WriteHeader(code int) {
	c.Header().Set("WWW-Authenticate", `Bearer realm="crs admin"`)
	c.ResponseWriter.WriteHeader(code)
}
