package starter

import (
	"fmt"
	"io"
	"strings"

	"sigs.k8s.io/yaml"

	"github.com/gkewi/gkewi/activities"
	"github.com/gkewi/gkewi/internal/text"
	"github.com/gkewi/gkewi/workflows"
)

// Roles, service and values of a grant, as Onboard sets them.
const (
	roleTokenCreator         = "roles/iam.serviceAccountTokenCreator"
	roleWorkloadIdentityUser = "roles/iam.workloadIdentityUser"
	iamCredentialsService    = "iamcredentials.googleapis.com"
	// approvalMarker heads every step that Onboard runs only once support approved.
	approvalMarker = "# after support's approval"
	// valuesEOF ends the values document given to helm on standard input.
	valuesEOF = "GKEWI_VALUES"
)

// onboardState is what a plan found for an onboarding request: the state each
// of Onboard's steps reads before it decides to change anything.
type onboardState struct {
	// req is the defaulted request; its KSA is the rendered release's.
	req     workflows.OnboardRequest
	gsa     string
	release activities.RenderResult

	iamCredentials string // the API's state: ENABLED, DISABLED
	workloadPool   string
	// autopilot: GKE manages the node pools and the workload pool.
	autopilot bool
	// nodePools are the pools Onboard switches: the request's, else all.
	nodePools []activities.NodePoolMode
	sa        activities.ServiceAccountState

	ksaExists     bool
	ksaAnnotation string // the KSA's iam.gke.io/gcp-service-account

	bigQuery *activities.BigQueryState // nil without a BigQuery connection
	helm     activities.ReleaseState

	// kubeContext, when set, is passed to kubectl and helm: the kubeconfig
	// context the plan read, when it is not the current one.
	kubeContext string
}

// revokeState is what a plan found for a revoke request.
type revokeState struct {
	req           workflows.RevokeRequest
	sa            activities.ServiceAccountState
	ksaExists     bool
	ksaAnnotation string
	bigQuery      *activities.BigQueryState
	kubeContext   string
}

// planStep is one step's commands, with why they are needed.
type planStep struct {
	name          string
	why           string
	afterApproval bool
	commands      []string
}

// command joins a command line, each argument quoted as it needs.
func command(args ...string) string {
	words := make([]string, len(args))
	for i, a := range args {
		words[i] = text.ShellWord(a)
	}
	return strings.Join(words, " ")
}

func workloadIdentityMember(project, namespace, ksa string) string {
	return "serviceAccount:" + project + ".svc.id.goog[" + namespace + "/" + ksa + "]"
}

// gsaDisplayName is the display name Onboard gives the GSA it creates.
func gsaDisplayName(r workflows.OnboardRequest) string {
	if r.GSA.DisplayName != "" {
		return r.GSA.DisplayName
	}
	name := fmt.Sprintf("gkewi: %s/%s on %s", r.Namespace, r.KSA, r.Cluster)
	if len(name) > 100 {
		name = name[:100]
	}
	return name
}

// kubectl and helm name the context the plan read, when it is not the current one.
func kubectlCommand(kubeContext string, args ...string) string {
	if kubeContext != "" {
		args = append(args, "--context", kubeContext)
	}
	return command(append([]string{"kubectl"}, args...)...)
}

