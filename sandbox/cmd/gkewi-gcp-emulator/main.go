// Command gkewi-gcp-emulator serves the local stand-in for the Google Cloud APIs
// gkewi uses (see package gcpemu), plus a GCE metadata server at its root.
//
//	gkewi-gcp-emulator -listen 127.0.0.1:8085 -config sandbox.yaml
//
// On start it prints the endpoint of every API as JSON (and writes it to
// -endpoints-file when given); SIGINT or SIGTERM stops it and saves the state.
// Every API also answers at Google's own paths from "root", so a client with a
// single root override reaches them all:
//
//	gcloud config set api_endpoint_overrides/iam http://127.0.0.1:8085/   (same for each API)
//	bq --api http://127.0.0.1:8085 ls
//	google.bigquery({version: 'v2', rootUrl: 'http://127.0.0.1:8085/'})   (Node.js googleapis)
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/gkewi/gkewi/sandbox/gcpemu"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "gkewi-gcp-emulator:", err)
		os.Exit(1)
	}
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func run(args []string) error {
	fs := flag.NewFlagSet("gkewi-gcp-emulator", flag.ContinueOnError)
	listen := fs.String("listen", envOr("GKEWI_GCP_EMULATOR_LISTEN", "127.0.0.1:8085"), "address to listen on (env GKEWI_GCP_EMULATOR_LISTEN)")
	configPath := fs.String("config", os.Getenv("GKEWI_GCP_EMULATOR_CONFIG"), "YAML or JSON config file (env GKEWI_GCP_EMULATOR_CONFIG)")
	stateFile := fs.String("state", os.Getenv("GKEWI_GCP_EMULATOR_STATE"), "state file; overrides the config's stateFile (env GKEWI_GCP_EMULATOR_STATE)")
	endpointsFile := fs.String("endpoints-file", "", "write the endpoints JSON here once serving")
	quiet := fs.Bool("quiet", false, "do not log each notable event")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *configPath == "" {
		return errors.New("a config file is required: -config FILE (see sandbox/cmd/gkewi-gcp-emulator/example.yaml)")
	}
	fc, err := loadFileConfig(*configPath)
	if err != nil {
		return err
	}
	cfg, err := fc.toConfig()
	if err != nil {
		return err
	}
	if *stateFile != "" {
		cfg.StateFile = *stateFile
	}
	logger := log.New(os.Stderr, "gkewi-gcp-emulator: ", log.LstdFlags)
	if !*quiet {
		cfg.Logf = logger.Printf
	}

	// Catch signals before anything is announced, so a quick SIGTERM still saves.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		if errors.Is(err, syscall.EADDRINUSE) {
			return fmt.Errorf("address %s is already in use (another emulator running?); pick another with -listen or GKEWI_GCP_EMULATOR_LISTEN", *listen)
		}
		return fmt.Errorf("listening on %s: %w", *listen, err)
	}
	emu, err := gcpemu.New(cfg)
	if err != nil {
		_ = ln.Close()
		return err
	}
	base := "http://" + ln.Addr().String()
	out, err := json.MarshalIndent(map[string]any{
		"endpoints":         gcpemu.Endpoints(base),
		"root":              base + "/",
		"gceMetadataHost":   ln.Addr().String(),
		"admin":             base + "/_emulator/",
		"stateFile":         cfg.StateFile,
		"operator":          cfg.Operator,
		"operationDuration": cfg.OperationDuration.String(),
		"propagationDelay":  cfg.PropagationDelay.String(),
	}, "", "  ")
	if err != nil {
		return err
	}
	fmt.Println(string(out))
	if *endpointsFile != "" {
		if err := os.WriteFile(*endpointsFile, append(out, '\n'), 0o644); err != nil {
			_ = emu.Close()
			return fmt.Errorf("writing endpoints file: %w", err)
		}
	}

	srv := &http.Server{Handler: emu, ReadHeaderTimeout: 10 * time.Second}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	select {
	case err := <-serveErr:
		_ = emu.Close()
		return fmt.Errorf("serving: %w", err)
	case <-ctx.Done():
	}
	logger.Printf("shutting down")
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	shutdownErr := srv.Shutdown(shutdownCtx)
	if err := emu.Close(); err != nil {
		return fmt.Errorf("saving state: %w", err)
	}
	if shutdownErr != nil {
		return fmt.Errorf("shutdown: %w", shutdownErr)
	}
	return nil
}
