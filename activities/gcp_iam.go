package activities

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"regexp"
	"strings"
	"time"

	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/temporal"
	"google.golang.org/api/cloudresourcemanager/v3"
	"google.golang.org/api/iam/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/gkewi/gkewi/contract"
)

var accountIDRE = regexp.MustCompile(`^[a-z]([-a-z0-9]*[a-z0-9])$`)

func serviceAccountResource(email string) string { return "projects/-/serviceAccounts/" + email }

// createdMarker is the description gkewi gives the accounts it creates, naming
// the workflow run, so a retried attempt recognizes an account its earlier
// attempt created (the create's response may have been lost). The run ID matters:
// every run of one grant shares the workflow ID, and a later run must not take
// the account an earlier run created, and still in use, for its own.
func createdMarker(ctx context.Context) string {
	if !activity.IsActivity(ctx) {
		return ""
	}
	run := activity.GetInfo(ctx).WorkflowExecution
	marker := "Created by gkewi for run " + run.RunID + " of workflow " + run.ID
	if len(marker) > maxDescriptionBytes {
		// The run ID alone is unique; the workflow ID is for the reader.
		marker = marker[:maxDescriptionBytes]
	}
	return marker
}

// maxDescriptionBytes is IAM's limit on a service account's description.
const maxDescriptionBytes = 256

// EnsureServiceAccount creates the GSA or reuses the existing one. It never
// creates keys.
func (g *GCP) EnsureServiceAccount(ctx context.Context, in EnsureServiceAccountInput) (ServiceAccount, error) {
	if in.Email != "" {
		return g.existingServiceAccount(ctx, in.Email)
	}
	if in.Project == "" {
		return ServiceAccount{}, invalidArgument("service account needs a project")
	}
	if l := len(in.AccountID); l < 6 || l > 30 || !accountIDRE.MatchString(in.AccountID) {
		return ServiceAccount{}, invalidArgument(
			"service account id %q is invalid: it must be 6-30 characters of lowercase letters, digits and hyphens, start with a letter and not end with a hyphen", in.AccountID)
	}
	email := in.AccountID + "@" + in.Project + ".iam.gserviceaccount.com"
	name := "projects/" + in.Project + "/serviceAccounts/" + email

	// Look first, so a re-run makes no mutating call.
	sa, err := g.iam.Projects.ServiceAccounts.Get(name).Context(ctx).Do()
	if err == nil {
		return checkOwnAccount(ctx, sa, in.Project, email)
	}
	// IAM may answer 403 for an account it cannot find: let the create decide.
	if !IsNotFound(err) && apiCode(err) != 403 {
		return ServiceAccount{}, ClassifyGoogleError(err, "read service account "+email, "iam.serviceAccounts.get")
	}
	sa, err = g.iam.Projects.ServiceAccounts.Create("projects/"+in.Project, &iam.CreateServiceAccountRequest{
		AccountId: in.AccountID,
		ServiceAccount: &iam.ServiceAccount{
			DisplayName: in.DisplayName,
			Description: createdMarker(ctx),
		},
	}).Context(ctx).Do()
	if err == nil {
		return ServiceAccount{Email: sa.Email, UniqueID: sa.UniqueId, Created: true}, nil
	}
	if !IsAlreadyExists(err) {
		return ServiceAccount{}, ClassifyGoogleError(err, "create service account "+email, "iam.serviceAccounts.create")
	}
	// Created meanwhile: by another writer, or by an earlier attempt whose
	// response was lost (the look-up above may also have missed an account
	// created moments ago). IAM may not show it by email for a while yet.
	_, err = g.whilePropagating(ctx, newAccountPropagating, func(ctx context.Context) (bool, error) {
		sa, err = g.iam.Projects.ServiceAccounts.Get(name).Context(ctx).Do()
		return false, ClassifyGoogleError(err, "read service account "+email+", which exists", "iam.serviceAccounts.get")
	})
	if err != nil {
		return ServiceAccount{}, err
	}
	return checkOwnAccount(ctx, sa, in.Project, email)
}

