package redisstore

import (
	"context"
	"fmt"
	"time"
)

// Bind implements [store.Store.Bind]: one script reads the binding and, if there is none (or
// replace), sets it with the TTL in milliseconds (SET PX), so Redis expires it.
func (s *Store) Bind(ctx context.Context, platform, session, accountID string, ttl time.Duration, replace bool) (string, bool, error) {
	if ttl <= 0 {
		return "", false, fmt.Errorf("bind: ttl %s is not positive", ttl)
	}
	if accountID == "" {
		return "", false, fmt.Errorf("bind: empty account id")
	}
	ms := max(ttl.Milliseconds(), 1)
	rep := "0"
	if replace {
		rep = "1"
	}
	res, err := bindScript.Run(ctx, s.rdb, []string{bindPrefix + platform + ":" + session}, accountID, ms, rep).Slice()
	if err != nil {
		return "", false, fmt.Errorf("bind %s session: %w", platform, err)
	}
	if len(res) != 2 {
		return "", false, fmt.Errorf("bind %s session: unexpected reply %v", platform, res)
	}
	bound, _ := res[0].(string)
	created, _ := res[1].(int64)
	return bound, created == 1, nil
}
