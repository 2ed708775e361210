package admin

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/fieldmaskpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	crsv1 "github.com/crsrelay/crs/gen/crs/v1"
)

// Secret values used in fixtures; none may ever appear in an output.
const (
	secretAPIKey  = "sk-ant-api03-SECRET-API-KEY"
	secretAccess  = "sk-ant-oat01-SECRET-ACCESS"
	secretRefresh = "sk-ant-ort01-SECRET-REFRESH"
	secretAWS     = "SECRET-AWS-ACCESS-KEY"
	secretBearer  = "SECRET-BEDROCK-BEARER"
	secretProxyPW = "SECRET-PROXY-PW"
)

var allSecrets = []string{secretAPIKey, secretAccess, secretRefresh, secretAWS, secretBearer, secretProxyPW}

func validAccount(typ string) *crsv1.Account {
	a := &crsv1.Account{Name: typ + " account", Type: typ}
	switch typ {
	case "claude-official", "gemini", "openai", "droid":
		a.Credentials = &crsv1.Account_Oauth{Oauth: &crsv1.OAuthCredential{
			AccessToken: secretAccess, RefreshToken: secretRefresh,
			ExpiresAt: timestamppb.New(testNow.Add(time.Hour)), Scopes: []string{"user:inference"},
		}}
	case "claude-console", "openai-responses", "ccr":
		a.Credentials = &crsv1.Account_ApiKey{ApiKey: &crsv1.ApiKeyCredential{ApiKey: secretAPIKey}}
		a.BaseUrl = "https://console.example.com"
	case "gemini-api":
		a.Credentials = &crsv1.Account_ApiKey{ApiKey: &crsv1.ApiKeyCredential{ApiKey: secretAPIKey}}
	case "bedrock":
		a.Credentials = &crsv1.Account_Aws{Aws: &crsv1.AwsCredential{AccessKeyId: "AKIAPUBLIC", SecretAccessKey: secretAWS, Region: "us-east-1"}}
	case "azure-openai":
		a.Credentials = &crsv1.Account_Azure{Azure: &crsv1.AzureCredential{Endpoint: "https://x.openai.azure.com", Deployment: "gpt", ApiVersion: "2024-02-01", ApiKey: secretAPIKey}}
	}
	return a
}

func createAccount(t *testing.T, f *fixture, a *crsv1.Account) *crsv1.Account {
	t.Helper()
	got, err := f.svc.CreateAccount(f.ctx, &crsv1.CreateAccountRequest{Account: a})
	require.NoError(t, err)
	return got
}

func requireNoSecrets(t *testing.T, out string) {
	t.Helper()
	for _, s := range allSecrets {
		require.NotContains(t, out, s)
	}
}

// openStored returns the stored account with its sealed credentials opened.
func openStored(t *testing.T, f *fixture, id string) (*crsv1.Account, int64) {
	t.Helper()
	st, err := f.store.GetAccount(f.ctx, id)
	require.NoError(t, err)
	requireNoSecrets(t, jsonOf(t, st.Account))
	full := proto.Clone(st.Account).(*crsv1.Account)
	require.NoError(t, f.sealer.OpenCredentials(st.SealedCredentials, full))
	return full, st.Generation
}

func TestCreateAccountEveryType(t *testing.T) {
	platforms := map[string]string{
		"claude-official": "claude", "claude-console": "claude", "bedrock": "bedrock", "gemini": "gemini",
		"gemini-api": "gemini", "openai": "openai", "openai-responses": "openai", "azure-openai": "azure",
		"droid": "droid", "ccr": "ccr",
	}
	require.Len(t, platforms, len(accountTypeNames))
	for typ, platform := range platforms {
		t.Run(typ, func(t *testing.T) {
			f := newFixture(t)
			in := validAccount(typ)
			in.Id, in.Platform = "chosen", "wrong"
			in.Status = &crsv1.AccountStatus{State: "blocked"}
			got := createAccount(t, f, in)
			require.NotEqual(t, "chosen", got.Id)
			require.Equal(t, platform, got.Platform)
			require.Equal(t, int32(50), got.Priority)
			require.True(t, got.GetSchedulable())
			require.Equal(t, "shared", got.AccountType)
			require.Equal(t, "active", got.Status.GetState(), "initial state; status is output only")
			require.NotNil(t, got.Credentials, "non-secret credential fields are kept")
			requireNoSecrets(t, jsonOf(t, got))

			full, _ := openStored(t, f, got.Id)
			want := proto.Clone(in).(*crsv1.Account)
			require.True(t, proto.Equal(
				&crsv1.Account{Credentials: want.Credentials},
				&crsv1.Account{Credentials: full.Credentials},
			), "sealed credentials open to what was sent")
		})
	}
}

