package starter

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gkewi/gkewi/contract"
	"github.com/gkewi/gkewi/worker"
	"github.com/gkewi/gkewi/workflows"
)

// mapEnv is an envconfig.EnvLookup over a fixed map.
type mapEnv map[string]string

func (m mapEnv) Environ() []string {
	var out []string
	for k, v := range m {
		out = append(out, k+"="+v)
	}
	return out
}

func (m mapEnv) LookupEnv(k string) (string, bool) {
	v, ok := m[k]
	return v, ok
}

type result struct {
	code           int
	stdout, stderr string
}

// run runs one command line with no Temporal configured beyond env.
func run(t *testing.T, env mapEnv, stdin string, args ...string) result {
	t.Helper()
	if env == nil {
		env = mapEnv{}
	}
	if _, ok := env["TEMPORAL_CONFIG_FILE"]; !ok {
		env["TEMPORAL_CONFIG_FILE"] = filepath.Join(t.TempDir(), "absent.toml")
	}
	var out, errOut bytes.Buffer
	app := &App{
		Stdout:       &out,
		Stderr:       &errOut,
		Stdin:        strings.NewReader(stdin),
		Env:          env,
		Now:          func() time.Time { return time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC) },
		PollInterval: 100 * time.Millisecond,
	}
	code := app.Run(context.Background(), args)
	return result{code: code, stdout: out.String(), stderr: errOut.String()}
}

// The JSON the starter sends for testdata/onboard.yaml: defaults applied, field
// order as in workflows.OnboardRequest.
const onboardInput = `{"project":"acme-prod","location":"europe-west1","cluster":"gke-main","gsa":{"accountId":"carto-backend"},"namespace":"carto","helm":{"release":"carto","chart":"carto","repoURL":"https://helm.carto.com","values":{"appConfigValues":{"selfHostedDomain":"carto.example.com"}}},"support":{"approvers":["alice@example.com"],"notify":["support@example.com"],"reminderInterval":"24h","approvalTimeout":"168h","proof":"id-token"}}`

const onboardID = "gkewi-onboard/acme-prod/europe-west1/gke-main/carto/carto"

func TestOnboardDryRunPrintsIDAndEquivalentCommand(t *testing.T) {
	want := "Workflow ID: " + onboardID + "\n" +
		"Equivalent temporal command:\n" +
		"  temporal workflow start --type Onboard --task-queue gkewi --workflow-id '" + onboardID + "' --input '" + onboardInput + "'\n"
	for _, file := range []string{"testdata/onboard.yaml", "testdata/onboard.json"} {
		t.Run(file, func(t *testing.T) {
			r := run(t, nil, "", "onboard", "-f", file, "--dry-run")
			require.Equal(t, ExitOK, r.code, r.stderr)
			assert.Equal(t, want, r.stdout)
		})
	}
	t.Run("stdin", func(t *testing.T) {
		b, err := os.ReadFile("testdata/onboard.yaml")
		require.NoError(t, err)
		r := run(t, nil, string(b), "onboard", "--file", "-", "--dry-run")
		require.Equal(t, ExitOK, r.code, r.stderr)
		assert.Equal(t, want, r.stdout)
	})
	t.Run("connection flags carry over", func(t *testing.T) {
		r := run(t, nil, "", "onboard", "-f", "testdata/onboard.yaml", "--dry-run", "--namespace", "team-a", "--address", "temporal.internal:7233")
		require.Equal(t, ExitOK, r.code, r.stderr)
		assert.Contains(t, r.stdout, "  temporal workflow start --address 'temporal.internal:7233' --namespace 'team-a' --type Onboard --task-queue gkewi --workflow-id '"+onboardID+"' --input '")
	})
}

func TestIDPrintsTheDerivedWorkflowID(t *testing.T) {
	r := run(t, nil, "", "id", "-f", "testdata/onboard.yaml")
	require.Equal(t, ExitOK, r.code, r.stderr)
	assert.Equal(t, onboardID+"\n", r.stdout)
}

