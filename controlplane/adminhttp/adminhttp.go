// Package adminhttp is the control plane's HTTP face: the admin REST API (AdminService through
// grpc-gateway, in process, under /admin/v1/) behind bearer-token auth and a body size limit, its
// OpenAPI document, and the unauthenticated /healthz, /readyz and /metrics.
//
// It knows AdminService only through the generated interface and the store only through Ping; it
// never imports the data plane.
package adminhttp

import (
	"context"
	"errors"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"go.uber.org/zap"
	"google.golang.org/protobuf/encoding/protojson"

	crsv1 "github.com/crsrelay/crs/gen/crs/v1"
)

// MaxBodyBytes is the largest admin request body accepted; larger ones get 413.
const MaxBodyBytes = 1 << 20

// readyTimeout bounds the store ping of /readyz.
const readyTimeout = 2 * time.Second

// Authenticator checks an admin bearer token (admin.TokenAuth).
type Authenticator interface {
	Verify(token string) bool
}

// Pinger reports whether the store is reachable (store.Store).
type Pinger interface {
	Ping(ctx context.Context) error
}

// Options are the dependencies of the handler.
type Options struct {
	// Admin serves the REST API. Required.
	Admin crsv1.AdminServiceServer
	// Auth checks the admin token of every /admin/v1/ request except the OpenAPI document. Required.
	Auth Authenticator
	// Store is pinged by /readyz. Required.
	Store Pinger
	// Logger receives panics and readiness changes. Default: no-op.
	Logger *zap.Logger
	// Metrics is the set /metrics writes (with process metrics) and admin request counters go
	// to. Default: a new set.
	Metrics *metrics.Set
}

// handler is the whole HTTP surface. It is safe for concurrent use.
type handler struct {
	gw      *runtime.ServeMux
	auth    Authenticator
	store   Pinger
	log     *zap.Logger
	metrics *metrics.Set
	ready   atomic.Int32 // 0 unknown, 1 ready, 2 not ready: readiness changes are logged once
}

// New returns the HTTP handler of the control plane's HTTP port.
func New(ctx context.Context, o Options) (http.Handler, error) {
	if o.Admin == nil || o.Auth == nil || o.Store == nil {
		return nil, errors.New("adminhttp: admin, auth and store are required")
	}
	h := &handler{auth: o.Auth, store: o.Store, log: o.Logger, metrics: o.Metrics}
	if h.log == nil {
		h.log = zap.NewNop()
	}
	if h.metrics == nil {
		h.metrics = metrics.NewSet()
	}
	h.gw = runtime.NewServeMux(
		runtime.WithMarshalerOption(runtime.MIMEWildcard, &runtime.HTTPBodyMarshaler{Marshaler: &runtime.JSONPb{
			// lowerCamelCase names, zero values omitted, unknown fields refused (400).
			MarshalOptions:   protojson.MarshalOptions{EmitUnpopulated: false, UseProtoNames: false},
			UnmarshalOptions: protojson.UnmarshalOptions{DiscardUnknown: false},
		}}),
		runtime.WithMiddlewares(h.routeLabel),
		// Request headers are not forwarded as gRPC metadata: the service is in process, and the
		// Authorization header has been checked already.
		runtime.WithIncomingHeaderMatcher(func(string) (string, bool) { return "", false }),
	)
	if err := crsv1.RegisterAdminServiceHandlerServer(ctx, h.gw, o.Admin); err != nil {
		return nil, err
	}

	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", h.healthz)
	mux.HandleFunc("GET /readyz", h.readyz)
	mux.HandleFunc("GET /metrics", h.writeMetrics)
	mux.HandleFunc("GET /admin/v1/openapi.json", serveOpenAPI)
	mux.Handle("/admin/v1/", http.HandlerFunc(h.serveAdmin))
	mux.HandleFunc("/", h.notFound)
	return secureHeaders(mux), nil
}

// Server returns an http.Server for h with timeouts suited to a small JSON API.
func Server(addr string, h http.Handler) *http.Server {
	return &http.Server{
		Addr:              addr,
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
	}
}

func secureHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Content-Type-Options", "nosniff")
		next.ServeHTTP(w, r)
	})
}
