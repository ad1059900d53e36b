package activities

import (
	"bytes"
	"context"
	"fmt"
	"sort"
	"strings"

	"go.temporal.io/sdk/temporal"
	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/client-go/kubernetes"
	"k8s.io/component-helpers/auth/rbac/validation"
	"sigs.k8s.io/yaml"

	"github.com/gkewi/gkewi/contract"
)

// AccessInput asks whether the worker may do all of Access on the cluster.
type AccessInput struct {
	Cluster ClusterRef `json:"cluster"`
	// Namespace and Release name the Role printed for what is missing.
	Namespace string       `json:"namespace"`
	Release   string       `json:"release"`
	Access    []AccessRule `json:"access"`
}

// CheckAccess asks the API server whether the worker may do everything the
// release needs: what the worker's rules in the namespace (one
// SelfSubjectRulesReview per namespace) cover is allowed; everything else, and
// every cluster-scoped permission, is asked with a SelfSubjectAccessReview, as
// the listed rules can be incomplete. What is missing fails the step, before any
// change, naming each permission, with the Role (and ClusterRole) and bindings
// that grant exactly those.
func (k *Kube) CheckAccess(ctx context.Context, in AccessInput) (StepResult, error) {
	if in.Release == "" || len(in.Access) == 0 {
		return StepResult{}, kubeInvalidInput("access check: release and access are required")
	}
	client, err := k.clusters.Client(in.Cluster)
	if err != nil {
		return StepResult{}, err
	}
	var missing []AccessRule
	listed := map[string][]rbacv1.PolicyRule{}
	checks, asked := 0, 0
	for _, r := range in.Access {
		resource, sub, _ := strings.Cut(r.Resource, "/")
		if _, ok := listed[r.Namespace]; !ok && r.Namespace != "" {
			listed[r.Namespace] = listedRules(ctx, client, r.Namespace)
		}
		var denied []string
		for _, verb := range r.Verbs {
			checks++
			want := rbacv1.PolicyRule{APIGroups: []string{r.Group}, Resources: []string{r.Resource}, Verbs: []string{verb}}
			if covered, _ := validation.Covers(listed[r.Namespace], []rbacv1.PolicyRule{want}); covered {
				continue
			}
			asked++
			review, err := client.AuthorizationV1().SelfSubjectAccessReviews().Create(ctx, &authorizationv1.SelfSubjectAccessReview{
				Spec: authorizationv1.SelfSubjectAccessReviewSpec{ResourceAttributes: &authorizationv1.ResourceAttributes{
					Namespace: r.Namespace, Verb: verb, Group: r.Group, Resource: resource, Subresource: sub,
				}},
			}, metav1.CreateOptions{})
			if err != nil {
				return StepResult{}, classifyKubeError("access check: asking the API server", err)
			}
			if !review.Status.Allowed {
				denied = append(denied, verb)
			}
		}
		if len(denied) > 0 {
			m := r
			m.Verbs = denied
			missing = append(missing, m)
		}
	}
	if len(missing) == 0 {
		return StepResult{Detail: fmt.Sprintf("the worker may do all %d things the release needs (%d resources; %d asked one by one)", checks, len(in.Access), asked)}, nil
	}
	subject := workerSubject(ctx, client)
	manifest, err := AccessManifests(missing, in.Namespace, in.Release, subject)
	if err != nil {
		return StepResult{}, err
	}
	lines := make([]string, 0, len(missing))
	for _, m := range missing {
		lines = append(lines, "  - "+m.String())
	}
	return StepResult{}, temporal.NewNonRetryableApplicationError(fmt.Sprintf(
		"access check: the worker (%s) may not do what release %s needs; nothing was changed. Missing:\n%s\nApply this (`gkewi rbac -f REQUEST` prints the whole set for the release), then start the onboarding again:\n%s",
		subjectString(subject), in.Release, strings.Join(lines, "\n"), manifest), contract.ErrTypeAccessMissing, nil, missing)
}

// listedRules are the worker's rules in namespace ns as the API server lists
// them; none when it does not (every permission is then asked one by one).
func listedRules(ctx context.Context, client kubernetes.Interface, ns string) []rbacv1.PolicyRule {
	review, err := client.AuthorizationV1().SelfSubjectRulesReviews().Create(ctx,
		&authorizationv1.SelfSubjectRulesReview{Spec: authorizationv1.SelfSubjectRulesReviewSpec{Namespace: ns}}, metav1.CreateOptions{})
	if err != nil {
		return nil
	}
	rules := make([]rbacv1.PolicyRule, 0, len(review.Status.ResourceRules))
	for _, rr := range review.Status.ResourceRules {
		rules = append(rules, rbacv1.PolicyRule{Verbs: rr.Verbs, APIGroups: rr.APIGroups, Resources: rr.Resources, ResourceNames: rr.ResourceNames})
	}
	return rules
}

