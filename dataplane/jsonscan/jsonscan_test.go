package jsonscan

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/stretchr/testify/require"
)

// whole reports whether b is one JSON value with optional surrounding whitespace.
func whole(b []byte) bool {
	i := SkipWS(b, 0)
	end, err := SkipValue(b, i, 0)
	return err == nil && SkipWS(b, end) == len(b)
}

var validityCases = []struct {
	name string
	in   string
}{
	{"empty", ``},
	{"whitespace", " \t\r\n"},
	{"object", `{"a":1,"b":[true,false,null],"c":{"d":"e"}}`},
	{"empty containers", `{"a":{},"b":[],"c":[{}],"d":[[]]}`},
	{"whitespace everywhere", " { \"a\" : [ 1 , 2 ] , \"b\" :\n{ } } "},
	{"scalars", `"s"`},
	{"numbers", `[0,-0,1,-1,10,1.5,-0.25,1e3,1E+3,1e-3,2.5E-10,123456789012345678901234567890]`},
	{"leading zero", `01`},
	{"leading plus", `+1`},
	{"bare minus", `-`},
	{"trailing dot", `1.`},
	{"dot without integer", `.5`},
	{"exponent without digits", `1e`},
	{"exponent sign without digits", `1e+`},
	{"hex number", `0x10`},
	{"literals", `[true,false,null]`},
	{"truncated literal", `[tru]`},
	{"capital literal", `True`},
	{"escapes", `"\" \\ \/ \b \f \n \r \t \u00e9 \ud83d\ude00 \ud800"`},
	{"bad escape", `"\x"`},
	{"short unicode escape", `"\u12"`},
	{"non-hex unicode escape", `"\u12g4"`},
	{"control character", "\"a\tb\""},
	{"DEL is allowed", "\"a\x7fb\""},
	{"unicode", `"日本 é"`},
	{"unterminated string", `"abc`},
	{"trailing backslash", `"abc\`},
	{"trailing comma in object", `{"a":1,}`},
	{"trailing comma in array", `[1,]`},
	{"missing colon", `{"a" 1}`},
	{"missing value", `{"a":}`},
	{"non-string key", `{1:2}`},
	{"single quotes", `{'a':1}`},
	{"unclosed object", `{"a":1`},
	{"unclosed array", `[1,2`},
	{"mismatched brackets", `[1}`},
	{"two values", `1 2`},
	{"trailing garbage", `{} x`},
	{"comment", `{} // x`},
	{"empty key and value", `{"":""}`},
}

func TestValidityAgreesWithEncodingJSON(t *testing.T) {
	for _, tt := range validityCases {
		t.Run(tt.name, func(t *testing.T) {
			b := []byte(tt.in)
			require.Equal(t, json.Valid(b), whole(b))
		})
	}
}

func TestErrorsAreErrSyntax(t *testing.T) {
	for _, in := range []string{``, `{`, `[1,]`, `"\x"`, `tru`, `-`, `{"a" 1}`} {
		_, err := SkipValue([]byte(in), 0, 0)
		require.ErrorIs(t, err, ErrSyntax, "%q", in)
	}
}

func TestMaxDepth(t *testing.T) {
	nested := func(n int) []byte {
		return []byte(strings.Repeat(`[{"a":`, n/2) + strings.Repeat("[", n%2) + "1" +
			strings.Repeat("]", n%2) + strings.Repeat(`}]`, n/2))
	}
	for _, n := range []int{1, 2, MaxDepth - 1, MaxDepth, MaxDepth + 1, MaxDepth + 2} {
		b := nested(n)
		require.Equal(t, json.Valid(b), whole(b), "depth %d", n)
	}
	require.True(t, whole(nested(MaxDepth)))
	require.False(t, whole(nested(MaxDepth+1)))

	// The depth a caller passes counts: an object met at MaxDepth fails.
	_, err := EachMember([]byte(`{}`), 0, MaxDepth, nil)
	require.ErrorIs(t, err, ErrSyntax)
	_, err = EachElement([]byte(`[]`), 0, MaxDepth-1, nil)
	require.NoError(t, err)
}

func TestSkipString(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		end     int
		special bool
		wantErr bool
	}{
		{"plain", `"abc" x`, 5, false, false},
		{"empty", `""`, 2, false, false},
		{"printable ASCII", `" ~!#$%&'()*+,-./:;<=>?@[]^_{|}` + "`" + `"`, 33, false, false},
		{"escape", `"a\nb"`, 6, true, false},
		{"escaped quote", `"a\"b"`, 6, true, false},
		{"unicode escape", `"\u0041"`, 8, true, false},
		{"non-ASCII", `"é"`, 4, true, false},
		{"unterminated", `"abc`, 0, false, true},
		{"control", "\"\n\"", 0, false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			end, special, err := SkipString([]byte(tt.in), 0)
			if tt.wantErr {
				require.ErrorIs(t, err, ErrSyntax)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.end, end)
			require.Equal(t, tt.special, special)
		})
	}
}

func TestEachMember(t *testing.T) {
	b := []byte(` {"a":1, "b\u0063":[2,3] ,"é":{"x":null},"a":"s"} `)
	type member struct {
		key     string
		special bool
		value   string
	}
	var got []member
	end, err := EachMember(b, 1, 0, func(key []byte, special bool, vs int) (int, error) {
		ve, err := SkipValue(b, vs, 1)
		got = append(got, member{string(key), special, string(b[vs:ve])})
		return ve, err
	})
	require.NoError(t, err)
	require.Equal(t, len(b)-1, end)
	require.Equal(t, []member{
		{"a", false, "1"},
		{`b\u0063`, true, "[2,3]"},
		{"é", true, `{"x":null}`},
		{"a", false, `"s"`},
	}, got)

	end, err = EachMember([]byte(`{ }`), 0, 0, func([]byte, bool, int) (int, error) {
		t.Fatal("called for an empty object")
		return 0, nil
	})
	require.NoError(t, err)
	require.Equal(t, 3, end)

	stop := errors.New("stop")
	_, err = EachMember([]byte(`{"a":1,"b":2}`), 0, 0, func(key []byte, _ bool, vs int) (int, error) {
		if string(key) == "b" {
			return 0, stop
		}
		return vs + 1, nil
	})
	require.ErrorIs(t, err, stop, "a callback's error ends the walk")

	_, err = EachMember([]byte(`{"a":`), 0, 0, func([]byte, bool, int) (int, error) {
		t.Fatal("called without a value")
		return 0, nil
	})
	require.ErrorIs(t, err, ErrSyntax)
}

func TestEachElement(t *testing.T) {
	b := []byte(`[ "x" , {"a":[1]},null,-2.5e1 ]`)
	var got []string
	end, err := EachElement(b, 0, 0, func(n, vs int) (int, error) {
		require.Equal(t, len(got), n)
		ve, err := SkipValue(b, vs, 1)
		got = append(got, string(b[vs:ve]))
		return ve, err
	})
	require.NoError(t, err)
	require.Equal(t, len(b), end)
	require.Equal(t, []string{`"x"`, `{"a":[1]}`, "null", "-2.5e1"}, got)

	end, err = EachElement([]byte(`[]`), 0, 0, func(int, int) (int, error) {
		t.Fatal("called for an empty array")
		return 0, nil
	})
	require.NoError(t, err)
	require.Equal(t, 2, end)

	_, err = EachElement([]byte(`[1,`), 0, 0, func(_, vs int) (int, error) { return vs + 1, nil })
	require.ErrorIs(t, err, ErrSyntax)
}

func TestStringSpan(t *testing.T) {
	b := []byte(`["ab",5,"",{"x":"y"}]`)
	var spans []Span
	_, err := EachElement(b, 0, 0, func(_, vs int) (int, error) {
		sp, end, err := StringSpan(b, vs, 1)
		spans = append(spans, sp)
		return end, err
	})
	require.NoError(t, err)
	require.Equal(t, []Span{{1, 5}, {}, {8, 10}, {}}, spans)
	require.True(t, spans[0].OK())
	require.True(t, spans[0].NonEmpty())
	require.False(t, spans[1].OK())
	require.True(t, spans[2].OK(), `"" is present`)
	require.False(t, spans[2].NonEmpty(), `"" is empty`)
	require.Equal(t, "ab", string(DecodeString(nil, b, spans[0])))
}

func TestAppendUnescaped(t *testing.T) {
	for _, in := range []string{
		`plain`,
		`\" \\ \/ \b \f \n \r \t`,
		`\u00e9\u65E5 \u0000`,
		`\ud83d\ude00 pair`,
		`\ud800 lone high`,
		`\udc00 lone low`,
		`\ud800\u0041 high then BMP`,
		`\ud800\ud800\udc00 high then pair`,
		`日本 é raw`,
		``,
	} {
		t.Run(in, func(t *testing.T) {
			var want string
			require.NoError(t, json.Unmarshal([]byte(`"`+in+`"`), &want))
			require.Equal(t, want, string(AppendUnescaped([]byte("x"), []byte(in)))[1:])
		})
	}
	require.Equal(t, "a\xffb", string(AppendUnescaped(nil, []byte("a\xffb"))), "raw bytes are kept")
}

func TestKeyIs(t *testing.T) {
	tests := []struct {
		key  string
		name string
		want bool
	}{
		{"model", "model", true},
		{"model", "Model", false},
		{`mod\u0065l`, "model", true},
		{`\u006d\u006f\u0064\u0065\u006c`, "model", true},
		{`mod\u0065l`, "modell", false},
		{`a\nb`, "a\nb", true},
		{"é", "é", true},
		{`\u00e9`, "é", true},
		{`\u00e9`, "e", false},
		{strings.Repeat(`\u0061`, 100), strings.Repeat("a", 100), true},
	}
	for _, tt := range tests {
		t.Run(tt.key, func(t *testing.T) {
			b := []byte(`{"` + tt.key + `":0}`)
			var got bool
			_, err := EachMember(b, 0, 0, func(key []byte, special bool, vs int) (int, error) {
				got = KeyIs(key, special, tt.name)
				return SkipValue(b, vs, 1)
			})
			require.NoError(t, err)
			require.Equal(t, tt.want, got)
		})
	}
}

// KeyName gives the decoded key when it fits KeyBuf, the raw key when it has no escape, and nil
// for an escaped key too long for any name a switch holds.
func TestKeyName(t *testing.T) {
	tests := []struct {
		key  string
		want string
		none bool // nil: too long decoded
	}{
		{key: "model", want: "model"},
		{key: "Model", want: "Model"},
		{key: `mod\u0065l`, want: "model"},
		{key: `\u006d\u006f\u0064\u0065\u006c`, want: "model"},
		{key: `a\nb`, want: "a\nb"},
		{key: "é", want: "é"},
		{key: `\u00e9`, want: "é"},
		{key: strings.Repeat("a", 100), want: strings.Repeat("a", 100)},
		{key: strings.Repeat(`\u0061`, 32), want: strings.Repeat("a", 32)},
		{key: strings.Repeat(`\u0061`, 33), none: true},
	}
	for _, tt := range tests {
		t.Run(tt.key, func(t *testing.T) {
			b := []byte(`{"` + tt.key + `":0}`)
			var buf KeyBuf
			var got []byte
			_, err := EachMember(b, 0, 0, func(key []byte, special bool, vs int) (int, error) {
				got = KeyName(&buf, key, special)
				// Whatever KeyName says agrees with KeyIs.
				require.Equal(t, KeyIs(key, special, tt.want), !tt.none && string(got) == tt.want)
				return SkipValue(b, vs, 1)
			})
			require.NoError(t, err)
			if tt.none {
				require.Nil(t, got)
				return
			}
			require.Equal(t, tt.want, string(got))
		})
	}
}

func BenchmarkSkipValue(b *testing.B) {
	body := []byte(`{"messages":[` + strings.Repeat(`{"role":"user","content":[{"type":"text","text":"`+
		strings.Repeat(`lorem ipsum \n dolor é `, 200)+`"}],"n":[1,-2.5e3,true,null]},`, 200) + `{}]}`)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		if !whole(body) {
			b.Fatal("invalid")
		}
	}
}

