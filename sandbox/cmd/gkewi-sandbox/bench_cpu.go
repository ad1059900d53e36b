package main

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// clockTick is Linux's USER_HZ, the unit of the CPU times in /proc/<pid>/stat.
const clockTick = 100

// sandboxCPU is the CPU time (user + system) used so far by the sandbox's
// processes, by name: this process (the emulator and the benchmark's client)
// and its children (Temporal, etcd, the Kubernetes control plane, kwok, the
// worker). Ended processes are not counted.
func sandboxCPU() map[string]time.Duration {
	out := map[string]time.Duration{}
	self := os.Getpid()
	if name, _, cpu, ok := procStat(strconv.Itoa(self)); ok {
		out["emulator+bench ("+name+")"] += cpu
	}
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		name, ppid, cpu, ok := procStat(filepath.Base(d))
		if ok && ppid == self {
			out[name] += cpu
		}
	}
	return out
}

// procStat reads a process's name, parent and CPU time from /proc/<pid>/stat.
func procStat(pid string) (name string, ppid int, cpu time.Duration, ok bool) {
	b, err := os.ReadFile("/proc/" + pid + "/stat")
	if err != nil {
		return "", 0, 0, false
	}
	s := string(b)
	open, closing := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if open < 0 || closing < open {
		return "", 0, 0, false
	}
	name = s[open+1 : closing]
	// After the name: state ppid pgrp session tty tpgid flags minflt cminflt
	// majflt cmajflt utime stime ...
	f := strings.Fields(s[closing+1:])
	if len(f) < 13 {
		return "", 0, 0, false
	}
	ppid, _ = strconv.Atoi(f[1])
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return name, ppid, time.Duration(utime+stime) * time.Second / clockTick, true
}

// cpuDiff is the CPU time each process used between two readings, in seconds.
func cpuDiff(before, after map[string]time.Duration) map[string]float64 {
	out := map[string]float64{}
	for name, t := range after {
		if d := t - before[name]; d > 0 {
			out[name] = d.Seconds()
		}
	}
	return out
}

// cpuLine prints CPU seconds per onboarding by process, biggest first.
func cpuLine(cpu map[string]float64, n int) string {
	names := make([]string, 0, len(cpu))
	total := 0.0
	for name, s := range cpu {
		names = append(names, name)
		total += s
	}
	slices.SortFunc(names, func(a, b string) int {
		switch {
		case cpu[a] > cpu[b]:
			return -1
		case cpu[a] < cpu[b]:
			return 1
		}
		return strings.Compare(a, b)
	})
	parts := []string{fmt.Sprintf("total %.3fs", total/float64(n))}
	for _, name := range names {
		if cpu[name]/float64(n) >= 0.001 {
			parts = append(parts, fmt.Sprintf("%s %.3fs", name, cpu[name]/float64(n)))
		}
	}
	return strings.Join(parts, ", ")
}
