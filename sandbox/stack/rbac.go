package stack

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/yaml"
)

// The worker's Kubernetes identity in the sandbox.
const (
	workerNamespace      = "gkewi-system"
	workerServiceAccount = "gkewi-worker"
	// workerReleaseRole is the ClusterRole of deploy/rbac/gkewi-worker.yaml for
	// release namespaces; the sandbox binds it cluster-wide, as tests use many.
	workerReleaseRole = "gkewi-worker-release"
	workerTokenTTL    = 48 * time.Hour
)

// setUpWorkerIdentity gives the worker the least-privilege RBAC an operator
// applies from deploy/rbac/gkewi-worker.yaml, and a kubeconfig with a token of
// its service account. With WorkerAsAdmin it gets the admin kubeconfig instead.
func (s *Sandbox) setUpWorkerIdentity(ctx context.Context) error {
	if s.opts.WorkerAsAdmin {
		s.workerKube = s.kube.KubeconfigPath()
		return nil
	}
	rbacFile := filepath.Join(s.opts.RepoDir, "deploy", "rbac", "gkewi-worker.yaml")
	raw, err := os.ReadFile(rbacFile)
	if err != nil {
		return fmt.Errorf("the worker's RBAC: %w", err)
	}
	client := s.kubeClient
	if _, err := client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: workerNamespace}},
		metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	if _, err := client.CoreV1().ServiceAccounts(workerNamespace).Create(ctx, &corev1.ServiceAccount{
		ObjectMeta: metav1.ObjectMeta{Name: workerServiceAccount,
			Annotations: map[string]string{"iam.gke.io/gcp-service-account": s.cfg.Operator}},
	}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	roles := 0
	for _, doc := range bytes.Split(raw, []byte("\n---")) {
		var meta metav1.TypeMeta
		if err := yaml.Unmarshal(doc, &meta); err != nil {
			return fmt.Errorf("%s: %w", rbacFile, err)
		}
		switch meta.Kind {
		case "ClusterRole":
			var role rbacv1.ClusterRole
			if err := yaml.UnmarshalStrict(doc, &role); err != nil {
				return fmt.Errorf("%s: %w", rbacFile, err)
			}
			if _, err := client.RbacV1().ClusterRoles().Create(ctx, &role, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
				return fmt.Errorf("creating ClusterRole %s: %w", role.Name, err)
			}
			roles++
		case "ClusterRoleBinding":
			var binding rbacv1.ClusterRoleBinding
			if err := yaml.UnmarshalStrict(doc, &binding); err != nil {
				return fmt.Errorf("%s: %w", rbacFile, err)
			}
			if _, err := client.RbacV1().ClusterRoleBindings().Create(ctx, &binding, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
				return fmt.Errorf("creating ClusterRoleBinding %s: %w", binding.Name, err)
			}
		}
	}
	if roles == 0 {
		return fmt.Errorf("%s holds no ClusterRole", rbacFile)
	}
	release := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "gkewi-sandbox:" + workerReleaseRole},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: workerReleaseRole},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: workerServiceAccount, Namespace: workerNamespace}},
	}
	if _, err := client.RbacV1().ClusterRoleBindings().Create(ctx, release, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("binding %s: %w", workerReleaseRole, err)
	}
	rc, err := s.kube.ServiceAccountRESTConfig(ctx, workerNamespace, workerServiceAccount, workerTokenTTL)
	if err != nil {
		return err
	}
	// One context per emulated cluster, named as gcloud names them, all on the
	// local control plane: the worker picks each request's cluster by name.
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["sandbox"] = &clientcmdapi.Cluster{Server: rc.Host, CertificateAuthorityData: rc.CAData}
	cfg.AuthInfos[workerServiceAccount] = &clientcmdapi.AuthInfo{Token: rc.BearerToken}
	clusters, err := s.cfg.Clusters()
	if err != nil {
		return err
	}
	for _, c := range clusters {
		cfg.Contexts[c.GKEContext()] = &clientcmdapi.Context{Cluster: "sandbox", AuthInfo: workerServiceAccount}
	}
	cfg.CurrentContext = clusters[0].GKEContext()
	s.workerKube = filepath.Join(s.dir, "worker.kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, s.workerKube); err != nil {
		return err
	}
	s.progress("worker runs as %s/%s with the RBAC of %s", workerNamespace, workerServiceAccount, rbacFile)
	return nil
}
