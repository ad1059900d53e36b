package activities

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"sort"
	"strings"

	chart "helm.sh/helm/v4/pkg/chart/v2"
	rcommon "helm.sh/helm/v4/pkg/release/common"
	release "helm.sh/helm/v4/pkg/release/v1"
)

// Environment variables of the BigQuery Workload Identity connection.
const (
	EnvWITempDataset     = "WORKSPACE_WORKLOAD_IDENTITY_TEMP_DATASET"
	EnvWIWorkflowsTemp   = "WORKSPACE_WORKLOAD_IDENTITY_WORKFLOWS_TEMP"
	EnvWIBillingProject  = "WORKSPACE_WORKLOAD_IDENTITY_BILLING_PROJECT"
	EnvWIServiceAccount  = "WORKSPACE_WORKLOAD_IDENTITY_SERVICE_ACCOUNT_EMAIL"
	EnvWIConnectionOwner = "WORKSPACE_WORKLOAD_IDENTITY_CONNECTION_OWNER_ID"
)

// HelmValues layers the release's values: the operator's in.Values, then gkewi's
// Workload Identity values, which win. The chart's defaults (chartDefaults) lie
// underneath (Helm merges them) and say which interface the chart has for the
// connection settings. Maps merge key by key; lists are replaced, except the
// extraEnvVars lists, where gkewi's variables replace same-named entries and the
// operator's other variables are kept.
//
// With in.GSAEmail set:
//
//	commonBackendServiceAccount:
//	  enableGCPWorkloadIdentity: true
//	  annotations:
//	    iam.gke.io/gcp-service-account: <GSA>
//
// With in.Connection also set, on a chart whose defaults declare
// appConfigValues.workloadIdentityConnection (CARTO chart versions since 2024):
//
//	appConfigValues:
//	  workloadIdentityConnection:
//	    enabled: true
//	    workflowsTempLocation: <billing project>.<dataset>
//	    billingProject: ...
//	    serviceAccountEmail: ...
//	    connectionOwner: ...
//
// and otherwise as the older charts take them (the 2023 customizations file):
//
//	workspaceApi:        # and workspaceSubscriber
//	  extraEnvVars:
//	    - {name: WORKSPACE_WORKLOAD_IDENTITY_TEMP_DATASET, value: <dataset>}
//	    - {name: WORKSPACE_WORKLOAD_IDENTITY_WORKFLOWS_TEMP, value: <billing project>.<dataset>}
//	    - {name: WORKSPACE_WORKLOAD_IDENTITY_BILLING_PROJECT, value: ...}
//	    - {name: WORKSPACE_WORKLOAD_IDENTITY_SERVICE_ACCOUNT_EMAIL, value: ...}
//	    - {name: WORKSPACE_WORKLOAD_IDENTITY_CONNECTION_OWNER_ID, value: ...}
func HelmValues(in HelmInput, chartDefaults map[string]any) (map[string]any, error) {
	values, err := normalizeValues(in.Values)
	if err != nil {
		return nil, err
	}
	if in.GSAEmail == "" {
		return values, nil
	}
	mergeValues(values, map[string]any{
		helmWIKey: map[string]any{
			"enableGCPWorkloadIdentity": true,
			"annotations":               map[string]any{GSAAnnotation: in.GSAEmail},
		},
	})
	if in.Connection == nil {
		return values, nil
	}
	if ConnectionInterfaceOf(chartDefaults) == ConnectionValuesKeys {
		c := in.Connection
		sa := c.ServiceAccount
		if sa == "" {
			sa = in.GSAEmail
		}
		mergeValues(values, map[string]any{
			helmAppConfigKey: map[string]any{
				helmConnectionKey: map[string]any{
					"enabled":               true,
					"workflowsTempLocation": workflowsTempLocation(c),
					"billingProject":        c.BillingProject,
					"serviceAccountEmail":   sa,
					"connectionOwner":       c.ConnectionOwnerID,
				},
			},
		})
		return values, nil
	}
	env := connectionEnv(in.GSAEmail, in.Connection)
	for _, component := range helmConnectionComponents {
		section, _ := values[component].(map[string]any)
		if section == nil {
			section = map[string]any{}
			values[component] = section
		}
		list, err := mergeEnvList(section[helmEnvListKey], env)
		if err != nil {
			return nil, fmt.Errorf("%s.%s: %w", component, helmEnvListKey, err)
		}
		section[helmEnvListKey] = list
	}
	return values, nil
}

// How a chart takes the BigQuery connection settings.
const (
	// ConnectionValuesKeys: appConfigValues.workloadIdentityConnection.
	ConnectionValuesKeys = "appConfigValues.workloadIdentityConnection"
	// ConnectionExtraEnvVars: WORKSPACE_WORKLOAD_IDENTITY_* entries in the
	// workspaceApi and workspaceSubscriber extraEnvVars lists.
	ConnectionExtraEnvVars = "extraEnvVars"
)

