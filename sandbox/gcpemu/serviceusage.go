package gcpemu

import (
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	rpccode "google.golang.org/genproto/googleapis/rpc/code"
)

// Service Usage API v1: services get/list/enable/disable/batchEnable and their
// operations.

func routeServiceUsage(method, rest string) route {
	segs := strings.Split(rest, "/")
	rt := route{flavor: flavorGoogle, params: map[string]string{}}
	switch {
	case len(segs) == 4 && segs[0] == "v1" && segs[1] == "projects" && segs[3] == "services" && method == http.MethodGet:
		rt.params["project"] = segs[2]
		rt.id, rt.handler = "serviceusage.services.list", (*Emulator).suListServices
	case len(segs) == 4 && segs[0] == "v1" && segs[1] == "projects" && segs[3] == "services:batchEnable" && method == http.MethodPost:
		rt.params["project"] = segs[2]
		rt.id, rt.handler = "serviceusage.services.batchEnable", (*Emulator).suBatchEnable
	case len(segs) == 5 && segs[0] == "v1" && segs[1] == "projects" && segs[3] == "services":
		rt.params["project"] = segs[2]
		service, verb, _ := strings.Cut(segs[4], ":")
		rt.params["service"] = service
		switch {
		case verb == "" && method == http.MethodGet:
			rt.id, rt.handler = "serviceusage.services.get", (*Emulator).suGetService
		case verb == "enable" && method == http.MethodPost:
			rt.id, rt.handler = "serviceusage.services.enable", (*Emulator).suEnableService
		case verb == "disable" && method == http.MethodPost:
			rt.id, rt.handler = "serviceusage.services.disable", (*Emulator).suDisableService
		}
	case len(segs) == 3 && (segs[0] == "v1" || segs[0] == "v1beta1") && segs[1] == "operations" && method == http.MethodGet:
		rt.params["operation"] = "operations/" + segs[2]
		rt.id, rt.handler = "serviceusage.operations.get", (*Emulator).suGetOperation
	}
	return rt
}

func suDenied(verb, service, perm string) *apiError {
	return errDenied("Permission denied to %s service [%s]", verb, service).
		withInfo("AUTH_PERMISSION_DENIED", "serviceusage.googleapis.com", map[string]string{"permission": perm})
}

func suUnknownService(service string) *apiError {
	return errDenied("Not found or permission denied for service(s): %s.", service).
		withInfo("SERVICE_CONFIG_NOT_FOUND_OR_PERMISSION_DENIED", "serviceusage.googleapis.com", map[string]string{"services": service})
}

func suServiceJSON(p *projectState, service string) map[string]any {
	title := serviceTitles[service]
	if title == "" {
		title = service
	}
	return map[string]any{
		"name":   fmt.Sprintf("projects/%d/services/%s", p.Number, service),
		"parent": fmt.Sprintf("projects/%d", p.Number),
		"config": map[string]any{"name": service, "title": title},
		"state":  p.Services[service],
	}
}

func (e *Emulator) suGetService(c *call) (any, error) {
	service := c.param("service")
	p := e.projectLocked(c.param("project"))
	if p == nil || !e.allowedLocked(c, p, nil, "serviceusage.services.get") {
		return nil, suDenied("get", service, "serviceusage.services.get")
	}
	if _, ok := p.Services[service]; !ok {
		return nil, suUnknownService(service)
	}
	return suServiceJSON(p, service), nil
}

func (e *Emulator) suEnableService(c *call) (any, error) {
	return e.suChangeService(c, suEnable)
}

func (e *Emulator) suDisableService(c *call) (any, error) {
	var req struct {
		DisableDependentServices bool   `json:"disableDependentServices"`
		CheckIfServiceHasUsage   string `json:"checkIfServiceHasUsage"`
	}
	if err := decodeBody(c, &req); err != nil {
		return nil, err
	}
	switch req.CheckIfServiceHasUsage {
	case "", "CHECK_IF_SERVICE_HAS_USAGE_UNSPECIFIED", "SKIP", "CHECK":
	default:
		return nil, errInvalid("Invalid value at 'check_if_service_has_usage' (type.googleapis.com/google.api.serviceusage.v1.DisableServiceRequest.CheckIfServiceHasUsage), %q", req.CheckIfServiceHasUsage)
	}
	return e.suChangeService(c, suDisable)
}

