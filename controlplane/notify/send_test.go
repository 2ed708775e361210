package notify

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	crsv1 "github.com/crsrelay/crs/gen/crs/v1"
)

// receiver is a local HTTP endpoint that records what it got and answers with a script.
type receiver struct {
	*httptest.Server
	mu   sync.Mutex
	got  []received
	plan []answer // consumed one per request; then 200 with ok
	ok   string   // default success body
}

type received struct {
	Path   string
	Query  url.Values
	Header http.Header
	Body   []byte
}

type answer struct {
	status int
	body   string
}

func newReceiver(t *testing.T, ok string, plan ...answer) *receiver {
	t.Helper()
	r := &receiver{plan: plan, ok: ok}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		b, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		r.got = append(r.got, received{Path: req.URL.Path, Query: req.URL.Query(), Header: req.Header.Clone(), Body: b})
		a := answer{200, r.ok}
		if len(r.plan) > 0 {
			a, r.plan = r.plan[0], r.plan[1:]
		}
		r.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(a.status)
		_, _ = io.WriteString(w, a.body)
	}))
	t.Cleanup(r.Close)
	return r
}

func (r *receiver) requests() []received {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]received(nil), r.got...)
}

func decode(t *testing.T, b []byte) map[string]any {
	t.Helper()
	var m map[string]any
	require.NoError(t, json.Unmarshal(b, &m), string(b))
	return m
}

var sampleEvent = Event{
	Kind: KindBlocked, ID: "e1", Time: time.Date(2026, 11, 26, 5, 30, 0, 0, time.UTC),
	AccountID: "acc-1", AccountName: "team claude", Platform: "claude",
	State: "blocked", PrevState: "active", Reason: "upstream 400: This organization has been disabled.",
}

