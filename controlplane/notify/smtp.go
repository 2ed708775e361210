package notify

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"mime"
	"mime/quotedprintable"
	"net"
	"net/mail"
	"net/smtp"
	"strconv"
	"strings"
	"time"

	crsv1 "github.com/crsrelay/crs/gen/crs/v1"
)

// SMTP security modes (SmtpTarget.security).
const (
	SMTPStartTLS = "starttls"
	SMTPTLS      = "tls"
	SMTPNone     = "none"
)

// sendSMTP mails ev to every recipient of s. The whole conversation is bounded by timeout.
// Credentials are only sent over TLS (or to localhost): net/smtp's PLAIN auth refuses otherwise.
func sendSMTP(ctx context.Context, s *crsv1.SmtpTarget, ev Event, timeout time.Duration) error {
	security := s.GetSecurity()
	if security == "" {
		security = SMTPStartTLS
	}
	port := int(s.GetPort())
	if port == 0 {
		port = 587
		if security == SMTPTLS {
			port = 465
		}
	}
	if s.GetHost() == "" || s.GetFrom() == "" || len(s.GetTo()) == 0 {
		return permanent("smtp: host, from and to are required")
	}
	addr := net.JoinHostPort(s.GetHost(), strconv.Itoa(port))
	tlsConf := &tls.Config{ServerName: s.GetHost(), MinVersion: tls.VersionTLS12}

	deadline := time.Now().Add(timeout)
	dctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(dctx, "tcp", addr)
	if err != nil {
		return &sendError{retry: true, err: fmt.Errorf("smtp: connect %s: %w", addr, err)}
	}
	_ = conn.SetDeadline(deadline)
	if security == SMTPTLS {
		tc := tls.Client(conn, tlsConf)
		if err := tc.HandshakeContext(dctx); err != nil {
			_ = conn.Close()
			return &sendError{retry: true, err: fmt.Errorf("smtp: tls handshake with %s: %w", addr, err)}
		}
		conn = tc
	}
	c, err := smtp.NewClient(conn, s.GetHost())
	if err != nil {
		_ = conn.Close()
		return &sendError{retry: true, err: fmt.Errorf("smtp: greeting from %s: %w", addr, err)}
	}
	defer c.Close()
	if err := c.Hello("crs"); err != nil {
		return &sendError{retry: true, err: fmt.Errorf("smtp: hello: %w", err)}
	}
	if security == SMTPStartTLS {
		if ok, _ := c.Extension("STARTTLS"); !ok {
			return permanent("smtp: %s does not offer STARTTLS (set security to \"tls\" or, for a local relay, \"none\")", addr)
		}
		if err := c.StartTLS(tlsConf); err != nil {
			return &sendError{retry: true, err: fmt.Errorf("smtp: starttls: %w", err)}
		}
	}
	if s.GetUsername() != "" {
		if err := c.Auth(smtp.PlainAuth("", s.GetUsername(), s.GetPassword(), s.GetHost())); err != nil {
			return permanent("smtp: authentication: %w", err)
		}
	}
	if err := c.Mail(s.GetFrom()); err != nil {
		return permanent("smtp: sender refused: %w", err)
	}
	for _, to := range s.GetTo() {
		if err := c.Rcpt(to); err != nil {
			return permanent("smtp: recipient %s refused: %w", to, err)
		}
	}
	w, err := c.Data()
	if err != nil {
		return &sendError{retry: true, err: fmt.Errorf("smtp: data: %w", err)}
	}
	if _, err := w.Write(mailMessage(s, ev)); err != nil {
		return &sendError{retry: true, err: fmt.Errorf("smtp: write message: %w", err)}
	}
	if err := w.Close(); err != nil {
		return &sendError{retry: true, err: fmt.Errorf("smtp: message refused: %w", err)}
	}
	_ = c.Quit()
	return nil
}

// mailMessage renders ev as a text/plain UTF-8 mail (quoted-printable).
func mailMessage(s *crsv1.SmtpTarget, ev Event) []byte {
	var b bytes.Buffer
	id := make([]byte, 12)
	_, _ = rand.Read(id)
	from := (&mail.Address{Name: "crs", Address: s.GetFrom()}).String()
	hdr := [][2]string{
		{"From", from},
		{"To", strings.Join(s.GetTo(), ", ")},
		{"Subject", mime.QEncoding.Encode("utf-8", "[crs] "+ev.Title())},
		{"Date", ev.Time.Format(time.RFC1123Z)},
		{"Message-ID", "<" + hex.EncodeToString(id) + "@crs>"},
		{"MIME-Version", "1.0"},
		{"Content-Type", "text/plain; charset=utf-8"},
		{"Content-Transfer-Encoding", "quoted-printable"},
	}
	for _, h := range hdr {
		fmt.Fprintf(&b, "%s: %s\r\n", h[0], h[1])
	}
	b.WriteString("\r\n")
	qp := quotedprintable.NewWriter(&b)
	_, _ = qp.Write([]byte(strings.ReplaceAll(ev.Text(), "\n", "\r\n") + "\r\n"))
	_ = qp.Close()
	return b.Bytes()
}
