package admin

import (
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"

	"github.com/crsrelay/crs/controlplane/notify"
	crsv1 "github.com/crsrelay/crs/gen/crs/v1"
)

func TestNotificationTargetsRedactedAndKept(t *testing.T) {
	f := newOAuthFixture(t)
	ctx := t.Context()
	in := []*crsv1.NotificationTarget{
		{Id: "hook", Name: "hook", Enabled: true, Events: []string{notify.KindBlocked}, Proxy: "socks5://u:pw@127.0.0.1:1080",
			Target: &crsv1.NotificationTarget_Webhook{Webhook: &crsv1.WebhookTarget{Url: "https://example.com/hook?token=t0k", Secret: "whsec"}}},
		{Name: "tg", Target: &crsv1.NotificationTarget_Telegram{Telegram: &crsv1.TelegramTarget{BotToken: "123:ABC", ChatId: "-1"}}},
		{Name: "mail", Target: &crsv1.NotificationTarget_Smtp{Smtp: &crsv1.SmtpTarget{Host: "smtp.example.com", Username: "u", Password: "mailpw", From: "crs@example.com", To: []string{"ops@example.com"}}}},
	}
	out, err := f.svc.PutNotificationTargets(ctx, &crsv1.PutNotificationTargetsRequest{Targets: in})
	require.NoError(t, err)
	require.Len(t, out.GetTargets(), 3)
	hook, tg, mail := out.GetTargets()[0], out.GetTargets()[1], out.GetTargets()[2]
	require.Equal(t, "webhook", hook.GetType())
	require.Equal(t, "https://example.com/REDACTED", hook.GetWebhook().GetUrl())
	require.Empty(t, hook.GetWebhook().GetSecret())
	require.Equal(t, "socks5://u:REDACTED@127.0.0.1:1080", hook.GetProxy())
	require.NotEmpty(t, tg.GetId(), "ids are assigned")
	require.Empty(t, tg.GetTelegram().GetBotToken())
	require.Equal(t, "-1", tg.GetTelegram().GetChatId())
	require.Empty(t, mail.GetSmtp().GetPassword())

	// Put back what List returned, with one change: every secret is kept.
	listed, err := f.svc.ListNotificationTargets(ctx, &crsv1.ListNotificationTargetsRequest{})
	require.NoError(t, err)
	listed.GetTargets()[1].GetTelegram().ChatId = "-2"
	_, err = f.svc.PutNotificationTargets(ctx, &crsv1.PutNotificationTargetsRequest{Targets: listed.GetTargets()})
	require.NoError(t, err)
	stored, err := notify.NewTargetStore(f.st, f.sealer).Load(ctx)
	require.NoError(t, err)
	require.Equal(t, "https://example.com/hook?token=t0k", stored[0].GetWebhook().GetUrl())
	require.Equal(t, "whsec", stored[0].GetWebhook().GetSecret())
	require.Equal(t, "socks5://u:pw@127.0.0.1:1080", stored[0].GetProxy())
	require.Equal(t, "123:ABC", stored[1].GetTelegram().GetBotToken())
	require.Equal(t, "-2", stored[1].GetTelegram().GetChatId())
	require.Equal(t, "mailpw", stored[2].GetSmtp().GetPassword())

	// A target missing from the list is deleted.
	_, err = f.svc.PutNotificationTargets(ctx, &crsv1.PutNotificationTargetsRequest{Targets: listed.GetTargets()[:1]})
	require.NoError(t, err)
	stored, err = notify.NewTargetStore(f.st, f.sealer).Load(ctx)
	require.NoError(t, err)
	require.Len(t, stored, 1)
}

