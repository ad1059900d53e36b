// Package gcpemu is a local stand-in for the Google Cloud APIs gkewi calls. It
// speaks the real REST shapes (paths, JSON field names, long-running operations,
// error bodies) so the official google.golang.org/api clients work against it
// unchanged through option.WithEndpoint, and it enforces IAM on every call, so a
// missing grant fails here the way it fails in Google Cloud.
//
// One http.Handler serves every API under its own path prefix (see Endpoints)
// and at Google's own paths from the root (see RootURL), the GCE metadata
// server and an OpenID Connect issuer of Google-style ID tokens (oidc.go) at
// the root, and an admin API under /_emulator/.
package gcpemu

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"time"

	"k8s.io/client-go/rest"
)

// Service names, the keys of Endpoints.
const (
	ServiceUsage         = "serviceusage"
	Container            = "container"
	IAM                  = "iam"
	CloudResourceManager = "cloudresourcemanager"
	BigQuery             = "bigquery"
	STS                  = "sts"
	IAMCredentials       = "iamcredentials"
)

// Endpoints gives, for each service, the value to pass to option.WithEndpoint
// when the emulator is served at baseURL (e.g. "http://127.0.0.1:8085").
func Endpoints(baseURL string) map[string]string {
	base := strings.TrimRight(baseURL, "/")
	return map[string]string{
		ServiceUsage:         base + "/serviceusage/",
		Container:            base + "/container/",
		IAM:                  base + "/iam/",
		CloudResourceManager: base + "/cloudresourcemanager/",
		BigQuery:             base + "/bigquery/bigquery/v2/",
		STS:                  base + "/sts/",
		IAMCredentials:       base + "/iamcredentials/",
	}
}

// RootEndpoints is Endpoints for clients that reach the emulator through
// Google's own paths at its root (see root.go): every service's endpoint is
// the root, except BigQuery's, whose Go client takes the API's base path.
// Clients configured with a root URL (gcloud's api_endpoint_overrides, bq
// --api, googleapis' rootUrl) use baseURL itself for every service.
func RootEndpoints(baseURL string) map[string]string {
	base := strings.TrimRight(baseURL, "/") + "/"
	out := map[string]string{}
	for svc := range Endpoints(baseURL) {
		out[svc] = base
	}
	out[BigQuery] = base + "bigquery/v2/"
	return out
}

// Config describes the world the emulator starts with.
type Config struct {
	Projects []ProjectConfig `json:"projects"`
	// Operator is the email of the identity the worker runs as; the metadata server
	// hands out tokens for it.
	Operator string `json:"operator"`
	// IDTokenIssuer is the iss of the ID tokens the emulator signs and of its
	// OpenID discovery document (oidc.go); empty means the base URL a request
	// came in on ("http://" + Host).
	IDTokenIssuer string `json:"idTokenIssuer,omitempty"`
	// OperatorRoles are granted to Operator in every configured project's policy.
	OperatorRoles []string `json:"operatorRoles"`
	// OperationDuration is how long long-running operations stay RUNNING; 0 means
	// they are done when returned.
	OperationDuration time.Duration `json:"-"`
	// PropagationDelay is how long an IAM policy change takes to affect
	// permission checks.
	PropagationDelay time.Duration `json:"-"`
	// Latency sets how long each kind of operation runs, as on Google Cloud;
	// its zero fields fall back to OperationDuration.
	Latency OperationLatency `json:"-"`
	// TokenLifetime of tokens issued without an explicit lifetime; default 1h.
	TokenLifetime time.Duration `json:"-"`
	// IAMConsistency models IAM's eventual consistency for service accounts
	// (consistency.go); its zero value turns the model off.
	IAMConsistency IAMConsistency `json:"iamConsistency,omitempty"`
	// ServiceAccountQuota is the number of service accounts a project may hold;
	// default 100, IAM's default quota.
	ServiceAccountQuota int `json:"serviceAccountQuota,omitempty"`
	// ServiceEnableLag is how long a service enabled through Service Usage keeps
	// answering 403 SERVICE_DISABLED after its operation is done, as Google's
	// APIs do for a few minutes; 0 means enabled services answer at once.
	ServiceEnableLag time.Duration `json:"-"`
	// StateFile, when set, is loaded at start and saved after every change.
	StateFile string `json:"stateFile,omitempty"`
	// Faults are the initial fault-injection rules.
	Faults []FaultRule `json:"faults,omitempty"`
	// Seed seeds the random source used by fault injection; ignored when Rand is set.
	Seed uint64 `json:"seed,omitempty"`
	// Rand overrides the random source used by fault injection.
	Rand *rand.Rand `json:"-"`
	// Now is the clock; default time.Now.
	Now func() time.Time `json:"-"`
	// RequestLogSize bounds the recent-request log; default 1000.
	RequestLogSize int `json:"-"`
	// Logf, when set, receives one line per notable event (op done, relabel error).
	Logf func(format string, args ...any) `json:"-"`
}

