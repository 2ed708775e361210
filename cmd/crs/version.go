package main

import (
	"fmt"
	"io"
	"runtime"
)

// Set at build time: go build -ldflags "-X main.version=v1.2.3 -X main.commit=abc1234".
var (
	version = "dev"
	commit  = "unknown"
)

func printVersion(w io.Writer) {
	fmt.Fprintf(w, "crs %s (commit %s, %s %s/%s)\n", version, commit, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}
