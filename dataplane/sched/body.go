package sched

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"hash"
	"strconv"

	"github.com/crsrelay/crs/dataplane/jsonscan"
)

// Body validation failures of a Messages request (reference §1.3 step 2), in the reference's order.
var (
	// ErrBodyNotObject: the body is not valid JSON, or is a JSON scalar.
	ErrBodyNotObject = errors.New("sched: request body is not a json object")
	// ErrMessagesNotArray: messages is missing or not an array (also for an empty body and a
	// top-level array, which Express turns into a body without messages).
	ErrMessagesNotArray = errors.New("sched: messages missing or not an array")
	// ErrMessagesEmpty: messages is an empty array.
	ErrMessagesEmpty = errors.New("sched: messages array is empty")
)

// Messages is what the worker and the scheduler read from a Claude Messages request body.
type Messages struct {
	// Model is body.model when it is a string, else "".
	Model string
	// Stream is body.stream === true.
	Stream bool
	// Count is the number of messages.
	Count int
	// SessionHash is the sticky-session key of reference §4.2, "" when there is none.
	SessionHash string
}

// textPart is one block that may contribute text: its text span (zero when text is not a string),
// and what the session rules look at.
type textPart struct {
	text      jsonscan.Span
	isText    bool // type === "text"
	ephemeral bool // cache_control.type === "ephemeral"
}

// messageText is the text of one message: a string content, or the text blocks of an array one.
type messageText struct {
	str   jsonscan.Span // content as a string
	parts textParts     // content as an array
}

func (m messageText) nonEmpty() bool {
	if m.str.NonEmpty() {
		return true
	}
	for i := range m.parts.n {
		if p := m.parts.at(i); p.isText && p.text.NonEmpty() {
			return true
		}
	}
	return false
}

// textParts is a list of blocks with room for the first few in place, so that the blocks of a
// common request (a short system array, a message with a few blocks) are kept without allocating.
type textParts struct {
	n    int
	head [4]textPart
	tail []textPart // blocks after head
}

func (l *textParts) add(p textPart) {
	if l.n < len(l.head) {
		l.head[l.n] = p
	} else {
		l.tail = append(l.tail, p)
	}
	l.n++
}

func (l *textParts) at(i int) textPart {
	if i < len(l.head) {
		return l.head[i]
	}
	return l.tail[i-len(l.head)]
}

// bodyScan collects, in one pass over the body, every span the session rules may need.
type bodyScan struct {
	b []byte
	// kb is room for decoding an escaped key, shared by all the callbacks: each is done with its
	// key once its switch picked a case, before it walks the value (and nested keys).
	kb jsonscan.KeyBuf

	model    jsonscan.Span
	stream   bool
	userID   jsonscan.Span // metadata.user_id when a string
	sysStr   jsonscan.Span
	sysParts textParts
	sysArray bool

	messagesArray bool
	count         int
	anyCache      bool        // some message has an ephemeral cache_control
	firstText     messageText // first message with non-empty text
	firstTextIdx  int         // its index, -1 when none
}

// ParseMessages validates a Messages request body and reads the fields routing needs, in one
// pass, without decoding the conversation. Errors are ErrBodyNotObject, ErrMessagesNotArray and
// ErrMessagesEmpty.
func ParseMessages(body []byte) (Messages, error) {
	s := bodyScan{b: body, firstTextIdx: -1}
	i := jsonscan.SkipWS(body, 0)
	if i == len(body) {
		return Messages{}, ErrMessagesNotArray // Express parses an empty body as {}
	}
	switch body[i] {
	case '{':
		end, err := jsonscan.EachMember(body, i, 0, s.topMember)
		if err != nil || jsonscan.SkipWS(body, end) != len(body) {
			return Messages{}, ErrBodyNotObject
		}
	case '[':
		end, err := jsonscan.SkipValue(body, i, 0)
		if err != nil || jsonscan.SkipWS(body, end) != len(body) {
			return Messages{}, ErrBodyNotObject
		}
		return Messages{}, ErrMessagesNotArray
	default:
		return Messages{}, ErrBodyNotObject
	}
	m := Messages{Stream: s.stream, Count: s.count}
	if s.model.OK() {
		var buf [64]byte
		m.Model = string(jsonscan.DecodeString(buf[:0], body, s.model))
	}
	if !s.messagesArray {
		return m, ErrMessagesNotArray
	}
	if s.count == 0 {
		return m, ErrMessagesEmpty
	}
	m.SessionHash = s.sessionHash()
	return m, nil
}

