package admin

import (
	"context"
	"strings"

	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/crsrelay/crs/controlplane/store"
	crsv1 "github.com/crsrelay/crs/gen/crs/v1"
)

// Account states (AccountStatus.state).
const stateActive = "active"

var accountOutputOnlyPaths = []string{"id", "platform", "status", "created_at", "updated_at", "oauth.generation"}

// CreateAccount implements [crsv1.AdminServiceServer.CreateAccount]. Credentials are sealed; the
// answer, like every later read, carries them redacted.
func (s *Service) CreateAccount(ctx context.Context, req *crsv1.CreateAccountRequest) (*crsv1.Account, error) {
	a, err := s.createAccount(ctx, req)
	return a, s.toStatus(ctx, "CreateAccount", err)
}

func (s *Service) createAccount(ctx context.Context, req *crsv1.CreateAccountRequest) (*crsv1.Account, error) {
	a := &crsv1.Account{}
	if in := req.GetAccount(); in != nil {
		a = proto.Clone(in).(*crsv1.Account)
	}
	a.Id, a.Status, a.CreatedAt, a.UpdatedAt = "", nil, nil, nil
	if o := a.GetOauth(); o != nil {
		o.Generation = 0
	}
	if err := checkAccount(a); err != nil {
		return nil, err
	}
	id, err := newID()
	if err != nil {
		return nil, err
	}
	now := timestamppb.New(s.now())
	a.Id = id
	a.CreatedAt, a.UpdatedAt = now, now
	a.Status = &crsv1.AccountStatus{State: stateActive, ChangedAt: now}
	sealed, err := s.sealer.SealCredentials(a)
	if err != nil {
		return nil, err
	}
	pub := proto.Clone(a).(*crsv1.Account)
	clearSecrets(pub)
	if err := s.store.CreateAccount(ctx, &store.Account{Account: pub, SealedCredentials: sealed}); err != nil {
		return nil, about(kindAccount, id, err)
	}
	s.log.Info("account created", zap.String("account_id", id), zap.String("type", a.Type))
	return s.loadAccountOutput(ctx, id)
}

// GetAccount implements [crsv1.AdminServiceServer.GetAccount].
func (s *Service) GetAccount(ctx context.Context, req *crsv1.GetAccountRequest) (*crsv1.Account, error) {
	a, err := s.loadAccountOutput(ctx, req.GetId())
	return a, s.toStatus(ctx, "GetAccount", err)
}

// ListAccounts implements [crsv1.AdminServiceServer.ListAccounts].
func (s *Service) ListAccounts(ctx context.Context, req *crsv1.ListAccountsRequest) (*crsv1.ListAccountsResponse, error) {
	resp, err := s.listAccounts(ctx, req)
	return resp, s.toStatus(ctx, "ListAccounts", err)
}

func (s *Service) listAccounts(ctx context.Context, req *crsv1.ListAccountsRequest) (*crsv1.ListAccountsResponse, error) {
	var c checker
	c.length("platform", req.GetPlatform(), 0, maxItemLen)
	if req.GetType() != "" {
		c.oneOf("type", req.GetType(), accountTypeNames...)
	}
	c.length("state", req.GetState(), 0, maxItemLen)
	if err := c.err(); err != nil {
		return nil, err
	}
	all, err := s.store.ListAccounts(ctx)
	if err != nil {
		return nil, err
	}
	var keep []*store.Account
	for _, a := range all {
		switch {
		case req.GetPlatform() != "" && a.Account.GetPlatform() != req.GetPlatform():
		case req.GetType() != "" && a.Account.GetType() != req.GetType():
		case req.GetState() != "" && a.Account.GetStatus().GetState() != req.GetState():
		default:
			keep = append(keep, a)
		}
	}
	start, end, next, err := page(req.GetPageSize(), req.GetPageToken(), len(keep))
	if err != nil {
		return nil, err
	}
	out := make([]*crsv1.Account, 0, end-start)
	for _, a := range keep[start:end] {
		out = append(out, accountOutput(a))
	}
	return &crsv1.ListAccountsResponse{Accounts: out, NextPageToken: next, TotalSize: int32(len(keep))}, nil
}

