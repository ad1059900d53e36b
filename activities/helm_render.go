package activities

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"sort"
	"strings"

	"go.temporal.io/sdk/temporal"
	"helm.sh/helm/v4/pkg/action"
	"helm.sh/helm/v4/pkg/chart/common"
	chart "helm.sh/helm/v4/pkg/chart/v2"
	release "helm.sh/helm/v4/pkg/release/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"

	"github.com/gkewi/gkewi/contract"
)

// RenderInput is the release as gkewi will install it.
type RenderInput struct {
	// Helm is the install exactly as the Helm step will make it: values, GSA and
	// connection included.
	Helm HelmInput `json:"helm"`
	// KSA is the request's KSA; empty takes the one the chart's workloads run as.
	KSA string `json:"ksa,omitempty"`
}

// RenderResult is what the rendered release says about the grant.
type RenderResult struct {
	// Chart is "NAME VERSION".
	Chart string `json:"chart"`
	// KSA is the Kubernetes service account the release's workloads run as.
	KSA string `json:"ksa"`
	// KSASource says who makes the KSA and its annotation: KSAFromChart,
	// KSAFromChartUnannotated or KSAExisting.
	KSASource string `json:"ksaSource"`
	// Workloads are the release's workloads that run as KSA.
	Workloads []Workload `json:"workloads"`
	// OtherKSAs are the other KSAs the release's workloads run as (they get no
	// Google identity).
	OtherKSAs []string `json:"otherKsas,omitempty"`
	// ConnectionInterface is how the chart takes the BigQuery connection.
	ConnectionInterface string `json:"connectionInterface"`
	// Access is every permission the worker needs on the cluster for this
	// release: its own steps and Helm's, for each kind the release renders.
	Access []AccessRule `json:"access"`
	Detail string       `json:"detail"`
}

// Who makes the grant's KSA and its annotation.
const (
	// KSAFromChart: the chart renders the KSA with gkewi's annotation (from the
	// values), so Helm creates and annotates it.
	KSAFromChart = "chart"
	// KSAFromChartUnannotated: the chart renders the KSA without the annotation;
	// gkewi annotates it once Helm has created it.
	KSAFromChartUnannotated = "chart-unannotated"
	// KSAExisting: the chart uses a KSA it does not create (for example
	// commonBackendServiceAccount.create: false); it must exist before, and gkewi
	// annotates it.
	KSAExisting = "existing"
)

// Workload is a release object that runs pods.
type Workload struct {
	Kind      string `json:"kind"`
	Name      string `json:"name"`
	Namespace string `json:"namespace"`
	KSA       string `json:"ksa"`
}

func (w Workload) String() string { return strings.ToLower(w.Kind) + "/" + w.Name }

// RenderRelease renders the release client-side with the Helm SDK, with exactly
// the values the Helm step installs and the cluster's version and APIs, and
// derives from the manifests, before anything is changed: the KSA the workloads
// run as (the request's, which must be one of them, or the chart's), whether the
// chart creates it, and what the worker must be allowed to do for the release.
//
// Refused (non-retryable): a chart that does not render; a kind the cluster does
// not serve; a request KSA no workload runs as; no KSA or several candidates
// when the request names none; an existing KSA (one the chart does not create)
// that is missing.
func (h *Helm) RenderRelease(ctx context.Context, in RenderInput) (RenderResult, error) {
	if err := validateHelmInput(in.Helm); err != nil {
		return RenderResult{}, err
	}
	conn, err := h.cfg.Clusters.conn(in.Helm.Cluster)
	if err != nil {
		return RenderResult{}, err
	}
	cfg, ch, values, err := h.chartAndValues(conn, in.Helm)
	if err != nil {
		return RenderResult{}, err
	}
	getter := newHelmRESTGetter(conn, in.Helm.Namespace)
	caps, err := clusterCapabilities(getter)
	if err != nil {
		return RenderResult{}, err
	}
	upgrade := false
	if _, err := cfg.Releases.Deployed(in.Helm.Release); err == nil {
		upgrade = true
	}
	objects, err := renderObjects(ctx, ch, values, in.Helm, caps, upgrade)
	if err != nil {
		return RenderResult{}, err
	}
	mapper, err := getter.ToRESTMapper()
	if err != nil {
		return RenderResult{}, classifyKubeError("render: discovering the cluster's API", err)
	}
	res, err := planRelease(objects, in, ch, mapper)
	if err != nil {
		return RenderResult{}, err
	}
	if res.KSASource == KSAExisting {
		target := in.Helm.Namespace + "/" + res.KSA
		_, err := conn.client.CoreV1().ServiceAccounts(in.Helm.Namespace).Get(ctx, res.KSA, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			return RenderResult{}, temporal.NewNonRetryableApplicationError(fmt.Sprintf(
				"render: the release's workloads run as %s, which the chart does not create (commonBackendServiceAccount.create: false) and which does not exist: create it (kubectl create serviceaccount %s -n %s), then start the onboarding again",
				target, res.KSA, in.Helm.Namespace), contract.ErrTypeReleaseIdentity, nil)
		case err != nil:
			return RenderResult{}, classifyKubeError("render: reading "+target, err)
		}
	}
	return res, nil
}

