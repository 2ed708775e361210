package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/BurntSushi/toml"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

func writeFile(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "crs.toml")
	require.NoError(t, os.WriteFile(p, []byte(body), 0o600))
	return p
}

func TestDefaultIsValid(t *testing.T) {
	c := Default()
	require.NoError(t, c.Validate())
}

// The example file must hold exactly the defaults and every key, so it cannot drift from the code.
func TestExampleFileMatchesDefaults(t *testing.T) {
	path := filepath.Join("..", "..", "..", "..", "deploy", "crs.example.toml")
	var got Config
	md, err := toml.DecodeFile(path, &got)
	require.NoError(t, err)
	require.Empty(t, md.Undecoded(), "example has keys Config lacks")
	require.Equal(t, Default(), got)

	c := Default()
	for name := range fieldsOf(&c) {
		key := strings.ToLower(strings.Replace(strings.TrimPrefix(name, EnvPrefix), "__", ".", 1))
		parts := strings.SplitN(key, ".", 2)
		require.True(t, md.IsDefined(parts[0], parts[1]), "example file misses %s", key)
	}
}

func TestLoadOrder(t *testing.T) {
	path := writeFile(t, `
[server]
port = 4000
[store]
data_dir = "/from/file"
driver = "redis"
redis_url = "redis://file:6379/1"
[log]
level = "warn"
[upstream]
idle_timeout = "45s"
`)
	env := []string{
		"CRS_STORE__DATA_DIR=/from/env",
		"CRS_LOG__LEVEL=error",
		"CRS_SECURITY__ADMIN_TOKEN=env-admin-token-123456",
		"CRS_USAGE__TIMEZONE_OFFSET_HOURS=-5",
		"CRS_SCHEDULING__STICKY_TTL=2h",
		"UNRELATED=1",
	}
	c, err := Load("control", []string{"-config", path, "-log-level", "debug", "-admin-port", "18080"}, env, &bytes.Buffer{})
	require.NoError(t, err)
	require.Equal(t, 4000, c.Server.Port, "file")
	require.Equal(t, "redis", c.Store.Driver, "file")
	require.Equal(t, "/from/env", c.Store.DataDir, "env over file")
	require.Equal(t, "debug", c.Log.Level, "flag over env over file")
	require.Equal(t, 18080, c.Control.HTTPPort, "flag")
	require.Equal(t, 9090, c.Control.GRPCPort, "default")
	require.Equal(t, 45*time.Second, c.Upstream.IdleTimeout)
	require.Equal(t, 2*time.Hour, c.Scheduling.StickyTTL)
	require.Equal(t, -5, c.Usage.TimezoneOffsetHours)
	require.Equal(t, "env-admin-token-123456", c.Security.AdminToken.Value())
	require.NoError(t, c.Validate())
}

func TestLoadConfigFromEnvPath(t *testing.T) {
	path := writeFile(t, "[server]\nport = 4100\n")
	c, err := Load("dev", nil, []string{"CRS_CONFIG=" + path}, &bytes.Buffer{})
	require.NoError(t, err)
	require.Equal(t, 4100, c.Server.Port)
}

// Every key can be overridden from the environment.
func TestEveryKeyHasAnEnvOverride(t *testing.T) {
	c := Default()
	fields := fieldsOf(&c)
	require.Len(t, fields, 43, "update this count (and the example file) when adding keys")
	var env []string
	for name := range fields {
		v := "override-value"
		switch {
		case strings.HasSuffix(name, "TIMEOUT") || strings.HasSuffix(name, "TTL") || strings.HasSuffix(name, "AFTER") ||
			strings.HasSuffix(name, "MARGIN") || strings.HasSuffix(name, "INTERVAL"):
			v = "7s"
		case strings.HasSuffix(name, "PORT") || strings.HasSuffix(name, "_MB") || strings.HasSuffix(name, "BUFFER") ||
			strings.HasSuffix(name, "HOURS") || strings.HasSuffix(name, "ATTEMPTS"):
			v = "7"
		}
		env = append(env, name+"="+v)
	}
	got, err := Load("control", nil, env, &bytes.Buffer{})
	require.NoError(t, err)
	vals := map[string]reflect.Value{}
	collectFields(reflect.ValueOf(&got).Elem(), EnvPrefix, vals)
	for name, v := range vals {
		switch v.Kind() {
		case reflect.String:
			require.Equal(t, "override-value", v.String(), name)
		default:
			if v.Type() == durationType {
				require.Equal(t, int64(7*time.Second), v.Int(), name)
			} else {
				require.Equal(t, int64(7), v.Int(), name)
			}
		}
	}
}

func fieldsOf(c *Config) map[string]struct{} {
	out := map[string]struct{}{}
	vals := map[string]reflect.Value{}
	collectFields(reflect.ValueOf(c).Elem(), EnvPrefix, vals)
	for k := range vals {
		out[k] = struct{}{}
	}
	return out
}

