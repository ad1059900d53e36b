// Command gkewi starts and steers gkewi's Temporal workflows: onboard, approve,
// reject, status, revoke, extend, list, id, rbac, plan. Run gkewi --help for the
// usage, gkewi completion --help for shell completion.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/gkewi/gkewi/starter"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := starter.New().Run(ctx, os.Args[1:])
	stop()
	os.Exit(code)
}
