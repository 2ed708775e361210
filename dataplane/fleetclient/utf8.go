package fleetclient

import (
	"strings"
	"unicode/utf8"

	crsv1 "github.com/crsrelay/crs/gen/crs/v1"
)

// Protobuf refuses to marshal a string field that is not valid UTF-8, and a batch that cannot be
// marshalled would be resent, and refused, forever: one client sending a raw byte in its
// anthropic-beta header or model name would stop all usage reporting of the worker. Records and
// events are therefore repaired when they are queued: invalid bytes become U+FFFD.

// repairRecord makes r's strings that can carry a client's or an upstream's bytes valid UTF-8.
// The others are ids the worker made or read from the snapshot (protobuf, so valid already); they
// are not checked, which spares four scans per request.
func repairRecord(r *crsv1.UsageRecord) {
	fix(&r.Model)
	fix(&r.Endpoint)
	fix(&r.AnthropicBeta)
	fix(&r.Speed)
}

// repairEvent makes e's strings valid UTF-8 (reason quotes upstream error bodies).
func repairEvent(e *crsv1.AccountEvent) {
	fix(&e.AccountId)
	fix(&e.Kind)
	fix(&e.ModelFamily)
	fix(&e.Reason)
	fix(&e.RequestId)
}

func fix(s *string) {
	if !utf8.ValidString(*s) {
		*s = strings.ToValidUTF8(*s, "\uFFFD")
	}
}
