package workflows

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/workflow"
)

// patchedJSON is validRequest as JSON with patch applied to its decoded form.
func patchedJSON(t *testing.T, patch func(m map[string]any)) []byte {
	t.Helper()
	return patchedJSONOf(t, validRequest(), patch)
}

// patchedJSONOf is req as JSON with patch applied to its decoded form.
func patchedJSONOf(t *testing.T, req OnboardRequest, patch func(m map[string]any)) []byte {
	t.Helper()
	b, err := json.Marshal(req)
	require.NoError(t, err)
	var m map[string]any
	require.NoError(t, json.Unmarshal(b, &m))
	patch(m)
	b, err = json.Marshal(m)
	require.NoError(t, err)
	return b
}

func object(m map[string]any, key string) map[string]any { return m[key].(map[string]any) }

func TestUnknownFieldsAreRefused(t *testing.T) {
	for _, tc := range []struct {
		name  string
		patch func(m map[string]any)
		raw   string // used instead of patch when set
		want  string // "" means valid
	}{
		{name: "known fields only", patch: func(map[string]any) {}},
		{name: "misspelt ttl would make a grant that never expires",
			patch: func(m map[string]any) { m["expiry"] = map[string]any{"tll": "1h"} },
			want:  `expiry.tll: unknown field (did you mean expiry.ttl?)`},
		{name: "misspelt list is named",
			patch: func(m map[string]any) {
				s := object(m, "support")
				s["approver"] = s["approvers"]
				delete(s, "approvers")
			},
			want: `support.approver: unknown field (did you mean support.approvers?)`},
		{name: "top level, with and without a suggestion",
			patch: func(m map[string]any) {
				m["projct"] = m["project"]
				delete(m, "project")
				m["colour"] = "blue"
			},
			want: `colour: unknown field; projct: unknown field (did you mean project?); project: required`},
		{name: "nested spec",
			patch: func(m map[string]any) { object(m, "bigquery")["dataset"] = []string{"a"} },
			want:  `bigquery.dataset: unknown field (did you mean bigquery.datasets?)`},
		{name: "gsa key in another case is accepted, like encoding/json does",
			patch: func(m map[string]any) {
				g := object(m, "gsa")
				g["AccountID"] = g["accountId"]
				delete(g, "accountId")
			}},
		{name: "helm.values is free-form",
			patch: func(m map[string]any) { object(object(m, "helm"), "values")["anyKey"] = map[string]any{"deeper": 1} }},
		{name: "a key that is not a plain name is quoted",
			patch: func(m map[string]any) { object(m, "helm")["repo url"] = "x"; object(m, "helm")["a.b"] = "y" },
			want:  `helm["a.b"]: unknown field; helm["repo url"]: unknown field (did you mean helm.repoURL?)`},
		{name: "a two-letter key one edit away gets a suggestion",
			patch: func(m map[string]any) { m["ks"] = "x" },
			want:  `ks: unknown field (did you mean ksa?)`},
		{name: "one edit is not a suggestion for a one-letter key",
			patch: func(m map[string]any) { m["k"] = "x" },
			want:  `k: unknown field`},
		{name: "each duplicate member is checked, as encoding/json decodes each",
			raw:  `{"expiry":{"tll":"1h"},"expiry":{"ttl":"1h"}}`,
			want: `expiry.tll: unknown field (did you mean expiry.ttl?)`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var r OnboardRequest
			if tc.raw != "" {
				require.NoError(t, json.Unmarshal([]byte(tc.raw), &r))
				full := validRequest()
				full.Expiry, full.unknownFields = r.Expiry, r.unknownFields
				r = full
			} else {
				require.NoError(t, json.Unmarshal(patchedJSON(t, tc.patch), &r))
			}
			err := r.ValidateAt(testStart)
			if tc.want == "" {
				require.NoError(t, err)
				return
			}
			require.Error(t, err)
			assert.Equal(t, "invalid request: "+tc.want, err.Error())
			assert.Equal(t, err.Error(), r.WithDefaults().ValidateAt(testStart).Error(), "defaults keep the unknown fields")
		})
	}
}

func TestUnknownFieldsOfRevokeRequest(t *testing.T) {
	var r RevokeRequest
	require.NoError(t, json.Unmarshal([]byte(`{"project":"my-project","location":"europe-west1","cluster":"prod-cluster",
		"namespace":"carto","ksa":"carto-common-backend","gsaEmail":"`+wantGSA+`","tokenExpiryWiat":"0s",
		"bigquery":{"dataProject":"my-data-project","billingProject":"my-billing-project","tempDataset":"t","connectionOwnerId":"o","owner":"x"}}`), &r))
	assert.EqualError(t, r.Validate(), "invalid request: tokenExpiryWiat: unknown field (did you mean tokenExpiryWait?); bigquery.owner: unknown field")

	// Decoding again starts afresh.
	require.NoError(t, json.Unmarshal([]byte(`{"project":"my-project"}`), &r))
	assert.Empty(t, r.unknownFields)
}

