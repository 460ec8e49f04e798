//! `GET /v1/runs` in the embedded backend: each tenant's run ids in an
//! ordered set (ids sort by creation time), kept as runs are created,
//! restored and forgotten.

use std::ops::Bound;
use std::sync::Arc;

use super::{Inner, MemoryBackend};
use crate::backend::listing::{RunQuery, RunSummary, RunsPage};
use crate::scheduler::clock::rfc3339;

impl Inner {
    pub(super) fn list(&mut self, tenant: &str, id: &Arc<str>) {
        self.listed
            .entry(tenant.to_string())
            .or_default()
            .insert(id.clone());
    }

    pub(super) fn unlist(&mut self, tenant: &str, id: &str) {
        if let Some(ids) = self.listed.get_mut(tenant) {
            ids.remove(id);
            if ids.is_empty() {
                self.listed.remove(tenant);
            }
        }
    }
}

impl MemoryBackend {
    pub(super) fn list_runs(&self, tenant: &str, query: &RunQuery) -> RunsPage {
        let inner = self.lock();
        let Some(ids) = inner.listed.get(tenant) else {
            return query.page([]);
        };
        let upper = match &query.after {
            Some(after) => Bound::Excluded(after.as_str()),
            None => Bound::Unbounded,
        };
        let candidates = ids
            .range::<str, _>((Bound::Unbounded, upper))
            .rev()
            .take(query.to_examine())
            .map(|id| {
                let summary = inner.runs.get(id).map(|run| RunSummary {
                    id: id.to_string(),
                    status: run.status,
                    workflow: run.spec.workflow_name().to_string(),
                    created_at: rfc3339(run.spec.created_at),
                    finished_at: run.finished_at.map(rfc3339),
                    parent: run.spec.parent.clone(),
                });
                (id.to_string(), summary)
            });
        query.page(candidates)
    }
}
