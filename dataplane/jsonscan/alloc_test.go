//go:build !race

package jsonscan

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// Walking, skipping, comparing keys and decoding into a buffer with room must not allocate.
func TestWalkDoesNotAllocate(t *testing.T) {
	b := []byte(`{"mod\u0065l":"claude-\u0068aiku","messages":[{"content":[{"type":"text","text":"h\u00e9llo \ud83d\ude00 日本"}]},1.5e3,null,true],"x":{"y":[[]]}}`)
	buf := make([]byte, 0, 256)
	allocs := testing.AllocsPerRun(100, func() {
		var model Span
		_, err := EachMember(b, 0, 0, func(key []byte, special bool, vs int) (int, error) {
			if KeyIs(key, special, "model") {
				sp, end, err := StringSpan(b, vs, 1)
				model = sp
				return end, err
			}
			return SkipValue(b, vs, 1)
		})
		if err != nil || !model.OK() {
			t.Fatal("walk failed")
		}
		buf = DecodeString(buf[:0], b, model)
	})
	require.Zero(t, allocs)
	require.Equal(t, "claude-haiku", string(buf))

	// Switching on decoded keys, escaped or not, does not allocate either.
	var kb KeyBuf
	n := 0
	allocs = testing.AllocsPerRun(100, func() {
		n = 0
		_, err := EachMember(b, 0, 0, func(key []byte, special bool, vs int) (int, error) {
			switch string(KeyName(&kb, key, special)) {
			case "model", "messages":
				n++
			}
			return SkipValue(b, vs, 1)
		})
		if err != nil {
			t.Fatal(err)
		}
	})
	require.Zero(t, allocs)
	require.Equal(t, 2, n)
}
