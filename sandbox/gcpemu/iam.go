package gcpemu

import (
	"fmt"
	"net/http"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
)

// IAM API v1: service accounts and their IAM policies, and predefined roles.

func routeIAM(method, rest string) route {
	segs := strings.Split(rest, "/")
	rt := route{flavor: flavorGoogle, params: map[string]string{}}
	switch {
	case len(segs) == 4 && segs[0] == "v1" && segs[1] == "projects" && segs[3] == "serviceAccounts":
		rt.params["project"] = segs[2]
		switch method {
		case http.MethodPost:
			rt.id, rt.handler = "iam.projects.serviceAccounts.create", (*Emulator).iamCreateServiceAccount
		case http.MethodGet:
			rt.id, rt.handler = "iam.projects.serviceAccounts.list", (*Emulator).iamListServiceAccounts
		}
	case len(segs) == 5 && segs[0] == "v1" && segs[1] == "projects" && segs[3] == "serviceAccounts":
		rt.params["project"] = segs[2]
		account, verb, _ := strings.Cut(segs[4], ":")
		rt.params["account"] = account
		switch {
		case verb == "" && method == http.MethodGet:
			rt.id, rt.handler = "iam.projects.serviceAccounts.get", (*Emulator).iamGetServiceAccount
		case verb == "" && method == http.MethodDelete:
			rt.id, rt.handler = "iam.projects.serviceAccounts.delete", (*Emulator).iamDeleteServiceAccount
		case verb == "getIamPolicy" && method == http.MethodPost:
			rt.id, rt.handler = "iam.projects.serviceAccounts.getIamPolicy", (*Emulator).iamGetServiceAccountPolicy
		case verb == "setIamPolicy" && method == http.MethodPost:
			rt.id, rt.handler = "iam.projects.serviceAccounts.setIamPolicy", (*Emulator).iamSetServiceAccountPolicy
		}
	case len(segs) == 3 && segs[0] == "v1" && segs[1] == "roles" && method == http.MethodGet:
		rt.params["role"] = "roles/" + segs[2]
		rt.id, rt.handler = "iam.roles.get", (*Emulator).iamGetRole
	}
	return rt
}

func iamDenied(perm string) *apiError {
	return errDenied("Permission '%s' denied on resource (or it may not exist).", perm).
		withInfo("IAM_PERMISSION_DENIED", "iam.googleapis.com", map[string]string{"permission": perm})
}

var accountIDPattern = regexp.MustCompile(`^[a-z]([-a-z0-9]*[a-z0-9])$`)

func (e *Emulator) iamCreateServiceAccount(c *call) (any, error) {
	p := e.projectLocked(c.param("project"))
	const perm = "iam.serviceAccounts.create"
	if p == nil {
		return nil, iamDenied(perm)
	}
	if err := e.requireServiceLocked(p, "iam.googleapis.com"); err != nil {
		return nil, err
	}
	if !e.allowedLocked(c, p, nil, perm) {
		return nil, iamDenied(perm)
	}
	var req struct {
		AccountID      string `json:"accountId"`
		ServiceAccount *struct {
			DisplayName string `json:"displayName"`
			Description string `json:"description"`
		} `json:"serviceAccount"`
	}
	if err := decodeBody(c, &req); err != nil {
		return nil, err
	}
	if len(req.AccountID) < 6 || len(req.AccountID) > 30 {
		return nil, errInvalid("Invalid value for field 'accountId': '%s'. Service account ID must be between 6 and 30 characters.", req.AccountID)
	}
	if !accountIDPattern.MatchString(req.AccountID) {
		return nil, errInvalid("Invalid value for field 'accountId': '%s'. Service account ID must start with a lower case letter, "+
			"followed by one or more lower case alphanumerical characters that can be separated by hyphens.", req.AccountID)
	}
	var display, description string
	if req.ServiceAccount != nil {
		display, description = req.ServiceAccount.DisplayName, req.ServiceAccount.Description
	}
	if len(display) > 100 {
		return nil, errInvalid("Invalid value for field 'serviceAccount.displayName': it must be at most 100 characters.")
	}
	if len(description) > 256 {
		return nil, errInvalid("Invalid value for field 'serviceAccount.description': it must be at most 256 characters.")
	}
	email := req.AccountID + "@" + p.ID + ".iam.gserviceaccount.com"
	if p.ServiceAccounts[email] != nil {
		return nil, errAlreadyExists("Service account %s already exists within project projects/%s.", req.AccountID, p.ID).
			withInfo("RESOURCE_ALREADY_EXISTS", "iam.googleapis.com", map[string]string{"resource": "projects/" + p.ID + "/serviceAccounts/" + email})
	}
	if len(p.ServiceAccounts) >= e.cfg.ServiceAccountQuota {
		quota := newAPIError(http.StatusTooManyRequests, "RESOURCE_EXHAUSTED", "Maximum number of service accounts on project reached.")
		quota.RetryDelay = serviceAccountQuotaRetry
		return nil, quota
	}
	sa := e.createServiceAccountLocked(p, req.AccountID, display, description, c.now)
	e.accounts.created(sa.Resource, c.now)
	return sa.Resource, nil
}

