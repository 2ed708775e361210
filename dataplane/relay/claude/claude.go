// Package claude builds upstream requests for Anthropic Messages API accounts and reads their
// answers: claude-official (OAuth tokens against api.anthropic.com, official.go) and claude-console
// (a third-party Anthropic-compatible URL and key, console.go). Both implement
// [platform.Upstream]; they share the header allow-list, model mapping, error classification
// (classify.go) and usage reading (usage.go).
//
// Bodies are passed through as bytes: the only rewrite is the model mapping, spliced into a copy.
// No identity rewriting (system prompt, metadata.user_id, tool names) is done here. The package
// depends on platform, sse and the generated contract only; it must not import package relay.
package claude

import (
	"errors"
	"strings"

	"github.com/crsrelay/crs/dataplane/relay/platform"
	crsv1 "github.com/crsrelay/crs/gen/crs/v1"
	"github.com/valyala/fasthttp"
)

// Account types served by this package (crsv1.Account.type).
const (
	TypeOfficial = "claude-official"
	TypeConsole  = "claude-console"
)

// Defaults sent upstream when the client did not say (reference §1.3.1, §1.3.3).
const (
	// DefaultBaseURL is where claude-official accounts go unless the account or Options say otherwise.
	DefaultBaseURL = "https://api.anthropic.com"
	// DefaultVersion is the anthropic-version header when the client sent none.
	DefaultVersion = "2023-06-01"
	// DefaultUserAgent is the User-Agent when neither the account nor the client set one.
	DefaultUserAgent = "claude-cli/2.0.52 (external, cli)"
)

// Errors from Build: the account cannot be used. The relay reports them as a server_error event
// and tries the next candidate.
var (
	ErrNoCredential = errors.New("account has no credential for its type")
	ErrNoBaseURL    = errors.New("account has no base_url")
)

const (
	pathMessages    = "/v1/messages"
	pathCountTokens = "/v1/messages/count_tokens"
)

// Names of the headers Build sets, in the form fasthttp writes them (its canonical form), for
// Header.SetCanonical: Header.Set would check and normalize the name again on every request.
var (
	nameAccept         = []byte("Accept")
	nameAcceptEncoding = []byte("Accept-Encoding")
	nameAnthropicBeta  = []byte("Anthropic-Beta")
	nameAnthropicVer   = []byte("Anthropic-Version")
	nameAuthorization  = []byte("Authorization")
	nameXAPIKey        = []byte("X-Api-Key")
)

// passedName reports whether a client header is forwarded as it is to an Anthropic upstream, and
// returns its name in canonical form; name must be lowercase. The allow-list is reference §1.3.1
// (headerFilter.js filterForClaude) plus Claude Code's session header; everything else, including
// the client's x-api-key, authorization, cookie, accept-encoding and hop-by-hop headers (RFC 9110
// §7.6.1), stays in the worker. The headers each account type sets itself (user-agent,
// anthropic-version, anthropic-beta, accept, content-type) are not here: copyHeaders takes them
// apart.
//
// The x-stainless-* headers are forwarded whatever follows the prefix. The ones the Stainless SDK
// sends (those the worker forwards) have their canonical names here; for any other canon is nil,
// and the header is set through Header.Set, which normalizes its name.
func passedName(name string) (canon []byte, pass bool) {
	switch name {
	case "anthropic-dangerous-direct-browser-access":
		return nameBrowserAccess, true
	case "x-app":
		return nameXApp, true
	case "accept-language":
		return nameAcceptLanguage, true
	case "sec-fetch-mode":
		return nameSecFetchMode, true
	case "x-claude-code-session-id":
		return nameSessionID, true
	case "x-stainless-arch":
		return nameStainlessArch, true
	case "x-stainless-helper-method":
		return nameStainlessHelper, true
	case "x-stainless-lang":
		return nameStainlessLang, true
	case "x-stainless-os":
		return nameStainlessOS, true
	case "x-stainless-package-version":
		return nameStainlessPackage, true
	case "x-stainless-retry-count":
		return nameStainlessRetry, true
	case "x-stainless-runtime":
		return nameStainlessRuntime, true
	case "x-stainless-runtime-version":
		return nameStainlessRuntimeVer, true
	case "x-stainless-timeout":
		return nameStainlessTimeout, true
	}
	return nil, strings.HasPrefix(name, "x-stainless-")
}

// Canonical names of the client headers forwarded as they are (passedName).
var (
	nameBrowserAccess       = []byte("Anthropic-Dangerous-Direct-Browser-Access")
	nameXApp                = []byte("X-App")
	nameAcceptLanguage      = []byte("Accept-Language")
	nameSecFetchMode        = []byte("Sec-Fetch-Mode")
	nameSessionID           = []byte("X-Claude-Code-Session-Id")
	nameStainlessArch       = []byte("X-Stainless-Arch")
	nameStainlessHelper     = []byte("X-Stainless-Helper-Method")
	nameStainlessLang       = []byte("X-Stainless-Lang")
	nameStainlessOS         = []byte("X-Stainless-Os")
	nameStainlessPackage    = []byte("X-Stainless-Package-Version")
	nameStainlessRetry      = []byte("X-Stainless-Retry-Count")
	nameStainlessRuntime    = []byte("X-Stainless-Runtime")
	nameStainlessRuntimeVer = []byte("X-Stainless-Runtime-Version")
	nameStainlessTimeout    = []byte("X-Stainless-Timeout")
)

