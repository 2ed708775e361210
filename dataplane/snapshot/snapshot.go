// Package snapshot holds the state a worker serves from: what the control plane pushed over
// FleetService.Sync (keys by hash, accounts, groups, settings, key hashing secrets, key spending).
// A State is immutable once built; a new State is built per Sync message and swapped in atomically
// (Holder), so request goroutines read it without locks. Lookups on the hot path do not allocate.
//
// It depends on gen/crs/v1 only: no gRPC, no HTTP, no control-plane code.
package snapshot

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	crsv1 "github.com/crsrelay/crs/gen/crs/v1"
)

// Sentinel errors of Apply.
var (
	// ErrGap means a delta does not apply to the current state (its base version is not the current
	// version, or there is no state yet). The Sync client reconnects and gets a fresh snapshot.
	ErrGap = errors.New("snapshot: version gap")
	// ErrEmptyMessage means a Sync message carried neither a snapshot nor a delta.
	ErrEmptyMessage = errors.New("snapshot: sync message without body")
)

// Account types the worker schedules Claude requests on (ApiKey/Account.type values).
const (
	TypeClaudeOfficial = "claude-official"
	TypeClaudeConsole  = "claude-console"
)

// State is one immutable version of the pushed state. Every method is safe for concurrent use.
// The protos it returns are shared with every other reader: callers must not modify them.
type State struct {
	version uint64

	keys        map[string]*crsv1.ApiKey // by lookup hash
	keyHashByID map[string]string        // key id -> lookup hash, to apply deletes and rehashes
	keyUsage    map[string]*crsv1.KeyUsageState

	accounts map[string]*crsv1.Account
	// byType lists the accounts of each type, ordered by id, rebuilt when accounts change.
	byType map[string][]*crsv1.Account
	all    []*crsv1.Account

	groups map[string]*crsv1.AccountGroup

	settings     *crsv1.Settings
	hmacSecret   []byte
	legacySecret string
	// zone is the control plane's usage time zone (Snapshot.timezone_offset_hours); nil when the
	// control plane did not say.
	zone *time.Location
}

// emptySettings is returned by Settings when none were pushed; it is never modified.
var emptySettings = &crsv1.Settings{}

// Version is the control plane's version of this state.
func (s *State) Version() uint64 { return s.version }

// KeyByHash returns the key whose lookup hash (hex) is hash, or nil.
func (s *State) KeyByHash(hash string) *crsv1.ApiKey { return s.keys[hash] }

// KeyByHashBytes is KeyByHash for a hash held in a byte slice; it does not allocate.
func (s *State) KeyByHashBytes(hash []byte) *crsv1.ApiKey { return s.keys[string(hash)] }

// KeyCount is the number of keys.
func (s *State) KeyCount() int { return len(s.keys) }

// KeyUsage returns what the control plane knows of a key's spending, or nil.
func (s *State) KeyUsage(keyID string) *crsv1.KeyUsageState { return s.keyUsage[keyID] }

// Account returns the account with this id, or nil.
func (s *State) Account(id string) *crsv1.Account { return s.accounts[id] }

// AccountsOfType returns the accounts of one type (claude-official, claude-console, ...), ordered by
// id. The slice is shared: do not modify it.
func (s *State) AccountsOfType(typ string) []*crsv1.Account { return s.byType[typ] }

// Accounts returns every account, ordered by id. The slice is shared: do not modify it.
func (s *State) Accounts() []*crsv1.Account { return s.all }

// Group returns the account group with this id, or nil.
func (s *State) Group(id string) *crsv1.AccountGroup { return s.groups[id] }

// Settings returns the runtime settings; never nil.
func (s *State) Settings() *crsv1.Settings {
	if s.settings == nil {
		return emptySettings
	}
	return s.settings
}

// HMACSecret is the secret of keyhash.SchemeHMAC. The slice is shared: do not modify it.
func (s *State) HMACSecret() []byte { return s.hmacSecret }

// Zone is the fixed zone the control plane counts usage days and weeks in, or nil when the
// snapshot did not carry one.
func (s *State) Zone() *time.Location {
	if s == nil {
		return nil
	}
	return s.zone
}

// LegacySecret is the secret of keyhash.SchemeLegacy; empty when no key was imported.
func (s *State) LegacySecret() string { return s.legacySecret }

// AccountActive reports whether an account's status lets it serve at now: its state is active (or
// unset), or its state has an end time that has passed. Rate limits per model family and the
// schedulable switch are separate (see package sched).
func AccountActive(a *crsv1.Account, now time.Time) bool {
	st := a.GetStatus()
	switch st.GetState() {
	case "", "active":
		return true
	}
	if u := st.GetUntil(); u != nil && !u.AsTime().After(now) {
		return true
	}
	return false
}

// Apply returns the state that msg produces from cur (nil before the first snapshot). A snapshot
// replaces everything; a delta must have base_version == cur.Version(), otherwise ErrGap. cur is
// never modified.
func Apply(cur *State, msg *crsv1.SyncMessage) (*State, error) {
	switch body := msg.GetBody().(type) {
	case *crsv1.SyncMessage_Snapshot:
		return fromSnapshot(msg.GetVersion(), body.Snapshot), nil
	case *crsv1.SyncMessage_Delta:
		if cur == nil {
			return nil, fmt.Errorf("delta %d -> %d without a snapshot: %w",
				body.Delta.GetBaseVersion(), msg.GetVersion(), ErrGap)
		}
		if body.Delta.GetBaseVersion() != cur.version {
			return nil, fmt.Errorf("delta %d -> %d on version %d: %w",
				body.Delta.GetBaseVersion(), msg.GetVersion(), cur.version, ErrGap)
		}
		return cur.withDelta(msg.GetVersion(), body.Delta), nil
	default:
		return nil, fmt.Errorf("version %d: %w", msg.GetVersion(), ErrEmptyMessage)
	}
}

