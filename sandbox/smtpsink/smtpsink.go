// Package smtpsink is a small SMTP server that keeps every message it receives, in
// memory and optionally as .eml files. The sandbox runs it in place of a mail relay
// and the tests read what the notifier really sent. It speaks enough SMTP for
// net/smtp and ordinary mail clients: EHLO/HELO, STARTTLS, AUTH PLAIN, MAIL, RCPT,
// DATA, RSET, NOOP, VRFY and QUIT.
package smtpsink

import (
	"bufio"
	"bytes"
	"crypto/subtle"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/textproto"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Message is one accepted message.
type Message struct {
	// From is the envelope sender (MAIL FROM).
	From string
	// To are the accepted envelope recipients (RCPT TO).
	To []string
	// Data is the message as transmitted, dot-stuffing removed, lines ending in "\n".
	Data []byte
	// TLS is true when the message came over a STARTTLS-protected session.
	TLS bool
	// AuthUser is the authenticated user, empty without AUTH.
	AuthUser string
	// Received is when the sink accepted the message.
	Received time.Time
	// File is the .eml file written for it, empty without Options.Dir.
	File string
}

// Reply is an SMTP reply the sink sends instead of accepting a recipient.
type Reply struct {
	Code int
	Text string
}

// Options configure a Sink. The zero value is a plain, unauthenticated sink.
type Options struct {
	// Hostname is announced in the greeting and EHLO reply; default "localhost".
	Hostname string
	// TLSConfig enables STARTTLS (it needs a certificate).
	TLSConfig *tls.Config
	// RequireTLS refuses MAIL and AUTH until the session has switched to TLS.
	RequireTLS bool
	// Users enables AUTH PLAIN with these username/password pairs and refuses MAIL
	// until the client has authenticated.
	Users map[string]string
	// Dir, when set, receives each message as a .eml file.
	Dir string
	// MaxMessageBytes caps DATA; default 10 MiB.
	MaxMessageBytes int
	// CheckRecipient can refuse a recipient with the reply it returns; nil accepts.
	CheckRecipient func(address string) *Reply
	// Logger receives one line per session event; nil discards.
	Logger *slog.Logger
}

// Sink is a running SMTP server.
type Sink struct {
	opts     Options
	listener net.Listener
	logger   *slog.Logger

	mu       sync.Mutex
	messages []Message
	conns    map[net.Conn]struct{}
	closed   bool
	seq      int

	wg sync.WaitGroup
}

const defaultMaxMessageBytes = 10 << 20

// Start listens on addr ("127.0.0.1:0" picks a free port) and serves until Close.
func Start(addr string, opts Options) (*Sink, error) {
	if opts.Hostname == "" {
		opts.Hostname = "localhost"
	}
	if opts.MaxMessageBytes <= 0 {
		opts.MaxMessageBytes = defaultMaxMessageBytes
	}
	if opts.RequireTLS && opts.TLSConfig == nil {
		return nil, errors.New("smtpsink: RequireTLS needs a TLSConfig")
	}
	if opts.Dir != "" {
		if err := os.MkdirAll(opts.Dir, 0o755); err != nil {
			return nil, fmt.Errorf("smtpsink: message directory: %w", err)
		}
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("smtpsink: listen: %w", err)
	}
	s := &Sink{opts: opts, listener: l, logger: logger, conns: map[net.Conn]struct{}{}}
	s.wg.Add(1)
	go s.serve()
	return s, nil
}

// Addr is the address the sink listens on, "host:port".
func (s *Sink) Addr() string { return s.listener.Addr().String() }

// Messages returns a copy of the messages accepted so far, oldest first.
func (s *Sink) Messages() []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Message, len(s.messages))
	for i, m := range s.messages {
		m.To = append([]string(nil), m.To...)
		m.Data = append([]byte(nil), m.Data...)
		out[i] = m
	}
	return out
}

// Close stops listening, ends open sessions and waits for them.
func (s *Sink) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	err := s.listener.Close()
	for c := range s.conns {
		_ = c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	return err
}

func (s *Sink) serve() {
	defer s.wg.Done()
	for {
		conn, err := s.listener.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			_ = conn.Close()
			return
		}
		s.conns[conn] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go func() {
			defer s.wg.Done()
			sess := newSession(s, conn)
			sess.run()
			s.mu.Lock()
			delete(s.conns, sess.conn)
			delete(s.conns, conn)
			s.mu.Unlock()
			_ = sess.conn.Close()
		}()
	}
}

// store keeps a message and writes its file before the client is told it was accepted.
func (s *Sink) store(m Message) (Message, error) {
	s.mu.Lock()
	s.seq++
	seq := s.seq
	s.mu.Unlock()
	if s.opts.Dir != "" {
		name := fmt.Sprintf("%s-%04d.eml", m.Received.UTC().Format("20060102T150405.000000000Z"), seq)
		path := filepath.Join(s.opts.Dir, name)
		tmp := path + ".tmp"
		if err := os.WriteFile(tmp, m.Data, 0o644); err != nil {
			return m, err
		}
		if err := os.Rename(tmp, path); err != nil {
			return m, err
		}
		m.File = path
	}
	s.mu.Lock()
	s.messages = append(s.messages, m)
	s.mu.Unlock()
	return m, nil
}