// UpdateAccount implements [crsv1.AdminServiceServer.UpdateAccount]. A credential secret sent as ""
// or "REDACTED" (as reads return it) keeps the stored secret; so does a proxy password "REDACTED".
func (s *Service) UpdateAccount(ctx context.Context, req *crsv1.UpdateAccountRequest) (*crsv1.Account, error) {
	a, err := s.updateAccount(ctx, req)
	return a, s.toStatus(ctx, "UpdateAccount", err)
}

func (s *Service) updateAccount(ctx context.Context, req *crsv1.UpdateAccountRequest) (*crsv1.Account, error) {
	stored, err := s.loadAccount(ctx, req.GetId())
	if err != nil {
		return nil, err
	}
	// cur is the account with its secrets, as sealed.
	cur := proto.Clone(stored.Account).(*crsv1.Account)
	if len(stored.SealedCredentials) > 0 {
		if err := s.sealer.OpenCredentials(stored.SealedCredentials, cur); err != nil {
			return nil, about(kindAccount, cur.Id, err)
		}
	}
	patch := req.GetAccount()
	if patch == nil {
		patch = &crsv1.Account{}
	}
	next := proto.Clone(cur).(*crsv1.Account)
	paths, err := applyMask(next, patch, req.GetUpdateMask(), maskRules{outputOnly: accountOutputOnlyPaths})
	if err != nil {
		return nil, err
	}
	if masked(paths, "type") && next.Type != cur.Type {
		return nil, invalid("type", "cannot be changed (create a new account)")
	}
	keepSecrets(next, cur)
	if err := checkAccount(next); err != nil {
		return nil, err
	}
	if credentialsChanged(cur, next) {
		sealed, err := s.sealer.SealCredentials(next)
		if err != nil {
			return nil, err
		}
		if _, err := s.store.SwapAccountCredentials(ctx, cur.Id, stored.Generation, sealed); err != nil {
			return nil, about(kindAccount, cur.Id, err)
		}
	}
	next.UpdatedAt = timestamppb.New(s.now())
	pub := proto.Clone(next).(*crsv1.Account)
	clearSecrets(pub)
	if err := s.store.UpdateAccount(ctx, &store.Account{Account: pub}); err != nil {
		return nil, about(kindAccount, cur.Id, err)
	}
	return s.loadAccountOutput(ctx, cur.Id)
}

// credentialsChanged reports whether what SealCredentials covers differs.
func credentialsChanged(a, b *crsv1.Account) bool {
	pa := &crsv1.Account{Proxy: a.Proxy, Credentials: a.Credentials}
	pb := &crsv1.Account{Proxy: b.Proxy, Credentials: b.Credentials}
	return !proto.Equal(pa, pb)
}

// DeleteAccount implements [crsv1.AdminServiceServer.DeleteAccount]. The account also leaves
// every group it was in.
func (s *Service) DeleteAccount(ctx context.Context, req *crsv1.DeleteAccountRequest) (*emptypb.Empty, error) {
	if err := s.deleteAccount(ctx, req.GetId()); err != nil {
		return nil, s.toStatus(ctx, "DeleteAccount", err)
	}
	return &emptypb.Empty{}, nil
}

func (s *Service) deleteAccount(ctx context.Context, id string) error {
	if id == "" {
		return invalid("id", "required")
	}
	if err := s.store.DeleteAccount(ctx, id); err != nil {
		return about(kindAccount, id, err)
	}
	s.log.Info("account deleted", zap.String("account_id", id))
	groups, err := s.store.ListGroups(ctx)
	if err != nil {
		return err
	}
	for _, g := range groups {
		if !contains(g.AccountIds, id) {
			continue
		}
		ng := proto.Clone(g).(*crsv1.AccountGroup)
		ng.AccountIds = ng.AccountIds[:0]
		for _, m := range g.AccountIds {
			if m != id {
				ng.AccountIds = append(ng.AccountIds, m)
			}
		}
		ng.UpdatedAt = timestamppb.New(s.now())
		if err := s.store.UpdateGroup(ctx, ng); err != nil && !isNotFound(err) {
			return about(kindGroup, g.Id, err)
		}
	}
	return nil
}