func TestBadRequestFilesAreUsageErrorsNamingTheField(t *testing.T) {
	r := run(t, nil, "", "onboard", "-f", "testdata/onboard-typo.yaml")
	assert.Equal(t, ExitUsage, r.code)
	// support.approvers may be empty: the worker's grant policy names the approvers.
	assert.Equal(t, "gkewi onboard: testdata/onboard-typo.yaml is not a valid onboarding request:\n"+
		"  - support.approver: unknown field (did you mean support.approvers?)\n", r.stderr)

	r = run(t, nil, "project: acme-prod\nlocation: europe-west1\ncluster: gke-main\nnamespace: carto\nksa: k\n"+
		"gsaEmail: carto-backend@acme-prod.iam.gserviceaccount.com\ntokenExpiryWait: 1m\nbigquery: {dataProject: acme-data, billingProject: acme-bill, tempDataset: t, connectionOwnerId: o, dataset: [d]}\n",
		"revoke", "-f", "-", "--dry-run")
	assert.Equal(t, ExitUsage, r.code)
	assert.Equal(t, "gkewi revoke: - is not a valid revoke request:\n  - bigquery.dataset: unknown field (did you mean bigquery.datasets?)\n", r.stderr)

	r = run(t, nil, "", "id", "-f", "testdata/onboard-invalid.yaml")
	assert.Equal(t, ExitUsage, r.code)
	assert.Empty(t, r.stdout)
	assert.Contains(t, r.stderr, "gkewi id: testdata/onboard-invalid.yaml is not a valid onboarding request:\n  - project \"Acme_Prod\": ")
	assert.Contains(t, r.stderr, "\n  - gsa.accountId \"cb\": ")
	assert.Contains(t, r.stderr, "\n  - support.reminderInterval \"often\": ")

	r = run(t, nil, "", "onboard", "-f", "testdata/missing.yaml")
	assert.Equal(t, ExitUsage, r.code)
	assert.Contains(t, r.stderr, "no such file")

	r = run(t, nil, "", "onboard")
	assert.Equal(t, ExitUsage, r.code)
	assert.Contains(t, r.stderr, "-f request.yaml is required")
}

func TestExpiryInThePastIsRefusedLocally(t *testing.T) {
	b, err := os.ReadFile("testdata/onboard.yaml")
	require.NoError(t, err)
	req := string(b) + "expiry:\n  at: \"2026-01-01T00:00:00Z\"\n"
	r := run(t, nil, req, "onboard", "-f", "-", "--dry-run")
	assert.Equal(t, ExitUsage, r.code)
	assert.Contains(t, r.stderr, `expiry.at "2026-01-01T00:00:00Z": must be in the future`)
}

func TestDecisionDryRunPrintsEquivalentCommands(t *testing.T) {
	id := "gkewi-onboard/p-1/europe-west1/c/ns/k"
	cases := []struct {
		name string
		args []string
		want string
	}{
		{
			name: "approve signal",
			args: []string{"approve", "--workflow-id", id, "--approver", "alice@example.com", "--ticket", "SUP-1"},
			want: `temporal workflow signal --workflow-id 'gkewi-onboard/p-1/europe-west1/c/ns/k' --name support-approval --input '{"approved":true,"approver":"alice@example.com","ticket":"SUP-1"}'`,
		},
		{
			name: "reject signal with a quote in the comment",
			args: []string{"reject", "--workflow-id", id, "--approver", "alice@example.com", "--comment", "it's not ready"},
			want: `temporal workflow signal --workflow-id 'gkewi-onboard/p-1/europe-west1/c/ns/k' --name support-approval --input '{"approved":false,"approver":"alice@example.com","comment":"it'\''s not ready"}'`,
		},
		{
			name: "approve update in another namespace",
			args: []string{"approve", "--update", "--namespace", "team-a", "--workflow-id", id, "--approver", "bob@example.com", "--ticket", "SUP-2"},
			want: `temporal workflow update execute --namespace 'team-a' --workflow-id 'gkewi-onboard/p-1/europe-west1/c/ns/k' --name support-decision --input '{"approved":true,"approver":"bob@example.com","ticket":"SUP-2"}'`,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := run(t, nil, "", append(tc.args, "--dry-run")...)
			require.Equal(t, ExitOK, r.code, r.stderr)
			assert.Equal(t, "Equivalent temporal command:\n  "+tc.want+"\n"+
				`This decision carries no proof of who you are: it counts only where support.proof is "none". `+
				"Prove it with --endpoint (the worker's approval endpoint) and your ID token.\n", r.stdout)
		})
	}
}

