package admin

import (
	"context"
	"fmt"
	"net"
	"net/mail"
	"net/url"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/crsrelay/crs/controlplane/notify"
	crsv1 "github.com/crsrelay/crs/gen/crs/v1"
)

// NotificationTargets stores the notification targets, secrets included (*notify.TargetStore).
type NotificationTargets interface {
	Load(ctx context.Context) ([]*crsv1.NotificationTarget, error)
	Save(ctx context.Context, targets []*crsv1.NotificationTarget) error
}

// NotificationTester sends a test event to targets and reports per target (*notify.Notifier).
type NotificationTester interface {
	Test(ctx context.Context, targets []*crsv1.NotificationTarget) []*crsv1.NotificationTestResult
}

var (
	_ NotificationTargets = (*notify.TargetStore)(nil)
	_ NotificationTester  = (*notify.Notifier)(nil)
)

// maxTargets bounds the list of notification targets.
const maxTargets = 50

var errNotifyOff = status.Error(codes.FailedPrecondition, "notifications are not configured on this control plane")

// ListNotificationTargets implements [crsv1.AdminServiceServer.ListNotificationTargets].
func (s *Service) ListNotificationTargets(ctx context.Context, _ *crsv1.ListNotificationTargetsRequest) (*crsv1.ListNotificationTargetsResponse, error) {
	resp, err := s.listTargets(ctx)
	return resp, s.toStatus(ctx, "ListNotificationTargets", err)
}

func (s *Service) listTargets(ctx context.Context) (*crsv1.ListNotificationTargetsResponse, error) {
	if s.targets == nil {
		return nil, errNotifyOff
	}
	stored, err := s.targets.Load(ctx)
	if err != nil {
		return nil, err
	}
	return targetsOutput(stored), nil
}

// PutNotificationTargets implements [crsv1.AdminServiceServer.PutNotificationTargets].
func (s *Service) PutNotificationTargets(ctx context.Context, req *crsv1.PutNotificationTargetsRequest) (*crsv1.ListNotificationTargetsResponse, error) {
	resp, err := s.putTargets(ctx, req)
	return resp, s.toStatus(ctx, "PutNotificationTargets", err)
}

func (s *Service) putTargets(ctx context.Context, req *crsv1.PutNotificationTargetsRequest) (*crsv1.ListNotificationTargetsResponse, error) {
	if s.targets == nil {
		return nil, errNotifyOff
	}
	if len(req.GetTargets()) > maxTargets {
		return nil, invalid("targets", "at most %d", maxTargets)
	}
	stored, err := s.targets.Load(ctx)
	if err != nil {
		return nil, err
	}
	byID := map[string]*crsv1.NotificationTarget{}
	for _, t := range stored {
		byID[t.GetId()] = t
	}
	var c checker
	seen := map[string]bool{}
	next := make([]*crsv1.NotificationTarget, 0, len(req.GetTargets()))
	for i, in := range req.GetTargets() {
		t := proto.Clone(in).(*crsv1.NotificationTarget)
		field := fmt.Sprintf("targets[%d]", i)
		if t.Id == "" {
			if t.Id, err = newID(); err != nil {
				return nil, err
			}
		}
		c.length(field+".id", t.Id, 1, maxShortText)
		if seen[t.Id] {
			c.add(field+".id", "duplicate %q", t.Id)
		}
		seen[t.Id] = true
		if old := byID[t.Id]; old != nil {
			keepTargetSecrets(t, old)
		}
		checkTarget(&c, field, t)
		t.Type = ""
		next = append(next, t)
	}
	if err := c.err(); err != nil {
		return nil, err
	}
	if err := s.targets.Save(ctx, next); err != nil {
		return nil, err
	}
	return targetsOutput(next), nil
}

// TestNotification implements [crsv1.AdminServiceServer.TestNotification].
func (s *Service) TestNotification(ctx context.Context, req *crsv1.TestNotificationRequest) (*crsv1.TestNotificationResponse, error) {
	resp, err := s.testNotification(ctx, req)
	return resp, s.toStatus(ctx, "TestNotification", err)
}

