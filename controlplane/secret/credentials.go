package secret

import (
	"fmt"

	"google.golang.org/protobuf/proto"

	crsv1 "github.com/crsrelay/crs/gen/crs/v1"
)

// credentialsAAD binds sealed credentials to the account they belong to, so a sealed blob copied onto
// another account does not open.
func credentialsAAD(accountID string) []byte {
	return []byte("crs/account-credentials/v1:" + accountID)
}

// SealCredentials seals what of a is secret: the credentials oneof (with its secret fields) and the
// proxy URL (which may carry a password). a.Id must be set: the result opens only for that id.
// a itself is not modified.
func (s *Sealer) SealCredentials(a *crsv1.Account) ([]byte, error) {
	only := &crsv1.Account{Proxy: a.GetProxy()}
	switch c := a.GetCredentials().(type) {
	case *crsv1.Account_ApiKey:
		only.Credentials = &crsv1.Account_ApiKey{ApiKey: c.ApiKey}
	case *crsv1.Account_Oauth:
		only.Credentials = &crsv1.Account_Oauth{Oauth: c.Oauth}
	case *crsv1.Account_Aws:
		only.Credentials = &crsv1.Account_Aws{Aws: c.Aws}
	case *crsv1.Account_Azure:
		only.Credentials = &crsv1.Account_Azure{Azure: c.Azure}
	case nil:
	default:
		return nil, fmt.Errorf("secret: unknown credentials type %T", c)
	}
	pt, err := proto.Marshal(only)
	if err != nil {
		return nil, fmt.Errorf("secret: marshal credentials: %w", err)
	}
	return s.Seal(pt, credentialsAAD(a.GetId()))
}

// OpenCredentials opens what SealCredentials sealed for into.Id and puts it into into: the
// credentials oneof replaces into's, and a non-empty sealed proxy replaces into.Proxy (the stored
// public copy has its password redacted). Everything else in into is left alone.
func (s *Sealer) OpenCredentials(sealed []byte, into *crsv1.Account) error {
	pt, err := s.Open(sealed, credentialsAAD(into.GetId()))
	if err != nil {
		return err
	}
	var only crsv1.Account
	if err := proto.Unmarshal(pt, &only); err != nil {
		return fmt.Errorf("secret: unmarshal credentials: %w", err)
	}
	into.Credentials = only.Credentials
	if only.GetProxy() != "" {
		into.Proxy = only.GetProxy()
	}
	return nil
}