func (g *GCP) existingServiceAccount(ctx context.Context, email string) (ServiceAccount, error) {
	sa, err := g.iam.Projects.ServiceAccounts.Get(serviceAccountResource(email)).Context(ctx).Do()
	if IsNotFound(err) {
		return ServiceAccount{}, temporal.NewNonRetryableApplicationError(
			fmt.Sprintf("service account %s does not exist; create it or give gsa.accountId instead", email), contract.ErrTypeNotFound, err)
	}
	if err != nil {
		return ServiceAccount{}, ClassifyGoogleError(err, "read service account "+email, "iam.serviceAccounts.get")
	}
	if sa.Disabled {
		return ServiceAccount{}, disabledAccountError(sa.Email)
	}
	return ServiceAccount{Email: sa.Email, UniqueID: sa.UniqueId}, nil
}

// checkOwnAccount accepts an account found under the email gkewi would create,
// after checking it really is that project's account.
func checkOwnAccount(ctx context.Context, sa *iam.ServiceAccount, project, email string) (ServiceAccount, error) {
	if !strings.EqualFold(sa.Email, email) || (sa.ProjectId != "" && sa.ProjectId != project) {
		return ServiceAccount{}, temporal.NewNonRetryableApplicationError(
			fmt.Sprintf("service account %s (project %s) is not the expected %s of project %s", sa.Email, sa.ProjectId, email, project),
			contract.ErrTypeFailedPrecondition, nil)
	}
	if sa.Disabled {
		return ServiceAccount{}, disabledAccountError(sa.Email)
	}
	marker := createdMarker(ctx)
	return ServiceAccount{Email: sa.Email, UniqueID: sa.UniqueId, Created: marker != "" && sa.Description == marker}, nil
}

func disabledAccountError(email string) error {
	return temporal.NewNonRetryableApplicationError(
		fmt.Sprintf("service account %s is disabled; enable it (gcloud iam service-accounts enable %s) or use another account", email, email),
		contract.ErrTypeFailedPrecondition, nil)
}

// DeleteServiceAccount deletes a GSA by its unique id: an account created later
// under the same email is not ours and cannot be hit. It does not look the
// account up by email first: by email IAM answers 404 for a while after a
// create, and 403 for a deleted account, so neither proves the account gone.
// The unique id is IAM's key: a 404 for it does.
func (g *GCP) DeleteServiceAccount(ctx context.Context, in ServiceAccount) (StepResult, error) {
	if in.Email == "" || in.UniqueID == "" {
		return StepResult{}, invalidArgument("deleting a service account needs its email and unique id (got %q, %q)", in.Email, in.UniqueID)
	}
	gone := StepResult{Detail: fmt.Sprintf("service account %s (unique id %s) already deleted", in.Email, in.UniqueID)}
	_, err := g.iam.Projects.ServiceAccounts.Delete(serviceAccountResource(in.UniqueID)).Context(ctx).Do()
	if IsNotFound(err) {
		return gone, nil
	}
	if apiCode(err) == http.StatusForbidden {
		// "denied on resource (or it may not exist)": gone only if the checks
		// by unique id say so; else the denial stands.
		if isGone, gerr := g.serviceAccountGone(ctx, in.Email, in.UniqueID); gerr == nil && isGone {
			return gone, nil
		}
	}
	if err != nil {
		return StepResult{}, ClassifyGoogleError(err, "delete service account "+in.Email, "iam.serviceAccounts.delete")
	}
	return StepResult{Changed: true, Detail: "service account " + in.Email + " deleted"}, nil
}