func (e *Emulator) createServiceAccountLocked(p *projectState, accountID, display, description string, now time.Time) *serviceAccount {
	email := accountID + "@" + p.ID + ".iam.gserviceaccount.com"
	uid := e.newUniqueID(p.Number)
	sa := &serviceAccount{
		Resource: saResource{
			Name: "projects/" + p.ID + "/serviceAccounts/" + email, ProjectID: p.ID, UniqueID: uid, Email: email,
			DisplayName: display, Description: description, Etag: "MDEwMjE5MjA=", Oauth2ClientID: uid,
		},
	}
	pol := &policy{Version: 1}
	pol.Etag = e.newEtag()
	// A new account's policy is empty from the start, with nothing to propagate.
	sa.Policy = newPolicyHistory(pol, time.Time{})
	p.ServiceAccounts[email] = sa
	e.dirty = true
	return sa
}

// findServiceAccountLocked finds an account by email or unique id in any project.
func (e *Emulator) findServiceAccountLocked(key string) *serviceAccount {
	for _, p := range e.st.Projects {
		if sa := p.ServiceAccounts[key]; sa != nil {
			return sa
		}
		for _, sa := range p.ServiceAccounts {
			if sa.Resource.UniqueID == key {
				return sa
			}
		}
	}
	return nil
}

// saTarget resolves the account a request names and the project it lives in.
// The path's project may be "-"; the account's own project is what counts. A
// new account named by email may be missed (consistency.go); by unique id it
// never is.
func (e *Emulator) saTarget(c *call) (*projectState, *serviceAccount) {
	key := c.param("account")
	sa := e.findServiceAccountLocked(key)
	if sa != nil {
		p := e.st.Projects[sa.Resource.ProjectID]
		if strings.Contains(key, "@") && e.accounts.misses(sa.Resource, c.now) {
			return p, nil
		}
		return p, sa
	}
	if _, project, ok := splitServiceAccountEmail(key); ok {
		return e.st.Projects[project], nil
	}
	if project, ok := e.accounts.gone[key]; ok {
		return e.st.Projects[project], nil
	}
	if proj := c.param("project"); proj != "-" {
		return e.projectLocked(proj), nil
	}
	return nil, nil
}

// saAuthorize checks perm on the account and tells a missing account (404) from
// a missing permission (403) only to callers allowed to know.
func (e *Emulator) saAuthorize(c *call, perm string) (*projectState, *serviceAccount, error) {
	p, sa := e.saTarget(c)
	if p != nil {
		if err := e.requireServiceLocked(p, "iam.googleapis.com"); err != nil {
			return nil, nil, err
		}
	}
	var res *policyHistory
	if sa != nil {
		res = sa.Policy
	}
	if !e.allowedLocked(c, p, res, perm) {
		return nil, nil, iamDenied(perm)
	}
	if sa == nil {
		if e.accounts.wasDeleted(c.param("account")) {
			// IAM answers a deleted account's email with a denial, even to
			// callers allowed to see the project's accounts.
			return nil, nil, iamDenied(perm)
		}
		return nil, nil, errNotFound("Unknown service account")
	}
	return p, sa, nil
}

func (e *Emulator) iamGetServiceAccount(c *call) (any, error) {
	_, sa, err := e.saAuthorize(c, "iam.serviceAccounts.get")
	if err != nil {
		return nil, err
	}
	return sa.Resource, nil
}

func (e *Emulator) iamListServiceAccounts(c *call) (any, error) {
	const perm = "iam.serviceAccounts.list"
	p := e.projectLocked(c.param("project"))
	if p == nil {
		return nil, iamDenied(perm)
	}
	if err := e.requireServiceLocked(p, "iam.googleapis.com"); err != nil {
		return nil, err
	}
	if !e.allowedLocked(c, p, nil, perm) {
		return nil, iamDenied(perm)
	}
	var all []saResource
	for _, sa := range p.ServiceAccounts {
		all = append(all, sa.Resource)
	}
	sort.Slice(all, func(i, j int) bool { return all[i].Email < all[j].Email })
	page, next, err := paginate(len(all), c.r.URL.Query().Get("pageSize"), c.r.URL.Query().Get("pageToken"), 20, 100)
	if err != nil {
		return nil, err
	}
	out := map[string]any{"accounts": all[page[0]:page[1]]}
	if next != "" {
		out["nextPageToken"] = next
	}
	return out, nil
}

