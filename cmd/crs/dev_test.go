package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	crsv1 "github.com/crsrelay/crs/gen/crs/v1"
	"github.com/crsrelay/crs/internal/testenv"
)

// lockedBuffer is a bytes.Buffer safe for the server goroutine and the test.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// instance is one `crs dev` started by run in this process.
type instance struct {
	cancel context.CancelFunc
	done   chan error
	stdout *lockedBuffer
	stderr *lockedBuffer
}

type devEnv struct {
	dir, configPath    string
	httpURL, grpcAddr  string
	httpPort, grpcPort int
}

func newDevEnv(t *testing.T) *devEnv {
	t.Helper()
	e := &devEnv{dir: filepath.Join(t.TempDir(), "data"), httpPort: testenv.FreePort(t), grpcPort: testenv.FreePort(t)}
	e.httpURL = "http://127.0.0.1:" + strconv.Itoa(e.httpPort)
	e.grpcAddr = "127.0.0.1:" + strconv.Itoa(e.grpcPort)
	e.configPath = filepath.Join(t.TempDir(), "crs.toml")
	require.NoError(t, os.WriteFile(e.configPath, []byte("[control]\nhost = \"127.0.0.1\"\n[server]\nhost = \"127.0.0.1\"\n"), 0o600))
	return e
}

func (e *devEnv) start(t *testing.T) *instance {
	t.Helper()
	return e.startCommand(t, "dev")
}

// startCommand runs `crs <command>` on e's ports and data directory until it is ready.
func (e *devEnv) startCommand(t *testing.T, command string) *instance {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	in := &instance{cancel: cancel, done: make(chan error, 1), stdout: &lockedBuffer{}, stderr: &lockedBuffer{}}
	args := []string{command, "-config", e.configPath, "-data-dir", e.dir,
		"-admin-port", strconv.Itoa(e.httpPort), "-grpc-port", strconv.Itoa(e.grpcPort),
		"-port", strconv.Itoa(testenv.FreePort(t)), "-log-level", "debug"}
	go func() { in.done <- run(ctx, args, in.stdout, in.stderr) }()
	t.Cleanup(func() { in.stop(t) })

	deadline := time.Now().Add(20 * time.Second)
	for {
		select {
		case err := <-in.done:
			in.done <- err
			t.Fatalf("crs dev exited early: %v\nstderr:\n%s", err, in.stderr.String())
		default:
		}
		resp, err := http.Get(e.httpURL + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return in
			}
		}
		require.True(t, time.Now().Before(deadline), "crs dev not ready; stderr:\n%s", in.stderr.String())
		time.Sleep(30 * time.Millisecond)
	}
}

// stop cancels run (as SIGTERM would) and requires a clean exit.
func (in *instance) stop(t *testing.T) {
	t.Helper()
	in.cancel()
	select {
	case err := <-in.done:
		require.NoError(t, err, "stderr:\n%s", in.stderr.String())
		in.done <- nil
	case <-time.After(20 * time.Second):
		t.Fatalf("crs dev did not stop")
	}
}

func call(t *testing.T, method, url, token, body string, out any) int {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	if out != nil {
		require.NoError(t, json.Unmarshal(raw, out), "%s", raw)
	}
	return resp.StatusCode
}

var tokenLine = regexp.MustCompile(`(?m)^admin token: (crs_admin_[0-9a-f]{64})$`)

