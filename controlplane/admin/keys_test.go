package admin

import (
	"fmt"
	"math"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	"github.com/crsrelay/crs/controlplane/store"
	crsv1 "github.com/crsrelay/crs/gen/crs/v1"
	"github.com/crsrelay/crs/internal/keyhash"
)

func createKey(t *testing.T, f *fixture, k *crsv1.ApiKey) *crsv1.CreateApiKeyResponse {
	t.Helper()
	resp, err := f.svc.CreateApiKey(f.ctx, &crsv1.CreateApiKeyRequest{ApiKey: k})
	require.NoError(t, err)
	return resp
}

func TestCreateApiKey(t *testing.T) {
	f := newFixture(t)
	resp := createKey(t, f, &crsv1.ApiKey{Name: "alice", Id: "client-chosen", HashScheme: "x", Tags: []string{"team-a"}})
	k := resp.ApiKey

	require.Regexp(t, `^cr_[0-9a-f]{64}$`, resp.Key)
	require.NotEqual(t, "client-chosen", k.Id, "ids are server-assigned")
	require.Regexp(t, `^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`, k.Id)
	require.Equal(t, resp.Key[:7]+"…", k.KeyPreview)
	require.Equal(t, keyhash.SchemeHMAC, k.HashScheme)
	require.True(t, k.IsActive)
	require.Equal(t, "fixed", k.ExpirationMode)
	require.Equal(t, "days", k.ActivationUnit)
	require.Equal(t, int32(1), k.WeeklyResetDay)
	require.Equal(t, "admin", k.CreatedBy)
	require.True(t, k.IsActivated)
	require.Equal(t, testNow, k.CreatedAt.AsTime())

	// Only the HMAC is stored, and it finds the key.
	stored, err := f.store.KeyByHash(f.ctx, keyhash.HMAC(f.hmac, []byte(resp.Key)))
	require.NoError(t, err)
	require.Equal(t, k.Id, stored.Key.Id)
	require.NotContains(t, jsonOf(t, stored.Key)+stored.Hash, resp.Key)

	// The plaintext is never shown again.
	got, err := f.svc.GetApiKey(f.ctx, &crsv1.GetApiKeyRequest{Id: k.Id})
	require.NoError(t, err)
	require.NotContains(t, jsonOf(t, got), resp.Key[3:])
	list, err := f.svc.ListApiKeys(f.ctx, &crsv1.ListApiKeysRequest{})
	require.NoError(t, err)
	require.Len(t, list.ApiKeys, 1)
	require.NotContains(t, jsonOf(t, list), resp.Key[3:])
}

func TestCreateApiKeyActivationMode(t *testing.T) {
	f := newFixture(t)
	k := createKey(t, f, &crsv1.ApiKey{Name: "trial", ExpirationMode: "activation", ActivationDays: 30, IsActivated: true}).ApiKey
	require.False(t, k.IsActivated, "activation keys start unactivated; is_activated is output only")
	require.Nil(t, k.ActivatedAt)
}

