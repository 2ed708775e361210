// Package config is crs's configuration: one root Config with a struct per TOML section, read in
// this order: Default(), the TOML file (-config or CRS_CONFIG), environment overrides
// CRS_<SECTION>__<KEY> (every key, e.g. CRS_STORE__REDIS_URL), then command-line flags. Validate
// reports every problem at once, each naming its key.
//
// Config is plain data: nothing here dials, opens or listens. deploy/crs.example.toml documents
// every key with its default; keep the two in step.
package config

import "time"

// Config is the whole configuration. Each component is handed only its section.
type Config struct {
	Server     Server     `toml:"server"`
	Control    Control    `toml:"control"`
	Worker     Worker     `toml:"worker"`
	Store      Store      `toml:"store"`
	Security   Security   `toml:"security"`
	Log        Log        `toml:"log"`
	Upstream   Upstream   `toml:"upstream"`
	Usage      Usage      `toml:"usage"`
	Scheduling Scheduling `toml:"scheduling"`
	OAuth      OAuth      `toml:"oauth"`
}

// Server is the worker's client-facing HTTP listener.
type Server struct {
	// Host is the address the worker listens on; "0.0.0.0" for every interface.
	Host string `toml:"host"`
	// Port is the client-facing port (Claude Code, SDKs point here).
	Port int `toml:"port"`
	// MaxBodyMB caps a client request body, in MiB.
	MaxBodyMB int `toml:"max_body_mb"`
}

// Control is the control plane's listeners.
type Control struct {
	// Host is the address the control plane listens on (both ports).
	Host string `toml:"host"`
	// GRPCPort serves AdminService and FleetService (workers connect here).
	GRPCPort int `toml:"grpc_port"`
	// HTTPPort serves the admin REST API (/admin/v1/), /healthz, /readyz and /metrics.
	HTTPPort int `toml:"http_port"`
	// ShutdownTimeout bounds a graceful stop; in-flight calls still running then are cut.
	ShutdownTimeout time.Duration `toml:"shutdown_timeout"`
	// LeaseTTL is how long a concurrency lease lives without renewal: workers renew theirs every
	// third of it, so it is also how long the slots of a worker that died stay taken.
	LeaseTTL time.Duration `toml:"lease_ttl"`
}

// Worker is how a worker reaches the control plane and survives without it.
type Worker struct {
	// ControlAddr is the control plane's gRPC address, host:port.
	ControlAddr string `toml:"control_addr"`
	// StaleAfter is how long a worker keeps serving from its last snapshot while the control
	// plane is unreachable.
	StaleAfter time.Duration `toml:"stale_after"`
	// UsageBuffer is how many usage records a worker keeps while they are not yet acknowledged.
	UsageBuffer int `toml:"usage_buffer"`
}

// Store selects and locates the control plane's durable state.
type Store struct {
	// Driver is "embedded" (one node, files in DataDir) or "redis" (shared by replicas).
	Driver string `toml:"driver"`
	// RedisURL is used when Driver is "redis": redis://[user:pass@]host:port/db, rediss:// for TLS.
	RedisURL Secret `toml:"redis_url"`
	// DataDir holds the embedded store and the generated admin.token, fleet.token and (crs dev)
	// encryption.key files.
	DataDir string `toml:"data_dir"`
}

// Security holds the secrets. Every field's String() prints REDACTED.
type Security struct {
	// AdminToken is the admin API bearer token. Empty: generated on first start, printed once and
	// written to <data_dir>/admin.token; only its SHA-256 is stored.
	AdminToken Secret `toml:"admin_token"`
	// EncryptionKey seals account credentials (AES-256-GCM): 64 hex characters or base64 of 32
	// bytes; any other string is stretched with SHA-256. Required by crs control; crs dev
	// generates one into <data_dir>/encryption.key.
	EncryptionKey Secret `toml:"encryption_key"`
	// FleetToken authenticates workers to the control plane. Empty: generated on first start and
	// written to <data_dir>/fleet.token.
	FleetToken Secret `toml:"fleet_token"`
	// LegacyEncryptionKey is the Node.js service's ENCRYPTION_KEY, for keys and accounts imported
	// from it (legacy-sha256 key hashes).
	LegacyEncryptionKey Secret `toml:"legacy_encryption_key"`
}

// Log configures the process logger.
type Log struct {
	// Level is debug, info, warn or error.
	Level string `toml:"level"`
	// Format is "console" (human) or "json".
	Format string `toml:"format"`
}