// With --endpoint the decision goes to the worker's approval endpoint with the
// approver's ID token, which never appears in what is printed.
func TestDecisionWithProof(t *testing.T) {
	id := "gkewi-onboard/p-1/europe-west1/c/ns/k"
	var got worker.DecisionRequest
	var auth string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		assert.Equal(t, worker.DecisionPath, r.URL.Path)
		auth = r.Header.Get("Authorization")
		require.NoError(t, json.NewDecoder(r.Body).Decode(&got))
		if r.Header.Get("Authorization") != "Bearer the-token" {
			w.WriteHeader(http.StatusUnauthorized)
			_ = json.NewEncoder(w).Encode(worker.DecisionResponse{Error: "ID token refused: expired"})
			return
		}
		_ = json.NewEncoder(w).Encode(worker.DecisionResponse{WorkflowID: got.WorkflowID, Approver: "alice@example.com", State: workflows.StateApproved})
	}))
	defer srv.Close()

	r := run(t, nil, "the-token\n", "approve", "--workflow-id", id, "--run-id", "run-1", "--endpoint", srv.URL, "--id-token-file", "-", "--ticket", "SUP-1")
	require.Equal(t, ExitOK, r.code, r.stderr)
	assert.Equal(t, "Bearer the-token", auth)
	require.NotNil(t, got.Approved)
	assert.Equal(t, worker.DecisionRequest{WorkflowID: id, RunID: "run-1", Approved: got.Approved, Ticket: "SUP-1"}, got)
	assert.True(t, *got.Approved)
	assert.Contains(t, r.stdout, "Decision accepted (approved by alice@example.com, proven by an ID token from --id-token-file): the onboarding is now approved.")
	assert.Contains(t, r.stdout, "gcloud auth print-identity-token --audiences='"+id+"' --include-email")
	assert.NotContains(t, r.stdout+r.stderr, "the-token")

	r = run(t, nil, "stale\n", "reject", "--workflow-id", id, "--run-id", "run-1", "--endpoint", srv.URL, "--id-token-file", "-")
	assert.NotEqual(t, ExitOK, r.code)
	assert.Contains(t, r.stderr, "decision refused (HTTP 401): ID token refused: expired")
	assert.False(t, *got.Approved)

	r = run(t, nil, "", "approve", "--workflow-id", id, "--endpoint", srv.URL, "--update")
	assert.Equal(t, ExitUsage, r.code)
	assert.Contains(t, r.stderr, "--update goes with a bare decision")

	// A proven decision binds the run reviewed: never "the latest".
	r = run(t, nil, "the-token\n", "approve", "--workflow-id", id, "--endpoint", srv.URL, "--id-token-file", "-")
	assert.Equal(t, ExitUsage, r.code)
	assert.Contains(t, r.stderr, "--run-id is required with --endpoint: the run you reviewed")
}

