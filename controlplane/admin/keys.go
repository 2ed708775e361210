package admin

import (
	"context"
	"strings"

	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/crsrelay/crs/controlplane/secret"
	"github.com/crsrelay/crs/controlplane/store"
	crsv1 "github.com/crsrelay/crs/gen/crs/v1"
	"github.com/crsrelay/crs/internal/keyhash"
)

// Key field values.
var (
	keyPermissions     = []string{"claude", "gemini", "openai", "droid"}
	keyClients         = []string{"claude_code", "gemini_cli", "codex_cli", "droid_cli"}
	expirationModes    = []string{"fixed", "activation"}
	activationUnits    = []string{"days", "hours"}
	keyOutputOnlyPaths = []string{"id", "key_preview", "hash_scheme", "is_activated", "activated_at", "created_at", "updated_at", "last_used_at"}
)

// keyPreviewLen is how many leading characters of a plaintext key the preview shows ("cr_1a2b…").
const keyPreviewLen = 7

// CreateApiKey implements [crsv1.AdminServiceServer.CreateApiKey]. Keys are created active; the
// plaintext is in the response and nowhere else, ever.
func (s *Service) CreateApiKey(ctx context.Context, req *crsv1.CreateApiKeyRequest) (*crsv1.CreateApiKeyResponse, error) {
	resp, err := s.createKey(ctx, req)
	return resp, s.toStatus(ctx, "CreateApiKey", err)
}

func (s *Service) createKey(ctx context.Context, req *crsv1.CreateApiKeyRequest) (*crsv1.CreateApiKeyResponse, error) {
	k := &crsv1.ApiKey{}
	if in := req.GetApiKey(); in != nil {
		k = proto.Clone(in).(*crsv1.ApiKey)
	}
	clearKeyOutputOnly(k)
	// proto3 cannot tell an omitted is_active from false: a new key is always active.
	k.IsActive = true
	if err := s.checkKey(ctx, k); err != nil {
		return nil, err
	}
	id, err := newID()
	if err != nil {
		return nil, err
	}
	plain, hash, err := s.newKeySecret()
	if err != nil {
		return nil, err
	}
	now := timestamppb.New(s.now())
	k.Id = id
	k.HashScheme = keyhash.SchemeHMAC
	k.KeyPreview = preview(plain)
	k.CreatedAt, k.UpdatedAt = now, now
	if k.ExpirationMode == "fixed" {
		k.IsActivated, k.ActivatedAt = true, now
	}
	if err := s.store.CreateKey(ctx, &store.Key{Key: k, Hash: hash}); err != nil {
		return nil, about(kindKey, id, err)
	}
	s.log.Info("api key created", zap.String("key_id", id))
	return &crsv1.CreateApiKeyResponse{ApiKey: k, Key: plain}, nil
}

// GetApiKey implements [crsv1.AdminServiceServer.GetApiKey].
func (s *Service) GetApiKey(ctx context.Context, req *crsv1.GetApiKeyRequest) (*crsv1.ApiKey, error) {
	k, err := s.loadKey(ctx, req.GetId())
	if err != nil {
		return nil, s.toStatus(ctx, "GetApiKey", err)
	}
	return k.Key, nil
}

// ListApiKeys implements [crsv1.AdminServiceServer.ListApiKeys].
func (s *Service) ListApiKeys(ctx context.Context, req *crsv1.ListApiKeysRequest) (*crsv1.ListApiKeysResponse, error) {
	resp, err := s.listKeys(ctx, req)
	return resp, s.toStatus(ctx, "ListApiKeys", err)
}

func (s *Service) listKeys(ctx context.Context, req *crsv1.ListApiKeysRequest) (*crsv1.ListApiKeysResponse, error) {
	var c checker
	if req.GetState() != "" {
		c.oneOf("state", req.GetState(), "active", "inactive")
	}
	c.length("search", req.GetSearch(), 0, maxName)
	c.length("tag", req.GetTag(), 0, maxTagLen)
	if err := c.err(); err != nil {
		return nil, err
	}
	all, err := s.store.ListKeys(ctx)
	if err != nil {
		return nil, err
	}
	search := strings.ToLower(req.GetSearch())
	var keep []*crsv1.ApiKey
	for _, k := range all {
		switch {
		case req.GetTag() != "" && !contains(k.Key.GetTags(), req.GetTag()):
		case search != "" && !strings.Contains(strings.ToLower(k.Key.GetName()), search):
		case req.GetState() == "active" && !k.Key.GetIsActive():
		case req.GetState() == "inactive" && k.Key.GetIsActive():
		default:
			keep = append(keep, k.Key)
		}
	}
	start, end, next, err := page(req.GetPageSize(), req.GetPageToken(), len(keep))
	if err != nil {
		return nil, err
	}
	return &crsv1.ListApiKeysResponse{ApiKeys: keep[start:end], NextPageToken: next, TotalSize: int32(len(keep))}, nil
}