// Upstream configures calls to the LLM providers.
type Upstream struct {
	// ClaudeBaseURL is where Claude official (OAuth) accounts are relayed to.
	ClaudeBaseURL string `toml:"claude_base_url"`
	// ConnectTimeout bounds dialling an upstream (TCP + TLS).
	ConnectTimeout time.Duration `toml:"connect_timeout"`
	// FirstByteTimeout bounds the wait for an upstream's response headers.
	FirstByteTimeout time.Duration `toml:"first_byte_timeout"`
	// IdleTimeout bounds the silence between two chunks of a streamed response.
	IdleTimeout time.Duration `toml:"idle_timeout"`
}

// Usage configures usage accounting.
type Usage struct {
	// TimezoneOffsetHours is the fixed UTC offset that days, weeks and months are counted in
	// (the Node.js service's TIMEZONE_OFFSET; default 8, UTC+8).
	TimezoneOffsetHours int `toml:"timezone_offset_hours"`
	// PricingFile is an optional LiteLLM-format JSON price table that overrides the built-in one.
	PricingFile string `toml:"pricing_file"`
}

// Scheduling configures account selection.
type Scheduling struct {
	// StickyTTL is how long a session stays bound to an account without traffic (settings may
	// override it at run time).
	StickyTTL time.Duration `toml:"sticky_ttl"`
	// MaxAttempts is how many accounts one request may try before the first byte reaches the client.
	MaxAttempts int `toml:"max_attempts"`
}

// OAuth configures the control plane's OAuth flows and token refresh. Endpoint and client keys
// left empty use the reference's values (controlplane/oauth.DefaultProviders); set them when a
// provider moves its endpoints (it has happened before).
type OAuth struct {
	// RefreshMargin: access tokens expiring within it are refreshed ahead of time.
	RefreshMargin time.Duration `toml:"refresh_margin"`
	// RefreshInterval is how often accounts are scanned for tokens about to expire.
	RefreshInterval time.Duration `toml:"refresh_interval"`
	// Claude (also the setup-token flow).
	ClaudeAuthorizeURL string `toml:"claude_authorize_url"`
	ClaudeTokenURL     string `toml:"claude_token_url"`
	ClaudeClientID     string `toml:"claude_client_id"`
	ClaudeRedirectURI  string `toml:"claude_redirect_uri"`
	// OpenAI / Codex.
	OpenAIAuthorizeURL string `toml:"openai_authorize_url"`
	OpenAITokenURL     string `toml:"openai_token_url"`
	OpenAIClientID     string `toml:"openai_client_id"`
	OpenAIRedirectURI  string `toml:"openai_redirect_uri"`
	// Gemini (gemini-cli's Google OAuth client).
	GeminiAuthorizeURL string `toml:"gemini_authorize_url"`
	GeminiTokenURL     string `toml:"gemini_token_url"`
	GeminiClientID     string `toml:"gemini_client_id"`
	GeminiClientSecret Secret `toml:"gemini_client_secret"`
	GeminiRedirectURI  string `toml:"gemini_redirect_uri"`
}

// Default returns the configuration used when nothing overrides it.
func Default() Config {
	return Config{
		Server:  Server{Host: "0.0.0.0", Port: 3000, MaxBodyMB: 60},
		Control: Control{Host: "0.0.0.0", GRPCPort: 9090, HTTPPort: 8080, ShutdownTimeout: 10 * time.Second, LeaseTTL: 30 * time.Second},
		Worker: Worker{
			ControlAddr: "127.0.0.1:9090",
			StaleAfter:  30 * time.Minute,
			UsageBuffer: 100000,
		},
		Store: Store{Driver: DriverEmbedded, RedisURL: "redis://127.0.0.1:6379/0", DataDir: "./data"},
		Log:   Log{Level: "info", Format: "console"},
		Upstream: Upstream{
			ClaudeBaseURL:    "https://api.anthropic.com",
			ConnectTimeout:   10 * time.Second,
			FirstByteTimeout: 300 * time.Second,
			IdleTimeout:      300 * time.Second,
		},
		Usage:      Usage{TimezoneOffsetHours: 8},
		Scheduling: Scheduling{StickyTTL: time.Hour, MaxAttempts: 3},
		OAuth:      OAuth{RefreshMargin: 5 * time.Minute, RefreshInterval: time.Minute},
	}
}

// Store drivers.
const (
	DriverEmbedded = "embedded"
	DriverRedis    = "redis"
)
