package activities

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/temporal"
	"google.golang.org/api/container/v1"
	"google.golang.org/api/serviceusage/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/gkewi/gkewi/contract"
)

const workloadMetadataGKE = "GKE_METADATA"

func (c ClusterRef) resourceName() string {
	return fmt.Sprintf("projects/%s/locations/%s/clusters/%s", c.Project, c.Location, c.Cluster)
}

func (c ClusterRef) String() string {
	return fmt.Sprintf("%s/%s/%s", c.Project, c.Location, c.Cluster)
}

func (c ClusterRef) validate() error {
	if c.Project == "" || c.Location == "" || c.Cluster == "" {
		return invalidArgument("cluster needs project, location and name (got %q)", c.String())
	}
	return nil
}

// EnableService enables a Google API in a project, waiting on its operation.
func (g *GCP) EnableService(ctx context.Context, in EnableServiceInput) (StepResult, error) {
	if in.Project == "" || in.Service == "" {
		return StepResult{}, invalidArgument("enable service needs project and service (got %q, %q)", in.Project, in.Service)
	}
	name := fmt.Sprintf("projects/%s/services/%s", in.Project, in.Service)
	action := fmt.Sprintf("enable %s in project %s", in.Service, in.Project)
	svc, err := g.serviceUsage.Services.Get(name).Context(ctx).Do()
	if err != nil {
		return StepResult{}, ClassifyGoogleError(err, "read state of "+in.Service+" in project "+in.Project, "serviceusage.services.get")
	}
	if svc.State == "ENABLED" {
		return StepResult{Detail: in.Service + " already enabled"}, nil
	}
	op, err := g.serviceUsage.Services.Enable(name, &serviceusage.EnableServiceRequest{}).Context(ctx).Do()
	if err != nil {
		return StepResult{}, ClassifyGoogleError(err, action, "serviceusage.services.enable")
	}
	if !op.Done {
		heartbeat(ctx, op.Name)
		err := pollEvery(ctx, g.pollInterval, false, action+": wait for operation "+op.Name, func(ctx context.Context) (bool, error) {
			polled, err := g.serviceUsage.Operations.Get(op.Name).Context(ctx).Do()
			if err != nil {
				return false, ClassifyGoogleError(err, action+": poll operation", "serviceusage.services.get")
			}
			if op = polled; !op.Done {
				heartbeat(ctx, op.Name)
			}
			return op.Done, nil
		})
		if err != nil {
			return StepResult{}, err
		}
	}
	if op.Error != nil && op.Error.Code != 0 {
		return StepResult{}, temporal.NewApplicationError(
			fmt.Sprintf("%s: operation %s failed: %s", action, op.Name, op.Error.Message), contract.ErrTypeOperationFailed)
	}
	return StepResult{Changed: true, Detail: in.Service + " enabled"}, nil
}

// EnsureWorkloadPool sets the cluster's workload pool to PROJECT.svc.id.goog,
// except on an Autopilot cluster, where Workload Identity is always on and the
// cluster is left alone.
func (g *GCP) EnsureWorkloadPool(ctx context.Context, in ClusterRef) (WorkloadPoolResult, error) {
	if err := in.validate(); err != nil {
		return WorkloadPoolResult{}, err
	}
	c, err := g.container.Projects.Locations.Clusters.Get(in.resourceName()).Context(ctx).Do()
	if err != nil {
		return WorkloadPoolResult{}, ClassifyGoogleError(err, "read cluster "+in.String(), "container.clusters.get")
	}
	if c.Autopilot != nil && c.Autopilot.Enabled {
		pool := ""
		if c.WorkloadIdentityConfig != nil {
			pool = c.WorkloadIdentityConfig.WorkloadPool
		}
		if pool != in.WorkloadPool() {
			// Autopilot sets the pool itself; any other pool is not one gkewi can fix.
			return WorkloadPoolResult{}, temporal.NewNonRetryableApplicationError(fmt.Sprintf(
				"Autopilot cluster %s has workload pool %q, not %s; GKE manages it on Autopilot clusters", in, pool, in.WorkloadPool()),
				contract.ErrTypeFailedPrecondition, nil)
		}
		return WorkloadPoolResult{Autopilot: true, StepResult: StepResult{
			Detail: "Autopilot cluster: Workload Identity is always on (workload pool " + pool + "); GKE manages the node pools, all on the GKE metadata server",
		}}, nil
	}
	res, err := g.SetWorkloadPool(ctx, in)
	return WorkloadPoolResult{StepResult: res}, err
}

