package oauth

import (
	"net/http/httptest"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/crsrelay/crs/controlplane/secret"
	"github.com/crsrelay/crs/controlplane/store/embedded"
	"github.com/crsrelay/crs/internal/mockoauth"
)

func newSealer(t *testing.T) *secret.Sealer {
	t.Helper()
	k, err := secret.GenerateKey()
	require.NoError(t, err)
	s, err := secret.NewSealer(k)
	require.NoError(t, err)
	return s
}

// startMock starts a mock token server and returns it with providers pointing at it.
func startMock(t *testing.T, o mockoauth.Options) (*mockoauth.Server, Providers) {
	t.Helper()
	m := mockoauth.New(o)
	srv := httptest.NewServer(m)
	t.Cleanup(srv.Close)
	ps := DefaultProviders()
	for name, path := range map[string]string{
		ProviderClaude: mockoauth.ClaudePath, ProviderClaudeSetup: mockoauth.ClaudePath,
		ProviderOpenAI: mockoauth.OpenAIPath, ProviderGemini: mockoauth.GooglePath,
	} {
		p := ps[name]
		p.TokenURL = srv.URL + path
		ps[name] = p
	}
	return m, ps
}

func openEmbedded(t *testing.T) *embedded.Store {
	t.Helper()
	s, err := embedded.Open(t.TempDir())
	require.NoError(t, err)
	t.Cleanup(func() { _ = s.Close() })
	return s
}