// paginate returns the [start,end) slice for a page and the next page token.
func paginate(total int, sizeParam, tokenParam string, def, maxSize int) ([2]int, string, error) {
	size := def
	if sizeParam != "" {
		n, err := strconv.Atoi(sizeParam)
		if err != nil || n < 0 {
			return [2]int{}, "", errInvalid("Invalid page size: %s", sizeParam)
		}
		if n > 0 {
			size = min(n, maxSize)
		}
	}
	start := 0
	if tokenParam != "" {
		n, err := strconv.Atoi(strings.TrimPrefix(tokenParam, "page-"))
		if err != nil || n < 0 || n > total {
			return [2]int{}, "", errInvalid("Invalid page token: %s", tokenParam)
		}
		start = n
	}
	end := min(start+size, total)
	next := ""
	if end < total {
		next = fmt.Sprintf("page-%d", end)
	}
	return [2]int{start, end}, next, nil
}

func (e *Emulator) iamDeleteServiceAccount(c *call) (any, error) {
	p, sa, err := e.saAuthorize(c, "iam.serviceAccounts.delete")
	if err != nil {
		return nil, err
	}
	delete(p.ServiceAccounts, sa.Resource.Email)
	e.accounts.removed(sa.Resource)
	e.markMemberDeletedLocked(sa.Resource, c.now)
	return struct{}{}, nil
}

// markMemberDeletedLocked rewrites bindings of a deleted account the way IAM
// does, so a new account with the same email does not inherit them.
func (e *Emulator) markMemberDeletedLocked(sa saResource, now time.Time) {
	member := "serviceAccount:" + sa.Email
	deleted := "deleted:" + member + "?uid=" + sa.UniqueID
	rewrite := func(h *policyHistory) {
		cur := h.current()
		changed := false
		next := cur.clone()
		for i := range next.Bindings {
			for j, m := range next.Bindings[i].Members {
				if strings.EqualFold(m, member) {
					next.Bindings[i].Members[j] = deleted
					changed = true
				}
			}
		}
		if changed {
			next.normalize()
			next.Etag = e.newEtag()
			h.write(next, now, e.cfg.PropagationDelay)
		}
	}
	for _, p := range e.st.Projects {
		rewrite(p.Policy)
		for _, other := range p.ServiceAccounts {
			rewrite(other.Policy)
		}
		for _, d := range p.Datasets {
			changed := false
			for i, a := range d.Access {
				if strings.EqualFold(a.UserByEmail, sa.Email) || strings.EqualFold(a.IAMMember, member) {
					d.Access[i] = accessEntry{Role: a.Role, IAMMember: deleted}
					changed = true
				}
			}
			if changed {
				d.AccessPolicy.write(accessToPolicy(p.ID, d.Access), now, e.cfg.PropagationDelay)
				d.Etag = e.newEtag()
			}
		}
	}
	e.dirty = true
}

// requestedPolicyVersion reads options.requestedPolicyVersion from the query
// or from a GetIamPolicyRequest body.
func requestedPolicyVersion(c *call) (int, error) {
	if v := c.r.URL.Query().Get("options.requestedPolicyVersion"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			return 0, errInvalid("Invalid value at 'options.requested_policy_version' (TYPE_INT32), %q", v)
		}
		return n, nil
	}
	var req struct {
		Options *struct {
			RequestedPolicyVersion int `json:"requestedPolicyVersion"`
		} `json:"options"`
	}
	if err := decodeBody(c, &req); err != nil {
		return 0, err
	}
	if req.Options != nil {
		return req.Options.RequestedPolicyVersion, nil
	}
	return 0, nil
}

func (e *Emulator) iamGetServiceAccountPolicy(c *call) (any, error) {
	_, sa, err := e.saAuthorize(c, "iam.serviceAccounts.getIamPolicy")
	if err != nil {
		return nil, err
	}
	v, err := requestedPolicyVersion(c)
	if err != nil {
		return nil, err
	}
	return readPolicy(sa.Policy, v)
}

func (e *Emulator) iamSetServiceAccountPolicy(c *call) (any, error) {
	_, sa, err := e.saAuthorize(c, "iam.serviceAccounts.setIamPolicy")
	if err != nil {
		return nil, err
	}
	var req policyWrite
	if err := decodeBody(c, &req); err != nil {
		return nil, err
	}
	return e.writePolicy(c, sa.Policy, req, "iam.serviceAccounts.", nil)
}

func (e *Emulator) iamGetRole(c *call) (any, error) {
	name := c.param("role")
	perms, ok := roleTable[name]
	if !ok {
		return nil, errNotFound("The role named %s was not found.", name)
	}
	title := strings.TrimPrefix(name, "roles/")
	return map[string]any{
		"name": name, "title": title, "includedPermissions": perms, "stage": "GA", "etag": "AA==",
	}, nil
}