// RenderOffline renders the release without a cluster (Helm's default
// capabilities, kinds mapped to resources by name), for `gkewi rbac`. The KSA is
// derived as RenderRelease does, except that an existing KSA is not looked up.
func (h *Helm) RenderOffline(ctx context.Context, in RenderInput) (RenderResult, error) {
	if err := validateHelmInput(in.Helm); err != nil {
		return RenderResult{}, err
	}
	cfg := action.NewConfiguration(action.ConfigurationSetLogger(h.cfg.Logger.Handler()))
	settings, err := h.settings(cfg)
	if err != nil {
		return RenderResult{}, err
	}
	ch, err := h.loadChart(cfg, settings, in.Helm)
	if err != nil {
		return RenderResult{}, err
	}
	values, err := HelmValues(in.Helm, ch.Values)
	if err != nil {
		return RenderResult{}, kubeInvalidInput("helm: values: %v", err)
	}
	objects, err := renderObjects(ctx, ch, values, in.Helm, nil, false)
	if err != nil {
		return RenderResult{}, err
	}
	return planRelease(objects, in, ch, nil)
}

// clusterCapabilities are the cluster's version and API versions, as Helm reads
// them for an install.
func clusterCapabilities(getter *helmRESTGetter) (*common.Capabilities, error) {
	dc, err := getter.ToDiscoveryClient()
	if err != nil {
		return nil, classifyKubeError("render: discovery client", err)
	}
	sv, err := dc.ServerVersion()
	if err != nil {
		return nil, classifyKubeError("render: reading the cluster version", err)
	}
	kv, err := common.ParseKubeVersion(sv.GitVersion)
	if err != nil {
		return nil, kubeInvalidInput("render: cluster version %q: %v", sv.GitVersion, err)
	}
	versions, err := action.GetVersionSet(dc)
	if err != nil {
		return nil, classifyKubeError("render: reading the cluster's API versions", err)
	}
	return &common.Capabilities{KubeVersion: *kv, APIVersions: versions}, nil
}

// renderedObject is one object of the rendered release.
type renderedObject struct {
	obj  *unstructured.Unstructured
	hook bool
}

// renderObjects renders the chart client-side (no call to the cluster) and
// decodes every object, hooks included. caps nil: Helm's defaults.
func renderObjects(ctx context.Context, ch *chart.Chart, values map[string]any, in HelmInput, caps *common.Capabilities, upgrade bool) ([]renderedObject, error) {
	// A configuration of its own: a client-side dry run replaces the
	// configuration's storage and client with in-memory ones.
	cfg := action.NewConfiguration()
	act := action.NewInstall(cfg)
	act.DryRunStrategy = action.DryRunClient
	act.ReleaseName = in.Release
	act.Namespace = in.Namespace
	act.IsUpgrade = upgrade
	if caps != nil {
		act.KubeVersion = &caps.KubeVersion
		act.APIVersions = caps.APIVersions
	}
	out, err := act.RunWithContext(ctx, ch, values)
	if err != nil {
		return nil, temporal.NewNonRetryableApplicationError(
			fmt.Sprintf("render: chart %s %s does not render with the onboarding's values: %v", ch.Metadata.Name, ch.Metadata.Version, err),
			contract.ErrTypeInvalidArgument, nil)
	}
	rel, ok := out.(*release.Release)
	if !ok {
		return nil, fmt.Errorf("render: unexpected release type %T", out)
	}
	objs, err := decodeManifest(rel.Manifest, false)
	if err != nil {
		return nil, err
	}
	for _, hk := range rel.Hooks {
		hooks, err := decodeManifest(hk.Manifest, true)
		if err != nil {
			return nil, err
		}
		objs = append(objs, hooks...)
	}
	return objs, nil
}

