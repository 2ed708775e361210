package admin

import (
	"net/url"

	crsv1 "github.com/crsrelay/crs/gen/crs/v1"
)

// Redacted is what a secret shows as where it cannot simply be emptied (a proxy URL's password).
// Sent back in an update, it (like "") means "keep the stored secret".
const Redacted = "REDACTED"

// accountTypes maps each account type to its platform and the credential check for it.
var accountTypes = map[string]struct {
	platform string
	check    func(c *checker, a *crsv1.Account)
}{
	"claude-official":  {"claude", needOAuth(true)},
	"claude-console":   {"claude", needAPIKey(true)},
	"bedrock":          {"bedrock", needAWS},
	"gemini":           {"gemini", needOAuth(false)},
	"gemini-api":       {"gemini", needAPIKey(false)},
	"openai":           {"openai", needOAuth(false)},
	"openai-responses": {"openai", needAPIKey(true)},
	"azure-openai":     {"azure", needAzure},
	"droid":            {"droid", needOAuthOrAPIKey},
	"ccr":              {"ccr", needAPIKey(true)},
}

// accountTypeNames in a stable order, for messages.
var accountTypeNames = []string{"claude-official", "claude-console", "bedrock", "gemini", "gemini-api", "openai", "openai-responses", "azure-openai", "droid", "ccr"}

// credentialKind names the oneof case: "api_key", "oauth", "aws", "azure" or "".
func credentialKind(a *crsv1.Account) string {
	switch a.GetCredentials().(type) {
	case *crsv1.Account_ApiKey:
		return "api_key"
	case *crsv1.Account_Oauth:
		return "oauth"
	case *crsv1.Account_Aws:
		return "aws"
	case *crsv1.Account_Azure:
		return "azure"
	}
	return ""
}

func needOAuth(accessToken bool) func(*checker, *crsv1.Account) {
	return func(c *checker, a *crsv1.Account) {
		o := a.GetOauth()
		switch {
		case o == nil:
			c.add("credentials", "%s accounts need oauth credentials", a.Type)
		case accessToken && o.AccessToken == "":
			c.add("oauth.access_token", "required")
		case o.AccessToken == "" && o.RefreshToken == "":
			c.add("oauth.access_token", "an access_token or a refresh_token is required")
		}
	}
}

func needAPIKey(baseURL bool) func(*checker, *crsv1.Account) {
	return func(c *checker, a *crsv1.Account) {
		k := a.GetApiKey()
		switch {
		case k == nil:
			c.add("credentials", "%s accounts need api_key credentials", a.Type)
		case k.ApiKey == "":
			c.add("api_key.api_key", "required")
		}
		if baseURL && a.BaseUrl == "" {
			c.add("base_url", "required for %s accounts", a.Type)
		}
	}
}

func needOAuthOrAPIKey(c *checker, a *crsv1.Account) {
	switch credentialKind(a) {
	case "oauth":
		needOAuth(false)(c, a)
	case "api_key":
		needAPIKey(false)(c, a)
	default:
		c.add("credentials", "%s accounts need oauth or api_key credentials", a.Type)
	}
}

func needAWS(c *checker, a *crsv1.Account) {
	w := a.GetAws()
	if w == nil {
		c.add("credentials", "%s accounts need aws credentials", a.Type)
		return
	}
	if w.Region == "" {
		c.add("aws.region", "required")
	}
	if w.BearerToken == "" && (w.AccessKeyId == "" || w.SecretAccessKey == "") {
		c.add("aws.access_key_id", "access_key_id and secret_access_key, or a bearer_token, are required")
	}
}

func needAzure(c *checker, a *crsv1.Account) {
	z := a.GetAzure()
	if z == nil {
		c.add("credentials", "%s accounts need azure credentials", a.Type)
		return
	}
	c.httpURL("azure.endpoint", z.Endpoint, true)
	if z.Deployment == "" {
		c.add("azure.deployment", "required")
	}
	if z.ApiKey == "" {
		c.add("azure.api_key", "required")
	}
}

