package workflows

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/mock"
	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/workflow"
)

func TestDecisionIsRecordedInTheMemo(t *testing.T) {
	for _, tc := range []struct {
		name     string
		decision any
		want     map[string]any
	}{
		{"approved", approve("Bob@Example.com"), map[string]any{MemoDecision: "approved", MemoApprover: "Bob@Example.com", MemoTicket: "SUP-42"}},
		{"rejected", ApprovalDecision{Approver: alice}, map[string]any{MemoDecision: "rejected", MemoApprover: alice}},
		{"timed out", nil, map[string]any{MemoDecision: "timed-out"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fake := newFakeCloud()
			req := validRequest()
			env := newOnboardEnv(t, fake, req)
			var memos []map[string]any
			env.OnUpsertMemo(mock.Anything).Return(nil).Run(func(args mock.Arguments) {
				memos = append(memos, args.Get(0).(map[string]any))
			})
			if tc.decision != nil {
				signalAt(env, time.Hour, tc.decision)
			}
			env.ExecuteWorkflow(Onboard, req)
			require.True(t, env.IsWorkflowCompleted())
			assert.Equal(t, []map[string]any{tc.want}, memos)
		})
	}
}

func TestRunsRecordedBeforeTheMemoDoNotWriteIt(t *testing.T) {
	fake := newFakeCloud()
	req := validRequest()
	env := newOnboardEnv(t, fake, req)
	env.OnGetVersion(changeApprovalMemo, workflow.DefaultVersion, 1).Return(workflow.DefaultVersion)
	upserted := false
	env.OnUpsertMemo(mock.Anything).Return(nil).Run(func(mock.Arguments) { upserted = true })
	signalAt(env, time.Hour, approve(alice))
	env.ExecuteWorkflow(Onboard, req)
	require.NoError(t, env.GetWorkflowError())
	assert.False(t, upserted)
}