func TestAccountOutputRedaction(t *testing.T) {
	f := newFixture(t)
	in := validAccount("claude-official")
	in.Proxy = "socks5://bob:" + secretProxyPW + "@proxy.example:1080"
	got := createAccount(t, f, in)
	o := got.GetOauth()
	require.Empty(t, o.AccessToken)
	require.Empty(t, o.RefreshToken)
	require.Equal(t, []string{"user:inference"}, o.Scopes)
	require.Equal(t, testNow.Add(time.Hour), o.ExpiresAt.AsTime())
	require.Equal(t, int64(1), o.Generation)
	require.Equal(t, "socks5://bob:REDACTED@proxy.example:1080", got.Proxy)

	aws := createAccount(t, f, validAccount("bedrock")).GetAws()
	require.Equal(t, "AKIAPUBLIC", aws.AccessKeyId)
	require.Equal(t, "us-east-1", aws.Region)
	require.Empty(t, aws.SecretAccessKey)
	az := createAccount(t, f, validAccount("azure-openai")).GetAzure()
	require.Equal(t, "https://x.openai.azure.com", az.Endpoint)
	require.Empty(t, az.ApiKey)

	// Every read path.
	one, err := f.svc.GetAccount(f.ctx, &crsv1.GetAccountRequest{Id: got.Id})
	require.NoError(t, err)
	list, err := f.svc.ListAccounts(f.ctx, &crsv1.ListAccountsRequest{})
	require.NoError(t, err)
	reset, err := f.svc.ResetAccountState(f.ctx, &crsv1.ResetAccountStateRequest{Id: got.Id})
	require.NoError(t, err)
	upd, err := f.svc.UpdateAccount(f.ctx, &crsv1.UpdateAccountRequest{Id: got.Id, Account: &crsv1.Account{Name: "renamed"}, UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"name"}}})
	require.NoError(t, err)
	for _, out := range []proto.Message{one, list, reset, upd} {
		requireNoSecrets(t, jsonOf(t, out))
		require.Contains(t, jsonOf(t, out), "REDACTED")
	}

	// The proxy password is sealed, not stored in the clear.
	full, _ := openStored(t, f, got.Id)
	require.Equal(t, in.Proxy, full.Proxy)
}

