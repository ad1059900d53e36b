package activities

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"go.temporal.io/sdk/temporal"
	"golang.org/x/oauth2"
	"google.golang.org/api/bigquery/v2"
	"google.golang.org/api/iamcredentials/v1"
	"google.golang.org/api/option"
	"google.golang.org/api/sts/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"

	"github.com/gkewi/gkewi/contract"
)

// Stages of the token chain, in the order a pod's GKE metadata server walks them.
const (
	StageKSAToken            = "ksa-token"
	StageSTSExchange         = "sts-exchange"
	StageGenerateAccessToken = "generate-access-token"
	StageBigQueryCall        = "bigquery-call"
)

// Constants of the STS token exchange the GKE metadata server makes.
const (
	stsGrantTypeTokenExchange = "urn:ietf:params:oauth:grant-type:token-exchange"
	stsTokenTypeJWT           = "urn:ietf:params:oauth:token-type:jwt"
	stsTokenTypeAccessToken   = "urn:ietf:params:oauth:token-type:access_token"
	cloudPlatformScope        = "https://www.googleapis.com/auth/cloud-platform"
)

// Lifetimes of the tokens the verification asks for: short, since they are
// thrown away at the end of the activity, and a revocation waits for the GSA
// tokens its walks were handed to expire. The API server's minimum for KSA
// tokens is 10 minutes.
const (
	verifyKSATokenLifetime = 10 * time.Minute
	verifyGSATokenLifetime = time.Minute
)

// Verifier walks the token chain a pod would: KSA token, STS exchange, GSA access
// token, BigQuery call. Tokens stay inside the activity.
type Verifier struct {
	clusters  *Clusters
	endpoints GCPEndpoints
	// options are added to every Google client, after the verifier's own
	// credentials (tests pass an HTTP client here).
	options []option.ClientOption
	// pollInterval is how often a walk with WaitAllowed is done again while
	// access is denied; default defaultVerifyPollInterval.
	pollInterval time.Duration
}

// defaultVerifyPollInterval: IAM propagation takes about 2 minutes, so a few
// seconds between walks finds access within a few percent of when it starts.
const defaultVerifyPollInterval = 5 * time.Second

// VerifierPollingEvery is v re-walking a denied chain every d when asked to
// wait for access (VerifyInput.WaitAllowed). A function, not a method: every
// exported method of an activity struct is registered as an activity.
func VerifierPollingEvery(v *Verifier, d time.Duration) *Verifier {
	c := *v
	c.pollInterval = d
	return &c
}

// NewVerifier returns a verifier asking kube for KSA tokens and calling the Google
// APIs at endpoints (empty fields: the real Google endpoints). It uses no
// credentials of the worker's own on the Google side: every call is made with the
// token the previous link of the chain produced.
func NewVerifier(kube kubernetes.Interface, endpoints GCPEndpoints, extra ...option.ClientOption) *Verifier {
	if kube == nil {
		return &Verifier{endpoints: endpoints, options: extra}
	}
	return NewVerifierFor(OneCluster(nil, kube), endpoints, extra...)
}

// NewVerifierFor is NewVerifier asking each request's cluster for its KSA token.
func NewVerifierFor(clusters *Clusters, endpoints GCPEndpoints, extra ...option.ClientOption) *Verifier {
	return &Verifier{clusters: clusters, endpoints: endpoints, options: extra}
}

// VerifyAccess reports how far the chain gets. A denial is a result, not an error;
// errors are for failures to ask.
//
// A link that is refused (the KSA does not exist, STS rejects the KSA token, IAM
// denies iam.serviceAccounts.getAccessToken, BigQuery denies the query) ends the
// chain with Allowed false and that stage's detail. Unreachable or failing APIs
// (transport errors, 429, 5xx) are retryable errors; a misconfigured worker (no
// permission to create KSA tokens) or a malformed input is a non-retryable one.
//
// With in.WaitAllowed a denial is walked again every poll interval until access
// is allowed or the attempt is about to time out, and the last walk is
// returned: IAM propagation is found within seconds, with one activity in the
// history instead of one per walk.
func (v *Verifier) VerifyAccess(ctx context.Context, in VerifyInput) (VerifyResult, error) {
	res, err := v.walk(ctx, in)
	if err != nil || res.Allowed || !in.WaitAllowed {
		return res, err
	}
	interval := v.pollInterval
	if interval <= 0 {
		interval = defaultVerifyPollInterval
	}
	pollCtx, cancel := waitBudget(ctx)
	defer cancel()
	_ = wait.PollUntilContextCancel(pollCtx, interval, false, func(pctx context.Context) (bool, error) {
		r, werr := v.walk(pctx, in)
		if werr != nil && pollCtx.Err() != nil && ctx.Err() == nil {
			// Cut by the poll's own deadline: the last denial stands.
			return true, nil
		}
		res, err = r, werr
		return err != nil || res.Allowed, nil
	})
	return res, err
}

