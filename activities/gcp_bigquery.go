package activities

import (
	"context"
	"fmt"
	"strings"

	"google.golang.org/api/bigquery/v2"
)

const (
	roleBigQueryDataEditor = "roles/bigquery.dataEditor"
	roleBigQueryJobUser    = "roles/bigquery.jobUser"
	defaultDatasetLocation = "US"
	// datasetAccessPolicyVersion is the IAM policy version dataset access lists
	// are read and written as. Below 3 BigQuery hides the conditions of
	// conditional entries (renaming their roles ROLE_with_conditionalbinding_HASH)
	// and refuses to write a list that holds them.
	datasetAccessPolicyVersion = 3
)

// legacyDatasetRoles maps the basic role names BigQuery returns in dataset access
// entries to the predefined roles they stand for; it accepts both on write.
var legacyDatasetRoles = map[string]string{
	"OWNER":  "roles/bigquery.dataOwner",
	"WRITER": "roles/bigquery.dataEditor",
	"READER": "roles/bigquery.dataViewer",
}

func canonicalDatasetRole(role string) string {
	if r, ok := legacyDatasetRoles[role]; ok {
		return r
	}
	return role
}

type datasetRef struct{ project, dataset string }

func (d datasetRef) String() string { return d.project + "." + d.dataset }

// parseDatasetRef reads "dataset", "project.dataset" or "project:dataset".
func parseDatasetRef(s, defaultProject string) (datasetRef, error) {
	ref := datasetRef{project: defaultProject, dataset: s}
	if i := strings.LastIndexAny(s, ".:"); i >= 0 {
		ref = datasetRef{project: s[:i], dataset: s[i+1:]}
	}
	if ref.project == "" || ref.dataset == "" {
		return datasetRef{}, invalidArgument("dataset %q is not DATASET or PROJECT.DATASET", s)
	}
	return ref, nil
}

// accessEntryFor is the dataset access entry that grants role to an IAM member.
func accessEntryFor(role, member string) *bigquery.DatasetAccess {
	kind, id, _ := strings.Cut(member, ":")
	e := &bigquery.DatasetAccess{Role: role}
	switch kind {
	case "serviceAccount", "user":
		e.UserByEmail = id
	case "group":
		e.GroupByEmail = id
	case "domain":
		e.Domain = id
	default:
		e.IamMember = member
	}
	return e
}

// accessEntryMatches reports whether e grants role to member unconditionally, in
// any of the forms BigQuery accepts.
func accessEntryMatches(e *bigquery.DatasetAccess, role, member string) bool {
	if e == nil || e.Condition != nil || canonicalDatasetRole(e.Role) != canonicalDatasetRole(role) {
		return false
	}
	if e.IamMember != "" {
		return sameMember(e.IamMember, member)
	}
	kind, id, _ := strings.Cut(member, ":")
	switch kind {
	case "serviceAccount", "user":
		return e.UserByEmail != "" && strings.EqualFold(e.UserByEmail, id)
	case "group":
		return e.GroupByEmail != "" && strings.EqualFold(e.GroupByEmail, id)
	case "domain":
		return e.Domain != "" && strings.EqualFold(e.Domain, id)
	}
	return false
}

// addDatasetAccess returns entries with role granted to member, and whether that
// took a change.
func addDatasetAccess(entries []*bigquery.DatasetAccess, role, member string) ([]*bigquery.DatasetAccess, bool) {
	for _, e := range entries {
		if accessEntryMatches(e, role, member) {
			return entries, false
		}
	}
	return append(entries, accessEntryFor(role, member)), true
}

// removeDatasetAccess returns entries without member's unconditional role grants.
func removeDatasetAccess(entries []*bigquery.DatasetAccess, role, member string) ([]*bigquery.DatasetAccess, bool) {
	kept := make([]*bigquery.DatasetAccess, 0, len(entries))
	for _, e := range entries {
		if !accessEntryMatches(e, role, member) {
			kept = append(kept, e)
		}
	}
	return kept, len(kept) != len(entries)
}

// isDeletedMember reports a deleted principal as IAM keeps it in policies
// ("deleted:serviceAccount:x@p.iam.gserviceaccount.com?uid=N"; BigQuery shows
// the type in lower case).
func isDeletedMember(member string) bool {
	return len(member) >= len("deleted:") && strings.EqualFold(member[:len("deleted:")], "deleted:")
}

// dropDeletedMembers returns entries without those of deleted principals, and
// the members dropped. BigQuery lists such entries but refuses a write that
// sends them back ("The member deleted:... is of an unknown type"); they grant
// nothing.
func dropDeletedMembers(entries []*bigquery.DatasetAccess) ([]*bigquery.DatasetAccess, []string) {
	kept := make([]*bigquery.DatasetAccess, 0, len(entries))
	var dropped []string
	for _, e := range entries {
		if e != nil && isDeletedMember(e.IamMember) {
			dropped = append(dropped, e.IamMember)
			continue
		}
		kept = append(kept, e)
	}
	return kept, dropped
}