func TestDevRoundTripAcrossRestart(t *testing.T) {
	e := newDevEnv(t)
	first := e.start(t)

	m := tokenLine.FindStringSubmatch(first.stdout.String())
	require.Len(t, m, 2, "first start prints the admin token; stdout:\n%s", first.stdout.String())
	token := m[1]
	require.NotContains(t, first.stderr.String(), token, "the token is never logged")

	for _, f := range []string{adminTokenFile, fleetTokenFile, encryptionKeyFile} {
		st, err := os.Stat(filepath.Join(e.dir, f))
		require.NoError(t, err, f)
		require.Equal(t, os.FileMode(0o600), st.Mode().Perm(), f)
	}
	saved, err := os.ReadFile(filepath.Join(e.dir, adminTokenFile))
	require.NoError(t, err)
	require.Equal(t, token, strings.TrimSpace(string(saved)))
	keyBefore, err := os.ReadFile(filepath.Join(e.dir, encryptionKeyFile))
	require.NoError(t, err)

	require.Equal(t, http.StatusUnauthorized, call(t, "GET", e.httpURL+"/admin/v1/api-keys", "wrong", "", nil))
	var created struct {
		APIKey struct{ ID, Name string } `json:"apiKey"`
		Key    string                    `json:"key"`
	}
	require.Equal(t, http.StatusOK, call(t, "POST", e.httpURL+"/admin/v1/api-keys", token, `{"name":"survivor"}`, &created))
	require.Regexp(t, `^cr_[0-9a-f]{64}$`, created.Key)
	var acct struct{ ID string }
	require.Equal(t, http.StatusOK, call(t, "POST", e.httpURL+"/admin/v1/accounts", token,
		`{"name":"console","type":"claude-console","baseUrl":"https://api.example.com","apiKey":{"apiKey":"sk-secret-upstream"}}`, &acct))

	var list struct {
		APIKeys   []struct{ ID string } `json:"apiKeys"`
		TotalSize int                   `json:"totalSize"`
	}
	require.Equal(t, http.StatusOK, call(t, "GET", e.httpURL+"/admin/v1/api-keys", token, "", &list))
	require.Equal(t, 1, list.TotalSize)

	// The gRPC face serves AdminService with the same token, and refuses without it.
	conn, err := grpc.NewClient(e.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	defer conn.Close()
	client := crsv1.NewAdminServiceClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err = client.ListApiKeys(ctx, &crsv1.ListApiKeysRequest{})
	require.Equal(t, codes.Unauthenticated, status.Code(err))
	authed := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
	gl, err := client.ListApiKeys(authed, &crsv1.ListApiKeysRequest{})
	require.NoError(t, err)
	require.Len(t, gl.ApiKeys, 1)
	require.Equal(t, created.APIKey.ID, gl.ApiKeys[0].Id)
	_, err = client.GetApiKey(authed, &crsv1.GetApiKeyRequest{Id: "missing"})
	require.Equal(t, codes.NotFound, status.Code(err))
	require.Contains(t, first.stderr.String(), "/crs.v1.AdminService/ListApiKeys", "debug access line")

	first.stop(t)

	second := e.start(t)
	require.NotContains(t, second.stdout.String(), "admin token", "printed on the first start only")
	keyAfter, err := os.ReadFile(filepath.Join(e.dir, encryptionKeyFile))
	require.NoError(t, err)
	require.Equal(t, keyBefore, keyAfter, "the dev encryption key is reused")

	list.APIKeys = nil
	require.Equal(t, http.StatusOK, call(t, "GET", e.httpURL+"/admin/v1/api-keys", token, "", &list))
	require.Equal(t, 1, list.TotalSize)
	require.Equal(t, created.APIKey.ID, list.APIKeys[0].ID)
	var got map[string]any
	require.Equal(t, http.StatusOK, call(t, "GET", e.httpURL+"/admin/v1/accounts/"+acct.ID, token, "", &got))
	require.Equal(t, "console", got["name"])
	require.NotContains(t, fmt.Sprint(got), "sk-secret-upstream")

	// Credentials sealed by the first run open with the reused key: an update that keeps the
	// secret ("REDACTED") has to open them.
	require.Equal(t, http.StatusOK, call(t, "PATCH", e.httpURL+"/admin/v1/accounts/"+acct.ID, token, `{"apiKey":{"apiKey":"REDACTED"},"priority":3}`, &got))
	require.Equal(t, float64(3), got["priority"])
	second.stop(t)

	// A different key is refused at start, before anything is served.
	require.NoError(t, os.WriteFile(filepath.Join(e.dir, encryptionKeyFile), []byte(strings.Repeat("ab", 32)+"\n"), 0o600))
	err = run(context.Background(), []string{"dev", "-config", e.configPath, "-data-dir", e.dir,
		"-admin-port", strconv.Itoa(e.httpPort), "-grpc-port", strconv.Itoa(e.grpcPort)}, io.Discard, io.Discard)
	require.ErrorContains(t, err, "security.encryption_key: not the key this store was first started with")
}

func TestConfiguredAdminTokenIsUsedAndNothingGenerated(t *testing.T) {
	e := newDevEnv(t)
	t.Setenv("CRS_SECURITY__ADMIN_TOKEN", "configured-admin-token-xyz")
	in := e.start(t)
	require.NotContains(t, in.stdout.String(), "admin token")
	_, err := os.Stat(filepath.Join(e.dir, adminTokenFile))
	require.ErrorIs(t, err, os.ErrNotExist)
	require.Equal(t, http.StatusOK, call(t, "GET", e.httpURL+"/admin/v1/api-keys", "configured-admin-token-xyz", "", nil))
	require.NotContains(t, in.stderr.String(), "configured-admin-token-xyz")
}

func TestRunCommands(t *testing.T) {
	var out, errOut bytes.Buffer
	require.NoError(t, run(context.Background(), []string{"version"}, &out, &errOut))
	require.Regexp(t, `^crs dev \(commit unknown, go`, out.String())

	out.Reset()
	require.NoError(t, run(context.Background(), []string{"help"}, &out, &errOut))
	require.Contains(t, out.String(), "crs control")

	require.ErrorIs(t, run(context.Background(), nil, &out, &errOut), errUsage)
	err := run(context.Background(), []string{"frobnicate"}, &out, &errOut)
	require.ErrorIs(t, err, errUsage)
	require.Contains(t, err.Error(), `unknown command "frobnicate"`)

	errOut.Reset()
	require.NoError(t, run(context.Background(), []string{"control", "-h"}, &out, &errOut), "-h is not a failure")
	require.Contains(t, errOut.String(), "-admin-port")
}

func TestControlRefusesToStart(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want []string
	}{
		{"no encryption key", []string{"control", "-data-dir", dir}, nil, []string{"security.encryption_key: required by crs control"}},
		{"invalid config, every problem", []string{"control", "-data-dir", dir, "-store", "mongo", "-log-level", "loud"}, nil,
			[]string{"store.driver: must be embedded or redis", "log.level: must be"}},
		{"bad env value", []string{"control"}, map[string]string{"CRS_CONTROL__GRPC_PORT": "ninety"}, []string{"CRS_CONTROL__GRPC_PORT: not an integer"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			err := run(context.Background(), tt.args, io.Discard, io.Discard)
			require.Error(t, err)
			for _, w := range tt.want {
				require.Contains(t, err.Error(), w)
			}
		})
	}
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	require.Empty(t, entries, "nothing was created")
}

