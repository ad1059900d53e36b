package stack

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// child is a process the sandbox started, in a process group of its own so that
// stopping it stops whatever it started too, and nothing else.
type child struct {
	name    string
	path    string
	args    []string
	env     []string
	dir     string
	logPath string
	runDir  string

	cmd     *exec.Cmd
	logFile *os.File
	// exited is closed when the process has exited. It stays unreaped (a zombie)
	// until stop or kill, so its pid and group id cannot be reused meanwhile.
	exited chan struct{}
}

// start launches the process, its output appended to logPath, and records it in
// runDir so a later sandbox can clean it up if this one dies without stopping it.
func (c *child) start() error {
	logFile, err := os.OpenFile(c.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	fmt.Fprintf(logFile, "\n=== %s: starting %s %s\n", time.Now().Format(time.RFC3339), c.path, strings.Join(c.args, " "))
	cmd := exec.Command(c.path, c.args...)
	cmd.Env = c.env
	cmd.Dir = c.dir
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	// A group of its own, killed if the sandbox process dies first.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		_ = logFile.Close() // nothing was written to it
		return fmt.Errorf("starting %s (%s): %w", c.name, c.path, err)
	}
	c.cmd, c.logFile, c.exited = cmd, logFile, make(chan struct{})
	go func(pid int, exited chan struct{}) {
		waitExitNoReap(pid)
		close(exited)
	}(cmd.Process.Pid, c.exited)
	return writeRecord(c.runDir, processRecord{Name: c.name, PID: cmd.Process.Pid, Exe: c.path})
}

func (c *child) pid() int {
	if c.cmd == nil {
		return 0
	}
	return c.cmd.Process.Pid
}

// running reports whether the process was started and has not exited.
func (c *child) running() bool {
	if c.cmd == nil {
		return false
	}
	select {
	case <-c.exited:
		return false
	default:
		return true
	}
}

// stop asks the group to terminate, kills what is left after grace, and reaps
// the process. Calling it on a stopped child does nothing.
func (c *child) stop(grace time.Duration) error {
	if c.cmd == nil {
		return nil
	}
	pid := c.pid()
	_ = syscall.Kill(-pid, syscall.SIGTERM)
	select {
	case <-c.exited:
	case <-time.After(grace):
	}
	// Unreaped, the group id still names only our processes.
	_ = syscall.Kill(-pid, syscall.SIGKILL)
	return c.reap()
}

// kill ends the group at once with SIGKILL, as a crash would.
func (c *child) kill() error {
	if c.cmd == nil {
		return nil
	}
	_ = syscall.Kill(-c.pid(), syscall.SIGKILL)
	return c.reap()
}

func (c *child) reap() error {
	<-c.exited
	err := c.cmd.Wait()
	_ = c.logFile.Close() // the child wrote through its own descriptor
	removeRecord(c.runDir, c.name)
	c.cmd = nil
	var exitErr *exec.ExitError
	if errors.As(err, &exitErr) {
		return nil // ended by our signal, or had already failed (see its log)
	}
	return err
}

// waitExitNoReap blocks until the process exits without reaping it.
func waitExitNoReap(pid int) {
	for {
		var info unix.Siginfo
		err := unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
		if !errors.Is(err, unix.EINTR) {
			return
		}
	}
}

// processRecord is a process a sandbox started, kept in the run directory.
type processRecord struct {
	Name string `json:"name"`
	PID  int    `json:"pid"`
	// Exe is the binary, to tell the process from an unrelated one that got the
	// same pid later.
	Exe string `json:"exe"`
}

func recordPath(runDir, name string) string { return filepath.Join(runDir, name+".json") }

func writeRecord(runDir string, r processRecord) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	return os.WriteFile(recordPath(runDir, r.Name), b, 0o600)
}

func removeRecord(runDir, name string) { _ = os.Remove(recordPath(runDir, name)) }

func readRecords(runDir string) ([]processRecord, error) {
	files, err := filepath.Glob(filepath.Join(runDir, "*.json"))
	if err != nil {
		return nil, err
	}
	var out []processRecord
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		var r processRecord
		if json.Unmarshal(b, &r) == nil && r.Name != "" {
			out = append(out, r)
		}
	}
	return out, nil
}

// alive reports whether the recorded process still runs the recorded binary.
func (r processRecord) alive() bool {
	if r.PID <= 0 {
		return false
	}
	exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", r.PID))
	if err != nil {
		return false
	}
	return sameFile(strings.TrimSuffix(exe, " (deleted)"), r.Exe)
}

func sameFile(a, b string) bool {
	if a == b {
		return true
	}
	ra, errA := filepath.EvalSymlinks(a)
	rb, errB := filepath.EvalSymlinks(b)
	if errA == nil && errB == nil && ra == rb {
		return true
	}
	aa, _ := filepath.Abs(a)
	ab, _ := filepath.Abs(b)
	return aa == ab
}

// terminate stops a recorded process group: SIGTERM, then SIGKILL after grace.
func (r processRecord) terminate(grace time.Duration) {
	_ = syscall.Kill(-r.PID, syscall.SIGTERM)
	_ = syscall.Kill(r.PID, syscall.SIGTERM)
	deadline := time.Now().Add(grace)
	for time.Now().Before(deadline) {
		if !r.alive() {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	_ = syscall.Kill(-r.PID, syscall.SIGKILL)
	_ = syscall.Kill(r.PID, syscall.SIGKILL)
	for i := 0; i < 50 && r.alive(); i++ {
		time.Sleep(100 * time.Millisecond)
	}
}