// onboardSteps are the commands that bring the grant about from st, in
// Onboard's order; a step already in place has none and is left out.
func onboardSteps(st onboardState) ([]planStep, error) {
	r := st.req
	var steps []planStep
	add := func(s planStep) { steps = append(steps, s) }

	if st.iamCredentials != "ENABLED" {
		add(planStep{name: "enable-iamcredentials",
			why:      fmt.Sprintf("%s is %s in project %s", iamCredentialsService, orNone(st.iamCredentials), r.Project),
			commands: []string{command("gcloud", "services", "enable", iamCredentialsService, "--project", r.Project)}})
	}
	pool := r.Project + ".svc.id.goog"
	if st.autopilot && st.workloadPool != pool {
		//nolint:staticcheck // ST1005: Autopilot is GKE's product name.
		return nil, fmt.Errorf("Autopilot cluster %s has workload pool %s, not %s: GKE manages it on Autopilot clusters, and Onboard refuses it", r.Cluster, orNone(st.workloadPool), pool)
	}
	if st.workloadPool != pool {
		add(planStep{name: "workload-pool",
			why: fmt.Sprintf("cluster %s has workload pool %s", r.Cluster, orNone(st.workloadPool)),
			commands: []string{command("gcloud", "container", "clusters", "update", r.Cluster,
				"--project", r.Project, "--location", r.Location, "--workload-pool", pool)}})
	}
	for _, np := range st.nodePools {
		if np.Mode == activities.WorkloadMetadataGKE {
			continue
		}
		add(planStep{name: "node-pool/" + np.Name,
			why: fmt.Sprintf("node pool %s has workload metadata mode %s", np.Name, orNone(np.Mode)),
			commands: []string{command("gcloud", "container", "node-pools", "update", np.Name,
				"--project", r.Project, "--cluster", r.Cluster, "--location", r.Location,
				"--workload-metadata", activities.WorkloadMetadataGKE)}})
	}
	switch {
	case st.sa.Disabled:
		return nil, fmt.Errorf("service account %s is disabled: Onboard refuses it; enable it (gcloud iam service-accounts enable %s) or use another account", st.gsa, st.gsa)
	case !st.sa.Exists && r.GSA.Email != "":
		return nil, fmt.Errorf("service account %s does not exist: Onboard refuses a gsa.email that does not exist; create it or give gsa.accountId instead", st.gsa)
	case !st.sa.Exists:
		add(planStep{name: "service-account",
			why: fmt.Sprintf("service account %s does not exist", st.gsa),
			commands: []string{command("gcloud", "iam", "service-accounts", "create", r.GSA.AccountID,
				"--project", r.Project, "--display-name", gsaDisplayName(r))}})
	}
	has := func(role, member string) bool { return st.sa.Policy != nil && st.sa.Policy.HasMember(role, member) }
	self := "serviceAccount:" + st.gsa
	if !has(roleTokenCreator, self) {
		add(planStep{name: "token-creator",
			why: fmt.Sprintf("%s cannot mint tokens for itself (%s)", st.gsa, roleTokenCreator),
			commands: []string{command("gcloud", "iam", "service-accounts", "add-iam-policy-binding", st.gsa,
				"--role", roleTokenCreator, "--member", self)}})
	}

	granted := func(s planStep) { s.afterApproval = true; add(s) }
	member := workloadIdentityMember(r.Project, r.Namespace, r.KSA)
	if !has(roleWorkloadIdentityUser, member) {
		granted(planStep{name: "workload-identity-user",
			why: fmt.Sprintf("%s/%s may not act as %s yet (%s)", r.Namespace, r.KSA, st.gsa, roleWorkloadIdentityUser),
			commands: []string{command("gcloud", "iam", "service-accounts", "add-iam-policy-binding", st.gsa,
				"--role", roleWorkloadIdentityUser, "--member", member)}})
	}
	annotate := planStep{name: "annotate-ksa",
		why:      fmt.Sprintf("%s/%s is annotated %s", r.Namespace, r.KSA, orNone(st.ksaAnnotation)),
		commands: []string{kubectlCommand(st.kubeContext, "annotate", "serviceaccount", r.KSA, "-n", r.Namespace, activities.GSAAnnotation+"="+st.gsa, "--overwrite")}}
	if !st.ksaExists {
		annotate.why = fmt.Sprintf("%s/%s does not exist yet", r.Namespace, r.KSA)
	}
	needsAnnotation := st.ksaAnnotation != st.gsa
	if st.release.KSASource == activities.KSAExisting && needsAnnotation {
		granted(annotate)
	}
	if bq := st.bigQuery; bq != nil {
		if s, ok := bigQueryGrantStep(bq, self); ok {
			granted(s)
		}
	}
	if !st.helm.UpToDate {
		s, err := helmStep(st)
		if err != nil {
			return nil, err
		}
		granted(s)
	}
	// The chart creates the KSA without the annotation: Onboard annotates it
	// once Helm has made it.
	if st.release.KSASource == activities.KSAFromChartUnannotated && needsAnnotation {
		granted(annotate)
	}
	return steps, nil
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}

