package stack

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// PortInUseError says which port is taken, what the sandbox wanted it for and,
// when the system tells, which process holds it.
type PortInUseError struct {
	Port int
	// Purpose is what the sandbox wanted the port for, with the flag that moves it.
	Purpose string
	// PID and Command identify the listener; zero and empty when unknown.
	PID     int
	Command string
}

func (e *PortInUseError) Error() string {
	who := "another process"
	if e.PID > 0 {
		who = fmt.Sprintf("pid %d (%s)", e.PID, e.Command)
	}
	return fmt.Sprintf("port %d, wanted for %s, is already in use by %s: stop it or choose another port", e.Port, e.Purpose, who)
}

// portRequest is a port the sandbox needs; 0 asks for a free one.
type portRequest struct {
	port    *int
	purpose string
}

// reservePorts checks that every requested port is free and picks free ports for
// the zero ones. Every listener is held until all are chosen, so no two requests
// get the same port.
func reservePorts(reqs []portRequest) error {
	var held []net.Listener
	defer func() {
		for _, l := range held {
			_ = l.Close()
		}
	}()
	for _, r := range reqs {
		l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(*r.port))
		if err != nil {
			if errors.Is(err, syscall.EADDRINUSE) {
				pe := &PortInUseError{Port: *r.port, Purpose: r.purpose}
				pe.PID, pe.Command = portOwner(*r.port)
				return pe
			}
			return fmt.Errorf("port %d (%s): %w", *r.port, r.purpose, err)
		}
		held = append(held, l)
		*r.port = l.Addr().(*net.TCPAddr).Port
	}
	return nil
}

// portOwner finds the process listening on a local TCP port from /proc: the
// socket's inode in /proc/net/tcp{,6}, then the process holding that inode.
// It returns zero values when it cannot tell (another user's process, no /proc).
func portOwner(port int) (int, string) {
	inodes := map[string]bool{}
	for _, table := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		f, err := os.Open(table)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			// sl local_address rem_address st ... inode (field 9)
			if len(fields) < 10 || fields[3] != "0A" { // 0A: LISTEN
				continue
			}
			_, hexPort, ok := strings.Cut(fields[1], ":")
			if !ok {
				continue
			}
			if p, err := strconv.ParseInt(hexPort, 16, 32); err == nil && int(p) == port {
				inodes[fields[9]] = true
			}
		}
		_ = f.Close() // read only
	}
	if len(inodes) == 0 {
		return 0, ""
	}
	procs, _ := filepath.Glob("/proc/[0-9]*")
	for _, dir := range procs {
		fds, err := os.ReadDir(filepath.Join(dir, "fd"))
		if err != nil {
			continue
		}
		for _, fd := range fds {
			link, err := os.Readlink(filepath.Join(dir, "fd", fd.Name()))
			if err != nil || !strings.HasPrefix(link, "socket:[") {
				continue
			}
			if inodes[strings.TrimSuffix(strings.TrimPrefix(link, "socket:["), "]")] {
				pid, _ := strconv.Atoi(filepath.Base(dir))
				return pid, commandLine(pid)
			}
		}
	}
	return 0, ""
}

// commandLine is a process's command line, shortened for messages.
func commandLine(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || len(b) == 0 {
		return "unknown command"
	}
	s := strings.TrimSpace(strings.ReplaceAll(string(b), "\x00", " "))
	if len(s) > 160 {
		s = s[:160] + "..."
	}
	return s
}
