package workflows

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/temporal"

	"github.com/gkewi/gkewi/activities"
)

const (
	slackHook = "https://hooks.slack.com/services/T0001/B0002/s3cr3tT0k3n"
	relayHook = "https://relay.example.com/hook?token=abc123"
)

func TestStatusShowsWebhooksAsSchemeAndHostOnly(t *testing.T) {
	fake := newFakeCloud()
	// The activity redacts its own messages; these pretend it did not.
	fake.failNext("NotifySupport", temporal.NewNonRetryableApplicationError(
		"no notification target was reached: "+slackHook+": HTTP 404 (see "+slackHook+".)", "NotifyRejected", nil))
	fake.undelivered = map[string]string{relayHook: relayHook + ": HTTP 500"}
	req := validRequest()
	req.Support.Notify = []string{"support@example.com", slackHook, relayHook}
	env := newOnboardEnv(t, fake, req)
	signalAt(env, time.Hour, approve(alice))

	env.ExecuteWorkflow(Onboard, req)

	require.True(t, env.IsWorkflowCompleted())
	require.NoError(t, env.GetWorkflowError())
	var res OnboardResult
	require.NoError(t, env.GetWorkflowResult(&res))
	s := queryStatus(t, env)

	// The targets still reach the activity whole: it needs them to deliver.
	notes := fake.inputs("NotifySupport")
	require.Len(t, notes, 2)
	assert.Equal(t, append([]string{alice, "Bob@Example.com"}, req.Support.Notify...), notes[1].(activities.Notification).Targets)

	request := mustStep(t, s, stepApprovalRequest)
	assert.Equal(t, StepFailed, request.State)
	assert.Equal(t, "no notification target was reached: https://hooks.slack.com: HTTP 404 (see https://hooks.slack.com.)", request.LastError)
	outcome := mustStep(t, s, stepOutcome)
	assert.Equal(t, "sent to alice@example.com, Bob@Example.com, support@example.com, https://hooks.slack.com", outcome.Detail)
	assert.Equal(t, []string{
		"approval-request: not sent: step approval-request failed after 1 attempt(s): no notification target was reached: https://hooks.slack.com: HTTP 404 (see https://hooks.slack.com.)",
		"outcome-notification: outcome not delivered to https://relay.example.com: HTTP 500",
	}, s.Warnings)
	assert.Equal(t, s.Warnings, res.Warnings)

	for name, v := range map[string]any{"status": s, "result": res} {
		b, err := json.Marshal(v)
		require.NoError(t, err)
		for _, secret := range []string{"/services/", "s3cr3tT0k3n", "/hook?", "token=abc123"} {
			assert.NotContainsf(t, string(b), secret, "the %s shows a webhook's path or query", name)
		}
	}
}