// UpdateApiKey implements [crsv1.AdminServiceServer.UpdateApiKey]: the fields in update_mask are
// replaced (over REST: the fields present in the body).
func (s *Service) UpdateApiKey(ctx context.Context, req *crsv1.UpdateApiKeyRequest) (*crsv1.ApiKey, error) {
	k, err := s.updateKey(ctx, req)
	return k, s.toStatus(ctx, "UpdateApiKey", err)
}

func (s *Service) updateKey(ctx context.Context, req *crsv1.UpdateApiKeyRequest) (*crsv1.ApiKey, error) {
	cur, err := s.loadKey(ctx, req.GetId())
	if err != nil {
		return nil, err
	}
	next := proto.Clone(cur.Key).(*crsv1.ApiKey)
	patch := req.GetApiKey()
	if patch == nil {
		patch = &crsv1.ApiKey{}
	}
	paths, err := applyMask(next, patch, req.GetUpdateMask(), maskRules{outputOnly: keyOutputOnlyPaths})
	if err != nil {
		return nil, err
	}
	if err := s.checkKey(ctx, next); err != nil {
		return nil, err
	}
	now := timestamppb.New(s.now())
	if masked(paths, "expiration_mode") && next.ExpirationMode == "fixed" && !next.IsActivated {
		next.IsActivated, next.ActivatedAt = true, now
	}
	next.UpdatedAt = now
	if err := s.store.UpdateKey(ctx, &store.Key{Key: next, Hash: cur.Hash}); err != nil {
		return nil, about(kindKey, next.Id, err)
	}
	return next, nil
}

// DeleteApiKey implements [crsv1.AdminServiceServer.DeleteApiKey]. The key stops working at once;
// its usage aggregates stay.
func (s *Service) DeleteApiKey(ctx context.Context, req *crsv1.DeleteApiKeyRequest) (*emptypb.Empty, error) {
	err := s.deleteKey(ctx, req.GetId())
	if err != nil {
		return nil, s.toStatus(ctx, "DeleteApiKey", err)
	}
	return &emptypb.Empty{}, nil
}

func (s *Service) deleteKey(ctx context.Context, id string) error {
	if id == "" {
		return invalid("id", "required")
	}
	if err := s.store.DeleteKey(ctx, id); err != nil {
		return about(kindKey, id, err)
	}
	s.log.Info("api key deleted", zap.String("key_id", id))
	return nil
}

// RegenerateApiKey implements [crsv1.AdminServiceServer.RegenerateApiKey]: a new plaintext (shown
// once) under the same id; the old plaintext stops working at once.
func (s *Service) RegenerateApiKey(ctx context.Context, req *crsv1.RegenerateApiKeyRequest) (*crsv1.CreateApiKeyResponse, error) {
	resp, err := s.regenerateKey(ctx, req.GetId())
	return resp, s.toStatus(ctx, "RegenerateApiKey", err)
}

func (s *Service) regenerateKey(ctx context.Context, id string) (*crsv1.CreateApiKeyResponse, error) {
	cur, err := s.loadKey(ctx, id)
	if err != nil {
		return nil, err
	}
	plain, hash, err := s.newKeySecret()
	if err != nil {
		return nil, err
	}
	k := proto.Clone(cur.Key).(*crsv1.ApiKey)
	k.HashScheme = keyhash.SchemeHMAC
	k.KeyPreview = preview(plain)
	k.UpdatedAt = timestamppb.New(s.now())
	if err := s.store.UpdateKey(ctx, &store.Key{Key: k, Hash: hash}); err != nil {
		return nil, about(kindKey, id, err)
	}
	s.log.Info("api key regenerated", zap.String("key_id", id))
	return &crsv1.CreateApiKeyResponse{ApiKey: k, Key: plain}, nil
}

// loadKey returns a key by id; the caller may modify what it gets only after cloning.
func (s *Service) loadKey(ctx context.Context, id string) (*store.Key, error) {
	if id == "" {
		return nil, invalid("id", "required")
	}
	k, err := s.store.GetKey(ctx, id)
	if err != nil {
		return nil, about(kindKey, id, err)
	}
	return k, nil
}

func (s *Service) newKeySecret() (plain, hash string, err error) {
	plain, err = secret.NewAPIKey()
	if err != nil {
		return "", "", err
	}
	return plain, keyhash.HMAC(s.hmac, []byte(plain)), nil
}

func preview(plain string) string {
	return plain[:keyPreviewLen] + "…"
}

func clearKeyOutputOnly(k *crsv1.ApiKey) {
	k.Id, k.KeyPreview, k.HashScheme = "", "", ""
	k.IsActivated, k.ActivatedAt = false, nil
	k.CreatedAt, k.UpdatedAt, k.LastUsedAt = nil, nil, nil
}