func (s *Service) testNotification(ctx context.Context, req *crsv1.TestNotificationRequest) (*crsv1.TestNotificationResponse, error) {
	if s.targets == nil || s.tester == nil {
		return nil, errNotifyOff
	}
	stored, err := s.targets.Load(ctx)
	if err != nil {
		return nil, err
	}
	byID := map[string]*crsv1.NotificationTarget{}
	for _, t := range stored {
		byID[t.GetId()] = t
	}
	var targets []*crsv1.NotificationTarget
	var c checker
	for i, id := range req.GetTargetIds() {
		t := byID[id]
		if t == nil {
			c.add(fmt.Sprintf("target_ids[%d]", i), "no target %q", id)
			continue
		}
		targets = append(targets, t)
	}
	if in := req.GetTarget(); in != nil {
		t := proto.Clone(in).(*crsv1.NotificationTarget)
		if old := byID[t.GetId()]; old != nil && t.GetId() != "" {
			keepTargetSecrets(t, old)
		}
		checkTarget(&c, "target", t)
		targets = append(targets, t)
	}
	if err := c.err(); err != nil {
		return nil, err
	}
	if len(req.GetTargetIds()) == 0 && req.GetTarget() == nil {
		for _, t := range stored {
			if t.GetEnabled() {
				targets = append(targets, t)
			}
		}
	}
	if len(targets) == 0 {
		return nil, status.Error(codes.FailedPrecondition, "no notification target to test (none enabled)")
	}
	return &crsv1.TestNotificationResponse{Results: s.tester.Test(ctx, targets)}, nil
}

// targetsOutput is what clients see: secrets emptied, URL paths and queries and proxy passwords
// redacted, types filled in.
func targetsOutput(in []*crsv1.NotificationTarget) *crsv1.ListNotificationTargetsResponse {
	out := &crsv1.ListNotificationTargetsResponse{Targets: make([]*crsv1.NotificationTarget, 0, len(in))}
	for _, t := range in {
		o := proto.Clone(t).(*crsv1.NotificationTarget)
		secrets, urls := targetSecretFields(o)
		for _, p := range secrets {
			*p = ""
		}
		for _, p := range urls {
			*p = redactURL(*p)
		}
		o.Proxy = redactProxy(o.Proxy)
		o.Type = notify.TypeOf(o)
		out.Targets = append(out.Targets, o)
	}
	return out
}

// targetSecretFields returns pointers to t's write-only strings and to its URLs whose path and
// query are secret (webhook URLs embed their token).
func targetSecretFields(t *crsv1.NotificationTarget) (secrets, urls []*string) {
	switch c := t.GetTarget().(type) {
	case *crsv1.NotificationTarget_Webhook:
		return []*string{&c.Webhook.Secret}, []*string{&c.Webhook.Url}
	case *crsv1.NotificationTarget_Slack:
		return nil, []*string{&c.Slack.Url}
	case *crsv1.NotificationTarget_Discord:
		return nil, []*string{&c.Discord.Url}
	case *crsv1.NotificationTarget_Telegram:
		return []*string{&c.Telegram.BotToken}, nil
	case *crsv1.NotificationTarget_Feishu:
		return []*string{&c.Feishu.Secret}, []*string{&c.Feishu.Url}
	case *crsv1.NotificationTarget_Dingtalk:
		return []*string{&c.Dingtalk.Secret}, []*string{&c.Dingtalk.Url}
	case *crsv1.NotificationTarget_Wecom:
		return nil, []*string{&c.Wecom.Url}
	case *crsv1.NotificationTarget_Bark:
		return []*string{&c.Bark.DeviceKey}, nil
	case *crsv1.NotificationTarget_Smtp:
		return []*string{&c.Smtp.Password}, nil
	}
	return nil, nil
}

// redactURL keeps a URL's scheme and host and replaces the rest with /REDACTED.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if s == "" || err != nil || u.Host == "" {
		return s
	}
	if (u.Path == "" || u.Path == "/") && u.RawQuery == "" && u.User == nil {
		return s
	}
	return u.Scheme + "://" + u.Host + "/" + Redacted
}

// keepTargetSecrets puts old's secrets back into next where next has "" or Redacted (or, for a
// URL, its redacted form), if both are of the same type; likewise a redacted proxy password.
func keepTargetSecrets(next, old *crsv1.NotificationTarget) {
	if notify.TypeOf(next) == notify.TypeOf(old) {
		ns, nu := targetSecretFields(next)
		oldS, oldU := targetSecretFields(old)
		for i, p := range ns {
			if *p == "" || *p == Redacted {
				*p = *oldS[i]
			}
		}
		for i, p := range nu {
			if *p == "" || *p == redactURL(*oldU[i]) {
				*p = *oldU[i]
			}
		}
	}
	a, b := &crsv1.Account{Proxy: next.Proxy}, &crsv1.Account{Proxy: old.Proxy}
	keepSecrets(a, b)
	next.Proxy = a.Proxy
}

