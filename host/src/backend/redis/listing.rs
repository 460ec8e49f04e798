//! `GET /v1/runs` on Redis: each tenant's run ids in a sorted set of equal
//! scores (`keys::tenant_runs`), which orders them as their ids, by creation
//! time. The create script adds each run and drops the oldest ids whose runs
//! have expired; a page reads its ids by range and the run fields it shows.

use super::{RedisBackend, keys, unavailable};
use crate::backend::BackendError;
use crate::backend::listing::{RunQuery, RunSummary, RunsPage};
use crate::scheduler::clock::rfc3339;

/// Ids read from the index at once while a filtered page fills.
const CHUNK: usize = 500;

impl RedisBackend {
    pub(super) async fn list_runs(
        &self,
        tenant: &str,
        query: &RunQuery,
    ) -> Result<RunsPage, BackendError> {
        let index = keys::tenant_runs(tenant);
        let wanted = query.to_examine();
        let mut candidates: Vec<(String, Option<RunSummary>)> = Vec::new();
        let mut from = match &query.after {
            Some(id) => format!("({id}"),
            None => "+".to_string(),
        };
        let mut gone = Vec::new();
        // Runs the page shows, and how many candidates there were when it
        // was full: one candidate past that tells that another page follows.
        let mut shown = 0;
        let mut full_at = None;
        // A filtered page reads its ids in growing chunks, from twice the page.
        let mut chunk = (2 * (query.limit as usize + 1)).min(CHUNK);
        while candidates.len() < wanted && full_at.is_none_or(|at| candidates.len() <= at) {
            let take = (wanted - candidates.len()).min(chunk);
            chunk = (2 * chunk).min(CHUNK);
            let ids: Vec<String> = redis::cmd("ZRANGE")
                .arg(&index)
                .arg(&from)
                .arg("-")
                .arg("BYLEX")
                .arg("REV")
                .arg("LIMIT")
                .arg(0)
                .arg(take)
                .query_async(&mut self.conn())
                .await
                .map_err(unavailable)?;
            let mut pipe = redis::pipe();
            for id in &ids {
                pipe.cmd("HMGET").arg(keys::run(id)).arg(&[
                    "tenant",
                    "status",
                    "created_at",
                    "finished_at",
                    "workflow",
                    "parent",
                ]);
            }
            let rows: Vec<Vec<Option<String>>> = if ids.is_empty() {
                Vec::new()
            } else {
                pipe.query_async(&mut self.conn())
                    .await
                    .map_err(unavailable)?
            };
            let done = ids.len() < take;
            if let Some(last) = ids.last() {
                from = format!("({last}");
            }
            for (id, row) in ids.into_iter().zip(rows) {
                let summary = summary(&id, tenant, row);
                match &summary {
                    None => gone.push(id.clone()),
                    Some(s) if query.shows(s) => shown += 1,
                    Some(_) => {}
                }
                candidates.push((id, summary));
                if full_at.is_none() && shown == query.limit as usize {
                    full_at = Some(candidates.len());
                }
            }
            if done {
                break;
            }
        }
        if !gone.is_empty() {
            // Expired runs leave the index as a listing passes them.
            let _: Result<(), _> = redis::cmd("ZREM")
                .arg(&index)
                .arg(&gone)
                .query_async(&mut self.conn())
                .await;
        }
        Ok(query.page(candidates))
    }
}

/// The run as a listing shows it, from its fields; None when it has expired
/// (or is not the tenant's, which the index never holds).
fn summary(id: &str, tenant: &str, row: Vec<Option<String>>) -> Option<RunSummary> {
    let mut row = row.into_iter();
    let mut next = || row.next().flatten();
    if next()? != tenant {
        return None;
    }
    let status = super::view::status(&next()?).ok()?;
    let created_at = next()?.parse().ok()?;
    let finished_at = next().and_then(|f| f.parse().ok());
    let workflow = next().unwrap_or_else(|| "workflow".into());
    let parent = next().filter(|p| !p.is_empty());
    Some(RunSummary {
        id: id.to_string(),
        status,
        workflow,
        created_at: rfc3339(created_at),
        finished_at: finished_at.map(rfc3339),
        parent,
    })
}
