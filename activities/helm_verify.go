package activities

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"

	"go.temporal.io/sdk/temporal"
	release "helm.sh/helm/v4/pkg/release/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/gkewi/gkewi/contract"
)

// Node labels GKE sets.
const (
	// MetadataServerNodeLabel is "true" on nodes of a node pool in GKE_METADATA
	// mode: their pods reach the GKE metadata server.
	MetadataServerNodeLabel = "iam.gke.io/gke-metadata-server-enabled"
	nodePoolNodeLabel       = "cloud.google.com/gke-nodepool"
)

// VerifyReleaseInput names the deployed release and the grant it must run with.
type VerifyReleaseInput struct {
	Cluster   ClusterRef `json:"cluster"`
	Namespace string     `json:"namespace"`
	Release   string     `json:"release"`
	KSA       string     `json:"ksa"`
	GSAEmail  string     `json:"gsaEmail"`
}

// VerifyRelease checks, from the cluster, that the deployed release runs as the
// granted KSA: its manifest has workloads whose pods run as the KSA, the KSA
// carries the GSA annotation, and every such pod is on a node that serves the
// GKE metadata server. A release whose workloads run as another KSA, a KSA
// without the annotation or a pod elsewhere fails the step naming them; pods not
// scheduled yet are retried.
func (h *Helm) VerifyRelease(ctx context.Context, in VerifyReleaseInput) (StepResult, error) {
	if in.Namespace == "" || in.Release == "" || in.KSA == "" || in.GSAEmail == "" {
		return StepResult{}, kubeInvalidInput("verify release: namespace, release, ksa and gsaEmail are required")
	}
	conn, err := h.cfg.Clusters.conn(in.Cluster)
	if err != nil {
		return StepResult{}, err
	}
	cfg, _, err := h.actionConfig(conn, in.Namespace)
	if err != nil {
		return StepResult{}, err
	}
	deployed, err := cfg.Releases.Deployed(in.Release)
	if err != nil {
		return StepResult{}, temporal.NewNonRetryableApplicationError(
			fmt.Sprintf("verify release: release %s/%s has no deployed revision: %v", in.Namespace, in.Release, err), contract.ErrTypeReleaseIdentity, nil)
	}
	rel, ok := deployed.(*release.Release)
	if !ok {
		return StepResult{}, fmt.Errorf("verify release: unexpected release type %T", deployed)
	}
	objects, err := decodeManifest(rel.Manifest, false)
	if err != nil {
		return StepResult{}, err
	}
	fail := func(format string, args ...any) (StepResult, error) {
		return StepResult{}, temporal.NewNonRetryableApplicationError(
			fmt.Sprintf("verify release: release %s/%s revision %d: ", in.Namespace, in.Release, rel.Version)+fmt.Sprintf(format, args...),
			contract.ErrTypeReleaseIdentity, nil)
	}

	var ours []*unstructured.Unstructured
	others := map[string][]string{}
	for _, o := range objects {
		ksa, ok := podServiceAccount(o.obj)
		if !ok || (o.obj.GetNamespace() != "" && o.obj.GetNamespace() != in.Namespace) {
			continue
		}
		if ksa == in.KSA {
			ours = append(ours, o.obj)
		} else {
			others[ksa] = append(others[ksa], strings.ToLower(o.obj.GetKind())+"/"+o.obj.GetName())
		}
	}
	if len(ours) == 0 {
		var runAs []string
		for _, k := range slices.Sorted(maps.Keys(others)) {
			runAs = append(runAs, fmt.Sprintf("%s (%s)", k, strings.Join(others[k], ", ")))
		}
		return fail("no workload runs as the granted KSA %s; they run as %s", in.KSA, strings.Join(runAs, "; "))
	}

	client := conn.client
	target := in.Namespace + "/" + in.KSA
	sa, err := client.CoreV1().ServiceAccounts(in.Namespace).Get(ctx, in.KSA, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return fail("its workloads run as %s, which does not exist", target)
	}
	if err != nil {
		return StepResult{}, classifyKubeError("verify release: reading "+target, err)
	}
	if got := sa.Annotations[GSAAnnotation]; got != in.GSAEmail {
		return fail("%s is annotated %s=%q, not the granted %s", target, GSAAnnotation, got, in.GSAEmail)
	}

	nodes := map[string]*corev1.Node{}
	var names []string
	pods := 0
	for _, w := range ours {
		name := strings.ToLower(w.GetKind()) + "/" + w.GetName()
		names = append(names, name)
		list, err := workloadPods(ctx, conn, in.Namespace, w)
		if err != nil {
			return StepResult{}, err
		}
		for _, p := range list {
			if p.DeletionTimestamp != nil || p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
				continue
			}
			runAs := p.Spec.ServiceAccountName
			if runAs == "" {
				runAs = "default"
			}
			if runAs != in.KSA {
				return fail("pod %s of %s runs as %s, not the granted %s", p.Name, name, runAs, in.KSA)
			}
			if p.Spec.NodeName == "" {
				return StepResult{}, temporal.NewApplicationError(
					fmt.Sprintf("verify release: pod %s of %s is not scheduled yet (will retry)", p.Name, name), contract.ErrTypeNotReady)
			}
			node, ok := nodes[p.Spec.NodeName]
			if !ok {
				node, err = client.CoreV1().Nodes().Get(ctx, p.Spec.NodeName, metav1.GetOptions{})
				if err != nil {
					return StepResult{}, classifyKubeError("verify release: reading node "+p.Spec.NodeName, err)
				}
				nodes[p.Spec.NodeName] = node
			}
			if node.Labels[MetadataServerNodeLabel] != "true" {
				return StepResult{}, temporal.NewApplicationError(fmt.Sprintf(
					"verify release: pod %s of %s runs on node %s (node pool %q), which does not serve the GKE metadata server (no %s=true): the pool is not in GKE_METADATA mode yet (will retry)",
					p.Name, name, node.Name, node.Labels[nodePoolNodeLabel], MetadataServerNodeLabel), contract.ErrTypeNotReady)
			}
			pods++
		}
	}
	sort.Strings(names)
	detail := fmt.Sprintf("%s run as %s (annotated %s): %d pod(s) on %d node(s) serving the GKE metadata server",
		strings.Join(names, ", "), target, in.GSAEmail, pods, len(nodes))
	res := StepResult{Detail: detail}
	if len(others) > 0 {
		detail += fmt.Sprintf("; %d other KSA(s) get no Google identity: %s", len(others), strings.Join(slices.Sorted(maps.Keys(others)), ", "))
		res.Detail = detail
	}
	return res, nil
}

