package config

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
)

// MinTokenLength is the shortest admin or fleet token accepted from configuration.
const MinTokenLength = 16

// Validate checks every key and returns all problems at once (errors.Join), each naming its key,
// e.g. "store.driver: must be embedded or redis". Secrets that are empty are valid here; the
// subcommands decide which they require.
func (c *Config) Validate() error {
	var errs []error
	add := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", key, fmt.Sprintf(format, args...)))
	}
	port := func(key string, p int) {
		if p < 1 || p > 65535 {
			add(key, "must be a port number 1-65535, got %d", p)
		}
	}
	positive := func(key string, v int64, what string) {
		if v <= 0 {
			add(key, "must be a positive %s", what)
		}
	}

	port("server.port", c.Server.Port)
	if c.Server.MaxBodyMB < 1 || c.Server.MaxBodyMB > 1024 {
		add("server.max_body_mb", "must be 1-1024, got %d", c.Server.MaxBodyMB)
	}

	port("control.grpc_port", c.Control.GRPCPort)
	port("control.http_port", c.Control.HTTPPort)
	if c.Control.GRPCPort == c.Control.HTTPPort {
		add("control.http_port", "must differ from control.grpc_port (%d)", c.Control.GRPCPort)
	}
	positive("control.shutdown_timeout", int64(c.Control.ShutdownTimeout), "duration")
	positive("control.lease_ttl", int64(c.Control.LeaseTTL), "duration")

	if host, p, err := net.SplitHostPort(c.Worker.ControlAddr); err != nil || host == "" {
		add("worker.control_addr", "must be host:port, got %q", c.Worker.ControlAddr)
	} else if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
		add("worker.control_addr", "port must be 1-65535, got %q", p)
	}
	positive("worker.stale_after", int64(c.Worker.StaleAfter), "duration")
	positive("worker.usage_buffer", int64(c.Worker.UsageBuffer), "number")

	switch c.Store.Driver {
	case DriverEmbedded:
	case DriverRedis:
		u, err := url.Parse(c.Store.RedisURL.Value())
		switch {
		case c.Store.RedisURL == "":
			add("store.redis_url", "required when store.driver is redis")
		case err != nil || (u.Scheme != "redis" && u.Scheme != "rediss" && u.Scheme != "unix"):
			// The URL may hold a password: do not echo it.
			add("store.redis_url", "must be a redis://, rediss:// or unix:// URL")
		}
	default:
		add("store.driver", "must be %s or %s, got %q", DriverEmbedded, DriverRedis, c.Store.Driver)
	}
	if c.Store.DataDir == "" {
		add("store.data_dir", "required")
	}

	for _, t := range []struct {
		key string
		tok Secret
	}{{"security.admin_token", c.Security.AdminToken}, {"security.fleet_token", c.Security.FleetToken}} {
		if t.tok != "" && len(t.tok) < MinTokenLength {
			add(t.key, "must be at least %d characters", MinTokenLength)
		}
	}

	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		add("log.level", "must be debug, info, warn or error, got %q", c.Log.Level)
	}
	switch c.Log.Format {
	case "console", "json":
	default:
		add("log.format", "must be console or json, got %q", c.Log.Format)
	}

	if u, err := url.Parse(c.Upstream.ClaudeBaseURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		add("upstream.claude_base_url", "must be an http(s) URL, got %q", c.Upstream.ClaudeBaseURL)
	}
	positive("upstream.connect_timeout", int64(c.Upstream.ConnectTimeout), "duration")
	positive("upstream.first_byte_timeout", int64(c.Upstream.FirstByteTimeout), "duration")
	positive("upstream.idle_timeout", int64(c.Upstream.IdleTimeout), "duration")

	if c.Usage.TimezoneOffsetHours < -12 || c.Usage.TimezoneOffsetHours > 14 {
		add("usage.timezone_offset_hours", "must be -12..14, got %d", c.Usage.TimezoneOffsetHours)
	}

	positive("scheduling.sticky_ttl", int64(c.Scheduling.StickyTTL), "duration")
	positive("oauth.refresh_margin", int64(c.OAuth.RefreshMargin), "duration")
	positive("oauth.refresh_interval", int64(c.OAuth.RefreshInterval), "duration")
	for key, v := range map[string]string{
		"oauth.claude_authorize_url": c.OAuth.ClaudeAuthorizeURL, "oauth.claude_token_url": c.OAuth.ClaudeTokenURL,
		"oauth.openai_authorize_url": c.OAuth.OpenAIAuthorizeURL, "oauth.openai_token_url": c.OAuth.OpenAITokenURL,
		"oauth.gemini_authorize_url": c.OAuth.GeminiAuthorizeURL, "oauth.gemini_token_url": c.OAuth.GeminiTokenURL,
	} {
		if u, err := url.Parse(v); v != "" && (err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "") {
			add(key, "must be an http(s) URL, got %q", v)
		}
	}
	if c.Scheduling.MaxAttempts < 1 || c.Scheduling.MaxAttempts > 10 {
		add("scheduling.max_attempts", "must be 1-10, got %d", c.Scheduling.MaxAttempts)
	}
	return errors.Join(errs...)
}
