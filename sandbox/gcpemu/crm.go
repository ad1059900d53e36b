package gcpemu

import (
	"fmt"
	"net/http"
	"strings"
	"time"
)

// Cloud Resource Manager API v3: projects and their IAM policies.

func routeCRM(method, rest string) route {
	segs := strings.Split(rest, "/")
	rt := route{flavor: flavorGoogle, params: map[string]string{}}
	// v3 is the contract; v1 is served too because many examples still use it.
	if len(segs) != 3 || (segs[0] != "v3" && segs[0] != "v1") || segs[1] != "projects" {
		return rt
	}
	project, verb, _ := strings.Cut(segs[2], ":")
	rt.params["project"] = project
	switch {
	case verb == "" && method == http.MethodGet && segs[0] == "v1":
		rt.id, rt.handler = "cloudresourcemanager.projects.get", (*Emulator).crmGetProjectV1
	case verb == "" && method == http.MethodGet:
		rt.id, rt.handler = "cloudresourcemanager.projects.get", (*Emulator).crmGetProject
	case verb == "getIamPolicy" && method == http.MethodPost:
		rt.id, rt.handler = "cloudresourcemanager.projects.getIamPolicy", (*Emulator).crmGetPolicy
	case verb == "setIamPolicy" && method == http.MethodPost:
		rt.id, rt.handler = "cloudresourcemanager.projects.setIamPolicy", (*Emulator).crmSetPolicy
	}
	return rt
}

func crmCallerDenied() *apiError {
	return errDenied("The caller does not have permission")
}

func (e *Emulator) crmProject(c *call) (*projectState, error) {
	const perm = "resourcemanager.projects.get"
	key := c.param("project")
	p := e.projectLocked(key)
	if p == nil || !e.allowedLocked(c, p, nil, perm) {
		return nil, errDenied("Permission '%s' denied on resource '//cloudresourcemanager.googleapis.com/projects/%s' (or it may not exist).", perm, key).
			withInfo("IAM_PERMISSION_DENIED", "cloudresourcemanager.googleapis.com", map[string]string{
				"permission": perm, "resource": "projects/" + key,
			})
	}
	return p, nil
}

// crmGetProjectV1 is the v1 shape of a project.
func (e *Emulator) crmGetProjectV1(c *call) (any, error) {
	p, err := e.crmProject(c)
	if err != nil {
		return nil, err
	}
	return map[string]any{
		"projectNumber":  fmt.Sprint(p.Number),
		"projectId":      p.ID,
		"lifecycleState": "ACTIVE",
		"name":           p.ID,
		"createTime":     p.CreateTime.UTC().Format(time.RFC3339Nano),
		"parent":         map[string]string{"type": "organization", "id": "123456789012"},
	}, nil
}

func (e *Emulator) crmGetProject(c *call) (any, error) {
	p, err := e.crmProject(c)
	if err != nil {
		return nil, err
	}
	return map[string]any{
		"name":        fmt.Sprintf("projects/%d", p.Number),
		"parent":      "organizations/123456789012",
		"projectId":   p.ID,
		"state":       "ACTIVE",
		"displayName": p.ID,
		"createTime":  p.CreateTime.UTC().Format(time.RFC3339Nano),
		"updateTime":  p.CreateTime.UTC().Format(time.RFC3339Nano),
		"etag":        fmt.Sprintf("W/\"%x\"", p.Number),
	}, nil
}

func (e *Emulator) crmGetPolicy(c *call) (any, error) {
	p := e.projectLocked(c.param("project"))
	if p == nil || !e.allowedLocked(c, p, nil, "resourcemanager.projects.getIamPolicy") {
		return nil, crmCallerDenied()
	}
	v, err := requestedPolicyVersion(c)
	if err != nil {
		return nil, err
	}
	return readPolicy(p.Policy, v)
}

func (e *Emulator) crmSetPolicy(c *call) (any, error) {
	p := e.projectLocked(c.param("project"))
	if p == nil || !e.allowedLocked(c, p, nil, "resourcemanager.projects.setIamPolicy") {
		return nil, crmCallerDenied()
	}
	var req policyWrite
	if err := decodeBody(c, &req); err != nil {
		return nil, err
	}
	return e.writePolicy(c, p.Policy, req, "", nil)
}