func TestLoadErrors(t *testing.T) {
	tests := []struct {
		name    string
		file    string
		args    []string
		env     []string
		wantErr string
	}{
		{name: "unknown file key", file: "[store]\ndriverr = \"redis\"\n", wantErr: "unknown keys: store.driverr"},
		{name: "unknown section", file: "[nope]\nx = 1\n", wantErr: "unknown keys: nope"},
		{name: "bad toml", file: "[store\n", wantErr: "config file"},
		{name: "bad duration in file", file: "[upstream]\nidle_timeout = \"soon\"\n", wantErr: "idle_timeout"},
		{name: "wrong type in file", file: "[server]\nport = \"abc\"\n", wantErr: "port"},
		{name: "missing file", args: []string{"-config", "/does/not/exist.toml"}, wantErr: "exist.toml"},
		{name: "unknown env key", env: []string{"CRS_STORE__DRIVERR=redis"}, wantErr: "CRS_STORE__DRIVERR: no such setting"},
		{name: "bad env int", env: []string{"CRS_SERVER__PORT=abc"}, wantErr: "CRS_SERVER__PORT: not an integer"},
		{name: "bad env duration", env: []string{"CRS_WORKER__STALE_AFTER=30"}, wantErr: "CRS_WORKER__STALE_AFTER: not a duration"},
		{name: "positional argument", args: []string{"extra"}, wantErr: `unexpected argument "extra"`},
		{name: "unknown flag", args: []string{"-nope"}, wantErr: "flag provided but not defined"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := tt.args
			if tt.file != "" {
				args = append([]string{"-config", writeFile(t, tt.file)}, args...)
			}
			_, err := Load("control", args, tt.env, &bytes.Buffer{})
			require.Error(t, err)
			require.Contains(t, err.Error(), tt.wantErr)
		})
	}
}

func TestLoadHelp(t *testing.T) {
	var out bytes.Buffer
	_, err := Load("control", []string{"-h"}, nil, &out)
	require.ErrorIs(t, err, flag.ErrHelp)
	require.Contains(t, out.String(), "-data-dir")
}

func TestValidateReportsEveryProblem(t *testing.T) {
	c := Default()
	c.Server.Port = 0
	c.Control.HTTPPort = c.Control.GRPCPort
	c.Store.Driver = "mongo"
	c.Store.DataDir = ""
	c.Log.Level = "loud"
	c.Log.Format = "xml"
	c.Security.AdminToken = "short"
	c.Upstream.ClaudeBaseURL = "ftp://x"
	c.Upstream.IdleTimeout = 0
	c.Usage.TimezoneOffsetHours = 20
	c.Scheduling.MaxAttempts = 0
	c.Worker.ControlAddr = "nohost"
	err := c.Validate()
	require.Error(t, err)
	for _, want := range []string{
		"server.port: must be a port number",
		"control.http_port: must differ",
		"store.driver: must be embedded or redis",
		"store.data_dir: required",
		"log.level:",
		"log.format:",
		"security.admin_token: must be at least 16",
		"upstream.claude_base_url:",
		"upstream.idle_timeout: must be a positive duration",
		"usage.timezone_offset_hours:",
		"scheduling.max_attempts:",
		"worker.control_addr:",
	} {
		require.Contains(t, err.Error(), want)
	}
}

func TestValidateRedisURL(t *testing.T) {
	c := Default()
	c.Store.Driver = DriverRedis
	c.Store.RedisURL = "http://user:hunter2@host"
	err := c.Validate()
	require.ErrorContains(t, err, "store.redis_url")
	require.NotContains(t, err.Error(), "hunter2", "a URL that may hold a password is not echoed")
	c.Store.RedisURL = ""
	require.ErrorContains(t, c.Validate(), "store.redis_url: required")
	c.Store.RedisURL = "rediss://:pw@host:6380/2"
	require.NoError(t, c.Validate())
}

func TestSecretNeverPrinted(t *testing.T) {
	const plain = "super-secret-value-123"
	s := Secret(plain)
	c := Default()
	c.Security.AdminToken = s
	c.Store.RedisURL = Secret("redis://:" + plain + "@h:6379/0")

	js, err := json.Marshal(c)
	require.NoError(t, err)
	var tb bytes.Buffer
	require.NoError(t, toml.NewEncoder(&tb).Encode(c))

	core, logs := observer.New(zap.DebugLevel)
	zap.New(core).Info("cfg", zap.Any("token", s), zap.Stringer("s", s), zap.Object("security", &c.Security), zap.Any("config", c))
	var logged strings.Builder
	for _, e := range logs.All() {
		for k, v := range e.ContextMap() {
			fmt.Fprintf(&logged, "%s=%v ", k, v)
		}
	}

	for name, out := range map[string]string{
		"String":     s.String(),
		"%v":         fmt.Sprintf("%v", s),
		"%s":         fmt.Sprintf("%s", s),
		"%#v":        fmt.Sprintf("%#v", c),
		"%+v":        fmt.Sprintf("%+v", c),
		"json":       string(js),
		"toml":       tb.String(),
		"zap":        logged.String(),
		"errors.New": errors.New(fmt.Sprint(s)).Error(),
	} {
		require.NotContains(t, out, plain, name)
		require.Contains(t, out, "REDACTED", name)
	}
	require.Equal(t, plain, s.Value())
	require.Equal(t, "", Secret("").String())
}
