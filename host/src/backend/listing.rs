//! `GET /v1/runs`: a tenant's runs, newest first, a page at a time. Each
//! backend keeps an index of each tenant's run ids (which sort by creation
//! time) and reads only the page's runs; a filter is applied to at most
//! [`MAX_EXAMINED`] runs per page, so that a page never costs more than that
//! whatever the tenant's number of runs.

use serde::{Deserialize, Serialize};

use crate::scheduler::model::RunStatus;

/// Runs a page holds when the request says nothing.
pub const DEFAULT_LIMIT: u32 = 50;

/// Most runs a page holds.
pub const MAX_LIMIT: u32 = 500;

/// Most runs one page looks at when a filter leaves some out: a page may then
/// hold fewer than `limit` runs, and `next_cursor` goes on from the last one
/// looked at.
pub const MAX_EXAMINED: usize = 5_000;

/// One run of a listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RunSummary {
    pub id: String,
    pub status: RunStatus,
    /// The workflow's name: the template's, or the document's `name`.
    pub workflow: String,
    pub created_at: String,
    pub finished_at: Option<String>,
    /// The run that started this one as a sub-workflow.
    pub parent: Option<String>,
}

/// A page of a listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RunsPage {
    pub runs: Vec<RunSummary>,
    /// Where the next page starts; null on the last page.
    pub next_cursor: Option<String>,
}

/// Which runs a listing shows, from where, and how many.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunQuery {
    pub status: Option<RunStatus>,
    pub workflow: Option<String>,
    /// The id of the last run of the page before: the page holds older runs.
    pub after: Option<String>,
    pub limit: u32,
}

impl RunQuery {
    /// Whether the query shows this run.
    pub fn shows(&self, run: &RunSummary) -> bool {
        self.status.is_none_or(|s| s == run.status)
            && self.workflow.as_ref().is_none_or(|w| *w == run.workflow)
    }

    /// How many ids to read from the index for one page: one more than the
    /// page when nothing is filtered out (to tell whether another page follows).
    pub fn to_examine(&self) -> usize {
        if self.status.is_none() && self.workflow.is_none() {
            self.limit as usize + 1
        } else {
            MAX_EXAMINED + 1
        }
    }

    /// The page from the runs after the cursor, newest first, as the index
    /// gave them (at most [`Self::to_examine`]); `None` for a run the index
    /// still names but that is gone.
    pub fn page(
        &self,
        candidates: impl IntoIterator<Item = (String, Option<RunSummary>)>,
    ) -> RunsPage {
        let limit = self.limit as usize;
        let examined_at_most = self.to_examine() - 1;
        let mut runs = Vec::new();
        let mut last = None;
        let mut more = false;
        for (examined, (id, summary)) in candidates.into_iter().enumerate() {
            if runs.len() == limit || examined == examined_at_most {
                more = true;
                break;
            }
            if let Some(summary) = summary.filter(|s| self.shows(s)) {
                runs.push(summary);
            }
            last = Some(id);
        }
        RunsPage {
            runs,
            next_cursor: if more { last } else { None },
        }
    }
}

/// Whether `cursor` could be one a listing gave: a run id.
pub fn is_cursor(cursor: &str) -> bool {
    cursor.strip_prefix("run_").is_some_and(|hex| {
        !hex.is_empty() && hex.len() <= 64 && hex.bytes().all(|b| b.is_ascii_hexdigit())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(id: &str, status: RunStatus) -> (String, Option<RunSummary>) {
        (
            id.to_string(),
            Some(RunSummary {
                id: id.to_string(),
                status,
                workflow: "w".into(),
                created_at: String::new(),
                finished_at: None,
                parent: None,
            }),
        )
    }

    #[test]
    fn a_full_page_points_at_its_last_run_and_the_last_page_at_nothing() {
        let query = RunQuery {
            limit: 2,
            ..RunQuery::default()
        };
        let ids = ["run_3", "run_2", "run_1"];
        let all: Vec<_> = ids.iter().map(|i| run(i, RunStatus::Running)).collect();
        let page = query.page(all.clone());
        assert_eq!(page.runs.len(), 2);
        assert_eq!(page.next_cursor.as_deref(), Some("run_2"));
        let page = query.page(all[..2].to_vec());
        assert_eq!(page.next_cursor, None, "no run after the page");
    }

    #[test]
    fn a_filter_leaves_runs_out_and_gone_runs_are_passed_over() {
        let query = RunQuery {
            status: Some(RunStatus::Failed),
            limit: 10,
            ..RunQuery::default()
        };
        let page = query.page(vec![
            run("run_4", RunStatus::Failed),
            ("run_3".into(), None),
            run("run_2", RunStatus::Succeeded),
            run("run_1", RunStatus::Failed),
        ]);
        let ids: Vec<_> = page.runs.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["run_4", "run_1"]);
        assert_eq!(page.next_cursor, None);
    }

    #[test]
    fn a_filtered_page_stops_after_examining_its_budget() {
        let query = RunQuery {
            status: Some(RunStatus::Failed),
            limit: 10,
            ..RunQuery::default()
        };
        let many = (0..MAX_EXAMINED + 1)
            .map(|i| run(&format!("run_{:08x}", 99_999 - i), RunStatus::Running));
        let page = query.page(many);
        assert!(page.runs.is_empty());
        assert_eq!(
            page.next_cursor,
            Some(format!("run_{:08x}", 99_999 - (MAX_EXAMINED - 1))),
            "the next page goes on after the last run looked at"
        );
    }

    #[test]
    fn cursors_are_run_ids() {
        assert!(is_cursor("run_0190a1b2c3d4e5f6a7b8c9d0"));
        for bad in [
            "",
            "run_",
            "run_xyz",
            "1",
            "run_12 ",
            &format!("run_{}", "a".repeat(65)),
        ] {
            assert!(!is_cursor(bad), "{bad:?}");
        }
    }
}
