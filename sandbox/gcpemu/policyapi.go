package gcpemu

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"strings"
)

const (
	msgConcurrentPolicyChange = "There were concurrent policy changes. Please retry the whole read-modify-write with exponential backoff."
	policyVersionsHelp        = "For more information, please refer to https://cloud.google.com/iam/docs/policies#versions."
)

// readPolicy is getIamPolicy: the current policy as the requested version sees
// it. A version 1 view of a conditional binding renames its role with a
// "_withcond_" suffix and drops the condition, as IAM does.
func readPolicy(h *policyHistory, requested int) (*policy, error) {
	switch requested {
	case 0, 1, 3:
	default:
		return nil, errInvalid("Invalid requested policy version %d. Only versions 0, 1 and 3 are supported. %s", requested, policyVersionsHelp)
	}
	out := h.current().clone()
	if !out.hasConditions() {
		out.Version = 1
		return out, nil
	}
	if requested == 3 {
		out.Version = 3
		return out, nil
	}
	for i := range out.Bindings {
		if c := out.Bindings[i].Condition; c != nil {
			out.Bindings[i].Role = withCondSuffix(out.Bindings[i].Role, c)
			out.Bindings[i].Condition = nil
		}
	}
	out.Version = 1
	return out, nil
}

// policyWrite is a setIamPolicy request body.
type policyWrite struct {
	Policy     *policy `json:"policy"`
	UpdateMask string  `json:"updateMask,omitempty"`
}

// memberCheck validates one member for the resource being written.
type memberCheck func(role, member string) error

// writePolicy is setIamPolicy's read-modify-write check and update.
// permPrefix names the permissions a role must carry to be granted on this kind
// of resource ("" accepts every known role).
func (e *Emulator) writePolicy(c *call, h *policyHistory, req policyWrite, permPrefix string, check memberCheck) (*policy, error) {
	in := req.Policy
	if in == nil {
		return nil, errInvalid("Request contains an invalid argument.").
			withInfo("INVALID_ARGUMENT", "iam.googleapis.com", map[string]string{"field": "policy"})
	}
	cur := h.current()
	if in.Etag != "" && !sameEtag(in.Etag, cur.Etag) {
		return nil, errAborted(msgConcurrentPolicyChange)
	}
	switch in.Version {
	case 0, 1, 3:
	default:
		return nil, errInvalid("Invalid policy version %d. %s", in.Version, policyVersionsHelp)
	}
	if in.Etag != "" && cur.hasConditions() && in.Version < 3 {
		return nil, errInvalid("Specified policy version (%d) cannot be less than the existing policy version (3). %s",
			max(in.Version, 1), policyVersionsHelp)
	}
	next := &policy{Bindings: cur.clone().Bindings, AuditConfigs: cur.AuditConfigs}
	mask := req.UpdateMask
	if mask == "" {
		mask = "bindings,etag"
	}
	for _, field := range strings.Split(mask, ",") {
		switch strings.TrimSpace(field) {
		case "bindings":
			next.Bindings = in.clone().Bindings
		case "auditConfigs":
			next.AuditConfigs = in.AuditConfigs
		case "etag", "version", "":
		default:
			return nil, errInvalid("Invalid field mask path: %q.", field)
		}
	}
	known := map[string]bool{}
	for _, b := range cur.Bindings {
		for _, m := range b.Members {
			known[m] = true
		}
	}
	for _, b := range next.Bindings {
		if b.Role == "" {
			return nil, errInvalid("Role must be set in a binding.")
		}
		if b.Condition != nil {
			if in.Version < 3 {
				return nil, errInvalid("Conditional role bindings need policy version 3; the policy was sent as version %d. %s",
					max(in.Version, 1), policyVersionsHelp)
			}
			if strings.TrimSpace(b.Condition.Expression) == "" {
				return nil, errInvalid("Condition expression must not be empty (role %s).", b.Role)
			}
			if strings.TrimSpace(b.Condition.Title) == "" {
				return nil, errInvalid("Condition title must not be empty (role %s).", b.Role)
			}
		}
		if !roleKnown(b.Role) || (permPrefix != "" && !roleSupportedOn(b.Role, permPrefix)) {
			return nil, errInvalid("Role %s is not supported for this resource.", b.Role)
		}
		if len(b.Members) == 0 {
			return nil, errInvalid("Binding for role %s has no members; bindings with no members are not allowed.", b.Role)
		}
		for _, m := range b.Members {
			if err := e.validateMemberLocked(m); err != nil {
				return nil, err
			}
			if !known[m] {
				if err := e.staleMemberLocked(m, c.now); err != nil {
					return nil, err
				}
			}
			if check != nil {
				if err := check(b.Role, m); err != nil {
					return nil, err
				}
			}
		}
	}
	next.normalize()
	if err := checkPolicySize(next); err != nil {
		return nil, err
	}
	next.Etag = e.newEtag()
	h.write(next, c.now, e.cfg.PropagationDelay)
	e.dirty = true
	return readPolicy(h, 3)
}