func TestCreateAccountValidation(t *testing.T) {
	f := newFixture(t)
	tests := []struct {
		name string
		typ  string
		mod  func(a *crsv1.Account)
		want string
	}{
		{"missing name", "claude-official", func(a *crsv1.Account) { a.Name = "" }, "name: required"},
		{"name too long", "claude-official", func(a *crsv1.Account) { a.Name = strings.Repeat("n", 101) }, "name: must be 1-100"},
		{"description too long", "claude-official", func(a *crsv1.Account) { a.Description = strings.Repeat("d", 501) }, "description:"},
		{"missing type", "claude-official", func(a *crsv1.Account) { a.Type = "" }, "type: required"},
		{"unknown type", "claude-official", func(a *crsv1.Account) { a.Type = "mistral" }, "type: must be one of claude-official"},
		{"official with api key", "claude-official", func(a *crsv1.Account) {
			a.Credentials = &crsv1.Account_ApiKey{ApiKey: &crsv1.ApiKeyCredential{ApiKey: "k"}}
		}, "credentials: claude-official accounts need oauth credentials"},
		{"official without access token", "claude-official", func(a *crsv1.Account) { a.GetOauth().AccessToken = "" }, "oauth.access_token: required"},
		{"official without credentials", "claude-official", func(a *crsv1.Account) { a.Credentials = nil }, "credentials:"},
		{"gemini without any token", "gemini", func(a *crsv1.Account) { a.GetOauth().AccessToken, a.GetOauth().RefreshToken = "", "" }, "oauth.access_token:"},
		{"console without base url", "claude-console", func(a *crsv1.Account) { a.BaseUrl = "" }, "base_url: required for claude-console"},
		{"console without key", "claude-console", func(a *crsv1.Account) { a.GetApiKey().ApiKey = "" }, "api_key.api_key: required"},
		{"console with oauth", "claude-console", func(a *crsv1.Account) {
			a.Credentials = &crsv1.Account_Oauth{Oauth: &crsv1.OAuthCredential{AccessToken: "x"}}
		}, "need api_key credentials"},
		{"bedrock without region", "bedrock", func(a *crsv1.Account) { a.GetAws().Region = "" }, "aws.region: required"},
		{"bedrock without secret", "bedrock", func(a *crsv1.Account) { a.GetAws().SecretAccessKey = "" }, "aws.access_key_id:"},
		{"azure without endpoint", "azure-openai", func(a *crsv1.Account) { a.GetAzure().Endpoint = "" }, "azure.endpoint: required"},
		{"azure bad endpoint", "azure-openai", func(a *crsv1.Account) { a.GetAzure().Endpoint = "x.azure.com" }, "azure.endpoint: must be an http"},
		{"priority too high", "claude-official", func(a *crsv1.Account) { a.Priority = 101 }, "priority: must be 1-100"},
		{"priority negative", "claude-official", func(a *crsv1.Account) { a.Priority = -1 }, "priority:"},
		{"account type", "claude-official", func(a *crsv1.Account) { a.AccountType = "group" }, "account_type:"},
		{"base url scheme", "claude-console", func(a *crsv1.Account) { a.BaseUrl = "ftp://x" }, "base_url: must be an http:// or https:// URL"},
		{"base url no host", "claude-console", func(a *crsv1.Account) { a.BaseUrl = "https://" }, "base_url:"},
		{"proxy scheme", "claude-official", func(a *crsv1.Account) { a.Proxy = "ftp://h:1" }, "proxy: scheme must be http, https, socks5 or socks5h"},
		{"proxy without port", "claude-official", func(a *crsv1.Account) { a.Proxy = "socks5://h" }, "proxy: must have a host and a port"},
		{"too many mappings", "claude-official", func(a *crsv1.Account) {
			a.ModelMapping = map[string]string{}
			for i := range 201 {
				a.ModelMapping[fmt.Sprint("m", i)] = "x"
			}
		}, "model_mapping: at most 200 entries"},
		{"empty mapping target", "claude-official", func(a *crsv1.Account) { a.ModelMapping = map[string]string{"a": ""} }, "model_mapping:"},
		{"subscription", "claude-official", func(a *crsv1.Account) { a.Subscription = "enterprise" }, "subscription:"},
		{"huge secret", "claude-official", func(a *crsv1.Account) { a.GetOauth().AccessToken = strings.Repeat("x", maxSecretLen+1) }, "oauth.access_token: must be at most"},
		{"negative concurrency", "claude-official", func(a *crsv1.Account) { a.MaxConcurrency = -2 }, "max_concurrency:"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := validAccount(tt.typ)
			tt.mod(a)
			_, err := f.svc.CreateAccount(f.ctx, &crsv1.CreateAccountRequest{Account: a})
			requireCode(t, err, codes.InvalidArgument, tt.want)
			requireNoSecrets(t, err.Error())
		})
	}
	all, err := f.store.ListAccounts(f.ctx)
	require.NoError(t, err)
	require.Empty(t, all)
}

