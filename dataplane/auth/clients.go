package auth

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"

	"github.com/valyala/fasthttp"

	"github.com/crsrelay/crs/dataplane/apierr"
	crsv1 "github.com/crsrelay/crs/gen/crs/v1"
)

// Client ids of allowed_clients (reference §2.1, src/validators/clientDefinitions.js).
const (
	ClientClaudeCode = "claude_code"
	ClientGeminiCLI  = "gemini_cli"
	ClientCodexCLI   = "codex_cli"
	ClientDroidCLI   = "droid_cli"
)

// Sentinel causes of client refusals.
var (
	ErrClientNotAllowed  = errors.New("auth: client not allowed for this key")
	ErrNotClaudeCode     = errors.New("auth: endpoint accepts Claude Code only")
	errClientSpecInvalid = errors.New("auth: invalid client spec")
)

// ClientSpec describes one client of allowed_clients as data, so that a new release of a client
// (a new User-Agent form, a new header) is a change of data, not of code (reference §12 item 7:
// keys locked to Claude Code broke on every CLI release). The zero value of each field means "no
// requirement". Matching follows the reference's validators (src/validators/clients/*):
//
//   - the request path must start with one of PathPrefixes (case-insensitive);
//   - then the client is recognised when UserAgent matches, or when OrHeader contains one of
//     OrHeaderContains (Droid's x-factory-client); UserAgentPaths limits the User-Agent check to
//     paths containing one of them (Gemini CLI checks it for generateContent only);
//   - on paths containing one of StrictPaths, RequiredHeaders must be present and not blank, and
//     with RequireUserID the body's metadata.user_id must be a Claude Code user id (legacy
//     "user_<64 hex>_account_<…>_session_<…>" or the JSON form with device_id and session_id).
type ClientSpec struct {
	// ID is the allowed_clients value, e.g. "claude_code".
	ID string `toml:"id"`
	// Name is for logs.
	Name string `toml:"name"`
	// PathPrefixes the client may use; empty = any path.
	PathPrefixes []string `toml:"path_prefixes"`
	// UserAgent is a regular expression (RE2, matched case-insensitively) the User-Agent header
	// must match; empty = any User-Agent.
	UserAgent string `toml:"user_agent"`
	// UserAgentPaths, when set, applies the UserAgent check only on paths containing one of them.
	UserAgentPaths []string `toml:"user_agent_paths"`
	// OrHeader and OrHeaderContains recognise the client by a header instead of the User-Agent:
	// the header's value contains one of the strings (case-insensitive).
	OrHeader         string   `toml:"or_header"`
	OrHeaderContains []string `toml:"or_header_contains"`
	// StrictPaths are path substrings on which RequiredHeaders and RequireUserID apply.
	StrictPaths []string `toml:"strict_paths"`
	// RequiredHeaders must be present with a non-blank value on strict paths.
	RequiredHeaders []string `toml:"required_headers"`
	// RequireUserID requires a valid body metadata.user_id on strict paths.
	RequireUserID bool `toml:"require_user_id"`
}

// DefaultClients returns the reference's four clients (src/validators/clientDefinitions.js and
// src/validators/clients/*.js at 1.1.314), as data:
//
//   - claude_code: User-Agent ^claude-cli/X.Y.Z (any later version matches); on Messages paths
//     also non-blank x-app, anthropic-beta and anthropic-version and a valid metadata.user_id.
//     Not reproduced: the reference also requires each system prompt entry to be similar to a
//     known Claude Code prompt (src/utils/contents.js bestSimilarityByTemplates); that check
//     locked users out whenever Claude Code changed its prompt, and crs does not keep copies of
//     the prompts.
//   - gemini_cli: /gemini/ paths; User-Agent ^GeminiCLI/vX.Y on generateContent paths.
//   - codex_cli: /openai/responses, /openai/v1/responses, /azure/ paths; User-Agent
//     ^(codex_vscode|codex_cli_rs|codex_exec)/X.Y. The reference's "strict" originator,
//     session_id and instructions checks never run there (they test a mount-relative path
//     against a mount prefix) and are left out.
//   - droid_cli: /droid/ paths; User-Agent containing factory-cli/X.Y.Z, or an x-factory-client
//     header containing "droid" or "factory-cli".
func DefaultClients() []ClientSpec {
	return []ClientSpec{
		{
			ID:   ClientClaudeCode,
			Name: "Claude Code",
			PathPrefixes: []string{
				"/api/v1/messages", "/api/v1/models", "/api/v1/me", "/api/v1/usage", "/api/v1/key-info",
				"/api/v1/organizations", "/claude/v1/messages", "/claude/v1/models", "/antigravity/api/",
				"/gemini-cli/api/", "/api/event_logging", "/v1/messages", "/v1/models", "/v1/me",
				"/v1/usage", "/v1/key-info", "/v1/organizations",
			},
			UserAgent:       `^claude-cli/\d+\.\d+\.\d+`,
			StrictPaths:     []string{"messages"},
			RequiredHeaders: []string{"x-app", "anthropic-beta", "anthropic-version"},
			RequireUserID:   true,
		},
		{
			ID:             ClientGeminiCLI,
			Name:           "Gemini CLI",
			PathPrefixes:   []string{"/gemini/"},
			UserAgent:      `^GeminiCLI/v?[\d.]+`,
			UserAgentPaths: []string{"generateContent"},
		},
		{
			ID:           ClientCodexCLI,
			Name:         "Codex CLI",
			PathPrefixes: []string{"/openai/responses", "/openai/v1/responses", "/azure/"},
			UserAgent:    `^(codex_vscode|codex_cli_rs|codex_exec)/[\d.]+`,
		},
		{
			ID:               ClientDroidCLI,
			Name:             "Droid CLI",
			PathPrefixes:     []string{"/droid/"},
			UserAgent:        `factory-cli/\d+\.\d+\.\d+`,
			OrHeader:         "x-factory-client",
			OrHeaderContains: []string{"droid", "factory-cli"},
		},
	}
}