// SessionHash returns the sticky-session key of reference §4.2 for a Messages body, "" when there
// is none or the body is not a JSON object.
func SessionHash(body []byte) string {
	s := bodyScan{b: body, firstTextIdx: -1}
	i := jsonscan.SkipWS(body, 0)
	if i == len(body) || body[i] != '{' {
		return ""
	}
	end, err := jsonscan.EachMember(body, i, 0, s.topMember)
	if err != nil || jsonscan.SkipWS(body, end) != len(body) {
		return ""
	}
	return s.sessionHash()
}

func (s *bodyScan) topMember(key []byte, special bool, vs int) (int, error) {
	b := s.b
	switch string(jsonscan.KeyName(&s.kb, key, special)) {
	case "model":
		sp, end, err := jsonscan.StringSpan(b, vs, 1)
		s.model = sp
		return end, err
	case "stream":
		end, err := jsonscan.SkipValue(b, vs, 1)
		s.stream = err == nil && string(b[vs:end]) == "true"
		return end, err
	case "metadata":
		s.userID = jsonscan.Span{}
		if b[vs] != '{' {
			return jsonscan.SkipValue(b, vs, 1)
		}
		return jsonscan.EachMember(b, vs, 1, func(key []byte, special bool, vs int) (int, error) {
			if !jsonscan.KeyIs(key, special, "user_id") {
				return jsonscan.SkipValue(b, vs, 2)
			}
			sp, end, err := jsonscan.StringSpan(b, vs, 2)
			s.userID = sp
			return end, err
		})
	case "system":
		s.sysStr, s.sysParts, s.sysArray = jsonscan.Span{}, textParts{}, false
		switch b[vs] {
		case '"':
			sp, end, err := jsonscan.StringSpan(b, vs, 1)
			s.sysStr = sp
			return end, err
		case '[':
			s.sysArray = true
			return jsonscan.EachElement(b, vs, 1, func(_, vs int) (int, error) {
				p, end, err := s.part(vs, 2)
				s.sysParts.add(p)
				return end, err
			})
		}
		return jsonscan.SkipValue(b, vs, 1)
	case "messages":
		s.messagesArray, s.count, s.anyCache, s.firstText, s.firstTextIdx = false, 0, false, messageText{}, -1
		if b[vs] != '[' {
			return jsonscan.SkipValue(b, vs, 1)
		}
		s.messagesArray = true
		return jsonscan.EachElement(b, vs, 1, s.message)
	}
	return jsonscan.SkipValue(b, vs, 1)
}

// message reads one element of messages.
func (s *bodyScan) message(n, vs int) (int, error) {
	s.count = n + 1
	b := s.b
	if b[vs] != '{' {
		return jsonscan.SkipValue(b, vs, 2) // null or a scalar has no content (Node would throw on null)
	}
	var (
		text      messageText
		isArray   bool
		partCache bool
		msgCache  bool
		// stringish: `msg.content || ''` is a string, i.e. content is a string or falsy (absent,
		// null, false, 0), so the message's own cache_control counts.
		stringish = true
	)
	end, err := jsonscan.EachMember(b, vs, 2, func(key []byte, special bool, vs int) (int, error) {
		switch string(jsonscan.KeyName(&s.kb, key, special)) {
		case "content":
			text, isArray, partCache, stringish = messageText{}, false, false, false
			switch b[vs] {
			case '"':
				sp, end, err := jsonscan.StringSpan(b, vs, 3)
				text.str = sp
				stringish = true
				return end, err
			case 'n', 'f':
				stringish = true
			case '-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9':
				end, err := jsonscan.SkipNumber(b, vs)
				if err == nil {
					f, perr := strconv.ParseFloat(string(b[vs:end]), 64)
					stringish = perr == nil && f == 0
				}
				return end, err
			case '[':
				isArray = true
				return jsonscan.EachElement(b, vs, 3, func(_, vs int) (int, error) {
					p, end, err := s.part(vs, 4)
					if p.ephemeral {
						partCache = true
					}
					if p.isText && s.firstTextIdx < 0 { // only the first message with text is used
						text.parts.add(p)
					}
					return end, err
				})
			}
			return jsonscan.SkipValue(b, vs, 3)
		case "cache_control":
			eph, end, err := s.ephemeral(vs, 3)
			msgCache = eph
			return end, err
		}
		return jsonscan.SkipValue(b, vs, 3)
	})
	if err != nil {
		return 0, err
	}
	// Reference: an array content counts its blocks' cache_control; a string content the
	// message's own cache_control.
	if (isArray && partCache) || (stringish && msgCache) {
		s.anyCache = true
	}
	if s.firstTextIdx < 0 && text.nonEmpty() {
		s.firstText, s.firstTextIdx = text, n
	}
	return end, nil
}