// walk is one walk of the chain.
func (v *Verifier) walk(ctx context.Context, in VerifyInput) (VerifyResult, error) {
	if v == nil || v.clusters == nil {
		return VerifyResult{}, temporal.NewNonRetryableApplicationError(
			"verify: the worker's verifier has no Kubernetes client; build it with activities.NewVerifier", contract.ErrTypeFailedPrecondition, nil)
	}
	if err := in.validate(); err != nil {
		return VerifyResult{}, err
	}
	var res VerifyResult
	pass := func(name, detail string) {
		res.Stages = append(res.Stages, VerifyStage{Name: name, OK: true, Detail: detail})
	}
	deny := func(name, detail string) (VerifyResult, error) {
		res.Stages = append(res.Stages, VerifyStage{Name: name, OK: false, Detail: detail})
		return res, nil
	}
	kube, err := v.clusters.Client(in.Cluster)
	if err != nil {
		return VerifyResult{}, err
	}
	pool := in.Cluster.WorkloadPool()
	ksa := in.Namespace + "/" + in.KSA

	// 1. The KSA token the kubelet would mount, for the workload pool's audience.
	ksaToken, ksaExpiry, err := RequestKSAToken(ctx, kube, in.Namespace, in.KSA, pool, verifyKSATokenLifetime)
	if err != nil {
		var appErr *temporal.ApplicationError
		if errors.As(err, &appErr) && appErr.Type() == contract.ErrTypeNotFound {
			return deny(StageKSAToken, fmt.Sprintf("Kubernetes service account %s does not exist", ksa))
		}
		return res, err
	}
	pass(StageKSAToken, fmt.Sprintf("token for %s with audience %s, valid until %s", ksa, pool, ksaExpiry.UTC().Format(time.RFC3339)))
	heartbeat(ctx, StageKSAToken)

	// 2. The STS exchange for a federated token of the pool's identity.
	federated, err := v.exchange(ctx, in.Cluster, ksaToken)
	if err != nil {
		if detail, denied := verifyDenial(err); denied {
			return deny(StageSTSExchange, "STS refused the KSA token: "+detail)
		}
		return res, ClassifyGoogleError(err, "exchange the KSA token of "+ksa+" at STS", "")
	}
	pass(StageSTSExchange, fmt.Sprintf("federated token for serviceAccount:%s[%s]", pool, ksa))
	heartbeat(ctx, StageSTSExchange)

	// 3. The GSA access token, which IAM grants only to a principal holding
	// iam.serviceAccounts.getAccessToken on the GSA (roles/iam.workloadIdentityUser).
	gsaToken, gsaExpiry, err := v.generateAccessToken(ctx, in.GSAEmail, federated)
	if err != nil && in.justEnabled(err, time.Now()) {
		// The walk is done again, with backoff, like a binding still propagating.
		return deny(StageGenerateAccessToken, fmt.Sprintf(
			"the IAM Credentials API, enabled by this onboarding at %s, is not active yet (Google answers SERVICE_DISABLED for a few minutes after enabling): %s",
			in.ServiceEnabledAt.UTC().Format(time.RFC3339), googleErrorMessage(err)))
	}
	if err != nil {
		if detail, denied := verifyDenial(err); denied || IsNotFound(err) {
			if detail == "" {
				detail = googleErrorMessage(err)
			}
			return deny(StageGenerateAccessToken, fmt.Sprintf("IAM refused an access token of %s to %s: %s", in.GSAEmail, ksa, detail))
		}
		return res, ClassifyGoogleError(err, "generate an access token of "+in.GSAEmail, "iam.serviceAccounts.getAccessToken")
	}
	res.TokenExpiresAt = gsaExpiry
	pass(StageGenerateAccessToken, fmt.Sprintf("access token of %s, valid until %s", in.GSAEmail, gsaExpiry.UTC().Format(time.RFC3339)))
	heartbeat(ctx, StageGenerateAccessToken)

	// 4. A BigQuery call as the GSA: a dry-run query needs bigquery.jobs.create
	// in the project, which the connection's roles/bigquery.jobUser grants.
	if in.BigQueryProject == "" {
		pass(StageBigQueryCall, "skipped: no BigQuery project to call")
		res.Allowed = true
		return res, nil
	}
	location, err := v.dryRunQuery(ctx, in.BigQueryProject, gsaToken)
	if err != nil {
		if detail, denied := verifyDenial(err); denied {
			return deny(StageBigQueryCall, fmt.Sprintf("BigQuery refused a query of %s in project %s: %s", in.GSAEmail, in.BigQueryProject, detail))
		}
		return res, ClassifyGoogleError(err, "dry-run a query in BigQuery project "+in.BigQueryProject, "bigquery.jobs.create")
	}
	pass(StageBigQueryCall, fmt.Sprintf("BigQuery answered a dry-run query of %s in project %s (location %s)", in.GSAEmail, in.BigQueryProject, location))
	res.Allowed = true
	return res, nil
}

