package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/gkewi/gkewi/internal/text"
	"github.com/gkewi/gkewi/sandbox/stack"
)

func runUp(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("gkewi-sandbox up", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var sf sandboxFlags
	sf.register(fs)
	detach := fs.Bool("detach", false, "start the sandbox in the background and return once it is ready")
	background := fs.Bool("background", false, "internal: this process is the background sandbox of --detach")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *detach {
		return upDetached(ctx, args, sf.dir, stdout)
	}
	sb, err := stack.Start(ctx, sf.options(stdout))
	if err != nil {
		return err
	}
	defer func() {
		if err := sb.Stop(); err != nil {
			fmt.Fprintln(stderr, "gkewi-sandbox: stopping:", err)
		}
	}()
	if err := sb.MarkReady(); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "\nThe sandbox is up (started in %s).\n\n", sb.StartedIn().Round(100*time.Millisecond))
	printHowTo(stdout, sb)
	if !*background {
		fmt.Fprintln(stdout, "\nCtrl-C (or `bin/gkewi-sandbox down` elsewhere) stops it.")
	}
	<-ctx.Done()
	fmt.Fprintln(stdout, "stopping the sandbox")
	return nil
}

// upDetached runs `up` again as a background process in a session of its own,
// with its output in the sandbox's log, and returns once it is ready.
func upDetached(ctx context.Context, args []string, dir string, stdout io.Writer) error {
	var rest []string
	for _, a := range args {
		if a != "--detach" && a != "-detach" && a != "--detach=true" && a != "-detach=true" {
			rest = append(rest, a)
		}
	}
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Join(dir, "logs"), 0o755); err != nil {
		return err
	}
	logPath := filepath.Join(dir, "logs", "sandbox.log")
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	// The child holds its own descriptor; ours only needs releasing.
	defer func() { _ = logFile.Close() }()
	_ = os.Remove(filepath.Join(dir, "ready"))
	cmd := exec.Command(exe, append([]string{"up", "-v", "--background"}, rest...)...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	fmt.Fprintf(stdout, "starting the sandbox in the background (pid %d, log %s)\n", cmd.Process.Pid, logPath)
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case err := <-exited:
			b, _ := os.ReadFile(logPath)
			return fmt.Errorf("the sandbox did not start (%v):\n%s", err, b)
		case <-ctx.Done():
			_ = cmd.Process.Signal(syscall.SIGTERM)
			<-exited //nolint:errcheck // the exit by our signal is expected
			return errors.New("interrupted; the background sandbox was stopped")
		case <-tick.C:
			if stack.ReadyPID(dir) == cmd.Process.Pid {
				b, _ := os.ReadFile(logPath)
				fmt.Fprintf(stdout, "%s", b)
				return nil
			}
		}
	}
}

func runDown(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("gkewi-sandbox down", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("dir", ".sandbox", "the sandbox directory")
	if err := fs.Parse(args); err != nil {
		return err
	}
	found, err := stack.Down(*dir, stdout, time.Minute)
	if err != nil {
		return err
	}
	if !found {
		fmt.Fprintf(stdout, "no sandbox is running in %s\n", *dir)
		return nil
	}
	fmt.Fprintln(stdout, "the sandbox is stopped")
	return nil
}

// printHowTo tells how to reach the running sandbox.
func printHowTo(w io.Writer, sb *stack.Sandbox) {
	if ui := sb.TemporalUIURL(); ui != "" {
		fmt.Fprintf(w, "  Temporal Web UI:   %s\n", ui)
	}
	fmt.Fprintf(w, "  Temporal:          %s (namespace default, task queue gkewi)\n", sb.TemporalAddress())
	fmt.Fprintf(w, "  Google emulator:   %s (state: %s/_emulator/state, calls: %s/_emulator/requests)\n", sb.EmulatorURL(), sb.EmulatorURL(), sb.EmulatorURL())
	fmt.Fprintf(w, "  Kubernetes:        KUBECONFIG=%s\n", sb.KubeconfigPath())
	fmt.Fprintf(w, "  Mail received:     %s\n", filepath.Join(sb.Dir(), "mail"))
	fmt.Fprintf(w, "  Logs:              %s\n", sb.LogDir())
	fmt.Fprintf(w, "\nRun more commands with the sandbox's environment:\n\n")
	fmt.Fprintf(w, "  source %s\n", relPath(filepath.Join(sb.Dir(), "env.sh")))
	fmt.Fprintf(w, "  temporal workflow list --query 'WorkflowType=\"Onboard\"'\n")
	fmt.Fprintf(w, "  kubectl get serviceaccounts -A -l app.kubernetes.io/managed-by=Helm\n")
	down := "bin/gkewi-sandbox down"
	if wd, err := os.Getwd(); err != nil || sb.Dir() != filepath.Join(wd, ".sandbox") {
		down += " --dir " + text.ShellWord(relPath(sb.Dir()))
	}
	fmt.Fprintf(w, "\nStop it with:\n\n  %s\n", down)
}

// relPath shortens a path under the working directory.
func relPath(p string) string {
	wd, err := os.Getwd()
	if err != nil {
		return p
	}
	if r, err := filepath.Rel(wd, p); err == nil && !filepath.IsAbs(r) && len(r) < len(p) && !strings.HasPrefix(r, "..") {
		return r
	}
	return p
}
