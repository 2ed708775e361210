package admin

import (
	"context"
	"fmt"

	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/timestamppb"

	crsv1 "github.com/crsrelay/crs/gen/crs/v1"
)

var (
	groupPlatforms       = []string{"claude", "gemini", "openai", "droid"}
	groupOutputOnlyPaths = []string{"id", "created_at", "updated_at"}
)

// maxGroupMembers bounds a group's account_ids.
const maxGroupMembers = 500

// CreateGroup implements [crsv1.AdminServiceServer.CreateGroup].
func (s *Service) CreateGroup(ctx context.Context, req *crsv1.CreateGroupRequest) (*crsv1.AccountGroup, error) {
	g, err := s.createGroup(ctx, req)
	return g, s.toStatus(ctx, "CreateGroup", err)
}

func (s *Service) createGroup(ctx context.Context, req *crsv1.CreateGroupRequest) (*crsv1.AccountGroup, error) {
	g := &crsv1.AccountGroup{}
	if in := req.GetGroup(); in != nil {
		g = proto.Clone(in).(*crsv1.AccountGroup)
	}
	if err := s.checkGroup(ctx, g); err != nil {
		return nil, err
	}
	id, err := newID()
	if err != nil {
		return nil, err
	}
	now := timestamppb.New(s.now())
	g.Id, g.CreatedAt, g.UpdatedAt = id, now, now
	if err := s.store.CreateGroup(ctx, g); err != nil {
		return nil, about(kindGroup, id, err)
	}
	s.log.Info("group created", zap.String("group_id", id))
	return g, nil
}

// GetGroup implements [crsv1.AdminServiceServer.GetGroup].
func (s *Service) GetGroup(ctx context.Context, req *crsv1.GetGroupRequest) (*crsv1.AccountGroup, error) {
	g, err := s.loadGroup(ctx, req.GetId())
	return g, s.toStatus(ctx, "GetGroup", err)
}

// ListGroups implements [crsv1.AdminServiceServer.ListGroups].
func (s *Service) ListGroups(ctx context.Context, req *crsv1.ListGroupsRequest) (*crsv1.ListGroupsResponse, error) {
	resp, err := s.listGroups(ctx, req)
	return resp, s.toStatus(ctx, "ListGroups", err)
}

func (s *Service) listGroups(ctx context.Context, req *crsv1.ListGroupsRequest) (*crsv1.ListGroupsResponse, error) {
	if p := req.GetPlatform(); p != "" && !contains(groupPlatforms, p) {
		return nil, invalid("platform", "must be one of claude, gemini, openai, droid")
	}
	all, err := s.store.ListGroups(ctx)
	if err != nil {
		return nil, err
	}
	var keep []*crsv1.AccountGroup
	for _, g := range all {
		if req.GetPlatform() == "" || g.GetPlatform() == req.GetPlatform() {
			keep = append(keep, g)
		}
	}
	start, end, next, err := page(req.GetPageSize(), req.GetPageToken(), len(keep))
	if err != nil {
		return nil, err
	}
	return &crsv1.ListGroupsResponse{Groups: keep[start:end], NextPageToken: next, TotalSize: int32(len(keep))}, nil
}

// UpdateGroup implements [crsv1.AdminServiceServer.UpdateGroup]. account_ids is replaced whole.
func (s *Service) UpdateGroup(ctx context.Context, req *crsv1.UpdateGroupRequest) (*crsv1.AccountGroup, error) {
	g, err := s.updateGroup(ctx, req)
	return g, s.toStatus(ctx, "UpdateGroup", err)
}

func (s *Service) updateGroup(ctx context.Context, req *crsv1.UpdateGroupRequest) (*crsv1.AccountGroup, error) {
	cur, err := s.loadGroup(ctx, req.GetId())
	if err != nil {
		return nil, err
	}
	next := proto.Clone(cur).(*crsv1.AccountGroup)
	patch := req.GetGroup()
	if patch == nil {
		patch = &crsv1.AccountGroup{}
	}
	if _, err := applyMask(next, patch, req.GetUpdateMask(), maskRules{outputOnly: groupOutputOnlyPaths}); err != nil {
		return nil, err
	}
	if err := s.checkGroup(ctx, next); err != nil {
		return nil, err
	}
	next.UpdatedAt = timestamppb.New(s.now())
	if err := s.store.UpdateGroup(ctx, next); err != nil {
		return nil, about(kindGroup, next.Id, err)
	}
	return next, nil
}

// DeleteGroup implements [crsv1.AdminServiceServer.DeleteGroup].
func (s *Service) DeleteGroup(ctx context.Context, req *crsv1.DeleteGroupRequest) (*emptypb.Empty, error) {
	id := req.GetId()
	var err error
	if id == "" {
		err = invalid("id", "required")
	} else if err = s.store.DeleteGroup(ctx, id); err != nil {
		err = about(kindGroup, id, err)
	}
	if err != nil {
		return nil, s.toStatus(ctx, "DeleteGroup", err)
	}
	s.log.Info("group deleted", zap.String("group_id", id))
	return &emptypb.Empty{}, nil
}

func (s *Service) loadGroup(ctx context.Context, id string) (*crsv1.AccountGroup, error) {
	if id == "" {
		return nil, invalid("id", "required")
	}
	g, err := s.store.GetGroup(ctx, id)
	if err != nil {
		return nil, about(kindGroup, id, err)
	}
	return g, nil
}

// checkGroup validates g; every member must exist and belong to the group's platform.
func (s *Service) checkGroup(ctx context.Context, g *crsv1.AccountGroup) error {
	var c checker
	c.length("name", g.Name, 1, maxName)
	c.length("description", g.Description, 0, maxDescription)
	if g.Platform == "" {
		c.add("platform", "required (one of claude, gemini, openai, droid)")
	} else {
		c.oneOf("platform", g.Platform, groupPlatforms...)
	}
	c.stringList("account_ids", g.AccountIds, maxGroupMembers, maxItemLen)
	if err := c.err(); err != nil {
		return err
	}
	for i, id := range g.AccountIds {
		field := fmt.Sprintf("account_ids[%d]", i)
		a, err := s.store.GetAccount(ctx, id)
		switch {
		case isNotFound(err):
			c.add(field, "account %s not found", id)
		case err != nil:
			return about(kindAccount, id, err)
		case a.Account.GetPlatform() != g.Platform:
			c.add(field, "account %s is on platform %s, not %s", id, a.Account.GetPlatform(), g.Platform)
		}
	}
	return c.err()
}
