package gcpemu

import (
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"time"
)

// state is everything the emulator remembers; it round-trips through StateFile.
type state struct {
	Seq        int64                    `json:"seq"`
	Projects   map[string]*projectState `json:"projects"`
	Tokens     map[string]*token        `json:"tokens"`
	Operations map[string]*operation    `json:"operations"`
	// Jobs are BigQuery query jobs, by "project:jobId".
	Jobs map[string]*bqJob `json:"jobs,omitempty"`
}

type projectState struct {
	ID         string            `json:"id"`
	Number     int64             `json:"number"`
	CreateTime time.Time         `json:"createTime"`
	Services   map[string]string `json:"services"` // name -> ENABLED | DISABLED
	// ServiceEnabledAt is when an enable operation finished, per service; the
	// service answers SERVICE_DISABLED until Config.ServiceEnableLag after it.
	ServiceEnabledAt map[string]time.Time       `json:"serviceEnabledAt,omitempty"`
	Policy           *policyHistory             `json:"policy"`
	ServiceAccounts  map[string]*serviceAccount `json:"serviceAccounts"` // by email
	Clusters         map[string]*cluster        `json:"clusters"`        // by "location/name"
	Datasets         map[string]*dataset        `json:"datasets"`        // by dataset id
}

type serviceAccount struct {
	Resource saResource     `json:"resource"`
	Policy   *policyHistory `json:"policy"`
}

// saResource is the REST representation of a service account.
type saResource struct {
	Name           string `json:"name"`
	ProjectID      string `json:"projectId"`
	UniqueID       string `json:"uniqueId"`
	Email          string `json:"email"`
	DisplayName    string `json:"displayName,omitempty"`
	Description    string `json:"description,omitempty"`
	Etag           string `json:"etag"`
	Oauth2ClientID string `json:"oauth2ClientId"`
	Disabled       bool   `json:"disabled,omitempty"`
}

type cluster struct {
	Project       string      `json:"project"`
	Location      string      `json:"location"`
	Name          string      `json:"name"`
	WorkloadPool  string      `json:"workloadPool,omitempty"`
	Autopilot     bool        `json:"autopilot,omitempty"`
	MasterVersion string      `json:"masterVersion"`
	CreateTime    time.Time   `json:"createTime"`
	NodePools     []*nodePool `json:"nodePools"`
	// Busy is the name of the operation running on the cluster, if any.
	Busy string `json:"busy,omitempty"`
}

type nodePool struct {
	Name         string `json:"name"`
	MetadataMode string `json:"metadataMode,omitempty"`
	Version      string `json:"version"`
	NodeCount    int64  `json:"nodeCount"`
	Etag         string `json:"etag"`
}

type dataset struct {
	Project          string            `json:"project"`
	ID               string            `json:"id"`
	Location         string            `json:"location"`
	FriendlyName     string            `json:"friendlyName,omitempty"`
	Description      string            `json:"description,omitempty"`
	Labels           map[string]string `json:"labels,omitempty"`
	Access           []accessEntry     `json:"access"`
	AccessPolicy     *policyHistory    `json:"accessPolicy"`
	Tables           []string          `json:"tables,omitempty"`
	CreationTime     int64             `json:"creationTime"`
	LastModifiedTime int64             `json:"lastModifiedTime"`
	Etag             string            `json:"etag"`
	DefaultTableExp  string            `json:"defaultTableExpirationMs,omitempty"`
}

func clusterKey(project, location, name string) string {
	return project + "/" + location + "/" + name
}

func (e *Emulator) nextSeq() int64 {
	e.st.Seq++
	e.dirty = true
	return e.st.Seq
}

// newEtag is an opaque etag in the base64 form Google uses ("BwYx...").
func (e *Emulator) newEtag() string {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(e.nextSeq())|0x0700000000000000)
	return base64.StdEncoding.EncodeToString(b[:])
}

// newUniqueID is a 21-digit numeric id like Google's service account ids.
func (e *Emulator) newUniqueID(projectNumber int64) string {
	return fmt.Sprintf("1%05d%015d", projectNumber%100000, e.nextSeq())
}

const defaultMasterVersion = "1.33.5-gke.100"

