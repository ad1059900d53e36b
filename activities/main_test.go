package activities

import (
	"context"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/temporal"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/gkewi/gkewi/sandbox/kubecluster"
)

// The cluster the Kubernetes and Helm tests share: started by the first test that
// calls kubeTestCluster, never by a run that selects only other tests, and
// stopped after the run.
var sharedKubeCluster = kubecluster.NewShared(kubecluster.Options{
	Project:      kubeTestProject,
	Location:     "europe-west1",
	Cluster:      "carto",
	NodePools:    []string{"default-pool"},
	NodesPerPool: 2,
	// The node pool already runs the GKE metadata server.
	NodeLabels: map[string]string{"iam.gke.io/gke-metadata-server-enabled": "true"},
})

const kubeTestProject = "acme-prod"

func TestMain(m *testing.M) {
	os.Exit(sharedKubeCluster.Main(m))
}

// kubeTestCluster returns the shared cluster, starting it on first use. Without
// the control-plane binaries the test is skipped, or failed under CI=true.
func kubeTestCluster(t *testing.T) *kubecluster.Cluster {
	t.Helper()
	return sharedKubeCluster.Get(t)
}

// kubeTestNamespace creates a namespace of the test's own and deletes it after.
func kubeTestNamespace(t *testing.T, client kubernetes.Interface, prefix string) string {
	t.Helper()
	ns, err := client.CoreV1().Namespaces().Create(context.Background(),
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: prefix + "-"}}, metav1.CreateOptions{})
	require.NoError(t, err)
	t.Cleanup(func() {
		_ = client.CoreV1().Namespaces().Delete(context.Background(), ns.Name, metav1.DeleteOptions{})
	})
	return ns.Name
}

// kubeTestContext bounds one test's calls.
func kubeTestContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// requireKubeAppError asserts err is an ApplicationError of the type and retryability.
func requireKubeAppError(t *testing.T, err error, errType string, nonRetryable bool) *temporal.ApplicationError {
	t.Helper()
	require.Error(t, err)
	var appErr *temporal.ApplicationError
	require.True(t, errors.As(err, &appErr), "want an ApplicationError, got %T: %v", err, err)
	require.Equal(t, errType, appErr.Type(), "error: %v", err)
	require.Equal(t, nonRetryable, appErr.NonRetryable(), "non-retryable? error: %v", err)
	return appErr
}

// assertKubeAppError is requireKubeAppError for callers that need only the
// type and retryability checked.
func assertKubeAppError(t *testing.T, err error, errType string, nonRetryable bool) {
	t.Helper()
	_ = requireKubeAppError(t, err, errType, nonRetryable)
}
