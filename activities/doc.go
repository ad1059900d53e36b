// Package activities holds gkewi's Temporal activities: the calls to Google
// Cloud, Kubernetes, Helm, Temporal schedules and mail that the workflows make,
// each idempotent and each failure typed as retryable or not.
package activities