// datasetAccessChange is what a change of a dataset's access list did.
type datasetAccessChange struct {
	changed bool
	dropped []string // deleted principals removed so the write is accepted
}

// modifyDatasetAccess applies mutate to a dataset's access entries with
// read-modify-write; the write carries the read's etag (If-Match), so a concurrent
// change makes it fail with 412 and the cycle run again. Both read and write are
// at access policy version 3, so conditional entries go back unchanged; deleted
// principals are dropped from a write.
func (g *GCP) modifyDatasetAccess(ctx context.Context, ref datasetRef,
	mutate func([]*bigquery.DatasetAccess) ([]*bigquery.DatasetAccess, bool)) (datasetAccessChange, error) {
	resource := "bigquery/projects/" + ref.project + "/datasets/" + ref.dataset
	var dropped []string
	changed, err := g.readModifyWrite(ctx, resource, func(ctx context.Context) (bool, error) {
		dropped = nil
		ds, err := g.bigQuery.Datasets.Get(ref.project, ref.dataset).AccessPolicyVersion(datasetAccessPolicyVersion).Context(ctx).Do()
		if err != nil {
			return false, ClassifyGoogleError(err, "read dataset "+ref.String(), "bigquery.datasets.get")
		}
		access, changed := mutate(ds.Access)
		if !changed {
			return false, nil
		}
		access, dropped = dropDeletedMembers(access)
		call := g.bigQuery.Datasets.Patch(ref.project, ref.dataset, &bigquery.Dataset{
			Access:          access,
			ForceSendFields: []string{"Access"},
		}).AccessPolicyVersion(datasetAccessPolicyVersion)
		if ds.Etag != "" {
			call.Header().Set("If-Match", ds.Etag)
		}
		if _, err := call.Context(ctx).Do(); err != nil {
			return false, ClassifyGoogleError(err, "update access of dataset "+ref.String(), "bigquery.datasets.update")
		}
		return true, nil
	})
	if err != nil || !changed {
		return datasetAccessChange{}, err
	}
	if len(dropped) > 0 {
		logInfo(ctx, "dropped deleted principals from dataset access", "dataset", ref.String(), "members", dropped)
	}
	return datasetAccessChange{changed: true, dropped: dropped}, nil
}

// droppedWarning tells the operator which deleted principals left a dataset's
// access list with a change.
func droppedWarning(ref datasetRef, dropped []string) string {
	return fmt.Sprintf("removed %d deleted principal(s) from the access list of dataset %s, as BigQuery accepts no write that keeps them: %s "+
		"(they granted nothing; an undeleted account must be granted again)", len(dropped), ref, strings.Join(dropped, ", "))
}

// ensureDataset creates the dataset unless it exists, reporting whether it did.
func (g *GCP) ensureDataset(ctx context.Context, ref datasetRef, location string) (bool, error) {
	_, err := g.bigQuery.Datasets.Get(ref.project, ref.dataset).AccessPolicyVersion(datasetAccessPolicyVersion).Context(ctx).Do()
	if err == nil {
		return false, nil
	}
	if !IsNotFound(err) {
		return false, ClassifyGoogleError(err, "read dataset "+ref.String(), "bigquery.datasets.get")
	}
	_, err = g.bigQuery.Datasets.Insert(ref.project, &bigquery.Dataset{
		DatasetReference: &bigquery.DatasetReference{ProjectId: ref.project, DatasetId: ref.dataset},
		Location:         location,
	}).AccessPolicyVersion(datasetAccessPolicyVersion).Context(ctx).Do()
	if err == nil {
		return true, nil
	}
	if apiCode(err) == 409 {
		return false, nil // created meanwhile
	}
	return false, ClassifyGoogleError(err, "create dataset "+ref.String(), "bigquery.datasets.create")
}

// bigQueryGrant is one grant of a BigQuery connection: a role on a project's IAM
// policy, or on a dataset's access entries.
type bigQueryGrant struct {
	role    string
	project string      // set for a project-level grant
	dataset *datasetRef // set for a dataset-level grant
}

func (b bigQueryGrant) String() string {
	if b.dataset != nil {
		return b.role + " on dataset " + b.dataset.String()
	}
	return b.role + " on project " + b.project
}

