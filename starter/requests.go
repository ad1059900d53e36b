package starter

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"sigs.k8s.io/yaml"

	"github.com/gkewi/gkewi/workflows"
)

// readFile reads path, or the App's stdin for "-".
func (a *App) readFile(path string) ([]byte, error) {
	if path == "-" {
		b, err := io.ReadAll(a.Stdin)
		if err != nil {
			return nil, fmt.Errorf("read standard input: %w", err)
		}
		return b, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, usagef("%v", err)
	}
	return b, nil
}

// decodeStrict decodes YAML or JSON and refuses unknown fields, so a misspelt key
// is reported instead of silently dropped.
func decodeStrict(name string, b []byte, v any) error {
	if len(strings.TrimSpace(string(b))) == 0 {
		return usagef("%s is empty", name)
	}
	if err := yaml.UnmarshalStrict(b, v); err != nil {
		return usagef("%s: %v", name, err)
	}
	return nil
}

// loadOnboardRequest reads, defaults and validates an onboarding request.
func (a *App) loadOnboardRequest(path string) (workflows.OnboardRequest, error) {
	if path == "" {
		return workflows.OnboardRequest{}, usagef("-f request.yaml is required")
	}
	b, err := a.readFile(path)
	if err != nil {
		return workflows.OnboardRequest{}, err
	}
	var req workflows.OnboardRequest
	if err := decodeStrict(path, b, &req); err != nil {
		return workflows.OnboardRequest{}, err
	}
	req = req.WithDefaults()
	if err := req.ValidateAt(a.Now()); err != nil {
		return workflows.OnboardRequest{}, invalidRequest(path, "onboarding", err)
	}
	return req, nil
}

// loadRevokeRequest reads a revoke request file.
func (a *App) loadRevokeRequest(path string) (workflows.RevokeRequest, error) {
	b, err := a.readFile(path)
	if err != nil {
		return workflows.RevokeRequest{}, err
	}
	var req workflows.RevokeRequest
	if err := decodeStrict(path, b, &req); err != nil {
		return workflows.RevokeRequest{}, err
	}
	return req, nil
}

// invalidRequest lists every problem on its own line, field first.
func invalidRequest(path, kind string, err error) error {
	var verr *workflows.ValidationError
	if !errors.As(err, &verr) {
		return usagef("%s is not a valid %s request: %v", path, kind, err)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s is not a valid %s request:", path, kind)
	for _, p := range verr.Problems {
		b.WriteString("\n  - " + p.String())
	}
	return &usageError{msg: b.String()}
}
