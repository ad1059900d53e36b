package main

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/oauth2"
	"google.golang.org/api/cloudresourcemanager/v3"
	"google.golang.org/api/container/v1"
	"google.golang.org/api/iam/v1"
	"google.golang.org/api/option"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/gkewi/gkewi/activities"
	"github.com/gkewi/gkewi/sandbox/stack"
)

// The proofs read each system directly, with its official client and an
// identity of their own, never from the workflow's account of what it did.

// inspectorPrincipal is the emulated project owner the proofs read Google Cloud as.
const inspectorPrincipal = "user:owner@example.com"

type inspector struct {
	sb        *stack.Sandbox
	endpoints activities.GCPEndpoints
	opts      []option.ClientOption
}

func newInspector(sb *stack.Sandbox) *inspector {
	tok := sb.Emulator().MintAccessToken(inspectorPrincipal)
	return &inspector{
		sb:        sb,
		endpoints: activities.GCPEndpointsFromMap(sb.GCPEndpoints()),
		opts:      []option.ClientOption{option.WithTokenSource(oauth2.StaticTokenSource(&oauth2.Token{AccessToken: tok}))},
	}
}

// gsaProof is a Google service account and who may act as it.
type gsaProof struct {
	Exists   bool                `json:"exists"`
	Email    string              `json:"email"`
	UniqueID string              `json:"uniqueId,omitempty"`
	Bindings map[string][]string `json:"bindings,omitempty"`
}

func (in *inspector) gsa(ctx context.Context, email string) (gsaProof, error) {
	svc, err := iam.NewService(ctx, in.endpoints.ClientOptions(activities.APIIAM, in.opts...)...)
	if err != nil {
		return gsaProof{}, err
	}
	name := "projects/-/serviceAccounts/" + email
	sa, err := svc.Projects.ServiceAccounts.Get(name).Context(ctx).Do()
	if activities.IsNotFound(err) {
		return gsaProof{Email: email}, nil
	}
	if err != nil {
		return gsaProof{}, fmt.Errorf("reading %s: %w", email, err)
	}
	pol, err := svc.Projects.ServiceAccounts.GetIamPolicy(name).Context(ctx).Do()
	if err != nil {
		return gsaProof{}, fmt.Errorf("reading the IAM policy of %s: %w", email, err)
	}
	p := gsaProof{Exists: true, Email: sa.Email, UniqueID: sa.UniqueId, Bindings: map[string][]string{}}
	for _, b := range pol.Bindings {
		p.Bindings[b.Role] = append(p.Bindings[b.Role], b.Members...)
	}
	return p, nil
}

// projectRoles lists the roles member holds on a project's IAM policy.
func (in *inspector) projectRoles(ctx context.Context, project, member string) ([]string, error) {
	svc, err := cloudresourcemanager.NewService(ctx, in.endpoints.ClientOptions(activities.APIResourceManager, in.opts...)...)
	if err != nil {
		return nil, err
	}
	pol, err := svc.Projects.GetIamPolicy("projects/"+project, &cloudresourcemanager.GetIamPolicyRequest{}).Context(ctx).Do()
	if err != nil {
		return nil, fmt.Errorf("reading the IAM policy of project %s: %w", project, err)
	}
	var roles []string
	for _, b := range pol.Bindings {
		for _, m := range b.Members {
			if strings.EqualFold(m, member) {
				roles = append(roles, b.Role)
			}
		}
	}
	sort.Strings(roles)
	return roles, nil
}

// clusterProof is the cluster's Workload Identity settings, from GKE, and what
// the nodes say.
type clusterProof struct {
	WorkloadPool  string            `json:"workloadPool"`
	NodePoolModes map[string]string `json:"nodePoolModes"`
	// MetadataNodes counts, per pool, nodes labelled as serving the GKE metadata server.
	MetadataNodes map[string]string `json:"metadataNodes"`
}

func (in *inspector) cluster(ctx context.Context) (clusterProof, error) {
	c := in.sb.Cluster()
	svc, err := container.NewService(ctx, in.endpoints.ClientOptions(activities.APIContainer, in.opts...)...)
	if err != nil {
		return clusterProof{}, err
	}
	cl, err := svc.Projects.Locations.Clusters.Get(fmt.Sprintf("projects/%s/locations/%s/clusters/%s", c.Project, c.Location, c.Name)).Context(ctx).Do()
	if err != nil {
		return clusterProof{}, fmt.Errorf("reading cluster %s: %w", c.Name, err)
	}
	p := clusterProof{NodePoolModes: map[string]string{}, MetadataNodes: map[string]string{}}
	if cl.WorkloadIdentityConfig != nil {
		p.WorkloadPool = cl.WorkloadIdentityConfig.WorkloadPool
	}
	for _, np := range cl.NodePools {
		mode := "unset"
		if np.Config != nil && np.Config.WorkloadMetadataConfig != nil {
			mode = np.Config.WorkloadMetadataConfig.Mode
		}
		p.NodePoolModes[np.Name] = mode
	}
	nodes, err := in.sb.KubeClient().CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return clusterProof{}, err
	}
	total, labelled := map[string]int{}, map[string]int{}
	for _, n := range nodes.Items {
		pool := n.Labels["cloud.google.com/gke-nodepool"]
		total[pool]++
		if n.Labels["iam.gke.io/gke-metadata-server-enabled"] == "true" {
			labelled[pool]++
		}
	}
	for pool, n := range total {
		p.MetadataNodes[pool] = fmt.Sprintf("%d/%d", labelled[pool], n)
	}
	return p, nil
}