// ResetAccountState implements [crsv1.AdminServiceServer.ResetAccountState]: the account becomes
// active, with no reason, end time or per-family limits.
func (s *Service) ResetAccountState(ctx context.Context, req *crsv1.ResetAccountStateRequest) (*crsv1.Account, error) {
	a, err := s.resetAccount(ctx, req.GetId())
	return a, s.toStatus(ctx, "ResetAccountState", err)
}

func (s *Service) resetAccount(ctx context.Context, id string) (*crsv1.Account, error) {
	if _, err := s.loadAccount(ctx, id); err != nil {
		return nil, err
	}
	st := &crsv1.AccountStatus{State: stateActive, ChangedAt: timestamppb.New(s.now())}
	if err := s.store.SetAccountStatus(ctx, id, st); err != nil {
		return nil, about(kindAccount, id, err)
	}
	s.log.Info("account state reset", zap.String("account_id", id))
	return s.loadAccountOutput(ctx, id)
}

func (s *Service) loadAccount(ctx context.Context, id string) (*store.Account, error) {
	if id == "" {
		return nil, invalid("id", "required")
	}
	a, err := s.store.GetAccount(ctx, id)
	if err != nil {
		return nil, about(kindAccount, id, err)
	}
	return a, nil
}

func (s *Service) loadAccountOutput(ctx context.Context, id string) (*crsv1.Account, error) {
	a, err := s.loadAccount(ctx, id)
	if err != nil {
		return nil, err
	}
	return accountOutput(a), nil
}

// accountOutput is what clients see of a stored account: secrets empty (they are already cleared
// in the store; cleared again in case a backend kept them), the proxy password redacted, and the
// credential generation filled in.
func accountOutput(a *store.Account) *crsv1.Account {
	out := proto.Clone(a.Account).(*crsv1.Account)
	clearSecrets(out)
	if o := out.GetOauth(); o != nil {
		o.Generation = a.Generation
	}
	return out
}

// checkAccount fills defaults into a and validates it.
func checkAccount(a *crsv1.Account) error {
	if a.Priority == 0 {
		a.Priority = 50
	}
	if a.Schedulable == nil {
		a.Schedulable = proto.Bool(true)
	}
	if a.AccountType == "" {
		a.AccountType = "shared"
	}

	var c checker
	c.length("name", a.Name, 1, maxName)
	c.length("description", a.Description, 0, maxDescription)
	kind, ok := accountTypes[a.Type]
	if a.Type == "" {
		c.add("type", "required (one of %s)", strings.Join(accountTypeNames, ", "))
	} else if !ok {
		c.add("type", "must be one of %s", strings.Join(accountTypeNames, ", "))
	} else {
		a.Platform = kind.platform
	}
	if a.Priority < 1 || a.Priority > 100 {
		c.add("priority", "must be 1-100")
	}
	c.oneOf("account_type", a.AccountType, "shared", "dedicated")
	c.httpURL("base_url", a.BaseUrl, false)
	checkProxy(&c, a.Proxy)
	if len(a.ModelMapping) > maxListLen {
		c.add("model_mapping", "at most %d entries", maxListLen)
	} else {
		for from, to := range a.ModelMapping {
			if from == "" || len(from) > maxItemLen || to == "" || len(to) > maxItemLen {
				c.add("model_mapping", "models must be 1-%d characters (%.40q)", maxItemLen, from)
			}
		}
	}
	c.nonNegative("max_concurrency", int64(a.MaxConcurrency), 100000)
	c.length("user_agent", a.UserAgent, 0, 500)
	if a.Subscription != "" {
		c.oneOf("subscription", a.Subscription, "free", "claude_pro", "claude_max")
	}
	if a.SubscriptionExpiresAt != nil && a.SubscriptionExpiresAt.CheckValid() != nil {
		c.add("subscription_expires_at", "invalid timestamp")
	}
	checkCredentialSizes(&c, a)
	if ok {
		kind.check(&c, a)
	}
	return c.err()
}
