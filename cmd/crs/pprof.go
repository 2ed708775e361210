package main

import (
	"fmt"
	"net/http"
	"os"
	"runtime/pprof"
	"runtime/trace"
	"strconv"
	"strings"
	"time"
)

// startPprof serves Go's profiles on CRS_PPROF_ADDR (e.g. 127.0.0.1:6060) when it is set. It is
// for measuring, off by default, and never on a port clients reach unless an operator says so.
//
// The handlers are written here on runtime/pprof instead of importing net/http/pprof: that package
// pulls in html/template, whose reflect.Value.MethodByName forces the linker to keep every exported
// method of every type. Without it the binary is ~11 MB smaller and an idle worker maps ~3 MB less
// of it (TestBinaryKeepsDeadCodeElimination pins this).
func startPprof() {
	addr := os.Getenv("CRS_PPROF_ADDR")
	if addr == "" {
		return
	}
	go func() { _ = http.ListenAndServe(addr, pprofMux()) }()
}

// pprofMux serves the paths `go tool pprof` uses: /debug/pprof/profile?seconds=N (CPU),
// /debug/pprof/trace?seconds=N, and /debug/pprof/<name>?debug=N for the runtime's named profiles
// (heap, allocs, goroutine, block, mutex, threadcreate). /debug/pprof/ lists the names.
func pprofMux() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", func(w http.ResponseWriter, r *http.Request) {
		name := strings.TrimPrefix(r.URL.Path, "/debug/pprof/")
		if name == "" {
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			for _, p := range pprof.Profiles() {
				fmt.Fprintf(w, "%s %d\n", p.Name(), p.Count())
			}
			fmt.Fprintln(w, "profile (CPU, ?seconds=N)\ntrace (?seconds=N)")
			return
		}
		p := pprof.Lookup(name)
		if p == nil {
			http.Error(w, "unknown profile "+strconv.Quote(name), http.StatusNotFound)
			return
		}
		debug, _ := strconv.Atoi(r.URL.Query().Get("debug"))
		if debug == 0 {
			w.Header().Set("Content-Type", "application/octet-stream")
		} else {
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		}
		_ = p.WriteTo(w, debug)
	})
	mux.HandleFunc("/debug/pprof/profile", func(w http.ResponseWriter, r *http.Request) {
		if err := pprof.StartCPUProfile(w); err != nil {
			http.Error(w, err.Error(), http.StatusConflict)
			return
		}
		sleepFor(r)
		pprof.StopCPUProfile()
	})
	mux.HandleFunc("/debug/pprof/trace", func(w http.ResponseWriter, r *http.Request) {
		if err := trace.Start(w); err != nil {
			http.Error(w, err.Error(), http.StatusConflict)
			return
		}
		sleepFor(r)
		trace.Stop()
	})
	return mux
}

// sleepFor waits the request's ?seconds= (default 30, at most 300) or until the client leaves.
func sleepFor(r *http.Request) {
	secs, err := strconv.Atoi(r.URL.Query().Get("seconds"))
	if err != nil || secs <= 0 {
		secs = 30
	}
	secs = min(secs, 300)
	select {
	case <-time.After(time.Duration(secs) * time.Second):
	case <-r.Context().Done():
	}
}
