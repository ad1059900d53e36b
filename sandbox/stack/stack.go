// Package stack starts and stops the whole local sandbox of gkewi: the Temporal
// dev server, a real Kubernetes control plane standing in for the GKE cluster,
// the Google Cloud emulator (trusting that cluster's service account issuer), an
// SMTP sink, and the gkewi worker as a separate process configured the way an
// operator would configure it (TEMPORAL_ADDRESS, GCE_METADATA_HOST for plain
// Application Default Credentials, GKEWI_* settings, a least-privilege kubeconfig).
//
// Everything lives under one directory (".sandbox" by default): state, logs, the
// kubeconfigs and a record of every process started, so a later start cleans up
// after a sandbox that died without stopping, and Stop (or `gkewi-sandbox down`)
// stops exactly what was started.
package stack

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"go.temporal.io/sdk/client"

	"github.com/gkewi/gkewi/internal/text"
	"github.com/gkewi/gkewi/sandbox/gcpemu"
	"github.com/gkewi/gkewi/sandbox/kubecluster"
	"github.com/gkewi/gkewi/sandbox/smtpsink"
	"github.com/gkewi/gkewi/sandbox/toolpath"
)

// TemporalCLIVersion is the Temporal CLI the Makefile builds.
const TemporalCLIVersion = toolpath.TemporalCLIVersion

// ErrToolMissing is wrapped by Start's error when a binary is absent.
var ErrToolMissing = kubecluster.ErrToolMissing

// ErrAlreadyRunning is wrapped by Start's error when another live process runs a
// sandbox in the same directory.
var ErrAlreadyRunning = errors.New("a sandbox is already running in this directory")

// Ports are the local TCP ports of the sandbox; 0 picks a free one.
type Ports struct {
	Temporal   int
	TemporalUI int
	Emulator   int
	SMTP       int
	// KubeAPIServer is the local kube-apiserver's port.
	KubeAPIServer int
	// WorkerHTTP serves the worker's /metrics, /healthz and /readyz.
	WorkerHTTP int
	// Approval is the worker's approval endpoint, where approvers' ID tokens
	// (issued by the emulator) prove who decided.
	Approval int
}

// DefaultPorts are the fixed ports of `gkewi-sandbox`, the ones the README names.
func DefaultPorts() Ports {
	return Ports{Temporal: 7233, TemporalUI: 8233, Emulator: 8085, SMTP: 2525, KubeAPIServer: 6443, WorkerHTTP: 9090, Approval: 8443}
}

// Options configure a sandbox.
type Options struct {
	// RepoDir is the repository root: the worker runs there, and the default
	// paths below are relative to it. Default: the current directory.
	RepoDir string
	// Dir holds everything the sandbox writes; default RepoDir/.sandbox.
	Dir string
	// ConfigFile is the sandbox configuration; default
	// RepoDir/deploy/sandbox/sandbox.yaml. Config, when set, is used instead.
	ConfigFile string
	Config     *Config
	Ports      Ports
	// Headless runs Temporal without its Web UI.
	Headless bool
	// WorkerBinary defaults to RepoDir/bin/gkewi-worker.
	WorkerBinary string
	// WorkerEnv is added to the worker's environment (e.g. GKEWI_LOG_LEVEL=debug).
	WorkerEnv []string
	// PolicyFile is the worker's grant policy; default
	// RepoDir/deploy/sandbox/policy.yaml. The worker reads a copy in Dir,
	// which PolicyPath names (tests rewrite it to change the policy).
	PolicyFile string
	// WorkerAsAdmin runs the worker with the cluster-admin kubeconfig instead of
	// the least-privilege RBAC of deploy/rbac/gkewi-worker.yaml.
	WorkerAsAdmin bool
	// TemporalCLI and Kubectl locate the binaries; defaults from GKEWI_TEMPORAL
	// and GKEWI_KUBE_DIR, else the cache paths `make tools` builds into.
	TemporalCLI string
	Kubectl     string
	KubeTools   kubecluster.Tools
	// Log receives progress lines; nil discards them.
	Log io.Writer
}

