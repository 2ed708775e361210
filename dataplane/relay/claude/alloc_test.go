//go:build !race

package claude

import (
	"strings"
	"testing"

	"github.com/crsrelay/crs/dataplane/relay/platform"
	crsv1 "github.com/crsrelay/crs/gen/crs/v1"
	"github.com/stretchr/testify/require"
	"github.com/valyala/fasthttp"
)

// The usage tee sees every event of every stream; the ones it skips must not allocate.
func TestSkippedEventsDoNotAllocate(t *testing.T) {
	r := usageReader{}
	for _, ev := range []string{evDelta, evPing, evStop, "data: {\"type\":\"content_block_delta\"}\n\n"} {
		b := []byte(ev)
		require.Zero(t, testing.AllocsPerRun(100, func() { r.Event(b) }), "%q", ev)
	}
}

// Reading the usage of a non-stream answer that names the model asked does not allocate: the
// model string is the one Build returned.
func TestBodyUsageAllocations(t *testing.T) {
	body := []byte(bodyMessage)
	u, ok := Console{}.BodyUsage(body, "claude-sonnet-4-20250514")
	require.True(t, ok)
	require.Equal(t, int64(17), u.OutputTokens)
	require.Zero(t, testing.AllocsPerRun(100, func() { Console{}.BodyUsage(body, "claude-sonnet-4-20250514") }))
}

// Building an upstream request allocates nothing, also with credentials of real length (the
// authorization value used to be concatenated into a string on the heap).
func TestBuildAllocations(t *testing.T) {
	key := "cr_" + strings.Repeat("k", 64)
	uris := &URICache{}
	for name, tc := range map[string]struct {
		up   platform.Upstream
		acct *crsv1.Account
	}{
		"console sk-ant": {Console{URIs: uris}, consoleAccount("http://127.0.0.1:8080", "sk-ant-api03-"+strings.Repeat("k", 95), "", nil)},
		"console bearer": {Console{URIs: uris}, consoleAccount("http://127.0.0.1:8080", key, "", nil)},
		"official": {&Official{URIs: uris}, &crsv1.Account{Type: TypeOfficial, Credentials: &crsv1.Account_Oauth{
			Oauth: &crsv1.OAuthCredential{AccessToken: "sk-ant-oat01-" + strings.Repeat("t", 95)}}}},
	} {
		req := benchRequest()
		out := fasthttp.AcquireRequest()
		build := func() {
			out.Reset()
			if _, err := tc.up.Build(tc.acct, req, out); err != nil {
				t.Fatal(err)
			}
		}
		build() // fills the URI cache and out's buffers
		require.Zero(t, testing.AllocsPerRun(100, build), name)
		fasthttp.ReleaseRequest(out)
	}
}