func decodeManifest(manifest string, hook bool) ([]renderedObject, error) {
	var out []renderedObject
	dec := utilyaml.NewYAMLOrJSONDecoder(strings.NewReader(manifest), 4096)
	for {
		var m map[string]any
		if err := dec.Decode(&m); err != nil {
			if errors.Is(err, io.EOF) {
				return out, nil
			}
			return nil, kubeInvalidInput("render: the chart renders a document that is not a Kubernetes object: %v", err)
		}
		if len(m) == 0 {
			continue
		}
		obj := &unstructured.Unstructured{Object: m}
		if obj.GetKind() == "" || obj.GetAPIVersion() == "" {
			return nil, kubeInvalidInput("render: the chart renders an object without apiVersion or kind (%v)", obj.GetName())
		}
		out = append(out, renderedObject{obj: obj, hook: hook})
	}
}

// planRelease derives the grant's KSA and the worker's access from the rendered
// objects. mapper nil maps kinds to resources by name (offline).
func planRelease(objects []renderedObject, in RenderInput, ch *chart.Chart, mapper meta.RESTMapper) (RenderResult, error) {
	ns := in.Helm.Namespace
	res := RenderResult{
		Chart:               ch.Metadata.Name + " " + ch.Metadata.Version,
		ConnectionInterface: ConnectionInterfaceOf(ch.Values),
	}
	byKSA := map[string][]Workload{} // the workloads in the release's namespace
	rendered := map[string]bool{}    // KSAs the chart creates there
	annotated := map[string]bool{}   // ... with the grant's GSA annotation
	kinds := map[accessTarget]bool{}
	for _, o := range objects {
		target, err := accessTargetOf(o.obj, ns, mapper)
		if err != nil {
			return RenderResult{}, err
		}
		kinds[target] = true
		if o.hook {
			// Hooks run and go: they are not the workload the grant is for.
			continue
		}
		if target.Namespace != ns {
			continue
		}
		name := o.obj.GetName()
		if o.obj.GetKind() == "ServiceAccount" && o.obj.GroupVersionKind().Group == "" {
			rendered[name] = true
			annotated[name] = in.Helm.GSAEmail != "" && o.obj.GetAnnotations()[GSAAnnotation] == in.Helm.GSAEmail
		}
		if ksa, ok := podServiceAccount(o.obj); ok {
			byKSA[ksa] = append(byKSA[ksa], Workload{Kind: o.obj.GetKind(), Name: name, Namespace: ns, KSA: ksa})
		}
	}
	all := slices.Sorted(maps.Keys(byKSA))
	describe := func(names []string) string {
		parts := make([]string, 0, len(names))
		for _, k := range names {
			parts = append(parts, fmt.Sprintf("%s (%s)", k, workloadNames(byKSA[k])))
		}
		return strings.Join(parts, "; ")
	}
	refuse := func(format string, args ...any) (RenderResult, error) {
		return RenderResult{}, temporal.NewNonRetryableApplicationError(
			fmt.Sprintf("render: release %s/%s (chart %s): ", ns, in.Helm.Release, res.Chart)+fmt.Sprintf(format, args...),
			contract.ErrTypeReleaseIdentity, nil)
	}
	if len(all) == 0 {
		return refuse("no workload in namespace %s: nothing would run as the granted KSA", ns)
	}

	ksa := in.KSA
	if ksa != "" {
		if _, ok := byKSA[ksa]; !ok {
			return refuse("no workload runs as ksa %q; its workloads run as: %s", ksa, describe(all))
		}
	} else {
		var chartMade, existing []string
		for _, k := range all {
			switch {
			case annotated[k]:
				chartMade = append(chartMade, k)
			case !rendered[k]:
				existing = append(existing, k)
			}
		}
		switch {
		case len(chartMade) == 1:
			ksa = chartMade[0]
		case len(chartMade) > 1:
			return refuse("several KSAs carry the %s annotation from the values; name the one to grant with ksa: %s", GSAAnnotation, describe(chartMade))
		case len(existing) == 1:
			ksa = existing[0]
		case len(existing) > 1:
			return refuse("its workloads run as several KSAs it does not create; name the one to grant with ksa: %s", describe(existing))
		default:
			return refuse("no workload runs as a KSA that the values annotate (%s.annotations) or that exists outside the chart; name the one to grant with ksa: %s", helmWIKey, describe(all))
		}
	}
	res.KSA = ksa
	res.Workloads = byKSA[ksa]
	for _, k := range all {
		if k != ksa {
			res.OtherKSAs = append(res.OtherKSAs, k)
		}
	}
	switch {
	case annotated[ksa]:
		res.KSASource = KSAFromChart
	case rendered[ksa]:
		res.KSASource = KSAFromChartUnannotated
	default:
		res.KSASource = KSAExisting
	}
	res.Access = releaseAccess(ns, kinds, res.KSASource)
	res.Detail = fmt.Sprintf("chart %s: %d workload(s) run as %s/%s (%s)", res.Chart, len(res.Workloads), ns, ksa, ksaSourceText(res.KSASource))
	if len(res.OtherKSAs) > 0 {
		res.Detail += fmt.Sprintf("; others run as %s and get no Google identity", strings.Join(res.OtherKSAs, ", "))
	}
	res.Detail += "; connection values: " + res.ConnectionInterface
	return res, nil
}

