package oauth

import (
	"errors"
	"net/url"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/crsrelay/crs/controlplane/proxyhttp"
	"github.com/crsrelay/crs/internal/mockoauth"
	"github.com/crsrelay/crs/internal/testenv"
	"github.com/crsrelay/crs/internal/testproxy"
)

// exchangeVia runs a Claude code exchange through proxy against m.
func exchangeVia(t *testing.T, m *mockoauth.Server, ps Providers, proxy string, timeout time.Duration) (*Exchanged, error) {
	t.Helper()
	f, err := NewFlows(FlowOptions{Providers: ps, Sessions: openEmbedded(t), Sealer: newSealer(t), Timeout: timeout})
	require.NoError(t, err)
	st, err := f.Start(t.Context(), ProviderClaude, proxy)
	require.NoError(t, err)
	code, _ := authorize(t, m, st)
	return f.Exchange(t.Context(), st.SessionID, code, "")
}

func TestExchangeThroughSOCKS5Proxy(t *testing.T) {
	m, ps := startMock(t, mockoauth.Options{})
	p := testproxy.StartSOCKS5(t, "crs", "s3cret")
	got, err := exchangeVia(t, m, ps, p.URL(), 5*time.Second)
	require.NoError(t, err)
	require.Equal(t, p.URL(), got.Proxy)
	require.True(t, m.ValidAccessToken(got.Token.AccessToken))
	u, err := url.Parse(ps[ProviderClaude].TokenURL)
	require.NoError(t, err)
	require.Equal(t, []string{u.Host}, p.Targets(), "the token request went through the proxy")
}

func TestProxyFailuresAreClearAndQuick(t *testing.T) {
	m, ps := startMock(t, mockoauth.Options{})
	wrongPass := testproxy.StartSOCKS5(t, "crs", "right")
	dead := "socks5://crs:hunter2@127.0.0.1:" + strconv.Itoa(testenv.FreePort(t))
	tests := []struct {
		name, proxy string
		isProxyErr  bool
		contains    []string
	}{
		{"nothing listening", dead, true, []string{"proxy socks5://crs:REDACTED@127.0.0.1:", "unreachable", "refused"}},
		{"wrong credentials", "socks5://crs:wrong@" + wrongPass.Addr(), true, []string{"proxy socks5://crs:REDACTED@"}},
		{"http proxy down", "http://127.0.0.1:" + strconv.Itoa(testenv.FreePort(t)), true, []string{"unreachable"}},
		{"hangs", "socks5://" + testproxy.StartBlackhole(t), false, []string{"via proxy socks5://127.0.0.1:", "timed out"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			start := time.Now()
			_, err := exchangeVia(t, m, ps, tt.proxy, 500*time.Millisecond)
			require.Error(t, err)
			require.Less(t, time.Since(start), 3*time.Second, "a bad proxy must fail fast, never hang")
			require.Equal(t, tt.isProxyErr, errors.Is(err, proxyhttp.ErrProxy), "%v", err)
			for _, c := range tt.contains {
				require.Contains(t, err.Error(), c)
			}
			require.NotContains(t, err.Error(), "hunter2", "proxy password leaked into the error")
		})
	}
	require.Equal(t, 1, wrongPass.AuthFailures())
	require.Zero(t, m.ExchangeCalls(), "nothing reached the provider")
}