// part reads one content or system block.
func (s *bodyScan) part(vs, depth int) (textPart, int, error) {
	b := s.b
	var p textPart
	if b[vs] != '{' {
		end, err := jsonscan.SkipValue(b, vs, depth)
		return p, end, err
	}
	end, err := jsonscan.EachMember(b, vs, depth, func(key []byte, special bool, vs int) (int, error) {
		switch string(jsonscan.KeyName(&s.kb, key, special)) {
		case "text":
			sp, end, err := jsonscan.StringSpan(b, vs, depth+1)
			p.text = sp
			return end, err
		case "type":
			sp, end, err := jsonscan.StringSpan(b, vs, depth+1)
			p.isText = sp.OK() && s.stringIs(sp, "text")
			return end, err
		case "cache_control":
			eph, end, err := s.ephemeral(vs, depth+1)
			p.ephemeral = eph
			return end, err
		}
		return jsonscan.SkipValue(b, vs, depth+1)
	})
	return p, end, err
}

// ephemeral reads a cache_control value: true when it is an object whose type is "ephemeral".
func (s *bodyScan) ephemeral(vs, depth int) (bool, int, error) {
	b := s.b
	if b[vs] != '{' {
		end, err := jsonscan.SkipValue(b, vs, depth)
		return false, end, err
	}
	eph := false
	end, err := jsonscan.EachMember(b, vs, depth, func(key []byte, special bool, vs int) (int, error) {
		if !jsonscan.KeyIs(key, special, "type") {
			return jsonscan.SkipValue(b, vs, depth+1)
		}
		sp, end, err := jsonscan.StringSpan(b, vs, depth+1)
		eph = sp.OK() && s.stringIs(sp, "ephemeral")
		return end, err
	})
	return eph, end, err
}

// stringIs compares a string span, decoded, with want.
func (s *bodyScan) stringIs(sp jsonscan.Span, want string) bool {
	raw := s.b[sp.Start+1 : sp.End-1]
	if string(raw) == want {
		return true
	}
	var buf [32]byte
	return string(jsonscan.AppendUnescaped(buf[:0], raw)) == want
}

// sessionHash applies reference §4.2 (src/utils/sessionHelper.js generateSessionHash) to what the
// scan collected.
func (s *bodyScan) sessionHash() string {
	// 1. metadata.user_id carrying a Claude Code session id: the id itself.
	if s.userID.NonEmpty() {
		uid := s.b[s.userID.Start+1 : s.userID.End-1] // as sent when it holds no escape
		if bytes.IndexByte(uid, '\\') >= 0 {
			var buf [256]byte
			uid = jsonscan.DecodeString(buf[:0], s.b, s.userID)
		}
		if id, ok := sessionIDFromUserID(uid); ok {
			return string(id) // the id's only copy: the user_id around it is not kept
		}
	}
	h := newTextHash(s.b)
	// 2. Cacheable content: system blocks with an ephemeral cache_control, then, if some message
	// has one, the text of the first message that has text.
	if s.sysArray {
		for i := range s.sysParts.n {
			if p := s.sysParts.at(i); p.ephemeral {
				h.add(p.text)
			}
		}
	}
	if s.anyCache && s.firstTextIdx >= 0 {
		h.addMessage(s.firstText)
	}
	if h.n > 0 {
		return h.sum()
	}
	// 3. The whole system text.
	if s.sysStr.OK() {
		h.add(s.sysStr)
	} else if s.sysArray {
		for i := range s.sysParts.n {
			h.add(s.sysParts.at(i).text)
		}
	}
	if h.n > 0 {
		return h.sum()
	}
	// 4. The text of the first message (only the first: an empty one yields no hash).
	if s.firstTextIdx == 0 {
		h.addMessage(s.firstText)
		if h.n > 0 {
			return h.sum()
		}
	}
	// 5. No stickiness.
	return ""
}

// textHash is sha256 over decoded strings, written piece by piece.
type textHash struct {
	b   []byte
	h   hash.Hash
	buf []byte
	n   int // decoded bytes written
}

func newTextHash(b []byte) *textHash { return &textHash{b: b, h: sha256.New()} }

func (t *textHash) add(sp jsonscan.Span) {
	if !sp.NonEmpty() {
		return
	}
	t.buf = jsonscan.DecodeString(t.buf[:0], t.b, sp)
	t.h.Write(t.buf)
	t.n += len(t.buf)
}

func (t *textHash) addMessage(m messageText) {
	if m.str.OK() {
		t.add(m.str)
		return
	}
	for i := range m.parts.n {
		if p := m.parts.at(i); p.isText {
			t.add(p.text)
		}
	}
}

// sum is the first 32 hex characters of the digest.
func (t *textHash) sum() string {
	var d [sha256.Size]byte
	return hex.EncodeToString(t.h.Sum(d[:0])[:16])
}

