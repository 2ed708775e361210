// Package mockoauth is an in-repo OAuth 2.0 token server standing in for the ones crs talks to
// (Anthropic's, OpenAI's and Google's), for tests. There is no authorize page: a test calls
// IssueCode with the PKCE challenge of the URL crs generated, as if the operator had logged in,
// and pastes the code back into crs.
//
// Three token endpoints share one token space, each speaking its provider's dialect:
//
//	ClaudePath  JSON request bodies (as claude-cli and the reference send them)
//	OpenAIPath  form bodies; errors as {"error":{"message","type","code"}}
//	GooglePath  form bodies with client_secret; refresh answers carry no new refresh token
//
// Refresh tokens rotate on the Claude and OpenAI endpoints: every refresh returns a new refresh
// token and invalidates the one used, so a client that stores a stale token gets invalid_grant
// the next time, exactly the failure crs's compare-and-swap writes prevent. Calls are counted.
//
// It depends on the standard library only.
package mockoauth

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Token endpoint paths.
const (
	ClaudePath = "/v1/oauth/token"
	OpenAIPath = "/oauth/token"
	GooglePath = "/token"
)

// Options configure a Server. Zero values take the defaults.
type Options struct {
	// ExpiresIn is the access token lifetime in seconds the server answers with (default 3600),
	// unless a Claude authorization_code request asks for its own (setup tokens).
	ExpiresIn int64
	// ClientID, when set, is the only client id accepted.
	ClientID string
	// ClientSecret, when set, is required on the Google endpoint.
	ClientSecret string
	// Delay is slept before answering every token request (to make races overlap).
	Delay time.Duration
}

// Request is what the server saw of one token request, for assertions.
type Request struct {
	Path        string
	ContentType string
	UserAgent   string
	// Params are the body's fields (JSON values rendered as strings).
	Params map[string]string
}

// Server is the mock. It is an http.Handler; it is safe for concurrent use.
type Server struct {
	opts Options

	mu sync.Mutex
	// codes: authorization code -> PKCE challenge; a code is deleted when used.
	codes map[string]string
	// refresh: refresh tokens currently valid.
	refresh map[string]bool
	// access: access tokens issued (and not superseded by a refresh of their pair).
	access map[string]bool
	// failures queued by FailNext.
	failures []failure
	requests []Request

	exchangeCalls, refreshCalls int
}

type failure struct {
	status int
	body   string
}

// New returns a Server.
func New(o Options) *Server {
	if o.ExpiresIn == 0 {
		o.ExpiresIn = 3600
	}
	return &Server{
		opts:    o,
		codes:   map[string]string{},
		refresh: map[string]bool{},
		access:  map[string]bool{},
	}
}

// IssueCode returns a fresh authorization code bound to an S256 PKCE challenge, as the authorize
// page would after the user approved. The code works once.
func (s *Server) IssueCode(challenge string) string {
	code := "mock_code_" + randomHex(16)
	s.mu.Lock()
	s.codes[code] = challenge
	s.mu.Unlock()
	return code
}

// IssueRefreshToken returns a valid refresh token, as if an earlier exchange had produced it (to
// seed accounts).
func (s *Server) IssueRefreshToken() string {
	t := "mock_rt_" + randomHex(16)
	s.mu.Lock()
	s.refresh[t] = true
	s.mu.Unlock()
	return t
}

// ValidRefreshToken reports whether t would be accepted by a refresh now.
func (s *Server) ValidRefreshToken(t string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.refresh[t]
}

// ValidAccessToken reports whether t was issued by this server.
func (s *Server) ValidAccessToken(t string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.access[t]
}

// RefreshCalls counts refresh_token requests (answered or not).
func (s *Server) RefreshCalls() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.refreshCalls
}

// ExchangeCalls counts authorization_code requests (answered or not).
func (s *Server) ExchangeCalls() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.exchangeCalls
}

// Requests returns every token request seen, oldest first.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Request(nil), s.requests...)
}

