package activities

import "context"

// Notifier tells the support team by email (SMTP) and webhook.
type Notifier struct{}

// NotifySupport sends the notification to every target.
func (n *Notifier) NotifySupport(ctx context.Context, in Notification) (NotifyResult, error) {
	return NotifyResult{}, errUnimplemented
}