// serviceAccountGone tells whether an account IAM answered 404 or 403 for, by
// email, is really gone. By email neither answer proves it: IAM misses accounts
// created moments ago (404) and denies calls naming a deleted account even to
// callers allowed to see it (403 "or it may not exist"). The unique id is IAM's
// key, so a GET by unique id answering 404 does. Without a unique id the
// account is looked for in its project's list: an email the list does not hold
// is gone, else its listed unique id decides. It answers false when it cannot
// tell (an email outside a project's iam.gserviceaccount.com domain).
func (g *GCP) serviceAccountGone(ctx context.Context, email, uniqueID string) (bool, error) {
	if uniqueID == "" {
		_, domain, _ := strings.Cut(email, "@")
		project, ok := strings.CutSuffix(domain, ".iam.gserviceaccount.com")
		if !ok || project == "" {
			return false, nil
		}
		err := g.iam.Projects.ServiceAccounts.List("projects/"+project).Context(ctx).Pages(ctx, func(r *iam.ListServiceAccountsResponse) error {
			for _, a := range r.Accounts {
				if strings.EqualFold(a.Email, email) {
					uniqueID = a.UniqueId
				}
			}
			return nil
		})
		if err != nil {
			return false, ClassifyGoogleError(err, "list service accounts of project "+project, "iam.serviceAccounts.list")
		}
		if uniqueID == "" {
			return true, nil
		}
	}
	_, err := g.iam.Projects.ServiceAccounts.Get(serviceAccountResource(uniqueID)).Context(ctx).Do()
	if IsNotFound(err) {
		return true, nil
	}
	return false, ClassifyGoogleError(err, "read service account "+email+" by unique id "+uniqueID, "iam.serviceAccounts.get")
}

// AddServiceAccountIAMMember adds one member to one role on a GSA's IAM policy.
func (g *GCP) AddServiceAccountIAMMember(ctx context.Context, in ServiceAccountIAMInput) (StepResult, error) {
	if err := in.validate(); err != nil {
		return StepResult{}, err
	}
	if err := g.checkWorkloadPoolOf(ctx, in.Member); err != nil {
		return StepResult{}, err
	}
	pa := g.serviceAccountPolicy(in.ServiceAccountEmail)
	changed, err := g.whilePropagating(ctx, newAccountPropagating, func(ctx context.Context) (bool, error) {
		return g.modifyPolicy(ctx, pa, func(p *Policy) bool { return p.AddMember(in.Role, in.Member) })
	})
	if err != nil {
		return StepResult{}, err
	}
	return memberResult(changed, true, in.Role, in.Member, "service account "+in.ServiceAccountEmail), nil
}

// RemoveServiceAccountIAMMember removes one member from one role on a GSA's IAM
// policy. An account that is gone has nothing to remove; IAM's 404 or 403 for
// it counts as gone only once serviceAccountGone confirms it, and a 404 for an
// account that exists (a new one IAM does not show everywhere yet) is retried.
func (g *GCP) RemoveServiceAccountIAMMember(ctx context.Context, in ServiceAccountIAMInput) (StepResult, error) {
	if err := in.validate(); err != nil {
		return StepResult{}, err
	}
	pa := g.serviceAccountPolicy(in.ServiceAccountEmail)
	gone := false
	changed, err := g.whilePropagating(ctx, IsNotFound, func(ctx context.Context) (bool, error) {
		changed, err := g.modifyPolicy(ctx, pa, func(p *Policy) bool { return p.RemoveMember(in.Role, in.Member) })
		if code := apiCode(err); code == http.StatusNotFound || code == http.StatusForbidden {
			if isGone, gerr := g.serviceAccountGone(ctx, in.ServiceAccountEmail, ""); gerr == nil && isGone {
				gone = true
				return false, nil
			}
		}
		return changed, err
	})
	if gone {
		return StepResult{Detail: "service account " + in.ServiceAccountEmail + " no longer exists; nothing to remove"}, nil
	}
	if err != nil {
		return StepResult{}, err
	}
	return memberResult(changed, false, in.Role, in.Member, "service account "+in.ServiceAccountEmail), nil
}

func (in ServiceAccountIAMInput) validate() error {
	if in.ServiceAccountEmail == "" {
		return invalidArgument("service account email is empty")
	}
	return validateGrant(in.Role, in.Member)
}

