package main

import (
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The reading of this very process grows while it burns CPU.
func TestProcStatCountsThisProcess(t *testing.T) {
	name, ppid, before, ok := procStat(strconv.Itoa(os.Getpid()))
	require.True(t, ok)
	assert.NotEmpty(t, name)
	assert.Equal(t, os.Getppid(), ppid)
	deadline := time.Now().Add(300 * time.Millisecond)
	x := 0
	for time.Now().Before(deadline) {
		x++
	}
	_, _, after, ok := procStat(strconv.Itoa(os.Getpid()))
	require.True(t, ok)
	assert.GreaterOrEqual(t, after-before, 150*time.Millisecond, "busy for 300ms (%d loops)", x)
}

func TestCPULinePerOnboarding(t *testing.T) {
	line := cpuLine(map[string]float64{"temporal": 50, "gkewi-worker": 30, "etcd": 0.05}, 100)
	assert.Equal(t, "total 0.800s, temporal 0.500s, gkewi-worker 0.300s", line)
	assert.Equal(t, map[string]float64{"a": 2}, cpuDiff(map[string]time.Duration{"a": time.Second, "b": time.Second},
		map[string]time.Duration{"a": 3 * time.Second, "b": time.Second}))
}
