// Package records holds what both store backends do the same way with key and account records:
// the checks a record must pass before it is written, the order lists are returned in, and the
// encoding of an account without its status (which each backend keeps apart, so status writes do
// not rewrite the account). It depends on the store interface and the contract's generated types.
package records

import (
	"cmp"
	"fmt"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/crsrelay/crs/controlplane/store"
	crsv1 "github.com/crsrelay/crs/gen/crs/v1"
)

// CheckKey refuses a key record that cannot be stored: nil, without id or without hash.
func CheckKey(k *store.Key) error {
	switch {
	case k == nil || k.Key == nil:
		return fmt.Errorf("store key: nil key")
	case k.Key.GetId() == "":
		return fmt.Errorf("store key: empty id")
	case k.Hash == "":
		return fmt.Errorf("store key %s: empty hash", k.Key.GetId())
	}
	return nil
}

// CheckAccount refuses an account record that cannot be stored: nil or without id.
func CheckAccount(a *store.Account) error {
	switch {
	case a == nil || a.Account == nil:
		return fmt.Errorf("store account: nil account")
	case a.Account.GetId() == "":
		return fmt.Errorf("store account: empty id")
	}
	return nil
}

// CompareCreated orders records by creation time, then id (unset times sort first): the order
// of every List.
func CompareCreated(at *timestamppb.Timestamp, aid string, bt *timestamppb.Timestamp, bid string) int {
	return cmp.Or(
		cmp.Compare(at.GetSeconds(), bt.GetSeconds()),
		cmp.Compare(at.GetNanos(), bt.GetNanos()),
		cmp.Compare(aid, bid),
	)
}

// EncodePublic encodes an account without its status, which backends keep in its own entry.
func EncodePublic(acc *crsv1.Account) ([]byte, error) {
	if acc.GetStatus() != nil {
		acc = proto.CloneOf(acc)
		acc.Status = nil
	}
	b, err := proto.Marshal(acc)
	if err != nil {
		return nil, fmt.Errorf("encode account %s: %w", acc.GetId(), err)
	}
	return b, nil
}
