package activities

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"

	"go.temporal.io/sdk/temporal"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/version"
	applycorev1 "k8s.io/client-go/applyconfigurations/core/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/gkewi/gkewi/contract"
)

// Kubernetes names gkewi reads and writes.
const (
	// GSAAnnotation maps a KSA to the Google service account it acts as.
	GSAAnnotation = "iam.gke.io/gcp-service-account"
	// KubeFieldManager owns the fields gkewi sets with server-side apply.
	KubeFieldManager = "gkewi"

	// Helm's ownership metadata: with it, `helm install` adopts an existing
	// object instead of refusing to touch it.
	helmManagedByLabel         = "app.kubernetes.io/managed-by"
	helmReleaseNameAnnotation  = "meta.helm.sh/release-name"
	helmReleaseNSAnnotation    = "meta.helm.sh/release-namespace"
	helmInstanceLabel          = "app.kubernetes.io/instance"
	istioInjectionLabel        = "istio-injection"
	istioRevisionLabel         = "istio.io/rev"
	kubeMaxServiceAccountsHint = 3000
)

// Kube holds the Kubernetes steps on the workload's cluster.
type Kube struct {
	clusters *Clusters
}

// NewKube returns the Kubernetes activities working on one cluster through client.
func NewKube(client kubernetes.Interface) *Kube {
	return &Kube{clusters: OneCluster(nil, client)}
}

// NewKubeFor returns the Kubernetes activities working on each request's cluster.
func NewKubeFor(clusters *Clusters) *Kube {
	return &Kube{clusters: clusters}
}

// Preflight refuses what Workload Identity cannot serve and warns about the rest,
// before anything is changed.
//
// Refused: a cluster older than 1.12, and pods of the release running as the KSA
// with hostNetwork (they reach the node's metadata server, not GKE's). Warned:
// Istio sidecar injection in the namespace, and more than 3000 KSAs in the cluster.
func (k *Kube) Preflight(ctx context.Context, in PreflightInput) (StepResult, error) {
	if in.Namespace == "" || in.KSA == "" {
		return StepResult{}, kubeInvalidInput("preflight: namespace and ksa are required")
	}
	client, err := k.clusters.Client(in.Cluster)
	if err != nil {
		return StepResult{}, err
	}
	var res StepResult
	var checked []string

	sv, err := client.Discovery().ServerVersion()
	if err != nil {
		return StepResult{}, classifyKubeError("preflight: reading the cluster version", err)
	}
	v, err := version.ParseGeneric(sv.GitVersion)
	switch {
	case err != nil || (v.Major() == 0 && v.Minor() == 0):
		// Builds without version stamping report v0.0.0-master: unknown, not old.
		res.Warnings = append(res.Warnings, fmt.Sprintf("the cluster reports no usable version (%q); the Kubernetes 1.12 minimum was not checked", sv.GitVersion))
	case v.LessThan(version.MajorMinor(1, 12)):
		return StepResult{}, temporal.NewNonRetryableApplicationError(
			fmt.Sprintf("preflight: cluster version %s is older than 1.12, the first with Workload Identity; upgrade the cluster first", sv.GitVersion),
			contract.ErrTypePreflightRefused, nil)
	default:
		checked = append(checked, "version "+sv.GitVersion)
	}

	ns, err := client.CoreV1().Namespaces().Get(ctx, in.Namespace, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		checked = append(checked, "namespace absent (will be created)")
	case err != nil:
		return StepResult{}, classifyKubeError("preflight: reading namespace "+in.Namespace, err)
	default:
		if w := istioWarning(ns); w != "" {
			res.Warnings = append(res.Warnings, w)
		}
		if in.Release != "" {
			refused, err := hostNetworkPods(ctx, client, in)
			if err != nil {
				return StepResult{}, err
			}
			if len(refused) > 0 {
				return StepResult{}, temporal.NewNonRetryableApplicationError(
					fmt.Sprintf("preflight: pods %s of release %q run as %s/%s with hostNetwork: true; Workload Identity cannot serve pods on the host network (they reach the node's metadata server, not the GKE metadata server). Turn hostNetwork off for these workloads or use another service account for them",
						strings.Join(refused, ", "), in.Release, in.Namespace, in.KSA),
					contract.ErrTypePreflightRefused, nil)
			}
			checked = append(checked, "no hostNetwork pods")
		}
	}

	count, err := countServiceAccounts(ctx, client, kubeMaxServiceAccountsHint+1)
	switch {
	case apierrors.IsForbidden(err):
		// Only a warning depends on it; do not block the onboarding.
		res.Warnings = append(res.Warnings, "could not count the cluster's Kubernetes service accounts (list serviceaccounts at cluster scope is not allowed); the 3000-KSA check was skipped")
	case err != nil:
		return StepResult{}, classifyKubeError("preflight: counting service accounts", err)
	case count > kubeMaxServiceAccountsHint:
		res.Warnings = append(res.Warnings, fmt.Sprintf(
			"the cluster has more than %d Kubernetes service accounts, above what GKE documents for Workload Identity; token exchanges may be throttled", kubeMaxServiceAccountsHint))
	default:
		checked = append(checked, fmt.Sprintf("%d service accounts", count))
	}

	res.Detail = "preflight passed: " + strings.Join(checked, ", ")
	return res, nil
}