// bigQueryGrantStep creates the temp dataset and grants the connection's roles
// that are missing, as GrantBigQueryAccess does.
func bigQueryGrantStep(bq *activities.BigQueryState, member string) (planStep, bool) {
	s := planStep{name: "bigquery"}
	var missing []string
	if !bq.TempDatasetExists {
		missing = append(missing, "dataset "+bq.TempDatasetProject+"."+bq.TempDataset)
		s.commands = append(s.commands, command("bq", "--project_id", bq.TempDatasetProject, "mk", "--dataset",
			"--location", bq.TempDatasetLocation, bq.TempDatasetProject+":"+bq.TempDataset))
	}
	for _, g := range bq.Grants {
		if g.Held {
			continue
		}
		missing = append(missing, bigQueryGrantName(g))
		s.commands = append(s.commands, bigQueryGrantCommand(bq, g, member, true))
	}
	s.why = strings.Join(missing, "; ") + " missing"
	return s, len(s.commands) > 0
}

// bigQueryRevokeStep removes the connection's roles still held, as
// RevokeBigQueryAccess does (the temp dataset stays).
func bigQueryRevokeStep(bq *activities.BigQueryState, member string) (planStep, bool) {
	s := planStep{name: "revoke-bigquery"}
	var held []string
	for _, g := range bq.Grants {
		if !g.Held {
			continue
		}
		held = append(held, bigQueryGrantName(g))
		s.commands = append(s.commands, bigQueryGrantCommand(bq, g, member, false))
	}
	s.why = member + " holds " + strings.Join(held, "; ")
	return s, len(s.commands) > 0
}

func bigQueryGrantName(g activities.BigQueryGrantState) string {
	if g.Dataset != "" {
		return g.Role + " on dataset " + g.DatasetProject + "." + g.Dataset
	}
	return g.Role + " on project " + g.Project
}

// bigQueryGrantCommand grants or revokes one role: on a project's IAM policy
// with gcloud (unconditional, as gkewi grants it), on a dataset with
// BigQuery's GRANT / REVOKE statement, run where the dataset is.
func bigQueryGrantCommand(bq *activities.BigQueryState, g activities.BigQueryGrantState, member string, grant bool) string {
	if g.Dataset == "" {
		verb := "add-iam-policy-binding"
		if !grant {
			verb = "remove-iam-policy-binding"
		}
		return command("gcloud", "projects", verb, g.Project, "--role", g.Role, "--member", member, "--condition", "None")
	}
	location := g.DatasetLocation
	if location == "" {
		location = bq.TempDatasetLocation // the temp dataset, created just above
	}
	stmt := fmt.Sprintf("GRANT `%s` ON SCHEMA `%s.%s` TO %q", g.Role, g.DatasetProject, g.Dataset, member)
	if !grant {
		stmt = fmt.Sprintf("REVOKE `%s` ON SCHEMA `%s.%s` FROM %q", g.Role, g.DatasetProject, g.Dataset, member)
	}
	return command("bq", "--project_id", g.DatasetProject, "--location", location, "query", "--nouse_legacy_sql", stmt)
}

// helmStep installs or upgrades the release with the values Onboard installs,
// given on standard input.
func helmStep(st onboardState) (planStep, error) {
	r := st.req
	h := st.helm
	body, err := yaml.Marshal(h.Values)
	if err != nil {
		return planStep{}, fmt.Errorf("helm values as YAML: %w", err)
	}
	args := []string{"helm", "upgrade", "--install", r.Helm.Release, r.Helm.Chart, "--namespace", r.Namespace}
	if !h.NamespaceExists {
		args = append(args, "--create-namespace")
	}
	if r.Helm.RepoURL != "" {
		args = append(args, "--repo", r.Helm.RepoURL)
	}
	if r.Helm.Version != "" {
		args = append(args, "--version", r.Helm.Version)
	}
	if st.kubeContext != "" {
		args = append(args, "--kube-context", st.kubeContext)
	}
	args = append(args, "--wait", "-f", "-")
	why := fmt.Sprintf("release %s/%s is not deployed", r.Namespace, r.Helm.Release)
	if h.Deployed {
		why = fmt.Sprintf("release %s/%s revision %d has other values or another chart than %s %s with the grant's values",
			r.Namespace, r.Helm.Release, h.Revision, h.ChartName, h.ChartVersion)
	}
	cmd := command(args...) + " <<'" + valuesEOF + "'\n" + strings.TrimRight(string(body), "\n") + "\n" + valuesEOF
	return planStep{name: "helm", why: why, commands: []string{cmd}}, nil
}

