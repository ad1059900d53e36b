// Package toolpath says where `make tools` puts the sandbox's pinned tools, so the
// sandbox, its tests and the workflow tests find the same binaries.
package toolpath

import (
	"os"
	"path/filepath"
)

// TemporalCLIVersion is the Temporal CLI the Makefile pins.
const TemporalCLIVersion = "v1.5.1"

// Dir is $GKEWI_TOOLS_DIR, or the per-user cache directory `make tools` uses:
// ($XDG_CACHE_HOME or ~/.cache)/gkewi/tools.
func Dir() string {
	if d := os.Getenv("GKEWI_TOOLS_DIR"); d != "" {
		return d
	}
	cache := os.Getenv("XDG_CACHE_HOME")
	if cache == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			home = os.TempDir()
		}
		cache = filepath.Join(home, ".cache")
	}
	return filepath.Join(cache, "gkewi", "tools")
}

// TemporalCLI is $GKEWI_TEMPORAL, or the pinned Temporal CLI under Dir.
func TemporalCLI() string {
	if p := os.Getenv("GKEWI_TEMPORAL"); p != "" {
		return p
	}
	return filepath.Join(Dir(), "temporal-"+TemporalCLIVersion, "temporal")
}
