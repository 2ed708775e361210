package oauth

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"net/url"
	"regexp"
	"strings"
)

// pkce is one flow's proof key (RFC 7636) and state: 32 random bytes each, base64url without
// padding, and the S256 challenge of the verifier (reference §5.1).
type pkce struct {
	Verifier, Challenge, State string
}

func newPKCE() (pkce, error) {
	v, err := randomURLString(32)
	if err != nil {
		return pkce{}, err
	}
	st, err := randomURLString(32)
	if err != nil {
		return pkce{}, err
	}
	return pkce{Verifier: v, Challenge: challengeOf(v), State: st}, nil
}

// challengeOf is the S256 code challenge of a verifier.
func challengeOf(verifier string) string {
	sum := sha256.Sum256([]byte(verifier))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

func randomURLString(n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("oauth: read random: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// authURL builds the authorize URL of p for a flow.
func authURL(p Provider, k pkce) (string, error) {
	u, err := url.Parse(p.AuthorizeURL)
	if err != nil {
		return "", fmt.Errorf("oauth: provider %s: authorize url: %w", p.Name, err)
	}
	q := u.Query()
	for k, v := range p.AuthParams {
		q.Set(k, v)
	}
	q.Set("client_id", p.ClientID)
	q.Set("response_type", "code")
	q.Set("redirect_uri", p.RedirectURI)
	q.Set("scope", strings.Join(p.Scopes, " "))
	q.Set("code_challenge", k.Challenge)
	q.Set("code_challenge_method", "S256")
	q.Set("state", k.State)
	u.RawQuery = q.Encode()
	return u.String(), nil
}

// codePattern is what a cleaned authorization code may look like: Anthropic's and OpenAI's are
// base64url-ish (reference §5.1: [A-Za-z0-9_-]{10,}); Google's look like "4/0Ab...", so "/" and
// "." are allowed too.
var codePattern = regexp.MustCompile(`^[A-Za-z0-9_\-./~+]{10,}$`)

// maxCodeLen bounds a pasted code.
const maxCodeLen = 2048

// parseCode extracts the authorization code (and the state, when the input carried one) from what
// the operator pasted: a bare code, a code with "#state" or "&..." appended (Anthropic's callback
// page shows "code#state"), or the whole callback URL.
func parseCode(code, callbackURL string) (cleaned, state string, err error) {
	in := strings.TrimSpace(code)
	if cb := strings.TrimSpace(callbackURL); cb != "" {
		in = cb
	}
	if in == "" {
		return "", "", fmt.Errorf("%w: code or callback_url is required", ErrBadCode)
	}
	if strings.Contains(in, "code=") {
		q := in
		if u, err := url.Parse(in); err == nil && u.RawQuery != "" {
			q = u.RawQuery
		} else if i := strings.Index(in, "?"); i >= 0 {
			q = in[i+1:]
		}
		vals, err := url.ParseQuery(q)
		if err != nil || vals.Get("code") == "" {
			return "", "", fmt.Errorf("%w: no code in the callback URL", ErrBadCode)
		}
		if e := vals.Get("error"); e != "" {
			return "", "", fmt.Errorf("%w: the provider answered %s", ErrBadCode, e)
		}
		in, state = vals.Get("code"), vals.Get("state")
	}
	if i := strings.IndexAny(in, "#&"); i >= 0 {
		if state == "" && in[i] == '#' {
			state = in[i+1:]
		}
		in = in[:i]
	}
	if unescaped, err := url.QueryUnescape(in); err == nil {
		in = unescaped
	}
	if len(in) > maxCodeLen || !codePattern.MatchString(in) {
		return "", "", fmt.Errorf("%w: the code has an unexpected format", ErrBadCode)
	}
	return in, state, nil
}
