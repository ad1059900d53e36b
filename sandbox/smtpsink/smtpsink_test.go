package smtpsink

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/smtp"
	"net/textproto"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func startSink(t *testing.T, opts Options) *Sink {
	t.Helper()
	s, err := Start("127.0.0.1:0", opts)
	require.NoError(t, err)
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func TestPlainDeliveryKeepsMessageAndWritesFile(t *testing.T) {
	dir := t.TempDir()
	s := startSink(t, Options{Dir: filepath.Join(dir, "mail")})

	body := "Subject: hi\r\n\r\nfirst line\r\n.leading dot survives\r\n"
	err := smtp.SendMail(s.Addr(), nil, "gkewi@example.com", []string{"a@example.com", "b@example.com"}, []byte(body))
	require.NoError(t, err)

	msgs := s.Messages()
	require.Len(t, msgs, 1)
	m := msgs[0]
	assert.Equal(t, "gkewi@example.com", m.From)
	assert.Equal(t, []string{"a@example.com", "b@example.com"}, m.To)
	assert.Equal(t, "Subject: hi\n\nfirst line\n.leading dot survives\n", string(m.Data))
	assert.False(t, m.TLS)
	assert.Empty(t, m.AuthUser)

	require.NotEmpty(t, m.File)
	onDisk, err := os.ReadFile(m.File)
	require.NoError(t, err)
	assert.Equal(t, m.Data, onDisk)
	assert.Equal(t, ".eml", filepath.Ext(m.File))
}

func clientTLS(t *testing.T, cert SelfSigned) *tls.Config {
	t.Helper()
	pool := x509.NewCertPool()
	require.True(t, pool.AppendCertsFromPEM(cert.CertPEM))
	return &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12}
}

func TestStartTLSAndAuthPlain(t *testing.T) {
	cert, err := NewSelfSigned()
	require.NoError(t, err)
	s := startSink(t, Options{
		TLSConfig:  cert.ServerTLS,
		RequireTLS: true,
		Users:      map[string]string{"relay": "s3cret"},
	})

	c, err := smtp.Dial(s.Addr())
	require.NoError(t, err)
	defer func() { _ = c.Close() }() // after QUIT it reports the closed connection
	require.NoError(t, c.Hello("tester"))

	// Before TLS: AUTH is hidden and MAIL is refused.
	ok, _ := c.Extension("AUTH")
	assert.False(t, ok, "AUTH must not be offered in the clear when TLS is available")
	ok, _ = c.Extension("STARTTLS")
	require.True(t, ok)
	err = c.Mail("x@example.com")
	var tpErr *textproto.Error
	require.True(t, errors.As(err, &tpErr), "got %v", err)
	assert.Equal(t, 530, tpErr.Code)

	require.NoError(t, c.StartTLS(clientTLS(t, cert)))
	ok, params := c.Extension("AUTH")
	require.True(t, ok)
	assert.Equal(t, "PLAIN", params)

	// Authentication is required before MAIL even over TLS.
	err = c.Mail("x@example.com")
	require.True(t, errors.As(err, &tpErr), "got %v", err)
	assert.Equal(t, 530, tpErr.Code)

	// A wrong password is refused (net/smtp then quits, so it gets its own session).
	bad, err := smtp.Dial(s.Addr())
	require.NoError(t, err)
	defer func() { _ = bad.Close() }() // net/smtp quits after the refused AUTH
	require.NoError(t, bad.StartTLS(clientTLS(t, cert)))
	err = bad.Auth(smtp.PlainAuth("", "relay", "wrong", "127.0.0.1"))
	require.True(t, errors.As(err, &tpErr), "got %v", err)
	assert.Equal(t, 535, tpErr.Code)

	require.NoError(t, c.Auth(smtp.PlainAuth("", "relay", "s3cret", "127.0.0.1")))
	require.NoError(t, c.Mail("gkewi@example.com"))
	require.NoError(t, c.Rcpt("support@example.com"))
	w, err := c.Data()
	require.NoError(t, err)
	_, err = fmt.Fprint(w, "Subject: secure\r\n\r\nbody\r\n")
	require.NoError(t, err)
	require.NoError(t, w.Close())
	require.NoError(t, c.Quit())

	msgs := s.Messages()
	require.Len(t, msgs, 1)
	assert.True(t, msgs[0].TLS)
	assert.Equal(t, "relay", msgs[0].AuthUser)
	assert.Equal(t, []string{"support@example.com"}, msgs[0].To)
}