// SessionIDFromUserID extracts the Claude Code session id from metadata.user_id
// (src/utils/metadataUserIdHelper.js): the legacy form
// user_<64 hex>_account_<anything>_session_<[a-f0-9-]+>, or a JSON object with non-empty string
// device_id and session_id.
func SessionIDFromUserID(userID string) (string, bool) {
	if userID == "" {
		return "", false
	}
	if userID[0] == '{' {
		return jsonSessionID(userID)
	}
	i, ok := legacySessionID(userID)
	if !ok {
		return "", false
	}
	return userID[i:], true
}

// sessionIDFromUserID is SessionIDFromUserID on the decoded bytes of user_id; the legacy id is
// returned as a slice of them.
func sessionIDFromUserID(userID []byte) ([]byte, bool) {
	if len(userID) == 0 {
		return nil, false
	}
	if userID[0] == '{' {
		id, ok := jsonSessionID(string(userID))
		return []byte(id), ok
	}
	i, ok := legacySessionID(userID)
	if !ok {
		return nil, false
	}
	return userID[i:], true
}

// jsonSessionID reads the JSON form of user_id: an object with non-empty string device_id and
// session_id.
func jsonSessionID(userID string) (string, bool) {
	var obj map[string]json.RawMessage
	if json.Unmarshal([]byte(userID), &obj) != nil {
		return "", false
	}
	device, ok1 := jsonString(obj["device_id"])
	session, ok2 := jsonString(obj["session_id"])
	if !ok1 || !ok2 || device == "" || session == "" {
		return "", false
	}
	return session, true
}

func jsonString(raw json.RawMessage) (string, bool) {
	if len(raw) == 0 || raw[0] != '"' {
		return "", false
	}
	var s string
	if json.Unmarshal(raw, &s) != nil {
		return "", false
	}
	return s, true
}

// legacySessionID matches /^user_([a-fA-F0-9]{64})_account_(.*?)_session_([a-f0-9-]+)$/ and
// returns where the session id starts. The session part cannot contain "_", so the only possible
// split is at the last "_", which must end "_session_"; "." does not match JavaScript line
// terminators.
func legacySessionID[T string | []byte](s T) (int, bool) {
	const (
		pre     = "user_"
		acct    = "_account_"
		sess    = "_session_"
		hexLen  = 64
		minimum = len(pre) + hexLen + len(acct) + len(sess) + 1
	)
	if len(s) < minimum || string(s[:len(pre)]) != pre {
		return 0, false
	}
	for i := len(pre); i < len(pre)+hexLen; i++ {
		if idChars[s[i]]&hexChar == 0 {
			return 0, false
		}
	}
	start := len(pre) + hexLen
	if string(s[start:start+len(acct)]) != acct {
		return 0, false
	}
	start += len(acct)
	last := lastIndexByte(s[start:], '_')
	if last < len(sess)-1 || string(s[start+last-len(sess)+1:start+last+1]) != sess {
		return 0, false
	}
	account, id := s[start:start+last-len(sess)+1], s[start+last+1:]
	if len(id) == 0 || containsLineTerminator(account) {
		return 0, false
	}
	for i := 0; i < len(id); i++ {
		if idChars[id[i]]&sessionChar == 0 {
			return 0, false
		}
	}
	return len(s) - len(id), true
}

// idChars classifies bytes for legacySessionID, one lookup per byte of the 64 hex digits and of
// the session id: hexChar for [a-fA-F0-9], sessionChar for [a-f0-9-].
var idChars = func() (t [256]uint8) {
	for c := range 256 {
		if isHex(byte(c)) {
			t[c] |= hexChar
		}
		if ('a' <= c && c <= 'f') || ('0' <= c && c <= '9') || c == '-' {
			t[c] |= sessionChar
		}
	}
	return t
}()

const (
	hexChar uint8 = 1 << iota
	sessionChar
)

func lastIndexByte[T string | []byte](s T, c byte) int {
	for i := len(s) - 1; i >= 0; i-- {
		if s[i] == c {
			return i
		}
	}
	return -1
}

// containsLineTerminator reports whether s holds \n, \r, U+2028 or U+2029 (in UTF-8: E2 80 A8,
// E2 80 A9), the characters JavaScript's "." does not match.
func containsLineTerminator[T string | []byte](s T) bool {
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '\n', '\r':
			return true
		case 0xE2:
			if i+2 < len(s) && s[i+1] == 0x80 && (s[i+2] == 0xA8 || s[i+2] == 0xA9) {
				return true
			}
		}
	}
	return false
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

func isHex(c byte) bool {
	return ('0' <= c && c <= '9') || ('a' <= c && c <= 'f') || ('A' <= c && c <= 'F')
}