func (r AccessRule) String() string {
	what := r.Resource
	if r.Group != "" {
		what = r.Group + "/" + r.Resource
	}
	where := "cluster-wide"
	if r.Namespace != "" {
		where = "in namespace " + r.Namespace
	}
	s := fmt.Sprintf("%s %s (%s)", what, where, strings.Join(r.Verbs, ", "))
	if r.Why != "" {
		s += ": " + r.Why
	}
	return s
}

// workerSubject is the worker's own identity as the API server sees it, as an
// RBAC subject; a placeholder when the API server does not say.
func workerSubject(ctx context.Context, client kubernetes.Interface) rbacv1.Subject {
	review, err := client.AuthenticationV1().SelfSubjectReviews().Create(ctx, &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
	if err != nil || review.Status.UserInfo.Username == "" {
		return rbacv1.Subject{Kind: rbacv1.ServiceAccountKind, Namespace: "gkewi-system", Name: "gkewi-worker"}
	}
	return SubjectOf(review.Status.UserInfo.Username)
}

// SubjectOf is the RBAC subject of a Kubernetes user name: a service account for
// "system:serviceaccount:NS:NAME", a user otherwise.
func SubjectOf(username string) rbacv1.Subject {
	if rest, ok := strings.CutPrefix(username, "system:serviceaccount:"); ok {
		if ns, name, ok := strings.Cut(rest, ":"); ok {
			return rbacv1.Subject{Kind: rbacv1.ServiceAccountKind, Namespace: ns, Name: name}
		}
	}
	return rbacv1.Subject{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: username}
}

func subjectString(s rbacv1.Subject) string {
	if s.Kind == rbacv1.ServiceAccountKind {
		return "service account " + s.Namespace + "/" + s.Name
	}
	return strings.ToLower(s.Kind) + " " + s.Name
}

// AccessManifests renders rules as RBAC objects bound to subject: a Role and
// RoleBinding per namespace named gkewi-release-RELEASE, and a ClusterRole and
// ClusterRoleBinding for the cluster-scoped rules named
// gkewi-release-NAMESPACE-RELEASE (namespace: the release's).
func AccessManifests(rules []AccessRule, namespace, release string, subject rbacv1.Subject) (string, error) {
	name := "gkewi-release-" + release
	byNS := map[string][]rbacv1.PolicyRule{}
	for _, r := range rules {
		byNS[r.Namespace] = append(byNS[r.Namespace], rbacv1.PolicyRule{
			APIGroups: []string{r.Group}, Resources: []string{r.Resource}, Verbs: sets.List(sets.New(r.Verbs...)),
		})
	}
	namespaces := make([]string, 0, len(byNS))
	for ns := range byNS {
		namespaces = append(namespaces, ns)
	}
	sort.Strings(namespaces)
	labels := map[string]string{"app.kubernetes.io/managed-by": "gkewi", "gkewi.io/release": release}
	var docs []any
	for _, ns := range namespaces {
		meta := metav1.ObjectMeta{Name: name, Namespace: ns, Labels: labels}
		if ns == "" {
			name := "gkewi-release-" + namespace + "-" + release
			meta.Name = name
			docs = append(docs,
				rbacv1.ClusterRole{TypeMeta: metav1.TypeMeta{APIVersion: "rbac.authorization.k8s.io/v1", Kind: "ClusterRole"}, ObjectMeta: meta, Rules: byNS[ns]},
				rbacv1.ClusterRoleBinding{TypeMeta: metav1.TypeMeta{APIVersion: "rbac.authorization.k8s.io/v1", Kind: "ClusterRoleBinding"}, ObjectMeta: meta,
					RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: name}, Subjects: []rbacv1.Subject{subject}})
			continue
		}
		docs = append(docs,
			rbacv1.Role{TypeMeta: metav1.TypeMeta{APIVersion: "rbac.authorization.k8s.io/v1", Kind: "Role"}, ObjectMeta: meta, Rules: byNS[ns]},
			rbacv1.RoleBinding{TypeMeta: metav1.TypeMeta{APIVersion: "rbac.authorization.k8s.io/v1", Kind: "RoleBinding"}, ObjectMeta: meta,
				RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: name}, Subjects: []rbacv1.Subject{subject}})
	}
	var buf bytes.Buffer
	for _, d := range docs {
		b, err := yaml.Marshal(d)
		if err != nil {
			return "", fmt.Errorf("rbac manifest: %w", err)
		}
		// creationTimestamp: null is noise in a manifest for people.
		b = bytes.ReplaceAll(b, []byte("  creationTimestamp: null\n"), nil)
		buf.WriteString("---\n")
		buf.Write(b)
	}
	return buf.String(), nil
}
