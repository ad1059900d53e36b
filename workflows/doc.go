// Package workflows holds gkewi's Temporal workflows: Onboard grants a GKE workload
// a Google service account through Workload Identity, behind a support approval;
// Revoke takes the grant away again and proves it is gone.
//
// # Step map
//
// Each step of the status (the step constants in onboard.go and revoke.go), the
// workflow function that runs it (file in this package), and the activity
// method it calls (file in package activities).
//
// Onboard:
//
//	STEP                    WORKFLOW FUNCTION                   ACTIVITY
//	grant-policy            resolvePolicy (grant_policy.go)     Policies.ResolveGrantPolicy (grant_policy.go)
//	render-release          render (onboard.go)                 Helm.RenderRelease (helm_render.go)
//	preflight               checks (onboard.go)                 Kube.Preflight (kube.go)
//	kubernetes-access       checks (onboard.go)                 Kube.CheckAccess (kube_access.go)
//	identity-sameness       checks (onboard.go)                 GCP.CheckIdentitySameness (gcp_cluster.go)
//	service-account         serviceAccount (onboard.go)         GCP.EnsureServiceAccount (gcp_iam.go)
//	token-creator           serviceAccount (onboard.go)         GCP.AddServiceAccountIAMMember (gcp_iam.go)
//	enable-iamcredentials   enableService (onboard.go)          GCP.EnableService (gcp_cluster.go)
//	workload-pool           workloadPool (onboard.go)           GCP.SetWorkloadPool, EnsureWorkloadPool (gcp_cluster.go)
//	list-node-pools         nodePools (onboard.go)              GCP.ListNodePools (gcp_cluster.go)
//	node-pool/NAME          nodePools (onboard.go)              GCP.SetNodePoolMetadata (gcp_cluster.go)
//	approval-request        approval (approval_wait.go)         Notifier.NotifySupport (notify.go)
//	approval                awaitDecision (approval_wait.go),   Approvals.CheckDecisionProof (approval_proof.go);
//	                        the gate (approval_gate.go)         reminders: Notifier.NotifySupport (notify.go)
//	workload-identity-user  grant (onboard.go)                  GCP.AddServiceAccountIAMMember (gcp_iam.go)
//	annotate-ksa            annotation (onboard.go)             Kube.AnnotateServiceAccount (kube.go)
//	bigquery                bigQuery (onboard.go)               GCP.GrantBigQueryAccess (gcp_bigquery.go)
//	helm                    helmInstall (onboard.go)            Helm.HelmUpgradeInstall (helm.go)
//	verify-release          grant (onboard.go)                  Helm.VerifyRelease (helm_verify.go)
//	verify                  verifyAccess (verify.go)            Verifier.VerifyAccess (verify.go)
//	schedule-revocation     scheduleRevocation (grant_expiry.go) Schedules.SetRevocationTime (schedules.go)
//	delete-service-account  endBeforeGrant (approval_wait.go)   GCP.DeleteServiceAccount (gcp_iam.go)
//	remove-token-creator    endBeforeGrant (approval_wait.go)   GCP.RemoveServiceAccountIAMMember (gcp_iam.go)
//	outcome-notification    notifyOutcome (approval_wait.go)    Notifier.NotifySupport (notify.go)
//
// Since the critical-path change (changeCriticalPath, askEarly in
// onboard_overlap.go, which draws the graph), Onboard asks support right after
// the GSA and its token creator binding and runs the cluster work
// (enable-iamcredentials, workload-pool, the node pools) during the approval
// wait. After the workload-identity-user binding, annotate-ksa, bigquery and
// helm run side by side while the binding propagates; helm also waits for the
// node pools, and verify for everything. Runs started before it keep the
// earlier order (prepare, onboard_sequential.go): the cluster work, then the
// GSA, then support.
//
// Revoke:
//
//	STEP                           WORKFLOW FUNCTION                      ACTIVITY
//	onboarding                     settleOnboarding (revoke_proofs.go)    Grants.DescribeWorkflowRun, CancelWorkflowRun (grants.go)
//	remove-workload-identity-user  remove (revoke.go)                     GCP.RemoveServiceAccountIAMMember (gcp_iam.go)
//	revoke-bigquery                remove (revoke.go)                     GCP.RevokeBigQueryAccess (gcp_bigquery.go)
//	remove-annotation              remove (revoke.go)                     Kube.RemoveServiceAccountAnnotation (kube.go)
//	verify-refused                 walkUntilRefused (revoke_proofs.go)    Verifier.VerifyAccess (verify.go)
//	token-expiry-wait              waitForTokens (revoke_proofs.go)       none: a timer
//	verify-revoked                 prove (revoke_proofs.go)               Verifier.VerifyAccess (verify.go)
//	delete-revocation-schedule     deleteSchedule (revoke.go)             Schedules.DeleteSchedule (schedules.go)
package workflows