// ProjectConfig is one Google Cloud project.
type ProjectConfig struct {
	ID       string          `json:"id"`
	Number   int64           `json:"number"`
	Clusters []ClusterConfig `json:"clusters,omitempty"`
	// EnabledServices are enabled at start (e.g. "container.googleapis.com").
	// Every service the emulator serves except iamcredentials is enabled when empty.
	EnabledServices []string `json:"enabledServices,omitempty"`
	// Datasets are BigQuery datasets that exist at start.
	Datasets []DatasetConfig `json:"datasets,omitempty"`
	// Bindings are extra project-level role bindings at start.
	Bindings []BindingConfig `json:"bindings,omitempty"`
}

// BindingConfig grants a role to members.
type BindingConfig struct {
	Role    string   `json:"role"`
	Members []string `json:"members"`
}

// DatasetConfig is a BigQuery dataset that exists at start.
type DatasetConfig struct {
	ID       string   `json:"id"`
	Location string   `json:"location,omitempty"`
	Tables   []string `json:"tables,omitempty"`
}

// ClusterConfig is one GKE cluster.
type ClusterConfig struct {
	Location  string   `json:"location"`
	Name      string   `json:"name"`
	NodePools []string `json:"nodePools"`
	// Kube is the local kube-apiserver standing in for the cluster: node pools are
	// relabelled there and its service-account JWKS verifies KSA tokens.
	Kube *rest.Config `json:"-"`
	// WorkloadPool is the initial workload pool; empty means Workload Identity off.
	WorkloadPool string `json:"workloadPool,omitempty"`
	// JWKS, when set, supplies the cluster's service-account signing keys (a JSON
	// Web Key Set document) instead of fetching them from Kube.
	JWKS func() ([]byte, error) `json:"-"`
	// Nodes, when set, is used instead of Kube to relabel node pools.
	Nodes NodeLabeler `json:"-"`
	// MasterVersion defaults to "1.33.5-gke.100".
	MasterVersion string `json:"masterVersion,omitempty"`
	// Autopilot makes an Autopilot cluster: Workload Identity is always on (the
	// workload pool is PROJECT.svc.id.goog from the start) and GKE manages the
	// node pools, which the API refuses to show or change.
	Autopilot bool `json:"autopilot,omitempty"`
	// TokenIssuer is the issuer of the KSA tokens of this cluster's workloads;
	// default the cluster's own GKE issuer URL, as on GKE. The sandbox sets it
	// when one local control plane plays several clusters: their tokens all
	// carry that control plane's issuer.
	TokenIssuer string `json:"tokenIssuer,omitempty"`
}

// Emulator is the HTTP server. Create it with New.
type Emulator struct {
	cfg Config
	now func() time.Time

	mu       sync.Mutex
	st       *state
	clusters map[string]*clusterRuntime // keyed by clusterKey
	faults   *faultInjector
	log      *requestLog
	accounts *consistencyModel
	dirty    bool
	oidc     *oidcKey // signs ID tokens

	stop     chan struct{}
	stopped  chan struct{}
	closeErr error
	closed   sync.Once
}

