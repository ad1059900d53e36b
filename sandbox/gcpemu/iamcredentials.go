package gcpemu

import (
	"net/http"
	"strconv"
	"strings"
	"time"
)

// IAM Service Account Credentials API v1: short-lived access tokens of a
// service account for callers holding iam.serviceAccounts.getAccessToken on it,
// and its ID tokens (generateIdToken, oidc.go).

func routeIAMCredentials(method, rest string) route {
	segs := strings.Split(rest, "/")
	rt := route{flavor: flavorGoogle, params: map[string]string{}}
	if len(segs) == 5 && segs[0] == "v1" && segs[1] == "projects" && segs[3] == "serviceAccounts" && method == http.MethodPost {
		account, verb, _ := strings.Cut(segs[4], ":")
		rt.params["project"], rt.params["account"] = segs[2], account
		switch verb {
		case "generateAccessToken":
			rt.id, rt.handler = "iamcredentials.projects.serviceAccounts.generateAccessToken", (*Emulator).credsGenerateAccessToken
		case "generateIdToken":
			rt.id, rt.handler = "iamcredentials.projects.serviceAccounts.generateIdToken", (*Emulator).credsGenerateIDToken
		}
	}
	return rt
}

const maxTokenLifetime = time.Hour

// credsAccount resolves the service account an IAM Credentials call names and
// checks perm on it: the API enabled in its project, the caller allowed, the
// account existing and enabled.
func (e *Emulator) credsAccount(c *call, perm string) (*serviceAccount, error) {
	p, sa := e.saTarget(c)
	if p != nil {
		if err := e.requireServiceLocked(p, "iamcredentials.googleapis.com"); err != nil {
			return nil, err
		}
	}
	var res *policyHistory
	if sa != nil {
		res = sa.Policy
	}
	if !e.allowedLocked(c, p, res, perm) {
		return nil, iamDenied(perm)
	}
	if sa == nil {
		return nil, errNotFound("Not found; Gaia id not found for email %s", c.param("account"))
	}
	if sa.Resource.Disabled {
		return nil, errFailedPrecondition("The service account %s is disabled.", sa.Resource.Email)
	}
	return sa, nil
}

func (e *Emulator) credsGenerateAccessToken(c *call) (any, error) {
	const perm = "iam.serviceAccounts.getAccessToken"
	sa, err := e.credsAccount(c, perm)
	if err != nil {
		return nil, err
	}
	var req struct {
		Delegates []string `json:"delegates"`
		Scope     []string `json:"scope"`
		Lifetime  string   `json:"lifetime"`
	}
	if err := decodeBody(c, &req); err != nil {
		return nil, err
	}
	if len(req.Scope) == 0 {
		return nil, errInvalid("Scope required.")
	}
	if len(req.Delegates) > 0 {
		return nil, errInvalid("Delegation chains are not supported by this emulator.")
	}
	lifetime := maxTokenLifetime
	if req.Lifetime != "" {
		secs, err := strconv.ParseFloat(strings.TrimSuffix(req.Lifetime, "s"), 64)
		if err != nil || !strings.HasSuffix(req.Lifetime, "s") {
			return nil, errInvalid("Invalid value at 'lifetime' (type.googleapis.com/google.protobuf.Duration), Field 'lifetime', Illegal duration format; duration must end with 's'")
		}
		lifetime = time.Duration(secs * float64(time.Second))
		if lifetime <= 0 || lifetime > maxTokenLifetime {
			return nil, errInvalid("The lifetime of an access token must be between 1 second and 3600 seconds; %s was requested.", req.Lifetime)
		}
	}
	tok := &token{
		Principal:  "serviceAccount:" + sa.Resource.Email,
		Identities: []string{"serviceAccount:" + sa.Resource.Email},
		SAUniqueID: sa.Resource.UniqueID,
	}
	value := e.issueLocked(tok, lifetime)
	return map[string]any{
		"accessToken": value,
		"expireTime":  tok.Expiry.UTC().Format(time.RFC3339),
	}, nil
}