// SetWorkloadPool sets the cluster's workload pool to PROJECT.svc.id.goog.
func (g *GCP) SetWorkloadPool(ctx context.Context, in ClusterRef) (StepResult, error) {
	if err := in.validate(); err != nil {
		return StepResult{}, err
	}
	pool := in.WorkloadPool()
	return g.changeCluster(ctx, clusterChange{
		cluster: in,
		action:  fmt.Sprintf("set workload pool of cluster %s to %s", in, pool),
		applied: func(ctx context.Context) (bool, error) {
			c, err := g.container.Projects.Locations.Clusters.Get(in.resourceName()).Context(ctx).Do()
			if err != nil {
				return false, ClassifyGoogleError(err, "read cluster "+in.String(), "container.clusters.get")
			}
			return c.WorkloadIdentityConfig != nil && c.WorkloadIdentityConfig.WorkloadPool == pool, nil
		},
		start: func(ctx context.Context) (*container.Operation, error) {
			return g.container.Projects.Locations.Clusters.Update(in.resourceName(), &container.UpdateClusterRequest{
				Update: &container.ClusterUpdate{
					DesiredWorkloadIdentityConfig: &container.WorkloadIdentityConfig{WorkloadPool: pool},
				},
			}).Context(ctx).Do()
		},
		doneDetail:    "workload pool set to " + pool,
		alreadyDetail: "workload pool already " + pool,
	})
}

// ListNodePools returns the names of the cluster's node pools.
func (g *GCP) ListNodePools(ctx context.Context, in ClusterRef) ([]string, error) {
	if err := in.validate(); err != nil {
		return nil, err
	}
	resp, err := g.container.Projects.Locations.Clusters.NodePools.List(in.resourceName()).Context(ctx).Do()
	if err != nil {
		return nil, ClassifyGoogleError(err, "list node pools of cluster "+in.String(), "container.clusters.get")
	}
	names := make([]string, 0, len(resp.NodePools))
	for _, np := range resp.NodePools {
		names = append(names, np.Name)
	}
	return names, nil
}

// SetNodePoolMetadata sets one node pool's workload metadata mode to GKE_METADATA.
func (g *GCP) SetNodePoolMetadata(ctx context.Context, in NodePoolInput) (StepResult, error) {
	if err := in.Cluster.validate(); err != nil {
		return StepResult{}, err
	}
	if in.NodePool == "" {
		return StepResult{}, invalidArgument("node pool name is empty")
	}
	name := in.Cluster.resourceName() + "/nodePools/" + in.NodePool
	return g.changeCluster(ctx, clusterChange{
		cluster: in.Cluster,
		action:  fmt.Sprintf("set workload metadata of node pool %s of cluster %s to %s", in.NodePool, in.Cluster, workloadMetadataGKE),
		applied: func(ctx context.Context) (bool, error) {
			np, err := g.container.Projects.Locations.Clusters.NodePools.Get(name).Context(ctx).Do()
			if err != nil {
				return false, ClassifyGoogleError(err, "read node pool "+in.NodePool+" of cluster "+in.Cluster.String(), "container.clusters.get")
			}
			return np.Config != nil && np.Config.WorkloadMetadataConfig != nil &&
				np.Config.WorkloadMetadataConfig.Mode == workloadMetadataGKE, nil
		},
		start: func(ctx context.Context) (*container.Operation, error) {
			// gcloud and Terraform send only the field being changed; nodeVersion
			// and imageType, documented as required, are only for upgrades.
			return g.container.Projects.Locations.Clusters.NodePools.Update(name, &container.UpdateNodePoolRequest{
				Name:                   name,
				WorkloadMetadataConfig: &container.WorkloadMetadataConfig{Mode: workloadMetadataGKE},
			}).Context(ctx).Do()
		},
		doneDetail:    "node pool " + in.NodePool + " set to " + workloadMetadataGKE,
		alreadyDetail: "node pool " + in.NodePool + " already " + workloadMetadataGKE,
	})
}