func istioWarning(ns *corev1.Namespace) string {
	label := ""
	if ns.Labels[istioInjectionLabel] == "enabled" {
		label = istioInjectionLabel + "=enabled"
	} else if rev, ok := ns.Labels[istioRevisionLabel]; ok {
		label = istioRevisionLabel + "=" + rev
	}
	if label == "" {
		return ""
	}
	return fmt.Sprintf("namespace %s has Istio sidecar injection (%s): the GKE metadata server is reachable only once the sidecar runs, so init containers and early requests get no credentials; set holdApplicationUntilProxyStarts or exclude 169.254.169.254 from the sidecar's traffic capture", ns.Name, label)
}

// hostNetworkPods lists the release's pods that use the KSA on the host network.
func hostNetworkPods(ctx context.Context, client kubernetes.Interface, in PreflightInput) ([]string, error) {
	var names []string
	opts := metav1.ListOptions{LabelSelector: helmInstanceLabel + "=" + in.Release, Limit: 500}
	for {
		pods, err := client.CoreV1().Pods(in.Namespace).List(ctx, opts)
		if err != nil {
			return nil, classifyKubeError("preflight: listing the release's pods", err)
		}
		for _, p := range pods.Items {
			sa := p.Spec.ServiceAccountName
			if sa == "" {
				sa = "default"
			}
			if sa == in.KSA && p.Spec.HostNetwork {
				names = append(names, p.Name)
			}
		}
		if pods.Continue == "" {
			break
		}
		opts.Continue = pods.Continue
	}
	sort.Strings(names)
	return names, nil
}

// countServiceAccounts counts the cluster's KSAs, stopping at limit.
func countServiceAccounts(ctx context.Context, client kubernetes.Interface, limit int) (int, error) {
	count := 0
	opts := metav1.ListOptions{Limit: 500}
	for {
		list, err := client.CoreV1().ServiceAccounts(metav1.NamespaceAll).List(ctx, opts)
		if err != nil {
			return 0, err
		}
		count += len(list.Items)
		if list.Continue == "" || count >= limit {
			return count, nil
		}
		opts.Continue = list.Continue
	}
}

