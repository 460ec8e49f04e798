//! Planning a run's sub-workflows at submission: each sub-workflow step's
//! template resolved, validated and pinned, within the run's budgets.

use std::collections::BTreeMap;

use super::start::check_document;
use super::{ApiError, AppState, MAX_JSON_BODY};
use crate::backend::TenantRecord;
use crate::scheduler::model::{ChildPlan, MAX_CHILD_DEPTH, TemplateRef};
use crate::workflow::{self, Problem};

/// What the sub-workflows of a run add up to, counted while they are planned.
struct Tree {
    /// Steps of the root and of every child it would start.
    steps: usize,
    /// Bytes of the children's documents.
    bytes: usize,
}

/// What the sub-workflow steps of the root workflow `root` start, planned
/// (`plan`) with the whole tree's budgets.
pub(super) async fn plan_root(
    state: &AppState,
    tenant: &TenantRecord,
    root: &workflow::Workflow,
) -> Result<BTreeMap<u32, ChildPlan>, ApiError> {
    let mut tree = Tree {
        steps: root.steps.len(),
        bytes: 0,
    };
    plan(state, tenant, root, 1, &mut tree).await
}

/// Resolves and pins what each sub-workflow step of `workflow` starts, and
/// theirs in turn: each template's highest matching version, its document
/// validated with its component digests. Children nest at most
/// `MAX_CHILD_DEPTH` deep (a root's are at `depth` 1); the steps of the
/// whole tree count against the tenant's `steps_per_run`, and the children's
/// documents together are at most `MAX_JSON_BODY` bytes (`tree` holds what
/// is counted so far).
fn plan<'a>(
    state: &'a AppState,
    tenant: &'a TenantRecord,
    workflow: &'a workflow::Workflow,
    depth: u32,
    tree: &'a mut Tree,
) -> futures::future::BoxFuture<'a, Result<BTreeMap<u32, ChildPlan>, ApiError>> {
    Box::pin(async move {
        let invalid = |pointer: String, message: String| {
            ApiError::unprocessable("invalid_workflow", message.clone())
                .with_details(vec![Problem::new(pointer, message)])
        };
        let mut plans = BTreeMap::new();
        for (i, step) in workflow.steps.iter().enumerate() {
            let Some(call) = step.sub_workflow() else {
                continue;
            };
            let pointer = format!("/steps/{i}/workflow");
            if depth > MAX_CHILD_DEPTH {
                return Err(invalid(
                    pointer,
                    format!(
                        "sub-workflows nest at most {MAX_CHILD_DEPTH} deep; {:?} would start one at depth {depth}",
                        call.name
                    ),
                ));
            }
            let (record, document) = state
                .registry
                .resolve_template(&tenant.name, &call.name, &call.requirement)
                .await?
                .map_err(|message| invalid(pointer.clone(), message))?;
            let (validated, document) =
                check_document(state, tenant, document, 0)
                    .await
                    .map_err(|_| {
                        invalid(
                            pointer.clone(),
                            format!(
                                "workflow template {}@{} does not validate now",
                                record.name, record.version
                            ),
                        )
                    })?;
            tree.bytes += workflow::json_size(&document, usize::MAX).unwrap_or(usize::MAX);
            if tree.bytes > MAX_JSON_BODY {
                return Err(invalid(
                    pointer,
                    format!(
                        "the documents of the run's sub-workflows, each counted as often as a step starts it, \
                         are larger than {} MiB together",
                        MAX_JSON_BODY >> 20
                    ),
                ));
            }
            tree.steps += validated.workflow.steps.len();
            if tree.steps > tenant.limits.steps_per_run as usize {
                return Err(invalid(
                    pointer,
                    format!(
                        "with its sub-workflows the run has more than the tenant's steps_per_run ({})",
                        tenant.limits.steps_per_run
                    ),
                ));
            }
            let children = plan(state, tenant, &validated.workflow, depth + 1, tree).await?;
            plans.insert(
                i as u32,
                ChildPlan {
                    template: TemplateRef {
                        name: record.name,
                        version: record.version,
                    },
                    document,
                    pins: validated.pins,
                    children,
                },
            );
        }
        Ok(plans)
    })
}