// bigQueryGrants lists the grants of a connection, with the temp dataset last.
func bigQueryGrants(in BigQueryAccessInput) ([]bigQueryGrant, datasetRef, error) {
	if in.DataProject == "" || in.BillingProject == "" || in.TempDataset == "" {
		return nil, datasetRef{}, invalidArgument("BigQuery access needs dataProject, billingProject and tempDataset")
	}
	if err := validateGrant(roleBigQueryDataEditor, in.Member); err != nil {
		return nil, datasetRef{}, err
	}
	var grants []bigQueryGrant
	if len(in.Datasets) == 0 {
		grants = append(grants, bigQueryGrant{role: roleBigQueryDataEditor, project: in.DataProject})
	}
	for _, d := range in.Datasets {
		ref, err := parseDatasetRef(d, in.DataProject)
		if err != nil {
			return nil, datasetRef{}, err
		}
		grants = append(grants, bigQueryGrant{role: roleBigQueryDataEditor, dataset: &ref})
	}
	grants = append(grants, bigQueryGrant{role: roleBigQueryJobUser, project: in.BillingProject})
	temp, err := parseDatasetRef(in.TempDataset, in.BillingProject)
	if err != nil {
		return nil, datasetRef{}, err
	}
	grants = append(grants, bigQueryGrant{role: roleBigQueryDataEditor, dataset: &temp})
	return grants, temp, nil
}

// applyBigQueryGrant adds or removes one grant, reporting what it changed.
// Removing from a dataset that no longer exists changes nothing.
func (g *GCP) applyBigQueryGrant(ctx context.Context, gr bigQueryGrant, member string, add bool) (datasetAccessChange, error) {
	if gr.dataset == nil {
		changed, err := g.modifyPolicy(ctx, g.projectPolicy(gr.project), func(p *Policy) bool {
			if add {
				return p.AddMember(gr.role, member)
			}
			return p.RemoveMember(gr.role, member)
		})
		return datasetAccessChange{changed: changed}, err
	}
	ch, err := g.modifyDatasetAccess(ctx, *gr.dataset, func(e []*bigquery.DatasetAccess) ([]*bigquery.DatasetAccess, bool) {
		if add {
			return addDatasetAccess(e, gr.role, member)
		}
		return removeDatasetAccess(e, gr.role, member)
	})
	if !add && IsNotFound(err) {
		return datasetAccessChange{}, nil
	}
	return ch, err
}

// GrantBigQueryAccess grants the connection's roles and ensures the temp dataset.
func (g *GCP) GrantBigQueryAccess(ctx context.Context, in BigQueryAccessInput) (StepResult, error) {
	grants, temp, err := bigQueryGrants(in)
	if err != nil {
		return StepResult{}, err
	}
	if err := g.checkWorkloadPoolOf(ctx, in.Member); err != nil {
		return StepResult{}, err
	}
	location := in.DatasetLocation
	if location == "" {
		location = defaultDatasetLocation
	}
	var done, warnings []string
	created, err := g.ensureDataset(ctx, temp, location)
	if err != nil {
		return StepResult{}, err
	}
	if created {
		done = append(done, "created dataset "+temp.String()+" in "+location)
	}
	for _, gr := range grants {
		heartbeat(ctx, gr.String())
		var ch datasetAccessChange
		_, err := g.whilePropagating(ctx, IsMemberMissing, func(ctx context.Context) (bool, error) {
			var err error
			ch, err = g.applyBigQueryGrant(ctx, gr, in.Member, true)
			return ch.changed, err
		})
		if err != nil {
			return StepResult{}, err
		}
		if ch.changed {
			done = append(done, "granted "+gr.String())
		}
		if len(ch.dropped) > 0 {
			warnings = append(warnings, droppedWarning(*gr.dataset, ch.dropped))
		}
	}
	if len(done) == 0 {
		return StepResult{Detail: "BigQuery access of " + in.Member + " already in place"}, nil
	}
	return StepResult{Changed: true, Detail: strings.Join(done, "; "), Warnings: warnings}, nil
}

// RevokeBigQueryAccess removes the connection's roles (the temp dataset stays).
func (g *GCP) RevokeBigQueryAccess(ctx context.Context, in BigQueryAccessInput) (StepResult, error) {
	grants, _, err := bigQueryGrants(in)
	if err != nil {
		return StepResult{}, err
	}
	var done, warnings []string
	for _, gr := range grants {
		heartbeat(ctx, gr.String())
		ch, err := g.applyBigQueryGrant(ctx, gr, in.Member, false)
		if err != nil {
			return StepResult{}, err
		}
		if ch.changed {
			done = append(done, "revoked "+gr.String())
		}
		if len(ch.dropped) > 0 {
			warnings = append(warnings, droppedWarning(*gr.dataset, ch.dropped))
		}
	}
	if len(done) == 0 {
		return StepResult{Detail: fmt.Sprintf("%s had no BigQuery access to revoke", in.Member)}, nil
	}
	return StepResult{Changed: true, Detail: strings.Join(done, "; "), Warnings: warnings}, nil
}