// ConnectionInterfaceOf tells, from a chart's default values, how it takes the
// connection settings: the keys when its defaults declare them, else extraEnvVars.
func ConnectionInterfaceOf(chartDefaults map[string]any) string {
	app, _ := chartDefaults[helmAppConfigKey].(map[string]any)
	if _, ok := app[helmConnectionKey].(map[string]any); ok {
		return ConnectionValuesKeys
	}
	return ConnectionExtraEnvVars
}

// workflowsTempLocation is the dataset for the connection's temporary tables as
// PROJECT.DATASET.
func workflowsTempLocation(c *ConnectionValues) string {
	if c.BillingProject != "" && c.TempDataset != "" && !strings.Contains(c.TempDataset, ".") {
		return c.BillingProject + "." + c.TempDataset
	}
	return c.TempDataset
}

func connectionEnv(gsa string, c *ConnectionValues) []map[string]any {
	sa := c.ServiceAccount
	if sa == "" {
		sa = gsa
	}
	workflowsTemp := workflowsTempLocation(c)
	pairs := [][2]string{
		{EnvWITempDataset, c.TempDataset},
		{EnvWIWorkflowsTemp, workflowsTemp},
		{EnvWIBillingProject, c.BillingProject},
		{EnvWIServiceAccount, sa},
		{EnvWIConnectionOwner, c.ConnectionOwnerID},
	}
	env := make([]map[string]any, 0, len(pairs))
	for _, p := range pairs {
		env = append(env, map[string]any{"name": p[0], "value": p[1]})
	}
	return env
}

// mergeEnvList keeps the operator's entries whose names gkewi does not set, then
// appends gkewi's, so the order is stable from one run to the next.
func mergeEnvList(existing any, ours []map[string]any) ([]any, error) {
	owned := map[string]bool{}
	for _, e := range ours {
		owned[e["name"].(string)] = true
	}
	var out []any
	if existing != nil {
		list, ok := existing.([]any)
		if !ok {
			return nil, fmt.Errorf("expected a list of {name, value}, got %T", existing)
		}
		for _, item := range list {
			if m, ok := item.(map[string]any); ok {
				if name, _ := m["name"].(string); owned[name] {
					continue
				}
			}
			out = append(out, item)
		}
	}
	for _, e := range ours {
		out = append(out, e)
	}
	return out, nil
}

// mergeValues merges src into dst: maps recursively, anything else replaced.
func mergeValues(dst, src map[string]any) {
	for k, v := range src {
		if sm, ok := v.(map[string]any); ok {
			if dm, ok := dst[k].(map[string]any); ok {
				mergeValues(dm, sm)
				continue
			}
		}
		dst[k] = v
	}
}

// normalizeValues deep-copies values through JSON, as they travel in workflow
// payloads and as Helm stores them, so comparisons see the same types.
func normalizeValues(v map[string]any) (map[string]any, error) {
	out := map[string]any{}
	if len(v) == 0 {
		return out, nil
	}
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	d := json.NewDecoder(bytes.NewReader(b))
	if err := d.Decode(&out); err != nil {
		return nil, err
	}
	return out, nil
}

// helmReleaseMatches is true when the deployed release already has this chart
// (name, version, templates and default values) and these values: an upgrade
// would change nothing.
func helmReleaseMatches(rel *release.Release, ch *chart.Chart, values map[string]any) bool {
	if rel.Info == nil || rel.Info.Status != rcommon.StatusDeployed || rel.Chart == nil || rel.Chart.Metadata == nil {
		return false
	}
	if rel.Chart.Metadata.Name != ch.Metadata.Name || rel.Chart.Metadata.Version != ch.Metadata.Version {
		return false
	}
	if !sameJSON(rel.Config, values) || !sameJSON(rel.Chart.Values, ch.Values) {
		return false
	}
	return sameTemplates(rel.Chart, ch)
}

func sameJSON(a, b map[string]any) bool {
	na, errA := normalizeValues(a)
	nb, errB := normalizeValues(b)
	return errA == nil && errB == nil && reflect.DeepEqual(na, nb)
}

// sameTemplates compares the charts' own templates. Subcharts are left out: a
// stored release does not keep them, and they are pinned by the chart version.
func sameTemplates(a, b *chart.Chart) bool {
	digest := func(c *chart.Chart) []string {
		out := make([]string, 0, len(c.Templates))
		for _, t := range c.Templates {
			out = append(out, t.Name+"\x00"+string(t.Data))
		}
		sort.Strings(out)
		return out
	}
	return reflect.DeepEqual(digest(a), digest(b))
}
