package notify

import (
	"bufio"
	"encoding/base64"
	"io"
	"mime"
	"mime/quotedprintable"
	"net"
	"net/mail"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	crsv1 "github.com/crsrelay/crs/gen/crs/v1"
)

// smtpServer is a minimal SMTP server: one conversation per connection, recording the envelope,
// the credentials and the message.
type smtpServer struct {
	ln       net.Listener
	starttls bool
	mu       sync.Mutex
	auth     string
	from     string
	to       []string
	data     string
	wg       sync.WaitGroup
}

func startSMTP(t *testing.T, offerSTARTTLS bool) *smtpServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	s := &smtpServer{ln: ln, starttls: offerSTARTTLS}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.wg.Add(1)
			go func() { defer s.wg.Done(); s.serve(c) }()
		}
	}()
	t.Cleanup(func() { _ = ln.Close(); s.wg.Wait() })
	return s
}

func (s *smtpServer) port() int32 { return int32(s.ln.Addr().(*net.TCPAddr).Port) }

func (s *smtpServer) serve(c net.Conn) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	r := bufio.NewReader(c)
	say := func(line string) { _, _ = io.WriteString(c, line+"\r\n") }
	say("220 test ESMTP")
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		line = strings.TrimRight(line, "\r\n")
		cmd := strings.ToUpper(line)
		switch {
		case strings.HasPrefix(cmd, "EHLO"):
			if s.starttls {
				say("250-test")
				say("250-STARTTLS")
			} else {
				say("250-test")
			}
			say("250 AUTH PLAIN")
		case strings.HasPrefix(cmd, "AUTH PLAIN "):
			dec, _ := base64.StdEncoding.DecodeString(line[len("AUTH PLAIN "):])
			s.mu.Lock()
			s.auth = string(dec)
			s.mu.Unlock()
			say("235 ok")
		case strings.HasPrefix(cmd, "MAIL FROM:"):
			s.mu.Lock()
			s.from = line[len("MAIL FROM:"):]
			s.mu.Unlock()
			say("250 ok")
		case strings.HasPrefix(cmd, "RCPT TO:"):
			s.mu.Lock()
			s.to = append(s.to, line[len("RCPT TO:"):])
			s.mu.Unlock()
			say("250 ok")
		case cmd == "DATA":
			say("354 go ahead")
			var b strings.Builder
			for {
				l, err := r.ReadString('\n')
				if err != nil {
					return
				}
				if l == ".\r\n" {
					break
				}
				b.WriteString(l)
			}
			s.mu.Lock()
			s.data = b.String()
			s.mu.Unlock()
			say("250 queued")
		case cmd == "QUIT":
			say("221 bye")
			return
		default:
			say("502 unknown")
		}
	}
}

func TestSMTP(t *testing.T) {
	srv := startSMTP(t, false)
	target := &crsv1.NotificationTarget{Target: &crsv1.NotificationTarget_Smtp{Smtp: &crsv1.SmtpTarget{
		Host: "127.0.0.1", Port: srv.port(), Username: "ops", Password: "pw", From: "crs@example.com",
		To: []string{"a@example.com", "b@example.com"}, Security: SMTPNone,
	}}}
	require.NoError(t, send(t.Context(), target, sampleEvent, 5*time.Second))

	srv.mu.Lock()
	defer srv.mu.Unlock()
	require.Equal(t, "\x00ops\x00pw", srv.auth)
	require.Equal(t, "<crs@example.com>", srv.from)
	require.Equal(t, []string{"<a@example.com>", "<b@example.com>"}, srv.to)
	msg, err := mail.ReadMessage(strings.NewReader(srv.data))
	require.NoError(t, err)
	subject, err := new(mime.WordDecoder).DecodeHeader(msg.Header.Get("Subject"))
	require.NoError(t, err)
	require.Equal(t, "[crs] Account blocked: team claude", subject)
	require.Equal(t, "text/plain; charset=utf-8", msg.Header.Get("Content-Type"))
	body, err := io.ReadAll(quotedprintable.NewReader(msg.Body))
	require.NoError(t, err)
	require.Contains(t, string(body), "Reason: upstream 400: This organization has been disabled.")
}

func TestSMTPRefusesPlaintextWhenSTARTTLSExpected(t *testing.T) {
	srv := startSMTP(t, false)
	target := &crsv1.NotificationTarget{Target: &crsv1.NotificationTarget_Smtp{Smtp: &crsv1.SmtpTarget{
		Host: "127.0.0.1", Port: srv.port(), Username: "ops", Password: "pw", From: "crs@example.com", To: []string{"a@example.com"},
	}}}
	err := send(t.Context(), target, sampleEvent, 5*time.Second)
	require.ErrorContains(t, err, "does not offer STARTTLS")
	require.False(t, retryable(err))
	srv.mu.Lock()
	defer srv.mu.Unlock()
	require.Empty(t, srv.auth, "credentials never go over plaintext")
}

func TestSMTPDeadServerIsQuick(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	port := ln.Addr().(*net.TCPAddr).Port
	require.NoError(t, ln.Close())
	target := &crsv1.NotificationTarget{Target: &crsv1.NotificationTarget_Smtp{Smtp: &crsv1.SmtpTarget{
		Host: "127.0.0.1", Port: int32(port), From: "crs@example.com", To: []string{"a@example.com"}, Security: SMTPNone,
	}}}
	start := time.Now()
	err = send(t.Context(), target, sampleEvent, time.Second)
	require.ErrorContains(t, err, "smtp: connect 127.0.0.1:"+strconv.Itoa(port))
	require.True(t, retryable(err))
	require.Less(t, time.Since(start), 2*time.Second)
}