func TestCreateApiKeyValidation(t *testing.T) {
	f := newFixture(t)
	official := createAccount(t, f, validAccount("claude-official"))
	console := createAccount(t, f, validAccount("claude-console"))
	geminiGroup, err := f.svc.CreateGroup(f.ctx, &crsv1.CreateGroupRequest{Group: &crsv1.AccountGroup{Name: "g", Platform: "gemini"}})
	require.NoError(t, err)

	tests := []struct {
		name  string
		mod   func(k *crsv1.ApiKey)
		field string
	}{
		{"missing name", func(k *crsv1.ApiKey) { k.Name = "" }, "name: required"},
		{"name too long", func(k *crsv1.ApiKey) { k.Name = strings.Repeat("n", 101) }, "name: must be 1-100 characters"},
		{"name invalid utf8", func(k *crsv1.ApiKey) { k.Name = "\xff" }, "name: must be valid UTF-8"},
		{"description too long", func(k *crsv1.ApiKey) { k.Description = strings.Repeat("d", 501) }, "description:"},
		{"expiration mode", func(k *crsv1.ApiKey) { k.ExpirationMode = "never" }, "expiration_mode: must be one of fixed, activation"},
		{"activation unit", func(k *crsv1.ApiKey) { k.ActivationUnit = "weeks" }, "activation_unit:"},
		{"negative concurrency", func(k *crsv1.ApiKey) { k.ConcurrencyLimit = -1 }, "concurrency_limit:"},
		{"negative tokens", func(k *crsv1.ApiKey) { k.TokenLimit = -5 }, "token_limit:"},
		{"negative daily cost", func(k *crsv1.ApiKey) { k.DailyCostLimit = -0.01 }, "daily_cost_limit:"},
		{"NaN total cost", func(k *crsv1.ApiKey) { k.TotalCostLimit = math.NaN() }, "total_cost_limit:"},
		{"weekly reset day", func(k *crsv1.ApiKey) { k.WeeklyResetDay = 8 }, "weekly_reset_day:"},
		{"weekly reset hour", func(k *crsv1.ApiKey) { k.WeeklyResetHour = 24 }, "weekly_reset_hour:"},
		{"unknown permission", func(k *crsv1.ApiKey) { k.Permissions = []string{"claude", "mistral"} }, `permissions[1]: "mistral" is not one of`},
		{"duplicate permission", func(k *crsv1.ApiKey) { k.Permissions = []string{"claude", "claude"} }, "permissions[1]: duplicate"},
		{"unknown client", func(k *crsv1.ApiKey) { k.AllowedClients = []string{"curl"} }, "allowed_clients[0]:"},
		{"too many tags", func(k *crsv1.ApiKey) {
			for i := range 51 {
				k.Tags = append(k.Tags, fmt.Sprint("t", i))
			}
		}, "tags: at most 50 entries"},
		{"tag too long", func(k *crsv1.ApiKey) { k.Tags = []string{strings.Repeat("t", 51)} }, "tags[0]: must be 1-50 characters"},
		{"empty tag", func(k *crsv1.ApiKey) { k.Tags = []string{""} }, "tags[0]:"},
		{"too many restricted models", func(k *crsv1.ApiKey) { k.RestrictedModels = make([]string, 201) }, "restricted_models: at most 200"},
		{"unknown service rate", func(k *crsv1.ApiKey) { k.ServiceRates = map[string]float64{"mistral": 1} }, "service_rates.mistral: unknown service"},
		{"negative service rate", func(k *crsv1.ApiKey) { k.ServiceRates = map[string]float64{"claude": -1} }, "service_rates.claude:"},
		{"unknown bound account", func(k *crsv1.ApiKey) { k.ClaudeAccountId = "nope" }, "claude_account_id: account nope not found"},
		{"bound account of wrong type", func(k *crsv1.ApiKey) { k.ClaudeAccountId = console.Id }, "claude_account_id: account " + console.Id + " is of type claude-console"},
		{"console field with official account", func(k *crsv1.ApiKey) { k.ClaudeConsoleAccountId = official.Id }, "claude_console_account_id:"},
		{"unknown group", func(k *crsv1.ApiKey) { k.ClaudeAccountId = "group:nope" }, "claude_account_id: group nope not found"},
		{"group of wrong platform", func(k *crsv1.ApiKey) { k.ClaudeAccountId = "group:" + geminiGroup.Id }, "is a gemini group, want claude"},
		{"group where none allowed", func(k *crsv1.ApiKey) { k.BedrockAccountId = "group:x" }, "bedrock_account_id: cannot name a group"},
		{"responses prefix with wrong type", func(k *crsv1.ApiKey) { k.OpenaiAccountId = "responses:" + official.Id }, "want openai-responses"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k := &crsv1.ApiKey{Name: "ok"}
			tt.mod(k)
			_, err := f.svc.CreateApiKey(f.ctx, &crsv1.CreateApiKeyRequest{ApiKey: k})
			requireCode(t, err, codes.InvalidArgument, tt.field)
		})
	}
	list, err := f.store.ListKeys(f.ctx)
	require.NoError(t, err)
	require.Empty(t, list, "nothing invalid was stored")

	// Valid bindings pass.
	ok := createKey(t, f, &crsv1.ApiKey{Name: "bound", ClaudeAccountId: official.Id, ClaudeConsoleAccountId: console.Id, GeminiAccountId: "group:" + geminiGroup.Id})
	require.Equal(t, official.Id, ok.ApiKey.ClaudeAccountId)
}

func TestCreateApiKeyReportsEveryProblem(t *testing.T) {
	f := newFixture(t)
	_, err := f.svc.CreateApiKey(f.ctx, &crsv1.CreateApiKeyRequest{ApiKey: &crsv1.ApiKey{WeeklyResetHour: 30, ConcurrencyLimit: -1}})
	requireCode(t, err, codes.InvalidArgument, "name: required")
	require.Contains(t, err.Error(), "weekly_reset_hour")
	require.Contains(t, err.Error(), "concurrency_limit")
	_, err = f.svc.CreateApiKey(f.ctx, &crsv1.CreateApiKeyRequest{})
	requireCode(t, err, codes.InvalidArgument, "name: required")
}