// With --endpoint, onboard sends the request with the requester's ID token
// (audience: the workflow ID) to the worker's approval endpoint, which starts
// the run; the token never appears in what is printed.
func TestOnboardWithEndpoint(t *testing.T) {
	var got map[string]json.RawMessage
	var auth, path string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		path, auth = r.URL.Path, r.Header.Get("Authorization")
		assert.Equal(t, http.MethodPost, r.Method)
		assert.Equal(t, "application/json", r.Header.Get("Content-Type"))
		require.NoError(t, json.NewDecoder(r.Body).Decode(&got))
		if auth != "Bearer requester-token" {
			w.WriteHeader(http.StatusUnauthorized)
			_ = json.NewEncoder(w).Encode(worker.RequestResponse{WorkflowID: onboardID, Error: "ID token refused: oidc: expected audience"})
			return
		}
		w.WriteHeader(http.StatusCreated)
		_ = json.NewEncoder(w).Encode(worker.RequestResponse{WorkflowID: onboardID, RunID: "run-7", Requester: "rita@example.com"})
	}))
	defer srv.Close()

	r := run(t, nil, "requester-token\n", "onboard", "-f", "testdata/onboard.yaml", "--endpoint", srv.URL+"/", "--id-token-file", "-")
	require.Equal(t, ExitOK, r.code, r.stderr)
	assert.Equal(t, worker.RequestPath, path)
	assert.Equal(t, "Bearer requester-token", auth)
	require.Len(t, got, 1, "the body is {\"request\": ...} and nothing else")
	assert.JSONEq(t, onboardInput, string(got["request"]))
	assert.Equal(t, "Workflow ID: "+onboardID+"\n"+
		"Equivalent command:\n"+
		"  curl -sS -X POST '"+srv.URL+worker.RequestPath+"' -H \"Authorization: Bearer $(gcloud auth print-identity-token --audiences='"+onboardID+"' --include-email)\" -d '{\"request\":"+onboardInput+"}'\n"+
		"Started Onboard, run run-7, requested by rita@example.com (ID token verified by the worker).\n"+
		"Support is notified at [support@example.com] and must approve; follow with: gkewi status --workflow-id '"+onboardID+"'\n",
		r.stdout)
	assert.NotContains(t, r.stdout+r.stderr, "requester-token")

	r = run(t, nil, "someone-elses\n", "onboard", "-f", "testdata/onboard.yaml", "--endpoint", srv.URL, "--id-token-file", "-")
	assert.Equal(t, ExitFailure, r.code)
	assert.Contains(t, r.stderr, "onboarding refused (HTTP 401): ID token refused: oidc: expected audience")
	assert.NotContains(t, r.stdout, "Started")

	r = run(t, nil, "", "onboard", "-f", "-", "--endpoint", srv.URL, "--id-token-file", "-")
	assert.Equal(t, ExitUsage, r.code)
	assert.Contains(t, r.stderr, "both read standard input")
}

func TestRevokeFromFileDryRun(t *testing.T) {
	r := run(t, nil, "", "revoke", "-f", "testdata/revoke.yaml", "--token-expiry-wait", "45m", "--dry-run")
	require.Equal(t, ExitOK, r.code, r.stderr)
	id := "gkewi-revoke/acme-prod/europe-west1/gke-main/carto/carto"
	assert.Equal(t, "Workflow ID: "+id+"\n"+
		"Equivalent temporal command:\n"+
		"  temporal workflow start --type Revoke --task-queue gkewi --workflow-id '"+id+"' --input "+
		`'{"project":"acme-prod","location":"europe-west1","cluster":"gke-main","namespace":"carto","release":"carto","ksa":"carto-common-backend","gsaEmail":"carto-backend@acme-prod.iam.gserviceaccount.com","tokenExpiryWait":"45m","reason":"contract ended"}'`+"\n",
		r.stdout)

	r = run(t, nil, "", "revoke", "-f", "testdata/revoke.yaml", "--token-expiry-wait", "13h", "--dry-run")
	assert.Equal(t, ExitUsage, r.code)
	assert.Contains(t, r.stderr, `tokenExpiryWait "13h": must be between 0s and 12h`)
}

