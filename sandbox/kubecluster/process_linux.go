package kubecluster

import (
	"errors"
	"syscall"

	"golang.org/x/sys/unix"
)

// platformSupported: see process_other.go.
const platformSupported = true

func processAttrs() *syscall.SysProcAttr {
	// A group of its own, killed with the test binary if that dies first.
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

// waitExitNoReap blocks until the process exits, leaving it a zombie so its pid
// and group id stay reserved until exec.Cmd.Wait reaps it.
func waitExitNoReap(pid int) {
	for {
		var info unix.Siginfo
		err := unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
		if !errors.Is(err, unix.EINTR) {
			return
		}
	}
}

// signalGroup sends SIGTERM, or SIGKILL when kill is set, to a process group.
func signalGroup(pgid int, kill bool) {
	sig := syscall.SIGTERM
	if kill {
		sig = syscall.SIGKILL
	}
	// ESRCH means the group is already empty.
	_ = syscall.Kill(-pgid, sig)
}
