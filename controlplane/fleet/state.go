package fleet

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"sort"
	"time"

	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/crsrelay/crs/controlplane/store"
	crsv1 "github.com/crsrelay/crs/gen/crs/v1"
	"github.com/crsrelay/crs/internal/period"
)

// cache is what workers are served. Its messages are never mutated once stored: a change
// replaces the pointer, so snapshots and deltas may share them with streams being sent.
type cache struct {
	keys     map[string]*crsv1.WorkerKey // by key id
	accounts map[string]*crsv1.Account
	groups   map[string]*crsv1.AccountGroup
	settings *crsv1.Settings
	hashing  *crsv1.KeyHashing
	usage    map[string]*crsv1.KeyUsageState // by key id; only keys with a cost or window limit
}

// patch is a set of fresh reads to apply to the cache. A nil map value deletes the id.
type patch struct {
	keys     map[string]*crsv1.WorkerKey
	accounts map[string]*crsv1.Account
	groups   map[string]*crsv1.AccountGroup
	settings *crsv1.Settings // nil = unchanged
	usage    map[string]*crsv1.KeyUsageState
}

func newPatch() *patch {
	return &patch{
		keys:     map[string]*crsv1.WorkerKey{},
		accounts: map[string]*crsv1.Account{},
		groups:   map[string]*crsv1.AccountGroup{},
		usage:    map[string]*crsv1.KeyUsageState{},
	}
}

// hasCostLimit reports whether a key has a daily, total or weekly cost limit.
func hasCostLimit(k *crsv1.ApiKey) bool {
	return k.GetDailyCostLimit() > 0 || k.GetTotalCostLimit() > 0 || k.GetWeeklyOpusCostLimit() > 0
}

// hasUsageLimit reports whether a key's usage state must be pushed for limit checks: keys with
// neither a cost limit nor a fixed window cost nothing here.
func hasUsageLimit(k *crsv1.ApiKey) bool {
	return hasCostLimit(k) || hasWindowLimit(k)
}

// defaultSettings are pushed until an admin saves settings.
func defaultSettings() *crsv1.Settings {
	return &crsv1.Settings{StickySessionTtl: durationpb.New(DefaultStickyTTL)}
}

// withDefaults returns s, or a copy with unset defaults filled in.
func withDefaults(s *crsv1.Settings) *crsv1.Settings {
	if s.GetStickySessionTtl().AsDuration() > 0 {
		return s
	}
	c := proto.Clone(s).(*crsv1.Settings)
	c.StickySessionTtl = durationpb.New(DefaultStickyTTL)
	return c
}

// loadHashing returns the key hashing secrets, creating the HMAC secret if absent.
func (s *Service) loadHashing(ctx context.Context) (*crsv1.KeyHashing, error) {
	fresh := make([]byte, 32)
	if _, err := rand.Read(fresh); err != nil {
		return nil, fmt.Errorf("generate hmac secret: %w", err)
	}
	secret, err := s.st.PutSecretIfAbsent(ctx, HMACSecretName, fresh)
	if err != nil {
		return nil, fmt.Errorf("load hmac secret: %w", err)
	}
	return &crsv1.KeyHashing{HmacSecret: secret, LegacySecret: s.legacy}, nil
}

// loadAll reads the whole state from the store.
func (s *Service) loadAll(ctx context.Context, hashing *crsv1.KeyHashing) (*cache, error) {
	c := &cache{
		keys:     map[string]*crsv1.WorkerKey{},
		accounts: map[string]*crsv1.Account{},
		groups:   map[string]*crsv1.AccountGroup{},
		usage:    map[string]*crsv1.KeyUsageState{},
		hashing:  hashing,
	}
	keys, err := s.st.ListKeys(ctx)
	if err != nil {
		return nil, fmt.Errorf("list keys: %w", err)
	}
	now := s.now()
	for _, k := range keys {
		id := k.Key.GetId()
		c.keys[id] = &crsv1.WorkerKey{Hash: k.Hash, Key: k.Key}
		if hasUsageLimit(k.Key) {
			u, err := s.keyUsage(ctx, k.Key, now)
			if err != nil {
				return nil, err
			}
			c.usage[id] = u
		}
	}
	accounts, err := s.st.ListAccounts(ctx)
	if err != nil {
		return nil, fmt.Errorf("list accounts: %w", err)
	}
	for _, a := range accounts {
		c.accounts[a.Account.GetId()] = s.openAccount(a)
	}
	groups, err := s.st.ListGroups(ctx)
	if err != nil {
		return nil, fmt.Errorf("list groups: %w", err)
	}
	for _, g := range groups {
		c.groups[g.GetId()] = g
	}
	c.settings, err = s.loadSettings(ctx)
	if err != nil {
		return nil, err
	}
	return c, nil
}

