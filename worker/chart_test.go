package worker

import (
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"helm.sh/helm/v4/pkg/action"
	"helm.sh/helm/v4/pkg/chart/v2/loader"
	release "helm.sh/helm/v4/pkg/release/v1"
	releaseutil "helm.sh/helm/v4/pkg/release/v1/util"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"sigs.k8s.io/yaml"

	"github.com/gkewi/gkewi/policy"
)

var workerChart = filepath.Join("..", "deploy", "charts", "gkewi-worker")

func TestWorkerChartLints(t *testing.T) {
	for name, vals := range map[string]map[string]any{
		"defaults": nil,
		"everything on": {
			"metrics":             map[string]any{"serviceMonitor": map[string]any{"enabled": true}},
			"podDisruptionBudget": map[string]any{"enabled": true},
		},
	} {
		t.Run(name, func(t *testing.T) {
			lint := action.NewLint()
			lint.Strict = true
			res := lint.Run([]string{workerChart}, vals)
			for _, m := range res.Messages {
				t.Log(m.Error())
			}
			require.Empty(t, res.Errors)
			assert.Equal(t, 1, res.TotalChartsLinted)
		})
	}
}

// renderWorkerChart renders the chart as `helm template` would, by kind.
func renderWorkerChart(t *testing.T, vals map[string]any) map[string][]string {
	t.Helper()
	ch, err := loader.Load(workerChart)
	require.NoError(t, err)
	install := action.NewInstall(action.NewConfiguration(action.ConfigurationSetLogger(slog.DiscardHandler)))
	install.DryRunStrategy = action.DryRunClient
	install.ReleaseName = "gkewi-worker"
	install.Namespace = "gkewi-system"
	install.Replace = true
	rel, err := install.Run(ch, vals)
	require.NoError(t, err)
	byKind := map[string][]string{}
	for _, doc := range releaseutil.SplitManifests(rel.(*release.Release).Manifest) {
		var head struct {
			Kind string `json:"kind"`
		}
		require.NoError(t, yaml.Unmarshal([]byte(doc), &head))
		byKind[head.Kind] = append(byKind[head.Kind], doc)
	}
	return byKind
}

func TestWorkerChartProbesAndMetricsPort(t *testing.T) {
	docs := renderWorkerChart(t, nil)
	require.Len(t, docs["Deployment"], 1)
	var d appsv1.Deployment
	require.NoError(t, yaml.UnmarshalStrict([]byte(docs["Deployment"][0]), &d))
	c := d.Spec.Template.Spec.Containers[0]

	require.Len(t, c.Ports, 1)
	assert.Equal(t, corev1.ContainerPort{Name: "http", ContainerPort: 9090, Protocol: corev1.ProtocolTCP}, c.Ports[0])
	env := map[string]string{}
	for _, e := range c.Env {
		env[e.Name] = e.Value
	}
	assert.Equal(t, ":9090", env["GKEWI_HTTP_ADDR"], "the worker listens where the probes look")
	assert.Equal(t, "true", env["GKEWI_METRICS"])
	for name, p := range map[string]*corev1.Probe{"liveness": c.LivenessProbe, "readiness": c.ReadinessProbe, "startup": c.StartupProbe} {
		require.NotNil(t, p, name)
		require.NotNil(t, p.HTTPGet, name)
		assert.Equal(t, "http", p.HTTPGet.Port.String(), name)
	}
	assert.Equal(t, "/healthz", c.LivenessProbe.HTTPGet.Path)
	assert.Equal(t, "/readyz", c.ReadinessProbe.HTTPGet.Path)
	assert.False(t, c.Resources.Requests.Cpu().IsZero())
	assert.False(t, c.Resources.Limits.Memory().IsZero())

	require.Len(t, docs["Service"], 1)
	var svc corev1.Service
	require.NoError(t, yaml.UnmarshalStrict([]byte(docs["Service"][0]), &svc))
	assert.Equal(t, "http", svc.Spec.Ports[0].TargetPort.String())
	for k, v := range svc.Spec.Selector {
		assert.Equal(t, v, d.Spec.Template.Labels[k], "the service selects the worker's pods")
	}
	assert.Empty(t, docs["ServiceMonitor"], "off by default: it needs the operator's CRDs")
	assert.Empty(t, docs["PodDisruptionBudget"])
}

func TestWorkerChartServiceMonitorAndPDB(t *testing.T) {
	docs := renderWorkerChart(t, map[string]any{
		"metrics":             map[string]any{"port": 9464, "serviceMonitor": map[string]any{"enabled": true, "labels": map[string]any{"release": "prom"}}},
		"podDisruptionBudget": map[string]any{"enabled": true},
	})
	require.Len(t, docs["ServiceMonitor"], 1)
	var sm struct {
		Metadata struct {
			Labels map[string]string `json:"labels"`
		} `json:"metadata"`
		Spec struct {
			Selector struct {
				MatchLabels map[string]string `json:"matchLabels"`
			} `json:"selector"`
			Endpoints []struct {
				Port, Path, Interval, ScrapeTimeout string
			} `json:"endpoints"`
		} `json:"spec"`
	}
	require.NoError(t, yaml.Unmarshal([]byte(docs["ServiceMonitor"][0]), &sm))
	assert.Equal(t, "prom", sm.Metadata.Labels["release"])
	require.Len(t, sm.Spec.Endpoints, 1)
	assert.Equal(t, "http", sm.Spec.Endpoints[0].Port)
	assert.Equal(t, "/metrics", sm.Spec.Endpoints[0].Path)
	assert.Equal(t, "gkewi-worker", sm.Spec.Selector.MatchLabels["app.kubernetes.io/name"])
	assert.Contains(t, docs["Deployment"][0], `value: ":9464"`)
	assert.Contains(t, docs["Service"][0], "port: 9464")

	require.Len(t, docs["PodDisruptionBudget"], 1)
	var pdb policyv1.PodDisruptionBudget
	require.NoError(t, yaml.UnmarshalStrict([]byte(docs["PodDisruptionBudget"][0]), &pdb))
	require.NotNil(t, pdb.Spec.MaxUnavailable)
	assert.Equal(t, 1, pdb.Spec.MaxUnavailable.IntValue())
	assert.Equal(t, "gkewi-worker", pdb.Spec.Selector.MatchLabels["app.kubernetes.io/name"])

	// Metrics off: probes stay, the monitor goes.
	off := renderWorkerChart(t, map[string]any{"metrics": map[string]any{"enabled": false, "serviceMonitor": map[string]any{"enabled": true}}})
	assert.Empty(t, off["ServiceMonitor"])
	assert.True(t, strings.Contains(off["Deployment"][0], "path: /readyz"))
	assert.Contains(t, off["Deployment"][0], `name: GKEWI_METRICS
              value: "false"`)
}