func TestApiKeyUnknownID(t *testing.T) {
	f := newFixture(t)
	calls := map[string]func(id string) error{
		"get": func(id string) error { _, err := f.svc.GetApiKey(f.ctx, &crsv1.GetApiKeyRequest{Id: id}); return err },
		"update": func(id string) error {
			_, err := f.svc.UpdateApiKey(f.ctx, &crsv1.UpdateApiKeyRequest{Id: id, ApiKey: &crsv1.ApiKey{Name: "x"}, UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"name"}}})
			return err
		},
		"delete": func(id string) error {
			_, err := f.svc.DeleteApiKey(f.ctx, &crsv1.DeleteApiKeyRequest{Id: id})
			return err
		},
		"regenerate": func(id string) error {
			_, err := f.svc.RegenerateApiKey(f.ctx, &crsv1.RegenerateApiKeyRequest{Id: id})
			return err
		},
		"usage": func(id string) error {
			_, err := f.svc.GetApiKeyUsage(f.ctx, &crsv1.GetUsageRequest{Id: id})
			return err
		},
	}
	for name, call := range calls {
		t.Run(name, func(t *testing.T) {
			requireCode(t, call("0000-missing"), codes.NotFound, "api key 0000-missing not found")
			requireCode(t, call(""), codes.InvalidArgument, "id: required")
		})
	}
}

func TestRegenerateApiKey(t *testing.T) {
	f := newFixture(t)
	first := createKey(t, f, &crsv1.ApiKey{Name: "k", DailyCostLimit: 5})
	again, err := f.svc.RegenerateApiKey(f.ctx, &crsv1.RegenerateApiKeyRequest{Id: first.ApiKey.Id})
	require.NoError(t, err)
	require.Equal(t, first.ApiKey.Id, again.ApiKey.Id)
	require.NotEqual(t, first.Key, again.Key)
	require.Regexp(t, `^cr_[0-9a-f]{64}$`, again.Key)
	require.Equal(t, again.Key[:7]+"…", again.ApiKey.KeyPreview)
	require.Equal(t, 5.0, again.ApiKey.DailyCostLimit, "policy kept")

	_, err = f.store.KeyByHash(f.ctx, keyhash.HMAC(f.hmac, []byte(first.Key)))
	require.ErrorIs(t, err, store.ErrNotFound, "old plaintext stops working")
	k, err := f.store.KeyByHash(f.ctx, keyhash.HMAC(f.hmac, []byte(again.Key)))
	require.NoError(t, err)
	require.Equal(t, first.ApiKey.Id, k.Key.Id)
}

func TestUpdateApiKeyFieldMask(t *testing.T) {
	f := newFixture(t)
	orig := createKey(t, f, &crsv1.ApiKey{Name: "before", Description: "keep me", Tags: []string{"a", "b"}, DailyCostLimit: 3}).ApiKey

	upd := func(k *crsv1.ApiKey, paths ...string) (*crsv1.ApiKey, error) {
		return f.svc.UpdateApiKey(f.ctx, &crsv1.UpdateApiKeyRequest{Id: orig.Id, ApiKey: k, UpdateMask: &fieldmaskpb.FieldMask{Paths: paths}})
	}

	got, err := upd(&crsv1.ApiKey{Name: "after", Description: "ignored: not in mask"}, "name")
	require.NoError(t, err)
	require.Equal(t, "after", got.Name)
	require.Equal(t, "keep me", got.Description)
	require.Equal(t, []string{"a", "b"}, got.Tags)
	require.Equal(t, 3.0, got.DailyCostLimit)

	// JSON names are accepted, and a field named but unset is cleared.
	got, err = upd(&crsv1.ApiKey{IsActive: false}, "isActive", "tags", "daily_cost_limit")
	require.NoError(t, err)
	require.False(t, got.IsActive)
	require.Empty(t, got.Tags)
	require.Zero(t, got.DailyCostLimit)
	stored, err := f.svc.GetApiKey(f.ctx, &crsv1.GetApiKeyRequest{Id: orig.Id})
	require.NoError(t, err)
	require.Equal(t, "after", stored.Name)
	require.False(t, stored.IsActive)

	tests := []struct {
		name  string
		paths []string
		k     *crsv1.ApiKey
		want  string
	}{
		{"output-only id", []string{"id", "name"}, &crsv1.ApiKey{Id: "x", Name: "n"}, "id: output only"},
		{"output-only created_at", []string{"created_at"}, &crsv1.ApiKey{}, "created_at: output only"},
		{"output-only key_preview", []string{"keyPreview"}, &crsv1.ApiKey{}, "key_preview: output only"},
		{"unknown field", []string{"colour"}, &crsv1.ApiKey{}, `update_mask: unknown field "colour"`},
		{"inside a scalar", []string{"name.first"}, &crsv1.ApiKey{}, "update_mask:"},
		{"empty mask", nil, &crsv1.ApiKey{Name: "n"}, "update_mask: no fields to update"},
		{"invalid value after merge", []string{"name"}, &crsv1.ApiKey{Name: ""}, "name: required"},
		{"oversized", []string{"description"}, &crsv1.ApiKey{Description: strings.Repeat("x", 501)}, "description:"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := upd(tt.k, tt.paths...)
			requireCode(t, err, codes.InvalidArgument, tt.want)
		})
	}
	after, err := f.svc.GetApiKey(f.ctx, &crsv1.GetApiKeyRequest{Id: orig.Id})
	require.NoError(t, err)
	require.Equal(t, "after", after.Name, "failed updates changed nothing")
}