// Sandbox is a running sandbox.
type Sandbox struct {
	opts    Options
	cfg     Config
	cluster ClusterSpec
	dir     string
	runDir  string
	logDir  string

	kube       *kubecluster.Cluster
	kubeClient kubernetes.Interface
	workerKube string
	emu        *gcpemu.Emulator
	emuServer  *http.Server
	emuURL     string
	emuLog     *os.File
	// approvalSecretFile keys the worker's approval attestations.
	approvalSecretFile string
	// policyFile is the copy of the grant policy the worker reads.
	policyFile   string
	smtp         *smtpsink.Sink
	temporal     *child
	temporalArgs []string
	temporalC    client.Client

	mu     sync.Mutex
	worker *child

	startedIn time.Duration
	stopOnce  sync.Once
	stopErr   error
}

// Start launches the sandbox and returns once the worker polls its task queue.
// It starts from a clean state: a previous sandbox's state in Dir is removed, and
// processes a dead previous sandbox left behind are stopped. A port in use is
// reported with the process that holds it. On error, whatever was started is
// stopped again.
func Start(ctx context.Context, opts Options) (_ *Sandbox, err error) {
	begin := time.Now()
	opts, err = opts.withDefaults()
	if err != nil {
		return nil, err
	}
	s := &Sandbox{opts: opts, dir: opts.Dir, runDir: filepath.Join(opts.Dir, "run"), logDir: filepath.Join(opts.Dir, "logs")}
	if opts.Config != nil {
		s.cfg = *opts.Config
	} else if s.cfg, err = LoadConfig(opts.ConfigFile); err != nil {
		return nil, err
	}
	if s.cluster, err = s.cfg.Cluster(); err != nil {
		return nil, err
	}
	if err := s.checkTools(); err != nil {
		return nil, err
	}
	for _, d := range []string{s.dir, s.runDir, s.logDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	if err := s.claimDir(); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			if stopErr := s.Stop(); stopErr != nil {
				err = errors.Join(err, stopErr)
			}
		}
	}()
	if err := s.reservePorts(); err != nil {
		return nil, err
	}
	if err := s.resetState(); err != nil {
		return nil, err
	}

	if s.smtp, err = smtpsink.Start("127.0.0.1:"+strconv.Itoa(s.opts.Ports.SMTP), smtpsink.Options{
		Hostname: "sandbox.local", Dir: filepath.Join(s.dir, "mail"),
	}); err != nil {
		return nil, err
	}
	s.progress("SMTP sink on %s", s.smtp.Addr())

	// Temporal starts while the control plane does: both take seconds.
	temporalDone := make(chan error, 1)
	go func() { temporalDone <- s.startTemporal(ctx) }()
	kubeErr := s.startKube(ctx)
	temporalErr := <-temporalDone
	if err := errors.Join(kubeErr, temporalErr); err != nil {
		return nil, err
	}
	if err := s.startEmulator(); err != nil {
		return nil, err
	}
	if err := s.setUpWorkerIdentity(ctx); err != nil {
		return nil, err
	}
	if err := s.copyPolicy(); err != nil {
		return nil, err
	}
	if err := s.writeApprovalSecret(); err != nil {
		return nil, fmt.Errorf("the approval secret: %w", err)
	}
	if err := s.StartWorker(ctx); err != nil {
		return nil, err
	}
	if err := s.writeEnvFile(); err != nil {
		return nil, err
	}
	s.startedIn = time.Since(begin)
	s.progress("ready in %s", s.startedIn.Round(100*time.Millisecond))
	return s, nil
}