// checkCredentialSizes bounds every credential field, secret or not.
func checkCredentialSizes(c *checker, a *crsv1.Account) {
	switch cr := a.GetCredentials().(type) {
	case *crsv1.Account_ApiKey:
		c.length("api_key.api_key", cr.ApiKey.GetApiKey(), 0, maxSecretLen)
	case *crsv1.Account_Oauth:
		o := cr.Oauth
		c.length("oauth.access_token", o.GetAccessToken(), 0, maxSecretLen)
		c.length("oauth.refresh_token", o.GetRefreshToken(), 0, maxSecretLen)
		c.length("oauth.project_id", o.GetProjectId(), 0, maxItemLen)
		c.stringList("oauth.scopes", o.GetScopes(), maxTags, maxItemLen)
		if o.GetExpiresAt() != nil && o.GetExpiresAt().CheckValid() != nil {
			c.add("oauth.expires_at", "invalid timestamp")
		}
	case *crsv1.Account_Aws:
		w := cr.Aws
		c.length("aws.access_key_id", w.GetAccessKeyId(), 0, maxItemLen)
		c.length("aws.secret_access_key", w.GetSecretAccessKey(), 0, maxSecretLen)
		c.length("aws.session_token", w.GetSessionToken(), 0, maxSecretLen)
		c.length("aws.region", w.GetRegion(), 0, 50)
		c.length("aws.bearer_token", w.GetBearerToken(), 0, maxSecretLen)
		c.length("aws.default_model", w.GetDefaultModel(), 0, maxItemLen)
	case *crsv1.Account_Azure:
		z := cr.Azure
		c.length("azure.deployment", z.GetDeployment(), 0, maxItemLen)
		c.length("azure.api_version", z.GetApiVersion(), 0, 50)
		c.length("azure.api_key", z.GetApiKey(), 0, maxSecretLen)
	}
}

// secretFields returns pointers to the write-only strings of a's credentials, in a fixed order
// per kind. Non-secret fields (expires_at, scopes, region, endpoint...) are not included.
func secretFields(a *crsv1.Account) []*string {
	switch cr := a.GetCredentials().(type) {
	case *crsv1.Account_ApiKey:
		if cr.ApiKey != nil {
			return []*string{&cr.ApiKey.ApiKey}
		}
	case *crsv1.Account_Oauth:
		if cr.Oauth != nil {
			return []*string{&cr.Oauth.AccessToken, &cr.Oauth.RefreshToken}
		}
	case *crsv1.Account_Aws:
		if cr.Aws != nil {
			return []*string{&cr.Aws.SecretAccessKey, &cr.Aws.SessionToken, &cr.Aws.BearerToken}
		}
	case *crsv1.Account_Azure:
		if cr.Azure != nil {
			return []*string{&cr.Azure.ApiKey}
		}
	}
	return nil
}

// clearSecrets empties a's credential secrets and redacts its proxy password (in place).
func clearSecrets(a *crsv1.Account) {
	for _, p := range secretFields(a) {
		*p = ""
	}
	a.Proxy = redactProxy(a.Proxy)
}

// keepSecrets puts old's secrets back into next wherever next has "" or Redacted and the
// credential kind did not change; likewise the proxy password.
func keepSecrets(next, old *crsv1.Account) {
	if credentialKind(next) == credentialKind(old) {
		oldF := secretFields(old)
		for i, p := range secretFields(next) {
			if *p == "" || *p == Redacted {
				*p = *oldF[i]
			}
		}
	}
	nu, err := url.Parse(next.Proxy)
	if err != nil || nu.User == nil {
		return
	}
	if pw, ok := nu.User.Password(); !ok || pw != Redacted {
		return
	}
	if ou, err := url.Parse(old.Proxy); err == nil && ou.User != nil {
		if opw, ok := ou.User.Password(); ok {
			nu.User = url.UserPassword(nu.User.Username(), opw)
			next.Proxy = nu.String()
		}
	}
}

// redactProxy replaces a proxy URL's password with Redacted.
func redactProxy(p string) string {
	u, err := url.Parse(p)
	if p == "" || err != nil || u.User == nil {
		return p
	}
	if _, ok := u.User.Password(); !ok {
		return p
	}
	u.User = url.UserPassword(u.User.Username(), Redacted)
	return u.String()
}

// checkProxy validates an optional proxy URL.
func checkProxy(c *checker, p string) {
	if p == "" {
		return
	}
	if len(p) > maxURLLen {
		c.add("proxy", "must be at most %d characters", maxURLLen)
		return
	}
	u, err := url.Parse(p)
	if err != nil {
		c.add("proxy", "must be a URL like socks5://user:pass@host:1080")
		return
	}
	switch u.Scheme {
	case "http", "https", "socks5", "socks5h":
	default:
		c.add("proxy", "scheme must be http, https, socks5 or socks5h")
		return
	}
	if u.Hostname() == "" || u.Port() == "" {
		c.add("proxy", "must have a host and a port")
	}
}