func TestDeleteApiKey(t *testing.T) {
	f := newFixture(t)
	k := createKey(t, f, &crsv1.ApiKey{Name: "k"})
	_, err := f.svc.DeleteApiKey(f.ctx, &crsv1.DeleteApiKeyRequest{Id: k.ApiKey.Id})
	require.NoError(t, err)
	_, err = f.svc.GetApiKey(f.ctx, &crsv1.GetApiKeyRequest{Id: k.ApiKey.Id})
	requireCode(t, err, codes.NotFound, "not found")
	_, err = f.svc.DeleteApiKey(f.ctx, &crsv1.DeleteApiKeyRequest{Id: k.ApiKey.Id})
	requireCode(t, err, codes.NotFound, "not found")
}

func TestListApiKeys(t *testing.T) {
	f := newFixture(t)
	var ids []string
	for i := range 5 {
		k := createKey(t, f, &crsv1.ApiKey{Name: fmt.Sprintf("Key-%d", i), Tags: []string{fmt.Sprint("parity-", i%2)}})
		ids = append(ids, k.ApiKey.Id)
	}
	_, err := f.svc.UpdateApiKey(f.ctx, &crsv1.UpdateApiKeyRequest{Id: ids[4], ApiKey: &crsv1.ApiKey{}, UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"is_active"}}})
	require.NoError(t, err)

	// Paging walks every key once, in creation order.
	var seen []string
	token := ""
	for pages := 0; ; pages++ {
		require.Less(t, pages, 5)
		resp, err := f.svc.ListApiKeys(f.ctx, &crsv1.ListApiKeysRequest{PageSize: 2, PageToken: token})
		require.NoError(t, err)
		require.Equal(t, int32(5), resp.TotalSize)
		for _, k := range resp.ApiKeys {
			seen = append(seen, k.Id)
		}
		if resp.NextPageToken == "" {
			break
		}
		token = resp.NextPageToken
	}
	require.Equal(t, ids, seen)

	count := func(req *crsv1.ListApiKeysRequest) int {
		resp, err := f.svc.ListApiKeys(f.ctx, req)
		require.NoError(t, err)
		require.Equal(t, int(resp.TotalSize), len(resp.ApiKeys))
		return len(resp.ApiKeys)
	}
	require.Equal(t, 3, count(&crsv1.ListApiKeysRequest{Tag: "parity-0"}))
	require.Equal(t, 1, count(&crsv1.ListApiKeysRequest{Search: "key-3"}), "case-insensitive")
	require.Equal(t, 4, count(&crsv1.ListApiKeysRequest{State: "active"}))
	require.Equal(t, 1, count(&crsv1.ListApiKeysRequest{State: "inactive"}))
	require.Equal(t, 5, count(&crsv1.ListApiKeysRequest{PageSize: 10000}), "clamped, not refused")

	for name, req := range map[string]*crsv1.ListApiKeysRequest{
		"page_token": {PageToken: "not-a-token!"},
		"page_size":  {PageSize: -1},
		"state":      {State: "deleted"},
	} {
		_, err := f.svc.ListApiKeys(f.ctx, req)
		requireCode(t, err, codes.InvalidArgument, name+":")
	}
}

func TestInternalErrorsAreGenericAndLogged(t *testing.T) {
	f := newFixture(t)
	f.store.failWith = fmt.Errorf("disk on fire at /var/secret/path")
	_, err := f.svc.ListApiKeys(f.ctx, &crsv1.ListApiKeysRequest{})
	requireCode(t, err, codes.Internal, "internal error")
	require.NotContains(t, err.Error(), "disk on fire")
	entries := f.logs.FilterMessage("admin request failed").All()
	require.Len(t, entries, 1)
	require.Equal(t, "ListApiKeys", entries[0].ContextMap()["method"])
	require.Contains(t, entries[0].ContextMap()["error"], "disk on fire")
}