func TestUpdateAccountKeepsRedactedSecrets(t *testing.T) {
	f := newFixture(t)
	in := validAccount("claude-official")
	in.Proxy = "http://bob:" + secretProxyPW + "@proxy.example:3128"
	a := createAccount(t, f, in)
	newExpiry := timestamppb.New(testNow.Add(48 * time.Hour))

	upd := func(patch *crsv1.Account, paths ...string) *crsv1.Account {
		t.Helper()
		got, err := f.svc.UpdateAccount(f.ctx, &crsv1.UpdateAccountRequest{Id: a.Id, Account: patch, UpdateMask: &fieldmaskpb.FieldMask{Paths: paths}})
		require.NoError(t, err)
		requireNoSecrets(t, jsonOf(t, got))
		return got
	}

	// A client that sends back what it read (redacted) changes only what it edited.
	read, err := f.svc.GetAccount(f.ctx, &crsv1.GetAccountRequest{Id: a.Id})
	require.NoError(t, err)
	read.GetOauth().ExpiresAt = newExpiry
	read.GetOauth().AccessToken = Redacted
	upd(&crsv1.Account{Credentials: read.Credentials, Proxy: read.Proxy}, "oauth", "proxy")
	full, gen := openStored(t, f, a.Id)
	require.Equal(t, secretAccess, full.GetOauth().AccessToken, "REDACTED keeps the secret")
	require.Equal(t, secretRefresh, full.GetOauth().RefreshToken, `"" keeps the secret`)
	require.Equal(t, newExpiry.AsTime(), full.GetOauth().ExpiresAt.AsTime(), "non-secret field updated")
	require.Equal(t, in.Proxy, full.Proxy, "REDACTED proxy password kept")
	require.Equal(t, int64(2), gen, "expires_at changed: credentials resealed")

	// A nested path updates one credential field.
	upd(&crsv1.Account{Credentials: &crsv1.Account_Oauth{Oauth: &crsv1.OAuthCredential{AccessToken: "sk-new"}}}, "oauth.access_token")
	full, gen = openStored(t, f, a.Id)
	require.Equal(t, "sk-new", full.GetOauth().AccessToken)
	require.Equal(t, secretRefresh, full.GetOauth().RefreshToken)
	require.Equal(t, int64(3), gen)

	// Editing a public field does not touch the credentials.
	got := upd(&crsv1.Account{Priority: 7, Name: "ignored"}, "priority")
	require.Equal(t, int32(7), got.Priority)
	require.Equal(t, "claude-official account", got.Name)
	_, gen = openStored(t, f, a.Id)
	require.Equal(t, int64(3), gen)
	require.Equal(t, int64(3), got.GetOauth().Generation)

	// A new proxy password replaces the old one.
	upd(&crsv1.Account{Proxy: "http://bob:pw2@proxy.example:3128"}, "proxy")
	full, _ = openStored(t, f, a.Id)
	require.Equal(t, "http://bob:pw2@proxy.example:3128", full.Proxy)
}

func TestUpdateAccountRejects(t *testing.T) {
	f := newFixture(t)
	a := createAccount(t, f, validAccount("claude-console"))
	tests := []struct {
		name  string
		patch *crsv1.Account
		paths []string
		want  string
	}{
		{"type change", &crsv1.Account{Type: "ccr"}, []string{"type"}, "type: cannot be changed"},
		{"status", &crsv1.Account{Status: &crsv1.AccountStatus{State: "active"}}, []string{"status"}, "status: output only"},
		{"status nested", &crsv1.Account{}, []string{"status.state"}, "status.state: output only"},
		{"platform", &crsv1.Account{Platform: "x"}, []string{"platform"}, "platform: output only"},
		{"generation", &crsv1.Account{}, []string{"oauth.generation"}, "oauth.generation: output only"},
		{"switch to wrong credential kind", &crsv1.Account{Credentials: &crsv1.Account_Oauth{Oauth: &crsv1.OAuthCredential{AccessToken: "x"}}}, []string{"oauth"}, "need api_key credentials"},
		{"clear base url", &crsv1.Account{}, []string{"base_url"}, "base_url: required"},
		{"bad priority", &crsv1.Account{Priority: 500}, []string{"priority"}, "priority:"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := f.svc.UpdateAccount(f.ctx, &crsv1.UpdateAccountRequest{Id: a.Id, Account: tt.patch, UpdateMask: &fieldmaskpb.FieldMask{Paths: tt.paths}})
			requireCode(t, err, codes.InvalidArgument, tt.want)
		})
	}
	// Same type is not a change.
	_, err := f.svc.UpdateAccount(f.ctx, &crsv1.UpdateAccountRequest{Id: a.Id, Account: &crsv1.Account{Type: "claude-console"}, UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"type"}}})
	require.NoError(t, err)
}

func TestUpdateAccountStaleGenerationConflicts(t *testing.T) {
	f := newFixture(t)
	a := createAccount(t, f, validAccount("claude-console"))
	// A token refresh reseals between the service's read and its swap.
	f.store.beforeSwap = func() {
		f.store.mu.Lock()
		f.store.accounts[a.Id].Generation++
		f.store.mu.Unlock()
	}
	_, err := f.svc.UpdateAccount(f.ctx, &crsv1.UpdateAccountRequest{
		Id:         a.Id,
		Account:    &crsv1.Account{Credentials: &crsv1.Account_ApiKey{ApiKey: &crsv1.ApiKeyCredential{ApiKey: "sk-new"}}},
		UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"api_key"}},
	})
	requireCode(t, err, codes.FailedPrecondition, "retry")
	full, _ := openStored(t, f, a.Id)
	require.Equal(t, secretAPIKey, full.GetApiKey().ApiKey, "nothing changed")
}

