package admin

import (
	"context"
	"errors"
	"strings"

	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/crsrelay/crs/controlplane/oauth"
	"github.com/crsrelay/crs/controlplane/proxyhttp"
	"github.com/crsrelay/crs/controlplane/store"
	crsv1 "github.com/crsrelay/crs/gen/crs/v1"
)

// OAuthFlows runs OAuth authorization-code flows (*oauth.Flows).
type OAuthFlows interface {
	Start(ctx context.Context, provider, proxy string) (*oauth.Started, error)
	Exchange(ctx context.Context, sessionID, code, callbackURL string) (*oauth.Exchanged, error)
	Providers() oauth.Providers
}

// TokenRefresher refreshes an account's OAuth tokens now (*oauth.Refresher).
type TokenRefresher interface {
	Refresh(ctx context.Context, id string) (*store.Account, error)
}

var (
	_ OAuthFlows     = (*oauth.Flows)(nil)
	_ TokenRefresher = (*oauth.Refresher)(nil)
)

// StartOAuth implements [crsv1.AdminServiceServer.StartOAuth].
func (s *Service) StartOAuth(ctx context.Context, req *crsv1.StartOAuthRequest) (*crsv1.StartOAuthResponse, error) {
	resp, err := s.startOAuth(ctx, req)
	return resp, s.toStatus(ctx, "StartOAuth", err)
}

func (s *Service) startOAuth(ctx context.Context, req *crsv1.StartOAuthRequest) (*crsv1.StartOAuthResponse, error) {
	if s.oauth == nil {
		return nil, errOAuthOff
	}
	var c checker
	if req.GetProvider() == "" {
		c.add("provider", "required (one of %s)", strings.Join(s.oauth.Providers().Names(), ", "))
	} else {
		c.oneOf("provider", req.GetProvider(), s.oauth.Providers().Names()...)
	}
	checkProxy(&c, req.GetProxy())
	if err := c.err(); err != nil {
		return nil, err
	}
	st, err := s.oauth.Start(ctx, req.GetProvider(), req.GetProxy())
	if err != nil {
		return nil, oauthError(err)
	}
	return &crsv1.StartOAuthResponse{
		SessionId: st.SessionID, AuthUrl: st.AuthURL, Instructions: st.Instructions,
		ExpiresAt: timestamppb.New(st.ExpiresAt),
	}, nil
}

// ExchangeOAuthCode implements [crsv1.AdminServiceServer.ExchangeOAuthCode]: the new account (or
// the re-authorized one) comes back with its credentials redacted.
func (s *Service) ExchangeOAuthCode(ctx context.Context, req *crsv1.ExchangeOAuthCodeRequest) (*crsv1.Account, error) {
	a, err := s.exchangeOAuthCode(ctx, req)
	return a, s.toStatus(ctx, "ExchangeOAuthCode", err)
}

func (s *Service) exchangeOAuthCode(ctx context.Context, req *crsv1.ExchangeOAuthCodeRequest) (*crsv1.Account, error) {
	if s.oauth == nil {
		return nil, errOAuthOff
	}
	var c checker
	c.length("session_id", req.GetSessionId(), 1, maxItemLen)
	if req.GetCode() == "" && req.GetCallbackUrl() == "" {
		c.add("code", "code or callback_url is required")
	}
	c.length("code", req.GetCode(), 0, maxURLLen)
	c.length("callback_url", req.GetCallbackUrl(), 0, maxURLLen)
	if err := c.err(); err != nil {
		return nil, err
	}

	// Check everything that can be checked before the code is spent.
	var (
		draft  *crsv1.Account
		stored *store.Account
	)
	if req.GetAccountId() != "" {
		var err error
		if stored, err = s.loadAccount(ctx, req.GetAccountId()); err != nil {
			return nil, err
		}
	} else {
		draft = &crsv1.Account{}
		if in := req.GetAccount(); in != nil {
			draft = proto.Clone(in).(*crsv1.Account)
		}
		draft.Id, draft.Status, draft.CreatedAt, draft.UpdatedAt = "", nil, nil, nil
		projectID := draft.GetOauth().GetProjectId()
		if draft.GetCredentials() != nil && draft.GetOauth() == nil {
			return nil, invalid("account.credentials", "come from the OAuth flow; only oauth.project_id may be set")
		}
		// Placeholder credentials, so checkAccount validates everything else now.
		draft.Credentials = &crsv1.Account_Oauth{Oauth: &crsv1.OAuthCredential{AccessToken: "pending", ProjectId: projectID}}
		if draft.Type == "" {
			draft.Type = "claude-official" // replaced by the provider's type below
		}
		if err := checkAccountPrefixed(draft); err != nil {
			return nil, err
		}
	}

	ex, err := s.oauth.Exchange(ctx, req.GetSessionId(), req.GetCode(), req.GetCallbackUrl())
	if err != nil {
		return nil, oauthError(err)
	}
	cred := &crsv1.OAuthCredential{
		AccessToken: ex.Token.AccessToken, RefreshToken: ex.Token.RefreshToken, Scopes: ex.Token.Scopes,
	}
	if !ex.Token.ExpiresAt.IsZero() {
		cred.ExpiresAt = timestamppb.New(ex.Token.ExpiresAt)
	}
	if ex.Provider.AccountType == "openai" {
		cred.ProjectId = ex.Token.AccountID
	}
	if stored != nil {
		return s.reauthorize(ctx, stored, ex, cred)
	}

	draft.Type = ex.Provider.AccountType
	if cred.ProjectId == "" {
		cred.ProjectId = draft.GetOauth().GetProjectId()
	}
	draft.Credentials = &crsv1.Account_Oauth{Oauth: cred}
	if draft.Proxy == "" {
		draft.Proxy = ex.Proxy
	}
	if draft.Description == "" && ex.Token.Email != "" {
		draft.Description = "OAuth (" + ex.Provider.Name + ") account of " + ex.Token.Email
	}
	out, err := s.createAccount(ctx, &crsv1.CreateAccountRequest{Account: draft})
	if err != nil {
		// The tokens are spent: say so, so the operator does not wonder where they went.
		s.log.Error("oauth exchange succeeded but the account was not created", zap.String("provider", ex.Provider.Name), zap.Error(err))
		return nil, err
	}
	return out, nil
}