func validateGrant(role, member string) error {
	if !strings.HasPrefix(role, "roles/") && !strings.Contains(role, "/roles/") {
		return invalidArgument("role %q is not a role name (roles/..., projects/P/roles/... or organizations/O/roles/...)", role)
	}
	if !strings.Contains(member, ":") {
		return invalidArgument("member %q has no type prefix (serviceAccount:, user:, group:, principal://...)", member)
	}
	return nil
}

func memberResult(changed, added bool, role, member, on string) StepResult {
	switch {
	case changed && added:
		return StepResult{Changed: true, Detail: fmt.Sprintf("granted %s to %s on %s", role, member, on)}
	case changed:
		return StepResult{Changed: true, Detail: fmt.Sprintf("removed %s from %s on %s", member, role, on)}
	case added:
		return StepResult{Detail: fmt.Sprintf("%s already has %s on %s", member, role, on)}
	default:
		return StepResult{Detail: fmt.Sprintf("%s did not have %s on %s", member, role, on)}
	}
}

// whilePropagating runs fn again, for up to the propagation timeout, while it
// fails the way IAM fails for a service account created moments ago, as
// isPropagating decides. The waits start short (IAM often catches up within a
// second) and double up to the poll interval. After the timeout the error is
// retryable (see stillPropagating), so the step is tried again later.
//
// The wait also ends a little before the attempt's own deadline (waitBudget),
// so an attempt whose start-to-close is no longer than the propagation timeout
// still ends with that retryable error rather than being cut off.
func (g *GCP) whilePropagating(ctx context.Context, isPropagating func(error) bool, fn func(ctx context.Context) (bool, error)) (bool, error) {
	start := time.Now()
	deadline := start.Add(g.propagationTimeout)
	budget, cancel := waitBudget(ctx)
	cancel() // only its deadline is wanted
	if d, ok := budget.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	backoff := wait.Backoff{Duration: min(propagationFirstWait, g.pollInterval), Factor: 2, Steps: math.MaxInt, Cap: g.pollInterval}
	var next time.Duration // the wait the last failure asked for
	var changed bool
	var last error
	err := wait.DelayFunc(func() time.Duration { return next }).Until(ctx, true, true, func(ctx context.Context) (bool, error) {
		changed, last = fn(ctx)
		if last == nil || !isPropagating(last) {
			return true, nil
		}
		// No wait that would end past the deadline.
		if next = backoff.Step(); !time.Now().Add(next).Before(deadline) {
			changed, last = false, stillPropagating(last, time.Since(start).Round(time.Millisecond))
			return true, nil
		}
		heartbeat(ctx)
		return false, nil
	})
	if err != nil { // ctx ended during a wait: the last answer stands
		return false, last
	}
	return changed, last
}

// propagationFirstWait is the first wait for IAM to catch up with a new account.
const propagationFirstWait = 250 * time.Millisecond

// stillPropagating is the error of a new account IAM still does not know after
// the wait: IAM can take minutes, so it is retryable. A 403 stands as
// classified: by then it is most likely a missing permission.
func stillPropagating(err error, waited time.Duration) error {
	if apiCode(err) == http.StatusForbidden {
		return err
	}
	msg := err.Error()
	var appErr *temporal.ApplicationError
	if errors.As(err, &appErr) {
		msg = appErr.Message()
	}
	return temporal.NewApplicationErrorWithCause(
		fmt.Sprintf("IAM does not know the service account everywhere yet after %s; will retry: %s", waited, msg), contract.ErrTypePropagating, err)
}

// newAccountPropagating matches what IAM answers about a service account it does
// not fully know yet: 404 or 403 on the account itself (IAM answers 403 for an
// account it cannot find), or 400 "Service account X does not exist" for it as a
// member.
func newAccountPropagating(err error) bool {
	code := apiCode(err)
	return code == 404 || code == 403 || IsMemberMissing(err)
}

