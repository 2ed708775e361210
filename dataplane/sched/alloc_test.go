//go:build !race

package sched

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/crsrelay/crs/dataplane/snapshot"
	crsv1 "github.com/crsrelay/crs/gen/crs/v1"
)

// Reading a Claude Code request costs two allocations: the model and the session id, which the
// request keeps. The blocks of short system and content arrays are held without allocating.
func TestParseMessagesAllocations(t *testing.T) {
	body := []byte(`{"model":"claude-sonnet-4-5","system":[{"type":"text","text":"You are Claude Code."},{"type":"text","text":"env","cache_control":{"type":"ephemeral"}}],` +
		`"messages":[{"role":"user","content":[{"type":"text","text":"<system-reminder>"},{"type":"text","text":"hi"}]}],` +
		`"metadata":{"user_id":"user_` + deviceHex + `_account__session_` + sessionID + `"},"stream":true}`)
	m, err := ParseMessages(body)
	require.NoError(t, err)
	require.Equal(t, sessionID, m.SessionHash)
	require.LessOrEqual(t, testing.AllocsPerRun(100, func() { _, _ = ParseMessages(body) }), 2.0)
}

// Scheduling a request of a known session over a small pool allocates the Selection only.
func TestClaudeAllocations(t *testing.T) {
	st := state(t, nil, nil, account("a", snapshot.TypeClaudeOfficial, prio(1)),
		account("b", snapshot.TypeClaudeOfficial), account("c", snapshot.TypeClaudeConsole))
	s := newSched(&fakeBinder{bound: map[string]string{"s": "b"}})
	r := Request{State: st, Key: &crsv1.ApiKey{Id: "k"}, Model: "claude-sonnet-4-5", SessionHash: "s"}
	require.Equal(t, []string{"b", "a", "c"}, ids(s.Claude(context.Background(), r)))
	require.LessOrEqual(t, testing.AllocsPerRun(100, func() { s.Claude(context.Background(), r) }), 1.0)
}