// AnnotateServiceAccount ensures the namespace and the KSA, annotated with the GSA.
//
// A KSA that does not exist yet is created with Helm's ownership metadata for
// in.Release, so the chart's install adopts it. On an existing KSA only the
// annotation is applied (server-side apply, field manager "gkewi"), plus that
// metadata when no release owns it yet.
func (k *Kube) AnnotateServiceAccount(ctx context.Context, in AnnotateInput) (StepResult, error) {
	if in.Namespace == "" || in.KSA == "" || in.GSAEmail == "" {
		return StepResult{}, kubeInvalidInput("annotate: namespace, ksa and gsaEmail are required")
	}
	client, err := k.clusters.Client(in.Cluster)
	if err != nil {
		return StepResult{}, err
	}
	nsCreated, err := ensureNamespace(ctx, client, in.Namespace)
	if err != nil {
		return StepResult{}, err
	}
	target := in.Namespace + "/" + in.KSA

	sa, err := client.CoreV1().ServiceAccounts(in.Namespace).Get(ctx, in.KSA, metav1.GetOptions{})
	if apierrors.IsNotFound(err) && in.MustExist {
		return StepResult{}, temporal.NewNonRetryableApplicationError(
			fmt.Sprintf("annotate: %s does not exist; the release's workloads run as it: create it, then run the onboarding again", target),
			contract.ErrTypeNotFound, nil)
	}
	if apierrors.IsNotFound(err) {
		sa = &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{
			Name:        in.KSA,
			Namespace:   in.Namespace,
			Annotations: map[string]string{GSAAnnotation: in.GSAEmail},
		}}
		if in.Release != "" {
			sa.Labels = map[string]string{helmManagedByLabel: "Helm"}
			sa.Annotations[helmReleaseNameAnnotation] = in.Release
			sa.Annotations[helmReleaseNSAnnotation] = in.Namespace
		}
		_, err = client.CoreV1().ServiceAccounts(in.Namespace).Create(ctx, sa, metav1.CreateOptions{FieldManager: KubeFieldManager})
		if err == nil {
			detail := fmt.Sprintf("created %s annotated %s=%s", target, GSAAnnotation, in.GSAEmail)
			if in.Release != "" {
				detail += fmt.Sprintf(", owned by Helm release %q", in.Release)
			}
			return StepResult{Changed: true, Detail: detail}, nil
		}
		if !apierrors.IsAlreadyExists(err) {
			return StepResult{}, classifyKubeError("annotate: creating "+target, err)
		}
		// Created meanwhile (the chart, most likely): annotate the existing object.
		sa, err = client.CoreV1().ServiceAccounts(in.Namespace).Get(ctx, in.KSA, metav1.GetOptions{})
	}
	if err != nil {
		return StepResult{}, classifyKubeError("annotate: reading "+target, err)
	}

	var res StepResult
	apply := applycorev1.ServiceAccount(in.KSA, in.Namespace).WithAnnotations(map[string]string{GSAAnnotation: in.GSAEmail})
	needsApply := sa.Annotations[GSAAnnotation] != in.GSAEmail
	adopting := false
	if in.Release != "" {
		owner, hasOwner := sa.Annotations[helmReleaseNameAnnotation]
		if !hasOwner || (owner == in.Release && sa.Annotations[helmReleaseNSAnnotation] == in.Namespace) {
			// Always part of gkewi's applied configuration while it holds it, so a
			// later apply of the annotation alone cannot drop it.
			apply.WithLabels(map[string]string{helmManagedByLabel: "Helm"}).
				WithAnnotations(map[string]string{helmReleaseNameAnnotation: in.Release, helmReleaseNSAnnotation: in.Namespace})
			if !hasOwner || sa.Labels[helmManagedByLabel] != "Helm" {
				needsApply, adopting = true, true
			}
		} else {
			res.Warnings = append(res.Warnings, fmt.Sprintf(
				"%s belongs to Helm release %q in %q, not %q: installing release %q will fail on its ownership",
				target, owner, sa.Annotations[helmReleaseNSAnnotation], in.Release, in.Release))
		}
	}
	if !needsApply {
		res.Changed = nsCreated
		res.Detail = fmt.Sprintf("%s already annotated %s=%s", target, GSAAnnotation, in.GSAEmail)
		return res, nil
	}
	// Force: the approved mapping wins over another manager's value of the same
	// field. Helm later applies the same value, so the two managers share it.
	if _, err := client.CoreV1().ServiceAccounts(in.Namespace).Apply(ctx, apply,
		metav1.ApplyOptions{FieldManager: KubeFieldManager, Force: true}); err != nil {
		return StepResult{}, classifyKubeError("annotate: applying the annotation to "+target, err)
	}
	res.Changed = true
	res.Detail = fmt.Sprintf("annotated %s %s=%s", target, GSAAnnotation, in.GSAEmail)
	if prev := sa.Annotations[GSAAnnotation]; prev != "" && prev != in.GSAEmail {
		res.Detail += " (was " + prev + ")"
	}
	if adopting {
		res.Detail += fmt.Sprintf(", with Helm ownership metadata for release %q", in.Release)
	}
	return res, nil
}

