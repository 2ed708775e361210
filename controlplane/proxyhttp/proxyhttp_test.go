package proxyhttp

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/crsrelay/crs/internal/testenv"
	"github.com/crsrelay/crs/internal/testproxy"
)

func TestParse(t *testing.T) {
	for _, ok := range []string{"", "http://p:8080", "https://u:p@p:443", "socks5://u:p@127.0.0.1:1080", "socks5h://p:1080"} {
		_, err := Parse(ok)
		require.NoError(t, err, ok)
	}
	for _, bad := range []string{"ftp://p:21", "socks5://nohost", "://", "socks4://p:1080"} {
		_, err := Parse(bad)
		require.ErrorIs(t, err, ErrBadProxy, bad)
	}
	_, err := NewClient("ftp://p:21", time.Second)
	require.ErrorIs(t, err, ErrBadProxy)
}

func TestRedact(t *testing.T) {
	require.Equal(t, "socks5://u:REDACTED@h:1080", Redact("socks5://u:hunter2@h:1080"))
	require.Equal(t, "http://h:8080", Redact("http://h:8080"))
	require.Equal(t, "http://u@h:8080", Redact("http://u@h:8080"))
	require.Equal(t, "", Redact(""))
}

func TestThroughSOCKS5(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "hello")
	}))
	t.Cleanup(srv.Close)
	p := testproxy.StartSOCKS5(t, "u", "p")
	c, err := NewClient(p.URL(), 5*time.Second)
	require.NoError(t, err)
	defer c.CloseIdleConnections()
	resp, err := c.Get(srv.URL)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.Equal(t, "hello", string(b))
	require.Equal(t, []string{strings.TrimPrefix(srv.URL, "http://")}, p.Targets())
}

func TestFailuresAreClearAndQuick(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	t.Cleanup(srv.Close)
	wrongPass := testproxy.StartSOCKS5(t, "u", "right")
	freePort := func() string { return strconv.Itoa(testenv.FreePort(t)) }
	tests := []struct {
		name, proxy string
		isProxyErr  bool
		contains    []string
	}{
		{"socks5 down", "socks5://u:hunter2@127.0.0.1:" + freePort(), true, []string{"proxy socks5://u:REDACTED@127.0.0.1:", "unreachable", "refused"}},
		{"http proxy down", "http://127.0.0.1:" + freePort(), true, []string{"proxy http://127.0.0.1:", "unreachable"}},
		{"wrong credentials", "socks5://u:hunter2@" + wrongPass.Addr(), true, []string{"authentication failed"}},
		{"proxy hangs", "socks5://" + testproxy.StartBlackhole(t), false, []string{"request via proxy socks5://127.0.0.1:", "timed out"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := NewClient(tt.proxy, 300*time.Millisecond)
			require.NoError(t, err)
			start := time.Now()
			_, err = c.Get(srv.URL)
			require.Error(t, err)
			err = Describe(err, tt.proxy, "request")
			require.Less(t, time.Since(start), 2*time.Second, "never a hang")
			require.Equal(t, tt.isProxyErr, errors.Is(err, ErrProxy), "%v", err)
			for _, s := range tt.contains {
				require.Contains(t, err.Error(), s)
			}
			require.NotContains(t, err.Error(), "hunter2")
			require.NotContains(t, err.Error(), srv.URL, "the URL is left out")
		})
	}
	require.Equal(t, 1, wrongPass.AuthFailures())
}

func TestStatusError(t *testing.T) {
	require.NoError(t, StatusError(200, "http://p:1"))
	require.NoError(t, StatusError(407, ""))
	err := StatusError(407, "http://u:pw@p:1")
	require.ErrorIs(t, err, ErrProxy)
	require.Equal(t, "proxy http://u:REDACTED@p:1: credentials refused (407)", err.Error())
}
