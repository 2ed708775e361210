// Package oauth runs the control plane's OAuth work for upstream accounts: the authorization-code
// flows with PKCE an operator starts through the admin API (Claude, Claude setup token,
// OpenAI/Codex, Gemini CLI; reference §5.1-5.3), and the Refresher that keeps access tokens fresh
// (ahead of expiry, and at once when a worker reported a 401), exactly once across control-plane
// replicas and never overwriting a newer token (credential writes are compare-and-swap on the
// account's credential generation).
//
// Providers are configuration (Providers, DefaultProviders): their URLs and client ids have moved
// before (reference §12 item 6). Only code flows exist here; cookie/sessionKey flows never will.
// Token calls go through the account's proxy (http, https, socks5; controlplane/proxyhttp) with
// timeouts, and never log or return a token.
//
// It depends on the store interface, controlplane/secret, controlplane/proxyhttp and the
// contract; never on the data plane, gRPC or a concrete store.
package oauth

import (
	"fmt"
	"sort"
	"strings"
	"time"
)

// DefaultTimeout bounds one token request, connection and proxy handshake included (the
// reference's 30 s).
const DefaultTimeout = 30 * time.Second

// Provider names (the "provider" of StartOAuth).
const (
	ProviderClaude      = "claude"
	ProviderClaudeSetup = "claude-setup-token"
	ProviderOpenAI      = "openai"
	ProviderGemini      = "gemini"
)

// Style is how a provider's token endpoint wants requests.
type Style string

// Token request styles.
const (
	// StyleJSON: a JSON body (Anthropic).
	StyleJSON Style = "json"
	// StyleForm: an application/x-www-form-urlencoded body (OpenAI, Google).
	StyleForm Style = "form"
)

// Provider is one OAuth client configuration. DefaultProviders has the reference's values;
// deployments may override any field (the endpoints have moved before).
type Provider struct {
	// Name is the provider's key in Providers.
	Name string
	// AccountType is the type of the account a flow creates (claude-official, openai, gemini).
	AccountType string
	// AuthorizeURL is where the operator's browser goes.
	AuthorizeURL string
	// TokenURL is where codes and refresh tokens are exchanged.
	TokenURL string
	ClientID string
	// ClientSecret is sent when set (Google's installed-app clients have a public one).
	ClientSecret string
	// RedirectURI must be the one registered for ClientID.
	RedirectURI string
	// Scopes requested in the authorize URL.
	Scopes []string
	// RefreshScope is sent with refresh requests when set (OpenAI).
	RefreshScope string
	// ExpiresIn, when positive, is requested in the code exchange (setup tokens: one year).
	ExpiresIn int64
	// Style of the token requests.
	Style Style
	// SendState adds the PKCE state to the code exchange body (Anthropic wants it).
	SendState bool
	// AuthParams are extra query parameters of the authorize URL.
	AuthParams map[string]string
	// Headers are sent with every token request (Anthropic's endpoint expects claude-cli's).
	Headers map[string]string
	// Instructions tell the operator what to do with the authorize URL.
	Instructions string
}

// Providers maps provider names to their configuration.
type Providers map[string]Provider

