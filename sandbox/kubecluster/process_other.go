//go:build !linux

package kubecluster

import "syscall"

// The control plane runs on Linux only: stopping exactly our process groups
// relies on waitid(WNOWAIT).
const platformSupported = false

func processAttrs() *syscall.SysProcAttr { return &syscall.SysProcAttr{Setpgid: true} }

func waitExitNoReap(int) {}

func signalGroup(int, bool) {}