func (g *GCP) serviceAccountPolicy(email string) policyAccess {
	resource := serviceAccountResource(email)
	subject := "service account " + email
	return policyAccess{
		resource: resource,
		get: func(ctx context.Context) (*Policy, error) {
			p, err := g.iam.Projects.ServiceAccounts.GetIamPolicy(resource).
				OptionsRequestedPolicyVersion(conditionalPolicyVersion).Context(ctx).Do()
			if err != nil {
				return nil, ClassifyGoogleError(err, "read IAM policy of "+subject, "iam.serviceAccounts.getIamPolicy")
			}
			return convertPolicy[Policy](p)
		},
		set: func(ctx context.Context, p *Policy) error {
			ip, err := convertPolicy[iam.Policy](p)
			if err != nil {
				return err
			}
			_, err = g.iam.Projects.ServiceAccounts.SetIamPolicy(resource, &iam.SetIamPolicyRequest{Policy: ip}).Context(ctx).Do()
			return ClassifyGoogleError(err, "write IAM policy of "+subject, "iam.serviceAccounts.setIamPolicy")
		},
	}
}

func (g *GCP) projectPolicy(project string) policyAccess {
	resource := "projects/" + project
	subject := "project " + project
	return policyAccess{
		resource: resource,
		get: func(ctx context.Context) (*Policy, error) {
			p, err := g.resourceManager.Projects.GetIamPolicy(resource, &cloudresourcemanager.GetIamPolicyRequest{
				Options: &cloudresourcemanager.GetPolicyOptions{RequestedPolicyVersion: conditionalPolicyVersion},
			}).Context(ctx).Do()
			if err != nil {
				return nil, ClassifyGoogleError(err, "read IAM policy of "+subject, "resourcemanager.projects.getIamPolicy")
			}
			return convertPolicy[Policy](p)
		},
		set: func(ctx context.Context, p *Policy) error {
			cp, err := convertPolicy[cloudresourcemanager.Policy](p)
			if err != nil {
				return err
			}
			_, err = g.resourceManager.Projects.SetIamPolicy(resource, &cloudresourcemanager.SetIamPolicyRequest{Policy: cp}).Context(ctx).Do()
			return ClassifyGoogleError(err, "write IAM policy of "+subject, "resourcemanager.projects.setIamPolicy")
		},
	}
}

var (
	// serviceAccount:P.svc.id.goog[NAMESPACE/KSA]
	workloadMemberRE = regexp.MustCompile(`^serviceAccount:([^\[\]]+)\.svc\.id\.goog\[[^\]]+\]$`)
	// principal://iam.googleapis.com/projects/N/locations/global/workloadIdentityPools/P.svc.id.goog/subject/...
	workloadPrincipalRE = regexp.MustCompile(`^principal(?:Set)?://iam\.googleapis\.com/projects/[^/]+/locations/global/workloadIdentityPools/([^/]+)\.svc\.id\.goog/`)
)

// workloadPoolProject returns the project whose workload pool member belongs to,
// or "" when member is not a Workload Identity principal.
func workloadPoolProject(member string) string {
	if m := workloadMemberRE.FindStringSubmatch(member); m != nil {
		return m[1]
	}
	if m := workloadPrincipalRE.FindStringSubmatch(member); m != nil {
		return m[1]
	}
	return ""
}

// checkWorkloadPoolOf refuses a Workload Identity member whose pool does not exist:
// a pool exists once a cluster of its project has Workload Identity enabled.
func (g *GCP) checkWorkloadPoolOf(ctx context.Context, member string) error {
	project := workloadPoolProject(member)
	if project == "" {
		return nil
	}
	pool := project + ".svc.id.goog"
	resp, err := g.container.Projects.Locations.Clusters.List("projects/" + project + "/locations/-").Context(ctx).Do()
	if err != nil {
		return ClassifyGoogleError(err, "check workload pool "+pool, "container.clusters.list")
	}
	for _, c := range resp.Clusters {
		if c.WorkloadIdentityConfig != nil && c.WorkloadIdentityConfig.WorkloadPool == pool {
			return nil
		}
	}
	return temporal.NewNonRetryableApplicationError(
		fmt.Sprintf("workload pool %s does not exist: enable Workload Identity on a cluster of project %s first", pool, project),
		contract.ErrTypeWorkloadPoolMissing, nil)
}