// reauthorize replaces stored's credentials with the new tokens (compare-and-swap) and ends an
// unauthorized or error state.
func (s *Service) reauthorize(ctx context.Context, stored *store.Account, ex *oauth.Exchanged, cred *crsv1.OAuthCredential) (*crsv1.Account, error) {
	id := stored.Account.GetId()
	if stored.Account.GetType() != ex.Provider.AccountType {
		return nil, invalid("account_id", "account %s is of type %s; the %s flow makes %s accounts", id, stored.Account.GetType(), ex.Provider.Name, ex.Provider.AccountType)
	}
	full := proto.Clone(stored.Account).(*crsv1.Account)
	if len(stored.SealedCredentials) > 0 {
		if err := s.sealer.OpenCredentials(stored.SealedCredentials, full); err != nil {
			return nil, about(kindAccount, id, err)
		}
	}
	if cred.ProjectId == "" {
		cred.ProjectId = full.GetOauth().GetProjectId()
	}
	full.Credentials = &crsv1.Account_Oauth{Oauth: cred}
	sealed, err := s.sealer.SealCredentials(full)
	if err != nil {
		return nil, err
	}
	if _, err := s.store.SwapAccountCredentials(ctx, id, stored.Generation, sealed); err != nil {
		return nil, about(kindAccount, id, err)
	}
	pub := proto.Clone(full).(*crsv1.Account)
	clearSecrets(pub)
	pub.UpdatedAt = timestamppb.New(s.now())
	if err := s.store.UpdateAccount(ctx, &store.Account{Account: pub}); err != nil {
		return nil, about(kindAccount, id, err)
	}
	if st := stored.Account.GetStatus().GetState(); st == "unauthorized" || st == "error" {
		next := &crsv1.AccountStatus{State: stateActive, Reason: "re-authorized by an admin", ChangedAt: timestamppb.New(s.now()),
			FamilyLimitedUntil: stored.Account.GetStatus().GetFamilyLimitedUntil()}
		if err := s.store.SetAccountStatus(ctx, id, next); err != nil {
			return nil, about(kindAccount, id, err)
		}
	}
	s.log.Info("account re-authorized", zap.String("account_id", id), zap.String("provider", ex.Provider.Name))
	return s.loadAccountOutput(ctx, id)
}

// RefreshAccountToken implements [crsv1.AdminServiceServer.RefreshAccountToken].
func (s *Service) RefreshAccountToken(ctx context.Context, req *crsv1.RefreshAccountTokenRequest) (*crsv1.Account, error) {
	a, err := s.refreshAccountToken(ctx, req.GetId())
	return a, s.toStatus(ctx, "RefreshAccountToken", err)
}

func (s *Service) refreshAccountToken(ctx context.Context, id string) (*crsv1.Account, error) {
	if s.refresher == nil {
		return nil, errOAuthOff
	}
	if _, err := s.loadAccount(ctx, id); err != nil {
		return nil, err
	}
	if _, err := s.refresher.Refresh(ctx, id); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return nil, about(kindAccount, id, err)
		}
		return nil, oauthError(err)
	}
	return s.loadAccountOutput(ctx, id)
}

var errOAuthOff = status.Error(codes.FailedPrecondition, "oauth is not configured on this control plane")

// oauthError maps the oauth package's errors to statuses. Their messages hold no secrets (proxy
// passwords are redacted, tokens never appear), so they reach the operator.
func oauthError(err error) error {
	var ue *oauth.UpstreamError
	switch {
	case errors.Is(err, oauth.ErrUnknownProvider):
		return invalid("provider", "%s", err.Error())
	case errors.Is(err, proxyhttp.ErrBadProxy):
		return invalid("proxy", "%s", err.Error())
	case errors.Is(err, oauth.ErrBadCode):
		return invalid("code", "%s", err.Error())
	case errors.Is(err, oauth.ErrStateMismatch):
		return invalid("callback_url", "the state does not match this session (a code from another flow?)")
	case errors.Is(err, oauth.ErrSessionNotFound):
		return status.Error(codes.NotFound, "oauth session not found or expired (sessions last 10 minutes and are used once); start again")
	case errors.Is(err, oauth.ErrNotRefreshable):
		return status.Error(codes.FailedPrecondition, err.Error())
	case errors.Is(err, oauth.ErrBusy):
		return status.Error(codes.Unavailable, "another control plane is refreshing this account; retry in a minute")
	case errors.As(err, &ue):
		if ue.Permanent() {
			return status.Error(codes.FailedPrecondition, "the provider refused: "+err.Error())
		}
		return status.Error(codes.Unavailable, "the provider failed: "+err.Error())
	case errors.Is(err, oauth.ErrUnreachable):
		return status.Error(codes.Unavailable, err.Error())
	}
	return err
}

// checkAccountPrefixed is checkAccount with field names under "account." (the request's field).
func checkAccountPrefixed(a *crsv1.Account) error {
	err := checkAccount(a)
	var ve *ValidationError
	if errors.As(err, &ve) {
		for i := range ve.Violations {
			ve.Violations[i].Field = "account." + ve.Violations[i].Field
		}
	}
	return err
}