// New builds an emulator from cfg, loading cfg.StateFile when it exists.
func New(cfg Config) (*Emulator, error) {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.TokenLifetime <= 0 {
		cfg.TokenLifetime = time.Hour
	}
	if cfg.RequestLogSize <= 0 {
		cfg.RequestLogSize = 1000
	}
	if cfg.ServiceAccountQuota <= 0 {
		cfg.ServiceAccountQuota = defaultServiceAccountQuota
	}
	if cfg.Rand == nil {
		seed := cfg.Seed
		if seed == 0 {
			seed = 1
		}
		cfg.Rand = rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	}
	if err := validateConfig(cfg); err != nil {
		return nil, err
	}
	var err error
	e := &Emulator{
		cfg:      cfg,
		now:      cfg.Now,
		clusters: map[string]*clusterRuntime{},
		log:      newRequestLog(cfg.RequestLogSize),
		stop:     make(chan struct{}),
		stopped:  make(chan struct{}),
	}
	e.faults = newFaultInjector(cfg.Rand, cfg.Faults)
	if e.oidc, err = newOIDCKey(); err != nil {
		return nil, err
	}
	e.accounts = newConsistencyModel(cfg.IAMConsistency, cfg.Seed)
	st, err := loadState(cfg.StateFile)
	if err != nil {
		return nil, err
	}
	if st == nil {
		st = &state{Projects: map[string]*projectState{}, Tokens: map[string]*token{}, Operations: map[string]*operation{}}
	}
	e.st = st
	// Projects and clusters added to the config since the state was saved appear.
	e.seedLocked()
	for _, p := range cfg.Projects {
		for _, c := range p.Clusters {
			e.clusters[clusterKey(p.ID, c.Location, c.Name)] = newClusterRuntime(c)
		}
	}
	if err := e.saveLocked(); err != nil {
		return nil, err
	}
	go e.ticker()
	return e, nil
}

func validateConfig(cfg Config) error {
	if err := cfg.IAMConsistency.validate(); err != nil {
		return err
	}
	seen := map[string]bool{}
	for _, p := range cfg.Projects {
		if p.ID == "" || p.Number <= 0 {
			return fmt.Errorf("gcpemu: project needs an id and a positive number: %+v", p.ID)
		}
		if seen[p.ID] {
			return fmt.Errorf("gcpemu: project %q configured twice", p.ID)
		}
		seen[p.ID] = true
		for _, c := range p.Clusters {
			if c.Location == "" || c.Name == "" {
				return fmt.Errorf("gcpemu: cluster in project %q needs a location and a name", p.ID)
			}
			if c.WorkloadPool != "" && c.WorkloadPool != p.ID+".svc.id.goog" {
				return fmt.Errorf("gcpemu: cluster %s workload pool must be %s.svc.id.goog", c.Name, p.ID)
			}
		}
	}
	for _, r := range cfg.OperatorRoles {
		if _, ok := roleTable[r]; !ok {
			return fmt.Errorf("gcpemu: operator role %q is not known to the emulator", r)
		}
	}
	return nil
}

// Close stops background work and saves the state file.
func (e *Emulator) Close() error {
	e.closed.Do(func() {
		close(e.stop)
		<-e.stopped
		e.mu.Lock()
		defer e.mu.Unlock()
		e.dirty = true
		e.closeErr = e.saveLocked()
	})
	return e.closeErr
}

// ticker finishes long-running operations whose time has come even when nobody
// polls them, so node relabelling happens on time.
func (e *Emulator) ticker() {
	defer close(e.stopped)
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-e.stop:
			return
		case <-t.C:
			e.mu.Lock()
			e.advanceLocked()
			_ = e.saveLocked()
			e.mu.Unlock()
		}
	}
}

func (e *Emulator) logf(format string, args ...any) {
	if e.cfg.Logf != nil {
		e.cfg.Logf(format, args...)
	}
}

// ServeHTTP routes a request to the API it belongs to.
func (e *Emulator) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	path := r.URL.Path
	switch {
	case strings.HasPrefix(path, "/_emulator/"):
		e.serveAdmin(w, r)
		return
	case path == "/" || strings.HasPrefix(path, "/computeMetadata/"):
		e.serveMetadata(w, r)
		return
	case path == oidcDiscoveryPath || path == oidcCertsPath:
		e.serveOIDC(w, r)
		return
	}
	svc, rt := routeRequest(r.Method, r.Host, path)
	if rt.handler == nil {
		writeNotFoundPage(w, path)
		return
	}
	e.serveAPI(w, r, svc, rt)
}