func TestCheckRecipientRefusesSomeRecipients(t *testing.T) {
	s := startSink(t, Options{CheckRecipient: func(addr string) *Reply {
		if strings.HasPrefix(addr, "busy") {
			return &Reply{Code: 451, Text: "4.2.0 try later"}
		}
		if strings.HasPrefix(addr, "nobody") {
			return &Reply{Code: 550, Text: "5.1.1 no such user"}
		}
		return nil
	}})
	c, err := smtp.Dial(s.Addr())
	require.NoError(t, err)
	defer func() { _ = c.Close() }() // only releases the connection
	require.NoError(t, c.Mail("gkewi@example.com"))

	var tpErr *textproto.Error
	require.True(t, errors.As(c.Rcpt("busy@example.com"), &tpErr))
	assert.Equal(t, 451, tpErr.Code)
	require.True(t, errors.As(c.Rcpt("nobody@example.com"), &tpErr))
	assert.Equal(t, 550, tpErr.Code)
	require.NoError(t, c.Rcpt("ok@example.com"))
	w, err := c.Data()
	require.NoError(t, err)
	_, _ = fmt.Fprint(w, "\r\nx\r\n")
	require.NoError(t, w.Close())

	msgs := s.Messages()
	require.Len(t, msgs, 1)
	assert.Equal(t, []string{"ok@example.com"}, msgs[0].To)
}

// rawSession talks SMTP by hand, for the sequences net/smtp never sends.
func rawSession(t *testing.T, addr string) (send func(string) string) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	r := textproto.NewReader(bufio.NewReader(conn))
	_, _, err = r.ReadResponse(220)
	require.NoError(t, err)
	return func(line string) string {
		_, err := fmt.Fprintf(conn, "%s\r\n", line)
		require.NoError(t, err)
		code, msg, _ := r.ReadResponse(0)
		return fmt.Sprintf("%d %s", code, msg)
	}
}

func TestCommandSequencing(t *testing.T) {
	s := startSink(t, Options{MaxMessageBytes: 16})
	send := rawSession(t, s.Addr())

	assert.Equal(t, "503 5.5.1 EHLO first", send("MAIL FROM:<a@example.com>"))
	assert.True(t, strings.HasPrefix(send("EHLO tester"), "250 "))
	assert.Equal(t, "503 5.5.1 MAIL first", send("RCPT TO:<b@example.com>"))
	assert.Equal(t, "501 5.5.4 Syntax: MAIL FROM:<address>", send("MAIL FROM:a@example.com"))
	assert.Equal(t, "250 2.1.0 OK", send("MAIL FROM:<a@example.com> SIZE=10"))
	assert.Equal(t, "503 5.5.1 RCPT first", send("DATA"))
	assert.Equal(t, "250 2.1.5 OK", send("RCPT TO:<b@example.com>"))
	assert.Equal(t, "250 2.0.0 OK", send("RSET"))
	assert.Equal(t, "503 5.5.1 RCPT first", send("DATA"), "RSET drops the transaction")
	assert.Equal(t, "250 2.0.0 OK", send("NOOP"))
	assert.Equal(t, "502 5.5.2 Command not recognized", send("BDAT 10"))
	assert.Equal(t, "502 5.5.1 STARTTLS not offered", send("STARTTLS"))
	assert.Equal(t, "502 5.5.1 AUTH not offered", send("AUTH PLAIN"))

	// A message over MaxMessageBytes is refused and not kept.
	send("MAIL FROM:<a@example.com>")
	send("RCPT TO:<b@example.com>")
	assert.True(t, strings.HasPrefix(send("DATA"), "354 "))
	assert.Equal(t, "552 5.3.4 Message too big", send("0123456789\r\n0123456789\r\n."))
	assert.Equal(t, "221 2.0.0 Bye", send("QUIT"))
	assert.Empty(t, s.Messages())
}

func TestAuthPlainWithSeparateResponseLine(t *testing.T) {
	s := startSink(t, Options{Users: map[string]string{"u": "p"}})
	send := rawSession(t, s.Addr())
	reply := send("EHLO tester")
	assert.Contains(t, reply, "AUTH PLAIN", "no TLS configured: AUTH is offered in the clear")
	assert.Equal(t, "530 5.7.0 Authentication required", send("MAIL FROM:<a@example.com>"))
	assert.Equal(t, "334 ", send("AUTH PLAIN"))
	// base64("\x00u\x00p")
	assert.Equal(t, "235 2.7.0 Authentication successful", send("AHUAcA=="))
	assert.Equal(t, "250 2.1.0 OK", send("MAIL FROM:<a@example.com>"))
}

func TestCloseEndsOpenSessions(t *testing.T) {
	s, err := Start("127.0.0.1:0", Options{})
	require.NoError(t, err)
	conn, err := net.Dial("tcp", s.Addr())
	require.NoError(t, err)
	defer conn.Close()
	r := bufio.NewReader(conn)
	_, err = r.ReadString('\n')
	require.NoError(t, err)

	require.NoError(t, s.Close())
	_, err = r.ReadString('\n')
	assert.Error(t, err, "the session must be closed by Close")
	_, err = net.Dial("tcp", s.Addr())
	assert.Error(t, err, "the listener must be closed")
}