func TestUsageErrors(t *testing.T) {
	cases := []struct {
		args []string
		want string
	}{
		{nil, "Usage:"},
		{[]string{"frobnicate"}, `unknown command "frobnicate"`},
		{[]string{"approve", "--approver", "a@example.com"}, "--workflow-id is required"},
		{[]string{"reject", "--workflow-id", "x"}, "--approver is required"},
		{[]string{"approve", "--workflow-id", "x", "--endpoint", "https://gkewi.example.com"}, "--run-id is required with --endpoint"},
		{[]string{"onboard", "-f", "testdata/onboard.yaml", "--endpoint", "gkewi.example.com"}, `--endpoint "gkewi.example.com": want the http(s) URL`},
		{[]string{"onboard", "-f", "testdata/onboard.yaml", "--id-token-file", "t"}, "--id-token-file goes with --endpoint"},
		{[]string{"approve", "--workflow-id", "x", "--approver", "Alice <a@example.com>"}, "want a bare email address"},
		{[]string{"status"}, "--workflow-id is required"},
		{[]string{"status", "--workflow-id", "x", "-o", "yaml"}, `-o "yaml": want table or json`},
		{[]string{"revoke"}, "give exactly one of --workflow-id ONBOARD_ID and -f revoke.yaml"},
		{[]string{"revoke", "--workflow-id", "x", "-f", "r.yaml"}, "give exactly one of"},
		{[]string{"list", "--limit", "0"}, "--limit must be positive"},
		{[]string{"extend", "--at", "2099-01-01T00:00:00Z"}, "--workflow-id is required"},
		{[]string{"extend", "--workflow-id", "x"}, "give exactly one of --at RFC3339 and --ttl DURATION"},
		{[]string{"extend", "--workflow-id", "x", "--at", "2099-01-01T00:00:00Z", "--ttl", "1h"}, "give exactly one of --at RFC3339 and --ttl DURATION"},
		{[]string{"extend", "--workflow-id", "x", "--at", "2099-01-01"}, `--at "2099-01-01": want an RFC 3339 time such as 2026-12-31T18:00:00Z`},
		{[]string{"extend", "--workflow-id", "x", "--ttl", "-1h"}, `--ttl "-1h": want a positive duration such as 720h`},
		{[]string{"extend", "--workflow-id", "x", "--at", "2026-11-22T09:59:59Z"}, "2026-11-22T09:59:59Z is not in the future (now 2026-11-22T10:00:00Z): to revoke now, run gkewi revoke without --at"},
		{[]string{"revoke", "-f", "testdata/revoke.yaml", "--at", "2099-01-01T00:00:00Z", "--wait"}, "--wait follows a revocation started now"},
		{[]string{"revoke", "-f", "testdata/revoke.yaml", "--at", "yesterday"}, `--at "yesterday": want an RFC 3339 time`},
		{[]string{"onboard", "-f", "testdata/onboard.yaml", "stray"}, "unexpected arguments: stray"},
		{[]string{"status", "--bogus"}, "gkewi status: unknown flag: --bogus\nRun 'gkewi status --help' for usage.\n"},
		{[]string{"list", "--limit", "many"}, `invalid argument "many" for "--limit" flag`},
	}
	for _, tc := range cases {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			r := run(t, nil, "", tc.args...)
			assert.Equal(t, ExitUsage, r.code)
			assert.Contains(t, r.stderr, tc.want)
		})
	}
	r := run(t, nil, "", "help")
	assert.Equal(t, ExitOK, r.code)
	assert.Contains(t, r.stdout, "gkewi approve --workflow-id ID --approver EMAIL")
}

func TestHelp(t *testing.T) {
	for _, args := range [][]string{{"--help"}, {"-h"}, {"help"}} {
		r := run(t, nil, "", args...)
		require.Equal(t, ExitOK, r.code, r.stderr)
		assert.Empty(t, r.stderr)
		assert.Contains(t, r.stdout, "Exit status: 0 success, 1 failure, 2 invalid usage or request.")
		for _, sub := range []string{"onboard", "approve", "reject", "status", "revoke", "extend", "list", "id", "rbac", "plan", "completion"} {
			assert.Regexp(t, `(?m)^  `+sub+` +\S`, r.stdout, "%v lists %s with its summary", args, sub)
		}
	}

	r := run(t, nil, "", "status", "--help")
	require.Equal(t, ExitOK, r.code, r.stderr)
	assert.Contains(t, r.stdout, "Usage:\n  gkewi status --workflow-id ID [-o table|json] [flags]\n")
	assert.Regexp(t, `(?m)^ +--workflow-id string +the Onboard or Revoke workflow ID \(required\)$`, r.stdout)
	assert.Regexp(t, `(?m)^ +-o, --output string +output: table or json \(default "table"\)$`, r.stdout)
	assert.Regexp(t, `(?m)^ +--address string +Temporal frontend host:port`, r.stdout)

	// The approval endpoint's default comes from the environment.
	r = run(t, mapEnv{envApprovalEndpoint: "https://gkewi.example.com"}, "", "approve", "-h")
	require.Equal(t, ExitOK, r.code, r.stderr)
	assert.Contains(t, r.stdout, `(default "https://gkewi.example.com")`)
}