// FailNext makes the next n token requests answer status with body (then normal service resumes).
func (s *Server) FailNext(n, status int, body string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for range n {
		s.failures = append(s.failures, failure{status, body})
	}
}

// ServeHTTP implements [http.Handler].
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var dialect string
	switch r.URL.Path {
	case ClaudePath:
		dialect = "claude"
	case OpenAIPath:
		dialect = "openai"
	case GooglePath:
		dialect = "google"
	default:
		http.NotFound(w, r)
		return
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	params, err := readParams(r, dialect)
	if err != nil {
		s.fail(w, dialect, http.StatusBadRequest, "invalid_request", err.Error())
		return
	}
	if s.opts.Delay > 0 {
		select {
		case <-time.After(s.opts.Delay):
		case <-r.Context().Done():
			return
		}
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	s.requests = append(s.requests, Request{Path: r.URL.Path, ContentType: ct, UserAgent: r.UserAgent(), Params: params})
	switch params["grant_type"] {
	case "authorization_code":
		s.exchangeCalls++
	case "refresh_token":
		s.refreshCalls++
	}
	if len(s.failures) > 0 {
		f := s.failures[0]
		s.failures = s.failures[1:]
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(f.status)
		_, _ = io.WriteString(w, f.body)
		return
	}
	if s.opts.ClientID != "" && params["client_id"] != s.opts.ClientID {
		s.fail(w, dialect, http.StatusUnauthorized, "invalid_client", "unknown client_id")
		return
	}
	if dialect == "google" && s.opts.ClientSecret != "" && params["client_secret"] != s.opts.ClientSecret {
		s.fail(w, dialect, http.StatusUnauthorized, "invalid_client", "The OAuth client was not found.")
		return
	}
	switch params["grant_type"] {
	case "authorization_code":
		s.exchange(w, dialect, params)
	case "refresh_token":
		s.refreshToken(w, dialect, params)
	default:
		s.fail(w, dialect, http.StatusBadRequest, "unsupported_grant_type", "grant_type must be authorization_code or refresh_token")
	}
}

// exchange answers an authorization_code grant; s.mu is held.
func (s *Server) exchange(w http.ResponseWriter, dialect string, p map[string]string) {
	challenge, ok := s.codes[p["code"]]
	if !ok {
		s.fail(w, dialect, http.StatusBadRequest, "invalid_grant", "Invalid 'code' in request.")
		return
	}
	delete(s.codes, p["code"]) // codes work once, even when the verifier is wrong
	if p["redirect_uri"] == "" {
		s.fail(w, dialect, http.StatusBadRequest, "invalid_request", "redirect_uri is required")
		return
	}
	sum := sha256.Sum256([]byte(p["code_verifier"]))
	if p["code_verifier"] == "" || base64.RawURLEncoding.EncodeToString(sum[:]) != challenge {
		s.fail(w, dialect, http.StatusBadRequest, "invalid_grant", "code_verifier does not match the code_challenge")
		return
	}
	expiresIn := s.opts.ExpiresIn
	scope := "user:inference user:profile"
	withRefresh := true
	if dialect == "claude" && p["expires_in"] != "" {
		// Setup token (reference §5.1): long-lived, inference only, no refresh token.
		n, err := strconv.ParseInt(p["expires_in"], 10, 64)
		if err != nil || n <= 0 {
			s.fail(w, dialect, http.StatusBadRequest, "invalid_request", "bad expires_in")
			return
		}
		expiresIn, scope, withRefresh = n, "user:inference", false
	}
	s.issue(w, dialect, expiresIn, scope, withRefresh)
}

// refreshToken answers a refresh_token grant, rotating the refresh token (except Google's); s.mu
// is held.
func (s *Server) refreshToken(w http.ResponseWriter, dialect string, p map[string]string) {
	rt := p["refresh_token"]
	if !s.refresh[rt] {
		desc := "Refresh token not found or invalid"
		if dialect == "openai" {
			desc = "Your refresh token has already been used to generate a new access token. Please try signing in again."
		}
		s.fail(w, dialect, http.StatusBadRequest, "invalid_grant", desc)
		return
	}
	rotate := dialect != "google"
	if rotate {
		delete(s.refresh, rt)
	}
	s.issue(w, dialect, s.opts.ExpiresIn, "user:inference user:profile", rotate)
}

// issue writes a token response; s.mu is held.
func (s *Server) issue(w http.ResponseWriter, dialect string, expiresIn int64, scope string, withRefresh bool) {
	at := "mock_at_" + randomHex(16)
	s.access[at] = true
	resp := map[string]any{"access_token": at, "expires_in": expiresIn, "token_type": "Bearer"}
	if withRefresh {
		rt := "mock_rt_" + randomHex(16)
		s.refresh[rt] = true
		resp["refresh_token"] = rt
	}
	switch dialect {
	case "claude":
		resp["scope"] = scope
		resp["organization"] = map[string]any{"uuid": "org-mock", "name": "Mock Org"}
		resp["account"] = map[string]any{"uuid": "acct-mock", "email_address": "user@example.com"}
	case "openai":
		resp["id_token"] = fakeJWT(map[string]any{
			"email": "user@example.com",
			"https://api.openai.com/auth": map[string]any{
				"chatgpt_account_id": "chatgpt-acct-mock", "chatgpt_plan_type": "plus", "chatgpt_user_id": "user-mock",
			},
		})
	case "google":
		resp["scope"] = "https://www.googleapis.com/auth/cloud-platform"
		resp["id_token"] = fakeJWT(map[string]any{"email": "user@example.com"})
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(resp)
}

// fail writes an error in the dialect's shape.
func (s *Server) fail(w http.ResponseWriter, dialect string, status int, code, desc string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	var body any = map[string]any{"error": code, "error_description": desc}
	if dialect == "openai" {
		if code == "invalid_grant" && strings.Contains(desc, "already been used") {
			code = "refresh_token_reused"
		}
		body = map[string]any{"error": map[string]any{"message": desc, "type": "invalid_request_error", "param": nil, "code": code}}
	}
	_ = json.NewEncoder(w).Encode(body)
}

// readParams decodes the body: JSON for Claude, a form for the others.
func readParams(r *http.Request, dialect string) (map[string]string, error) {
	ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	if dialect == "claude" {
		if ct != "application/json" {
			return nil, fmt.Errorf("content type must be application/json, not %q", ct)
		}
		var m map[string]any
		if err := json.Unmarshal(body, &m); err != nil {
			return nil, fmt.Errorf("bad JSON body: %w", err)
		}
		for k, v := range m {
			switch v := v.(type) {
			case string:
				out[k] = v
			case float64:
				out[k] = strconv.FormatFloat(v, 'f', -1, 64)
			default:
				b, _ := json.Marshal(v)
				out[k] = string(b)
			}
		}
		return out, nil
	}
	if ct != "application/x-www-form-urlencoded" {
		return nil, fmt.Errorf("content type must be application/x-www-form-urlencoded, not %q", ct)
	}
	vals, err := url.ParseQuery(string(body))
	if err != nil {
		return nil, fmt.Errorf("bad form body: %w", err)
	}
	for k := range vals {
		out[k] = vals.Get(k)
	}
	return out, nil
}

// fakeJWT is an unsigned JWT carrying claims (crs reads id tokens, never verifies them: they come
// straight from the token endpoint over TLS).
func fakeJWT(claims map[string]any) string {
	enc := base64.RawURLEncoding
	h, _ := json.Marshal(map[string]string{"alg": "none", "typ": "JWT"})
	c, _ := json.Marshal(claims)
	return enc.EncodeToString(h) + "." + enc.EncodeToString(c) + "." + enc.EncodeToString([]byte("sig"))
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