// FuzzValid pins the walker's grammar to encoding/json's: on valid UTF-8 the same inputs are one
// JSON value, and a string's decoded value, a key's comparison and the special flag agree.
func FuzzValid(f *testing.F) {
	for _, tt := range validityCases {
		f.Add([]byte(tt.in))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		ok := whole(in)
		if !utf8.Valid(in) {
			return // encoding/json rewrites invalid UTF-8; the walker keeps bytes as they are
		}
		if valid := json.Valid(in); ok != valid {
			t.Fatalf("%q: walker %v, encoding/json %v", in, ok, valid)
		}
		if !ok {
			return
		}
		i := SkipWS(in, 0)
		if in[i] != '"' {
			return
		}
		end, special, err := SkipString(in, i)
		if err != nil {
			t.Fatalf("%q: %v", in, err)
		}
		var want string
		if err := json.Unmarshal(in, &want); err != nil {
			t.Fatal(err)
		}
		got := string(DecodeString(nil, in, Span{i, end}))
		if got != want {
			t.Fatalf("%q: decoded %q, encoding/json %q", in, got, want)
		}
		raw := in[i+1 : end-1]
		if !special && string(raw) != want {
			t.Fatalf("%q: not special but its contents are not its value", in)
		}
		if !KeyIs(raw, special, want) {
			t.Fatalf("%q: KeyIs(%q) false", in, want)
		}
	})
}

