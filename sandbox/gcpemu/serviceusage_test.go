package gcpemu

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	iam "google.golang.org/api/iam/v1"
	"google.golang.org/api/serviceusage/v1"
)

func TestServicesList(t *testing.T) {
	e := newEnv(t)
	su := e.su(e.opTok)
	parent := "projects/" + testProject

	names := func(list []*serviceusage.GoogleApiServiceusageV1Service) []string {
		var out []string
		for _, s := range list {
			out = append(out, s.Config.Name)
		}
		return out
	}
	enabled, err := su.Services.List(parent).Filter("state:ENABLED").Do()
	require.NoError(t, err)
	assert.Equal(t, defaultServicesSorted(), names(enabled.Services))
	assert.Empty(t, enabled.NextPageToken)

	// The real shape: numeric names, the parent, the config's name and title.
	s := enabled.Services[0]
	assert.Equal(t, fmt.Sprintf("projects/%d/services/bigquery.googleapis.com", testNumber), s.Name)
	assert.Equal(t, fmt.Sprintf("projects/%d", testNumber), s.Parent)
	assert.Equal(t, "ENABLED", s.State)
	assert.Equal(t, "BigQuery API", s.Config.Title)

	disabled, err := su.Services.List(parent).Filter("state:DISABLED").Do()
	require.NoError(t, err)
	assert.Contains(t, names(disabled.Services), "iamcredentials.googleapis.com")
	assert.NotContains(t, names(disabled.Services), "iam.googleapis.com")
	all, err := su.Services.List(parent).Do()
	require.NoError(t, err)
	assert.Len(t, all.Services, len(enabled.Services)+len(disabled.Services))

	// Pages: pageSize, then pageToken, until no token; by project number too.
	var paged []string
	token := ""
	for pages := 0; ; pages++ {
		require.Less(t, pages, 10)
		call := su.Services.List(fmt.Sprintf("projects/%d", testNumber)).Filter("state:ENABLED").PageSize(3)
		if token != "" {
			call = call.PageToken(token)
		}
		page, err := call.Do()
		require.NoError(t, err)
		assert.LessOrEqual(t, len(page.Services), 3)
		paged = append(paged, names(page.Services)...)
		if token = page.NextPageToken; token == "" {
			break
		}
	}
	assert.Equal(t, defaultServicesSorted(), paged)

	_, err = su.Services.List(parent).Filter("state:ON").Do()
	assert.Equal(t, "INVALID_ARGUMENT", status(t, apiErr(t, err, http.StatusBadRequest)))
	_, err = su.Services.List(parent).PageSize(201).Do()
	requireAPIError(t, err, http.StatusBadRequest)
	_, err = su.Services.List(parent).PageToken("nonsense").Do()
	requireAPIError(t, err, http.StatusBadRequest)

	// serviceusage.services.list is needed.
	_, err = e.su(e.emu.MintAccessToken("user:nobody@example.com")).Services.List(parent).Do()
	ge := apiErr(t, err, http.StatusForbidden)
	assert.Contains(t, ge.Message, "Permission denied to list services")

	// Nothing matching is an empty object, as Google answers.
	e2 := newEnv(t, withConfig(func(c *Config) { c.Projects[0].EnabledServices = []string{"serviceusage.googleapis.com"} }))
	code, body := e2.rawCall(t, "GET", "/v1/projects/"+testProject+"/services?filter=state%3AENABLED&pageSize=1&pageToken=page-1", e2.opTok, "", "", nil)
	assert.Equal(t, 200, code)
	assert.JSONEq(t, `{}`, body)
}

func defaultServicesSorted() []string {
	out := append([]string(nil), defaultServices...)
	slices.Sort(out)
	return out
}

func TestServiceDisable(t *testing.T) {
	e := newEnv(t, withOperationDuration(2*time.Second))
	su := e.su(e.opTok)
	name := "projects/" + testProject + "/services/iam.googleapis.com"

	op, err := su.Services.Disable(name, &serviceusage.DisableServiceRequest{}).Do()
	require.NoError(t, err)
	assert.False(t, op.Done)
	// Disabling again while it runs returns the same operation.
	again, err := su.Services.Disable(name, &serviceusage.DisableServiceRequest{}).Do()
	require.NoError(t, err)
	assert.Equal(t, op.Name, again.Name)
	svc, err := su.Services.Get(name).Do()
	require.NoError(t, err)
	assert.Equal(t, "ENABLED", svc.State, "the change lands when the operation is done")

	e.clock.Advance(2 * time.Second)
	done, err := su.Operations.Get(op.Name).Do()
	require.NoError(t, err)
	require.True(t, done.Done)
	var resp struct {
		Type    string `json:"@type"`
		Service struct {
			Name, Parent, State string
		} `json:"service"`
	}
	require.NoError(t, json.Unmarshal(done.Response, &resp))
	assert.Equal(t, "type.googleapis.com/google.api.serviceusage.v1.DisableServiceResponse", resp.Type)
	assert.Equal(t, fmt.Sprintf("projects/%d/services/iam.googleapis.com", testNumber), resp.Service.Name)
	assert.Equal(t, "DISABLED", resp.Service.State)

	// The API is off: IAM refuses with SERVICE_DISABLED.
	_, err = e.iam(e.opTok).Projects.ServiceAccounts.Create("projects/"+testProject, &iam.CreateServiceAccountRequest{AccountId: "after-disable"}).Do()
	ge := apiErr(t, err, http.StatusForbidden)
	assert.Contains(t, ge.Body, "SERVICE_DISABLED")

	// Disabling a disabled service is a finished no-op.
	noop, err := su.Services.Disable(name, &serviceusage.DisableServiceRequest{}).Do()
	require.NoError(t, err)
	assert.True(t, noop.Done)

	// Enabling brings it back.
	_, err = su.Services.Enable(name, &serviceusage.EnableServiceRequest{}).Do()
	require.NoError(t, err)
	e.clock.Advance(2 * time.Second)
	svc, err = su.Services.Get(name).Do()
	require.NoError(t, err)
	assert.Equal(t, "ENABLED", svc.State)

	// Unknown services, bad options and missing permissions.
	_, err = su.Services.Disable("projects/"+testProject+"/services/nope.googleapis.com", &serviceusage.DisableServiceRequest{}).Do()
	requireAPIError(t, err, http.StatusForbidden)
	_, err = su.Services.Disable(name, &serviceusage.DisableServiceRequest{CheckIfServiceHasUsage: "MAYBE"}).Do()
	requireAPIError(t, err, http.StatusBadRequest)
	viewer := e.emu.MintAccessToken("user:viewer@example.com")
	e.grantProjectRole(t, "roles/serviceusage.serviceUsageViewer", "user:viewer@example.com")
	_, err = e.su(viewer).Services.Disable(name, &serviceusage.DisableServiceRequest{}).Do()
	ge = apiErr(t, err, http.StatusForbidden)
	assert.Contains(t, ge.Message, "Permission denied to disable service [iam.googleapis.com]")
	_, err = e.su(viewer).Services.List("projects/" + testProject).Do()
	require.NoError(t, err, "the viewer may list")
}

