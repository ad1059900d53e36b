package worker

import (
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/temporal"

	"github.com/gkewi/gkewi/activities"
	"github.com/gkewi/gkewi/contract"
	"github.com/gkewi/gkewi/worker/config"
)

func writeKubeconfig(t *testing.T, current string, contexts map[string]string) string {
	t.Helper()
	body := "apiVersion: v1\nkind: Config\ncurrent-context: " + current + "\nclusters:\n"
	for name, server := range contexts {
		body += "- name: " + name + "\n  cluster:\n    server: " + server + "\n"
	}
	body += "users:\n- name: u\n  user:\n    token: not-a-secret\ncontexts:\n"
	for name := range contexts {
		body += "- name: " + name + "\n  context:\n    cluster: " + name + "\n    user: u\n"
	}
	path := filepath.Join(t.TempDir(), "kubeconfig")
	require.NoError(t, os.WriteFile(path, []byte(body), 0o600))
	return path
}

func host(t *testing.T, c *activities.Clusters, ref activities.ClusterRef) string {
	t.Helper()
	rc, err := c.Config(ref)
	require.NoError(t, err)
	return rc.Host
}

// Each request's cluster is reached through the context gcloud names for it; a
// cluster without one is refused (never served from another cluster's context).
func TestClustersByGKEContextName(t *testing.T) {
	path := writeKubeconfig(t, "gke_acme_europe-west1_prod", map[string]string{
		"gke_acme_europe-west1_prod":    "https://prod.example:443",
		"gke_acme_europe-west1_staging": "https://staging.example:443",
	})
	c, err := NewClusters(config.Config{Kubeconfig: path}, slog.New(slog.DiscardHandler))
	require.NoError(t, err)

	assert.Equal(t, "https://staging.example:443", host(t, c, activities.ClusterRef{Project: "acme", Location: "europe-west1", Cluster: "staging"}))
	assert.Equal(t, "https://prod.example:443", host(t, c, activities.ClusterRef{Project: "acme", Location: "europe-west1", Cluster: "prod"}))
	assert.Equal(t, "https://prod.example:443", host(t, c, activities.ClusterRef{}), "no cluster named: the current context")

	_, err = c.Client(activities.ClusterRef{Project: "acme", Location: "us-east1", Cluster: "dev"})
	var appErr *temporal.ApplicationError
	require.ErrorAs(t, err, &appErr)
	assert.Equal(t, contract.ErrTypeFailedPrecondition, appErr.Type())
	assert.True(t, appErr.NonRetryable())
	assert.Equal(t, "kubeconfig "+path+" has no context gke_acme_us-east1_dev for cluster acme/us-east1/dev "+
		"(it has gke_acme_europe-west1_prod, gke_acme_europe-west1_staging); add it with "+
		"`gcloud container clusters get-credentials dev --location us-east1 --project acme` and restart the worker", appErr.Message())
}

// A kubeconfig without gke_ contexts (one local cluster) serves every request
// from its current context, or the one configured.
func TestClustersFromOneContext(t *testing.T) {
	path := writeKubeconfig(t, "local", map[string]string{"local": "https://127.0.0.1:6443", "other": "https://10.0.0.9:6443"})
	ref := activities.ClusterRef{Project: "carto-sandbox", Location: "europe-west1", Cluster: "carto"}

	c, err := NewClusters(config.Config{Kubeconfig: path}, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	assert.Equal(t, "https://127.0.0.1:6443", host(t, c, ref))

	c, err = NewClusters(config.Config{Kubeconfig: path, KubeContext: "other"}, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	assert.Equal(t, "https://10.0.0.9:6443", host(t, c, ref))

	_, err = NewClusters(config.Config{Kubeconfig: path, KubeContext: "missing"}, slog.New(slog.DiscardHandler))
	assert.ErrorContains(t, err, "context was not found for specified context: missing")
}
