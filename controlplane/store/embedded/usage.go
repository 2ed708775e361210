package embedded

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"

	"github.com/crsrelay/crs/controlplane/store"
	"github.com/crsrelay/crs/controlplane/store/internal/usageagg"
	crsv1 "github.com/crsrelay/crs/gen/crs/v1"
)

// cellKey encodes an aggregate cell as scope \0 id \0 granularity \0 period [\0 model]. A split
// cell's key extends the unsplit one by \0 model, so the models of a period are a prefix scan.
func cellKey(c usageagg.Cell) []byte { return appendCellKey(nil, c) }

// appendCellKey appends c's key to dst (for a reused buffer on the hot path).
func appendCellKey(dst []byte, c usageagg.Cell) []byte {
	dst = append(dst, c.Scope...)
	dst = append(dst, 0)
	dst = append(dst, c.ID...)
	dst = append(dst, 0)
	dst = append(dst, c.Gran...)
	dst = append(dst, 0)
	dst = append(dst, c.Period...)
	if c.Model != "" {
		dst = append(dst, 0)
		dst = append(dst, c.Model...)
	}
	return dst
}

// RecordUsage implements [store.Store.RecordUsage] in one write transaction (one fsync). DB.Batch
// would coalesce concurrent calls but delays a lone caller by its MaxBatchDelay; callers with many
// records use RecordUsageBatch instead.
func (s *Store) RecordUsage(ctx context.Context, e *store.UsageEntry) (bool, error) {
	stored, err := s.RecordUsageBatch(ctx, []*store.UsageEntry{e})
	if err != nil {
		return false, err
	}
	return stored[0], nil
}

// RecordUsageBatch implements [store.Store.RecordUsageBatch]: the whole batch is one write
// transaction, so one fsync however many records it holds. The records of a batch mostly share
// their cells (same key, account, model, hour), so the new ones are summed per group of shared
// cells (usageagg.Groups) and then per cell: each cell is read, decoded and written once per
// batch, and cells are computed once per group, not per record.
func (s *Store) RecordUsageBatch(ctx context.Context, es []*store.UsageEntry) ([]bool, error) {
	for _, e := range es {
		if e == nil || e.Record == nil || e.Record.GetRequestId() == "" {
			return nil, fmt.Errorf("record usage: empty request id")
		}
	}
	stored := make([]bool, len(es))
	err := s.update(ctx, func(tx *bolt.Tx, ch *changes) error {
		clear(stored) // a retried transaction starts over
		d := newDedup(tx, s.now())
		var groups usageagg.Groups
		var sums []*crsv1.UsageTotals // per group: the sum of its new entries
		for i, e := range es {
			seen, err := d.seen(e.Record.GetRequestId())
			if err != nil {
				return fmt.Errorf("record usage %s: %w", e.Record.GetRequestId(), err)
			}
			if seen {
				continue
			}
			stored[i] = true
			g := groups.Of(e)
			if g == len(sums) {
				sums = append(sums, &crsv1.UsageTotals{})
			}
			usageagg.AddEntry(sums[g], e)
		}
		if err := d.flush(); err != nil {
			return fmt.Errorf("record usage: request ids: %w", err)
		}
		return addGroups(tx.Bucket(bucketUsage), &groups, sums, ch)
	})
	if err != nil {
		return nil, err
	}
	return stored, nil
}

// addGroups adds sums[g] to every cell of group g. Groups share cells (every group adds to the
// global total), so the sums are merged per cell first.
func addGroups(usage *bolt.Bucket, groups *usageagg.Groups, sums []*crsv1.UsageTotals, ch *changes) error {
	cells := map[string]*crsv1.UsageTotals{}
	var order []string // cells in first-seen order, for a deterministic write order
	var buf []byte
	for g := range groups.Len() {
		e := groups.Entry(g)
		for _, c := range usageagg.Cells(e) {
			buf = appendCellKey(buf[:0], c)
			sum, ok := cells[string(buf)] // no allocation for the lookup
			if !ok {
				k := string(buf)
				sum = &crsv1.UsageTotals{}
				cells[k] = sum
				order = append(order, k)
			}
			usageagg.Add(sum, sums[g])
		}
		if key := e.Record.GetKeyId(); key != "" {
			ch.add(store.KindKeyUsage, key)
		}
	}
	for _, k := range order {
		if err := addCell(usage, []byte(k), cells[k]); err != nil {
			return fmt.Errorf("record usage: %w", err)
		}
	}
	return nil
}