func TestResetAccountState(t *testing.T) {
	f := newFixture(t)
	a := createAccount(t, f, validAccount("claude-official"))
	require.NoError(t, f.store.SetAccountStatus(f.ctx, a.Id, &crsv1.AccountStatus{
		State: "rate_limited", Reason: "429 from upstream", Until: timestamppb.New(testNow.Add(time.Hour)),
		FamilyLimitedUntil: map[string]*timestamppb.Timestamp{"opus": timestamppb.New(testNow.Add(time.Hour))},
	}))
	got, err := f.svc.ResetAccountState(f.ctx, &crsv1.ResetAccountStateRequest{Id: a.Id})
	require.NoError(t, err)
	require.Equal(t, "active", got.Status.State)
	require.Empty(t, got.Status.Reason)
	require.Nil(t, got.Status.Until)
	require.Empty(t, got.Status.FamilyLimitedUntil)
	require.Equal(t, testNow, got.Status.ChangedAt.AsTime())

	_, err = f.svc.ResetAccountState(f.ctx, &crsv1.ResetAccountStateRequest{Id: "missing"})
	requireCode(t, err, codes.NotFound, "account missing not found")
}

func TestAccountUnknownID(t *testing.T) {
	f := newFixture(t)
	calls := map[string]func() error{
		"get": func() error { _, err := f.svc.GetAccount(f.ctx, &crsv1.GetAccountRequest{Id: "nope"}); return err },
		"update": func() error {
			_, err := f.svc.UpdateAccount(f.ctx, &crsv1.UpdateAccountRequest{Id: "nope", Account: &crsv1.Account{Name: "x"}, UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"name"}}})
			return err
		},
		"delete": func() error {
			_, err := f.svc.DeleteAccount(f.ctx, &crsv1.DeleteAccountRequest{Id: "nope"})
			return err
		},
		"usage": func() error { _, err := f.svc.GetAccountUsage(f.ctx, &crsv1.GetUsageRequest{Id: "nope"}); return err },
	}
	for name, call := range calls {
		t.Run(name, func(t *testing.T) {
			requireCode(t, call(), codes.NotFound, "account nope not found")
		})
	}
}

func TestListAccountsFilters(t *testing.T) {
	f := newFixture(t)
	for _, typ := range []string{"claude-official", "claude-console", "gemini", "ccr"} {
		createAccount(t, f, validAccount(typ))
	}
	count := func(req *crsv1.ListAccountsRequest) int {
		resp, err := f.svc.ListAccounts(f.ctx, req)
		require.NoError(t, err)
		requireNoSecrets(t, jsonOf(t, resp))
		return int(resp.TotalSize)
	}
	require.Equal(t, 4, count(&crsv1.ListAccountsRequest{}))
	require.Equal(t, 2, count(&crsv1.ListAccountsRequest{Platform: "claude"}))
	require.Equal(t, 1, count(&crsv1.ListAccountsRequest{Type: "ccr"}))
	require.Equal(t, 4, count(&crsv1.ListAccountsRequest{State: "active"}))
	require.Equal(t, 0, count(&crsv1.ListAccountsRequest{State: "blocked"}))
	_, err := f.svc.ListAccounts(f.ctx, &crsv1.ListAccountsRequest{Type: "nope"})
	requireCode(t, err, codes.InvalidArgument, "type:")
}

func TestDeleteAccountLeavesGroups(t *testing.T) {
	f := newFixture(t)
	a := createAccount(t, f, validAccount("claude-official"))
	b := createAccount(t, f, validAccount("claude-console"))
	g, err := f.svc.CreateGroup(f.ctx, &crsv1.CreateGroupRequest{Group: &crsv1.AccountGroup{Name: "g", Platform: "claude", AccountIds: []string{a.Id, b.Id}}})
	require.NoError(t, err)
	_, err = f.svc.DeleteAccount(f.ctx, &crsv1.DeleteAccountRequest{Id: a.Id})
	require.NoError(t, err)
	got, err := f.svc.GetGroup(f.ctx, &crsv1.GetGroupRequest{Id: g.Id})
	require.NoError(t, err)
	require.Equal(t, []string{b.Id}, got.AccountIds)
}