// ksaAnnotation is the KSA's GSA annotation; ok is false when the KSA is missing.
func (in *inspector) ksaAnnotation(ctx context.Context, ns, name string) (string, bool, error) {
	sa, err := in.sb.KubeClient().CoreV1().ServiceAccounts(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		if apierrors.IsNotFound(err) {
			return "", false, nil
		}
		return "", false, err
	}
	return sa.Annotations[activities.GSAAnnotation], true, nil
}

// helmProof is the deployed Helm release, decoded from its storage Secret.
type helmProof struct {
	Release  string         `json:"release"`
	Revision int            `json:"revision"`
	Status   string         `json:"status"`
	Chart    string         `json:"chart"`
	Values   map[string]any `json:"-"`
}

// helmRelease reads the newest revision of a release from Helm's Secret storage
// (sh.helm.release.v1.NAME.vN: base64 of gzipped JSON).
func (in *inspector) helmRelease(ctx context.Context, ns, release string) (helmProof, error) {
	secrets, err := in.sb.KubeClient().CoreV1().Secrets(ns).List(ctx, metav1.ListOptions{LabelSelector: "owner=helm,name=" + release})
	if err != nil {
		return helmProof{}, err
	}
	var newest *corev1.Secret
	best := 0
	for i := range secrets.Items {
		v, _ := strconv.Atoi(secrets.Items[i].Labels["version"])
		if v > best {
			best, newest = v, &secrets.Items[i]
		}
	}
	if newest == nil {
		return helmProof{}, fmt.Errorf("no Helm release %q in namespace %s", release, ns)
	}
	raw, err := base64.StdEncoding.DecodeString(string(newest.Data["release"]))
	if err != nil {
		return helmProof{}, fmt.Errorf("decoding release secret %s: %w", newest.Name, err)
	}
	if bytes.HasPrefix(raw, []byte{0x1f, 0x8b}) {
		zr, err := gzip.NewReader(bytes.NewReader(raw))
		if err != nil {
			return helmProof{}, err
		}
		if raw, err = io.ReadAll(zr); err != nil {
			return helmProof{}, err
		}
	}
	var rel struct {
		Name    string `json:"name"`
		Version int    `json:"version"`
		Info    struct {
			Status string `json:"status"`
		} `json:"info"`
		Chart struct {
			Metadata struct {
				Name    string `json:"name"`
				Version string `json:"version"`
			} `json:"metadata"`
		} `json:"chart"`
		Config map[string]any `json:"config"`
	}
	if err := json.Unmarshal(raw, &rel); err != nil {
		return helmProof{}, fmt.Errorf("decoding release secret %s: %w", newest.Name, err)
	}
	return helmProof{
		Release: rel.Name, Revision: rel.Version, Status: rel.Info.Status,
		Chart: rel.Chart.Metadata.Name + "-" + rel.Chart.Metadata.Version, Values: rel.Config,
	}, nil
}

// workloadProof is what the release's Deployments run with.
type workloadProof struct {
	Deployment string            `json:"deployment"`
	Ready      string            `json:"ready"`
	KSA        string            `json:"serviceAccount"`
	Env        map[string]string `json:"env"`
}

// workloads reads the release's Deployments: their service account, readiness
// and WORKSPACE_WORKLOAD_IDENTITY_* environment.
func (in *inspector) workloads(ctx context.Context, ns, release string) ([]workloadProof, error) {
	deps, err := in.sb.KubeClient().AppsV1().Deployments(ns).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/instance=" + release})
	if err != nil {
		return nil, err
	}
	var out []workloadProof
	for _, d := range deps.Items {
		want := int32(1)
		if d.Spec.Replicas != nil {
			want = *d.Spec.Replicas
		}
		w := workloadProof{Deployment: d.Name, Ready: fmt.Sprintf("%d/%d", d.Status.ReadyReplicas, want),
			KSA: d.Spec.Template.Spec.ServiceAccountName, Env: map[string]string{}}
		for _, c := range d.Spec.Template.Spec.Containers {
			for _, e := range c.Env {
				if strings.HasPrefix(e.Name, "WORKSPACE_WORKLOAD_IDENTITY_") {
					w.Env[e.Name] = e.Value
				}
			}
			// Charts since 2024 put the connection in the component's ConfigMap.
			for _, from := range c.EnvFrom {
				if from.ConfigMapRef == nil {
					continue
				}
				cm, err := in.sb.KubeClient().CoreV1().ConfigMaps(ns).Get(ctx, from.ConfigMapRef.Name, metav1.GetOptions{})
				if err != nil {
					return nil, err
				}
				for k, v := range cm.Data {
					if strings.HasPrefix(k, "WORKSPACE_WORKLOAD_IDENTITY_") {
						w.Env[k] = v
					}
				}
			}
		}
		out = append(out, w)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Deployment < out[j].Deployment })
	return out, nil
}

// verify walks the token chain a pod of the release would, from this process.
func (in *inspector) verify(ctx context.Context, vi activities.VerifyInput) (activities.VerifyResult, error) {
	v := activities.NewVerifier(in.sb.KubeClient(), in.endpoints)
	return v.VerifyAccess(ctx, vi)
}
