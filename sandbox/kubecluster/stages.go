package kubecluster

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"regexp"

	"sigs.k8s.io/yaml"
)

// PodReadyDelayAnnotation delays a pod's readiness on kwok nodes by its value
// (a Go duration): a rollout that takes time, as containers starting do. It is
// the annotation kwok's own "general" pod stages read.
const PodReadyDelayAnnotation = "pod-ready.stage.kwok.x-k8s.io/delay"

var yamlDocSeparator = regexp.MustCompile(`(?m)^---\s*$`)

// writeStages writes kwok's stages from src to dir, with the pod-ready stage
// waiting PodReadyDelayAnnotation when a pod has it (pods without it are
// ready at once, as with the "fast" stages), and returns the file written.
func writeStages(src, dir string) (string, error) {
	raw, err := os.ReadFile(src)
	if err != nil {
		return "", fmt.Errorf("kwok stages: %w", err)
	}
	var out bytes.Buffer
	found := false
	for _, doc := range yamlDocSeparator.Split(string(raw), -1) {
		if len(bytes.TrimSpace([]byte(doc))) == 0 {
			continue
		}
		var stage map[string]any
		if err := yaml.Unmarshal([]byte(doc), &stage); err != nil {
			return "", fmt.Errorf("kwok stages %s: %w", src, err)
		}
		meta, _ := stage["metadata"].(map[string]any)
		spec, _ := stage["spec"].(map[string]any)
		if stage["kind"] == "Stage" && meta["name"] == "pod-ready" && spec != nil {
			spec["delay"] = map[string]any{
				"durationMilliseconds": 0,
				"durationFrom":         map[string]any{"expressionFrom": `.metadata.annotations["` + PodReadyDelayAnnotation + `"]`},
			}
			b, err := yaml.Marshal(stage)
			if err != nil {
				return "", fmt.Errorf("kwok stages: %w", err)
			}
			doc, found = string(b), true
		}
		out.WriteString("---\n")
		out.WriteString(doc)
		if doc[len(doc)-1] != '\n' {
			out.WriteByte('\n')
		}
	}
	if !found {
		return "", fmt.Errorf("kwok stages %s: no pod-ready Stage", src)
	}
	path := filepath.Join(dir, "kwok-stages.yaml")
	if err := os.WriteFile(path, out.Bytes(), 0o644); err != nil {
		return "", fmt.Errorf("kwok stages: %w", err)
	}
	return path, nil
}