// routeRequest finds the service and method of an API request: by its Host
// when that names a Google API, by its per-service prefix, or by the shape of
// Google's own path at the root (root.go). A route without a handler is a 404.
func routeRequest(method, host, path string) (string, route) {
	svc, rest := serviceAndPath(host, path)
	switch svc {
	case ServiceUsage:
		return svc, routeServiceUsage(method, rest)
	case Container:
		return svc, routeContainer(method, rest)
	case IAM:
		return svc, routeIAM(method, rest)
	case CloudResourceManager:
		return svc, routeCRM(method, rest)
	case BigQuery:
		return svc, routeBigQuery(method, rest)
	case STS:
		return svc, routeSTS(method, rest)
	case IAMCredentials:
		return svc, routeIAMCredentials(method, rest)
	}
	return svc, route{}
}

// route is what a service's router found for a request.
type route struct {
	// id is the discovery method id, e.g. "iam.projects.serviceAccounts.create".
	id      string
	handler func(e *Emulator, c *call) (any, error)
	// anonymous methods (STS) take no bearer token.
	anonymous bool
	// flavor selects the error body format.
	flavor errorFlavor
	// params are path segments the router captured.
	params map[string]string
}

// call is one API request in flight.
type call struct {
	r      *http.Request
	body   []byte
	now    time.Time
	tok    *token
	params map[string]string
	// status overrides 200 for a successful response.
	status int
	// issued is the token an anonymous call (STS) handed out, for the log.
	issued *token
	// operationError and operationErrorCode make the operation the call
	// starts fail (fault injection).
	operationError     string
	operationErrorCode int
}

func (c *call) param(name string) string { return c.params[name] }

// injectFault applies the fault rules to a call of method id: it waits out
// their latency and logs the error they inject, which the caller answers with.
func (e *Emulator) injectFault(r *http.Request, id string) (*apiError, *operationFault) {
	delay, ferr, opFail := e.faults.decide(id)
	if delay > 0 {
		select {
		case <-time.After(delay):
		case <-r.Context().Done():
		}
	}
	if ferr != nil {
		e.mu.Lock()
		e.log.add(e.now(), id, "", ferr.HTTP)
		e.mu.Unlock()
	}
	return ferr, opFail
}

func (e *Emulator) serveAPI(w http.ResponseWriter, r *http.Request, svc string, rt route) {
	body, err := readBody(r)
	if err != nil {
		writeError(w, rt.flavor, errInvalid("Request body could not be read: %v", err))
		return
	}
	ferr, opFail := e.injectFault(r, rt.id)
	if ferr != nil {
		writeError(w, rt.flavor, ferr)
		return
	}

	e.mu.Lock()
	c := &call{r: r, body: body, now: e.now(), params: rt.params}
	if opFail != nil {
		c.operationError, c.operationErrorCode = opFail.message, opFail.code
	}
	e.advanceLocked()
	var (
		resp   any
		apiErr error
	)
	if !rt.anonymous {
		c.tok, apiErr = e.authenticateLocked(r, c.now)
	}
	if apiErr == nil {
		resp, apiErr = rt.handler(e, c)
	}
	principal := ""
	if c.tok != nil {
		principal = c.tok.Principal
	} else if c.issued != nil {
		principal = c.issued.Principal
	}
	status := http.StatusOK
	if c.status != 0 {
		status = c.status
	}
	var ae *apiError
	if apiErr != nil {
		if !errors.As(apiErr, &ae) {
			ae = errInternal(apiErr)
		}
		status = ae.HTTP
	}
	e.log.add(c.now, rt.id, principal, status)
	saveErr := e.saveLocked()
	e.mu.Unlock()
	if saveErr != nil {
		e.logf("gcpemu: saving state: %v", saveErr)
	}

	if ae != nil {
		writeError(w, rt.flavor, ae)
		return
	}
	writeJSON(w, status, resp)
}
