package config

import "go.uber.org/zap/zapcore"

// Secret is a configuration string that must never be printed: String, GoString, text/JSON/TOML
// marshalling and zap all render it as "REDACTED" (or "" when empty). Value returns the real text.
type Secret string

// redacted is how a non-empty Secret renders.
const redacted = "REDACTED"

// Value returns the secret itself, for the one place that uses it.
func (s Secret) Value() string { return string(s) }

// String implements fmt.Stringer without revealing the secret.
func (s Secret) String() string {
	if s == "" {
		return ""
	}
	return redacted
}

// GoString implements fmt.GoStringer (%#v) without revealing the secret.
func (s Secret) GoString() string { return `config.Secret("` + s.String() + `")` }

// MarshalText implements encoding.TextMarshaler (JSON, TOML, zap.Reflect) without revealing the secret.
func (s Secret) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler: the text is the secret.
func (s *Secret) UnmarshalText(b []byte) error {
	*s = Secret(b)
	return nil
}

var _ zapcore.ObjectMarshaler = (*Security)(nil)

// MarshalLogObject implements zapcore.ObjectMarshaler: which secrets are set, never their values.
func (s *Security) MarshalLogObject(enc zapcore.ObjectEncoder) error {
	enc.AddString("admin_token", s.AdminToken.String())
	enc.AddString("encryption_key", s.EncryptionKey.String())
	enc.AddString("fleet_token", s.FleetToken.String())
	enc.AddString("legacy_encryption_key", s.LegacyEncryptionKey.String())
	return nil
}
