package oauth

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/crsrelay/crs/controlplane/proxyhttp"
)

// maxTokenResponse bounds a token endpoint's answer.
const maxTokenResponse = 1 << 20

// maxDescription bounds the provider message quoted in errors and account reasons.
const maxDescription = 200

// Token is what a token endpoint granted, normalized across providers.
type Token struct {
	AccessToken string
	// RefreshToken is empty when the provider sent none (setup tokens; Google refreshes).
	RefreshToken string
	// ExpiresAt is when the access token expires (zero when the provider did not say).
	ExpiresAt time.Time
	// Scopes granted, when the provider listed them.
	Scopes []string
	// AccountID is the provider's account id: OpenAI's chatgpt_account_id (from the id token),
	// Anthropic's account uuid.
	AccountID string
	// Email of the user, when the provider tells.
	Email string
	// Organization is Anthropic's organization name, when sent.
	Organization string
	// PlanType is OpenAI's chatgpt_plan_type, when sent.
	PlanType string
}

// tokenResponse is the union of the providers' token answers.
type tokenResponse struct {
	AccessToken  string      `json:"access_token"`
	RefreshToken string      `json:"refresh_token"`
	ExpiresIn    json.Number `json:"expires_in"`
	Scope        string      `json:"scope"`
	IDToken      string      `json:"id_token"`
	Organization *struct {
		UUID string `json:"uuid"`
		Name string `json:"name"`
	} `json:"organization"`
	Account *struct {
		UUID  string `json:"uuid"`
		Email string `json:"email_address"`
	} `json:"account"`
}

// exchangeCode trades an authorization code for tokens.
func exchangeCode(ctx context.Context, hc *http.Client, p Provider, proxy, code string, k pkce, now time.Time) (*Token, error) {
	params := map[string]any{
		"grant_type":    "authorization_code",
		"client_id":     p.ClientID,
		"code":          code,
		"redirect_uri":  p.RedirectURI,
		"code_verifier": k.Verifier,
	}
	if p.SendState {
		params["state"] = k.State
	}
	if p.ClientSecret != "" {
		params["client_secret"] = p.ClientSecret
	}
	if p.ExpiresIn > 0 {
		params["expires_in"] = p.ExpiresIn
	}
	return tokenRequest(ctx, hc, p, proxy, params, now)
}

// refreshToken trades a refresh token for new tokens.
func refreshToken(ctx context.Context, hc *http.Client, p Provider, proxy, rt string, now time.Time) (*Token, error) {
	params := map[string]any{
		"grant_type":    "refresh_token",
		"client_id":     p.ClientID,
		"refresh_token": rt,
	}
	if p.ClientSecret != "" {
		params["client_secret"] = p.ClientSecret
	}
	if p.RefreshScope != "" {
		params["scope"] = p.RefreshScope
	}
	return tokenRequest(ctx, hc, p, proxy, params, now)
}

// tokenRequest posts params to p's token endpoint in p's style and normalizes the answer.
func tokenRequest(ctx context.Context, hc *http.Client, p Provider, proxy string, params map[string]any, now time.Time) (*Token, error) {
	var (
		body        []byte
		contentType string
	)
	switch p.Style {
	case StyleJSON:
		b, err := json.Marshal(params)
		if err != nil {
			return nil, fmt.Errorf("encode token request: %w", err)
		}
		body, contentType = b, "application/json"
	default:
		form := url.Values{}
		for k, v := range params {
			form.Set(k, fmt.Sprint(v))
		}
		body, contentType = []byte(form.Encode()), "application/x-www-form-urlencoded"
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.TokenURL, bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("build token request: %w", err)
	}
	req.Header.Set("Content-Type", contentType)
	req.Header.Set("Accept", "application/json")
	for k, v := range p.Headers {
		req.Header.Set(k, v)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnreachable, proxyhttp.Describe(err, proxy, "token request"))
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxTokenResponse))
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnreachable, proxyhttp.Describe(err, proxy, "token request"))
	}
	if err := proxyhttp.StatusError(resp.StatusCode, proxy); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnreachable, err)
	}
	if resp.StatusCode/100 != 2 {
		return nil, upstreamError(resp.StatusCode, raw)
	}
	var tr tokenResponse
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(&tr); err != nil {
		return nil, &UpstreamError{Status: resp.StatusCode, Description: "answer is not JSON: " + trimText(string(raw))}
	}
	if tr.AccessToken == "" {
		return nil, &UpstreamError{Status: resp.StatusCode, Description: "answer has no access_token"}
	}
	t := &Token{AccessToken: tr.AccessToken, RefreshToken: tr.RefreshToken, Scopes: strings.Fields(tr.Scope)}
	if n, err := tr.ExpiresIn.Int64(); err == nil && n > 0 {
		t.ExpiresAt = now.Add(time.Duration(n) * time.Second)
	}
	if tr.Organization != nil {
		t.Organization = tr.Organization.Name
	}
	if tr.Account != nil {
		t.AccountID, t.Email = tr.Account.UUID, tr.Account.Email
	}
	if tr.IDToken != "" {
		readIDToken(tr.IDToken, t)
	}
	return t, nil
}

// upstreamError reads an OAuth error body: {"error":"x","error_description":"y"} (RFC 6749,
// Anthropic, Google) or {"error":{"message","code","type"}} (OpenAI).
func upstreamError(status int, raw []byte) *UpstreamError {
	e := &UpstreamError{Status: status}
	var body struct {
		Error       json.RawMessage `json:"error"`
		Description string          `json:"error_description"`
		Message     string          `json:"message"`
	}
	if json.Unmarshal(raw, &body) != nil {
		e.Description = trimText(string(raw))
		return e
	}
	var code string
	var obj struct {
		Message string `json:"message"`
		Code    string `json:"code"`
		Type    string `json:"type"`
	}
	switch {
	case json.Unmarshal(body.Error, &code) == nil:
		e.Code, e.Description = code, body.Description
	case json.Unmarshal(body.Error, &obj) == nil:
		e.Code, e.Description = obj.Code, obj.Message
		if e.Code == "" {
			e.Code = obj.Type
		}
	}
	if e.Description == "" {
		e.Description = body.Message
	}
	e.Code, e.Description = trimText(e.Code), trimText(e.Description)
	return e
}

// readIDToken takes what crs uses from an id token's claims. The token comes straight from the
// provider's token endpoint over TLS, so its signature is not checked.
func readIDToken(jwt string, t *Token) {
	parts := strings.Split(jwt, ".")
	if len(parts) < 2 {
		return
	}
	payload, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[1], "="))
	if err != nil {
		return
	}
	var claims struct {
		Email string `json:"email"`
		Auth  struct {
			AccountID string `json:"chatgpt_account_id"`
			PlanType  string `json:"chatgpt_plan_type"`
		} `json:"https://api.openai.com/auth"`
	}
	if json.Unmarshal(payload, &claims) != nil {
		return
	}
	if claims.Email != "" {
		t.Email = claims.Email
	}
	if claims.Auth.AccountID != "" {
		t.AccountID = claims.Auth.AccountID
	}
	t.PlanType = claims.Auth.PlanType
}

// trimText bounds s to maxDescription characters on one line.
func trimText(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if utf8.RuneCountInString(s) <= maxDescription {
		return s
	}
	r := []rune(s)
	return string(r[:maxDescription]) + "…"
}
