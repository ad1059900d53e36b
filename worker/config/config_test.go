package config

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func envOf(m map[string]string) Env {
	return func(k string) (string, bool) {
		v, ok := m[k]
		return v, ok
	}
}

func writeFile(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "worker.yaml")
	require.NoError(t, os.WriteFile(p, []byte(content), 0o600))
	return p
}

func TestPrecedence(t *testing.T) {
	file := writeFile(t, `
taskQueue: from-file
webhookTimeout: 20s
smtp:
  addr: file-relay:25
  from: file@example.com
  startTLS: true
gcpEndpoints:
  iam: http://file-iam
  sts: http://file-sts
concurrency:
  maxConcurrentActivityExecutionSize: 3
sweepInterval: 30m
`)
	cases := []struct {
		name  string
		args  []string
		env   map[string]string
		check func(t *testing.T, c Config)
	}{
		{
			name: "defaults",
			check: func(t *testing.T, c Config) {
				assert.Equal(t, "gkewi", c.TaskQueue)
				assert.Equal(t, 10*time.Second, c.WebhookTimeout.D())
				assert.Equal(t, 2*time.Second, c.OperationPollInterval.D())
				assert.Equal(t, 60*time.Second, c.StopTimeout.D())
				assert.Equal(t, 16, c.Concurrency.MaxConcurrentActivityExecutionSize)
				assert.Equal(t, time.Hour, c.SweepInterval.D())
				assert.Empty(t, c.Kubeconfig, "empty kubeconfig means in-cluster")
				assert.Empty(t, c.GCPEndpoints)
			},
		},
		{
			name: "file over defaults",
			args: []string{"--config", file},
			check: func(t *testing.T, c Config) {
				assert.Equal(t, "from-file", c.TaskQueue)
				assert.Equal(t, 20*time.Second, c.WebhookTimeout.D())
				assert.Equal(t, 2*time.Second, c.OperationPollInterval.D(), "unset in the file: default stays")
				assert.Equal(t, SMTP{Addr: "file-relay:25", From: "file@example.com", StartTLS: true}, c.SMTP)
				assert.Equal(t, 3, c.Concurrency.MaxConcurrentActivityExecutionSize)
				assert.Equal(t, 30*time.Minute, c.SweepInterval.D())
			},
		},
		{
			name: "file named by GKEWI_CONFIG",
			env:  map[string]string{"GKEWI_CONFIG": file},
			check: func(t *testing.T, c Config) {
				assert.Equal(t, "from-file", c.TaskQueue)
			},
		},
		{
			name: "env over file",
			args: []string{"--config", file},
			env: map[string]string{
				"GKEWI_TASK_QUEUE":                "from-env",
				"GKEWI_SMTP_STARTTLS":             "false",
				"GKEWI_GCP_ENDPOINTS":             "iam=http://env-iam, container=http://env-gke",
				"GKEWI_MAX_CONCURRENT_ACTIVITIES": "5",
				"GKEWI_WEBHOOK_TIMEOUT":           "", // empty counts as unset
			},
			check: func(t *testing.T, c Config) {
				assert.Equal(t, "from-env", c.TaskQueue)
				assert.False(t, c.SMTP.StartTLS)
				assert.Equal(t, "file-relay:25", c.SMTP.Addr)
				assert.Equal(t, 20*time.Second, c.WebhookTimeout.D())
				assert.Equal(t, 5, c.Concurrency.MaxConcurrentActivityExecutionSize)
				assert.Equal(t, map[string]string{
					"iam": "http://env-iam", "sts": "http://file-sts", "container": "http://env-gke",
				}, c.GCPEndpoints, "endpoints merge per API")
			},
		},
		{
			name: "flags over env over file",
			args: []string{
				"--config", file, "--task-queue", "from-flag", "--smtp-starttls",
				"--gcp-endpoint", "iam=http://flag-iam", "--gcp-endpoint", "bigquery=http://flag-bq",
				"--stop-timeout=2m", "--kubeconfig", "/etc/kube/config",
			},
			env: map[string]string{
				"GKEWI_TASK_QUEUE":    "from-env",
				"GKEWI_SMTP_STARTTLS": "false",
				"GKEWI_GCP_ENDPOINTS": "iam=http://env-iam",
				"GKEWI_STOP_TIMEOUT":  "5s",
				"GKEWI_KUBECONFIG":    "/env/kubeconfig",
			},
			check: func(t *testing.T, c Config) {
				assert.Equal(t, "from-flag", c.TaskQueue)
				assert.True(t, c.SMTP.StartTLS)
				assert.Equal(t, 2*time.Minute, c.StopTimeout.D())
				assert.Equal(t, "/etc/kube/config", c.Kubeconfig)
				assert.Equal(t, map[string]string{
					"iam": "http://flag-iam", "sts": "http://file-sts", "bigquery": "http://flag-bq",
				}, c.GCPEndpoints)
			},
		},
		{
			name: "--metrics=false over the environment and the file",
			args: []string{"--config", writeFile(t, "metrics: true\n"), "--metrics=false"},
			env:  map[string]string{"GKEWI_METRICS": "true"},
			check: func(t *testing.T, c Config) {
				require.NotNil(t, c.Metrics)
				assert.False(t, *c.Metrics)
				assert.False(t, c.MetricsEnabled())
			},
		},
		{
			name: "GKEWI_SWEEP_INTERVAL=0 turns the sweep schedule off",
			args: []string{"--config", file},
			env:  map[string]string{"GKEWI_SWEEP_INTERVAL": "0"},
			check: func(t *testing.T, c Config) {
				assert.Zero(t, c.SweepInterval)
			},
		},
		{
			name: "--sweep-interval over the environment",
			args: []string{"--sweep-interval", "2h"},
			env:  map[string]string{"GKEWI_SWEEP_INTERVAL": "0"},
			check: func(t *testing.T, c Config) {
				assert.Equal(t, 2*time.Hour, c.SweepInterval.D())
			},
		},
		{
			name: "--config beats GKEWI_CONFIG",
			args: []string{"--config", file},
			env:  map[string]string{"GKEWI_CONFIG": "/does/not/exist.yaml"},
			check: func(t *testing.T, c Config) {
				assert.Equal(t, "from-file", c.TaskQueue)
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			c, err := Load(tc.args, envOf(tc.env), &out)
			require.NoError(t, err, out.String())
			tc.check(t, c)
		})
	}
}