func (o Options) withDefaults() (Options, error) {
	var err error
	if o.RepoDir == "" {
		o.RepoDir = "."
	}
	if o.RepoDir, err = filepath.Abs(o.RepoDir); err != nil {
		return o, err
	}
	abs := func(p *string, def string) {
		if *p == "" {
			*p = def
		}
		if !filepath.IsAbs(*p) {
			*p = filepath.Join(o.RepoDir, *p)
		}
	}
	abs(&o.Dir, ".sandbox")
	abs(&o.ConfigFile, filepath.Join("deploy", "sandbox", "sandbox.yaml"))
	abs(&o.WorkerBinary, filepath.Join("bin", "gkewi-worker"))
	if o.TemporalCLI == "" {
		o.TemporalCLI = DefaultTemporalCLI()
	}
	if o.Kubectl == "" {
		o.Kubectl = DefaultKubectl()
	}
	if o.Log == nil {
		o.Log = io.Discard
	}
	return o, nil
}

// ToolsDir is GKEWI_TOOLS_DIR, or the per-user cache directory `make tools` uses.
func ToolsDir() string { return toolpath.Dir() }

// DefaultTemporalCLI is GKEWI_TEMPORAL or the Temporal CLI `make tools` builds.
func DefaultTemporalCLI() string { return toolpath.TemporalCLI() }

// DefaultKubectl is the kubectl `make tools` builds (in GKEWI_KUBE_DIR).
func DefaultKubectl() string {
	dir := os.Getenv("GKEWI_KUBE_DIR")
	if dir == "" {
		dir = filepath.Join(ToolsDir(), "kubernetes-"+kubecluster.KubernetesVersion)
	}
	return filepath.Join(dir, "kubectl")
}

// CheckTools reports, in one error wrapping ErrToolMissing, every binary of
// `make tools` the sandbox needs that is missing (empty paths: the defaults).
func CheckTools(temporalCLI, kubectl string, kube kubecluster.Tools) error {
	if temporalCLI == "" {
		temporalCLI = DefaultTemporalCLI()
	}
	if kubectl == "" {
		kubectl = DefaultKubectl()
	}
	return checkBinaries(kube, []binary{
		{"Temporal CLI", temporalCLI, "make tools"},
		{"kubectl", kubectl, "make tools"},
	})
}

type binary struct{ name, path, fix string }

// checkTools reports every missing binary at once.
func (s *Sandbox) checkTools() error {
	return checkBinaries(s.opts.KubeTools, []binary{
		{"Temporal CLI", s.opts.TemporalCLI, "make tools"},
		{"kubectl", s.opts.Kubectl, "make tools"},
		{"gkewi worker", s.opts.WorkerBinary, "make build"},
	})
}

func checkBinaries(kube kubecluster.Tools, binaries []binary) error {
	var missing []string
	for _, t := range binaries {
		if st, err := os.Stat(t.path); err != nil || st.IsDir() {
			missing = append(missing, fmt.Sprintf("%s not found at %s (`%s`)", t.name, t.path, t.fix))
		}
	}
	err := kube.Check()
	if len(missing) == 0 {
		return err
	}
	if err != nil {
		missing = append(missing, strings.TrimPrefix(err.Error(), ErrToolMissing.Error()+": "))
	}
	return fmt.Errorf("%w: %s", ErrToolMissing, strings.Join(missing, "; "))
}

const supervisorRecord = "sandbox"

// claimDir makes this process the owner of the sandbox directory. A live owner
// is an error; processes a dead owner left behind are stopped.
func (s *Sandbox) claimDir() error {
	records, err := readRecords(s.runDir)
	if err != nil {
		return err
	}
	for _, r := range records {
		if r.Name == supervisorRecord && r.PID != os.Getpid() && r.alive() {
			return fmt.Errorf("%w: pid %d (%s) owns %s; stop it with `bin/gkewi-sandbox down` (or Ctrl-C where it runs)",
				ErrAlreadyRunning, r.PID, commandLine(r.PID), s.dir)
		}
	}
	for _, r := range records {
		if r.Name != supervisorRecord && r.alive() {
			s.progress("stopping %s (pid %d) left behind by a previous sandbox", r.Name, r.PID)
			r.terminate(5 * time.Second)
		}
		removeRecord(s.runDir, r.Name)
	}
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	return writeRecord(s.runDir, processRecord{Name: supervisorRecord, PID: os.Getpid(), Exe: exe})
}