func ksaSourceText(source string) string {
	switch source {
	case KSAFromChart:
		return "created and annotated by the chart"
	case KSAFromChartUnannotated:
		return "created by the chart, annotated by gkewi after Helm"
	default:
		return "not created by the chart: it must exist, gkewi annotates it"
	}
}

func workloadNames(ws []Workload) string {
	names := make([]string, 0, len(ws))
	for _, w := range ws {
		names = append(names, w.String())
	}
	return strings.Join(names, ", ")
}

// podSpecPaths are where each workload kind keeps its pod spec.
var podSpecPaths = map[schema.GroupKind][]string{
	{Kind: "Pod"}:                        {"spec"},
	{Group: "apps", Kind: "Deployment"}:  {"spec", "template", "spec"},
	{Group: "apps", Kind: "StatefulSet"}: {"spec", "template", "spec"},
	{Group: "apps", Kind: "DaemonSet"}:   {"spec", "template", "spec"},
	{Group: "apps", Kind: "ReplicaSet"}:  {"spec", "template", "spec"},
	{Group: "batch", Kind: "Job"}:        {"spec", "template", "spec"},
	{Group: "batch", Kind: "CronJob"}:    {"spec", "jobTemplate", "spec", "template", "spec"},
	{Kind: "ReplicationController"}:      {"spec", "template", "spec"},
}

// podServiceAccount is the KSA a workload's pods run as ("default" when unset).
func podServiceAccount(obj *unstructured.Unstructured) (string, bool) {
	path, ok := podSpecPaths[obj.GroupVersionKind().GroupKind()]
	if !ok {
		return "", false
	}
	spec, found, err := unstructured.NestedMap(obj.Object, path...)
	if err != nil || !found {
		return "", false
	}
	if sa, _ := spec["serviceAccountName"].(string); sa != "" {
		return sa, true
	}
	return "default", true
}

// accessTarget is a resource in a namespace ("" for cluster-scoped).
type accessTarget struct {
	Namespace string
	Group     string
	Resource  string
}

// clusterScopedKinds are the cluster-scoped kinds a chart may render, for the
// offline mapping (online, the cluster's API says).
var clusterScopedKinds = map[string]bool{
	"Namespace": true, "Node": true, "PersistentVolume": true, "ClusterRole": true,
	"ClusterRoleBinding": true, "CustomResourceDefinition": true, "StorageClass": true,
	"PriorityClass": true, "IngressClass": true, "GatewayClass": true,
	"MutatingWebhookConfiguration": true, "ValidatingWebhookConfiguration": true,
	"APIService": true, "RuntimeClass": true,
}