// addCell adds delta to the cell stored under k.
func addCell(b *bolt.Bucket, k []byte, delta *crsv1.UsageTotals) error {
	var t crsv1.UsageTotals
	if v := b.Get(k); v != nil {
		if err := proto.Unmarshal(v, &t); err != nil {
			return fmt.Errorf("decode usage cell %q: %w", k, err)
		}
	}
	usageagg.Add(&t, delta)
	v, err := proto.Marshal(&t)
	if err != nil {
		return fmt.Errorf("encode usage cell %q: %w", k, err)
	}
	return b.Put(k, v)
}

// QueryUsage implements [store.Store.QueryUsage].
func (s *Store) QueryUsage(ctx context.Context, q store.UsageQuery) ([]store.UsageRow, error) {
	p, err := usageagg.Resolve(q)
	if err != nil {
		return nil, err
	}
	var rows []store.UsageRow
	err = s.view(ctx, func(tx *bolt.Tx) error {
		usage := tx.Bucket(bucketUsage)
		if !p.ByModel || p.Model != "" {
			var rerr error
			rows, rerr = usageagg.Rows(p, func(c usageagg.Cell) (*crsv1.UsageTotals, error) {
				return getCell(usage, cellKey(c))
			})
			return rerr
		}
		cur := usage.Cursor()
		for _, period := range p.Periods {
			prefix := append(cellKey(usageagg.Cell{Scope: p.Scope, ID: p.ID, Gran: p.Gran, Period: period}), 0)
			for k, v := cur.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = cur.Next() {
				var t crsv1.UsageTotals
				if err := proto.Unmarshal(v, &t); err != nil {
					return fmt.Errorf("decode usage cell %q: %w", k, err)
				}
				rows = append(rows, store.UsageRow{Period: period, Model: string(k[len(prefix):]), Totals: &t})
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("query usage: %w", err)
	}
	return rows, nil
}

// KeySpend implements [store.Store.KeySpend].
func (s *Store) KeySpend(ctx context.Context, keyID, day, week string) (store.KeySpend, error) {
	var spend store.KeySpend
	daily, total, weekly := usageagg.SpendCells(keyID, day, week)
	err := s.view(ctx, func(tx *bolt.Tx) error {
		usage := tx.Bucket(bucketUsage)
		for _, x := range []struct {
			cell usageagg.Cell
			dst  *float64
		}{{daily, &spend.DailyCost}, {total, &spend.TotalCost}, {weekly, &spend.WeeklyOpusCost}} {
			t, err := getCell(usage, cellKey(x.cell))
			if err != nil {
				return err
			}
			*x.dst = t.GetRatedCost()
		}
		return nil
	})
	if err != nil {
		return store.KeySpend{}, fmt.Errorf("key spend %s: %w", keyID, err)
	}
	return spend, nil
}

// getCell reads a cell; nil when nothing was recorded.
func getCell(b *bolt.Bucket, k []byte) (*crsv1.UsageTotals, error) {
	v := b.Get(k)
	if v == nil {
		return nil, nil
	}
	var t crsv1.UsageTotals
	if err := proto.Unmarshal(v, &t); err != nil {
		return nil, fmt.Errorf("decode usage cell %q: %w", k, err)
	}
	return &t, nil
}

// Expiring entries (usage_seq, usage_req, bind) store an 8-byte big-endian unix-nanosecond expiry
// followed by their payload, and have an index entry expiry ‖ key in a second bucket for the sweep.

func encodeExpiry(t time.Time) []byte {
	return binary.BigEndian.AppendUint64(make([]byte, 0, 8), uint64(t.UnixNano()))
}

func expiryOf(v []byte) time.Time {
	if len(v) < 8 {
		return time.Time{}
	}
	return time.Unix(0, int64(binary.BigEndian.Uint64(v[:8])))
}

func expired(v []byte, now time.Time) bool { return !now.Before(expiryOf(v)) }

// putExpiring stores key -> expiry ‖ payload in b and its index entry in idx, replacing the index
// entry of a previous value.
func putExpiring(b, idx *bolt.Bucket, key []byte, expiry time.Time, payload []byte) error {
	if old := b.Get(key); old != nil && len(old) >= 8 {
		if err := idx.Delete(slices.Concat(old[:8], key)); err != nil {
			return err
		}
	}
	exp := encodeExpiry(expiry)
	if err := b.Put(key, slices.Concat(exp, payload)); err != nil {
		return err
	}
	return idx.Put(slices.Concat(exp, key), []byte{})
}