// Each Run builds its commands afresh: a flag given to one run does not stick
// to the next run of the same App.
func TestRunsDoNotShareFlags(t *testing.T) {
	var out bytes.Buffer
	app := &App{Stdout: &out, Stderr: &out, Stdin: strings.NewReader(""), Env: mapEnv{"TEMPORAL_CONFIG_FILE": filepath.Join(t.TempDir(), "absent.toml")}}
	id := "gkewi-onboard/p-1/europe-west1/c/ns/k"
	require.Equal(t, ExitOK, app.Run(context.Background(), []string{"approve", "--workflow-id", id, "--approver", "a@example.com", "--ticket", "SUP-1", "--update", "--dry-run"}), out.String())
	assert.Contains(t, out.String(), `temporal workflow update execute --workflow-id`)
	assert.Contains(t, out.String(), `"ticket":"SUP-1"`)
	out.Reset()
	require.Equal(t, ExitOK, app.Run(context.Background(), []string{"approve", "--workflow-id", id, "--approver", "a@example.com", "--dry-run"}), out.String())
	assert.Contains(t, out.String(), `temporal workflow signal --workflow-id`)
	assert.NotContains(t, out.String(), "SUP-1")
}

func TestCompletion(t *testing.T) {
	r := run(t, nil, "", "completion", "bash")
	require.Equal(t, ExitOK, r.code, r.stderr)
	assert.Contains(t, r.stdout, "__start_gkewi")
	r = run(t, nil, "", "completion", "zsh")
	require.Equal(t, ExitOK, r.code, r.stderr)
	assert.Contains(t, r.stdout, "#compdef gkewi")

	// What the shell scripts ask: the words that may come next, then ":"
	// and cobra's directive (4: no file names; 8: files with these extensions).
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"st"}, "status\tShow the state and steps of an Onboard or Revoke workflow\n:4\n"},
		{[]string{"status", "-o", ""}, "table\njson\n:4\n"},
		{[]string{"list", "--output", "j"}, "table\njson\n:4\n"},
		{[]string{"onboard", "-f", ""}, "yaml\nyml\njson\n:8\n"},
		{[]string{"revoke", "--file", ""}, "yaml\nyml\njson\n:8\n"},
		{[]string{"status", "--workflow-id", ""}, ":4\n"},
		{[]string{"id", ""}, ":4\n"},
	}
	for _, tc := range cases {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			r := run(t, nil, "", append([]string{"__complete"}, tc.args...)...)
			require.Equal(t, ExitOK, r.code, r.stderr)
			assert.Equal(t, tc.want, r.stdout)
		})
	}
}

func TestUnreachableTemporalIsAFailureNamingTheAddress(t *testing.T) {
	r := run(t, mapEnv{"TEMPORAL_ADDRESS": "127.0.0.1:1"}, "", "status", "--workflow-id", "x")
	assert.Equal(t, ExitFailure, r.code)
	assert.Contains(t, r.stderr, "cannot reach Temporal at 127.0.0.1:1 (namespace default")

	// --address beats TEMPORAL_ADDRESS.
	r = run(t, mapEnv{"TEMPORAL_ADDRESS": "127.0.0.1:1"}, "", "status", "--workflow-id", "x", "--address", "127.0.0.1:2", "--namespace", "team-a")
	assert.Equal(t, ExitFailure, r.code)
	assert.Contains(t, r.stderr, "cannot reach Temporal at 127.0.0.1:2 (namespace team-a")
}

// The notifier writes commands for the same workflow handlers the starter uses.
func TestNotifierAndWorkflowsAgreeOnNames(t *testing.T) {
	assert.Equal(t, contract.SignalSupportApproval, contract.SignalSupportApproval)
	assert.Equal(t, contract.UpdateSupportDecision, contract.UpdateSupportDecision)
}

