package mockupstream

import "math/rand/v2"

// base58 is the alphabet of Anthropic's request and message ids.
const base58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"

// appendID appends prefix and n random base58 characters, the shape of "req_011CSHoE..." and
// "msg_01XFDUDY...". math/rand/v2's global source is per-thread and lock-free; ids only need to be
// unique enough for tests, not unpredictable.
func appendID(dst []byte, prefix string, n int) []byte {
	dst = append(dst, prefix...)
	var r uint64
	for i := 0; i < n; i++ {
		if i%10 == 0 {
			r = rand.Uint64()
		}
		dst = append(dst, base58[r%58])
		r /= 58
	}
	return dst
}

// Id prefixes and random lengths, as the real API shapes them.
const (
	requestIDPrefix = "req_011C"
	requestIDRand   = 20
	messageIDPrefix = "msg_01"
	messageIDRand   = 22
)