func fromSnapshot(version uint64, snap *crsv1.Snapshot) *State {
	s := &State{
		version:      version,
		keys:         make(map[string]*crsv1.ApiKey, len(snap.GetKeys())),
		keyHashByID:  make(map[string]string, len(snap.GetKeys())),
		keyUsage:     make(map[string]*crsv1.KeyUsageState, len(snap.GetKeyUsage())),
		accounts:     make(map[string]*crsv1.Account, len(snap.GetAccounts())),
		groups:       make(map[string]*crsv1.AccountGroup, len(snap.GetGroups())),
		settings:     snap.GetSettings(),
		hmacSecret:   snap.GetHashing().GetHmacSecret(),
		legacySecret: snap.GetHashing().GetLegacySecret(),
	}
	if snap.TimezoneOffsetHours != nil {
		s.zone = time.FixedZone("", int(snap.GetTimezoneOffsetHours())*3600)
	}
	for _, wk := range snap.GetKeys() {
		s.putKey(wk)
	}
	for _, u := range snap.GetKeyUsage() {
		if u.GetKeyId() != "" {
			s.keyUsage[u.GetKeyId()] = u
		}
	}
	for _, a := range snap.GetAccounts() {
		if a.GetId() != "" {
			s.accounts[a.GetId()] = a
		}
	}
	for _, g := range snap.GetGroups() {
		if g.GetId() != "" {
			s.groups[g.GetId()] = g
		}
	}
	s.indexAccounts()
	return s
}

// putKey adds or replaces a key; a key whose hash changed (regenerated) loses its old hash.
func (s *State) putKey(wk *crsv1.WorkerKey) {
	k := wk.GetKey()
	if wk.GetHash() == "" || k.GetId() == "" {
		return
	}
	if old, ok := s.keyHashByID[k.GetId()]; ok && old != wk.GetHash() {
		delete(s.keys, old)
	}
	s.keys[wk.GetHash()] = k
	s.keyHashByID[k.GetId()] = wk.GetHash()
}

// withDelta copies only the maps the delta touches; the others are shared with s (they are never
// modified after construction).
func (s *State) withDelta(version uint64, d *crsv1.Delta) *State {
	n := *s
	n.version = version

	if len(d.GetUpsertKeys()) > 0 || len(d.GetDeleteKeyIds()) > 0 {
		n.keys = cloneMap(s.keys, len(d.GetUpsertKeys()))
		n.keyHashByID = cloneMap(s.keyHashByID, len(d.GetUpsertKeys()))
		for _, wk := range d.GetUpsertKeys() {
			n.putKey(wk)
		}
		for _, id := range d.GetDeleteKeyIds() {
			if h, ok := n.keyHashByID[id]; ok {
				delete(n.keys, h)
				delete(n.keyHashByID, id)
			}
		}
	}
	if len(d.GetKeyUsage()) > 0 || len(d.GetDeleteKeyIds()) > 0 {
		n.keyUsage = cloneMap(s.keyUsage, len(d.GetKeyUsage()))
		for _, u := range d.GetKeyUsage() {
			if u.GetKeyId() != "" {
				n.keyUsage[u.GetKeyId()] = u
			}
		}
		for _, id := range d.GetDeleteKeyIds() {
			delete(n.keyUsage, id)
		}
	}
	if len(d.GetUpsertAccounts()) > 0 || len(d.GetDeleteAccountIds()) > 0 {
		n.accounts = cloneMap(s.accounts, len(d.GetUpsertAccounts()))
		for _, a := range d.GetUpsertAccounts() {
			if a.GetId() != "" {
				n.accounts[a.GetId()] = a
			}
		}
		for _, id := range d.GetDeleteAccountIds() {
			delete(n.accounts, id)
		}
		n.indexAccounts()
	}
	if len(d.GetUpsertGroups()) > 0 || len(d.GetDeleteGroupIds()) > 0 {
		n.groups = cloneMap(s.groups, len(d.GetUpsertGroups()))
		for _, g := range d.GetUpsertGroups() {
			if g.GetId() != "" {
				n.groups[g.GetId()] = g
			}
		}
		for _, id := range d.GetDeleteGroupIds() {
			delete(n.groups, id)
		}
	}
	if d.GetSettings() != nil {
		n.settings = d.GetSettings()
	}
	return &n
}

func (s *State) indexAccounts() {
	s.all = make([]*crsv1.Account, 0, len(s.accounts))
	for _, a := range s.accounts {
		s.all = append(s.all, a)
	}
	slices.SortFunc(s.all, func(a, b *crsv1.Account) int { return strings.Compare(a.GetId(), b.GetId()) })
	s.byType = make(map[string][]*crsv1.Account)
	for _, a := range s.all {
		s.byType[a.GetType()] = append(s.byType[a.GetType()], a)
	}
}

func cloneMap[V any](m map[string]V, extra int) map[string]V {
	n := make(map[string]V, len(m)+extra)
	for k, v := range m {
		n[k] = v
	}
	return n
}

// Holder holds the current State behind an atomic pointer: any number of readers, one writer
// (the Sync loop). The zero value holds no state.
type Holder struct {
	p atomic.Pointer[State]
}

// Load returns the current state, or nil before the first snapshot.
func (h *Holder) Load() *State { return h.p.Load() }

// Apply applies msg to the current state and swaps the result in. On error the current state is
// kept. It must not be called concurrently with itself.
func (h *Holder) Apply(msg *crsv1.SyncMessage) (*State, error) {
	next, err := Apply(h.p.Load(), msg)
	if err != nil {
		return nil, err
	}
	h.p.Store(next)
	return next, nil
}
