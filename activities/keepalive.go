package activities

import (
	"context"
	"sync"
	"time"

	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/interceptor"
)

// NewKeepAliveInterceptor heartbeats every activity that has a heartbeat timeout,
// on a ticker, for as long as it runs. The workflows give every step a short
// heartbeat timeout, so a worker killed in the middle of a step is noticed in
// seconds rather than at the step's start-to-close timeout (minutes, hours for
// cluster operations), without each activity having to heartbeat itself.
//
// Activities that record progress (an operation's name to resume from) do so
// with heartbeat(); the ticker repeats the latest details, so they are never
// overwritten with empty ones.
func NewKeepAliveInterceptor() interceptor.WorkerInterceptor {
	return &keepAlive{}
}

type keepAlive struct {
	interceptor.WorkerInterceptorBase
}

func (k *keepAlive) InterceptActivity(ctx context.Context, next interceptor.ActivityInboundInterceptor) interceptor.ActivityInboundInterceptor {
	i := &keepAliveActivity{}
	i.Next = next
	return i
}

type keepAliveActivity struct {
	interceptor.ActivityInboundInterceptorBase
}

// keepAliveKey finds the running activity's keepAliveState in its context.
type keepAliveKey struct{}

// keepAliveState holds the details most recently recorded by the activity.
type keepAliveState struct {
	mu      sync.Mutex
	details []any
}

func (s *keepAliveState) set(details []any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.details = details
}

func (s *keepAliveState) latest() []any {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.details
}

func (k *keepAliveActivity) ExecuteActivity(ctx context.Context, in *interceptor.ExecuteActivityInput) (any, error) {
	timeout := activity.GetInfo(ctx).HeartbeatTimeout
	if timeout <= 0 {
		return k.Next.ExecuteActivity(ctx, in)
	}
	state := &keepAliveState{}
	ctx = context.WithValue(ctx, keepAliveKey{}, state)
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		// The SDK sends at most one heartbeat per 0.8 × timeout and holds the
		// latest details until then; ticking faster keeps one always pending.
		tick := time.NewTicker(max(timeout/4, 100*time.Millisecond))
		defer tick.Stop()
		for {
			select {
			case <-tick.C:
				activity.RecordHeartbeat(ctx, state.latest()...)
			case <-stop:
				return
			case <-ctx.Done():
				return
			}
		}
	}()
	return k.Next.ExecuteActivity(ctx, in)
}

// heartbeat records progress when running as an activity (helpers are also unit
// tested outside one); the keep-alive ticker repeats these details.
func heartbeat(ctx context.Context, details ...any) {
	if !activity.IsActivity(ctx) {
		return
	}
	if s, ok := ctx.Value(keepAliveKey{}).(*keepAliveState); ok {
		s.set(details)
	}
	activity.RecordHeartbeat(ctx, details...)
}
