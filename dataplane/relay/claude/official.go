package claude

import (
	"bytes"
	"fmt"
	"strings"

	"github.com/crsrelay/crs/dataplane/relay/platform"
	crsv1 "github.com/crsrelay/crs/gen/crs/v1"
	"github.com/valyala/fasthttp"
)

// Official is the upstream of claude-official accounts: OAuth access tokens against the Anthropic
// API (reference §1.3.1). It keeps no per-request state and is safe for concurrent use.
type Official struct {
	// BaseURL is used for accounts without base_url; DefaultBaseURL if empty.
	BaseURL string
	// URIs caches parsed upstream URIs; nil parses them on every request.
	URIs *URICache
}

var _ platform.Upstream = (*Official)(nil)

// Anthropic betas an OAuth token needs, sent before the client's own (reference §1.3.1 step 5).
const (
	betasHaiku   = "oauth-2025-04-20,interleaved-thinking-2025-05-14"
	betasDefault = "claude-code-20250219,oauth-2025-04-20,interleaved-thinking-2025-05-14,fine-grained-tool-streaming-2025-05-14"
)

// Build implements [platform.Upstream.Build]: POST <base>/v1/messages (or /v1/messages/count_tokens)
// with the client's query, authorization: Bearer <access token>, the OAuth betas merged with the
// client's, and the client's body (model-mapped copy if the account maps the model).
func (o *Official) Build(acct *crsv1.Account, req *platform.Request, out *fasthttp.Request) (string, error) {
	token := acct.GetOauth().GetAccessToken()
	if token == "" {
		return "", fmt.Errorf("build claude-official request: %w", ErrNoCredential)
	}
	base := strings.TrimRight(or(acct.GetBaseUrl(), or(o.BaseURL, DefaultBaseURL)), "/")
	model, body := mapModel(acct, req)

	setURI(out, o.URIs, base, opPath(req.Op), req.Query)
	ch := copyHeaders(req, out)
	setCommon(out, ch, or(ch.userAgent, DefaultUserAgent))
	setBearer(&out.Header, token)
	betas := betasDefault
	if strings.Contains(lower(model), "haiku") {
		betas = betasHaiku
	}
	var buf [512]byte // the merged list is written here, so that it costs no allocation
	out.Header.SetCanonical(nameAnthropicBeta, appendMergedBetas(buf[:0], betas, ch.beta))
	out.SetBodyRaw(body)
	return model, nil
}

// Classify implements [platform.Upstream.Classify].
func (o *Official) Classify(status int, h *fasthttp.ResponseHeader, body []byte, model string) platform.Verdict {
	return classify(status, h, body, model, blockedOfficial)
}

// NewUsage implements [platform.Upstream.NewUsage].
func (o *Official) NewUsage() platform.UsageReader { return &usageReader{} }

var _ platform.BodyUsage = (*Official)(nil)

// BodyUsage implements [platform.BodyUsage].
func (o *Official) BodyUsage(body []byte, model string) (platform.Usage, bool) {
	return bodyUsage(body, model)
}

// appendMergedBetas appends base followed by the client's betas that base lacks, each once, in
// order, to dst.
func appendMergedBetas(dst []byte, base, client string) []byte {
	start := len(dst)
	dst = append(dst, base...)
	for rest := client; rest != ""; {
		var v string
		v, rest, _ = strings.Cut(rest, ",")
		v = strings.TrimSpace(v)
		if v == "" || hasItem(dst[start:], v) {
			continue
		}
		dst = append(dst, ',')
		dst = append(dst, v...)
	}
	return dst
}

// hasItem reports whether the comma-separated list holds v as one of its items.
func hasItem(list []byte, v string) bool {
	for len(list) > 0 {
		item := list
		if i := bytes.IndexByte(list, ','); i >= 0 {
			item, list = list[:i], list[i+1:]
		} else {
			list = nil
		}
		if string(item) == v {
			return true
		}
	}
	return false
}
