// Command gkewi-smtp-sink runs a local SMTP server that keeps every message as a
// .eml file: the sandbox's stand-in for the support team's mail relay.
//
//	gkewi-smtp-sink --addr 127.0.0.1:2525 --dir .sandbox/mail \
//	    --starttls --ca-out .sandbox/mail/ca.pem --user gkewi --password-file .sandbox/smtp-password
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/gkewi/gkewi/sandbox/smtpsink"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "gkewi-smtp-sink:", err)
		os.Exit(1)
	}
}

func run() error {
	var (
		addr         = flag.String("addr", "127.0.0.1:2525", "listen address")
		dir          = flag.String("dir", "", "write each message as a .eml file into this directory")
		startTLS     = flag.Bool("starttls", false, "offer STARTTLS with a fresh self-signed certificate")
		requireTLS   = flag.Bool("require-tls", false, "refuse MAIL and AUTH before STARTTLS (implies --starttls)")
		caOut        = flag.String("ca-out", "", "write the self-signed certificate (PEM) here, for the client's CA file")
		user         = flag.String("user", "", "require AUTH PLAIN as this user")
		passwordFile = flag.String("password-file", "", "file holding the password for --user")
		tlsHosts     = flag.String("tls-hosts", "localhost,127.0.0.1", "comma-separated names and IPs the certificate is valid for")
	)
	flag.Parse()
	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))

	opts := smtpsink.Options{Dir: *dir, Logger: logger, RequireTLS: *requireTLS}
	if *startTLS || *requireTLS {
		cert, err := smtpsink.NewSelfSigned(strings.Split(*tlsHosts, ",")...)
		if err != nil {
			return err
		}
		opts.TLSConfig = cert.ServerTLS
		if *caOut != "" {
			if err := os.WriteFile(*caOut, cert.CertPEM, 0o644); err != nil {
				return fmt.Errorf("write CA file: %w", err)
			}
		}
	}
	if *user != "" {
		if *passwordFile == "" {
			return errors.New("--user needs --password-file")
		}
		pw, err := os.ReadFile(*passwordFile)
		if err != nil {
			return fmt.Errorf("password file: %w", err)
		}
		opts.Users = map[string]string{*user: strings.TrimRight(string(pw), "\r\n")}
	}

	sink, err := smtpsink.Start(*addr, opts)
	if err != nil {
		return err
	}
	logger.Info("smtp sink listening", "addr", sink.Addr(), "dir", *dir,
		"starttls", opts.TLSConfig != nil, "auth", *user != "")

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	<-ctx.Done()
	logger.Info("smtp sink stopping", "messages", len(sink.Messages()))
	return sink.Close()
}
