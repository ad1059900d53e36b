package kubecluster

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/gkewi/gkewi/sandbox/toolpath"
)

// Tool versions; they must match the pins in the Makefile, which builds the
// binaries into the cache directory these defaults point at.
const (
	EtcdVersion       = "v3.6.16"
	KubernetesVersion = "v1.36.3"
	KwokVersion       = "v0.8.0"
)

// ErrToolMissing is wrapped by the errors Start returns when a binary is absent.
var ErrToolMissing = errors.New("tool missing")

// Tools are the paths of the binaries a cluster runs.
type Tools struct {
	Etcd                  string
	KubeAPIServer         string
	KubeControllerManager string
	KubeScheduler         string
	Kwok                  string
	// KwokStages is the file of kwok Stage objects that drive node and pod status.
	KwokStages string
}

// DefaultTools finds the binaries from GKEWI_ETCD, GKEWI_KUBE_DIR, GKEWI_KWOK and
// GKEWI_KWOK_STAGES, falling back to the cache paths `make tools` builds into.
func DefaultTools() Tools {
	toolsDir := toolpath.Dir()
	kubeDir := envOr("GKEWI_KUBE_DIR", filepath.Join(toolsDir, "kubernetes-"+KubernetesVersion))
	kwokDir := filepath.Join(toolsDir, "kwok-"+KwokVersion)
	return Tools{
		Etcd:                  envOr("GKEWI_ETCD", filepath.Join(toolsDir, "etcd-"+EtcdVersion, "etcd")),
		KubeAPIServer:         filepath.Join(kubeDir, "kube-apiserver"),
		KubeControllerManager: filepath.Join(kubeDir, "kube-controller-manager"),
		KubeScheduler:         filepath.Join(kubeDir, "kube-scheduler"),
		Kwok:                  envOr("GKEWI_KWOK", filepath.Join(kwokDir, "kwok")),
		KwokStages:            envOr("GKEWI_KWOK_STAGES", filepath.Join(kwokDir, "stages.yaml")),
	}
}

// withDefaults fills the empty paths of t from DefaultTools.
func (t Tools) withDefaults() Tools {
	d := DefaultTools()
	set := func(v *string, def string) {
		if *v == "" {
			*v = def
		}
	}
	set(&t.Etcd, d.Etcd)
	set(&t.KubeAPIServer, d.KubeAPIServer)
	set(&t.KubeControllerManager, d.KubeControllerManager)
	set(&t.KubeScheduler, d.KubeScheduler)
	set(&t.Kwok, d.Kwok)
	set(&t.KwokStages, d.KwokStages)
	return t
}

// Check reports every missing binary in one error wrapping ErrToolMissing.
func (t Tools) Check() error {
	d := t.withDefaults()
	var missing []string
	for _, f := range []struct{ name, path string }{
		{"etcd", d.Etcd},
		{"kube-apiserver", d.KubeAPIServer},
		{"kube-controller-manager", d.KubeControllerManager},
		{"kube-scheduler", d.KubeScheduler},
		{"kwok", d.Kwok},
		{"kwok stages", d.KwokStages},
	} {
		st, err := os.Stat(f.path)
		switch {
		case err != nil:
			missing = append(missing, fmt.Sprintf("%s not found at %s", f.name, f.path))
		case st.IsDir():
			missing = append(missing, fmt.Sprintf("%s at %s is a directory", f.name, f.path))
		}
	}
	if len(missing) == 0 {
		return nil
	}
	return fmt.Errorf("%w: %s (build them with `make tools`, or point GKEWI_ETCD, GKEWI_KUBE_DIR, GKEWI_KWOK, GKEWI_KWOK_STAGES at them)",
		ErrToolMissing, strings.Join(missing, "; "))
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}
