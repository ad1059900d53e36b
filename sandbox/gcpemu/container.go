package gcpemu

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strings"
	"time"
)

// Kubernetes Engine API v1: clusters, node pools and their operations.

func routeContainer(method, rest string) route {
	segs := strings.Split(rest, "/")
	rt := route{flavor: flavorGoogle, params: map[string]string{}}
	if len(segs) < 5 || segs[0] != "v1" || segs[1] != "projects" || (segs[3] != "locations" && segs[3] != "zones") {
		return rt
	}
	rt.params["project"], rt.params["location"] = segs[2], segs[4]
	tail := segs[5:]
	// The older zonal form (projects/P/zones/Z/...) names the same resources;
	// its node pool update is a POST to .../nodePools/N/update.
	kind := segs[3]
	id := func(name string) string { return "container.projects." + kind + "." + name }
	switch {
	case len(tail) == 1 && tail[0] == "clusters" && method == http.MethodGet:
		rt.id, rt.handler = id("clusters.list"), (*Emulator).gkeListClusters
	case len(tail) == 2 && tail[0] == "clusters" && !strings.Contains(tail[1], ":"):
		rt.params["cluster"] = tail[1]
		switch method {
		case http.MethodGet:
			rt.id, rt.handler = id("clusters.get"), (*Emulator).gkeGetCluster
		case http.MethodPut:
			rt.id, rt.handler = id("clusters.update"), (*Emulator).gkeUpdateCluster
		}
	case len(tail) == 3 && tail[0] == "clusters" && tail[2] == "nodePools" && method == http.MethodGet:
		rt.params["cluster"] = tail[1]
		rt.id, rt.handler = id("clusters.nodePools.list"), (*Emulator).gkeListNodePools
	case len(tail) == 4 && tail[0] == "clusters" && tail[2] == "nodePools" && !strings.Contains(tail[3], ":"):
		rt.params["cluster"], rt.params["nodePool"] = tail[1], tail[3]
		switch {
		case method == http.MethodGet:
			rt.id, rt.handler = id("clusters.nodePools.get"), (*Emulator).gkeGetNodePool
		case method == http.MethodPut && kind == "locations":
			rt.id, rt.handler = id("clusters.nodePools.update"), (*Emulator).gkeUpdateNodePool
		}
	case len(tail) == 5 && kind == "zones" && tail[0] == "clusters" && tail[2] == "nodePools" && tail[4] == "update" &&
		method == http.MethodPost:
		rt.params["cluster"], rt.params["nodePool"] = tail[1], tail[3]
		rt.id, rt.handler = id("clusters.nodePools.update"), (*Emulator).gkeUpdateNodePool
	case len(tail) == 1 && tail[0] == "operations" && method == http.MethodGet:
		rt.id, rt.handler = id("operations.list"), (*Emulator).gkeListOperations
	case len(tail) == 2 && tail[0] == "operations" && method == http.MethodGet:
		rt.params["operation"] = tail[1]
		rt.id, rt.handler = id("operations.get"), (*Emulator).gkeGetOperation
	}
	return rt
}

func gkeDenied(perm, resource string) *apiError {
	return errDenied("Required %q permission(s) for %q.", perm, resource)
}

// gkeProject resolves the project of a GKE request and checks perm on it.
// GKE authorizes node pools and operations with cluster permissions on the
// project; a missing project reads as a missing permission.
func (e *Emulator) gkeProject(c *call, perm, resource string) (*projectState, error) {
	p := e.projectLocked(c.param("project"))
	if p == nil {
		return nil, gkeDenied(perm, resource)
	}
	if err := e.requireServiceLocked(p, "container.googleapis.com"); err != nil {
		return nil, err
	}
	if !e.allowedLocked(c, p, nil, perm) {
		return nil, gkeDenied(perm, resource)
	}
	return p, nil
}

func clusterResource(c *call) string {
	return fmt.Sprintf("projects/%s/locations/%s/clusters/%s", c.param("project"), c.param("location"), c.param("cluster"))
}

