package notify

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/crsrelay/crs/controlplane/proxyhttp"
	crsv1 "github.com/crsrelay/crs/gen/crs/v1"
)

// Default endpoints.
const (
	DefaultTelegramAPI = "https://api.telegram.org"
	DefaultBarkServer  = "https://api.day.app/push"
)

// SignatureHeader carries the generic webhook's HMAC: "sha256=" + hex(HMAC-SHA256(secret, body)).
const SignatureHeader = "X-CRS-Signature"

// maxAnswer bounds how much of a target's answer is read.
const maxAnswer = 64 << 10

// sendError is a failed send and whether trying again may help.
type sendError struct {
	retry bool
	err   error
}

func (e *sendError) Error() string { return e.err.Error() }
func (e *sendError) Unwrap() error { return e.err }

// retryable reports whether a send that failed with err may succeed if tried again: network
// errors, timeouts, 408, 429 and 5xx answers; not bad configuration or refusals.
func retryable(err error) bool {
	var se *sendError
	if errors.As(err, &se) {
		return se.retry
	}
	return true
}

func permanent(format string, args ...any) error {
	return &sendError{retry: false, err: fmt.Errorf(format, args...)}
}

// send delivers ev to t (the production sender).
func send(ctx context.Context, t *crsv1.NotificationTarget, ev Event, timeout time.Duration) error {
	switch c := t.GetTarget().(type) {
	case *crsv1.NotificationTarget_Webhook:
		return sendWebhook(ctx, t.GetProxy(), c.Webhook, ev, timeout)
	case *crsv1.NotificationTarget_Slack:
		body := map[string]any{"text": "*" + ev.Title() + "*\n" + ev.markdownBody("*")}
		return post(ctx, t.GetProxy(), c.Slack.GetUrl(), body, nil, timeout, nil)
	case *crsv1.NotificationTarget_Discord:
		return post(ctx, t.GetProxy(), c.Discord.GetUrl(), discordBody(ev), nil, timeout, nil)
	case *crsv1.NotificationTarget_Telegram:
		return sendTelegram(ctx, t.GetProxy(), c.Telegram, ev, timeout)
	case *crsv1.NotificationTarget_Feishu:
		return sendFeishu(ctx, t.GetProxy(), c.Feishu, ev, timeout)
	case *crsv1.NotificationTarget_Dingtalk:
		return sendDingTalk(ctx, t.GetProxy(), c.Dingtalk, ev, timeout)
	case *crsv1.NotificationTarget_Wecom:
		body := map[string]any{"msgtype": "markdown", "markdown": map[string]any{
			"content": "**" + ev.Title() + "**\n" + ev.markdownBody("**"),
		}}
		return post(ctx, t.GetProxy(), c.Wecom.GetUrl(), body, nil, timeout, errcodeZero)
	case *crsv1.NotificationTarget_Bark:
		return sendBark(ctx, t.GetProxy(), c.Bark, ev, timeout)
	case *crsv1.NotificationTarget_Smtp:
		return sendSMTP(ctx, c.Smtp, ev, timeout)
	}
	return permanent("target %q has no type", t.GetId())
}

// sendWebhook posts {type, service, timestamp, data}, signed when a secret is set.
func sendWebhook(ctx context.Context, proxy string, w *crsv1.WebhookTarget, ev Event, timeout time.Duration) error {
	body, err := json.Marshal(map[string]any{
		"type": ev.Kind, "service": "crs", "timestamp": ev.Time.UTC().Format(time.RFC3339), "data": ev.webhookData(),
	})
	if err != nil {
		return permanent("encode webhook body: %w", err)
	}
	headers := map[string]string{"X-CRS-Event": ev.Kind}
	if w.GetSecret() != "" {
		headers[SignatureHeader] = Signature(w.GetSecret(), body)
	}
	return post(ctx, proxy, w.GetUrl(), json.RawMessage(body), headers, timeout, nil)
}