// clientRule is a compiled ClientSpec.
type clientRule struct {
	spec ClientSpec
	ua   *regexp.Regexp // nil = any
	// Lowercased copies for case-insensitive prefix and substring tests.
	prefixes  []string
	orContain []string
}

// CompileClients checks and compiles client specs, keyed by id. Every problem is reported, each
// naming the spec.
func CompileClients(specs []ClientSpec) (map[string]*clientRule, error) {
	out := make(map[string]*clientRule, len(specs))
	var errs []error
	for i, s := range specs {
		name := fmt.Sprintf("clients[%d] (%s)", i, s.ID)
		if s.ID == "" {
			errs = append(errs, fmt.Errorf("%s: id is required: %w", name, errClientSpecInvalid))
			continue
		}
		if _, dup := out[s.ID]; dup {
			errs = append(errs, fmt.Errorf("%s: duplicate id: %w", name, errClientSpecInvalid))
			continue
		}
		r := &clientRule{spec: s}
		if s.UserAgent != "" {
			re, err := regexp.Compile("(?i)" + s.UserAgent)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: user_agent: %w", name, err))
				continue
			}
			r.ua = re
		}
		if (s.OrHeader == "") != (len(s.OrHeaderContains) == 0) {
			errs = append(errs, fmt.Errorf("%s: or_header and or_header_contains go together: %w", name, errClientSpecInvalid))
			continue
		}
		for _, p := range s.PathPrefixes {
			r.prefixes = append(r.prefixes, strings.ToLower(p))
		}
		for _, c := range s.OrHeaderContains {
			r.orContain = append(r.orContain, strings.ToLower(c))
		}
		out[s.ID] = r
	}
	return out, errors.Join(errs...)
}

// pathAllowed is isPathAllowedForClient: a case-insensitive prefix test.
func (r *clientRule) pathAllowed(path []byte) bool {
	if len(r.prefixes) == 0 {
		return true
	}
	for _, p := range r.prefixes {
		if len(path) >= len(p) && bytesEqualFoldASCII(path[:len(p)], p) {
			return true
		}
	}
	return false
}

// validate is the client's validator (the path list is checked separately, as in the reference).
func (r *clientRule) validate(in *Input) bool {
	if !r.recognised(in) {
		return false
	}
	s := &r.spec
	if len(s.StrictPaths) == 0 || !containsAny(in.Path, s.StrictPaths) {
		return true
	}
	for _, h := range s.RequiredHeaders {
		if len(bytes.TrimSpace(header(in.Header, h))) == 0 {
			return false
		}
	}
	return !s.RequireUserID || ValidUserID(bodyUserID(in.Body))
}

// recognised reports whether the request identifies as the client: its User-Agent matches (where
// the User-Agent check applies), or its alternative header names it. A spec that asks for neither
// on this path recognises every request.
func (r *clientRule) recognised(in *Input) bool {
	s := &r.spec
	uaApplies := r.ua != nil && (len(s.UserAgentPaths) == 0 || containsAny(in.Path, s.UserAgentPaths))
	if uaApplies && r.ua.Match(in.UserAgent) {
		return true
	}
	if s.OrHeader != "" {
		v := strings.ToLower(string(header(in.Header, s.OrHeader)))
		for _, c := range r.orContain {
			if strings.Contains(v, c) {
				return true
			}
		}
		return false
	}
	return !uaApplies
}

