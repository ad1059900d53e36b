package kubecluster

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// process is one control-plane binary running in its own process group, so that
// stopping it also stops anything it may have started, and nothing else.
type process struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	logFile *os.File
	// exited is closed when the process has exited. It is not reaped until stop, so
	// its pid and process group id cannot be reused while stop signals the group.
	exited chan struct{}
}

// startProcess runs path with args, its output going to logDir/name.log.
func startProcess(name, path string, args []string, logDir string) (*process, error) {
	logPath := filepath.Join(logDir, name+".log")
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(path, args...)
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.SysProcAttr = processAttrs()
	if err := cmd.Start(); err != nil {
		_ = logFile.Close() // nothing was written to it
		return nil, fmt.Errorf("starting %s (%s): %w", name, path, err)
	}
	p := &process{name: name, cmd: cmd, logPath: logPath, logFile: logFile, exited: make(chan struct{})}
	go func() {
		waitExitNoReap(cmd.Process.Pid)
		close(p.exited)
	}()
	return p, nil
}

// pid is the process id, which is also its process group id.
func (p *process) pid() int { return p.cmd.Process.Pid }

// hasExited reports whether the process has already ended.
func (p *process) hasExited() bool {
	select {
	case <-p.exited:
		return true
	default:
		return false
	}
}

// stop asks the process group to terminate, kills what is left after grace, and
// reaps the process.
func (p *process) stop(grace time.Duration) error {
	if p.cmd.ProcessState != nil {
		return nil
	}
	signalGroup(p.pid(), false)
	select {
	case <-p.exited:
	case <-time.After(grace):
	}
	// The leader is not reaped yet, so the group id still names only our processes.
	signalGroup(p.pid(), true)
	<-p.exited
	err := p.cmd.Wait()
	_ = p.logFile.Close() // the process wrote through its own descriptor
	var exitErr *exec.ExitError
	if errors.As(err, &exitErr) {
		// Exits by our signal are the expected outcome of stop.
		return nil
	}
	return err
}

// failure describes an unexpected exit, with the end of the process's log.
func (p *process) failure() error {
	return fmt.Errorf("%s exited unexpectedly; last lines of %s:\n%s", p.name, p.logPath, tailFile(p.logPath, 25))
}

// tailFile returns the last n lines of a file, for error messages.
func tailFile(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return "(" + err.Error() + ")"
	}
	defer func() { _ = f.Close() }() // read only
	const maxTail = 64 << 10
	if st, err := f.Stat(); err == nil && st.Size() > maxTail {
		if _, err := f.Seek(st.Size()-maxTail, io.SeekStart); err != nil {
			return "(" + err.Error() + ")"
		}
	}
	b, err := io.ReadAll(f)
	if err != nil {
		return "(" + err.Error() + ")"
	}
	lines := strings.Split(string(bytes.TrimRight(b, "\n")), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return "  " + strings.Join(lines, "\n  ")
}