// Signature is the value of SignatureHeader for body signed with secret.
func Signature(secret string, body []byte) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

func discordBody(ev Event) map[string]any {
	colors := map[string]int{"bad": 0xE74C3C, "warn": 0xF39C12, "good": 0x2ECC71, "info": 0x3498DB}
	var fields []map[string]any
	for _, f := range ev.fields() {
		fields = append(fields, map[string]any{"name": f.Name, "value": clip(f.Value, 1024), "inline": len(f.Value) < 40})
	}
	return map[string]any{"embeds": []map[string]any{{
		"title": clip(ev.Title(), 256), "color": colors[ev.severity()], "fields": fields,
		"timestamp": ev.Time.UTC().Format(time.RFC3339),
	}}}
}

func sendTelegram(ctx context.Context, proxy string, tg *crsv1.TelegramTarget, ev Event, timeout time.Duration) error {
	base := strings.TrimRight(tg.GetApiBaseUrl(), "/")
	if base == "" {
		base = DefaultTelegramAPI
	}
	body := map[string]any{"chat_id": tg.GetChatId(), "text": clip(ev.Text(), 4096), "disable_web_page_preview": true}
	return post(ctx, proxy, base+"/bot"+tg.GetBotToken()+"/sendMessage", body, nil, timeout, func(b []byte) error {
		var r struct {
			OK          bool   `json:"ok"`
			Description string `json:"description"`
		}
		if json.Unmarshal(b, &r) == nil && !r.OK {
			return permanent("telegram refused: %s", clip(r.Description, 200))
		}
		return nil
	})
}

func sendFeishu(ctx context.Context, proxy string, f *crsv1.FeishuTarget, ev Event, timeout time.Duration) error {
	templates := map[string]string{"bad": "red", "warn": "orange", "good": "green", "info": "blue"}
	body := map[string]any{
		"msg_type": "interactive",
		"card": map[string]any{
			"header":   map[string]any{"title": map[string]any{"tag": "plain_text", "content": ev.Title()}, "template": templates[ev.severity()]},
			"elements": []any{map[string]any{"tag": "div", "text": map[string]any{"tag": "lark_md", "content": ev.markdownBody("**")}}},
		},
	}
	if f.GetSecret() != "" {
		ts := strconv.FormatInt(time.Now().Unix(), 10)
		body["timestamp"], body["sign"] = ts, FeishuSign(f.GetSecret(), ts)
	}
	return post(ctx, proxy, f.GetUrl(), body, nil, timeout, func(b []byte) error {
		var r struct {
			Code       *int   `json:"code"`
			StatusCode *int   `json:"StatusCode"`
			Msg        string `json:"msg"`
		}
		if json.Unmarshal(b, &r) != nil {
			return nil
		}
		if (r.Code != nil && *r.Code != 0) || (r.Code == nil && r.StatusCode != nil && *r.StatusCode != 0) {
			return permanent("feishu refused: %s", clip(r.Msg, 200))
		}
		return nil
	})
}

// FeishuSign is a Feishu bot signature: base64(HMAC-SHA256(key = timestamp+"\n"+secret, empty
// message)), timestamp in seconds.
func FeishuSign(secret, ts string) string {
	m := hmac.New(sha256.New, []byte(ts+"\n"+secret))
	return base64.StdEncoding.EncodeToString(m.Sum(nil))
}

func sendDingTalk(ctx context.Context, proxy string, d *crsv1.DingTalkTarget, ev Event, timeout time.Duration) error {
	target := d.GetUrl()
	if d.GetSecret() != "" {
		u, err := url.Parse(target)
		if err != nil {
			return permanent("dingtalk url: not a URL")
		}
		ts := strconv.FormatInt(time.Now().UnixMilli(), 10)
		q := u.Query()
		q.Set("timestamp", ts)
		q.Set("sign", DingTalkSign(d.GetSecret(), ts))
		u.RawQuery = q.Encode()
		target = u.String()
	}
	body := map[string]any{"msgtype": "markdown", "markdown": map[string]any{
		"title": ev.Title(),
		"text":  "### " + ev.Title() + "\n\n" + strings.ReplaceAll(ev.markdownBody("**"), "\n", "\n\n"),
	}}
	return post(ctx, proxy, target, body, nil, timeout, errcodeZero)
}