// clientRestricted reports whether a key's allowed_clients is enforced (reference §2.3 step 4).
func clientRestricted(k *crsv1.ApiKey) bool {
	return k.GetEnableClientRestriction() && len(k.GetAllowedClients()) > 0
}

// checkClients is reference §2.3 step 4: the request must come from one of the key's allowed
// clients, on a path that client may use.
func (p *Policy) checkClients(in *Input) error {
	k := in.Key
	if !clientRestricted(k) {
		return nil
	}
	for _, id := range k.GetAllowedClients() {
		r := p.clients[id]
		if r == nil || !r.pathAllowed(in.Path) {
			continue
		}
		if r.validate(in) {
			return nil
		}
	}
	return apierr.Flat(fasthttp.StatusForbidden, "Client not allowed", "Your client is not authorized to use this API key").
		WithFields(
			apierr.Field{Name: "allowedClients", Value: k.GetAllowedClients()},
			apierr.Field{Name: "userAgent", Value: string(in.UserAgent)},
		).WithCause(ErrClientNotAllowed)
}

// errNotClaudeCode is reference §2.3 step 5's refusal.
var errNotClaudeCode = apierr.Nested(fasthttp.StatusForbidden, "client_validation_error",
	"This endpoint only accepts requests from Claude Code CLI").WithCause(ErrNotClaudeCode)

// checkClaudeCodeOnly is reference §2.3 step 5: on /api and /claude Messages paths, when the
// global setting is on or the key allows claude_code alone, the claude_code validator must pass.
func (p *Policy) checkClaudeCodeOnly(in *Input) error {
	if !claudeMessagesPath(in.Path) {
		return nil
	}
	k := in.Key
	keyOnly := k.GetEnableClientRestriction() && len(k.GetAllowedClients()) == 1 &&
		k.GetAllowedClients()[0] == ClientClaudeCode
	if !keyOnly && !in.State.Settings().GetClaudeCodeOnlyEnabled() {
		return nil
	}
	if p.claudeCode != nil && p.claudeCode.validate(in) {
		return nil
	}
	return errNotClaudeCode
}

// claudeMessagesPath: the lowercased path contains /v1/messages and starts with /api or /claude.
func claudeMessagesPath(path []byte) bool {
	if !(hasPrefixFold(path, "/api") || hasPrefixFold(path, "/claude")) {
		return false
	}
	return containsFold(path, "/v1/messages")
}

// ValidUserID reports whether v (a JSON value, raw) is a valid Claude Code metadata.user_id
// (src/utils/metadataUserIdHelper.js isValid): a string that is either the JSON form
// {"device_id":"…","session_id":"…",…} with non-empty device_id and session_id strings, or the
// legacy user_<64 hex>_account_<anything>_session_<[a-f0-9-]+>.
func ValidUserID(raw json.RawMessage) bool {
	var s string
	if len(raw) == 0 || raw[0] != '"' || json.Unmarshal(raw, &s) != nil || s == "" {
		return false
	}
	if strings.HasPrefix(s, "{") {
		var obj map[string]any
		if json.Unmarshal([]byte(s), &obj) != nil {
			return false
		}
		d, _ := obj["device_id"].(string)
		sess, _ := obj["session_id"].(string)
		return d != "" && sess != ""
	}
	return legacyUserID.MatchString(s)
}

var legacyUserID = regexp.MustCompile(`^user_[a-fA-F0-9]{64}_account_.*?_session_[a-f0-9-]+$`)

// bodyUserID returns the raw metadata.user_id of a JSON body, nil when absent or unreadable.
func bodyUserID(body []byte) json.RawMessage {
	var b struct {
		Metadata struct {
			UserID json.RawMessage `json:"user_id"`
		} `json:"metadata"`
	}
	if json.Unmarshal(body, &b) != nil {
		return nil
	}
	return b.Metadata.UserID
}

// header returns a request header's value; nil when h is nil or the header is absent.
func header(h *fasthttp.RequestHeader, name string) []byte {
	if h == nil {
		return nil
	}
	return h.Peek(name)
}

func containsAny(b []byte, subs []string) bool {
	for _, s := range subs {
		if bytes.Contains(b, []byte(s)) {
			return true
		}
	}
	return false
}

func containsFold(b []byte, lowerSub string) bool {
	for i := 0; i+len(lowerSub) <= len(b); i++ {
		if bytesEqualFoldASCII(b[i:i+len(lowerSub)], lowerSub) {
			return true
		}
	}
	return false
}

// bytesEqualFoldASCII compares b with a lowercase ASCII string, ignoring b's ASCII case.
func bytesEqualFoldASCII(b []byte, lower string) bool {
	if len(b) != len(lower) {
		return false
	}
	for i := 0; i < len(b); i++ {
		c := b[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != lower[i] {
			return false
		}
	}
	return true
}