// revokeSteps are the commands that undo the grant, in Revoke's order.
func revokeSteps(st revokeState) []planStep {
	r := st.req
	var steps []planStep
	member := workloadIdentityMember(r.Project, r.Namespace, r.KSA)
	if st.sa.Exists && st.sa.Policy.HasMember(roleWorkloadIdentityUser, member) {
		steps = append(steps, planStep{name: "remove-workload-identity-user",
			why: fmt.Sprintf("%s/%s may act as %s (%s)", r.Namespace, r.KSA, r.GSAEmail, roleWorkloadIdentityUser),
			commands: []string{command("gcloud", "iam", "service-accounts", "remove-iam-policy-binding", r.GSAEmail,
				"--role", roleWorkloadIdentityUser, "--member", member)}})
	}
	if bq := st.bigQuery; bq != nil {
		if s, ok := bigQueryRevokeStep(bq, "serviceAccount:"+r.GSAEmail); ok {
			steps = append(steps, s)
		}
	}
	if r.RemoveAnnotation && st.ksaExists && st.ksaAnnotation != "" && st.ksaAnnotation == r.GSAEmail {
		steps = append(steps, planStep{name: "remove-annotation",
			why:      fmt.Sprintf("%s/%s is annotated %s", r.Namespace, r.KSA, st.ksaAnnotation),
			commands: []string{kubectlCommand(st.kubeContext, "annotate", "serviceaccount", r.KSA, "-n", r.Namespace, activities.GSAAnnotation+"-")}})
	}
	return steps
}

// writePlan prints the steps as a shell script: a comment block per step (with
// the approval marker when it waits for support), then its commands.
func writePlan(w io.Writer, header []string, steps []planStep, nothing string) {
	for _, h := range header {
		fmt.Fprintln(w, "# "+h)
	}
	if len(steps) == 0 {
		fmt.Fprintln(w, "\n# "+nothing)
		return
	}
	for _, s := range steps {
		fmt.Fprintln(w)
		if s.afterApproval {
			fmt.Fprintln(w, approvalMarker)
		}
		fmt.Fprintf(w, "# %s: %s\n", s.name, s.why)
		for _, c := range s.commands {
			fmt.Fprintln(w, c)
		}
	}
}

// onboardHeader introduces an onboarding plan.
func onboardHeader(st onboardState) []string {
	r := st.req
	return []string{
		fmt.Sprintf("gkewi plan: onboarding of release %s/%s on cluster %s/%s/%s as %s", r.Namespace, r.Helm.Release, r.Project, r.Location, r.Cluster, st.gsa),
		"The release's KSA: " + st.release.Detail,
		"Read just now; nothing was changed. Run in order, these commands leave what Onboard leaves;",
		"what is already in place prints nothing. Those marked \"after support's approval\" make the",
		"identity usable by the workload: Onboard runs them only once support approved the grant.",
	}
}

// revokeHeader introduces a revocation plan.
func revokeHeader(st revokeState) []string {
	r := st.req
	return []string{
		fmt.Sprintf("gkewi plan --revoke: revocation of %s/%s on cluster %s/%s/%s acting as %s", r.Namespace, r.KSA, r.Project, r.Location, r.Cluster, r.GSAEmail),
		"Read just now; nothing was changed. Run in order, these commands remove what Revoke removes;",
		"what is already gone prints nothing. Tokens already issued stay valid until they expire (up to 1h).",
	}
}
