package activities

import "context"

// Helm installs and upgrades releases with the Helm Go SDK.
type Helm struct{}

// HelmUpgradeInstall installs or upgrades the release with the Workload Identity values.
func (h *Helm) HelmUpgradeInstall(ctx context.Context, in HelmInput) (HelmResult, error) {
	return HelmResult{}, errUnimplemented
}