// Names returns the provider names, sorted.
func (p Providers) Names() []string {
	out := make([]string, 0, len(p))
	for n := range p {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// ForAccountType returns the provider that refreshes accounts of type t: "claude" for
// claude-official (setup-token accounts use the same endpoint and client), "openai", "gemini".
func (p Providers) ForAccountType(t string) (Provider, bool) {
	name := map[string]string{"claude-official": ProviderClaude, "openai": ProviderOpenAI, "gemini": ProviderGemini}[t]
	pr, ok := p[name]
	return pr, ok && name != ""
}

// Validate checks that every provider has what a flow needs.
func (p Providers) Validate() error {
	var bad []string
	for _, n := range p.Names() {
		pr := p[n]
		switch {
		case pr.AuthorizeURL == "" || pr.TokenURL == "" || pr.ClientID == "" || pr.RedirectURI == "":
			bad = append(bad, n+": authorize_url, token_url, client_id and redirect_uri are required")
		case pr.Style != StyleJSON && pr.Style != StyleForm:
			bad = append(bad, fmt.Sprintf("%s: style must be %q or %q", n, StyleJSON, StyleForm))
		case pr.AccountType == "":
			bad = append(bad, n+": account type is required")
		}
	}
	if len(bad) > 0 {
		return fmt.Errorf("oauth providers: %s", strings.Join(bad, "; "))
	}
	return nil
}

// claudeHeaders are what claude-cli sends to Anthropic's token endpoint (reference §5.1).
func claudeHeaders() map[string]string {
	return map[string]string{
		"User-Agent": "claude-cli/1.0.56 (external, cli)",
		"Referer":    "https://claude.ai/",
		"Origin":     "https://claude.ai",
	}
}

// Reference values (§5.1-5.3).
const (
	claudeAuthorizeURL = "https://claude.ai/oauth/authorize"
	// console.anthropic.com was retired (reference §5.1, issue #1212).
	claudeTokenURL    = "https://platform.claude.com/v1/oauth/token"
	claudeClientID    = "9d1c250a-e61b-44d9-88ed-5944d1962f5e"
	claudeRedirectURI = "https://platform.claude.com/oauth/code/callback"
	// setupTokenExpiresIn is one year, as claude setup-token asks for.
	setupTokenExpiresIn = 31536000

	openAIAuthorizeURL = "https://auth.openai.com/oauth/authorize"
	openAITokenURL     = "https://auth.openai.com/oauth/token"
	openAIClientID     = "app_EMoamEEZ73f0CkXaXp7hrann"
	openAIRedirectURI  = "http://localhost:1455/auth/callback"

	googleAuthorizeURL = "https://accounts.google.com/o/oauth2/v2/auth"
	googleTokenURL     = "https://oauth2.googleapis.com/token"
	// The gemini-cli installed-app client (public in its source; Google documents that such a
	// secret is not confidential).
	geminiClientID     = "681255809395-oo8ft2oprdrnp9e3aqf6av3hmdib135j.apps.googleusercontent.com"
	geminiClientSecret = "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"
	geminiRedirectURI  = "https://codeassist.google.com/authcode"
)

// DefaultProviders returns a fresh copy of the reference's provider configuration.
func DefaultProviders() Providers {
	claudeScopes := []string{"org:create_api_key", "user:profile", "user:inference", "user:sessions:claude_code", "user:mcp_servers", "user:file_upload"}
	pasteCode := "Open the URL, log in and approve; then paste the code shown (or the whole address of the page you land on) into the exchange step within 10 minutes."
	return Providers{
		ProviderClaude: {
			Name: ProviderClaude, AccountType: "claude-official",
			AuthorizeURL: claudeAuthorizeURL, TokenURL: claudeTokenURL, ClientID: claudeClientID, RedirectURI: claudeRedirectURI,
			Scopes: claudeScopes, Style: StyleJSON, SendState: true,
			AuthParams: map[string]string{"code": "true"}, Headers: claudeHeaders(),
			Instructions: pasteCode,
		},
		ProviderClaudeSetup: {
			Name: ProviderClaudeSetup, AccountType: "claude-official",
			AuthorizeURL: claudeAuthorizeURL, TokenURL: claudeTokenURL, ClientID: claudeClientID, RedirectURI: claudeRedirectURI,
			Scopes: []string{"user:inference"}, ExpiresIn: setupTokenExpiresIn, Style: StyleJSON, SendState: true,
			AuthParams: map[string]string{"code": "true"}, Headers: claudeHeaders(),
			Instructions: pasteCode + " The setup token is valid for one year and cannot be refreshed.",
		},
		ProviderOpenAI: {
			Name: ProviderOpenAI, AccountType: "openai",
			AuthorizeURL: openAIAuthorizeURL, TokenURL: openAITokenURL, ClientID: openAIClientID, RedirectURI: openAIRedirectURI,
			Scopes: []string{"openid", "profile", "email", "offline_access"}, RefreshScope: "openid profile email",
			Style:      StyleForm,
			AuthParams: map[string]string{"id_token_add_organizations": "true", "codex_cli_simplified_flow": "true"},
			Instructions: "Open the URL, log in and approve. The browser then fails to load " + openAIRedirectURI +
				"...: copy that whole address from the address bar and paste it into the exchange step within 10 minutes.",
		},
		ProviderGemini: {
			Name: ProviderGemini, AccountType: "gemini",
			AuthorizeURL: googleAuthorizeURL, TokenURL: googleTokenURL, ClientID: geminiClientID, ClientSecret: geminiClientSecret,
			RedirectURI: geminiRedirectURI, Scopes: []string{"https://www.googleapis.com/auth/cloud-platform"},
			Style:        StyleForm,
			AuthParams:   map[string]string{"access_type": "offline", "prompt": "select_account"},
			Instructions: "Open the URL, choose the Google account and approve; then paste the authorization code shown into the exchange step within 10 minutes.",
		},
	}
}