func TestWorkerChartApprovalEndpoint(t *testing.T) {
	docs := renderWorkerChart(t, map[string]any{"approval": map[string]any{
		"secretName": "gkewi-approval", "publicURL": "https://gkewi.example.com",
		"endpoint": map[string]any{"enabled": true},
	}})
	var d appsv1.Deployment
	require.NoError(t, yaml.UnmarshalStrict([]byte(docs["Deployment"][0]), &d))
	c := d.Spec.Template.Spec.Containers[0]
	env := map[string]string{}
	for _, e := range c.Env {
		env[e.Name] = e.Value
	}
	assert.Equal(t, ":8443", env["GKEWI_APPROVAL_ADDR"])
	assert.Equal(t, "/etc/gkewi/approval/secret", env["GKEWI_APPROVAL_SECRET_FILE"])
	assert.Equal(t, "https://accounts.google.com", env["GKEWI_APPROVAL_ISSUER"])
	assert.Equal(t, "https://gkewi.example.com", env["GKEWI_APPROVAL_PUBLIC_URL"])
	assert.Contains(t, c.Ports, corev1.ContainerPort{Name: "approval", ContainerPort: 8443, Protocol: corev1.ProtocolTCP})
	var mounted bool
	for _, m := range c.VolumeMounts {
		mounted = mounted || (m.Name == "approval-secret" && m.MountPath == "/etc/gkewi/approval" && m.ReadOnly)
	}
	assert.True(t, mounted, "the key is mounted where GKEWI_APPROVAL_SECRET_FILE points")
	var fromSecret bool
	for _, v := range d.Spec.Template.Spec.Volumes {
		fromSecret = fromSecret || (v.Secret != nil && v.Secret.SecretName == "gkewi-approval")
	}
	assert.True(t, fromSecret)
	assert.Contains(t, docs["Service"][0], "targetPort: approval")

	// The endpoint without a key is refused at render time.
	ch, err := loader.Load(workerChart)
	require.NoError(t, err)
	install := action.NewInstall(action.NewConfiguration(action.ConfigurationSetLogger(slog.DiscardHandler)))
	install.DryRunStrategy = action.DryRunClient
	install.ReleaseName = "gkewi-worker"
	_, err = install.Run(ch, map[string]any{"approval": map[string]any{"endpoint": map[string]any{"enabled": true}}})
	assert.ErrorContains(t, err, "approval.endpoint.enabled needs approval.secretName")
}

// The chart renders the grant policy into a ConfigMap the worker parses as the
// policy file, mounted as a directory (updated in place) where
// GKEWI_POLICY_FILE points.
func TestWorkerChartGrantPolicy(t *testing.T) {
	src, err := os.ReadFile("../deploy/sandbox/policy.yaml")
	require.NoError(t, err)
	var values map[string]any
	require.NoError(t, yaml.Unmarshal(src, &values))
	docs := renderWorkerChart(t, map[string]any{"policy": map[string]any{"rules": values["rules"]}})

	var cm corev1.ConfigMap
	require.Len(t, docs["ConfigMap"], 1)
	require.NoError(t, yaml.UnmarshalStrict([]byte(docs["ConfigMap"][0]), &cm))
	rendered, err := policy.Parse([]byte(cm.Data["policy.yaml"]))
	require.NoError(t, err, "the worker loads what the chart renders")
	want, err := policy.Parse(src)
	require.NoError(t, err)
	assert.Equal(t, want.Rules, rendered.Rules)

	var d appsv1.Deployment
	require.NoError(t, yaml.UnmarshalStrict([]byte(docs["Deployment"][0]), &d))
	c := d.Spec.Template.Spec.Containers[0]
	var file string
	for _, e := range c.Env {
		if e.Name == "GKEWI_POLICY_FILE" {
			file = e.Value
		}
	}
	assert.Equal(t, "/etc/gkewi/policy/policy.yaml", file)
	assert.Contains(t, c.VolumeMounts, corev1.VolumeMount{Name: "policy", MountPath: "/etc/gkewi/policy", ReadOnly: true})
	var fromConfigMap bool
	for _, v := range d.Spec.Template.Spec.Volumes {
		fromConfigMap = fromConfigMap || (v.ConfigMap != nil && v.ConfigMap.Name == cm.Name)
	}
	assert.True(t, fromConfigMap)

	// Without rules nothing is mounted: the worker refuses every new grant.
	docs = renderWorkerChart(t, nil)
	assert.Empty(t, docs["ConfigMap"])
	assert.NotContains(t, docs["Deployment"][0], "GKEWI_POLICY_FILE")
}
