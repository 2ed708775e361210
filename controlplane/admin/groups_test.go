package admin

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	crsv1 "github.com/crsrelay/crs/gen/crs/v1"
)

func TestGroups(t *testing.T) {
	f := newFixture(t)
	official := createAccount(t, f, validAccount("claude-official"))
	console := createAccount(t, f, validAccount("claude-console"))
	gem := createAccount(t, f, validAccount("gemini"))

	g, err := f.svc.CreateGroup(f.ctx, &crsv1.CreateGroupRequest{Group: &crsv1.AccountGroup{Id: "mine", Name: "claude pool", Platform: "claude", AccountIds: []string{official.Id, console.Id}}})
	require.NoError(t, err)
	require.NotEqual(t, "mine", g.Id)
	require.Equal(t, testNow, g.CreatedAt.AsTime())

	tests := []struct {
		name string
		g    *crsv1.AccountGroup
		want string
	}{
		{"missing name", &crsv1.AccountGroup{Platform: "claude"}, "name: required"},
		{"long name", &crsv1.AccountGroup{Name: strings.Repeat("x", 101), Platform: "claude"}, "name: must be 1-100"},
		{"long description", &crsv1.AccountGroup{Name: "g", Platform: "claude", Description: strings.Repeat("x", 501)}, "description:"},
		{"missing platform", &crsv1.AccountGroup{Name: "g"}, "platform: required"},
		{"bad platform", &crsv1.AccountGroup{Name: "g", Platform: "bedrock"}, "platform: must be one of claude, gemini, openai, droid"},
		{"unknown member", &crsv1.AccountGroup{Name: "g", Platform: "claude", AccountIds: []string{"ghost"}}, "account_ids[0]: account ghost not found"},
		{"member of other platform", &crsv1.AccountGroup{Name: "g", Platform: "claude", AccountIds: []string{official.Id, gem.Id}}, "account_ids[1]: account " + gem.Id + " is on platform gemini"},
		{"duplicate member", &crsv1.AccountGroup{Name: "g", Platform: "claude", AccountIds: []string{official.Id, official.Id}}, "account_ids[1]: duplicate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := f.svc.CreateGroup(f.ctx, &crsv1.CreateGroupRequest{Group: tt.g})
			requireCode(t, err, codes.InvalidArgument, tt.want)
		})
	}

	upd, err := f.svc.UpdateGroup(f.ctx, &crsv1.UpdateGroupRequest{Id: g.Id, Group: &crsv1.AccountGroup{AccountIds: []string{console.Id}, Name: "ignored"}, UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"account_ids"}}})
	require.NoError(t, err)
	require.Equal(t, []string{console.Id}, upd.AccountIds)
	require.Equal(t, "claude pool", upd.Name)

	// Changing the platform re-checks the members.
	_, err = f.svc.UpdateGroup(f.ctx, &crsv1.UpdateGroupRequest{Id: g.Id, Group: &crsv1.AccountGroup{Platform: "gemini"}, UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"platform"}}})
	requireCode(t, err, codes.InvalidArgument, "account_ids[0]")
	_, err = f.svc.UpdateGroup(f.ctx, &crsv1.UpdateGroupRequest{Id: g.Id, Group: &crsv1.AccountGroup{}, UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"created_at"}}})
	requireCode(t, err, codes.InvalidArgument, "created_at: output only")

	_, err = f.svc.CreateGroup(f.ctx, &crsv1.CreateGroupRequest{Group: &crsv1.AccountGroup{Name: "gem", Platform: "gemini", AccountIds: []string{gem.Id}}})
	require.NoError(t, err)
	list, err := f.svc.ListGroups(f.ctx, &crsv1.ListGroupsRequest{Platform: "gemini"})
	require.NoError(t, err)
	require.Len(t, list.Groups, 1)
	require.Equal(t, "gem", list.Groups[0].Name)
	all, err := f.svc.ListGroups(f.ctx, &crsv1.ListGroupsRequest{})
	require.NoError(t, err)
	require.Equal(t, int32(2), all.TotalSize)
	_, err = f.svc.ListGroups(f.ctx, &crsv1.ListGroupsRequest{Platform: "x"})
	requireCode(t, err, codes.InvalidArgument, "platform:")

	_, err = f.svc.DeleteGroup(f.ctx, &crsv1.DeleteGroupRequest{Id: g.Id})
	require.NoError(t, err)
	for name, call := range map[string]func() error{
		"get":    func() error { _, err := f.svc.GetGroup(f.ctx, &crsv1.GetGroupRequest{Id: g.Id}); return err },
		"delete": func() error { _, err := f.svc.DeleteGroup(f.ctx, &crsv1.DeleteGroupRequest{Id: g.Id}); return err },
		"update": func() error {
			_, err := f.svc.UpdateGroup(f.ctx, &crsv1.UpdateGroupRequest{Id: g.Id, Group: &crsv1.AccountGroup{Name: "x"}, UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"name"}}})
			return err
		},
	} {
		t.Run("unknown "+name, func(t *testing.T) {
			requireCode(t, call(), codes.NotFound, "group "+g.Id+" not found")
		})
	}
}