func accessTargetOf(obj *unstructured.Unstructured, releaseNS string, mapper meta.RESTMapper) (accessTarget, error) {
	gvk := obj.GroupVersionKind()
	var resource string
	namespaced := !clusterScopedKinds[gvk.Kind]
	if mapper == nil {
		plural, _ := meta.UnsafeGuessKindToResource(gvk)
		resource = plural.Resource
	} else {
		m, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
		if meta.IsNoMatchError(err) {
			return accessTarget{}, temporal.NewNonRetryableApplicationError(fmt.Sprintf(
				"render: the chart renders %s %q (%s), a kind the cluster does not serve: install its API (CRD) or turn that part of the chart off in the values",
				gvk.Kind, obj.GetName(), gvk.GroupVersion()), contract.ErrTypeFailedPrecondition, nil)
		}
		if err != nil {
			return accessTarget{}, classifyKubeError("render: mapping "+gvk.String(), err)
		}
		resource = m.Resource.Resource
		namespaced = m.Scope.Name() == meta.RESTScopeNameNamespace
	}
	t := accessTarget{Group: gvk.Group, Resource: resource}
	if namespaced {
		t.Namespace = obj.GetNamespace()
		if t.Namespace == "" {
			t.Namespace = releaseNS
		}
	}
	return t, nil
}

// AccessRule is a permission the worker needs: verbs on a resource in a
// namespace ("" for cluster-scoped resources).
type AccessRule struct {
	Namespace string   `json:"namespace,omitempty"`
	Group     string   `json:"group"`
	Resource  string   `json:"resource"`
	Verbs     []string `json:"verbs"`
	// Why is shown next to a missing permission.
	Why string `json:"why,omitempty"`
}

// helmVerbs are what Helm does with each kind of a release: server-side apply
// (create, patch), wait for readiness (get, list, watch), and delete what a
// release drops, a failed first install left or a hook's delete policy names.
var helmVerbs = []string{"get", "list", "watch", "create", "patch", "delete"}

// releaseAccess is what the worker needs for one release: its own steps in the
// release's namespace and the cluster, and Helm's verbs on every kind the
// release renders.
func releaseAccess(ns string, kinds map[accessTarget]bool, ksaSource string) []AccessRule {
	rules := []AccessRule{
		{Group: "", Resource: "namespaces", Verbs: []string{"get"}, Why: "the release's namespace"},
		{Group: "", Resource: "nodes", Verbs: []string{"get"}, Why: "verification: the pods' nodes serve the GKE metadata server"},
		{Namespace: ns, Group: "", Resource: "secrets", Verbs: []string{"get", "list", "create", "update", "delete"}, Why: "Helm's release records"},
		{Namespace: ns, Group: "coordination.k8s.io", Resource: "leases", Verbs: []string{"get", "create", "update", "delete"}, Why: "the Helm lease gkewi holds while it installs"},
		{Namespace: ns, Group: "", Resource: "serviceaccounts/token", Verbs: []string{"create"}, Why: "verification: the KSA's token"},
		{Namespace: ns, Group: "", Resource: "pods", Verbs: []string{"list"}, Why: "preflight and verification: the release's pods"},
	}
	if ksaSource != KSAFromChart {
		rules = append(rules, AccessRule{Namespace: ns, Group: "", Resource: "serviceaccounts", Verbs: []string{"get", "patch"}, Why: "annotating the KSA"})
	}
	targets := make([]accessTarget, 0, len(kinds))
	for k := range kinds {
		targets = append(targets, k)
	}
	sort.Slice(targets, func(i, j int) bool {
		a, b := targets[i], targets[j]
		return a.Namespace+"\x00"+a.Group+"\x00"+a.Resource < b.Namespace+"\x00"+b.Group+"\x00"+b.Resource
	})
	for _, t := range targets {
		rules = append(rules, AccessRule{Namespace: t.Namespace, Group: t.Group, Resource: t.Resource, Verbs: slices.Clone(helmVerbs), Why: "the chart renders it"})
		if t.Group == "apps" && t.Resource == "deployments" {
			rules = append(rules, AccessRule{Namespace: t.Namespace, Group: "apps", Resource: "replicasets", Verbs: []string{"list"}, Why: "Helm follows a Deployment's rollout"})
		}
	}
	return mergeAccess(rules)
}

// mergeAccess joins the rules of one resource, keeping the first reason and
// each verb once.
func mergeAccess(rules []AccessRule) []AccessRule {
	type key struct{ ns, group, resource string }
	index := map[key]int{}
	var out []AccessRule
	for _, r := range rules {
		k := key{r.Namespace, r.Group, r.Resource}
		i, ok := index[k]
		if !ok {
			index[k] = len(out)
			r.Verbs = slices.Clone(r.Verbs)
			out = append(out, r)
			continue
		}
		for _, v := range r.Verbs {
			if !slices.Contains(out[i].Verbs, v) {
				out[i].Verbs = append(out[i].Verbs, v)
			}
		}
	}
	return out
}