// validateMemberLocked checks a member's syntax and that what it names exists.
func (e *Emulator) validateMemberLocked(m string) error {
	switch m {
	case "allUsers", "allAuthenticatedUsers":
		return nil
	}
	if strings.HasPrefix(m, "principal://") || strings.HasPrefix(m, "principalSet://") {
		return e.validatePrincipalURI(m)
	}
	kind, value, ok := strings.Cut(m, ":")
	if !ok || value == "" {
		return errInvalid(`Policy members must be of the form "<type>:<value>".`)
	}
	switch kind {
	case "user", "group":
		if !emailPattern.MatchString(value) {
			return errInvalid("Invalid member: %s", m)
		}
		if kind == "user" && strings.HasSuffix(value, ".gserviceaccount.com") {
			return errInvalid(`Account %s is of type "serviceAccount". Please set the type prefix to be "serviceAccount:".`, value)
		}
	case "serviceAccount":
		if strings.HasSuffix(value, "]") {
			mm := workloadSAPattern.FindStringSubmatch(value)
			if mm == nil {
				return errInvalid("Invalid member: %s", m)
			}
			return e.requireWorkloadPoolLocked(mm[1] + ".svc.id.goog")
		}
		if !emailPattern.MatchString(value) {
			return errInvalid("Invalid member: %s", m)
		}
		if !strings.HasSuffix(value, ".gserviceaccount.com") {
			return errInvalid(`Account %s is of type "user". Please set the type prefix to be "user:".`, value)
		}
		if _, project, ok := splitServiceAccountEmail(value); ok && e.st.Projects[project] != nil {
			if e.findServiceAccountLocked(value) == nil {
				return errInvalid("Service account %s does not exist.", value)
			}
		}
	case "domain":
		if !domainPattern.MatchString(value) {
			return errInvalid("Invalid member: %s", m)
		}
	case "deleted":
		// deleted:serviceAccount:x?uid=N is kept as IAM leaves it.
	case "projectOwner", "projectEditor", "projectViewer":
		if e.projectLocked(value) == nil {
			return errInvalid("Invalid member: %s", m)
		}
	default:
		return errInvalid(`Policy members must be of the form "<type>:<value>".`)
	}
	return nil
}

func (e *Emulator) validatePrincipalURI(m string) error {
	var number, pool string
	if mm := principalWIPattern.FindStringSubmatch(m); mm != nil {
		number, pool = mm[1], mm[2]
	} else if mm := principalSetPattern.FindStringSubmatch(m); mm != nil {
		number, pool = mm[1], mm[2]
	} else {
		return errInvalid("Invalid principal identifier: %s", m)
	}
	p := e.projectLocked(number)
	if p == nil || pool != p.ID+".svc.id.goog" || fmt.Sprint(p.Number) != number {
		return errInvalid("%s", identityPoolMissing(pool))
	}
	return e.requireWorkloadPoolLocked(pool)
}

func identityPoolMissing(pool string) string {
	return fmt.Sprintf("Identity Pool does not exist (%s). Please check that you specified a valid resource name "+
		"as returned in the `name` attribute in the configuration API.", pool)
}

// requireWorkloadPoolLocked fails until some cluster of the pool's project has
// Workload Identity on: that is when GKE creates the project's pool.
func (e *Emulator) requireWorkloadPoolLocked(pool string) error {
	project := strings.TrimSuffix(pool, ".svc.id.goog")
	if p := e.st.Projects[project]; p != nil {
		for _, c := range p.Clusters {
			if c.WorkloadPool == pool {
				return nil
			}
		}
	}
	return errInvalid("%s", identityPoolMissing(pool))
}

// sameEtag compares policy etags as the bytes they encode: the field is bytes
// in Google's APIs, and clients re-encode it (gcloud sends the URL-safe
// alphabet, '-' and '_', for the '+' and '/' it was given).
func sameEtag(a, b string) bool {
	decode := func(s string) ([]byte, error) {
		s = strings.NewReplacer("-", "+", "_", "/").Replace(strings.TrimRight(s, "="))
		return base64.RawStdEncoding.DecodeString(s)
	}
	da, errA := decode(a)
	db, errB := decode(b)
	if errA != nil || errB != nil {
		return a == b
	}
	return bytes.Equal(da, db)
}
