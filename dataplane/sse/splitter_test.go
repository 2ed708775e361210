package sse

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/stretchr/testify/require"
)

// collect reads every event from a splitter over r.
func collect(t testing.TB, s *Splitter) (events []string, partial []bool, err error) {
	t.Helper()
	for {
		ev, err := s.Next()
		if err != nil {
			return events, partial, err
		}
		events = append(events, string(ev))
		partial = append(partial, s.Partial())
	}
}

func TestSplitterEvents(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []string
	}{
		{"empty", "", nil},
		{"one", "event: ping\ndata: {}\n\n", []string{"event: ping\ndata: {}\n\n"}},
		{"two", "data: a\n\ndata: b\n\n", []string{"data: a\n\n", "data: b\n\n"}},
		{"crlf", "data: a\r\n\r\ndata: b\r\n\r\n", []string{"data: a\r\n\r\n", "data: b\r\n\r\n"}},
		{"mixed lf crlf", "data: a\n\r\ndata: b\r\n\n", []string{"data: a\n\r\n", "data: b\r\n\n"}},
		{"trailing bytes without blank line", "data: a\n\ndata: b\n", []string{"data: a\n\n", "data: b\n"}},
		{"extra blank lines stay with the next event", "data: a\n\n\n\ndata: b\n\n", []string{"data: a\n\n", "\n\n", "data: b\n\n"}},
		{"lone cr is not a boundary", "data: a\r\rdata: b\n\n", []string{"data: a\r\rdata: b\n\n"}},
		{"cr inside a line", "data: a\rb\n\n", []string{"data: a\rb\n\n"}},
	}
	readers := map[string]func(io.Reader) io.Reader{
		"whole":    func(r io.Reader) io.Reader { return r },
		"one byte": iotest.OneByteReader,
		"half":     iotest.HalfReader,
		"data err": iotest.DataErrReader,
	}
	for _, tt := range tests {
		for rname, wrap := range readers {
			t.Run(tt.name+"/"+rname, func(t *testing.T) {
				s := NewSplitter(wrap(strings.NewReader(tt.in)), 16, 64)
				got, _, err := collect(t, s)
				require.ErrorIs(t, err, io.EOF)
				require.Equal(t, tt.want, got)
				require.Equal(t, tt.in, strings.Join(got, ""), "pass-through must be byte-identical")
			})
		}
	}
}

func TestSplitterGrowsForLargeEvents(t *testing.T) {
	big := "data: " + strings.Repeat("x", 10000) + "\n\n"
	in := "data: a\n\n" + big + "data: b\n\n"
	s := NewSplitter(iotest.HalfReader(strings.NewReader(in)), 16, 1<<20)
	got, partial, err := collect(t, s)
	require.ErrorIs(t, err, io.EOF)
	require.Equal(t, []string{"data: a\n\n", big, "data: b\n\n"}, got)
	require.Equal(t, []bool{false, false, false}, partial)
}

func TestSplitterFragmentsEventsOverMax(t *testing.T) {
	tests := []struct {
		name string
		in   string
	}{
		{"lf", "data: " + strings.Repeat("y", 300) + "\n\ndata: b\n\n"},
		// The blank line straddles a fragment cut: the splitter keeps two bytes back to see it.
		{"crlf at cut", "data: " + strings.Repeat("y", 56) + "\r\n\r\ndata: b\n\n"},
		{"lf at cut", "data: " + strings.Repeat("y", 57) + "\n\ndata: b\n\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := NewSplitter(iotest.OneByteReader(strings.NewReader(tt.in)), 16, 64)
			got, partial, err := collect(t, s)
			require.ErrorIs(t, err, io.EOF)
			require.Equal(t, tt.in, strings.Join(got, ""))
			require.Equal(t, "data: b\n\n", got[len(got)-1])
			require.False(t, partial[len(partial)-1])
			// Every fragment but the last of the big event is partial; the event ends un-partial.
			require.True(t, partial[0])
			require.False(t, partial[len(partial)-2])
			require.True(t, strings.HasSuffix(got[len(got)-2], "\n"))
			for _, ev := range got {
				require.LessOrEqual(t, len(ev), 64)
			}
		})
	}
}

func TestSplitterReadError(t *testing.T) {
	boom := errors.New("boom")
	r := io.MultiReader(strings.NewReader("data: a\n\ndata: par"), iotest.ErrReader(boom))
	s := NewSplitter(r, 0, 0)
	ev, err := s.Next()
	require.NoError(t, err)
	require.Equal(t, "data: a\n\n", string(ev))
	_, err = s.Next()
	require.ErrorIs(t, err, boom)
	require.Equal(t, "data: par", string(s.Buffered()))
	_, err = s.Next()
	require.ErrorIs(t, err, boom, "the error sticks")
}

