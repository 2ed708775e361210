package notify

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/protobuf/proto"

	"github.com/crsrelay/crs/controlplane/secret"
	"github.com/crsrelay/crs/controlplane/store"
	crsv1 "github.com/crsrelay/crs/gen/crs/v1"
)

// TargetsBlob is the store config blob the targets are kept in.
const TargetsBlob = "notification_targets"

// targetsAAD binds the sealed blob to its purpose.
var targetsAAD = []byte("crs/notification-targets/v1")

// TargetStore keeps the notification targets in the store, sealed (they hold webhook URLs,
// tokens and passwords). It is safe for concurrent use.
type TargetStore struct {
	blobs  store.ConfigBlobStore
	sealer *secret.Sealer
}

var _ TargetSource = (*TargetStore)(nil)

// NewTargetStore returns a TargetStore.
func NewTargetStore(blobs store.ConfigBlobStore, sealer *secret.Sealer) *TargetStore {
	return &TargetStore{blobs: blobs, sealer: sealer}
}

// Load returns the stored targets, with their secrets; none before the first Save.
func (s *TargetStore) Load(ctx context.Context) ([]*crsv1.NotificationTarget, error) {
	blob, err := s.blobs.GetConfigBlob(ctx, TargetsBlob)
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("load notification targets: %w", err)
	}
	pt, err := s.sealer.Open(blob, targetsAAD)
	if err != nil {
		return nil, fmt.Errorf("open notification targets: %w", err)
	}
	var list crsv1.ListNotificationTargetsResponse
	if err := proto.Unmarshal(pt, &list); err != nil {
		return nil, fmt.Errorf("decode notification targets: %w", err)
	}
	for _, t := range list.Targets {
		t.Type = TypeOf(t)
	}
	return list.Targets, nil
}

// Save replaces the stored targets.
func (s *TargetStore) Save(ctx context.Context, targets []*crsv1.NotificationTarget) error {
	pt, err := proto.Marshal(&crsv1.ListNotificationTargetsResponse{Targets: targets})
	if err != nil {
		return fmt.Errorf("encode notification targets: %w", err)
	}
	sealed, err := s.sealer.Seal(pt, targetsAAD)
	if err != nil {
		return err
	}
	if err := s.blobs.PutConfigBlob(ctx, TargetsBlob, sealed); err != nil {
		return fmt.Errorf("store notification targets: %w", err)
	}
	return nil
}

// Target types (NotificationTarget.type).
const (
	TypeWebhook  = "webhook"
	TypeSlack    = "slack"
	TypeDiscord  = "discord"
	TypeTelegram = "telegram"
	TypeFeishu   = "feishu"
	TypeDingTalk = "dingtalk"
	TypeWeCom    = "wecom"
	TypeBark     = "bark"
	TypeSMTP     = "smtp"
)

// TypeOf names t's kind from its oneof ("" when none is set).
func TypeOf(t *crsv1.NotificationTarget) string {
	switch t.GetTarget().(type) {
	case *crsv1.NotificationTarget_Webhook:
		return TypeWebhook
	case *crsv1.NotificationTarget_Slack:
		return TypeSlack
	case *crsv1.NotificationTarget_Discord:
		return TypeDiscord
	case *crsv1.NotificationTarget_Telegram:
		return TypeTelegram
	case *crsv1.NotificationTarget_Feishu:
		return TypeFeishu
	case *crsv1.NotificationTarget_Dingtalk:
		return TypeDingTalk
	case *crsv1.NotificationTarget_Wecom:
		return TypeWeCom
	case *crsv1.NotificationTarget_Bark:
		return TypeBark
	case *crsv1.NotificationTarget_Smtp:
		return TypeSMTP
	}
	return ""
}