type session struct {
	sink *Sink
	conn net.Conn
	r    *textproto.Reader
	w    *bufio.Writer

	helo     string
	tls      bool
	authUser string
	from     string
	inMail   bool
	rcpts    []string
}

func newSession(s *Sink, conn net.Conn) *session {
	sess := &session{sink: s, conn: conn}
	sess.bind(conn)
	return sess
}

func (s *session) bind(c net.Conn) {
	s.conn = c
	s.r = textproto.NewReader(bufio.NewReader(c))
	s.w = bufio.NewWriter(c)
}

func (s *session) reply(code int, lines ...string) {
	if len(lines) == 0 {
		lines = []string{""}
	}
	for i, l := range lines {
		sep := " "
		if i < len(lines)-1 {
			sep = "-"
		}
		fmt.Fprintf(s.w, "%d%s%s\r\n", code, sep, l)
	}
	_ = s.w.Flush()
}

func (s *session) resetTransaction() {
	s.from, s.inMail, s.rcpts = "", false, nil
}

// idleTimeout ends a session whose client stopped talking.
const idleTimeout = 5 * time.Minute

func (s *session) run() {
	log := s.sink.logger.With("remote", s.conn.RemoteAddr().String())
	log.Debug("smtp session opened")
	s.reply(220, s.sink.opts.Hostname+" ESMTP gkewi smtpsink")
	for {
		_ = s.conn.SetReadDeadline(time.Now().Add(idleTimeout))
		line, err := s.r.ReadLine()
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
				log.Debug("smtp session ended", "err", err)
			}
			return
		}
		verb, arg, _ := strings.Cut(line, " ")
		verb = strings.ToUpper(verb)
		arg = strings.TrimSpace(arg)
		switch verb {
		case "EHLO", "HELO":
			s.hello(verb, arg)
		case "STARTTLS":
			if !s.startTLS(log) {
				return
			}
		case "AUTH":
			s.auth(arg, log)
		case "MAIL":
			s.mail(arg)
		case "RCPT":
			s.rcpt(arg)
		case "DATA":
			if !s.data(log) {
				return
			}
		case "RSET":
			s.resetTransaction()
			s.reply(250, "2.0.0 OK")
		case "NOOP":
			s.reply(250, "2.0.0 OK")
		case "VRFY":
			s.reply(252, "2.5.2 Cannot VRFY user, but will accept message")
		case "QUIT":
			s.reply(221, "2.0.0 Bye")
			return
		default:
			s.reply(502, "5.5.2 Command not recognized")
		}
	}
}

func (s *session) hello(verb, arg string) {
	if arg == "" {
		s.reply(501, "5.5.4 "+verb+" needs a domain")
		return
	}
	s.helo = arg
	s.resetTransaction()
	if verb == "HELO" {
		s.reply(250, s.sink.opts.Hostname)
		return
	}
	lines := []string{
		s.sink.opts.Hostname + " greets " + arg,
		"8BITMIME",
		"ENHANCEDSTATUSCODES",
		"SIZE " + strconv.Itoa(s.sink.opts.MaxMessageBytes),
	}
	if s.sink.opts.TLSConfig != nil && !s.tls {
		lines = append(lines, "STARTTLS")
	}
	if s.authOffered() {
		lines = append(lines, "AUTH PLAIN")
	}
	s.reply(250, lines...)
}

// authOffered hides AUTH on a plain session when TLS is available, so a password
// never has to cross the wire in the clear.
func (s *session) authOffered() bool {
	return len(s.sink.opts.Users) > 0 && (s.tls || s.sink.opts.TLSConfig == nil)
}

func (s *session) startTLS(log *slog.Logger) bool {
	if s.sink.opts.TLSConfig == nil {
		s.reply(502, "5.5.1 STARTTLS not offered")
		return true
	}
	if s.tls {
		s.reply(503, "5.5.1 TLS already active")
		return true
	}
	s.reply(220, "2.0.0 Ready to start TLS")
	tlsConn := tls.Server(s.conn, s.sink.opts.TLSConfig)
	_ = tlsConn.SetDeadline(time.Now().Add(30 * time.Second))
	if err := tlsConn.Handshake(); err != nil {
		log.Info("smtp TLS handshake failed", "err", err)
		return false
	}
	_ = tlsConn.SetDeadline(time.Time{})
	s.sink.mu.Lock()
	s.sink.conns[tlsConn] = struct{}{}
	delete(s.sink.conns, s.conn)
	s.sink.mu.Unlock()
	s.bind(tlsConn)
	// RFC 3207: the client starts over with EHLO after the handshake.
	s.tls, s.helo, s.authUser = true, "", ""
	s.resetTransaction()
	return true
}