// checkKey fills defaults into k and validates it, including that dedicated account and group
// references exist and fit the field they are in.
func (s *Service) checkKey(ctx context.Context, k *crsv1.ApiKey) error {
	if k.ExpirationMode == "" {
		k.ExpirationMode = "fixed"
	}
	if k.ActivationUnit == "" {
		k.ActivationUnit = "days"
	}
	if k.WeeklyResetDay == 0 {
		k.WeeklyResetDay = 1
	}
	if k.CreatedBy == "" {
		k.CreatedBy = "admin"
	}

	var c checker
	c.length("name", k.Name, 1, maxName)
	c.length("description", k.Description, 0, maxDescription)
	c.oneOf("expiration_mode", k.ExpirationMode, expirationModes...)
	c.oneOf("activation_unit", k.ActivationUnit, activationUnits...)
	if k.ExpiresAt != nil && k.ExpiresAt.CheckValid() != nil {
		c.add("expires_at", "invalid timestamp")
	}
	c.nonNegative("activation_days", int64(k.ActivationDays), 36500)
	c.nonNegative("concurrency_limit", int64(k.ConcurrencyLimit), 100000)
	c.nonNegative("rate_limit_window", int64(k.RateLimitWindow), 525600)
	c.nonNegative("rate_limit_requests", int64(k.RateLimitRequests), 1<<30)
	c.nonNegative("token_limit", k.TokenLimit, 1<<62)
	c.money("rate_limit_cost", k.RateLimitCost)
	c.money("daily_cost_limit", k.DailyCostLimit)
	c.money("total_cost_limit", k.TotalCostLimit)
	c.money("weekly_opus_cost_limit", k.WeeklyOpusCostLimit)
	if k.WeeklyResetDay < 1 || k.WeeklyResetDay > 7 {
		c.add("weekly_reset_day", "must be 1 (Monday) to 7 (Sunday)")
	}
	if k.WeeklyResetHour < 0 || k.WeeklyResetHour > 23 {
		c.add("weekly_reset_hour", "must be 0-23")
	}
	c.stringList("permissions", k.Permissions, len(keyPermissions), maxItemLen, keyPermissions...)
	c.stringList("restricted_models", k.RestrictedModels, maxListLen, maxItemLen)
	c.stringList("allowed_clients", k.AllowedClients, len(keyClients), maxItemLen, keyClients...)
	c.stringList("tags", k.Tags, maxTags, maxTagLen)
	c.rates("service_rates", k.ServiceRates)
	c.length("user_id", k.UserId, 0, maxShortText)
	c.length("user_username", k.UserUsername, 0, maxShortText)
	c.length("created_by", k.CreatedBy, 0, maxShortText)
	if err := c.err(); err != nil {
		return err
	}
	return s.checkBindings(ctx, k)
}

// binding describes one dedicated-account field of a key: which account types a plain id may
// name, which prefixes ("api:", "responses:") select other types, and which group platform
// "group:<id>" must have ("" = groups not allowed).
type binding struct {
	field    string
	value    string
	types    []string
	prefixed map[string][]string
	group    string
}

func (s *Service) checkBindings(ctx context.Context, k *crsv1.ApiKey) error {
	bindings := []binding{
		{field: "claude_account_id", value: k.ClaudeAccountId, types: []string{"claude-official"}, group: "claude"},
		{field: "claude_console_account_id", value: k.ClaudeConsoleAccountId, types: []string{"claude-console"}},
		{field: "gemini_account_id", value: k.GeminiAccountId, types: []string{"gemini"}, prefixed: map[string][]string{"api:": {"gemini-api"}}, group: "gemini"},
		{field: "openai_account_id", value: k.OpenaiAccountId, types: []string{"openai"}, prefixed: map[string][]string{"responses:": {"openai-responses"}}, group: "openai"},
		{field: "azure_openai_account_id", value: k.AzureOpenaiAccountId, types: []string{"azure-openai"}},
		{field: "bedrock_account_id", value: k.BedrockAccountId, types: []string{"bedrock"}},
		{field: "droid_account_id", value: k.DroidAccountId, types: []string{"droid"}, group: "droid"},
	}
	var c checker
	for _, b := range bindings {
		if b.value == "" {
			continue
		}
		if len(b.value) > maxItemLen {
			c.add(b.field, "must be at most %d characters", maxItemLen)
			continue
		}
		if gid, ok := strings.CutPrefix(b.value, "group:"); ok {
			if b.group == "" {
				c.add(b.field, "cannot name a group")
				continue
			}
			g, err := s.store.GetGroup(ctx, gid)
			switch {
			case isNotFound(err):
				c.add(b.field, "group %s not found", gid)
			case err != nil:
				return about(kindGroup, gid, err)
			case g.GetPlatform() != b.group:
				c.add(b.field, "group %s is a %s group, want %s", gid, g.GetPlatform(), b.group)
			}
			continue
		}
		id, types := b.value, b.types
		for prefix, t := range b.prefixed {
			if rest, ok := strings.CutPrefix(b.value, prefix); ok {
				id, types = rest, t
			}
		}
		a, err := s.store.GetAccount(ctx, id)
		switch {
		case isNotFound(err):
			c.add(b.field, "account %s not found", id)
		case err != nil:
			return about(kindAccount, id, err)
		case !contains(types, a.Account.GetType()):
			c.add(b.field, "account %s is of type %s, want %s", id, a.Account.GetType(), strings.Join(types, " or "))
		}
	}
	return c.err()
}