// Service Usage operation actions.
const (
	suEnable      = "enable"
	suDisable     = "disable"
	suBatchEnable = "batchEnable"
)

// suChangeService enables or disables one service with a long-running operation.
func (e *Emulator) suChangeService(c *call, action string) (any, error) {
	service := c.param("service")
	perm := "serviceusage.services." + action
	p := e.projectLocked(c.param("project"))
	if p == nil || !e.allowedLocked(c, p, nil, perm) {
		return nil, suDenied(action, service, perm)
	}
	if _, ok := p.Services[service]; !ok {
		return nil, suUnknownService(service)
	}
	want := "ENABLED"
	if action == suDisable {
		want = "DISABLED"
	}
	// A running operation for the same change is returned again.
	for _, op := range e.st.Operations {
		if op.Kind == opServiceUsage && !op.Done && op.Project == p.ID && op.action() == action && op.Service == service {
			return e.suOperationJSON(op), nil
		}
	}
	if p.Services[service] == want && !e.suPendingLocked(p, service) {
		return e.suNoopJSON(p, action, []string{service}), nil
	}
	op := e.startSUOperation(c, p, action, []string{service})
	return e.suOperationJSON(op), nil
}

// suPendingLocked tells whether an operation is still changing the service.
func (e *Emulator) suPendingLocked(p *projectState, service string) bool {
	for _, op := range e.st.Operations {
		if op.Kind == opServiceUsage && !op.Done && op.Project == p.ID && slices.Contains(op.services(), service) {
			return true
		}
	}
	return false
}

func (e *Emulator) startSUOperation(c *call, p *projectState, action string, services []string) *operation {
	op := &operation{
		Kind:    opServiceUsage,
		Name:    fmt.Sprintf("operations/acf.p2-%d-%s", p.Number, uuidLike(e.nextSeq())),
		Project: p.ID,
		Start:   c.now,
		End:     c.now.Add(e.serviceOpDuration(action)),
		Action:  action,
	}
	if len(services) == 1 && action != suBatchEnable {
		op.Service = services[0]
	} else {
		op.Services = services
	}
	e.st.Operations[op.Name] = op
	e.dirty = true
	e.advanceLocked()
	return op
}

// suNoopJSON is the finished operation Service Usage returns when nothing changes.
func (e *Emulator) suNoopJSON(p *projectState, action string, services []string) map[string]any {
	return map[string]any{
		"name":     "operations/noop.DONE_OPERATION",
		"done":     true,
		"response": e.suResponseJSON(p, action, services),
	}
}

func (e *Emulator) suResponseJSON(p *projectState, action string, services []string) map[string]any {
	switch action {
	case suBatchEnable:
		list := []any{}
		for _, s := range services {
			list = append(list, suServiceJSON(p, s))
		}
		return map[string]any{
			"@type":    "type.googleapis.com/google.api.serviceusage.v1.BatchEnableServicesResponse",
			"services": list,
		}
	case suDisable:
		return map[string]any{
			"@type":   "type.googleapis.com/google.api.serviceusage.v1.DisableServiceResponse",
			"service": suServiceJSON(p, services[0]),
		}
	default:
		return map[string]any{
			"@type":   "type.googleapis.com/google.api.serviceusage.v1.EnableServiceResponse",
			"service": suServiceJSON(p, services[0]),
		}
	}
}

// maxBatchEnable is how many services one batchEnable may name.
const maxBatchEnable = 20

