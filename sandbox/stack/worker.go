package stack

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	enumspb "go.temporal.io/api/enums/v1"

	"github.com/gkewi/gkewi/workflows"
)

// workerEnv is the worker's environment: the operator-facing settings only, as a
// deployment would set them. The Google clients find their credentials through
// plain Application Default Credentials, served by the emulator's metadata server.
func (s *Sandbox) workerEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch {
		case strings.HasPrefix(k, "TEMPORAL_"), strings.HasPrefix(k, "GKEWI_"),
			k == "GOOGLE_APPLICATION_CREDENTIALS", k == "GCE_METADATA_HOST", k == "GCE_METADATA_IP", k == "KUBECONFIG":
			continue
		}
		env = append(env, kv)
	}
	var endpoints []string
	for api, url := range s.GCPEndpoints() {
		endpoints = append(endpoints, api+"="+url)
	}
	sort.Strings(endpoints)
	env = append(env,
		"TEMPORAL_ADDRESS="+s.TemporalAddress(),
		"TEMPORAL_NAMESPACE="+temporalNamespace,
		"GCE_METADATA_HOST="+strings.TrimPrefix(s.emuURL, "http://"),
		"GKEWI_GCP_ENDPOINTS="+strings.Join(endpoints, ","),
		"GKEWI_KUBECONFIG="+s.workerKube,
		"GKEWI_SMTP_ADDR="+s.smtp.Addr(),
		"GKEWI_SMTP_FROM=gkewi@sandbox.local",
		"GKEWI_HELM_ARTIFACTS_DIR="+filepath.Join(s.dir, "helm-artifacts"),
		"GKEWI_HELM_CACHE_DIR="+filepath.Join(s.dir, "helm-cache"),
		"GKEWI_HELM_TIMEOUT=3m",
		"GKEWI_OPERATION_POLL_INTERVAL=250ms",
		"GKEWI_STOP_TIMEOUT=5s",
		"GKEWI_HTTP_ADDR=127.0.0.1:"+strconv.Itoa(s.opts.Ports.WorkerHTTP),
		// Approvers prove who they are with ID tokens the emulator issues.
		"GKEWI_APPROVAL_ADDR=127.0.0.1:"+strconv.Itoa(s.opts.Ports.Approval),
		"GKEWI_APPROVAL_SECRET_FILE="+s.approvalSecretFile,
		"GKEWI_APPROVAL_ISSUER="+s.emuURL,
		"GKEWI_APPROVAL_PUBLIC_URL="+s.ApprovalURL(),
		// The operator's rules of who approves which grant.
		"GKEWI_POLICY_FILE="+s.policyFile,
		"GKEWI_POLICY_RELOAD_INTERVAL=1s",
	)
	if ui := s.TemporalUIURL(); ui != "" {
		env = append(env, "GKEWI_TEMPORAL_UI_URL="+ui)
	}
	return append(env, s.opts.WorkerEnv...)
}

// StartWorker starts the worker process and waits until it polls the task queue.
func (s *Sandbox) StartWorker(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.worker != nil && s.worker.running() {
		return fmt.Errorf("the worker already runs (pid %d)", s.worker.pid())
	}
	w := &child{
		name: "gkewi-worker", path: s.opts.WorkerBinary, env: s.workerEnv(), dir: s.opts.RepoDir,
		logPath: filepath.Join(s.logDir, "worker.log"), runDir: s.runDir,
	}
	if err := w.start(); err != nil {
		return err
	}
	s.worker = w
	begin := time.Now()
	suffix := "/" + strconv.Itoa(w.pid())
	err := s.waitFor(ctx, "the gkewi worker to poll task queue "+workflows.TaskQueue, time.Minute, w, func(ctx context.Context) error {
		for _, tq := range []enumspb.TaskQueueType{enumspb.TASK_QUEUE_TYPE_WORKFLOW, enumspb.TASK_QUEUE_TYPE_ACTIVITY} {
			resp, err := s.temporalC.DescribeTaskQueue(ctx, workflows.TaskQueue, tq)
			if err != nil {
				return err
			}
			polling := false
			for _, p := range resp.Pollers {
				polling = polling || strings.HasSuffix(p.Identity, suffix)
			}
			if !polling {
				return fmt.Errorf("no %s poller from pid %d yet", tq, w.pid())
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	s.progress("gkewi worker (pid %d) polling %q after %s; log %s", w.pid(), workflows.TaskQueue,
		time.Since(begin).Round(100*time.Millisecond), w.logPath)
	return nil
}

// KillWorker ends the worker process with SIGKILL, as a crash or an evicted pod
// would: in-flight activities are lost until their timeouts.
func (s *Sandbox) KillWorker() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.worker == nil || !s.worker.running() {
		return fmt.Errorf("the worker is not running")
	}
	pid := s.worker.pid()
	if err := s.worker.kill(); err != nil {
		return err
	}
	s.progress("gkewi worker (pid %d) killed", pid)
	return nil
}

// StopWorker stops the worker gracefully (SIGTERM).
func (s *Sandbox) StopWorker() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.worker == nil {
		return nil
	}
	return s.worker.stop(15 * time.Second)
}

// RestartWorker kills the worker (SIGKILL) and starts a new one.
func (s *Sandbox) RestartWorker(ctx context.Context) error {
	if err := s.KillWorker(); err != nil {
		return err
	}
	return s.StartWorker(ctx)
}

// WorkerPID is the worker's process id, 0 when it is not running.
func (s *Sandbox) WorkerPID() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.worker == nil || !s.worker.running() {
		return 0
	}
	return s.worker.pid()
}

// ApprovalURL is the base URL of the worker's approval endpoint.
func (s *Sandbox) ApprovalURL() string {
	return "http://127.0.0.1:" + strconv.Itoa(s.opts.Ports.Approval)
}

// IDTokenIssuer is the issuer of the ID tokens the worker accepts from approvers.
func (s *Sandbox) IDTokenIssuer() string { return s.emuURL }

// copyPolicy puts the grant policy where the worker reads it, anew at each
// start: the sandbox runs under the policy of the repository.
func (s *Sandbox) copyPolicy() error {
	src := s.opts.PolicyFile
	if src == "" {
		src = filepath.Join(s.opts.RepoDir, "deploy", "sandbox", "policy.yaml")
	}
	b, err := os.ReadFile(src)
	if err != nil {
		return fmt.Errorf("grant policy: %w", err)
	}
	s.policyFile = filepath.Join(s.dir, "policy.yaml")
	return os.WriteFile(s.policyFile, b, 0o644)
}

// PolicyPath is the grant policy file the worker reads and watches.
func (s *Sandbox) PolicyPath() string { return s.policyFile }

// writeApprovalSecret makes the key of the worker's approval attestations,
// once per sandbox: a restarted worker must check what the last one attested.
func (s *Sandbox) writeApprovalSecret() error {
	s.approvalSecretFile = filepath.Join(s.dir, "approval-secret")
	if _, err := os.Stat(s.approvalSecretFile); err == nil {
		return nil
	}
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return err
	}
	return os.WriteFile(s.approvalSecretFile, []byte(hex.EncodeToString(key)+"\n"), 0o600)
}

// WorkerHTTPURL is the base URL of the worker's /metrics, /healthz and /readyz.
func (s *Sandbox) WorkerHTTPURL() string {
	return "http://127.0.0.1:" + strconv.Itoa(s.opts.Ports.WorkerHTTP)
}

// WorkerLogPath is the worker's log file (appended across restarts).
func (s *Sandbox) WorkerLogPath() string { return filepath.Join(s.logDir, "worker.log") }
