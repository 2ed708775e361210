package claude

import (
	"fmt"
	"strings"

	"github.com/crsrelay/crs/dataplane/relay/platform"
	crsv1 "github.com/crsrelay/crs/gen/crs/v1"
	"github.com/valyala/fasthttp"
)

// Console is the upstream of claude-console accounts: an Anthropic-compatible URL and API key of a
// third party (reference §1.3.3). It keeps no per-request state and is safe for concurrent use.
type Console struct {
	// URIs caches parsed upstream URIs; nil parses them on every request.
	URIs *URICache
}

var _ platform.Upstream = (*Console)(nil)

// Build implements [platform.Upstream.Build]: POST to the account's base_url (with /v1/messages
// appended unless it ends with it; /v1/messages/count_tokens for token counts) plus the client's
// query. A key starting with "sk-ant-" goes in x-api-key, any other as authorization: Bearer. The
// User-Agent is the account's, else the client's, else DefaultUserAgent.
func (c Console) Build(acct *crsv1.Account, req *platform.Request, out *fasthttp.Request) (string, error) {
	key := acct.GetApiKey().GetApiKey()
	if key == "" {
		return "", fmt.Errorf("build claude-console request: %w", ErrNoCredential)
	}
	base := strings.TrimRight(acct.GetBaseUrl(), "/")
	if base == "" {
		return "", fmt.Errorf("build claude-console request: %w", ErrNoBaseURL)
	}
	base = strings.TrimSuffix(base, pathMessages)
	model, body := mapModel(acct, req)

	setURI(out, c.URIs, base, opPath(req.Op), req.Query)
	ch := copyHeaders(req, out)
	setCommon(out, ch, or(acct.GetUserAgent(), or(ch.userAgent, DefaultUserAgent)))
	if strings.HasPrefix(key, "sk-ant-") {
		setHeader(&out.Header, nameXAPIKey, key)
	} else {
		setBearer(&out.Header, key)
	}
	if ch.beta != "" {
		setHeader(&out.Header, nameAnthropicBeta, ch.beta)
	}
	out.SetBodyRaw(body)
	return model, nil
}

// Classify implements [platform.Upstream.Classify].
func (Console) Classify(status int, h *fasthttp.ResponseHeader, body []byte, model string) platform.Verdict {
	return classify(status, h, body, model, blockedConsole)
}

// NewUsage implements [platform.Upstream.NewUsage].
func (Console) NewUsage() platform.UsageReader { return &usageReader{} }

var _ platform.BodyUsage = Console{}

// BodyUsage implements [platform.BodyUsage].
func (Console) BodyUsage(body []byte, model string) (platform.Usage, bool) {
	return bodyUsage(body, model)
}

var _ platform.Fallback = Console{}

// Fallback implements [platform.Fallback]: many console providers lack count_tokens and answer 404;
// clients (Claude Code) get {"input_tokens":0} instead of an error (reference §1.3.5, §13.5).
func (Console) Fallback(req *platform.Request, status int) ([]byte, bool) {
	if req.Op == platform.OpCountTokens && status == fasthttp.StatusNotFound {
		return []byte(`{"input_tokens":0}`), true
	}
	return nil, false
}