// barkLevels are Bark's interruption levels.
var barkLevels = []string{"active", "timeSensitive", "passive", "critical"}

// checkTarget validates one target; field is its path in the request ("targets[0]").
func checkTarget(c *checker, field string, t *crsv1.NotificationTarget) {
	c.length(field+".name", t.GetName(), 1, maxName)
	c.stringList(field+".events", t.GetEvents(), len(notify.Kinds), maxShortText, notify.Kinds...)
	if t.GetProxy() != "" {
		var pc checker
		checkProxy(&pc, t.GetProxy())
		for _, v := range pc.v {
			c.add(field+".proxy", "%s", v.Description)
		}
	}
	f := func(name string) string { return field + "." + notify.TypeOf(t) + "." + name }
	hookURL := func(u string) { c.httpURL(f("url"), u, true) }
	switch x := t.GetTarget().(type) {
	case *crsv1.NotificationTarget_Webhook:
		hookURL(x.Webhook.GetUrl())
		c.length(f("secret"), x.Webhook.GetSecret(), 0, maxSecretLen)
	case *crsv1.NotificationTarget_Slack:
		hookURL(x.Slack.GetUrl())
	case *crsv1.NotificationTarget_Discord:
		hookURL(x.Discord.GetUrl())
	case *crsv1.NotificationTarget_Wecom:
		hookURL(x.Wecom.GetUrl())
	case *crsv1.NotificationTarget_Feishu:
		hookURL(x.Feishu.GetUrl())
		c.length(f("secret"), x.Feishu.GetSecret(), 0, maxSecretLen)
	case *crsv1.NotificationTarget_Dingtalk:
		hookURL(x.Dingtalk.GetUrl())
		c.length(f("secret"), x.Dingtalk.GetSecret(), 0, maxSecretLen)
	case *crsv1.NotificationTarget_Telegram:
		c.length(f("bot_token"), x.Telegram.GetBotToken(), 1, maxItemLen)
		c.length(f("chat_id"), x.Telegram.GetChatId(), 1, maxItemLen)
		c.httpURL(f("api_base_url"), x.Telegram.GetApiBaseUrl(), false)
	case *crsv1.NotificationTarget_Bark:
		c.length(f("device_key"), x.Bark.GetDeviceKey(), 1, maxItemLen)
		c.httpURL(f("server_url"), x.Bark.GetServerUrl(), false)
		if x.Bark.GetLevel() != "" {
			c.oneOf(f("level"), x.Bark.GetLevel(), barkLevels...)
		}
		c.length(f("sound"), x.Bark.GetSound(), 0, maxShortText)
		c.length(f("group"), x.Bark.GetGroup(), 0, maxShortText)
	case *crsv1.NotificationTarget_Smtp:
		checkSMTP(c, f, x.Smtp)
	default:
		c.add(field, "exactly one of webhook, slack, discord, telegram, feishu, dingtalk, wecom, bark or smtp is required")
	}
}

func checkSMTP(c *checker, f func(string) string, m *crsv1.SmtpTarget) {
	c.length(f("host"), m.GetHost(), 1, maxItemLen)
	if m.GetPort() < 0 || m.GetPort() > 65535 {
		c.add(f("port"), "must be 0-65535 (0 = the default for the security mode)")
	}
	if _, err := mail.ParseAddress(m.GetFrom()); err != nil {
		c.add(f("from"), "must be an email address")
	}
	if len(m.GetTo()) == 0 || len(m.GetTo()) > 20 {
		c.add(f("to"), "1-20 addresses")
	}
	for i, to := range m.GetTo() {
		if _, err := mail.ParseAddress(to); err != nil {
			c.add(fmt.Sprintf("%s[%d]", f("to"), i), "must be an email address")
		}
	}
	c.length(f("username"), m.GetUsername(), 0, maxItemLen)
	c.length(f("password"), m.GetPassword(), 0, maxSecretLen)
	if m.GetSecurity() != "" {
		c.oneOf(f("security"), m.GetSecurity(), notify.SMTPStartTLS, notify.SMTPTLS, notify.SMTPNone)
	}
	if m.GetSecurity() == notify.SMTPNone && m.GetUsername() != "" && !isLoopback(m.GetHost()) {
		c.add(f("security"), "\"none\" would send the password in clear text; use starttls or tls (none is only for a local relay)")
	}
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