func TestNotificationTargetValidation(t *testing.T) {
	f := newOAuthFixture(t)
	tests := []struct {
		name   string
		target *crsv1.NotificationTarget
		want   string
	}{
		{"no type", &crsv1.NotificationTarget{Name: "x"}, "targets[0]: exactly one of webhook"},
		{"no name", &crsv1.NotificationTarget{Target: &crsv1.NotificationTarget_Slack{Slack: &crsv1.SlackTarget{Url: "https://h/x"}}}, "targets[0].name: required"},
		{"bad url", &crsv1.NotificationTarget{Name: "x", Target: &crsv1.NotificationTarget_Slack{Slack: &crsv1.SlackTarget{Url: "ftp://h/x"}}}, "targets[0].slack.url: must be an http:// or https:// URL"},
		{"unknown event", &crsv1.NotificationTarget{Name: "x", Events: []string{"account.exploded"}, Target: &crsv1.NotificationTarget_Slack{Slack: &crsv1.SlackTarget{Url: "https://h/x"}}}, "targets[0].events[0]"},
		{"bad proxy", &crsv1.NotificationTarget{Name: "x", Proxy: "gopher://p:1", Target: &crsv1.NotificationTarget_Slack{Slack: &crsv1.SlackTarget{Url: "https://h/x"}}}, "targets[0].proxy"},
		{"telegram without token", &crsv1.NotificationTarget{Name: "x", Target: &crsv1.NotificationTarget_Telegram{Telegram: &crsv1.TelegramTarget{ChatId: "1"}}}, "targets[0].telegram.bot_token: required"},
		{"bark level", &crsv1.NotificationTarget{Name: "x", Target: &crsv1.NotificationTarget_Bark{Bark: &crsv1.BarkTarget{DeviceKey: "d", Level: "loud"}}}, "targets[0].bark.level"},
		{"smtp clear-text password", &crsv1.NotificationTarget{Name: "x", Target: &crsv1.NotificationTarget_Smtp{Smtp: &crsv1.SmtpTarget{
			Host: "smtp.example.com", Username: "u", Password: "p", From: "a@example.com", To: []string{"b@example.com"}, Security: "none"}}}, "clear text"},
		{"smtp bad address", &crsv1.NotificationTarget{Name: "x", Target: &crsv1.NotificationTarget_Smtp{Smtp: &crsv1.SmtpTarget{
			Host: "h", From: "not an address", To: []string{"b@example.com"}}}}, "targets[0].smtp.from"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := f.svc.PutNotificationTargets(t.Context(), &crsv1.PutNotificationTargetsRequest{Targets: []*crsv1.NotificationTarget{tt.target}})
			requireCode(t, err, codes.InvalidArgument, tt.want)
		})
	}
	dup := &crsv1.NotificationTarget{Id: "a", Name: "x", Target: &crsv1.NotificationTarget_Slack{Slack: &crsv1.SlackTarget{Url: "https://h/x"}}}
	_, err := f.svc.PutNotificationTargets(t.Context(), &crsv1.PutNotificationTargetsRequest{Targets: []*crsv1.NotificationTarget{dup, dup}})
	requireCode(t, err, codes.InvalidArgument, "targets[1].id: duplicate")
}

func TestTestNotification(t *testing.T) {
	f := newOAuthFixture(t)
	var (
		mu   sync.Mutex
		sigs []string
		fail = 1
	)
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		defer mu.Unlock()
		if fail > 0 {
			fail--
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		ok := r.Header.Get(notify.SignatureHeader) == notify.Signature("whsec", body)
		sigs = append(sigs, map[bool]string{true: "valid", false: "invalid"}[ok])
	}))
	t.Cleanup(recv.Close)

	_, err := f.svc.TestNotification(t.Context(), &crsv1.TestNotificationRequest{})
	requireCode(t, err, codes.FailedPrecondition, "no notification target")

	_, err = f.svc.PutNotificationTargets(t.Context(), &crsv1.PutNotificationTargetsRequest{Targets: []*crsv1.NotificationTarget{
		{Id: "hook", Name: "hook", Enabled: true, Target: &crsv1.NotificationTarget_Webhook{Webhook: &crsv1.WebhookTarget{Url: recv.URL + "/h", Secret: "whsec"}}},
	}})
	require.NoError(t, err)

	resp, err := f.svc.TestNotification(t.Context(), &crsv1.TestNotificationRequest{})
	require.NoError(t, err)
	require.Len(t, resp.GetResults(), 1)
	r := resp.GetResults()[0]
	require.True(t, r.GetDelivered(), r.GetError())
	require.Equal(t, int32(2), r.GetAttempts(), "one failure, one retry")
	require.Equal(t, "webhook", r.GetType())

	// An unsaved edit of the stored target: its secret (left REDACTED) comes from the store.
	resp, err = f.svc.TestNotification(t.Context(), &crsv1.TestNotificationRequest{Target: &crsv1.NotificationTarget{
		Id: "hook", Name: "hook v2", Target: &crsv1.NotificationTarget_Webhook{Webhook: &crsv1.WebhookTarget{Url: recv.URL + "/h2", Secret: Redacted}},
	}})
	require.NoError(t, err)
	require.True(t, resp.GetResults()[0].GetDelivered())
	mu.Lock()
	defer mu.Unlock()
	require.Equal(t, []string{"valid", "valid"}, sigs, "signed with the stored secret")
}
