package gcpemu

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"
)

// Service Usage API v1: services get/enable and their operations.

func routeServiceUsage(method, rest string) route {
	segs := strings.Split(rest, "/")
	rt := route{flavor: flavorGoogle, params: map[string]string{}}
	switch {
	case len(segs) == 5 && segs[0] == "v1" && segs[1] == "projects" && segs[3] == "services":
		rt.params["project"] = segs[2]
		service, verb, _ := strings.Cut(segs[4], ":")
		rt.params["service"] = service
		switch {
		case verb == "" && method == http.MethodGet:
			rt.id, rt.handler = "serviceusage.services.get", (*Emulator).suGetService
		case verb == "enable" && method == http.MethodPost:
			rt.id, rt.handler = "serviceusage.services.enable", (*Emulator).suEnableService
		}
	case len(segs) == 3 && segs[0] == "v1" && segs[1] == "operations" && method == http.MethodGet:
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
	service := c.param("service")
	p := e.projectLocked(c.param("project"))
	if p == nil || !e.allowedLocked(c, p, nil, "serviceusage.services.enable") {
		return nil, suDenied("enable", service, "serviceusage.services.enable")
	}
	if _, ok := p.Services[service]; !ok {
		return nil, suUnknownService(service)
	}
	if p.Services[service] == "ENABLED" {
		return map[string]any{
			"name": "operations/noop.DONE_OPERATION",
			"done": true,
			"response": map[string]any{
				"@type":   "type.googleapis.com/google.api.serviceusage.v1.EnableServiceResponse",
				"service": suServiceJSON(p, service),
			},
		}, nil
	}
	// Enabling twice while the first is running returns the running operation.
	for _, op := range e.st.Operations {
		if op.Kind == opServiceUsage && !op.Done && op.Project == p.ID && op.Service == service {
			return e.suOperationJSON(op), nil
		}
	}
	op := &operation{
		Kind:    opServiceUsage,
		Name:    fmt.Sprintf("operations/acf.p2-%d-%s", p.Number, uuidLike(e.nextSeq())),
		Project: p.ID,
		Service: service,
		Start:   c.now,
		End:     c.now.Add(e.cfg.OperationDuration),
	}
	e.st.Operations[op.Name] = op
	e.dirty = true
	e.advanceLocked()
	return e.suOperationJSON(op), nil
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
	var number int64
	if p := e.st.Projects[op.Project]; p != nil {
		number = p.Number
	}
	out := map[string]any{
		"name": op.Name,
		"metadata": map[string]any{
			"@type":         "type.googleapis.com/google.api.serviceusage.v1.OperationMetadata",
			"resourceNames": []string{fmt.Sprintf("services/%s/projectSettings/%d", op.Service, number)},
		},
	}
	if op.Done {
		out["done"] = true
		p := e.st.Projects[op.Project]
		out["response"] = map[string]any{
			"@type":   "type.googleapis.com/google.api.serviceusage.v1.EnableServiceResponse",
			"service": suServiceJSON(p, op.Service),
		}
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

	// Service Usage: the service being enabled.
	Service string `json:"service,omitempty"`

	// GKE: where, what, and what changes when it is done.
	Location      string  `json:"location,omitempty"`
	Cluster       string  `json:"cluster,omitempty"`
	NodePool      string  `json:"nodePool,omitempty"`
	OperationType string  `json:"operationType,omitempty"`
	WorkloadPool  *string `json:"workloadPool,omitempty"`
	MetadataMode  string  `json:"metadataMode,omitempty"`
	ErrorMessage  string  `json:"errorMessage,omitempty"`
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
		p.Services[op.Service] = "ENABLED"
	case opContainer:
		e.completeContainerOpLocked(p, op)
	}
}