func TestControlOnRedis(t *testing.T) {
	addr := testenv.StartRedis(t)
	e := newDevEnv(t)
	t.Setenv("CRS_STORE__DRIVER", "redis")
	t.Setenv("CRS_STORE__REDIS_URL", "redis://"+addr+"/0")
	t.Setenv("CRS_SECURITY__ENCRYPTION_KEY", strings.Repeat("0f", 32))

	first := e.startCommand(t, "control")
	m := tokenLine.FindStringSubmatch(first.stdout.String())
	require.Len(t, m, 2, "stdout:\n%s", first.stdout.String())
	token := m[1]
	fleet, err := os.ReadFile(filepath.Join(e.dir, fleetTokenFile))
	require.NoError(t, err)
	require.Regexp(t, `^crs_fleet_[0-9a-f]{64}\n$`, string(fleet))
	_, err = os.Stat(filepath.Join(e.dir, encryptionKeyFile))
	require.ErrorIs(t, err, os.ErrNotExist, "control never writes an encryption key")

	var created struct {
		APIKey struct{ ID string } `json:"apiKey"`
	}
	require.Equal(t, http.StatusOK, call(t, "POST", e.httpURL+"/admin/v1/api-keys", token, `{"name":"on-redis"}`, &created))
	first.stop(t)

	// Another replica (here: a restart with a fresh data directory) shares the store: same token,
	// same keys, nothing printed, and the fleet token file is written again for its workers.
	e.dir = filepath.Join(t.TempDir(), "replica")
	second := e.startCommand(t, "control")
	require.NotContains(t, second.stdout.String(), "admin token")
	again, err := os.ReadFile(filepath.Join(e.dir, fleetTokenFile))
	require.NoError(t, err)
	require.Equal(t, fleet, again)
	var list struct {
		APIKeys []struct{ ID string } `json:"apiKeys"`
	}
	require.Equal(t, http.StatusOK, call(t, "GET", e.httpURL+"/admin/v1/api-keys", token, "", &list))
	require.Len(t, list.APIKeys, 1)
	require.Equal(t, created.APIKey.ID, list.APIKeys[0].ID)
}