// workloadPods lists the live pods of a rendered workload: those its selector
// picks (a bare Pod: itself).
func workloadPods(ctx context.Context, conn *clusterConn, namespace string, w *unstructured.Unstructured) ([]corev1.Pod, error) {
	pods := conn.client.CoreV1().Pods(namespace)
	what := "verify release: listing the pods of " + strings.ToLower(w.GetKind()) + "/" + w.GetName()
	if w.GetKind() == "Pod" {
		p, err := pods.Get(ctx, w.GetName(), metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return nil, nil
		}
		if err != nil {
			return nil, classifyKubeError(what, err)
		}
		return []corev1.Pod{*p}, nil
	}
	selector, err := workloadSelector(w)
	if err != nil {
		return nil, kubeInvalidInput("%s: %v", what, err)
	}
	list, err := pods.List(ctx, metav1.ListOptions{LabelSelector: selector.String()})
	if err != nil {
		return nil, classifyKubeError(what, err)
	}
	return list.Items, nil
}

// workloadSelector is the workload's pod selector; for kinds without one (Jobs
// rendered without a selector), the pod template's labels.
func workloadSelector(w *unstructured.Unstructured) (labels.Selector, error) {
	raw, found, _ := unstructured.NestedMap(w.Object, "spec", "selector")
	if found && len(raw) > 0 {
		var ls metav1.LabelSelector
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(raw, &ls); err != nil {
			return nil, err
		}
		return metav1.LabelSelectorAsSelector(&ls)
	}
	spec := podSpecPaths[w.GroupVersionKind().GroupKind()]
	template := append(slices.Clone(spec[:len(spec)-1]), "metadata", "labels")
	tl, _, _ := unstructured.NestedStringMap(w.Object, template...)
	if len(tl) == 0 {
		return nil, fmt.Errorf("it has neither a selector nor pod template labels")
	}
	return labels.SelectorFromSet(tl), nil
}