// serviceEnableSettle bounds how long after enabling an API a SERVICE_DISABLED
// answer is taken for "not active yet"; after it the API is really off.
const serviceEnableSettle = 15 * time.Minute

// justEnabled reports a SERVICE_DISABLED answer within serviceEnableSettle of
// the onboarding enabling the API itself.
func (in VerifyInput) justEnabled(err error, now time.Time) bool {
	e, ok := ParseGoogleAPIError(err)
	return ok && e.HTTPCode == http.StatusForbidden && isServiceDisabled(e) &&
		!in.ServiceEnabledAt.IsZero() && now.Before(in.ServiceEnabledAt.Add(serviceEnableSettle))
}

func (in VerifyInput) validate() error {
	var missing []string
	for name, v := range map[string]string{
		"cluster.project": in.Cluster.Project, "cluster.location": in.Cluster.Location, "cluster.cluster": in.Cluster.Cluster,
		"namespace": in.Namespace, "ksa": in.KSA, "gsaEmail": in.GSAEmail,
	} {
		if v == "" {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		slices.Sort(missing)
		return invalidArgument("verify: missing %s", strings.Join(missing, ", "))
	}
	return nil
}

// exchange trades the KSA token for a federated access token, with the request
// the GKE metadata server makes.
func (v *Verifier) exchange(ctx context.Context, c ClusterRef, ksaToken string) (string, error) {
	svc, err := NewSTSService(ctx, v.endpoints, v.options...)
	if err != nil {
		return "", fmt.Errorf("STS client: %w", err)
	}
	issuer := fmt.Sprintf("https://container.googleapis.com/v1/projects/%s/locations/%s/clusters/%s", c.Project, c.Location, c.Cluster)
	resp, err := svc.V1.Token(&sts.GoogleIdentityStsV1ExchangeTokenRequest{
		GrantType:          stsGrantTypeTokenExchange,
		Audience:           "identitynamespace:" + c.WorkloadPool() + ":" + issuer,
		Scope:              cloudPlatformScope,
		RequestedTokenType: stsTokenTypeAccessToken,
		SubjectToken:       ksaToken,
		SubjectTokenType:   stsTokenTypeJWT,
	}).Context(ctx).Do()
	if err != nil {
		return "", err
	}
	if resp.AccessToken == "" {
		return "", errors.New("STS answered without an access token")
	}
	return resp.AccessToken, nil
}

// generateAccessToken asks IAM for a short-lived token of gsa, as the holder of
// the federated token, and returns it with its expiry.
func (v *Verifier) generateAccessToken(ctx context.Context, gsa, federated string) (string, time.Time, error) {
	opts := append([]option.ClientOption{option.WithTokenSource(bearer(federated))}, v.options...)
	svc, err := NewIAMCredentialsService(ctx, v.endpoints, opts...)
	if err != nil {
		return "", time.Time{}, fmt.Errorf("IAM credentials client: %w", err)
	}
	resp, err := svc.Projects.ServiceAccounts.GenerateAccessToken("projects/-/serviceAccounts/"+gsa,
		&iamcredentials.GenerateAccessTokenRequest{
			Scope:    []string{cloudPlatformScope},
			Lifetime: fmt.Sprintf("%ds", int(verifyGSATokenLifetime/time.Second)),
		}).Context(ctx).Do()
	if err != nil {
		return "", time.Time{}, err
	}
	if resp.AccessToken == "" {
		return "", time.Time{}, errors.New("IAM answered without an access token")
	}
	expiry, err := time.Parse(time.RFC3339, resp.ExpireTime)
	if err != nil {
		// The token was handed out: its expiry must be known to wait for it.
		return "", time.Time{}, fmt.Errorf("IAM answered with an unreadable expireTime %q: %w", resp.ExpireTime, err)
	}
	return resp.AccessToken, expiry, nil
}

// dryRunQuery validates a trivial query in project as the GSA and returns the
// location BigQuery would run it in.
func (v *Verifier) dryRunQuery(ctx context.Context, project, gsaToken string) (string, error) {
	opts := append([]option.ClientOption{option.WithTokenSource(bearer(gsaToken))}, v.options...)
	svc, err := NewBigQueryService(ctx, v.endpoints, opts...)
	if err != nil {
		return "", fmt.Errorf("BigQuery client: %w", err)
	}
	useLegacy := false
	resp, err := svc.Jobs.Query(project, &bigquery.QueryRequest{
		Query:        "SELECT 1",
		DryRun:       true,
		UseLegacySql: &useLegacy,
	}).Context(ctx).Do()
	if err != nil {
		return "", err
	}
	location := "unknown"
	if resp.JobReference != nil && resp.JobReference.Location != "" {
		location = resp.JobReference.Location
	}
	return location, nil
}

func bearer(token string) oauth2.TokenSource {
	return oauth2.StaticTokenSource(&oauth2.Token{AccessToken: token, TokenType: "Bearer"})
}

// verifyDenial says whether a Google API error is the chain being refused (as
// opposed to a failure to ask), with the server's explanation. Refusals are
// 401 and 403 (except rate limits and disabled APIs, which an operator must fix
// or wait out) and STS's 400 invalid_grant / invalid_target / unauthorized_client.
func verifyDenial(err error) (string, bool) {
	e, ok := ParseGoogleAPIError(err)
	if !ok {
		return "", false
	}
	switch e.HTTPCode {
	case http.StatusUnauthorized:
		return oauthMessage(e), true
	case http.StatusForbidden:
		if isRateLimited(e) || isServiceDisabled(e) {
			return "", false
		}
		return oauthMessage(e), true
	case http.StatusBadRequest:
		switch oauthErrorCode(e) {
		case "invalid_grant", "invalid_target", "unauthorized_client", "access_denied":
			return oauthMessage(e), true
		}
	}
	return "", false
}

// oauthBody is the error body of STS, in the OAuth 2.0 form.
type oauthBody struct {
	Error            string `json:"error"`
	ErrorDescription string `json:"error_description"`
}

// oauthErrorCode is the OAuth "error" code of an STS error, or "".
func oauthErrorCode(e GoogleAPIError) string {
	var b oauthBody
	if json.Unmarshal([]byte(e.Message), &b) == nil && b.Error != "" {
		return b.Error
	}
	if e.Status == "" {
		return e.Reason // ParseGoogleAPIError keeps the OAuth code as the reason
	}
	return ""
}

// oauthMessage is the human-readable part of an error, with the OAuth error
// code in front for STS errors.
func oauthMessage(e GoogleAPIError) string {
	var b oauthBody
	if json.Unmarshal([]byte(e.Message), &b) == nil && b.Error != "" {
		if b.ErrorDescription != "" {
			return b.Error + ": " + b.ErrorDescription
		}
		return b.Error
	}
	if code := oauthErrorCode(e); code != "" && !strings.HasPrefix(e.Message, code) {
		return code + ": " + e.Message
	}
	return e.Message
}

func googleErrorMessage(err error) string {
	if e, ok := ParseGoogleAPIError(err); ok {
		return fmt.Sprintf("HTTP %d: %s", e.HTTPCode, oauthMessage(e))
	}
	return err.Error()
}
