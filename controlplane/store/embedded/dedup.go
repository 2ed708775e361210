package embedded

import (
	"encoding/binary"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Usage request ids are remembered for at least DedupTTL, in one of two forms.
//
// Worker ids, as dataplane/worker newRequestID makes them ("<12 hex digits>-<base-36 sequence>":
// a random per-process prefix and a counter), are remembered as bits. usage_seq maps the prefix
// and a block of seqBlockBits sequence numbers to expiry ‖ a bitmap of the block's ids that were
// stored. A worker's batch holds nearly consecutive ids, so it reads and writes one or two blocks
// instead of two entries (the id and its expiry index) per record, and the file keeps one bit
// per request. A block expires DedupTTL after its last write, so each of its ids is remembered
// at least that long.
//
// Any other id keeps an entry of its own in usage_req (expiry as value, usage_req_exp as index).
// A database written before usage_seq existed also holds worker ids there; while usage_req has
// entries, a worker id new to its block is looked up there too.

// seqBlockBits is how many sequence numbers one usage_seq entry covers (a 512-byte bitmap). A
// block of another size reads as empty, so changing it needs a new bucket, or ids are forgotten.
const seqBlockBits = 4096

// workerPrefixLen is the length of a worker id's prefix: 12 hex digits and '-'.
const workerPrefixLen = 13

// parseWorkerID splits a worker request id into its prefix and sequence number. It accepts only
// the canonical form (lowercase, no leading zero, fits in 64 bits), so two different ids never
// map to the same (prefix, sequence).
func parseWorkerID(id string) (prefix string, seq uint64, ok bool) {
	if len(id) <= workerPrefixLen || id[workerPrefixLen-1] != '-' {
		return "", 0, false
	}
	for i := range workerPrefixLen - 1 {
		if c := id[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return "", 0, false
		}
	}
	digits := id[workerPrefixLen:]
	if len(digits) > 1 && digits[0] == '0' {
		return "", 0, false
	}
	for i := range len(digits) {
		var d uint64
		switch c := digits[i]; {
		case '0' <= c && c <= '9':
			d = uint64(c - '0')
		case 'a' <= c && c <= 'z':
			d = uint64(c-'a') + 10
		default:
			return "", 0, false
		}
		if seq > (^uint64(0)-d)/36 {
			return "", 0, false // overflow
		}
		seq = seq*36 + d
	}
	return id[:workerPrefixLen], seq, true
}

// seqBlock is one usage_seq entry while a transaction changes it.
type seqBlock struct {
	key   []byte // prefix ‖ block number (8 bytes big-endian)
	bits  []byte // seqBlockBits/8 bytes, a copy (bbolt values die with their transaction)
	dirty bool
}

// dedup tells, inside one write transaction, whether a request id was stored before and
// remembers it. It is not safe for concurrent use (neither is the transaction).
type dedup struct {
	now, expiry  time.Time
	seqs, seqExp *bolt.Bucket
	reqs, reqExp *bolt.Bucket
	// legacy: usage_req has entries, so it may hold worker ids of an earlier version.
	legacy bool

	blocks map[string]*seqBlock // by key
	order  []*seqBlock          // blocks in first-use order, so writes are deterministic
	// The block of the previous worker id, which most ids share.
	lastPrefix string
	lastBlock  uint64
	last       *seqBlock
}

func newDedup(tx *bolt.Tx, now time.Time) *dedup {
	d := &dedup{
		now:    now,
		expiry: now.Add(DedupTTL),
		seqs:   tx.Bucket(bucketUsageSeq),
		seqExp: tx.Bucket(bucketUsageSeqExp),
		reqs:   tx.Bucket(bucketUsageReq),
		reqExp: tx.Bucket(bucketUsageReqExp),
		blocks: map[string]*seqBlock{},
	}
	k, _ := d.reqs.Cursor().First()
	d.legacy = k != nil
	return d
}

// seen reports whether id was stored before (earlier in this transaction included) and, if not,
// remembers it.
func (d *dedup) seen(id string) (bool, error) {
	prefix, seq, ok := parseWorkerID(id)
	if !ok {
		return d.seenReq(id)
	}
	b := d.block(prefix, seq/seqBlockBits)
	i := seq % seqBlockBits
	mask := byte(1) << (i % 8)
	if b.bits[i/8]&mask != 0 {
		return true, nil
	}
	b.bits[i/8] |= mask
	b.dirty = true
	if d.legacy {
		if v := d.reqs.Get([]byte(id)); v != nil && !expired(v, d.now) {
			return true, nil
		}
	}
	return false, nil
}

// seenReq is seen for an id kept in usage_req.
func (d *dedup) seenReq(id string) (bool, error) {
	key := []byte(id)
	if v := d.reqs.Get(key); v != nil && !expired(v, d.now) {
		return true, nil
	}
	return false, putExpiring(d.reqs, d.reqExp, key, d.expiry, nil)
}

// block returns the block numbered n of prefix, read on first use; an expired block reads as
// empty.
func (d *dedup) block(prefix string, n uint64) *seqBlock {
	if d.last != nil && n == d.lastBlock && prefix == d.lastPrefix {
		return d.last
	}
	key := binary.BigEndian.AppendUint64(append(make([]byte, 0, len(prefix)+8), prefix...), n)
	b, ok := d.blocks[string(key)]
	if !ok {
		b = &seqBlock{key: key, bits: make([]byte, seqBlockBits/8)}
		if v := d.seqs.Get(key); len(v) == 8+len(b.bits) && !expired(v, d.now) {
			copy(b.bits, v[8:])
		}
		d.blocks[string(key)] = b
		d.order = append(d.order, b)
	}
	d.lastPrefix, d.lastBlock, d.last = prefix, n, b
	return b
}

// flush writes the blocks that changed, each expiring DedupTTL from now.
func (d *dedup) flush() error {
	for _, b := range d.order {
		if !b.dirty {
			continue
		}
		if err := putExpiring(d.seqs, d.seqExp, b.key, d.expiry, b.bits); err != nil {
			return err
		}
	}
	return nil
}