func TestServicesBatchEnable(t *testing.T) {
	e := newEnv(t, withOperationDuration(time.Second))
	su := e.su(e.opTok)
	op, err := su.Services.BatchEnable("projects/"+testProject, &serviceusage.BatchEnableServicesRequest{
		ServiceIds: []string{"iamcredentials.googleapis.com", "storage.googleapis.com", "iam.googleapis.com"},
	}).Do()
	require.NoError(t, err)
	assert.False(t, op.Done)
	e.clock.Advance(time.Second)
	op, err = su.Operations.Get(op.Name).Do()
	require.NoError(t, err)
	require.True(t, op.Done)
	var resp struct {
		Type     string `json:"@type"`
		Services []struct{ Name, State string }
	}
	require.NoError(t, json.Unmarshal(op.Response, &resp))
	assert.Equal(t, "type.googleapis.com/google.api.serviceusage.v1.BatchEnableServicesResponse", resp.Type)
	require.Len(t, resp.Services, 3)
	for _, s := range resp.Services {
		assert.Equal(t, "ENABLED", s.State, s.Name)
	}

	// All enabled already: a finished no-op. Unknown names are refused whole.
	op, err = su.Services.BatchEnable("projects/"+testProject, &serviceusage.BatchEnableServicesRequest{
		ServiceIds: []string{"iamcredentials.googleapis.com"},
	}).Do()
	require.NoError(t, err)
	assert.True(t, op.Done)
	_, err = su.Services.BatchEnable("projects/"+testProject, &serviceusage.BatchEnableServicesRequest{
		ServiceIds: []string{"logging.googleapis.com", "nope.googleapis.com"},
	}).Do()
	ge := apiErr(t, err, http.StatusForbidden)
	assert.Contains(t, ge.Message, "nope.googleapis.com")
	svc, err := su.Services.Get("projects/" + testProject + "/services/logging.googleapis.com").Do()
	require.NoError(t, err)
	assert.Equal(t, "DISABLED", svc.State)
	_, err = su.Services.BatchEnable("projects/"+testProject, &serviceusage.BatchEnableServicesRequest{}).Do()
	requireAPIError(t, err, http.StatusBadRequest)
}

// A service enabled moments ago says ENABLED but its API keeps answering
// SERVICE_DISABLED for ServiceEnableLag, as Google's do for a few minutes.
func TestServiceJustEnabled(t *testing.T) {
	e := newEnv(t, withOperationDuration(2*time.Second), withConfig(func(c *Config) { c.ServiceEnableLag = time.Minute }))
	su := e.su(e.opTok)
	name := "projects/" + testProject + "/services/iam.googleapis.com"
	create := func(id string) error {
		_, err := e.iam(e.opTok).Projects.ServiceAccounts.Create("projects/"+testProject, &iam.CreateServiceAccountRequest{AccountId: id}).Do()
		return err
	}
	require.NoError(t, create("before-disable"), "a service enabled from the start answers at once")

	_, err := su.Services.Disable(name, &serviceusage.DisableServiceRequest{}).Do()
	require.NoError(t, err)
	e.clock.Advance(2 * time.Second)
	_, err = su.Services.Enable(name, &serviceusage.EnableServiceRequest{}).Do()
	require.NoError(t, err)
	e.clock.Advance(2 * time.Second)
	svc, err := su.Services.Get(name).Do()
	require.NoError(t, err)
	assert.Equal(t, "ENABLED", svc.State)

	ge := apiErr(t, create("just-enabled"), http.StatusForbidden)
	assert.Contains(t, ge.Body, "SERVICE_DISABLED")
	assert.Contains(t, ge.Message, "If you enabled this API recently, wait a few minutes for the action to propagate to our systems and retry.")

	e.clock.Advance(time.Minute)
	require.NoError(t, create("a-minute-later"))
}