// RemoveServiceAccountAnnotation removes the GSA annotation from the KSA. The
// annotation is left alone when it names another GSA than in.GSAEmail (when set):
// it belongs to another grant.
func (k *Kube) RemoveServiceAccountAnnotation(ctx context.Context, in AnnotateInput) (StepResult, error) {
	if in.Namespace == "" || in.KSA == "" {
		return StepResult{}, kubeInvalidInput("remove annotation: namespace and ksa are required")
	}
	client, err := k.clusters.Client(in.Cluster)
	if err != nil {
		return StepResult{}, err
	}
	target := in.Namespace + "/" + in.KSA
	sa, err := client.CoreV1().ServiceAccounts(in.Namespace).Get(ctx, in.KSA, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return StepResult{Detail: target + " does not exist; nothing to remove"}, nil
	}
	if err != nil {
		return StepResult{}, classifyKubeError("remove annotation: reading "+target, err)
	}
	current, ok := sa.Annotations[GSAAnnotation]
	if !ok {
		return StepResult{Detail: fmt.Sprintf("%s has no %s annotation", target, GSAAnnotation)}, nil
	}
	if in.GSAEmail != "" && current != in.GSAEmail {
		return StepResult{
			Detail:   fmt.Sprintf("%s is annotated for %s, not %s; left unchanged", target, current, in.GSAEmail),
			Warnings: []string{fmt.Sprintf("%s now maps to %s, another grant; its annotation was kept", target, current)},
		}, nil
	}
	// The test operation makes the removal fail, and the activity retry re-read,
	// if the annotation changed since the read above.
	path := "/metadata/annotations/" + strings.ReplaceAll(strings.ReplaceAll(GSAAnnotation, "~", "~0"), "/", "~1")
	patch, err := json.Marshal([]map[string]any{
		{"op": "test", "path": path, "value": current},
		{"op": "remove", "path": path},
	})
	if err != nil {
		return StepResult{}, err
	}
	_, err = client.CoreV1().ServiceAccounts(in.Namespace).Patch(ctx, in.KSA, types.JSONPatchType, patch,
		metav1.PatchOptions{FieldManager: KubeFieldManager})
	if apierrors.IsInvalid(err) {
		return StepResult{}, temporal.NewApplicationErrorWithCause(
			fmt.Sprintf("remove annotation: %s changed meanwhile (will retry)", target), contract.ErrTypeConcurrentChange, err)
	}
	if err != nil {
		return StepResult{}, classifyKubeError("remove annotation: patching "+target, err)
	}
	return StepResult{Changed: true, Detail: fmt.Sprintf("removed %s=%s from %s", GSAAnnotation, current, target)}, nil
}

// ensureNamespace creates the namespace if it is missing and says whether it did.
func ensureNamespace(ctx context.Context, client kubernetes.Interface, name string) (bool, error) {
	_, err := client.CoreV1().Namespaces().Get(ctx, name, metav1.GetOptions{})
	if err == nil {
		return false, nil
	}
	if !apierrors.IsNotFound(err) {
		return false, classifyKubeError("reading namespace "+name, err)
	}
	_, err = client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}},
		metav1.CreateOptions{FieldManager: KubeFieldManager})
	if apierrors.IsAlreadyExists(err) {
		return false, nil
	}
	if err != nil {
		return false, classifyKubeError("creating namespace "+name, err)
	}
	return true, nil
}

// RequestKSAToken asks the API server for a token of a Kubernetes service account
// with the given audience, as the GKE metadata server does with audience
// PROJECT.svc.id.goog. The API server refuses lifetimes under 10 minutes, so
// shorter ones are raised to 10 minutes. The token is a credential: keep it out
// of activity results, logs and errors.
func RequestKSAToken(ctx context.Context, client kubernetes.Interface, namespace, ksa, audience string, lifetime time.Duration) (string, time.Time, error) {
	if namespace == "" || ksa == "" || audience == "" {
		return "", time.Time{}, kubeInvalidInput("token request: namespace, ksa and audience are required")
	}
	seconds := int64(lifetime / time.Second)
	if seconds < 600 {
		seconds = 600
	}
	tr, err := client.CoreV1().ServiceAccounts(namespace).CreateToken(ctx, ksa, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{Audiences: []string{audience}, ExpirationSeconds: &seconds},
	}, metav1.CreateOptions{})
	if err != nil {
		return "", time.Time{}, classifyKubeError(fmt.Sprintf("requesting a token for %s/%s", namespace, ksa), err)
	}
	return tr.Status.Token, tr.Status.ExpirationTimestamp.Time, nil
}