// skipStringBytewise is SkipString one byte at a time, as it was before the word-at-a-time fast
// path: the reference the fast path must agree with.
func skipStringBytewise(b []byte, i int) (end int, special bool, err error) {
	var high byte
	for i++; i < len(b); {
		c := b[i]
		switch {
		case c == '"':
			return i + 1, special || high >= 0x80, nil
		case c == '\\':
			special = true
			if i+1 >= len(b) {
				return 0, false, ErrSyntax
			}
			switch b[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				if i+6 > len(b) || !isHex(b[i+2]) || !isHex(b[i+3]) || !isHex(b[i+4]) || !isHex(b[i+5]) {
					return 0, false, ErrSyntax
				}
				i += 6
			default:
				return 0, false, ErrSyntax
			}
		case c < 0x20:
			return 0, false, ErrSyntax
		default:
			high |= c
			i++
		}
	}
	return 0, false, ErrSyntax
}

// The word-at-a-time skip must stop exactly where the bytewise one does, whatever byte stops it
// and wherever it sits in a word, and see every byte >= 0x80.
func TestSkipStringAgreesWithBytewise(t *testing.T) {
	stoppers := []string{`"`, `\n`, `\"`, `\u00e9`, `\x`, "\x00", "\x1f", "\n", `\`, "\x80", "é", "\xff", " ", "\x7f", "~"}
	for n := 0; n <= 24; n++ {
		for _, stop := range stoppers {
			for _, tail := range []string{``, `"`, `abcdefghijklmnop"`, `é"`} {
				in := `"` + strings.Repeat("a", n) + stop + tail
				for _, prefix := range []string{"", "xxx"} { // the string need not start at 0
					b := []byte(prefix + in)
					end, special, err := SkipString(b, len(prefix))
					wEnd, wSpecial, wErr := skipStringBytewise(b, len(prefix))
					require.Equal(t, wErr, err, "%q", b)
					require.Equal(t, wEnd, end, "%q", b)
					require.Equal(t, wSpecial, special, "%q", b)
				}
			}
		}
	}
}