// CheckIdentitySameness warns about other Workload Identity clusters of the
// project, where the same namespace/KSA gets the same identity.
func (g *GCP) CheckIdentitySameness(ctx context.Context, in PreflightInput) (StepResult, error) {
	if err := in.Cluster.validate(); err != nil {
		return StepResult{}, err
	}
	resp, err := g.container.Projects.Locations.Clusters.List("projects/" + in.Cluster.Project + "/locations/-").Context(ctx).Do()
	if err != nil {
		return StepResult{}, ClassifyGoogleError(err, "list clusters of project "+in.Cluster.Project, "container.clusters.list")
	}
	pool := in.Cluster.WorkloadPool()
	var res StepResult
	others := 0
	for _, c := range resp.Clusters {
		if c.Location == in.Cluster.Location && c.Name == in.Cluster.Cluster {
			continue
		}
		if c.WorkloadIdentityConfig == nil || c.WorkloadIdentityConfig.WorkloadPool == "" {
			continue
		}
		others++
		res.Warnings = append(res.Warnings, fmt.Sprintf(
			"cluster %s/%s also uses workload pool %s: a Kubernetes service account %s/%s there gets the same Google identity and the same access",
			c.Location, c.Name, c.WorkloadIdentityConfig.WorkloadPool, in.Namespace, in.KSA))
	}
	res.Detail = fmt.Sprintf("%d other cluster(s) share workload pool %s", others, pool)
	if len(resp.MissingZones) > 0 {
		res.Warnings = append(res.Warnings, fmt.Sprintf(
			"clusters in zones %s could not be listed; they may share workload pool %s too",
			strings.Join(resp.MissingZones, ", "), pool))
		res.Detail += " (listing incomplete)"
	}
	return res, nil
}

// clusterChange is one idempotent change to a cluster or node pool made by a GKE
// long-running operation.
type clusterChange struct {
	cluster ClusterRef
	action  string
	// applied reads whether the change is already in place.
	applied func(ctx context.Context) (bool, error)
	// start begins the change, returning its operation.
	start func(ctx context.Context) (*container.Operation, error)

	doneDetail, alreadyDetail string
}

// operationProgress is the heartbeat of a cluster change: the operation being
// waited on, so a retried attempt waits on it instead of starting another.
type operationProgress struct {
	// Operation is the full name, projects/P/locations/L/operations/NAME.
	Operation string `json:"operation"`
	// Ours is true when this activity started the operation (not another writer's
	// operation it waits out).
	Ours bool `json:"ours"`
}

// changeCluster applies ch: it skips what is already in place, resumes the
// operation of a previous attempt, and waits out other operations that keep the
// cluster busy instead of failing. Waiting stops shortly before the attempt's
// deadline with a retryable error; the heartbeat lets the next attempt resume.
func (g *GCP) changeCluster(ctx context.Context, ch clusterChange) (StepResult, error) {
	wctx, cancel := waitBudget(ctx)
	defer cancel()
	res, err := g.changeClusterWithin(wctx, ch)
	if err != nil && wctx.Err() != nil && ctx.Err() == nil {
		return StepResult{}, temporal.NewApplicationErrorWithCause(
			ch.action+": still waiting for an operation when this attempt ran out of time; the next attempt resumes the wait",
			contract.ErrTypeOperationPending, err)
	}
	return res, err
}

// waitBudget ends a little before ctx's deadline, leaving time to report.
func waitBudget(ctx context.Context) (context.Context, context.CancelFunc) {
	deadline, ok := ctx.Deadline()
	if !ok {
		return context.WithCancel(ctx)
	}
	margin := min(10*time.Second, time.Until(deadline)/10)
	return context.WithDeadline(ctx, deadline.Add(-margin))
}

// pollEvery runs poll, at once when immediate, then interval after each run
// ends, until poll reports done or fails, and returns poll's error. When ctx
// ends first the error is ctx's, wrapped with waitingFor.
func pollEvery(ctx context.Context, interval time.Duration, immediate bool, waitingFor string, poll wait.ConditionWithContextFunc) error {
	var pollErr error
	err := wait.Backoff{Duration: interval}.DelayFunc().Until(ctx, immediate, true, func(ctx context.Context) (bool, error) {
		done, err := poll(ctx)
		pollErr = err
		return done, err
	})
	if err != nil && pollErr == nil {
		return fmt.Errorf("%s: %w", waitingFor, err)
	}
	return err
}