func (s *Sandbox) reservePorts() error {
	p := &s.opts.Ports
	reqs := []portRequest{
		{&p.Temporal, "the Temporal frontend (--temporal-port)"},
		{&p.Emulator, "the Google Cloud emulator (--emulator-port)"},
		{&p.SMTP, "the SMTP sink (--smtp-port)"},
		{&p.KubeAPIServer, "the Kubernetes API server (--kube-port)"},
		{&p.WorkerHTTP, "the worker's metrics and probes (--worker-http-port)"},
		{&p.Approval, "the worker's approval endpoint (--approval-port)"},
	}
	if !s.opts.Headless {
		reqs = append(reqs, portRequest{&p.TemporalUI, "the Temporal Web UI (--temporal-ui-port)"})
	}
	return reservePorts(reqs)
}

// resetState removes what a previous sandbox left in the directory.
func (s *Sandbox) resetState() error {
	matches, _ := filepath.Glob(filepath.Join(s.dir, "temporal.db*"))
	for _, d := range append(matches, filepath.Join(s.dir, "kube"), filepath.Join(s.dir, "mail"),
		filepath.Join(s.dir, "helm-artifacts"), filepath.Join(s.dir, "worker.kubeconfig"),
		filepath.Join(s.dir, "env.sh"), filepath.Join(s.dir, readyFile)) {
		if err := os.RemoveAll(d); err != nil {
			return fmt.Errorf("removing the previous sandbox's %s: %w", d, err)
		}
	}
	for _, f := range []string{"temporal.log", "worker.log", "emulator.log"} {
		_ = os.Remove(filepath.Join(s.logDir, f))
	}
	return nil
}

func (s *Sandbox) startKube(ctx context.Context) error {
	begin := time.Now()
	c, err := kubecluster.Start(ctx, kubecluster.Options{
		Dir:          filepath.Join(s.dir, "kube"),
		Project:      s.cluster.Project,
		Location:     s.cluster.Location,
		Cluster:      s.cluster.Name,
		NodePools:    s.cluster.NodePools,
		NodesPerPool: s.cfg.NodesPerPool,
		Tools:        s.opts.KubeTools,
		Ports:        kubecluster.Ports{APIServer: s.opts.Ports.KubeAPIServer},
	})
	if err != nil {
		return err
	}
	s.kube, s.kubeClient = c, c.Client()
	for name, pid := range c.PIDs() {
		exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
		if err == nil {
			_ = writeRecord(s.runDir, processRecord{Name: "kube-" + name, PID: pid, Exe: exe})
		}
	}
	// Helm checks charts' kubeVersion against the server's version: an apiserver
	// built without the version stamp (v0.0.0) fails every such chart later, so
	// say so now.
	sv, err := c.Client().Discovery().ServerVersion()
	if err != nil {
		return fmt.Errorf("reading the Kubernetes version: %w", err)
	}
	if strings.HasPrefix(sv.GitVersion, "v0.0.0") {
		return fmt.Errorf("the kube-apiserver reports version %q: it was built without the version stamp "+
			"(go build -ldflags '-X k8s.io/component-base/version.gitVersion=%s ...'), and Helm refuses charts with a kubeVersion "+
			"constraint against it; rebuild the Kubernetes binaries with the stamp", sv.GitVersion, kubecluster.KubernetesVersion)
	}
	s.progress("Kubernetes %s control plane ready in %s (%s, issuer %s)", sv.GitVersion, time.Since(begin).Round(100*time.Millisecond), c.APIServerURL(), c.Issuer())
	return nil
}