// defaultServices are enabled in a project unless the config lists its own.
// iamcredentials is left off so enabling it is a real change.
var defaultServices = []string{
	"serviceusage.googleapis.com", "container.googleapis.com", "iam.googleapis.com",
	"cloudresourcemanager.googleapis.com", "bigquery.googleapis.com", "sts.googleapis.com",
	"compute.googleapis.com",
}

// knownServices can be enabled; anything else is rejected like an unknown service.
var knownServices = append([]string{"iamcredentials.googleapis.com", "bigquerystorage.googleapis.com",
	"logging.googleapis.com", "monitoring.googleapis.com", "storage.googleapis.com"}, defaultServices...)

// seedLocked adds what the config describes and the state lacks: every project
// on first start, and later only projects and clusters new to the config.
func (e *Emulator) seedLocked() {
	now := e.now()
	for _, pc := range e.cfg.Projects {
		p := e.st.Projects[pc.ID]
		if p == nil {
			p = e.newProjectLocked(pc, now)
			e.st.Projects[pc.ID] = p
		}
		for _, cc := range pc.Clusters {
			if p.Clusters[cc.Location+"/"+cc.Name] == nil {
				p.Clusters[cc.Location+"/"+cc.Name] = e.newClusterLocked(pc.ID, cc, now)
			}
		}
	}
	// The operator's own account exists when it lives in a configured project.
	if acct, proj, ok := splitServiceAccountEmail(e.cfg.Operator); ok {
		if p := e.st.Projects[proj]; p != nil && p.ServiceAccounts[e.cfg.Operator] == nil {
			e.createServiceAccountLocked(p, acct, "gkewi worker", "", now)
		}
	}
	e.dirty = true
}

func (e *Emulator) newProjectLocked(pc ProjectConfig, now time.Time) *projectState {
	p := &projectState{
		ID: pc.ID, Number: pc.Number, CreateTime: now,
		Services:        map[string]string{},
		ServiceAccounts: map[string]*serviceAccount{},
		Clusters:        map[string]*cluster{},
		Datasets:        map[string]*dataset{},
	}
	for _, s := range knownServices {
		p.Services[s] = "DISABLED"
	}
	enabled := pc.EnabledServices
	if len(enabled) == 0 {
		enabled = defaultServices
	}
	for _, s := range enabled {
		p.Services[s] = "ENABLED"
	}
	pol := &policy{Version: 1}
	pol.add("roles/owner", "user:owner@example.com")
	for _, r := range e.cfg.OperatorRoles {
		if e.cfg.Operator != "" {
			pol.add(r, memberForEmail(e.cfg.Operator))
		}
	}
	for _, b := range pc.Bindings {
		for _, m := range b.Members {
			pol.add(b.Role, m)
		}
	}
	pol.normalize()
	pol.Etag = e.newEtag()
	// The starting policy holds from the beginning of time: nothing to propagate.
	p.Policy = newPolicyHistory(pol, time.Time{})
	for _, dc := range pc.Datasets {
		loc := dc.Location
		if loc == "" {
			loc = "US"
		}
		ds := &dataset{Project: pc.ID, ID: dc.ID, Location: loc, Tables: append([]string(nil), dc.Tables...),
			CreationTime: now.UnixMilli(), LastModifiedTime: now.UnixMilli(), Etag: e.newEtag()}
		ds.Access = defaultDatasetAccess("user:owner@example.com")
		ds.AccessPolicy = newPolicyHistory(accessToPolicy(pc.ID, ds.Access), time.Time{})
		p.Datasets[dc.ID] = ds
	}
	return p
}

func (e *Emulator) newClusterLocked(project string, cc ClusterConfig, now time.Time) *cluster {
	c := &cluster{Project: project, Location: cc.Location, Name: cc.Name, WorkloadPool: cc.WorkloadPool,
		Autopilot: cc.Autopilot, MasterVersion: cc.MasterVersion, CreateTime: now}
	if c.MasterVersion == "" {
		c.MasterVersion = defaultMasterVersion
	}
	if c.Autopilot {
		c.WorkloadPool = project + ".svc.id.goog"
	}
	for _, np := range cc.NodePools {
		pool := &nodePool{Name: np, Version: c.MasterVersion, NodeCount: 3, Etag: e.newEtag()}
		if c.WorkloadPool != "" {
			pool.MetadataMode = "GKE_METADATA"
		}
		c.NodePools = append(c.NodePools, pool)
	}
	return c
}