func (s *Service) loadSettings(ctx context.Context) (*crsv1.Settings, error) {
	st, err := s.st.GetSettings(ctx)
	if errors.Is(err, store.ErrNotFound) {
		return defaultSettings(), nil
	}
	if err != nil {
		return nil, fmt.Errorf("get settings: %w", err)
	}
	return withDefaults(st), nil
}

// keyUsage reads what a key's limits need: its spend for the current day and week (when it has
// a cost limit) and its running fixed window (when it has one; unset window_start = none runs).
func (s *Service) keyUsage(ctx context.Context, k *crsv1.ApiKey, now time.Time) (*crsv1.KeyUsageState, error) {
	u := &crsv1.KeyUsageState{KeyId: k.GetId()}
	if hasCostLimit(k) {
		l := period.Of(now, period.Zone(s.tz), int(k.GetWeeklyResetDay()), int(k.GetWeeklyResetHour()))
		sp, err := s.st.KeySpend(ctx, k.GetId(), l.Day, l.Week)
		if err != nil {
			return nil, fmt.Errorf("key spend %s: %w", k.GetId(), err)
		}
		u.DailyCost, u.Day = sp.DailyCost, l.Day
		u.TotalCost = sp.TotalCost
		u.WeeklyOpusCost, u.Week = sp.WeeklyOpusCost, l.Week
	}
	if hasWindowLimit(k) && s.limits != nil {
		w, err := s.limits.GetWindow(ctx, k.GetId(), windowOf(k), now)
		if err != nil {
			return nil, fmt.Errorf("key window %s: %w", k.GetId(), err)
		}
		if !w.Start.IsZero() {
			u.WindowStart = timestamppb.New(w.Start)
			u.WindowRequests, u.WindowTokens, u.WindowCost = w.Requests, w.Tokens, w.Cost
		}
	}
	return u, nil
}

// openAccount returns the account workers get: credentials opened, or, when they do not open,
// the public part in state "error" so that no worker schedules it.
func (s *Service) openAccount(a *store.Account) *crsv1.Account {
	if s.open == nil {
		return a.Account
	}
	opened, err := s.open(a)
	if err == nil {
		if opened.GetStatus() == nil && a.Account.GetStatus() != nil {
			opened.Status = a.Account.GetStatus()
		}
		// Workers need the credential generation to report which token they used (refresh).
		if o := opened.GetOauth(); o != nil {
			o.Generation = a.Generation
		}
		s.openFailed.Delete(a.Account.GetId())
		return opened
	}
	if prev, ok := s.openFailed.Load(a.Account.GetId()); !ok || prev.(int64) != a.Generation {
		s.openFailed.Store(a.Account.GetId(), a.Generation)
		s.log.Error("account credentials do not open; pushed as state error",
			zap.String("account_id", a.Account.GetId()), zap.Error(err))
	}
	c := proto.Clone(a.Account).(*crsv1.Account)
	c.Credentials = nil
	c.Status = &crsv1.AccountStatus{
		State:  StateError,
		Reason: "credentials cannot be opened by the control plane (wrong encryption key?)",
	}
	return c
}

// fullPatch turns a freshly loaded cache into a patch against the current one: everything in
// fresh, and deletions of what it lacks.
func fullPatch(cur, fresh *cache) *patch {
	p := newPatch()
	for id, v := range fresh.keys {
		p.keys[id] = v
	}
	for id := range cur.keys {
		if _, ok := fresh.keys[id]; !ok {
			p.keys[id] = nil
		}
	}
	for id, v := range fresh.accounts {
		p.accounts[id] = v
	}
	for id := range cur.accounts {
		if _, ok := fresh.accounts[id]; !ok {
			p.accounts[id] = nil
		}
	}
	for id, v := range fresh.groups {
		p.groups[id] = v
	}
	for id := range cur.groups {
		if _, ok := fresh.groups[id]; !ok {
			p.groups[id] = nil
		}
	}
	for id, v := range fresh.usage {
		p.usage[id] = v
	}
	p.settings = fresh.settings
	return p
}