func (s *Sandbox) startEmulator() error {
	logFile, err := os.OpenFile(filepath.Join(s.logDir, "emulator.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	s.emuLog = logFile
	logger := log.New(logFile, "", log.LstdFlags|log.Lmicroseconds)
	kube := s.kube.RESTConfig()
	primary := kubecluster.IssuerURL(s.cluster.Project, s.cluster.Location, s.cluster.Name)
	cfg := s.cfg.emulatorConfig(func(c gcpemu.ClusterConfig, isPrimary bool) gcpemu.ClusterConfig {
		c.Kube = kube
		if !isPrimary {
			// The primary's control plane issues these clusters' tokens, and
			// its nodes are not theirs.
			c.TokenIssuer = primary
			c.Nodes = noNodes{}
		}
		return c
	}, logger.Printf)
	ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(s.opts.Ports.Emulator))
	if err != nil {
		return fmt.Errorf("the Google Cloud emulator: %w", err)
	}
	s.emuURL = "http://" + ln.Addr().String()
	// The emulator's ID tokens name it as their issuer, so a verifier finds
	// its discovery document and keys there.
	cfg.IDTokenIssuer = s.emuURL
	if s.emu, err = gcpemu.New(cfg); err != nil {
		_ = ln.Close()
		return err
	}
	s.emuServer = &http.Server{Handler: s.emu, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = s.emuServer.Serve(ln) }()
	s.progress("Google Cloud emulator on %s (operator %s)", s.emuURL, s.cfg.Operator)
	return nil
}

// writeEnvFile writes the environment for running commands against the sandbox.
func (s *Sandbox) writeEnvFile() error {
	var b strings.Builder
	b.WriteString("# Source this file to run temporal and kubectl against the gkewi sandbox.\n")
	for _, kv := range s.Env() {
		k, v, _ := strings.Cut(kv, "=")
		if k == "PATH" {
			fmt.Fprintf(&b, "export PATH=%s:\"$PATH\"\n", text.ShellWord(s.toolDirs()))
			continue
		}
		fmt.Fprintf(&b, "export %s=%s\n", k, text.ShellWord(v))
	}
	return os.WriteFile(filepath.Join(s.dir, "env.sh"), []byte(b.String()), 0o644)
}

// Env is the environment for running temporal, kubectl and the gkewi starter
// against the sandbox, as KEY=VALUE pairs.
func (s *Sandbox) Env() []string {
	path := s.toolDirs()
	if p := os.Getenv("PATH"); p != "" {
		path += string(os.PathListSeparator) + p
	}
	return []string{
		"TEMPORAL_ADDRESS=" + s.TemporalAddress(),
		"TEMPORAL_NAMESPACE=default",
		"KUBECONFIG=" + s.KubeconfigPath(),
		"GKEWI_SANDBOX_EMULATOR=" + s.emuURL,
		"PATH=" + path,
	}
}

// toolDirs are the directories of the temporal and kubectl binaries, for PATH.
func (s *Sandbox) toolDirs() string {
	return filepath.Dir(s.opts.TemporalCLI) + string(os.PathListSeparator) + filepath.Dir(s.opts.Kubectl)
}

func (s *Sandbox) progress(format string, args ...any) {
	fmt.Fprintf(s.opts.Log, "sandbox: "+format+"\n", args...)
}

// Stop stops everything Start started, in reverse order. It is safe to call twice.
func (s *Sandbox) Stop() error {
	s.stopOnce.Do(func() {
		var errs []error
		s.mu.Lock()
		if s.worker != nil {
			if err := s.worker.stop(10 * time.Second); err != nil {
				errs = append(errs, fmt.Errorf("stopping the worker: %w", err))
			}
		}
		s.mu.Unlock()
		if s.temporalC != nil {
			s.temporalC.Close()
		}
		if s.temporal != nil {
			if err := s.temporal.stop(10 * time.Second); err != nil {
				errs = append(errs, fmt.Errorf("stopping Temporal: %w", err))
			}
		}
		if s.emuServer != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_ = s.emuServer.Shutdown(ctx)
			cancel()
		}
		if s.emu != nil {
			if err := s.emu.Close(); err != nil {
				errs = append(errs, fmt.Errorf("stopping the emulator: %w", err))
			}
		}
		if s.emuLog != nil {
			if err := s.emuLog.Close(); err != nil {
				errs = append(errs, fmt.Errorf("closing the emulator log: %w", err))
			}
		}
		if s.kube != nil {
			if err := s.kube.Stop(); err != nil {
				errs = append(errs, fmt.Errorf("stopping Kubernetes: %w", err))
			}
			for name := range s.kube.PIDs() {
				removeRecord(s.runDir, "kube-"+name)
			}
		}
		if s.smtp != nil {
			if err := s.smtp.Close(); err != nil {
				errs = append(errs, fmt.Errorf("stopping the SMTP sink: %w", err))
			}
		}
		_ = os.Remove(filepath.Join(s.dir, readyFile))
		removeRecord(s.runDir, supervisorRecord)
		s.stopErr = errors.Join(errs...)
		if s.stopErr == nil {
			s.progress("stopped")
		}
	})
	return s.stopErr
}