// sleepCtx waits for d or for ctx to end.
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func logInfo(ctx context.Context, msg string, keyvals ...any) {
	if activity.IsActivity(ctx) {
		activity.GetLogger(ctx).Info(msg, keyvals...)
	}
}

func (g *GCP) changeClusterWithin(ctx context.Context, ch clusterChange) (StepResult, error) {
	changed, startedHere := false, false
	var prev operationProgress
	if activity.IsActivity(ctx) && activity.HasHeartbeatDetails(ctx) &&
		activity.GetHeartbeatDetails(ctx, &prev) == nil && prev.Operation != "" {
		logInfo(ctx, "resuming wait on operation of previous attempt", "operation", prev.Operation, "ours", prev.Ours)
		_, err := g.waitOperation(ctx, prev, ch.action)
		switch {
		case err == nil:
			changed = prev.Ours
		case IsNotFound(err) || isOperationFailure(err):
			// Forgotten or failed: the cluster state decides what is left to do.
		default:
			return StepResult{}, err
		}
	}

	for {
		done, err := ch.applied(ctx)
		if err != nil {
			return StepResult{}, err
		}
		if !done && startedHere {
			return StepResult{}, temporal.NewApplicationError(
				ch.action+": the operation finished but the change is not visible yet; will retry", contract.ErrTypeOperationFailed)
		}
		if done {
			if changed {
				return StepResult{Changed: true, Detail: ch.doneDetail}, nil
			}
			return StepResult{Detail: ch.alreadyDetail}, nil
		}

		op, err := ch.start(ctx)
		if err == nil {
			name := containerOperationName(ch.cluster, op)
			if done, err := g.waitOperation(ctx, operationProgress{Operation: name, Ours: true}, ch.action); err != nil {
				if isOperationFailure(err) {
					return StepResult{}, g.repeatedFailure(ctx, ch, done, err)
				}
				return StepResult{}, err
			}
			changed, startedHere = true, true
			continue // re-read: the operation's result is what counts
		}
		if !IsClusterBusy(err) {
			return StepResult{}, ClassifyGoogleError(err, ch.action, "container.clusters.update")
		}
		running, lerr := g.findRunningOperation(ctx, ch.cluster, busyOperationName(err))
		if lerr != nil {
			return StepResult{}, lerr
		}
		if running == "" {
			// The blocking operation ended between our call and the listing.
			if err := sleepCtx(ctx, g.pollInterval); err != nil {
				return StepResult{}, busyError(ch.action, err)
			}
			continue
		}
		logInfo(ctx, "cluster busy; waiting for its operation", "operation", running)
		if _, err := g.waitOperation(ctx, operationProgress{Operation: running}, ch.action); err != nil &&
			!isOperationFailure(err) && !IsNotFound(err) {
			return StepResult{}, err
		}
	}
}

// maxIdenticalOperationFailures is how many operations of one change may fail
// the same way in a row before gkewi stops issuing it again: a quota or a
// capacity shortage in the zone is not cleared by retrying.
const maxIdenticalOperationFailures = 3

// repeatedFailure turns the failure of our operation failed into a final error
// when the same change has failed the same way maxIdenticalOperationFailures
// times in a row, as the cluster's operations show; otherwise err stands
// (retryable). The count is read from GKE, so it holds across attempts and
// worker restarts.
func (g *GCP) repeatedFailure(ctx context.Context, ch clusterChange, failed *container.Operation, err error) error {
	if failed == nil || failed.Error == nil {
		return err
	}
	parent := fmt.Sprintf("projects/%s/locations/%s", ch.cluster.Project, ch.cluster.Location)
	resp, lerr := g.container.Projects.Locations.Operations.List(parent).Context(ctx).Do()
	if lerr != nil {
		return err
	}
	var same []*container.Operation
	for _, op := range resp.Operations {
		if op.Status == "DONE" && op.TargetLink == failed.TargetLink && op.OperationType == failed.OperationType {
			same = append(same, op)
		}
	}
	// Newest first; RFC 3339 times in UTC sort as strings.
	slices.SortFunc(same, func(a, b *container.Operation) int { return strings.Compare(b.StartTime, a.StartTime) })
	n := 0
	for _, op := range same {
		if op.Error == nil || op.Error.Message != failed.Error.Message {
			break
		}
		n++
	}
	if n < maxIdenticalOperationFailures {
		return err
	}
	return temporal.NewNonRetryableApplicationError(fmt.Sprintf(
		"%s: the last %d operations failed the same way (latest %s): %s; gkewi does not issue it again: fix the cause (quota, capacity in the location) and run the onboarding again",
		ch.action, n, failed.Name, failed.Error.Message), contract.ErrTypeOperationFailed, err)
}