func (e *Emulator) suBatchEnable(c *call) (any, error) {
	var req struct {
		ServiceIDs []string `json:"serviceIds"`
	}
	if err := decodeBody(c, &req); err != nil {
		return nil, err
	}
	const perm = "serviceusage.services.enable"
	p := e.projectLocked(c.param("project"))
	if p == nil || !e.allowedLocked(c, p, nil, perm) {
		return nil, suDenied("enable", strings.Join(req.ServiceIDs, ","), perm)
	}
	if len(req.ServiceIDs) == 0 {
		return nil, errInvalid("Request must contain at least one service ID.")
	}
	if len(req.ServiceIDs) > maxBatchEnable {
		return nil, errInvalid("Request contains %d service IDs; at most %d may be enabled at once.", len(req.ServiceIDs), maxBatchEnable)
	}
	var unknown []string
	services := slices.Clone(req.ServiceIDs)
	slices.Sort(services)
	services = slices.Compact(services)
	for _, s := range services {
		if _, ok := p.Services[s]; !ok {
			unknown = append(unknown, s)
		}
	}
	if len(unknown) > 0 {
		return nil, suUnknownService(strings.Join(unknown, ","))
	}
	changed := false
	for _, s := range services {
		changed = changed || p.Services[s] != "ENABLED" || e.suPendingLocked(p, s)
	}
	if !changed {
		return e.suNoopJSON(p, suBatchEnable, services), nil
	}
	op := e.startSUOperation(c, p, suBatchEnable, services)
	return e.suOperationJSON(op), nil
}

// The page sizes of services.list.
const (
	suDefaultPageSize = 50
	suMaxPageSize     = 200
)

func (e *Emulator) suListServices(c *call) (any, error) {
	const perm = "serviceusage.services.list"
	key := c.param("project")
	p := e.projectLocked(key)
	if p == nil || !e.allowedLocked(c, p, nil, perm) {
		return nil, errDenied("Permission denied to list services for consumer container [projects/%s]", key).
			withInfo("AUTH_PERMISSION_DENIED", "serviceusage.googleapis.com", map[string]string{"permission": perm})
	}
	q := c.r.URL.Query()
	want := ""
	switch f := strings.TrimSpace(q.Get("filter")); f {
	case "":
	case "state:ENABLED", "state:DISABLED":
		want = strings.TrimPrefix(f, "state:")
	default:
		return nil, errInvalid("Invalid filter %q: the allowed filter strings are state:ENABLED and state:DISABLED.", f)
	}
	var names []string
	for s, st := range p.Services {
		if want == "" || st == want {
			names = append(names, s)
		}
	}
	slices.Sort(names)
	if n := q.Get("pageSize"); n != "" {
		if size, err := strconv.Atoi(n); err == nil && size > suMaxPageSize {
			return nil, errInvalid("Requested page size %d cannot exceed %d.", size, suMaxPageSize)
		}
	}
	page, next, err := paginate(len(names), q.Get("pageSize"), q.Get("pageToken"), suDefaultPageSize, suMaxPageSize)
	if err != nil {
		return nil, err
	}
	out := map[string]any{}
	if page[1] > page[0] {
		list := make([]any, 0, page[1]-page[0])
		for _, s := range names[page[0]:page[1]] {
			list = append(list, suServiceJSON(p, s))
		}
		out["services"] = list
	}
	if next != "" {
		out["nextPageToken"] = next
	}
	return out, nil
}

func (e *Emulator) suGetOperation(c *call) (any, error) {
	name := c.param("operation")
	op := e.st.Operations[name]
	if name == "operations/noop.DONE_OPERATION" {
		return map[string]any{"name": name, "done": true}, nil
	}
	if op == nil || op.Kind != opServiceUsage {
		return nil, errNotFound("Operation '%s' not found.", name)
	}
	p := e.st.Projects[op.Project]
	if !e.allowedLocked(c, p, nil, "serviceusage.services.get") && !e.allowedLocked(c, p, nil, "serviceusage.operations.get") {
		return nil, errDenied("Permission 'serviceusage.operations.get' denied on resource (or it may not exist).").
			withInfo("IAM_PERMISSION_DENIED", "serviceusage.googleapis.com", map[string]string{"permission": "serviceusage.operations.get"})
	}
	return e.suOperationJSON(op), nil
}

