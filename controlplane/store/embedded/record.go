package embedded

import (
	"bytes"
	"fmt"

	"google.golang.org/protobuf/encoding/protowire"
)

// envelope is how keys and accounts are stored: the record's protobuf encoding plus the
// store-only data the contract's message has no field for. It is itself encoded as protobuf wire
// format (field 1 message bytes, 2 extra bytes, 3 generation varint), so it can grow fields
// compatibly.
type envelope struct {
	msg []byte
	// extra is the key hash (keys) or the sealed credentials (accounts).
	extra      []byte
	generation int64
}

func (e envelope) marshal() []byte {
	b := make([]byte, 0, len(e.msg)+len(e.extra)+24)
	b = protowire.AppendTag(b, 1, protowire.BytesType)
	b = protowire.AppendBytes(b, e.msg)
	b = protowire.AppendTag(b, 2, protowire.BytesType)
	b = protowire.AppendBytes(b, e.extra)
	if e.generation != 0 {
		b = protowire.AppendTag(b, 3, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(e.generation))
	}
	return b
}

// unmarshalEnvelope decodes b, copying everything out of it (bbolt values die with their
// transaction).
func unmarshalEnvelope(b []byte) (envelope, error) {
	var e envelope
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return envelope{}, fmt.Errorf("decode envelope: %w", protowire.ParseError(n))
		}
		b = b[n:]
		switch {
		case num == 1 && typ == protowire.BytesType:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return envelope{}, fmt.Errorf("decode envelope: %w", protowire.ParseError(n))
			}
			e.msg, b = bytes.Clone(v), b[n:]
		case num == 2 && typ == protowire.BytesType:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return envelope{}, fmt.Errorf("decode envelope: %w", protowire.ParseError(n))
			}
			e.extra, b = bytes.Clone(v), b[n:]
		case num == 3 && typ == protowire.VarintType:
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return envelope{}, fmt.Errorf("decode envelope: %w", protowire.ParseError(n))
			}
			e.generation, b = int64(v), b[n:]
		default:
			n := protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return envelope{}, fmt.Errorf("decode envelope: %w", protowire.ParseError(n))
			}
			b = b[n:]
		}
	}
	return e, nil
}
