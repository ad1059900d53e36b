package activities

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"time"

	"google.golang.org/api/bigquery/v2"
	"google.golang.org/api/cloudresourcemanager/v3"
	"google.golang.org/api/container/v1"
	"google.golang.org/api/iam/v1"
	"google.golang.org/api/iamcredentials/v1"
	"google.golang.org/api/option"
	"google.golang.org/api/serviceusage/v1"
	"google.golang.org/api/sts/v1"
)

// Keys of GCPEndpointsFromMap, one per Google API gkewi calls.
const (
	APIServiceUsage    = "serviceusage"
	APIContainer       = "container"
	APIIAM             = "iam"
	APIResourceManager = "cloudresourcemanager"
	APIBigQuery        = "bigquery"
	APISTS             = "sts"
	APIIAMCredentials  = "iamcredentials"
)

// GCPEndpoints are the base URLs of the Google APIs. An empty field means the
// real Google endpoint; tests point them at an emulator.
type GCPEndpoints struct {
	ServiceUsage    string
	Container       string
	IAM             string
	ResourceManager string
	BigQuery        string
	STS             string
	IAMCredentials  string
}

// GCPEndpointsFromMap reads endpoints keyed by API name (APIServiceUsage, ...).
func GCPEndpointsFromMap(m map[string]string) GCPEndpoints {
	return GCPEndpoints{
		ServiceUsage:    m[APIServiceUsage],
		Container:       m[APIContainer],
		IAM:             m[APIIAM],
		ResourceManager: m[APIResourceManager],
		BigQuery:        m[APIBigQuery],
		STS:             m[APISTS],
		IAMCredentials:  m[APIIAMCredentials],
	}
}

// Endpoint returns the base URL for api, "" for the real Google endpoint.
func (e GCPEndpoints) Endpoint(api string) string {
	switch api {
	case APIServiceUsage:
		return e.ServiceUsage
	case APIContainer:
		return e.Container
	case APIIAM:
		return e.IAM
	case APIResourceManager:
		return e.ResourceManager
	case APIBigQuery:
		return e.BigQuery
	case APISTS:
		return e.STS
	case APIIAMCredentials:
		return e.IAMCredentials
	}
	return ""
}

// ClientOptions returns extra followed by the endpoint option for api, if any.
func (e GCPEndpoints) ClientOptions(api string, extra ...option.ClientOption) []option.ClientOption {
	opts := append([]option.ClientOption(nil), extra...)
	if ep := e.Endpoint(api); ep != "" {
		if !strings.HasSuffix(ep, "/") {
			ep += "/"
		}
		opts = append(opts, option.WithEndpoint(ep))
	}
	return opts
}

// NewSTSService builds a Security Token Service client. Token exchange takes no
// credentials, so the client sends none: it uses a plain HTTP client, which makes
// credential options in extra ineffective (an HTTP client in extra replaces it).
func NewSTSService(ctx context.Context, e GCPEndpoints, extra ...option.ClientOption) (*sts.Service, error) {
	opts := e.ClientOptions(APISTS, append([]option.ClientOption{option.WithHTTPClient(&http.Client{})}, extra...)...)
	return sts.NewService(ctx, opts...)
}

// NewIAMCredentialsService builds an IAM Credentials client; pass
// option.WithTokenSource to call it as a given principal.
func NewIAMCredentialsService(ctx context.Context, e GCPEndpoints, extra ...option.ClientOption) (*iamcredentials.Service, error) {
	return iamcredentials.NewService(ctx, e.ClientOptions(APIIAMCredentials, extra...)...)
}

// NewBigQueryService builds a BigQuery client; pass option.WithTokenSource to call
// it as a given principal.
func NewBigQueryService(ctx context.Context, e GCPEndpoints, extra ...option.ClientOption) (*bigquery.Service, error) {
	return bigquery.NewService(ctx, e.ClientOptions(APIBigQuery, extra...)...)
}

// GCPConfig configures the Google Cloud clients of the GCP activities.
type GCPConfig struct {
	Endpoints GCPEndpoints
	// Options are added to every client, e.g. a token source in tests. Without
	// credential options the clients use Application Default Credentials.
	Options []option.ClientOption
	// OperationPollInterval is how often long-running operations are polled;
	// default 2s.
	OperationPollInterval time.Duration
	// ConflictRetry bounds the in-activity retries of IAM read-modify-write cycles.
	ConflictRetry ConflictRetry
	// PolicyBatchWindow is how long a change to an IAM policy nobody in this
	// process is changing waits for concurrent changes to the same policy, so
	// they share one read and one write; default DefaultPolicyBatchWindow,
	// negative for none (changes still share a write when they queue behind
	// one in flight).
	PolicyBatchWindow time.Duration
	// PropagationTimeout is how long a just-created service account may stay
	// invisible to IAM policy calls before its absence counts as real; default 2m.
	PropagationTimeout time.Duration
	// OnPolicyWrite, when set, is told the number of changes each successful
	// setIamPolicy carried (more than one when concurrent changes coalesced).
	OnPolicyWrite func(changes int)
}

// GCP holds the Google Cloud steps, with one client per API.
type GCP struct {
	serviceUsage    *serviceusage.Service
	container       *container.Service
	iam             *iam.Service
	resourceManager *cloudresourcemanager.Service
	bigQuery        *bigquery.Service

	pollInterval       time.Duration
	conflictRetry      ConflictRetry
	propagationTimeout time.Duration
	locks              *resourceLocks
	policies           *policyBatcher
	onPolicyWrite      func(changes int)
}

// NewGCP builds the clients of the GCP activities.
func NewGCP(ctx context.Context, cfg GCPConfig) (*GCP, error) {
	g := &GCP{
		pollInterval:       cfg.OperationPollInterval,
		conflictRetry:      cfg.ConflictRetry.withDefaults(),
		propagationTimeout: cfg.PropagationTimeout,
		locks:              newResourceLocks(),
		onPolicyWrite:      cfg.OnPolicyWrite,
	}
	if g.pollInterval <= 0 {
		g.pollInterval = 2 * time.Second
	}
	window := cfg.PolicyBatchWindow
	if window == 0 {
		window = DefaultPolicyBatchWindow
	}
	g.policies = newPolicyBatcher(g, max(window, 0))
	if g.propagationTimeout <= 0 {
		g.propagationTimeout = 2 * time.Minute
	}
	eps, opts := cfg.Endpoints, cfg.Options
	var err error
	if g.serviceUsage, err = serviceusage.NewService(ctx, eps.ClientOptions(APIServiceUsage, opts...)...); err != nil {
		return nil, fmt.Errorf("service usage client: %w", err)
	}
	if g.container, err = container.NewService(ctx, eps.ClientOptions(APIContainer, opts...)...); err != nil {
		return nil, fmt.Errorf("GKE client: %w", err)
	}
	if g.iam, err = iam.NewService(ctx, eps.ClientOptions(APIIAM, opts...)...); err != nil {
		return nil, fmt.Errorf("IAM client: %w", err)
	}
	if g.resourceManager, err = cloudresourcemanager.NewService(ctx, eps.ClientOptions(APIResourceManager, opts...)...); err != nil {
		return nil, fmt.Errorf("resource manager client: %w", err)
	}
	if g.bigQuery, err = NewBigQueryService(ctx, eps, opts...); err != nil {
		return nil, fmt.Errorf("BigQuery client: %w", err)
	}
	return g, nil
}