func loadState(path string) (*state, error) {
	if path == "" {
		return nil, nil
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("gcpemu: reading state file: %w", err)
	}
	st := &state{}
	if err := json.Unmarshal(b, st); err != nil {
		return nil, fmt.Errorf("gcpemu: state file %s: %w", path, err)
	}
	if st.Projects == nil {
		st.Projects = map[string]*projectState{}
	}
	if st.Tokens == nil {
		st.Tokens = map[string]*token{}
	}
	if st.Operations == nil {
		st.Operations = map[string]*operation{}
	}
	return st, nil
}

// saveLocked writes the state file when something changed.
func (e *Emulator) saveLocked() error {
	if e.cfg.StateFile == "" || !e.dirty {
		return nil
	}
	b, err := json.MarshalIndent(e.st, "", "  ")
	if err != nil {
		return fmt.Errorf("gcpemu: encoding state: %w", err)
	}
	dir := filepath.Dir(e.cfg.StateFile)
	tmp, err := os.CreateTemp(dir, ".gcpemu-state-*")
	if err != nil {
		return fmt.Errorf("gcpemu: saving state: %w", err)
	}
	if _, err := tmp.Write(b); err != nil {
		_ = tmp.Close()
		_ = os.Remove(tmp.Name())
		return fmt.Errorf("gcpemu: saving state: %w", err)
	}
	if err := tmp.Close(); err != nil {
		_ = os.Remove(tmp.Name())
		return fmt.Errorf("gcpemu: saving state: %w", err)
	}
	if err := os.Rename(tmp.Name(), e.cfg.StateFile); err != nil {
		return fmt.Errorf("gcpemu: saving state: %w", err)
	}
	e.dirty = false
	return nil
}

// stateSnapshot is the JSON dump served at /_emulator/state (tokens redacted).
func (e *Emulator) stateSnapshot() map[string]any {
	e.mu.Lock()
	defer e.mu.Unlock()
	now := e.now()
	projects := map[string]any{}
	for id, p := range e.st.Projects {
		sas := []saResource{}
		saPolicies := map[string]*policy{}
		for _, sa := range p.ServiceAccounts {
			sas = append(sas, sa.Resource)
			saPolicies[sa.Resource.Email] = sa.Policy.current()
		}
		sort.Slice(sas, func(i, j int) bool { return sas[i].Email < sas[j].Email })
		datasets := map[string]any{}
		for did, d := range p.Datasets {
			datasets[did] = e.datasetJSON(d)
		}
		clusters := map[string]any{}
		for k, c := range p.Clusters {
			clusters[k] = e.clusterJSON(p, c)
		}
		projects[id] = map[string]any{
			"projectNumber":            p.Number,
			"services":                 p.Services,
			"policy":                   p.Policy.current(),
			"effectivePolicy":          p.Policy.effective(now, e.cfg.PropagationDelay),
			"serviceAccounts":          sas,
			"serviceAccountPolicies":   saPolicies,
			"clusters":                 clusters,
			"datasets":                 datasets,
			"pendingPolicyPropagation": p.Policy.pending(now, e.cfg.PropagationDelay),
		}
	}
	tokens := []map[string]any{}
	for _, t := range e.st.Tokens {
		tokens = append(tokens, map[string]any{"principal": t.Principal, "expiry": t.Expiry, "expired": !now.Before(t.Expiry)})
	}
	// Sorted all the way down, so two dumps of the same state are identical.
	sort.Slice(tokens, func(i, j int) bool {
		a, b := tokens[i]["expiry"].(time.Time), tokens[j]["expiry"].(time.Time)
		if !a.Equal(b) {
			return a.Before(b)
		}
		return tokens[i]["principal"].(string) < tokens[j]["principal"].(string)
	})
	ops := []*operation{}
	for _, op := range e.st.Operations {
		ops = append(ops, op)
	}
	sort.Slice(ops, func(i, j int) bool { return ops[i].Name < ops[j].Name })
	return map[string]any{"now": now, "projects": projects, "tokens": tokens, "operations": ops}
}