func TestFormats(t *testing.T) {
	tests := []struct {
		name   string
		ok     string
		target func(url string) *crsv1.NotificationTarget
		check  func(t *testing.T, r received)
	}{
		{"webhook", "", func(u string) *crsv1.NotificationTarget {
			return &crsv1.NotificationTarget{Target: &crsv1.NotificationTarget_Webhook{Webhook: &crsv1.WebhookTarget{Url: u + "/hook", Secret: "s3cret"}}}
		}, func(t *testing.T, r received) {
			require.Equal(t, "/hook", r.Path)
			require.Equal(t, Signature("s3cret", r.Body), r.Header.Get(SignatureHeader), "signature verifies")
			require.Regexp(t, `^sha256=[0-9a-f]{64}$`, r.Header.Get(SignatureHeader))
			require.Equal(t, KindBlocked, r.Header.Get("X-CRS-Event"))
			m := decode(t, r.Body)
			require.Equal(t, "account.blocked", m["type"])
			require.Equal(t, "crs", m["service"])
			require.Equal(t, "2026-11-26T05:30:00Z", m["timestamp"])
			data := m["data"].(map[string]any)
			require.Equal(t, "acc-1", data["account_id"])
			require.Equal(t, "blocked", data["state"])
			require.Equal(t, "active", data["previous_state"])
			require.Equal(t, "Account blocked: team claude", data["title"])
			require.Contains(t, data["reason"], "organization has been disabled")
		}},
		{"slack", "ok", func(u string) *crsv1.NotificationTarget {
			return &crsv1.NotificationTarget{Target: &crsv1.NotificationTarget_Slack{Slack: &crsv1.SlackTarget{Url: u + "/services/T/B/X"}}}
		}, func(t *testing.T, r received) {
			m := decode(t, r.Body)
			require.Len(t, m, 1)
			require.Contains(t, m["text"], "*Account blocked: team claude*\n*Account*: team claude (acc-1)")
		}},
		{"discord", "", func(u string) *crsv1.NotificationTarget {
			return &crsv1.NotificationTarget{Target: &crsv1.NotificationTarget_Discord{Discord: &crsv1.DiscordTarget{Url: u + "/api/webhooks/1/x"}}}
		}, func(t *testing.T, r received) {
			embeds := decode(t, r.Body)["embeds"].([]any)
			require.Len(t, embeds, 1)
			e := embeds[0].(map[string]any)
			require.Equal(t, "Account blocked: team claude", e["title"])
			require.Equal(t, float64(0xE74C3C), e["color"])
			require.Equal(t, "2026-11-26T05:30:00Z", e["timestamp"])
			fields := e["fields"].([]any)
			require.Equal(t, "Account", fields[0].(map[string]any)["name"])
		}},
		{"telegram", `{"ok":true}`, func(u string) *crsv1.NotificationTarget {
			return &crsv1.NotificationTarget{Target: &crsv1.NotificationTarget_Telegram{Telegram: &crsv1.TelegramTarget{BotToken: "123:ABC", ChatId: "-100", ApiBaseUrl: u}}}
		}, func(t *testing.T, r received) {
			require.Equal(t, "/bot123:ABC/sendMessage", r.Path)
			m := decode(t, r.Body)
			require.Equal(t, "-100", m["chat_id"])
			require.Equal(t, true, m["disable_web_page_preview"])
			require.Contains(t, m["text"], "Account blocked: team claude\nAccount: team claude (acc-1)")
		}},
		{"feishu", `{"code":0,"msg":"success"}`, func(u string) *crsv1.NotificationTarget {
			return &crsv1.NotificationTarget{Target: &crsv1.NotificationTarget_Feishu{Feishu: &crsv1.FeishuTarget{Url: u + "/open-apis/bot/v2/hook/x", Secret: "fs"}}}
		}, func(t *testing.T, r received) {
			m := decode(t, r.Body)
			require.Equal(t, "interactive", m["msg_type"])
			card := m["card"].(map[string]any)
			header := card["header"].(map[string]any)
			require.Equal(t, "red", header["template"])
			require.Equal(t, "Account blocked: team claude", header["title"].(map[string]any)["content"])
			ts := m["timestamp"].(string)
			sec, err := strconv.ParseInt(ts, 10, 64)
			require.NoError(t, err)
			require.WithinDuration(t, time.Now(), time.Unix(sec, 0), time.Minute, "timestamp in seconds")
			require.Equal(t, FeishuSign("fs", ts), m["sign"])
		}},
		{"dingtalk", `{"errcode":0,"errmsg":"ok"}`, func(u string) *crsv1.NotificationTarget {
			return &crsv1.NotificationTarget{Target: &crsv1.NotificationTarget_Dingtalk{Dingtalk: &crsv1.DingTalkTarget{Url: u + "/robot/send?access_token=tok", Secret: "SECx"}}}
		}, func(t *testing.T, r received) {
			require.Equal(t, "tok", r.Query.Get("access_token"), "the URL's own query is kept")
			ts := r.Query.Get("timestamp")
			ms, err := strconv.ParseInt(ts, 10, 64)
			require.NoError(t, err)
			require.WithinDuration(t, time.Now(), time.UnixMilli(ms), time.Minute, "timestamp in milliseconds")
			require.Equal(t, DingTalkSign("SECx", ts), r.Query.Get("sign"))
			m := decode(t, r.Body)
			require.Equal(t, "markdown", m["msgtype"])
			md := m["markdown"].(map[string]any)
			require.Equal(t, "Account blocked: team claude", md["title"])
			require.Contains(t, md["text"], "### Account blocked: team claude\n\n**Account**: team claude (acc-1)")
		}},
		{"wecom", `{"errcode":0,"errmsg":"ok"}`, func(u string) *crsv1.NotificationTarget {
			return &crsv1.NotificationTarget{Target: &crsv1.NotificationTarget_Wecom{Wecom: &crsv1.WeComTarget{Url: u + "/cgi-bin/webhook/send?key=k"}}}
		}, func(t *testing.T, r received) {
			m := decode(t, r.Body)
			require.Equal(t, "markdown", m["msgtype"])
			require.Contains(t, m["markdown"].(map[string]any)["content"], "**Account blocked: team claude**\n**Account**: team claude (acc-1)")
		}},
		{"bark", `{"code":200,"message":"success"}`, func(u string) *crsv1.NotificationTarget {
			return &crsv1.NotificationTarget{Target: &crsv1.NotificationTarget_Bark{Bark: &crsv1.BarkTarget{ServerUrl: u + "/push", DeviceKey: "dev", Sound: "alarm"}}}
		}, func(t *testing.T, r received) {
			require.Equal(t, "/push", r.Path)
			m := decode(t, r.Body)
			require.Equal(t, "dev", m["device_key"])
			require.Equal(t, "Account blocked: team claude", m["title"])
			require.Equal(t, "timeSensitive", m["level"])
			require.Equal(t, "alarm", m["sound"])
			require.Equal(t, "crs", m["group"])
			require.Contains(t, m["body"], "Account: team claude (acc-1)")
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newReceiver(t, tt.ok)
			require.NoError(t, send(t.Context(), tt.target(r.URL), sampleEvent, 5*time.Second))
			got := r.requests()
			require.Len(t, got, 1)
			require.Equal(t, "application/json; charset=utf-8", got[0].Header.Get("Content-Type"))
			tt.check(t, got[0])
		})
	}
}