// FuzzSkipString pins the word-at-a-time skip to the bytewise one on any input.
func FuzzSkipString(f *testing.F) {
	for _, tt := range validityCases {
		f.Add([]byte(tt.in))
	}
	f.Add([]byte(`"0123456789abcdef\"0123456789é\u0041" x`))
	f.Fuzz(func(t *testing.T, in []byte) {
		for i := range in {
			if in[i] != '"' {
				continue
			}
			end, special, err := SkipString(in, i)
			wEnd, wSpecial, wErr := skipStringBytewise(in, i)
			if end != wEnd || special != wSpecial || err != wErr {
				t.Fatalf("%q at %d: got (%d, %v, %v), bytewise (%d, %v, %v)", in, i, end, special, err, wEnd, wSpecial, wErr)
			}
		}
	})
}

// codeText is source code as a JSON string's contents: what tool results and file reads in a
// Claude Code conversation mostly are.
var codeText = func() string {
	src, _ := json.Marshal(strings.Repeat(`func (c *call) attempt(acct *crsv1.Account, up platform.Upstream) bool {
	r, req := c.r, c.req
	upReq := fasthttp.AcquireRequest()
	model, err := up.Build(acct, req, upReq)
	if err != nil {
		r.log.Warn("account unusable", zap.String("request_id", req.RequestID))
		return false
	}
`, 50))
	return string(src[1 : len(src)-1])
}()

func BenchmarkSkipString(b *testing.B) {
	for _, tt := range []struct{ name, text string }{
		{"ascii", strings.Repeat("You are Claude Code, Anthropic's official CLI for Claude. ", 400)},
		{"escapes", strings.Repeat(`line\n\"quoted\" é `, 1000)},
		{"code", codeText},
	} {
		s := []byte(`"` + tt.text + `"`)
		b.Run(tt.name, func(b *testing.B) {
			b.SetBytes(int64(len(s)))
			for b.Loop() {
				if _, _, err := SkipString(s, 0); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(tt.name+"/bytewise", func(b *testing.B) {
			b.SetBytes(int64(len(s)))
			for b.Loop() {
				if _, _, err := skipStringBytewise(s, 0); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