// apply applies p to the cache and broadcasts what actually changed as one delta. It returns the
// delta (nil when nothing changed). Only the applier goroutine calls it.
func (s *Service) apply(p *patch) *crsv1.SyncMessage {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.cache
	d := &crsv1.Delta{}

	for _, id := range sortedIDs(p.keys) {
		v := p.keys[id]
		old, had := c.keys[id]
		switch {
		case v == nil && had:
			delete(c.keys, id)
			delete(c.usage, id)
			d.DeleteKeyIds = append(d.DeleteKeyIds, id)
		case v != nil && (!had || !proto.Equal(old, v)):
			c.keys[id] = v
			d.UpsertKeys = append(d.UpsertKeys, v)
		}
		if v != nil && !hasUsageLimit(v.GetKey()) {
			delete(c.usage, id)
		}
	}
	for _, id := range sortedIDs(p.accounts) {
		v := p.accounts[id]
		old, had := c.accounts[id]
		switch {
		case v == nil && had:
			delete(c.accounts, id)
			d.DeleteAccountIds = append(d.DeleteAccountIds, id)
		case v != nil && (!had || !proto.Equal(old, v)):
			c.accounts[id] = v
			d.UpsertAccounts = append(d.UpsertAccounts, v)
		}
	}
	for _, id := range sortedIDs(p.groups) {
		v := p.groups[id]
		old, had := c.groups[id]
		switch {
		case v == nil && had:
			delete(c.groups, id)
			d.DeleteGroupIds = append(d.DeleteGroupIds, id)
		case v != nil && (!had || !proto.Equal(old, v)):
			c.groups[id] = v
			d.UpsertGroups = append(d.UpsertGroups, v)
		}
	}
	if p.settings != nil && !proto.Equal(c.settings, p.settings) {
		c.settings = p.settings
		d.Settings = p.settings
	}
	for _, id := range sortedIDs(p.usage) {
		v := p.usage[id]
		k, ok := c.keys[id]
		if v == nil || !ok || !hasUsageLimit(k.GetKey()) {
			continue // the key is gone or has no usage limit: nothing to push
		}
		if old, had := c.usage[id]; !had || !proto.Equal(old, v) {
			c.usage[id] = v
			d.KeyUsage = append(d.KeyUsage, v)
		}
	}

	if proto.Size(d) == 0 {
		return nil
	}
	d.BaseVersion = s.version
	s.version++
	msg := &crsv1.SyncMessage{Version: s.version, Body: &crsv1.SyncMessage_Delta{Delta: d}}
	s.broadcastLocked(msg)
	return msg
}

// snapshotLocked builds a snapshot of the cache at the current version. s.mu must be held.
func (s *Service) snapshotLocked() *crsv1.SyncMessage {
	c := s.cache
	snap := &crsv1.Snapshot{
		Keys:     make([]*crsv1.WorkerKey, 0, len(c.keys)),
		Accounts: make([]*crsv1.Account, 0, len(c.accounts)),
		Groups:   make([]*crsv1.AccountGroup, 0, len(c.groups)),
		Settings: c.settings,
		Hashing:  c.hashing,
		KeyUsage: make([]*crsv1.KeyUsageState, 0, len(c.usage)),
		// Workers judge daily and weekly caps in the zone spend is labelled in.
		TimezoneOffsetHours: proto.Int32(int32(s.tz)),
	}
	for _, id := range sortedIDs(c.keys) {
		snap.Keys = append(snap.Keys, c.keys[id])
	}
	for _, id := range sortedIDs(c.accounts) {
		snap.Accounts = append(snap.Accounts, c.accounts[id])
	}
	for _, id := range sortedIDs(c.groups) {
		snap.Groups = append(snap.Groups, c.groups[id])
	}
	for _, id := range sortedIDs(c.usage) {
		snap.KeyUsage = append(snap.KeyUsage, c.usage[id])
	}
	return &crsv1.SyncMessage{Version: s.version, Body: &crsv1.SyncMessage_Snapshot{Snapshot: snap}}
}

func sortedIDs[V any](m map[string]V) []string {
	ids := make([]string, 0, len(m))
	for id := range m {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}

// Read helpers for the request handlers; they return cached (immutable) messages.

func (s *Service) cachedKey(id string) *crsv1.ApiKey {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.cache.keys[id].GetKey()
}

func (s *Service) cachedAccount(id string) *crsv1.Account {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.cache.accounts[id]
}

func (s *Service) cachedSettings() *crsv1.Settings {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.cache.settings
}