func TestLoadErrorsNameTheSetting(t *testing.T) {
	cases := []struct {
		name string
		args []string
		env  map[string]string
		file string
		want string
	}{
		{name: "bad env duration", env: map[string]string{"GKEWI_WEBHOOK_TIMEOUT": "soon"}, want: `environment GKEWI_WEBHOOK_TIMEOUT="soon"`},
		{name: "bad flag number", args: []string{"--max-concurrent-activities", "many"}, want: `flag --max-concurrent-activities="many"`},
		{name: "unknown API", args: []string{"--gcp-endpoint", "storage=http://x"}, want: `unknown API "storage"`},
		{name: "endpoint not a URL", env: map[string]string{"GKEWI_GCP_ENDPOINTS": "iam=localhost:1"}, want: `gcpEndpoints.iam "localhost:1": want an http(s) URL`},
		{name: "username without password file", args: []string{"--smtp-addr", "r:25", "--smtp-from", "a@b.example", "--smtp-username", "u"}, want: "smtp.passwordFile (--smtp-password-file, GKEWI_SMTP_PASSWORD_FILE) is required"},
		{name: "relay without sender", args: []string{"--smtp-addr", "r:25"}, want: "smtp.from (--smtp-from, GKEWI_SMTP_FROM)"},
		{name: "unknown file key", file: "taskQueu: typo\n", want: `unknown field "taskQueu"`},
		{name: "unknown nested file key", file: "smtp:\n  adr: r:25\n", want: `unknown field "smtp.adr"`},
		{name: "file key in the wrong case", file: "TaskQueue: q\n", want: `unknown field "TaskQueue"`},
		{name: "bad flag bool", args: []string{"--smtp-starttls=maybe"}, want: `flag --smtp-starttls="maybe": want true or false`},
		{name: "bad flag endpoint", args: []string{"--gcp-endpoint", "sts=http://s", "--gcp-endpoint", "iam"}, want: `flag --gcp-endpoint="sts=http://s,iam": "iam": want API=URL`},
		{name: "bad file duration", file: "stopTimeout: 30\n", want: "want a duration string"},
		{name: "stray argument", args: []string{"extra"}, want: "unexpected arguments: extra"},
		{name: "sweep too often", args: []string{"--sweep-interval", "10s"}, want: "sweepInterval (--sweep-interval, GKEWI_SWEEP_INTERVAL) 10s: want 0 (no sweep schedule) or at least 1m"},
		{name: "negative sweep interval", file: "sweepInterval: -1h\n", want: "sweepInterval (--sweep-interval, GKEWI_SWEEP_INTERVAL) -1h0m0s: want 0"},
		{name: "log level", env: map[string]string{"GKEWI_LOG_LEVEL": "loud"}, want: `logLevel (--log-level): "loud"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			args := tc.args
			if tc.file != "" {
				args = append([]string{"--config", writeFile(t, tc.file)}, args...)
			}
			_, err := Load(args, envOf(tc.env), &bytes.Buffer{})
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}

func TestHelpListsEnvironmentVariables(t *testing.T) {
	var out bytes.Buffer
	_, err := Load([]string{"-h"}, envOf(nil), &out)
	assert.True(t, errors.Is(err, ErrHelp))
	for _, want := range []string{"-smtp-password-file", "GKEWI_SMTP_PASSWORD_FILE", "GKEWI_GCP_ENDPOINTS", "TEMPORAL_ADDRESS", "-config", "-sweep-interval", "GKEWI_SWEEP_INTERVAL"} {
		assert.Contains(t, out.String(), want)
	}
}