// lower returns name in lowercase, without allocating when it already is (the worker sends
// lowercase names).
func lower(name string) string {
	for i := 0; i < len(name); i++ {
		if c := name[i]; 'A' <= c && c <= 'Z' {
			return strings.ToLower(name)
		}
	}
	return name
}

// clientHeaders is what Build needs from the client's headers besides the ones copied as they are.
type clientHeaders struct {
	userAgent, version, beta, accept string
}

// copyHeaders copies the client's allowed headers to out, except the ones each account type sets
// itself (returned in clientHeaders): user-agent, anthropic-version, anthropic-beta, accept and
// content-type.
func copyHeaders(req *platform.Request, out *fasthttp.Request) clientHeaders {
	var ch clientHeaders
	for _, h := range req.Headers {
		// The worker sends lowercase names: only a name not recognized as it is is lowered.
		if !ch.take(out, h.Name, h.Value) {
			if name := lower(h.Name); name != h.Name {
				ch.take(out, name, h.Value)
			}
		}
	}
	return ch
}

// take copies the client header name: value to out, or keeps it in ch; name is lowercase for a
// header to recognize. It reports false for a header that stays in the worker.
func (ch *clientHeaders) take(out *fasthttp.Request, name, value string) bool {
	switch name {
	case "user-agent":
		ch.userAgent = value
	case "anthropic-version":
		ch.version = value
	case "anthropic-beta":
		ch.beta = value
	case "accept":
		ch.accept = value
	case "content-type":
	default:
		canon, pass := passedName(name)
		switch {
		case canon != nil:
			setHeader(&out.Header, canon, value)
		case pass:
			// lower: name may have passed as it is with capitals after the prefix; Set
			// normalizes only valid names.
			out.Header.Set(lower(name), value)
		}
		return pass
	}
	return true
}

// setHeader sets the header name, in canonical form, to value: what Header.Set(string(name),
// value) does, without normalizing the name. SetCanonical takes the value as bytes, so it is
// copied to the stack first; a longer value goes through SetBytesK, which copies it to the
// header's own buffer (and normalizes the name, which leaves a canonical name as it is).
func setHeader(h *fasthttp.RequestHeader, name []byte, value string) {
	var buf [256]byte
	if len(value) > len(buf) {
		h.SetBytesK(name, value)
		return
	}
	h.SetCanonical(name, append(buf[:0], value...))
}

// setCommon sets the headers both account types send the same way.
func setCommon(out *fasthttp.Request, ch clientHeaders, userAgent string) {
	out.Header.SetMethod(fasthttp.MethodPost)
	out.Header.SetContentType("application/json")
	// Upstream bodies are passed through and parsed for usage: ask for them uncompressed
	// (reference §1.3.1 step 4, "accept-encoding: identity (forced)").
	out.Header.SetCanonical(nameAcceptEncoding, valueIdentity)
	setHeader(&out.Header, nameAnthropicVer, or(ch.version, DefaultVersion))
	setHeader(&out.Header, nameAccept, or(ch.accept, "application/json"))
	out.Header.SetUserAgent(userAgent)
}

var valueIdentity = []byte("identity")

func opPath(op string) string {
	if op == platform.OpCountTokens {
		return pathCountTokens
	}
	return pathMessages
}

func or(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// family returns the model family a per-family rate limit applies to (opus, sonnet, haiku, fable),
// or "" (reference §4.4).
func family(model string) string {
	m := lower(model)
	for _, f := range [...]string{"opus", "sonnet", "haiku", "fable"} {
		if strings.Contains(m, f) {
			return f
		}
	}
	return ""
}

// mapModel returns the model to ask upstream for and the body to send: req.Body itself when the
// account maps nothing for req.Model, else a copy with the mapped model spliced in. The mapping is
// looked up exactly, then case-insensitively (reference §1.3.3).
func mapModel(acct *crsv1.Account, req *platform.Request) (string, []byte) {
	mm := acct.GetModelMapping()
	if len(mm) == 0 || req.Model == "" {
		return req.Model, req.Body
	}
	to, ok := mm[req.Model]
	if !ok {
		for from, v := range mm {
			if strings.EqualFold(from, req.Model) {
				to, ok = v, true
				break
			}
		}
	}
	if !ok || to == "" || to == req.Model {
		return req.Model, req.Body
	}
	body, ok := spliceModel(req.Body, to)
	if !ok {
		return req.Model, req.Body
	}
	return to, body
}

// setBearer sets authorization: Bearer <token>, built on the stack rather than concatenated into a
// string, which cost an allocation per request for any token longer than 25 bytes.
func setBearer(h *fasthttp.RequestHeader, token string) {
	var buf [512]byte
	h.SetCanonical(nameAuthorization, append(append(buf[:0], "Bearer "...), token...))
}