// Dir is the sandbox directory.
func (s *Sandbox) Dir() string { return s.dir }

// RepoDir is the repository root the worker runs in.
func (s *Sandbox) RepoDir() string { return s.opts.RepoDir }

// Config is the sandbox configuration in use.
func (s *Sandbox) Config() Config { return s.cfg }

// Cluster names the primary emulated cluster.
func (s *Sandbox) Cluster() ClusterSpec { return s.cluster }

// Clusters names every emulated cluster, the primary first; the local control
// plane plays them all.
func (s *Sandbox) Clusters() []ClusterSpec {
	all, _ := s.cfg.Clusters()
	return all
}

// noNodes labels nothing: a cluster without nodes of its own.
type noNodes struct{}

func (noNodes) LabelNodePool(context.Context, string, map[string]*string) error { return nil }

// StartedIn is how long Start took.
func (s *Sandbox) StartedIn() time.Duration { return s.startedIn }

// TemporalAddress is the Temporal frontend, host:port.
func (s *Sandbox) TemporalAddress() string {
	return "127.0.0.1:" + strconv.Itoa(s.opts.Ports.Temporal)
}

// TemporalUIURL is the Web UI, empty when headless.
func (s *Sandbox) TemporalUIURL() string {
	if s.opts.Headless {
		return ""
	}
	return "http://localhost:" + strconv.Itoa(s.opts.Ports.TemporalUI)
}

// TemporalClient is a client of the sandbox's Temporal (namespace default).
func (s *Sandbox) TemporalClient() client.Client { return s.temporalC }

// TemporalCLIPath is the temporal binary.
func (s *Sandbox) TemporalCLIPath() string { return s.opts.TemporalCLI }

// KubectlPath is the kubectl binary.
func (s *Sandbox) KubectlPath() string { return s.opts.Kubectl }

// Kube is the local control plane.
func (s *Sandbox) Kube() *kubecluster.Cluster { return s.kube }

// RESTConfig is a cluster-admin client configuration.
func (s *Sandbox) RESTConfig() *rest.Config { return s.kube.RESTConfig() }

// KubeClient is a cluster-admin clientset.
func (s *Sandbox) KubeClient() kubernetes.Interface { return s.kubeClient }

// KubeconfigPath is the cluster-admin kubeconfig, for kubectl.
func (s *Sandbox) KubeconfigPath() string { return s.kube.KubeconfigPath() }

// WorkerKubeconfigPath is the worker's kubeconfig.
func (s *Sandbox) WorkerKubeconfigPath() string { return s.workerKube }

// EmulatorURL is the base URL of the Google Cloud emulator.
func (s *Sandbox) EmulatorURL() string { return s.emuURL }

// Emulator is the in-process Google Cloud emulator: its request log and state.
func (s *Sandbox) Emulator() *gcpemu.Emulator { return s.emu }

// GCPEndpoints are the emulator's API endpoints by API name.
func (s *Sandbox) GCPEndpoints() map[string]string { return gcpemu.Endpoints(s.emuURL) }

// SMTPAddr is the SMTP sink's address.
func (s *Sandbox) SMTPAddr() string { return s.smtp.Addr() }

// Mail is every message the SMTP sink received, oldest first.
func (s *Sandbox) Mail() []smtpsink.Message { return s.smtp.Messages() }

// LogDir holds the logs of the worker, Temporal and the emulator.
func (s *Sandbox) LogDir() string { return s.logDir }
