package main

import (
	"net/http"
	"net/http/pprof"
	"os"
)

// startPprof serves Go's profiler on CRS_PPROF_ADDR (e.g. 127.0.0.1:6060) when it is set. It is
// for measuring, off by default, and never on a port clients reach unless an operator says so.
func startPprof() {
	addr := os.Getenv("CRS_PPROF_ADDR")
	if addr == "" {
		return
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	go func() { _ = http.ListenAndServe(addr, mux) }()
}