func TestTemporalScheduleCommand(t *testing.T) {
	rev := workflows.RevokeRequest{
		Project: "acme-prod", Location: "europe-west1", Cluster: "gke-main", Namespace: "carto",
		KSA: "carto-common-backend", GSAEmail: "cb@acme-prod.iam.gserviceaccount.com", Reason: "it's over",
	}
	// A time between seconds fires at the next whole second, in UTC.
	at := time.Date(2026, 12, 31, 19, 0, 0, 1, time.FixedZone("CET", 3600))
	in := workflows.NewRevocationSchedule(rev, at)
	got, err := temporalScheduleCommand(connFlags{namespace: "team-a"}, "update", in)
	require.NoError(t, err)
	assert.Equal(t, `temporal schedule update --namespace 'team-a' --schedule-id 'gkewi-expiry/acme-prod/europe-west1/gke-main/carto/carto-common-backend' `+
		`--calendar '{"year":"2026","month":"12","dayOfMonth":"31","hour":"18","minute":"0","second":"1"}' --remaining-actions 1 --catchup-window 8760h `+
		`--workflow-id 'gkewi-revoke/acme-prod/europe-west1/gke-main/carto/carto-common-backend' --type Revoke --task-queue gkewi `+
		`--input '{"project":"acme-prod","location":"europe-west1","cluster":"gke-main","namespace":"carto","ksa":"carto-common-backend",`+
		`"gsaEmail":"cb@acme-prod.iam.gserviceaccount.com","tokenExpiryWait":"30m","reason":"it'\''s over"}'`, got)

	// Without a reason, the scheduled revocation says why it runs.
	rev.Reason = ""
	got, err = temporalScheduleCommand(connFlags{}, "create", workflows.NewRevocationSchedule(rev, time.Date(2027, 1, 2, 3, 4, 5, 0, time.UTC)))
	require.NoError(t, err)
	assert.True(t, strings.HasPrefix(got, "temporal schedule create --schedule-id "), got)
	assert.Contains(t, got, `--calendar '{"year":"2027","month":"1","dayOfMonth":"2","hour":"3","minute":"4","second":"5"}'`)
	assert.Contains(t, got, `"reason":"grant expired at 2027-01-02T03:04:05Z"}'`)
}

func TestWriteStatusOfARevocation(t *testing.T) {
	at := time.Date(2026, 11, 22, 9, 0, 0, 0, time.UTC)
	st := workflows.Status{
		Workflow: "Revoke", State: workflows.StateRevoked,
		Project: "acme-prod", Location: "europe-west1", Cluster: "gke-main", Namespace: "carto", KSA: "carto-common-backend",
		GSAEmail: "cb@acme-prod.iam.gserviceaccount.com", Steps: []workflows.Step{},
		RefusedAt: at, WaitUntil: at.Add(30 * time.Minute), TokensValidUntil: at.Add(30 * time.Minute),
		AccessEndedAt: at.Add(30 * time.Minute), UpdatedAt: at.Add(31 * time.Minute),
	}
	var b bytes.Buffer
	writeStatus(&b, "gkewi-revoke/x", st, at)
	assert.Equal(t, `Revoke gkewi-revoke/x: revoked (ended)
  Cluster:             acme-prod/europe-west1/gke-main
  KSA:                 carto/carto-common-backend
  GSA:                 cb@acme-prod.iam.gserviceaccount.com
  Refused since:       2026-11-22 09:00:00Z
  Token wait until:    2026-11-22 09:30:00Z
  Tokens valid until:  2026-11-22 09:30:00Z
  Access ended:        2026-11-22 09:30:00Z
  Updated:             2026-11-22 09:31:00Z

STEP  STATE  ATTEMPTS  TOOK  DETAIL
`, b.String())

	b.Reset()
	writeStatus(&b, "gkewi-onboard/x", workflows.Status{
		Workflow: "Onboard", State: workflows.StateCompleted, Steps: []workflows.Step{},
		ExpiresAt: at, RevocationSchedule: "gkewi-expiry/x", UpdatedAt: at,
	}, at)
	assert.Contains(t, b.String(), "Onboard gkewi-onboard/x: completed (ended)\n")
	assert.Contains(t, b.String(), "  Expires:              2026-11-22 09:00:00Z\n  Revocation schedule:  gkewi-expiry/x\n")

	b.Reset()
	writeStatus(&b, "gkewi-revoke/y", workflows.Status{Workflow: "Revoke", State: workflows.StateOnboardingCanceled, Steps: []workflows.Step{}, UpdatedAt: at}, at)
	assert.Contains(t, b.String(), "Revoke gkewi-revoke/y: onboarding-canceled (ended)\n")
	assert.Contains(t, b.String(), "  Outcome:  nothing was granted: the onboarding was canceled before the approval\n")
}

