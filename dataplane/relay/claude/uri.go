package claude

import (
	"strings"
	"sync"
	"sync/atomic"

	"github.com/valyala/fasthttp"
)

// URICache holds the parsed upstream URI of each base URL and path, so that Build copies a parsed
// URI into the upstream request instead of fasthttp parsing the URL string on every attempt (which
// the client must do to find the host). Entries are never modified once published. It is safe for
// concurrent use; the zero value is empty and ready, and a nil *URICache parses every time.
type URICache struct {
	mu sync.Mutex // serializes additions
	m  atomic.Pointer[map[uriKey]*fasthttp.URI]
}

type uriKey struct{ base, path string }

// maxCachedURIs bounds the cache; past it the cache starts over (base URLs are few: one per
// account).
const maxCachedURIs = 1024

// get returns the parsed base+path, nil when it is not cached and cannot be: a base that is not an
// http or https URL, or that has a query or fragment (the client's query replaces what follows
// "?", so the string must be parsed whole), or a URL fasthttp refuses.
func (c *URICache) get(base, path string) *fasthttp.URI {
	k := uriKey{base, path}
	if m := c.m.Load(); m != nil {
		if u, ok := (*m)[k]; ok {
			return u
		}
	}
	var u *fasthttp.URI
	if (strings.HasPrefix(base, "http://") || strings.HasPrefix(base, "https://")) && !strings.ContainsAny(base, "?#") {
		u = &fasthttp.URI{}
		if u.Parse(nil, []byte(base+path)) != nil {
			u = nil
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	var next map[uriKey]*fasthttp.URI
	if m := c.m.Load(); m != nil && len(*m) < maxCachedURIs {
		next = make(map[uriKey]*fasthttp.URI, len(*m)+1)
		for k, v := range *m {
			next[k] = v
		}
	} else {
		next = make(map[uriKey]*fasthttp.URI, 1)
	}
	next[k] = u
	c.m.Store(&next)
	return u
}

// setURI sets out's URI to base + path + ("?" + query), from uris when it can: for a query of
// printable ASCII (what clients send; anything else is parsed with the URL, as it always was).
func setURI(out *fasthttp.Request, uris *URICache, base, path string, query []byte) {
	if uris != nil && plainQuery(query) {
		if u := uris.get(base, path); u != nil {
			out.SetURI(u)
			if len(query) > 0 {
				out.URI().SetQueryStringBytes(query)
			}
			return
		}
	}
	var arr [256]byte
	b := append(arr[:0], base...)
	b = append(b, path...)
	if len(query) > 0 {
		b = append(b, '?')
		b = append(b, query...)
	}
	out.SetRequestURIBytes(b)
}

// plainQuery reports whether a query string holds only printable ASCII other than '#'.
func plainQuery(q []byte) bool {
	for _, c := range q {
		if c <= ' ' || c >= 0x7f || c == '#' {
			return false
		}
	}
	return true
}