func (e *Emulator) gkeCluster(c *call, perm string) (*projectState, *cluster, error) {
	res := clusterResource(c)
	p, err := e.gkeProject(c, perm, res)
	if err != nil {
		return nil, nil, err
	}
	cl := p.Clusters[c.param("location")+"/"+c.param("cluster")]
	if cl == nil {
		return nil, nil, errNotFound("Not found: %s.", res)
	}
	return p, cl, nil
}

func (e *Emulator) gkeGetCluster(c *call) (any, error) {
	p, cl, err := e.gkeCluster(c, "container.clusters.get")
	if err != nil {
		return nil, err
	}
	return e.clusterJSON(p, cl), nil
}

func (e *Emulator) gkeListClusters(c *call) (any, error) {
	loc := c.param("location")
	res := fmt.Sprintf("projects/%s/locations/%s", c.param("project"), loc)
	p, err := e.gkeProject(c, "container.clusters.list", res)
	if err != nil {
		return nil, err
	}
	var keys []string
	for k, cl := range p.Clusters {
		if loc == "-" || cl.Location == loc {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	clusters := []any{}
	for _, k := range keys {
		clusters = append(clusters, e.clusterJSON(p, p.Clusters[k]))
	}
	return map[string]any{"clusters": clusters}, nil
}

// gkeNodePools resolves the cluster of a node pool request; GKE refuses every
// node pool call on an Autopilot cluster.
func (e *Emulator) gkeNodePools(c *call, perm string) (*projectState, *cluster, error) {
	p, cl, err := e.gkeCluster(c, perm)
	if err != nil {
		return nil, nil, err
	}
	if cl.Autopilot {
		return nil, nil, errInvalid("Autopilot node pools cannot be accessed or modified.")
	}
	return p, cl, nil
}

func (e *Emulator) gkeListNodePools(c *call) (any, error) {
	p, cl, err := e.gkeNodePools(c, "container.clusters.get")
	if err != nil {
		return nil, err
	}
	pools := []any{}
	for _, np := range cl.NodePools {
		pools = append(pools, e.nodePoolJSON(p, cl, np))
	}
	return map[string]any{"nodePools": pools}, nil
}

func (cl *cluster) pool(name string) *nodePool {
	for _, np := range cl.NodePools {
		if np.Name == name {
			return np
		}
	}
	return nil
}

func (e *Emulator) gkeGetNodePool(c *call) (any, error) {
	p, cl, err := e.gkeNodePools(c, "container.clusters.get")
	if err != nil {
		return nil, err
	}
	np := cl.pool(c.param("nodePool"))
	if np == nil {
		return nil, errNotFound("Not found: %s/nodePools/%s.", clusterResource(c), c.param("nodePool"))
	}
	return e.nodePoolJSON(p, cl, np), nil
}

// busyError is GKE's answer to a second operation on a cluster, as it is sent
// today: the running operation is named only in the message (no ErrorInfo).
func (e *Emulator) busyError(cl *cluster) error {
	if cl.Busy == "" {
		return nil
	}
	if op := e.st.Operations[cl.Busy]; op == nil || op.Done {
		cl.Busy = ""
		return nil
	}
	return errFailedPrecondition("Cluster is running incompatible operation %s.", cl.Busy)
}

func (e *Emulator) gkeUpdateCluster(c *call) (any, error) {
	p, cl, err := e.gkeCluster(c, "container.clusters.update")
	if err != nil {
		return nil, err
	}
	var req struct {
		Update map[string]json.RawMessage `json:"update"`
	}
	if err := decodeBody(c, &req); err != nil {
		return nil, err
	}
	// Sorted, so a request naming several unsupported fields always gets the same answer.
	for _, field := range slices.Sorted(maps.Keys(req.Update)) {
		if field != "desiredWorkloadIdentityConfig" {
			return nil, errInvalid("Update of %q is not supported by this emulator; only desiredWorkloadIdentityConfig is.", field)
		}
	}
	raw, ok := req.Update["desiredWorkloadIdentityConfig"]
	if !ok || string(raw) == "null" {
		return nil, errInvalid("Must specify a field to update.")
	}
	var wi struct {
		WorkloadPool string `json:"workloadPool"`
	}
	if err := json.Unmarshal(raw, &wi); err != nil {
		return nil, errInvalid("Invalid value at 'update.desired_workload_identity_config' (type.googleapis.com/google.container.v1.WorkloadIdentityConfig), %s", raw)
	}
	pool := &wi.WorkloadPool
	if *pool != "" && *pool != p.ID+".svc.id.goog" {
		return nil, errInvalid("Invalid workload pool %q: the workload pool must be %q.", *pool, p.ID+".svc.id.goog")
	}
	if err := e.busyError(cl); err != nil {
		return nil, err
	}
	op := e.startContainerOp(c, p, cl, "UPDATE_CLUSTER", "")
	if op.ErrorMessage == "" {
		op.WorkloadPool = pool
	}
	e.advanceLocked()
	return e.gkeOperationJSON(p, op), nil
}

func (e *Emulator) gkeUpdateNodePool(c *call) (any, error) {
	p, cl, err := e.gkeNodePools(c, "container.clusters.update")
	if err != nil {
		return nil, err
	}
	np := cl.pool(c.param("nodePool"))
	if np == nil {
		return nil, errNotFound("Not found: %s/nodePools/%s.", clusterResource(c), c.param("nodePool"))
	}
	var req struct {
		WorkloadMetadataConfig *struct {
			Mode string `json:"mode"`
		} `json:"workloadMetadataConfig"`
		NodeVersion string `json:"nodeVersion"`
		ImageType   string `json:"imageType"`
	}
	if err := decodeBody(c, &req); err != nil {
		return nil, err
	}
	if req.WorkloadMetadataConfig == nil {
		if req.NodeVersion == "" && req.ImageType == "" {
			return nil, errInvalid("Must specify a field to update.")
		}
		return nil, errInvalid("Only workloadMetadataConfig updates are supported by this emulator.")
	}
	mode := req.WorkloadMetadataConfig.Mode
	switch mode {
	case "GKE_METADATA", "GCE_METADATA":
	case "", "MODE_UNSPECIFIED":
		return nil, errInvalid("Workload metadata mode must be specified: GCE_METADATA or GKE_METADATA.")
	default:
		return nil, errInvalid("Invalid value at 'workload_metadata_config.mode' (type.googleapis.com/google.container.v1.WorkloadMetadataConfig.Mode), %q", mode)
	}
	if err := e.busyError(cl); err != nil {
		return nil, err
	}
	if mode == "GKE_METADATA" && cl.WorkloadPool == "" {
		return nil, errFailedPrecondition("Workload Identity must be enabled on cluster %s before node pool %s can use workload metadata mode GKE_METADATA.",
			cl.Name, np.Name)
	}
	op := e.startContainerOp(c, p, cl, "UPGRADE_NODES", np.Name)
	if op.ErrorMessage == "" {
		op.MetadataMode = mode
	}
	e.advanceLocked()
	return e.gkeOperationJSON(p, op), nil
}

func (e *Emulator) startContainerOp(c *call, p *projectState, cl *cluster, opType, pool string) *operation {
	start := c.now
	op := &operation{
		Kind:          opContainer,
		Name:          fmt.Sprintf("operation-%d-%s", start.UnixMilli(), uuidLike(e.nextSeq())),
		Project:       p.ID,
		Location:      cl.Location,
		Cluster:       cl.Name,
		NodePool:      pool,
		OperationType: opType,
		Start:         start,
		End:           start.Add(e.containerOpDuration(opType)),
		// A fault rule can make the operation fail (quota, stockout): it
		// ends DONE with the error and changes nothing.
		ErrorMessage: c.operationError,
		ErrorCode:    c.operationErrorCode,
	}
	e.st.Operations[op.Name] = op
	cl.Busy = op.Name
	e.dirty = true
	return op
}

// completeContainerOpLocked applies a finished GKE operation: the new workload
// pool, or the node pool's metadata mode and its nodes' labels.
func (e *Emulator) completeContainerOpLocked(p *projectState, op *operation) {
	cl := p.Clusters[op.Location+"/"+op.Cluster]
	if cl == nil {
		return
	}
	if cl.Busy == op.Name {
		cl.Busy = ""
	}
	if op.WorkloadPool != nil {
		cl.WorkloadPool = *op.WorkloadPool
	}
	if op.NodePool == "" || op.MetadataMode == "" {
		return
	}
	np := cl.pool(op.NodePool)
	if np == nil {
		return
	}
	np.MetadataMode = op.MetadataMode
	np.Etag = e.newEtag()
	rt := e.clusters[clusterKey(p.ID, cl.Location, cl.Name)]
	if rt == nil || rt.nodes == nil {
		return
	}
	value := (*string)(nil)
	if op.MetadataMode == "GKE_METADATA" {
		v := "true"
		value = &v
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := rt.nodes.LabelNodePool(ctx, np.Name, map[string]*string{metadataServerLabel: value}); err != nil {
		op.ErrorMessage = fmt.Sprintf("relabelling nodes of pool %s: %v", np.Name, err)
		e.logf("gcpemu: %s", op.ErrorMessage)
	}
}

func (e *Emulator) gkeGetOperation(c *call) (any, error) {
	res := fmt.Sprintf("projects/%s/locations/%s/operations/%s", c.param("project"), c.param("location"), c.param("operation"))
	p, err := e.gkeProject(c, "container.operations.get", res)
	if err != nil {
		return nil, err
	}
	op := e.st.Operations[c.param("operation")]
	if op == nil || op.Kind != opContainer || op.Project != p.ID || (c.param("location") != "-" && op.Location != c.param("location")) {
		return nil, errNotFound("Not found: %s.", res)
	}
	return e.gkeOperationJSON(p, op), nil
}

func (e *Emulator) gkeListOperations(c *call) (any, error) {
	loc := c.param("location")
	res := fmt.Sprintf("projects/%s/locations/%s", c.param("project"), loc)
	p, err := e.gkeProject(c, "container.operations.list", res)
	if err != nil {
		return nil, err
	}
	var ops []*operation
	for _, op := range e.st.Operations {
		if op.Kind == opContainer && op.Project == p.ID && (loc == "-" || op.Location == loc) {
			ops = append(ops, op)
		}
	}
	sort.Slice(ops, func(i, j int) bool {
		return ops[i].Start.Before(ops[j].Start) || (ops[i].Start.Equal(ops[j].Start) && ops[i].Name < ops[j].Name)
	})
	out := []any{}
	for _, op := range ops {
		out = append(out, e.gkeOperationJSON(p, op))
	}
	return map[string]any{"operations": out}, nil
}

const gkeAPIBase = "https://container.googleapis.com/v1"

func (e *Emulator) gkeOperationJSON(p *projectState, op *operation) map[string]any {
	now := e.now()
	status := "RUNNING"
	switch {
	case op.Done:
		status = "DONE"
	case now.Sub(op.Start) < min(time.Second, op.End.Sub(op.Start)/10):
		status = "PENDING"
	}
	// As GKE writes them: zonal clusters' links use the older /zones/ form,
	// and an operation has "zone" but no "location".
	where := "locations"
	if isZone(op.Location) {
		where = "zones"
	}
	target := fmt.Sprintf("%s/projects/%d/%s/%s/clusters/%s", gkeAPIBase, p.Number, where, op.Location, op.Cluster)
	if op.NodePool != "" {
		target += "/nodePools/" + op.NodePool
	}
	out := map[string]any{
		"name":          op.Name,
		"zone":          op.Location,
		"operationType": op.OperationType,
		"status":        status,
		"selfLink":      fmt.Sprintf("%s/projects/%d/%s/%s/operations/%s", gkeAPIBase, p.Number, where, op.Location, op.Name),
		"targetLink":    target,
		"startTime":     op.Start.UTC().Format(time.RFC3339Nano),
	}
	if op.Done {
		out["endTime"] = op.End.UTC().Format(time.RFC3339Nano)
		if op.ErrorMessage != "" {
			out["error"] = map[string]any{"code": op.errorCode(), "message": op.ErrorMessage}
			out["statusMessage"] = op.ErrorMessage
		}
	} else if total := op.End.Sub(op.Start); total > 0 {
		done := int64(100 * now.Sub(op.Start) / total)
		out["progress"] = map[string]any{"metrics": []any{
			map[string]any{"name": "PROGRESS_PERCENT", "intValue": fmt.Sprint(min(done, 99))},
		}}
	}
	return out
}

func (e *Emulator) clusterJSON(p *projectState, cl *cluster) map[string]any {
	status := "RUNNING"
	if cl.Busy != "" {
		if op := e.st.Operations[cl.Busy]; op != nil && !op.Done {
			status = "RECONCILING"
		}
	}
	endpoint := "127.0.0.1"
	if rt := e.clusters[clusterKey(p.ID, cl.Location, cl.Name)]; rt != nil && rt.cfg.Kube != nil {
		if u, err := url.Parse(rt.cfg.Kube.Host); err == nil && u.Host != "" {
			endpoint = u.Host
		}
	}
	pools := []any{}
	var nodes int64
	for _, np := range cl.NodePools {
		pools = append(pools, e.nodePoolJSON(p, cl, np))
		nodes += np.NodeCount
	}
	out := map[string]any{
		"name":                  cl.Name,
		"id":                    fmt.Sprintf("%032x", uint64(p.Number)^uint64(len(cl.Name))*0x9e3779b97f4a7c15),
		"location":              cl.Location,
		"zone":                  cl.Location,
		"locations":             []string{cl.Location},
		"selfLink":              fmt.Sprintf("%s/projects/%s/locations/%s/clusters/%s", gkeAPIBase, p.ID, cl.Location, cl.Name),
		"endpoint":              endpoint,
		"initialClusterVersion": cl.MasterVersion,
		"currentMasterVersion":  cl.MasterVersion,
		"currentNodeVersion":    cl.MasterVersion,
		"currentNodeCount":      nodes,
		"createTime":            cl.CreateTime.UTC().Format(time.RFC3339),
		"status":                status,
		"network":               "default",
		"subnetwork":            "default",
		"clusterIpv4Cidr":       "10.0.0.0/14",
		"servicesIpv4Cidr":      "10.4.0.0/20",
		"loggingService":        "logging.googleapis.com/kubernetes",
		"monitoringService":     "monitoring.googleapis.com/kubernetes",
		"releaseChannel":        map[string]any{"channel": "REGULAR"},
		"autopilot":             map[string]any{},
		"nodePools":             pools,
		"etag":                  fmt.Sprintf("%x", e.st.Seq),
	}
	if cl.WorkloadPool != "" {
		out["workloadIdentityConfig"] = map[string]any{"workloadPool": cl.WorkloadPool}
	}
	if cl.Autopilot {
		out["autopilot"] = map[string]any{"enabled": true}
	}
	return out
}

// isZone tells a zone (europe-west1-b) from a region (europe-west1).
func isZone(location string) bool {
	i := strings.LastIndexByte(location, '-')
	return i > 0 && len(location)-i == 2 && location[i+1] >= 'a' && location[i+1] <= 'z'
}

func (e *Emulator) nodePoolJSON(p *projectState, cl *cluster, np *nodePool) map[string]any {
	status := "RUNNING"
	if cl.Busy != "" {
		if op := e.st.Operations[cl.Busy]; op != nil && !op.Done && op.NodePool == np.Name {
			status = "RECONCILING"
		}
	}
	config := map[string]any{
		"machineType":    "e2-standard-4",
		"diskSizeGb":     100,
		"diskType":       "pd-balanced",
		"imageType":      "COS_CONTAINERD",
		"serviceAccount": "default",
		"oauthScopes":    []string{"https://www.googleapis.com/auth/cloud-platform"},
		"metadata":       map[string]string{"disable-legacy-endpoints": "true"},
	}
	if np.MetadataMode != "" {
		config["workloadMetadataConfig"] = map[string]any{"mode": np.MetadataMode}
	}
	return map[string]any{
		"name":             np.Name,
		"config":           config,
		"initialNodeCount": np.NodeCount,
		"locations":        []string{cl.Location},
		"selfLink":         fmt.Sprintf("%s/projects/%s/locations/%s/clusters/%s/nodePools/%s", gkeAPIBase, p.ID, cl.Location, cl.Name, np.Name),
		"version":          np.Version,
		"status":           status,
		"management":       map[string]any{"autoUpgrade": true, "autoRepair": true},
		"upgradeSettings":  map[string]any{"maxSurge": 1, "strategy": "SURGE"},
		"podIpv4CidrSize":  24,
		"etag":             np.Etag,
	}
}