func (e *Emulator) suOperationJSON(op *operation) map[string]any {
	p := e.st.Projects[op.Project]
	var number int64
	if p != nil {
		number = p.Number
	}
	var resources []string
	for _, s := range op.services() {
		resources = append(resources, fmt.Sprintf("services/%s/projectSettings/%d", s, number))
	}
	out := map[string]any{
		"name": op.Name,
		"metadata": map[string]any{
			"@type":         "type.googleapis.com/google.api.serviceusage.v1.OperationMetadata",
			"resourceNames": resources,
		},
	}
	if op.Done && p != nil {
		out["done"] = true
		out["response"] = e.suResponseJSON(p, op.action(), op.services())
	}
	return out
}

// uuidLike formats a sequence number as a UUID-shaped string.
func uuidLike(n int64) string {
	h := fmt.Sprintf("%016x%016x", uint64(n)*0x9e3779b97f4a7c15, (uint64(n)^0x5851f42d4c957f2d)*0xd6e8feb86659fd93)
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

// Operation kinds.
const (
	opServiceUsage = "serviceusage"
	opContainer    = "container"
)

// operation is a long-running operation of Service Usage or GKE.
type operation struct {
	Kind    string    `json:"kind"`
	Name    string    `json:"name"`
	Project string    `json:"project"`
	Start   time.Time `json:"start"`
	End     time.Time `json:"end"`
	Done    bool      `json:"done"`

	// Service Usage: the service being enabled or disabled (Services for a
	// batch), and the action: enable (the default), disable or batchEnable.
	Service  string   `json:"service,omitempty"`
	Services []string `json:"services,omitempty"`
	Action   string   `json:"action,omitempty"`

	// GKE: where, what, and what changes when it is done.
	Location      string  `json:"location,omitempty"`
	Cluster       string  `json:"cluster,omitempty"`
	NodePool      string  `json:"nodePool,omitempty"`
	OperationType string  `json:"operationType,omitempty"`
	WorkloadPool  *string `json:"workloadPool,omitempty"`
	MetadataMode  string  `json:"metadataMode,omitempty"`
	ErrorMessage  string  `json:"errorMessage,omitempty"`
	// ErrorCode is the google.rpc.Code of ErrorMessage; 0 reads as INTERNAL.
	ErrorCode int `json:"errorCode,omitempty"`
}

func (op *operation) errorCode() int {
	if op.ErrorCode == 0 {
		return int(rpccode.Code_INTERNAL)
	}
	return op.ErrorCode
}

func (op *operation) action() string {
	if op.Action == "" {
		return suEnable
	}
	return op.Action
}

func (op *operation) services() []string {
	if op.Service != "" {
		return []string{op.Service}
	}
	return op.Services
}

// advanceLocked completes every operation whose time has come.
func (e *Emulator) advanceLocked() {
	now := e.now()
	var due []*operation
	for _, op := range e.st.Operations {
		if !op.Done && !now.Before(op.End) {
			due = append(due, op)
		}
	}
	slices.SortFunc(due, func(a, b *operation) int { return a.End.Compare(b.End) })
	for _, op := range due {
		e.completeOpLocked(op)
	}
	e.pruneTokensLocked(now)
}

func (e *Emulator) completeOpLocked(op *operation) {
	op.Done = true
	e.dirty = true
	p := e.st.Projects[op.Project]
	if p == nil {
		return
	}
	switch op.Kind {
	case opServiceUsage:
		state := "ENABLED"
		if op.action() == suDisable {
			state = "DISABLED"
		}
		for _, s := range op.services() {
			if p.Services[s] != state && state == "ENABLED" {
				if p.ServiceEnabledAt == nil {
					p.ServiceEnabledAt = map[string]time.Time{}
				}
				p.ServiceEnabledAt[s] = op.End
			}
			p.Services[s] = state
		}
	case opContainer:
		e.completeContainerOpLocked(p, op)
	}
}
