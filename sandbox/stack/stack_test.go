package stack

import (
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gkewi/gkewi/sandbox/gcpemu"
)

func TestPortInUseNamesThePortAndItsOwner(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	taken := l.Addr().(*net.TCPAddr).Port

	free := 0
	err = reservePorts([]portRequest{{&free, "something free"}, {&taken, "the Temporal frontend (--temporal-port)"}})
	var pe *PortInUseError
	require.True(t, errors.As(err, &pe), "got %v", err)
	assert.Equal(t, taken, pe.Port)
	assert.Equal(t, os.Getpid(), pe.PID, "the listener is this test process")
	assert.Contains(t, err.Error(), "--temporal-port")
	assert.Contains(t, err.Error(), "pid ")
	assert.NotZero(t, free, "a free port was picked for the zero request")
}

func TestSandboxConfigFileIsValidForTheEmulator(t *testing.T) {
	cfg, err := LoadConfig(filepath.Join("..", "..", "deploy", "sandbox", "sandbox.yaml"))
	require.NoError(t, err)
	c, err := cfg.Cluster()
	require.NoError(t, err)
	assert.Equal(t, ClusterSpec{Project: "carto-sandbox", Location: "europe-west1", Name: "carto", NodePools: []string{"default-pool", "workers"}}, c)

	emu, err := gcpemu.New(cfg.emulatorConfig(func(c gcpemu.ClusterConfig, _ bool) gcpemu.ClusterConfig { return c }, nil))
	require.NoError(t, err, "the emulator accepts every project, role and binding of the file")
	require.NoError(t, emu.Close())

	// The worker's roles are granted per project, never project owner or editor.
	for _, p := range cfg.Projects {
		for _, b := range p.Bindings {
			assert.NotContains(t, []string{"roles/owner", "roles/editor"}, b.Role, "project %s", p.ID)
		}
	}
}

// Several clusters share the local control plane; the first is the primary,
// and each is one gcloud-named kubeconfig context. A cluster without node
// pools, no cluster at all and unknown keys are refused.
func TestConfigClusters(t *testing.T) {
	path := filepath.Join(t.TempDir(), "two.yaml")
	write := func(body string) {
		require.NoError(t, os.WriteFile(path, []byte("operator: w@p.iam.gserviceaccount.com\n"+body), 0o600))
	}
	write(`
projects:
  - id: p
    number: 1
    clusters:
      - {location: l, name: a, nodePools: [x]}
      - {location: l, name: b, nodePools: [z]}
`)
	cfg, err := LoadConfig(path)
	require.NoError(t, err)
	all, err := cfg.Clusters()
	require.NoError(t, err)
	assert.Equal(t, []ClusterSpec{{Project: "p", Location: "l", Name: "a", NodePools: []string{"x"}}, {Project: "p", Location: "l", Name: "b", NodePools: []string{"z"}}}, all)
	assert.Equal(t, "gke_p_l_b", all[1].GKEContext())
	var primaries []bool
	cfg.emulatorConfig(func(c gcpemu.ClusterConfig, primary bool) gcpemu.ClusterConfig {
		primaries = append(primaries, primary)
		return c
	}, nil)
	assert.Equal(t, []bool{true, false}, primaries)

	write("projects:\n  - id: p\n    number: 1\n    clusters:\n      - {location: l, name: a}\n")
	_, err = LoadConfig(path)
	assert.ErrorContains(t, err, "cluster a has no node pools")
	write("projects:\n  - id: p\n    number: 1\n")
	_, err = LoadConfig(path)
	assert.ErrorContains(t, err, "no cluster among the projects")
	write("operater: typo\n")
	_, err = LoadConfig(path)
	require.Error(t, err, "unknown keys are refused")
}

// sleeper starts a process recorded in runDir like a sandbox component.
func sleeper(t *testing.T, runDir, name string) *exec.Cmd {
	t.Helper()
	sleep, err := exec.LookPath("sleep")
	require.NoError(t, err)
	cmd := exec.Command(sleep, "60")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	require.NoError(t, writeRecord(runDir, processRecord{Name: name, PID: cmd.Process.Pid, Exe: sleep}))
	return cmd
}

func exited(cmd *exec.Cmd) bool {
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	select {
	case <-done:
		return true
	case <-time.After(5 * time.Second):
		return false
	}
}

func TestSecondStartStopsWhatADeadSandboxLeftBehind(t *testing.T) {
	dir := t.TempDir()
	s := &Sandbox{dir: dir, runDir: filepath.Join(dir, "run"), opts: Options{Log: os.Stderr}}
	require.NoError(t, os.MkdirAll(s.runDir, 0o755))
	orphan := sleeper(t, s.runDir, "gkewi-worker")
	// The previous owner is dead: its pid names no process running its binary.
	require.NoError(t, writeRecord(s.runDir, processRecord{Name: supervisorRecord, PID: 1 << 30, Exe: "/nonexistent"}))

	require.NoError(t, s.claimDir())
	assert.True(t, exited(orphan), "the orphaned process was stopped")
	records, err := readRecords(s.runDir)
	require.NoError(t, err)
	require.Len(t, records, 1)
	assert.Equal(t, supervisorRecord, records[0].Name)
	assert.Equal(t, os.Getpid(), records[0].PID)
}

func TestStartRefusesADirectoryALiveSandboxOwns(t *testing.T) {
	dir := t.TempDir()
	s := &Sandbox{dir: dir, runDir: filepath.Join(dir, "run"), opts: Options{Log: os.Stderr}}
	require.NoError(t, os.MkdirAll(s.runDir, 0o755))
	owner := sleeper(t, s.runDir, supervisorRecord)
	other := sleeper(t, s.runDir, "temporal")

	err := s.claimDir()
	require.ErrorIs(t, err, ErrAlreadyRunning)
	assert.Contains(t, err.Error(), "gkewi-sandbox down")
	assert.True(t, processRecord{PID: other.Process.Pid, Exe: other.Path}.alive(), "a live sandbox's processes are left alone")

	// down stops the owner and what it recorded.
	found, err := Down(dir, &strings.Builder{}, 5*time.Second)
	require.NoError(t, err)
	assert.True(t, found)
	assert.True(t, exited(owner))
	assert.True(t, exited(other))
}

func TestStartReportsMissingTools(t *testing.T) {
	dir := t.TempDir()
	_, err := Start(context.Background(), Options{
		RepoDir: filepath.Join("..", ".."), Dir: dir,
		TemporalCLI: filepath.Join(dir, "no-temporal"), WorkerBinary: filepath.Join(dir, "no-worker"),
	})
	require.ErrorIs(t, err, ErrToolMissing)
	assert.Contains(t, err.Error(), "no-temporal")
	assert.Contains(t, err.Error(), "make build")
}