func (s *session) auth(arg string, log *slog.Logger) {
	switch {
	case !s.authOffered():
		s.reply(502, "5.5.1 AUTH not offered")
		return
	case s.helo == "":
		s.reply(503, "5.5.1 EHLO first")
		return
	case s.authUser != "":
		s.reply(503, "5.5.1 Already authenticated")
		return
	}
	mech, initial, _ := strings.Cut(arg, " ")
	if !strings.EqualFold(mech, "PLAIN") {
		s.reply(504, "5.5.4 Only AUTH PLAIN is supported")
		return
	}
	if initial == "" {
		s.reply(334, "")
		line, err := s.r.ReadLine()
		if err != nil {
			return
		}
		initial = line
	}
	if initial == "*" {
		s.reply(501, "5.0.0 Authentication cancelled")
		return
	}
	raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(initial))
	if err != nil {
		s.reply(501, "5.5.2 Cannot decode AUTH PLAIN response")
		return
	}
	parts := bytes.Split(raw, []byte{0})
	if len(parts) != 3 {
		s.reply(501, "5.5.2 Malformed AUTH PLAIN response")
		return
	}
	user, pass := string(parts[1]), parts[2]
	want, ok := s.sink.opts.Users[user]
	if !ok || subtle.ConstantTimeCompare([]byte(want), pass) != 1 {
		log.Info("smtp authentication failed", "user", user)
		s.reply(535, "5.7.8 Authentication credentials invalid")
		return
	}
	s.authUser = user
	s.reply(235, "2.7.0 Authentication successful")
}

// pathArg extracts the address from "FROM:<a@b> PARAMS" or "TO:<a@b>".
func pathArg(arg, prefix string) (string, bool) {
	if len(arg) < len(prefix) || !strings.EqualFold(arg[:len(prefix)], prefix) {
		return "", false
	}
	rest := strings.TrimSpace(arg[len(prefix):])
	if !strings.HasPrefix(rest, "<") {
		return "", false
	}
	end := strings.IndexByte(rest, '>')
	if end < 0 {
		return "", false
	}
	return rest[1:end], true
}

func (s *session) mail(arg string) {
	switch {
	case s.helo == "":
		s.reply(503, "5.5.1 EHLO first")
		return
	case s.sink.opts.RequireTLS && !s.tls:
		s.reply(530, "5.7.0 Must issue a STARTTLS command first")
		return
	case len(s.sink.opts.Users) > 0 && s.authUser == "":
		s.reply(530, "5.7.0 Authentication required")
		return
	case s.inMail:
		s.reply(503, "5.5.1 Nested MAIL command")
		return
	}
	from, ok := pathArg(arg, "FROM:")
	if !ok {
		s.reply(501, "5.5.4 Syntax: MAIL FROM:<address>")
		return
	}
	s.from, s.inMail, s.rcpts = from, true, nil
	s.reply(250, "2.1.0 OK")
}

func (s *session) rcpt(arg string) {
	if !s.inMail {
		s.reply(503, "5.5.1 MAIL first")
		return
	}
	to, ok := pathArg(arg, "TO:")
	if !ok || to == "" {
		s.reply(501, "5.5.4 Syntax: RCPT TO:<address>")
		return
	}
	if check := s.sink.opts.CheckRecipient; check != nil {
		if r := check(to); r != nil {
			s.reply(r.Code, r.Text)
			return
		}
	}
	s.rcpts = append(s.rcpts, to)
	s.reply(250, "2.1.5 OK")
}

func (s *session) data(log *slog.Logger) bool {
	if !s.inMail || len(s.rcpts) == 0 {
		s.reply(503, "5.5.1 RCPT first")
		return true
	}
	s.reply(354, "Start mail input; end with <CRLF>.<CRLF>")
	limit := s.sink.opts.MaxMessageBytes
	dr := s.r.DotReader()
	body, err := io.ReadAll(io.LimitReader(dr, int64(limit)+1))
	if err != nil {
		return false
	}
	if len(body) > limit {
		// Drain the rest so the session stays in step, then refuse.
		if _, err := io.Copy(io.Discard, dr); err != nil {
			return false
		}
		s.resetTransaction()
		s.reply(552, "5.3.4 Message too big")
		return true
	}
	msg, err := s.sink.store(Message{
		From:     s.from,
		To:       append([]string(nil), s.rcpts...),
		Data:     body,
		TLS:      s.tls,
		AuthUser: s.authUser,
		Received: time.Now(),
	})
	s.resetTransaction()
	if err != nil {
		log.Error("smtp message not stored", "err", err)
		s.reply(451, "4.3.0 Cannot store message")
		return true
	}
	log.Info("smtp message accepted", "from", msg.From, "to", strings.Join(msg.To, ","), "bytes", len(msg.Data), "file", msg.File)
	s.reply(250, "2.0.0 OK: queued")
	return true
}