func busyError(action string, cause error) error {
	return temporal.NewApplicationErrorWithCause(action+": the cluster stayed busy; will retry", contract.ErrTypeClusterBusy, cause)
}

// containerOperationName is the full name of a GKE operation, which the API
// returns as a bare "operation-..." id.
func containerOperationName(c ClusterRef, op *container.Operation) string {
	if strings.HasPrefix(op.Name, "projects/") {
		return op.Name
	}
	loc := c.Location
	if op.Location != "" {
		loc = op.Location
	} else if op.Zone != "" {
		loc = op.Zone
	}
	return fmt.Sprintf("projects/%s/locations/%s/operations/%s", c.Project, loc, op.Name)
}

type operationFailedError struct {
	name, message string
}

func (e *operationFailedError) Error() string {
	return fmt.Sprintf("operation %s failed: %s", e.name, e.message)
}

func isOperationFailure(err error) bool {
	var of *operationFailedError
	return errors.As(err, &of)
}

// waitOperation polls a GKE operation until it is done, heartbeating its name.
// A failed operation of ours is a retryable error (the next attempt starts over
// from the cluster state); a failed foreign one is reported so callers can ignore it.
func (g *GCP) waitOperation(ctx context.Context, p operationProgress, action string) (*container.Operation, error) {
	var op *container.Operation
	err := pollEvery(ctx, g.pollInterval, true, action+": wait for operation "+p.Operation, func(ctx context.Context) (bool, error) {
		heartbeat(ctx, p)
		var err error
		if op, err = g.container.Projects.Locations.Operations.Get(p.Operation).Context(ctx).Do(); err != nil {
			if IsNotFound(err) {
				return false, err
			}
			return false, ClassifyGoogleError(err, action+": poll operation "+p.Operation, "container.operations.get")
		}
		if op.Status != "DONE" {
			return false, nil
		}
		if op.Error != nil && (op.Error.Code != 0 || op.Error.Message != "") {
			failed := &operationFailedError{name: p.Operation, message: op.Error.Message}
			if p.Ours {
				return false, temporal.NewApplicationErrorWithCause(action+": "+failed.Error(), contract.ErrTypeOperationFailed, failed)
			}
			return false, failed
		}
		return true, nil
	})
	if err != nil && !isOperationFailure(err) {
		return nil, err
	}
	return op, err
}

// findRunningOperation returns the full name of an unfinished operation on the
// cluster (or one of its node pools), preferring the one a busy error named.
func (g *GCP) findRunningOperation(ctx context.Context, c ClusterRef, named string) (string, error) {
	parent := fmt.Sprintf("projects/%s/locations/%s", c.Project, c.Location)
	resp, err := g.container.Projects.Locations.Operations.List(parent).Context(ctx).Do()
	if err != nil {
		return "", ClassifyGoogleError(err, "list operations of cluster "+c.String(), "container.operations.list")
	}
	onCluster := regexp.MustCompile(`/clusters/` + regexp.QuoteMeta(c.Cluster) + `(/|$)`)
	var found string
	for _, op := range resp.Operations {
		if op.Status == "DONE" || !onCluster.MatchString(op.TargetLink) {
			continue
		}
		name := containerOperationName(c, op)
		if named != "" && (op.Name == named || strings.HasSuffix(op.Name, "/"+named)) {
			return name, nil
		}
		if found == "" {
			found = name
		}
	}
	return found, nil
}
