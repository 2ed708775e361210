package main

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// Packages that must not be linked into crs: each makes the linker keep code no role runs. The
// templates call reflect.Value.MethodByName, after which every exported method of every type is
// kept (the binary grew from 17 to 28 MB, and an idle worker's RSS by ~3 MB of mapped text).
var unwantedDeps = []string{"text/template", "html/template", "net/http/pprof", "golang.org/x/net/trace"}

// TestBinaryKeepsDeadCodeElimination checks the dependency list of the crs binary as `make build`
// builds it (with the Makefile's build tags).
func TestBinaryKeepsDeadCodeElimination(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go list and make -n")
	}
	out, err := exec.Command("make", "-s", "-n", "-C", "../..", "build").CombinedOutput()
	require.NoError(t, err, "%s", out)
	var buildLine string
	for _, l := range strings.Split(string(out), "\n") {
		if strings.Contains(l, "-o bin/crs ") {
			buildLine = l
		}
	}
	require.NotEmpty(t, buildLine, "make build has no line building bin/crs:\n%s", out)
	require.Contains(t, buildLine, "-tags grpcnotrace", "make build must pass grpcnotrace")

	out, err = exec.Command("go", "list", "-deps", "-tags", "grpcnotrace", ".").CombinedOutput()
	require.NoError(t, err, "%s", out)
	deps := map[string]bool{}
	for _, p := range strings.Fields(string(out)) {
		deps[p] = true
	}
	require.True(t, deps["github.com/valyala/fasthttp"], "go list output looks wrong:\n%s", out)
	for _, p := range unwantedDeps {
		require.False(t, deps[p], "crs links %s; find who imports it with `go list -deps -f '{{.ImportPath}} {{.Imports}}' ./cmd/crs`", p)
	}
}
