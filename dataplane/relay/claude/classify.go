package claude

import (
	"encoding/json"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/crsrelay/crs/dataplane/relay/platform"
	"github.com/valyala/fasthttp"
)

// Phrases in a 400/403 body that mean the account itself is banned or unusable, so it is marked
// blocked instead of failing the request (reference §4.4). Matched case-insensitively.
var (
	blockedOfficial = []string{
		"this organization has been disabled",
		"oauth authentication is currently not allowed",
	}
	blockedConsole = []string{
		"organization has been disabled", "account has been disabled", "account is disabled",
		"no account supporting", "account not found", "invalid account", "too many active sessions",
	}
)

// headerRateLimitReset is the unix time (seconds) a 429'd unified rate limit resets.
const headerRateLimitReset = "anthropic-ratelimit-unified-reset"

// maxReason bounds an event's reason, in characters.
const maxReason = 300

// classify judges a non-2xx Anthropic answer: which account event it means and whether the next
// candidate should be tried. Account failures (rate limits, overload, auth, bans, 5xx) fail over;
// request failures (400, 404, 413, ...) go back to the client as they are.
func classify(status int, h *fasthttp.ResponseHeader, body []byte, model string, blocked []string) platform.Verdict {
	v := platform.Verdict{Reason: Reason(body)}
	switch {
	case status == fasthttp.StatusTooManyRequests:
		v.Failover, v.Kind = true, platform.EventRateLimited
		if h != nil {
			if reset, err := strconv.ParseInt(strings.TrimSpace(string(h.Peek(headerRateLimitReset))), 10, 64); err == nil && reset > 0 {
				v.Until = time.Unix(reset, 0)
				v.Family = family(model)
			}
		}
	case status == 529:
		v.Failover, v.Kind = true, platform.EventOverloaded
	case status == fasthttp.StatusUnauthorized:
		v.Failover, v.Kind = true, platform.EventUnauthorized
	case status == fasthttp.StatusForbidden:
		v.Failover, v.Kind = true, platform.EventForbidden
		if containsAny(body, blocked) {
			v.Kind = platform.EventBlocked
		}
	case status == fasthttp.StatusBadRequest && containsAny(body, blocked):
		v.Failover, v.Kind = true, platform.EventBlocked
	case status >= 500:
		v.Failover, v.Kind = true, platform.EventServerError
	}
	return v
}

func containsAny(body []byte, phrases []string) bool {
	if len(body) == 0 {
		return false
	}
	b := strings.ToLower(string(body))
	for _, p := range phrases {
		if strings.Contains(b, p) {
			return true
		}
	}
	return false
}

// Reason returns the message of an upstream error body for an account event: error.message of an
// Anthropic error ({"type":"error","error":{"type":...,"message":...}}), else "message", else the raw
// body; cut to 300 characters, valid UTF-8, with credential-looking tokens redacted.
func Reason(body []byte) string {
	var e struct {
		Error   json.RawMessage `json:"error"`
		Message string          `json:"message"`
	}
	s := ""
	if json.Unmarshal(body, &e) == nil {
		var inner struct {
			Message string `json:"message"`
		}
		switch {
		case len(e.Error) > 0 && json.Unmarshal(e.Error, &inner) == nil && inner.Message != "":
			s = inner.Message
		case e.Message != "":
			s = e.Message
		}
	}
	if s == "" {
		if len(body) > 4*maxReason {
			body = body[:4*maxReason]
		}
		s = string(body)
	}
	return trimReason(redact(s))
}

// trimReason makes s valid UTF-8 without surrounding space and at most maxReason runes.
func trimReason(s string) string {
	s = strings.TrimSpace(strings.ToValidUTF8(s, "\ufffd"))
	if utf8.RuneCountInString(s) <= maxReason {
		return s
	}
	n := 0
	for i := range s {
		if n == maxReason {
			return s[:i]
		}
		n++
	}
	return s
}

// redact replaces what looks like a credential in an upstream message with "[redacted]": words
// starting with sk- (Anthropic keys and OAuth tokens are sk-ant-...) and the word after "Bearer ".
// Upstreams do not normally echo credentials; this keeps a misbehaving one from putting a secret
// into account state and logs.
func redact(s string) string {
	if !strings.Contains(s, "sk-") && !strings.Contains(s, "Bearer ") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		wordStart := i == 0 || !isWordByte(s[i-1])
		switch {
		case wordStart && strings.HasPrefix(s[i:], "sk-"):
		case strings.HasPrefix(s[i:], "Bearer "):
			b.WriteString("Bearer ")
			i += len("Bearer ")
		default:
			b.WriteByte(s[i])
			i++
			continue
		}
		for i < len(s) && isTokenByte(s[i]) {
			i++
		}
		b.WriteString("[redacted]")
	}
	return b.String()
}

func isWordByte(c byte) bool {
	return c == '_' || c == '-' || '0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z'
}

// isTokenByte reports whether c may be part of a key or token (base64url, dots, ...).
func isTokenByte(c byte) bool {
	return isWordByte(c) || c == '.' || c == '+' || c == '/' || c == '='
}
