package activities

import (
	"context"
	"fmt"
	"os"
	"time"

	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/temporal"
	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/gkewi/gkewi/contract"
)

// releaseLeaseDuration is how long a Helm operation's lease lasts unrenewed. The
// running operation renews it at every heartbeat tick (5s); a lease older than
// this belongs to an operation whose worker is gone. It matches the steps'
// heartbeat timeout: by the time Temporal gives up on a lost worker, its lease
// has run out or is about to.
const releaseLeaseDuration = 20 * time.Second

// releaseLease is a coordination.k8s.io Lease, gkewi-helm-<release> in the
// release's namespace, held while gkewi installs or upgrades the release. A
// worker killed mid-install leaves the release pending-install and Helm refuses
// every later operation on it; the expired lease tells the next attempt that
// the operation is dead, so it takes the release over at once instead of waiting
// out Helm's timeout. Operations by others (a person running helm) hold no lease.
type releaseLease struct {
	client    kubernetes.Interface
	namespace string
	name      string
	holder    string
	// held is the lease as last written by this execution; renewals and the
	// release go from it, and fail on its resourceVersion if anyone else wrote.
	held *coordinationv1.Lease
}

// leaseState is what acquiring found.
type leaseState struct {
	// previousExpired: an earlier gkewi operation held the lease and stopped
	// renewing it, so anything it left pending is abandoned.
	previousExpired bool
}

func newReleaseLease(ctx context.Context, client kubernetes.Interface, namespace, release string) *releaseLease {
	return &releaseLease{client: client, namespace: namespace, name: "gkewi-helm-" + release, holder: leaseHolder(ctx)}
}

// leaseHolder names this execution: the workflow, activity and attempt when run
// as an activity.
func leaseHolder(ctx context.Context) string {
	host, _ := os.Hostname()
	if activity.IsActivity(ctx) {
		info := activity.GetInfo(ctx)
		return fmt.Sprintf("%s/%s#%d@%s/%d", info.WorkflowExecution.ID, info.ActivityID, info.Attempt, host, os.Getpid())
	}
	return fmt.Sprintf("%s/%d/%d", host, os.Getpid(), time.Now().UnixNano())
}

// acquire takes the lease, or fails with HelmBusy while another live gkewi
// operation holds it.
func (l *releaseLease) acquire(ctx context.Context) (leaseState, error) {
	leases := l.client.CoordinationV1().Leases(l.namespace)
	now := metav1.NewMicroTime(time.Now())
	spec := coordinationv1.LeaseSpec{
		HolderIdentity:       ptr.To(l.holder),
		LeaseDurationSeconds: ptr.To(int32(releaseLeaseDuration / time.Second)),
		AcquireTime:          &now,
		RenewTime:            &now,
	}
	cur, err := leases.Get(ctx, l.name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		created, err := leases.Create(ctx, &coordinationv1.Lease{
			ObjectMeta: metav1.ObjectMeta{Name: l.name, Namespace: l.namespace,
				Labels: map[string]string{"app.kubernetes.io/managed-by": "gkewi"}},
			Spec: spec,
		}, metav1.CreateOptions{})
		if apierrors.IsAlreadyExists(err) {
			return leaseState{}, l.busy("another gkewi operation took it just now")
		}
		if err != nil {
			return leaseState{}, classifyKubeError("helm: creating lease "+l.namespace+"/"+l.name, err)
		}
		l.held = created
		return leaseState{}, nil
	}
	if err != nil {
		return leaseState{}, classifyKubeError("helm: reading lease "+l.namespace+"/"+l.name, err)
	}
	var st leaseState
	if holder := ptr.Deref(cur.Spec.HolderIdentity, ""); holder != "" && holder != l.holder {
		if left := leaseLeft(cur, now.Time); left > 0 {
			// Retried once it runs out, when nobody renewed it by then.
			return leaseState{}, temporal.NewApplicationErrorWithOptions(l.busyMessage("held by "+holder+" for "+left.Round(time.Second).String()+" more"),
				contract.ErrTypeHelmBusy, temporal.ApplicationErrorOptions{NextRetryDelay: left + time.Second})
		}
		st.previousExpired = true
	}
	cur.Spec = spec
	// The update carries the resourceVersion read: two takers cannot both win.
	updated, err := leases.Update(ctx, cur, metav1.UpdateOptions{})
	if err != nil {
		if apierrors.IsConflict(err) {
			return leaseState{}, l.busy("another gkewi operation took it just now")
		}
		return leaseState{}, classifyKubeError("helm: taking lease "+l.namespace+"/"+l.name, err)
	}
	l.held = updated
	return st, nil
}

// leaseLeft is the time until the lease runs out unrenewed; 0 when it has.
func leaseLeft(l *coordinationv1.Lease, now time.Time) time.Duration {
	if l.Spec.RenewTime == nil || l.Spec.LeaseDurationSeconds == nil {
		return 0
	}
	return max(0, l.Spec.RenewTime.Add(time.Duration(*l.Spec.LeaseDurationSeconds)*time.Second).Sub(now))
}

func (l *releaseLease) busyMessage(why string) string {
	return fmt.Sprintf("helm: release %s/%s is being changed by another operation (lease %s %s)", l.namespace, l.name[len("gkewi-helm-"):], l.name, why)
}

func (l *releaseLease) busy(why string) error {
	return temporal.NewApplicationError(l.busyMessage(why), contract.ErrTypeHelmBusy)
}

// renew extends the lease; a failed renewal is left to the next tick.
func (l *releaseLease) renew(ctx context.Context) {
	if l.held == nil {
		return
	}
	next := l.held.DeepCopy()
	now := metav1.NewMicroTime(time.Now())
	next.Spec.RenewTime = &now
	if updated, err := l.client.CoordinationV1().Leases(l.namespace).Update(ctx, next, metav1.UpdateOptions{}); err == nil {
		l.held = updated
	}
}

// release ends the lease unless someone else has written it since.
func (l *releaseLease) release(ctx context.Context) {
	if l.held == nil {
		return
	}
	_ = l.client.CoordinationV1().Leases(l.namespace).Delete(ctx, l.name,
		metav1.DeleteOptions{Preconditions: &metav1.Preconditions{ResourceVersion: &l.held.ResourceVersion}})
}