func TestPlatformRefusalsAreErrors(t *testing.T) {
	tests := []struct {
		name   string
		status int
		body   string
		target func(u string) *crsv1.NotificationTarget
		retry  bool
	}{
		{"dingtalk errcode", 200, `{"errcode":310000,"errmsg":"sign not match"}`, func(u string) *crsv1.NotificationTarget {
			return &crsv1.NotificationTarget{Target: &crsv1.NotificationTarget_Dingtalk{Dingtalk: &crsv1.DingTalkTarget{Url: u}}}
		}, false},
		{"feishu code", 200, `{"code":19021,"msg":"sign match fail"}`, func(u string) *crsv1.NotificationTarget {
			return &crsv1.NotificationTarget{Target: &crsv1.NotificationTarget_Feishu{Feishu: &crsv1.FeishuTarget{Url: u}}}
		}, false},
		{"telegram not ok", 200, `{"ok":false,"description":"chat not found"}`, func(u string) *crsv1.NotificationTarget {
			return &crsv1.NotificationTarget{Target: &crsv1.NotificationTarget_Telegram{Telegram: &crsv1.TelegramTarget{ApiBaseUrl: u, BotToken: "t"}}}
		}, false},
		{"slack 404", 404, `no_service`, func(u string) *crsv1.NotificationTarget {
			return &crsv1.NotificationTarget{Target: &crsv1.NotificationTarget_Slack{Slack: &crsv1.SlackTarget{Url: u}}}
		}, false},
		{"webhook 503", 503, `down`, func(u string) *crsv1.NotificationTarget {
			return &crsv1.NotificationTarget{Target: &crsv1.NotificationTarget_Webhook{Webhook: &crsv1.WebhookTarget{Url: u}}}
		}, true},
		{"webhook 429", 429, `slow down`, func(u string) *crsv1.NotificationTarget {
			return &crsv1.NotificationTarget{Target: &crsv1.NotificationTarget_Webhook{Webhook: &crsv1.WebhookTarget{Url: u}}}
		}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newReceiver(t, "", answer{tt.status, tt.body})
			err := send(t.Context(), tt.target(r.URL+"/secret-path?token=abc"), sampleEvent, 5*time.Second)
			require.Error(t, err)
			require.Equal(t, tt.retry, retryable(err))
			require.NotContains(t, err.Error(), "secret-path", "target URLs are secrets")
			require.NotContains(t, err.Error(), "token=abc")
		})
	}
}

func TestDeadReceiverIsRetryableAndQuick(t *testing.T) {
	r := newReceiver(t, "")
	r.Close()
	start := time.Now()
	err := send(t.Context(), &crsv1.NotificationTarget{Target: &crsv1.NotificationTarget_Slack{Slack: &crsv1.SlackTarget{Url: r.URL + "/x"}}}, sampleEvent, time.Second)
	require.Error(t, err)
	require.True(t, retryable(err))
	require.Less(t, time.Since(start), 2*time.Second)

	err = send(t.Context(), &crsv1.NotificationTarget{Proxy: "socks5://127.0.0.1:1", Target: &crsv1.NotificationTarget_Slack{Slack: &crsv1.SlackTarget{Url: "https://hooks.example/x"}}}, sampleEvent, time.Second)
	require.ErrorContains(t, err, "proxy socks5://127.0.0.1:1: unreachable")
}