// DingTalkSign is a DingTalk robot signature: base64(HMAC-SHA256(secret, timestamp+"\n"+secret)),
// timestamp in milliseconds (sent URL-encoded as the sign parameter).
func DingTalkSign(secret, ts string) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(ts + "\n" + secret))
	return base64.StdEncoding.EncodeToString(m.Sum(nil))
}

func sendBark(ctx context.Context, proxy string, b *crsv1.BarkTarget, ev Event, timeout time.Duration) error {
	server := b.GetServerUrl()
	if server == "" {
		server = DefaultBarkServer
	}
	level, group := b.GetLevel(), b.GetGroup()
	if level == "" {
		level = "active"
		if ev.severity() == "bad" {
			level = "timeSensitive"
		}
	}
	if group == "" {
		group = "crs"
	}
	body := map[string]any{"device_key": b.GetDeviceKey(), "title": ev.Title(), "body": ev.markdownBody(""), "level": level, "group": group}
	if b.GetSound() != "" {
		body["sound"] = b.GetSound()
	}
	return post(ctx, proxy, server, body, nil, timeout, func(ans []byte) error {
		var r struct {
			Code    *int   `json:"code"`
			Message string `json:"message"`
		}
		if json.Unmarshal(ans, &r) == nil && r.Code != nil && *r.Code != 200 {
			return permanent("bark refused: %s", clip(r.Message, 200))
		}
		return nil
	})
}

// errcodeZero checks DingTalk's and WeCom's {"errcode":0,"errmsg":"ok"} answers.
func errcodeZero(b []byte) error {
	var r struct {
		Errcode *int   `json:"errcode"`
		Errmsg  string `json:"errmsg"`
	}
	if json.Unmarshal(b, &r) == nil && r.Errcode != nil && *r.Errcode != 0 {
		return permanent("refused: errcode %d: %s", *r.Errcode, clip(r.Errmsg, 200))
	}
	return nil
}

// post sends body as JSON to target through proxy; check (optional) inspects a 2xx answer.
// Errors never include the URL (webhook URLs are secrets).
func post(ctx context.Context, proxy, target string, body any, headers map[string]string, timeout time.Duration, check func([]byte) error) error {
	u, err := url.Parse(target)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return permanent("target URL is not an http(s) URL")
	}
	raw, err := json.Marshal(body)
	if err != nil {
		return permanent("encode body: %w", err)
	}
	hc, err := proxyhttp.NewClient(proxy, timeout)
	if err != nil {
		return &sendError{retry: false, err: err}
	}
	defer hc.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target, bytes.NewReader(raw))
	if err != nil {
		return permanent("build request: %w", err)
	}
	req.Header.Set("Content-Type", "application/json; charset=utf-8")
	req.Header.Set("User-Agent", "crs-notify")
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return &sendError{retry: true, err: proxyhttp.Describe(err, proxy, "send to "+u.Host)}
	}
	defer resp.Body.Close()
	ans, _ := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	if err := proxyhttp.StatusError(resp.StatusCode, proxy); err != nil {
		return &sendError{retry: false, err: err}
	}
	if resp.StatusCode/100 != 2 {
		retry := resp.StatusCode == 408 || resp.StatusCode == 429 || resp.StatusCode >= 500
		return &sendError{retry: retry, err: fmt.Errorf("%s answered %d: %s", u.Host, resp.StatusCode, clip(strings.Join(strings.Fields(string(ans)), " "), 200))}
	}
	if check != nil {
		return check(ans)
	}
	return nil
}

// clip bounds s to n characters.
func clip(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	return string([]rune(s)[:n-1]) + "…"
}
