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

// allowedHeader reports whether a client header may be forwarded to an Anthropic upstream
// (reference §1.3.1 headerFilter.js filterForClaude, plus Claude Code's session header). Everything
// else, including the client's x-api-key, authorization, cookie, accept-encoding and hop-by-hop
// headers (RFC 9110 §7.6.1), stays in the worker. name must be lowercase.
func allowedHeader(name string) bool {
	switch name {
	case "accept", "anthropic-dangerous-direct-browser-access", "anthropic-version", "x-app",
		"anthropic-beta", "accept-language", "sec-fetch-mode", "user-agent", "content-type",
		"x-claude-code-session-id":
		return true
	}
	return strings.HasPrefix(name, "x-stainless-")
}

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
		name := lower(h.Name)
		switch name {
		case "user-agent":
			ch.userAgent = h.Value
		case "anthropic-version":
			ch.version = h.Value
		case "anthropic-beta":
			ch.beta = h.Value
		case "accept":
			ch.accept = h.Value
		case "content-type":
		default:
			if allowedHeader(name) {
				out.Header.Set(name, h.Value)
			}
		}
	}
	return ch
}

// setCommon sets the headers both account types send the same way.
func setCommon(out *fasthttp.Request, ch clientHeaders, userAgent string) {
	out.Header.SetMethod(fasthttp.MethodPost)
	out.Header.SetContentType("application/json")
	// Upstream bodies are passed through and parsed for usage: ask for them uncompressed
	// (reference §1.3.1 step 4, "accept-encoding: identity (forced)").
	out.Header.Set("Accept-Encoding", "identity")
	out.Header.Set("Anthropic-Version", or(ch.version, DefaultVersion))
	out.Header.Set("Accept", or(ch.accept, "application/json"))
	out.Header.SetUserAgent(userAgent)
}

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
