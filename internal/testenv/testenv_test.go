package testenv

import (
	"net"
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestFreePortIsBindable(t *testing.T) {
	port := FreePort(t)
	require.Positive(t, port)
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	require.NoError(t, err)
	require.NoError(t, l.Close())
}

func TestStartRedisAnswersPingAndStopsAtCleanup(t *testing.T) {
	var addr string
	t.Run("start", func(t *testing.T) {
		addr = StartRedis(t)
		require.NotEqual(t, "127.0.0.1:6379", addr, "must never use the shared Redis")
		require.NoError(t, ping(addr))
	})
	if addr == "" {
		t.Skip("redis-server not available")
	}
	// The subtest's cleanup killed the server.
	require.Error(t, ping(addr))
}
