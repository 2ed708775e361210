// Package admin implements AdminService, the operator API over the control plane's store: API keys
// (plaintext shown once, only an HMAC kept), upstream accounts (credentials sealed with
// controlplane/secret, never returned), account groups, settings and usage reports.
//
// It validates every input and maps every failure to a gRPC status in one place (toStatus); the
// REST face is grpc-gateway (controlplane/adminhttp). It depends on the store interface, the
// contract and controlplane/secret; never on the data plane, HTTP or a concrete store.
package admin

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/crsrelay/crs/controlplane/secret"
	"github.com/crsrelay/crs/controlplane/store"
	crsv1 "github.com/crsrelay/crs/gen/crs/v1"
)

// Store secrets this package creates or reads.
const (
	// KeyHMACSecretName holds the 32-byte HMAC secret that key plaintexts are hashed with
	// (keyhash.HMAC). Workers need the same bytes to find keys.
	KeyHMACSecretName = "key_hmac_secret"
	// AdminTokenSecretName holds the SHA-256 of the generated admin token.
	AdminTokenSecretName = "admin_token_sha256"
)

// DefaultTimezoneOffsetHours is the usage time zone when none is configured (UTC+8, as the Node.js
// service's TIMEZONE_OFFSET default).
const DefaultTimezoneOffsetHours = 8

// Options are the dependencies of a Service.
type Options struct {
	// Store is where everything is kept. Required.
	Store store.Store
	// Sealer seals and opens account credentials. Required.
	Sealer *secret.Sealer
	// HMACSecret hashes key plaintexts (see LoadKeyHMACSecret). Required, at least 32 bytes.
	HMACSecret []byte
	// Logger receives internal errors (their causes never reach clients). Default: no-op.
	Logger *zap.Logger
	// TimeZone is the zone usage period labels are computed in. Default: UTC+8.
	TimeZone *time.Location
	// Now is the clock. Default: time.Now.
	Now func() time.Time
	// OAuth runs StartOAuth and ExchangeOAuthCode (*oauth.Flows). Optional: without it they
	// answer FailedPrecondition.
	OAuth OAuthFlows
	// Refresher serves RefreshAccountToken (*oauth.Refresher). Optional, likewise.
	Refresher TokenRefresher
	// Notifications stores the notification targets (*notify.TargetStore). Optional, likewise.
	Notifications NotificationTargets
	// Notifier sends TestNotification's events (*notify.Notifier). Optional, likewise.
	Notifier NotificationTester
}

// Service implements crsv1.AdminServiceServer. It is safe for concurrent use; all state is in
// the store.
type Service struct {
	crsv1.UnimplementedAdminServiceServer

	store  store.Store
	sealer *secret.Sealer
	hmac   []byte
	log    *zap.Logger
	tz     *time.Location
	now    func() time.Time

	oauth     OAuthFlows
	refresher TokenRefresher
	targets   NotificationTargets
	tester    NotificationTester
}

var _ crsv1.AdminServiceServer = (*Service)(nil)

// New returns a Service.
func New(o Options) (*Service, error) {
	if o.Store == nil || o.Sealer == nil {
		return nil, errors.New("admin: store and sealer are required")
	}
	if len(o.HMACSecret) < 32 {
		return nil, errors.New("admin: hmac secret must be at least 32 bytes")
	}
	s := &Service{store: o.Store, sealer: o.Sealer, hmac: o.HMACSecret, log: o.Logger, tz: o.TimeZone, now: o.Now,
		oauth: o.OAuth, refresher: o.Refresher, targets: o.Notifications, tester: o.Notifier}
	if s.log == nil {
		s.log = zap.NewNop()
	}
	if s.tz == nil {
		s.tz = TimeZone(DefaultTimezoneOffsetHours)
	}
	if s.now == nil {
		s.now = time.Now
	}
	return s, nil
}

// TimeZone returns the fixed zone UTC+offsetHours used for usage periods.
func TimeZone(offsetHours int) *time.Location {
	return time.FixedZone(fmt.Sprintf("UTC%+d", offsetHours), offsetHours*3600)
}

// LoadKeyHMACSecret returns the key-hashing secret, creating 32 random bytes on the first start
// (every replica sharing the store then reads the same bytes).
func LoadKeyHMACSecret(ctx context.Context, st store.Store) ([]byte, error) {
	fresh, err := secret.RandomBytes(32)
	if err != nil {
		return nil, err
	}
	got, err := st.PutSecretIfAbsent(ctx, KeyHMACSecretName, fresh)
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", KeyHMACSecretName, err)
	}
	if len(got) < 32 {
		return nil, fmt.Errorf("load %s: stored secret is %d bytes, want 32", KeyHMACSecretName, len(got))
	}
	return got, nil
}
