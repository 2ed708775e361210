package admin

import (
	"encoding/base64"
	"strconv"
)

// Page sizes of List calls.
const (
	defaultPageSize = 50
	maxPageSize     = 500
)

// page returns the [start, end) window of a filtered list of total items and the token of the next
// page ("" on the last). The token is an opaque encoding of the next offset.
func page(size int32, token string, total int) (start, end int, next string, err error) {
	switch {
	case size < 0:
		return 0, 0, "", invalid("page_size", "must not be negative")
	case size == 0:
		size = defaultPageSize
	case size > maxPageSize:
		size = maxPageSize
	}
	if token != "" {
		raw, derr := base64.RawURLEncoding.DecodeString(token)
		n, perr := strconv.Atoi(string(raw))
		if derr != nil || perr != nil || n < 0 {
			return 0, 0, "", invalid("page_token", "invalid; use a next_page_token from a previous response")
		}
		start = n
	}
	start = min(start, total)
	end = min(start+int(size), total)
	if end < total {
		next = base64.RawURLEncoding.EncodeToString([]byte(strconv.Itoa(end)))
	}
	return start, end, next, nil
}
