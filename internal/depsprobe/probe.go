package depsprobe

import (
	_ "github.com/stretchr/testify/require"
	_ "go.temporal.io/sdk/client"
	_ "go.temporal.io/sdk/testsuite"
	_ "go.temporal.io/sdk/worker"
	_ "go.uber.org/fx"
	_ "golang.org/x/oauth2"
	_ "google.golang.org/api/bigquery/v2"
	_ "google.golang.org/api/cloudresourcemanager/v1"
	_ "google.golang.org/api/cloudresourcemanager/v3"
	_ "google.golang.org/api/container/v1"
	_ "google.golang.org/api/iam/v1"
	_ "google.golang.org/api/iamcredentials/v1"
	_ "google.golang.org/api/serviceusage/v1"
	_ "google.golang.org/api/sts/v1"
	_ "helm.sh/helm/v4/pkg/action"
	_ "helm.sh/helm/v4/pkg/chart/v2/loader"
	_ "helm.sh/helm/v4/pkg/registry"
	_ "k8s.io/client-go/kubernetes"
	_ "k8s.io/client-go/tools/clientcmd"
	_ "sigs.k8s.io/yaml"
)
