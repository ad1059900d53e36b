package stack

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// Down stops the sandbox whose directory is dir, from another process: it asks
// the process that owns the sandbox to stop (which stops everything it started),
// then stops any recorded process still alive, such as those of an owner that
// died. It reports whether anything was running.
func Down(dir string, log io.Writer, grace time.Duration) (bool, error) {
	runDir := filepath.Join(dir, "run")
	records, err := readRecords(runDir)
	if err != nil {
		return false, err
	}
	found := false
	for _, r := range records {
		if r.Name != supervisorRecord || !r.alive() {
			continue
		}
		found = true
		if r.PID == os.Getpid() {
			return true, fmt.Errorf("refusing to stop the sandbox from its own process")
		}
		fmt.Fprintf(log, "stopping the sandbox (pid %d: %s)\n", r.PID, commandLine(r.PID))
		_ = syscall.Kill(r.PID, syscall.SIGTERM)
		deadline := time.Now().Add(grace)
		for r.alive() && time.Now().Before(deadline) {
			time.Sleep(200 * time.Millisecond)
		}
		if r.alive() {
			fmt.Fprintf(log, "pid %d did not stop within %s; killing it\n", r.PID, grace)
			_ = syscall.Kill(r.PID, syscall.SIGKILL)
			time.Sleep(200 * time.Millisecond)
		}
	}
	// What the owner did not stop (it was killed, or died): stop it here.
	records, err = readRecords(runDir)
	if err != nil {
		return found, err
	}
	for _, r := range records {
		if r.alive() && r.Name != supervisorRecord {
			found = true
			fmt.Fprintf(log, "stopping %s (pid %d)\n", r.Name, r.PID)
			r.terminate(5 * time.Second)
		}
		removeRecord(runDir, r.Name)
	}
	_ = os.Remove(filepath.Join(dir, readyFile))
	return found, nil
}

// readyFile appears in the sandbox directory once the sandbox is ready; its
// content is the owning process's id.
const readyFile = "ready"

// MarkReady writes the ready file for this process. `gkewi-sandbox up --detach`
// waits for it.
func (s *Sandbox) MarkReady() error {
	return os.WriteFile(filepath.Join(s.dir, readyFile), []byte(fmt.Sprint(os.Getpid())), 0o644)
}

// ReadyPID is the pid in dir's ready file, 0 when the sandbox is not ready.
func ReadyPID(dir string) int {
	b, err := os.ReadFile(filepath.Join(dir, readyFile))
	if err != nil {
		return 0
	}
	var pid int
	_, _ = fmt.Sscan(string(b), &pid)
	return pid
}