func TestTypeErrorsNameTheRequestType(t *testing.T) {
	var r OnboardRequest
	err := json.Unmarshal([]byte(`{"gsa":{"accountId":5}}`), &r)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "Go struct field OnboardRequest.gsa.accountId of type string")
}

// findUnknownFields walks lists of objects too, though the requests have none yet.
func TestFindUnknownFieldsInListElements(t *testing.T) {
	type item struct {
		Name string         `json:"name"`
		Tags []string       `json:"tags"`
		Free map[string]any `json:"free"`
	}
	type sample struct {
		Items  []item    `json:"items"`
		Nested [][]*item `json:"nested"`
		Skip   string    `json:"-"`
	}
	raw := `{"items":[{"name":"a"},{"nmae":"b","free":{"x":1}}],"nested":[[null,{"tag":["t"]}]],"Skip":"s"}`
	assert.Equal(t, []unknownField{
		{Path: "items[1].nmae", Suggestion: "items[1].name"},
		{Path: "nested[0][1].tag", Suggestion: "nested[0][1].tags"},
		{Path: "Skip"},
	}, findUnknownFields([]byte(raw), reflect.TypeFor[sample]()))
	var strict sample
	dec := json.NewDecoder(strings.NewReader(raw))
	dec.DisallowUnknownFields()
	assert.EqualError(t, dec.Decode(&strict), `json: unknown field "nmae"`, "encoding/json agrees on the first one")
}

func TestOnboardRefusesUnknownFields(t *testing.T) {
	fake := newFakeCloud()
	req := validRequest()
	env := newOnboardEnv(t, fake, req)
	// Raw JSON, as an operator's `temporal workflow start --input` sends it.
	env.RegisterWorkflowWithOptions(Onboard, workflow.RegisterOptions{Name: OnboardWorkflowName})
	env.ExecuteWorkflow(OnboardWorkflowName, json.RawMessage(patchedJSON(t, func(m map[string]any) { m["expiry"] = map[string]any{"tll": "1h"} })))

	appErr := workflowAppError(t, env)
	assert.Equal(t, ErrTypeInvalidRequest, appErr.Type())
	assert.Equal(t, "invalid request: expiry.tll: unknown field (did you mean expiry.ttl?)", appErr.Message())
	assert.Empty(t, fake.names(), "nothing ran")
	assert.Equal(t, StateFailed, queryStatus(t, env).State)
}

func TestOnboardRecordedBeforeTheCheckIgnoresUnknownFields(t *testing.T) {
	fake := newFakeCloud()
	req := validRequest()
	env := newOnboardEnv(t, fake, req)
	env.RegisterWorkflowWithOptions(Onboard, workflow.RegisterOptions{Name: OnboardWorkflowName})
	env.OnGetVersion(changeUnknownFields, workflow.DefaultVersion, 1).Return(workflow.DefaultVersion)
	signalAt(env, 0, approve(alice))
	env.ExecuteWorkflow(OnboardWorkflowName, json.RawMessage(patchedJSON(t, func(m map[string]any) { m["legacy"] = true })))

	require.True(t, env.IsWorkflowCompleted())
	require.NoError(t, env.GetWorkflowError())
	assert.Equal(t, StateCompleted, queryStatus(t, env).State)
}

func TestRevokeRefusesUnknownFields(t *testing.T) {
	fake := newFakeCloud()
	req := revokeRequest()
	env := newEnv(t, fake, RevokeWorkflowID(req))
	b, err := json.Marshal(req)
	require.NoError(t, err)
	var m map[string]any
	require.NoError(t, json.Unmarshal(b, &m))
	m["removeAnnotations"] = true
	b, err = json.Marshal(m)
	require.NoError(t, err)

	env.RegisterWorkflowWithOptions(Revoke, workflow.RegisterOptions{Name: RevokeWorkflowName})
	env.ExecuteWorkflow(RevokeWorkflowName, json.RawMessage(b))

	appErr := workflowAppError(t, env)
	assert.Equal(t, ErrTypeInvalidRequest, appErr.Type())
	assert.Equal(t, "invalid request: removeAnnotations: unknown field (did you mean removeAnnotation?)", appErr.Message())
	assert.Empty(t, fake.names())
}