type zeroReader struct{}

func (zeroReader) Read([]byte) (int, error) { return 0, nil }

func TestSplitterReaderWithoutProgress(t *testing.T) {
	_, err := NewSplitter(zeroReader{}, 0, 0).Next()
	require.ErrorIs(t, err, io.ErrNoProgress)
}

func TestSplitterReset(t *testing.T) {
	s := NewSplitter(strings.NewReader("data: "+strings.Repeat("z", 5000)+"\n\n"), 16, 1<<20)
	_, _, err := collect(t, s)
	require.ErrorIs(t, err, io.EOF)
	require.Greater(t, cap(s.buf), 4096)
	s.Reset(strings.NewReader("data: c\n\n"), 4096)
	require.LessOrEqual(t, cap(s.buf), 4096, "a grown buffer is dropped on reset")
	got, _, err := collect(t, s)
	require.ErrorIs(t, err, io.EOF)
	require.Equal(t, []string{"data: c\n\n"}, got)

	s.Reset(nil, 0)
	_, err = s.Next()
	require.ErrorIs(t, err, ErrClosed)
}

func TestField(t *testing.T) {
	ev := []byte("event: message_start\r\ndata:{\"a\":1}\n: comment\nid\nevents: no\n\n")
	tests := []struct {
		name, field string
		want        []byte
	}{
		{"event with space and crlf", "event", []byte("message_start")},
		{"data without space", "data", []byte(`{"a":1}`)},
		{"bare field name", "id", []byte{}},
		{"missing", "retry", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			require.Equal(t, tt.want, Field(ev, tt.field))
		})
	}
}

func TestData(t *testing.T) {
	tests := []struct {
		name, ev string
		want     []byte
	}{
		{"one line", "event: x\ndata: {}\n\n", []byte("{}")},
		{"several lines joined", "data: a\ndata: b\r\ndata:c\n\n", []byte("a\nb\nc")},
		{"none", "event: x\n\n", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			require.Equal(t, tt.want, Data([]byte(tt.ev), nil))
		})
	}
}

func TestAppendEvent(t *testing.T) {
	got := AppendEvent([]byte("x"), "error", []byte(`{"a":1}`))
	require.Equal(t, "xevent: error\ndata: {\"a\":1}\n\n", string(got))
	s := NewSplitter(bytes.NewReader(got[1:]), 0, 0)
	ev, err := s.Next()
	require.NoError(t, err)
	require.Equal(t, []byte("error"), Field(ev, "event"))
}

func FuzzSplitter(f *testing.F) {
	f.Add([]byte("event: a\ndata: b\n\n"), uint8(3))
	f.Add([]byte("data: a\r\n\r\ndata: b\r\n"), uint8(1))
	f.Add([]byte("\n\r\n\n\r\r\n\n"), uint8(2))
	f.Add([]byte(strings.Repeat("data: xxxxxxxx\n", 20)+"\n"), uint8(7))
	f.Fuzz(func(t *testing.T, in []byte, chunk uint8) {
		r := io.Reader(bytes.NewReader(in))
		if chunk%2 == 1 {
			r = iotest.OneByteReader(r)
		}
		s := NewSplitter(r, int(chunk%32)+1, 32)
		var out []byte
		for {
			ev, err := s.Next()
			if err != nil {
				require.ErrorIs(t, err, io.EOF)
				break
			}
			require.NotEmpty(t, ev)
			require.LessOrEqual(t, len(ev), 32)
			_ = Field(ev, "event")
			_ = Data(ev, nil)
			out = append(out, ev...)
		}
		require.Equal(t, string(in), string(out))
	})
}

// benchStream is a typical Claude stream: message_start, a ping, 200 text deltas, the end.
func benchStream() []byte {
	var b bytes.Buffer
	b.WriteString("event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-sonnet-4-5\",\"content\":[],\"stop_reason\":null,\"usage\":{\"input_tokens\":12,\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":0,\"output_tokens\":1}}}\n\n")
	b.WriteString("event: ping\ndata: {\"type\": \"ping\"}\n\n")
	for range 200 {
		b.WriteString("event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hello world, \"}}\n\n")
	}
	b.WriteString("event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":200}}\n\n")
	b.WriteString("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n")
	return b.Bytes()
}

func BenchmarkSplitter(b *testing.B) {
	in := benchStream()
	r := bytes.NewReader(in)
	s := NewSplitter(r, 0, 0)
	b.SetBytes(int64(len(in)))
	b.ReportAllocs()
	for b.Loop() {
		r.Reset(in)
		s.Reset(r, 0)
		for {
			ev, err := s.Next()
			if err != nil {
				break
			}
			_ = Field(ev, "event")
		}
	}
}
