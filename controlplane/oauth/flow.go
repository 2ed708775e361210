package oauth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/crsrelay/crs/controlplane/proxyhttp"
	"github.com/crsrelay/crs/controlplane/secret"
	"github.com/crsrelay/crs/controlplane/store"
)

// DefaultSessionTTL is how long a started flow waits for its code (reference §5.1: 600 s).
const DefaultSessionTTL = 10 * time.Minute

// FlowOptions are the dependencies of Flows.
type FlowOptions struct {
	// Providers available to StartOAuth. Default: DefaultProviders().
	Providers Providers
	// Sessions keeps started flows. Required.
	Sessions store.OAuthSessionStore
	// Sealer seals sessions at rest (they hold the PKCE verifier and the proxy, which may carry a
	// password). Required.
	Sealer *secret.Sealer
	// SessionTTL: default DefaultSessionTTL.
	SessionTTL time.Duration
	// Timeout bounds one token request: default DefaultTimeout.
	Timeout time.Duration
	// Now is the clock: default time.Now.
	Now func() time.Time
}

// Flows runs authorization-code flows with PKCE: Start makes the authorize URL and keeps the
// session, Exchange trades the code the operator pasted for tokens. It is safe for concurrent
// use; sessions live in the store, so any replica can finish a flow another started.
type Flows struct {
	providers Providers
	sessions  store.OAuthSessionStore
	sealer    *secret.Sealer
	ttl       time.Duration
	timeout   time.Duration
	now       func() time.Time
}

// NewFlows returns Flows.
func NewFlows(o FlowOptions) (*Flows, error) {
	if o.Sessions == nil || o.Sealer == nil {
		return nil, errors.New("oauth: sessions and sealer are required")
	}
	f := &Flows{providers: o.Providers, sessions: o.Sessions, sealer: o.Sealer, ttl: o.SessionTTL, timeout: o.Timeout, now: o.Now}
	if f.providers == nil {
		f.providers = DefaultProviders()
	}
	if err := f.providers.Validate(); err != nil {
		return nil, err
	}
	if f.ttl <= 0 {
		f.ttl = DefaultSessionTTL
	}
	if f.timeout <= 0 {
		f.timeout = DefaultTimeout
	}
	if f.now == nil {
		f.now = time.Now
	}
	return f, nil
}

// Providers returns the configured providers.
func (f *Flows) Providers() Providers { return f.providers }

// Started is what the operator needs to authorize.
type Started struct {
	SessionID    string
	AuthURL      string
	Instructions string
	ExpiresAt    time.Time
}

// session is a started flow as kept (sealed) in the store.
type session struct {
	Provider  string    `json:"provider"`
	Verifier  string    `json:"verifier"`
	Challenge string    `json:"challenge"`
	State     string    `json:"state"`
	Proxy     string    `json:"proxy,omitempty"`
	ExpiresAt time.Time `json:"expires_at"`
}

func sessionAAD(id string) []byte { return []byte("crs/oauth-session/v1:" + id) }

// Start begins a flow of provider through proxy ("" = direct; it is checked now and used for the
// exchange).
func (f *Flows) Start(ctx context.Context, provider, proxy string) (*Started, error) {
	p, ok := f.providers[provider]
	if !ok {
		return nil, fmt.Errorf("%w %q", ErrUnknownProvider, provider)
	}
	if _, err := proxyhttp.Parse(proxy); err != nil {
		return nil, err
	}
	k, err := newPKCE()
	if err != nil {
		return nil, err
	}
	u, err := authURL(p, k)
	if err != nil {
		return nil, err
	}
	id, err := randomURLString(18)
	if err != nil {
		return nil, err
	}
	exp := f.now().Add(f.ttl)
	if err := f.putSession(ctx, id, session{Provider: p.Name, Verifier: k.Verifier, Challenge: k.Challenge, State: k.State, Proxy: proxy, ExpiresAt: exp}, f.ttl); err != nil {
		return nil, err
	}
	return &Started{SessionID: id, AuthURL: u, Instructions: p.Instructions, ExpiresAt: exp}, nil
}

// Exchanged is the result of a successful exchange.
type Exchanged struct {
	// Provider the flow was started for.
	Provider Provider
	// Proxy the flow was started with.
	Proxy string
	Token *Token
}

// Exchange trades the code (or the code inside callbackURL) of session sessionID for tokens. The
// session is used up by a successful exchange; after a refused one it stays (for its remaining
// time), so the operator can paste a corrected code.
func (f *Flows) Exchange(ctx context.Context, sessionID, code, callbackURL string) (*Exchanged, error) {
	cleaned, state, err := parseCode(code, callbackURL)
	if err != nil {
		return nil, err
	}
	if sessionID == "" {
		return nil, ErrSessionNotFound
	}
	blob, err := f.sessions.TakeOAuthSession(ctx, sessionID)
	if errors.Is(err, store.ErrNotFound) {
		return nil, ErrSessionNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("load oauth session: %w", err)
	}
	pt, err := f.sealer.Open(blob, sessionAAD(sessionID))
	if err != nil {
		return nil, fmt.Errorf("open oauth session: %w", err)
	}
	var s session
	if err := json.Unmarshal(pt, &s); err != nil {
		return nil, fmt.Errorf("decode oauth session: %w", err)
	}
	now := f.now()
	if !now.Before(s.ExpiresAt) {
		return nil, ErrSessionNotFound
	}
	// putBack returns the session for another try; failing that only costs a restart of the flow.
	putBack := func() {
		if left := s.ExpiresAt.Sub(f.now()); left > 0 {
			_ = f.putSession(context.WithoutCancel(ctx), sessionID, s, left)
		}
	}
	p, ok := f.providers[s.Provider]
	if !ok {
		return nil, fmt.Errorf("%w %q (configuration changed since the flow started)", ErrUnknownProvider, s.Provider)
	}
	if state != "" && state != s.State {
		putBack()
		return nil, ErrStateMismatch
	}
	hc, err := proxyhttp.NewClient(s.Proxy, f.timeout)
	if err != nil {
		return nil, err
	}
	defer hc.CloseIdleConnections()
	tok, err := exchangeCode(ctx, hc, p, s.Proxy, cleaned, pkce{Verifier: s.Verifier, Challenge: s.Challenge, State: s.State}, now)
	if err != nil {
		putBack()
		return nil, fmt.Errorf("exchange code: %w", err)
	}
	return &Exchanged{Provider: p, Proxy: s.Proxy, Token: tok}, nil
}

func (f *Flows) putSession(ctx context.Context, id string, s session, ttl time.Duration) error {
	pt, err := json.Marshal(s)
	if err != nil {
		return fmt.Errorf("encode oauth session: %w", err)
	}
	sealed, err := f.sealer.Seal(pt, sessionAAD(id))
	if err != nil {
		return err
	}
	if err := f.sessions.PutOAuthSession(ctx, id, sealed, ttl); err != nil {
		return fmt.Errorf("store oauth session: %w", err)
	}
	return nil
}
