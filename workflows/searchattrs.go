package workflows

import (
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"
)

// Custom search attributes gkewi keeps up to date on its runs, so operators can
// list grants with `temporal workflow list --query 'GkewiNamespace="x"'`. They must
// be registered on the namespace before a worker runs the workflows.
const (
	SearchAttrProject   = "GkewiProject"
	SearchAttrCluster   = "GkewiCluster"
	SearchAttrNamespace = "GkewiNamespace"
	SearchAttrKSA       = "GkewiKSA"
	SearchAttrGSA       = "GkewiGSA"
	SearchAttrState     = "GkewiState"
	SearchAttrExpiry    = "GkewiExpiry"
	// SearchAttrRequester is the proven requester's verified email.
	SearchAttrRequester = "GkewiRequester"
)

// SearchAttributeTypes maps each custom search attribute to its type, as the
// operator API (AddSearchAttributes) takes them.
func SearchAttributeTypes() map[string]enumspb.IndexedValueType {
	m := make(map[string]enumspb.IndexedValueType)
	for _, a := range searchAttributeList() {
		m[a.name] = a.kind
	}
	return m
}

// SearchAttributeFlags returns "Name=Type" for each custom search attribute, the
// form `temporal server start-dev --search-attribute` takes.
func SearchAttributeFlags() []string {
	list := searchAttributeList()
	flags := make([]string, len(list))
	for i, a := range list {
		flags[i] = a.name + "=" + a.kindName
	}
	return flags
}

type searchAttributeDef struct {
	name     string
	kind     enumspb.IndexedValueType
	kindName string // as the CLI spells it
}

func searchAttributeList() []searchAttributeDef {
	keyword := func(name string) searchAttributeDef {
		return searchAttributeDef{name, enumspb.INDEXED_VALUE_TYPE_KEYWORD, "Keyword"}
	}
	return []searchAttributeDef{
		keyword(SearchAttrProject),
		keyword(SearchAttrCluster),
		keyword(SearchAttrNamespace),
		keyword(SearchAttrKSA),
		keyword(SearchAttrGSA),
		keyword(SearchAttrState),
		keyword(SearchAttrRequester),
		{SearchAttrExpiry, enumspb.INDEXED_VALUE_TYPE_DATETIME, "Datetime"},
	}
}

// Memo fields Onboard sets once support decided. Visibility lists them with
// each run (`temporal workflow list`, `gkewi list`) and, unlike search
// attributes, they need no registration on the namespace.
const (
	// MemoDecision is the decision: approved, rejected or timed-out.
	MemoDecision = "gkewiDecision"
	// MemoApprover is the approver whose decision counted.
	MemoApprover = "gkewiApprover"
	// MemoTicket is the support ticket given with the decision.
	MemoTicket = "gkewiTicket"
)

// upsertApprovalMemo records the approval decision in the memo; like the
// search attributes it only logs a failure.
func upsertApprovalMemo(ctx workflow.Context, a *Approval) {
	memo := map[string]any{MemoDecision: string(a.Decision)}
	if a.Approver != "" {
		memo[MemoApprover] = a.Approver
	}
	if a.Ticket != "" {
		memo[MemoTicket] = a.Ticket
	}
	if err := workflow.UpsertMemo(ctx, memo); err != nil {
		workflow.GetLogger(ctx).Warn("cannot upsert the memo", "error", err)
	}
}

func keywordAttr(name, value string) temporal.SearchAttributeUpdate {
	return temporal.NewSearchAttributeKeyKeyword(name).ValueSet(value)
}

// upsertGrantAttributes records which grant a run is about.
func upsertGrantAttributes(ctx workflow.Context, project, cluster, namespace, ksa string) {
	upsertAttributes(ctx,
		keywordAttr(SearchAttrProject, project),
		keywordAttr(SearchAttrCluster, cluster),
		keywordAttr(SearchAttrNamespace, namespace),
		keywordAttr(SearchAttrKSA, ksa))
}

func upsertGSAAttribute(ctx workflow.Context, email string) {
	upsertAttributes(ctx, keywordAttr(SearchAttrGSA, email))
}

func upsertRequesterAttribute(ctx workflow.Context, email string) {
	upsertAttributes(ctx, keywordAttr(SearchAttrRequester, email))
}

func upsertStateAttribute(ctx workflow.Context, s State) {
	upsertAttributes(ctx, keywordAttr(SearchAttrState, string(s)))
}

func upsertExpiryAttribute(ctx workflow.Context, at time.Time) {
	upsertAttributes(ctx, temporal.NewSearchAttributeKeyTime(SearchAttrExpiry).ValueSet(at))
}

// upsertAttributes logs instead of failing: search attributes help find runs but
// the grant does not depend on them.
func upsertAttributes(ctx workflow.Context, updates ...temporal.SearchAttributeUpdate) {
	if err := workflow.UpsertTypedSearchAttributes(ctx, updates...); err != nil {
		workflow.GetLogger(ctx).Warn("cannot upsert search attributes", "error", err)
	}
}