func TestRevokeOutcome(t *testing.T) {
	at := time.Date(2026, 11, 22, 9, 0, 0, 0, time.UTC)
	assert.Equal(t, "Revoked: fresh tokens refused since 2026-11-22 09:00:00Z; access ended 2026-11-22 09:30:00Z.",
		revokeOutcome(workflows.RevokeResult{State: workflows.StateRevoked, RefusedAt: at, AccessEndedAt: at.Add(30 * time.Minute)}))
	assert.Equal(t, "Nothing was granted: the onboarding (run r-1) was canceled before the approval and deleted the service account it had created.",
		revokeOutcome(workflows.RevokeResult{State: workflows.StateOnboardingCanceled, CanceledOnboarding: "r-1"}))
}

func TestWriteStatusTable(t *testing.T) {
	start := time.Date(2026, 11, 22, 9, 0, 0, 0, time.UTC)
	st := workflows.Status{
		Workflow: "Onboard", State: workflows.StateAwaitingApproval,
		Project: "acme-prod", Location: "europe-west1", Cluster: "gke-main",
		Namespace: "carto", KSA: "carto-common-backend",
		GSAEmail: "cb@acme-prod.iam.gserviceaccount.com", GSACreated: true,
		Steps: []workflows.Step{
			{Name: "enable-iamcredentials", State: workflows.StepDone, StartedAt: start, EndedAt: start.Add(1500 * time.Millisecond), Attempts: 2, LastError: "429 quota", Detail: "already enabled"},
			{Name: "node-pool/default-pool", State: workflows.StepRunning, StartedAt: start.Add(30 * time.Second), Attempts: 1},
			{Name: "approval", State: workflows.StepRunning, StartedAt: start.Add(time.Minute)},
			{Name: "helm", State: workflows.StepPending},
		},
		Approval: &workflows.Approval{
			Decision: workflows.DecisionPending, Deadline: start.Add(168 * time.Hour), RemindersSent: 1,
			Ignored: []workflows.IgnoredDecision{{Approver: "mallory@example.com", Via: "signal", Reason: "not an approver"}},
		},
		Warnings:  []string{"preflight: another cluster shares the pool"},
		UpdatedAt: start.Add(time.Minute),
	}
	var b bytes.Buffer
	writeStatus(&b, onboardID, st, start.Add(61*time.Minute))
	assert.Equal(t, `Onboard `+onboardID+`: awaiting-approval
  Cluster:           acme-prod/europe-west1/gke-main
  KSA:               carto/carto-common-backend
  GSA:               cb@acme-prod.iam.gserviceaccount.com (created by this run)
  Approval:          pending, deadline 2026-11-29 09:00:00Z, 1 reminder(s) sent
  Ignored decision:  mallory@example.com via signal: not an approver
  Running now:       node-pool/default-pool, approval
  Updated:           2026-11-22 09:01:00Z

STEP                    STATE    ATTEMPTS  TOOK      DETAIL
enable-iamcredentials   done     2         1.5s      already enabled; last error: 429 quota
node-pool/default-pool  running  1         1h0m30s…
approval                running  -         1h0m0s…
helm                    pending  -         -

Warnings:
  - preflight: another cluster shares the pool
`, b.String())
}
