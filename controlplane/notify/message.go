package notify

import (
	"fmt"
	"strings"
	"time"
)

// field is one labelled line of a message.
type field struct {
	Name, Value string
}

// Title is a one-line summary of ev.
func (ev Event) Title() string {
	name := ev.AccountName
	if name == "" {
		name = ev.AccountID
	}
	switch ev.Kind {
	case KindRateLimited:
		if ev.Family != "" {
			return fmt.Sprintf("Account rate-limited for %s models: %s", ev.Family, name)
		}
		return "Account rate-limited: " + name
	case KindBlocked:
		return "Account blocked: " + name
	case KindUnauthorized:
		return "Account unauthorized: " + name
	case KindRefreshFailed:
		return "Token refresh failed: " + name
	case KindError:
		return "Account error: " + name
	case KindRecovered:
		if ev.Family != "" {
			return fmt.Sprintf("Account serves %s models again: %s", ev.Family, name)
		}
		return "Account recovered: " + name
	case KindKeyCap:
		key := ev.KeyName
		if key == "" {
			key = ev.KeyID
		}
		return fmt.Sprintf("API key reached its %s limit: %s", capName(ev.Cap), key)
	case KindTest:
		return "Test notification"
	}
	return "crs event " + ev.Kind
}

func capName(c string) string {
	switch c {
	case "daily_cost":
		return "daily cost"
	case "total_cost":
		return "total cost"
	case "weekly_opus_cost":
		return "weekly Claude cost"
	}
	return c
}

// fields are the details of ev, in display order.
func (ev Event) fields() []field {
	var out []field
	add := func(name, value string) {
		if value != "" {
			out = append(out, field{name, value})
		}
	}
	if ev.AccountID != "" {
		add("Account", strings.TrimSpace(ev.AccountName+" ("+ev.AccountID+")"))
		add("Platform", ev.Platform)
		if ev.PrevState != "" && ev.State != "" {
			add("State", ev.PrevState+" → "+ev.State)
		} else {
			add("State", ev.State)
		}
		add("Model family", ev.Family)
	}
	if ev.KeyID != "" {
		add("Key", strings.TrimSpace(ev.KeyName+" ("+ev.KeyID+")"))
		add("Limit", fmt.Sprintf("%s: $%.2f of $%.2f", capName(ev.Cap), ev.Spent, ev.Limit))
	}
	add("Reason", ev.Reason)
	if !ev.Until.IsZero() {
		add("Until", ev.Until.UTC().Format(time.RFC3339))
	}
	add("Time", ev.Time.UTC().Format(time.RFC3339))
	return out
}

// Text renders ev as plain text: the title, then "Name: value" lines.
func (ev Event) Text() string {
	var b strings.Builder
	b.WriteString(ev.Title())
	for _, f := range ev.fields() {
		fmt.Fprintf(&b, "\n%s: %s", f.Name, f.Value)
	}
	return b.String()
}

// markdownBody renders ev's fields as markdown lines ("**Name**: value"), without the title.
func (ev Event) markdownBody(bold string) string {
	lines := make([]string, 0, 8)
	for _, f := range ev.fields() {
		lines = append(lines, fmt.Sprintf("%s%s%s: %s", bold, f.Name, bold, f.Value))
	}
	return strings.Join(lines, "\n")
}

// severity groups kinds for colours: "bad", "warn", "good" or "info".
func (ev Event) severity() string {
	switch ev.Kind {
	case KindBlocked, KindUnauthorized, KindRefreshFailed, KindError:
		return "bad"
	case KindRateLimited, KindKeyCap:
		return "warn"
	case KindRecovered:
		return "good"
	}
	return "info"
}

// webhookData is the "data" of the generic webhook payload.
type webhookData struct {
	Title       string  `json:"title"`
	Message     string  `json:"message"`
	AccountID   string  `json:"account_id,omitempty"`
	AccountName string  `json:"account_name,omitempty"`
	Platform    string  `json:"platform,omitempty"`
	State       string  `json:"state,omitempty"`
	PrevState   string  `json:"previous_state,omitempty"`
	Family      string  `json:"model_family,omitempty"`
	Reason      string  `json:"reason,omitempty"`
	Until       string  `json:"until,omitempty"`
	KeyID       string  `json:"key_id,omitempty"`
	KeyName     string  `json:"key_name,omitempty"`
	Cap         string  `json:"cap,omitempty"`
	Limit       float64 `json:"limit,omitempty"`
	Spent       float64 `json:"spent,omitempty"`
}

func (ev Event) webhookData() webhookData {
	d := webhookData{
		Title: ev.Title(), Message: ev.Text(),
		AccountID: ev.AccountID, AccountName: ev.AccountName, Platform: ev.Platform,
		State: ev.State, PrevState: ev.PrevState, Family: ev.Family, Reason: ev.Reason,
		KeyID: ev.KeyID, KeyName: ev.KeyName, Cap: ev.Cap, Limit: ev.Limit, Spent: ev.Spent,
	}
	if !ev.Until.IsZero() {
		d.Until = ev.Until.UTC().Format(time.RFC3339)
	}
	return d
}
