//! `GET /v1/runs` against every store: pages newest first, filters, tenants
//! kept apart, runs that expired left out, and the index read back after a
//! restart.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::{Backend, Harness, Kind, T0, spec};
use crate::backend::NewRun;
use crate::backend::listing::{RunQuery, RunsPage};
use crate::scheduler::model::{RunStatus, TemplateRef};

/// Run `i` of tenant `tenant`: of workflow `even` or `odd`, created at `T0 + i`.
fn run(i: u32, tenant: &str) -> NewRun {
    let name = if i.is_multiple_of(2) { "even" } else { "odd" };
    let mut s = spec(json!({ "name": name, "steps": [ { "id": "a", "component": "x@1" } ] }));
    s.id = format!("run_{:04x}{tenant}", i);
    s.tenant = tenant.into();
    s.created_at = T0 + u64::from(i);
    if i == 7 {
        s.template = Some(TemplateRef {
            name: "seven".into(),
            version: "1.0.0".into(),
        });
        s.parent = Some("run_0001t".into());
    }
    NewRun::new(s)
}

async fn page(b: &dyn Backend, tenant: &str, query: RunQuery) -> RunsPage {
    b.list_runs(tenant, &query).await.unwrap()
}

fn ids(page: &RunsPage) -> Vec<String> {
    page.runs.iter().map(|r| r.id.clone()).collect()
}

/// Every page of a listing, following its cursors.
async fn all_pages(b: &dyn Backend, tenant: &str, mut query: RunQuery) -> Vec<String> {
    let mut seen = Vec::new();
    loop {
        let page = page(b, tenant, query.clone()).await;
        assert!(page.runs.len() <= query.limit as usize);
        seen.extend(ids(&page));
        match page.next_cursor {
            Some(cursor) => query.after = Some(cursor),
            None => return seen,
        }
    }
}

pub(super) async fn a_listing_pages_newest_first_filters_and_keeps_tenants_apart(kind: Kind) {
    let mut h = Harness::new(kind).await;
    for i in 0..25 {
        h.backend.create_run(run(i, "t")).await.unwrap();
    }
    for i in 0..3 {
        h.backend.create_run(run(i, "u")).await.unwrap();
    }
    for i in [3, 4, 10] {
        h.backend
            .cancel("t", &format!("run_{i:04x}t"), T0 + 100)
            .await
            .unwrap();
    }
    let newest_first: Vec<String> = (0..25).rev().map(|i| format!("run_{i:04x}t")).collect();
    for round in 0..2 {
        let b = &*h.backend;
        let query = |limit| RunQuery {
            limit,
            ..RunQuery::default()
        };
        let first = page(b, "t", query(10)).await;
        assert_eq!(ids(&first), newest_first[..10], "round {round}");
        assert_eq!(first.next_cursor.as_deref(), Some(newest_first[9].as_str()));
        assert_eq!(all_pages(b, "t", query(10)).await, newest_first);
        assert_eq!(all_pages(b, "t", query(500)).await, newest_first);

        let cancelled = RunQuery {
            status: Some(RunStatus::Cancelled),
            ..query(2)
        };
        assert_eq!(
            all_pages(b, "t", cancelled).await,
            ["run_000at", "run_0004t", "run_0003t"]
        );
        let odd = RunQuery {
            workflow: Some("odd".into()),
            ..query(50)
        };
        let odd_ids: Vec<String> = (1..25)
            .rev()
            .filter(|i| i % 2 == 1 && *i != 7)
            .map(|i| format!("run_{i:04x}t"))
            .collect();
        assert_eq!(all_pages(b, "t", odd).await, odd_ids);

        // A run from a template lists under the template's name, with its parent.
        let seven = RunQuery {
            workflow: Some("seven".into()),
            ..query(50)
        };
        let listed = page(b, "t", seven).await;
        assert_eq!(ids(&listed), ["run_0007t"]);
        assert_eq!(listed.runs[0].parent.as_deref(), Some("run_0001t"));
        assert_eq!(listed.runs[0].status, RunStatus::Queued);
        assert!(listed.runs[0].finished_at.is_none());
        let cancelled = page(
            b,
            "t",
            RunQuery {
                status: Some(RunStatus::Cancelled),
                ..query(1)
            },
        )
        .await;
        assert!(cancelled.runs[0].finished_at.is_some());
        assert_eq!(cancelled.runs[0].workflow, "even");

        // Tenants see only their own runs.
        assert_eq!(
            all_pages(b, "u", query(2)).await,
            ["run_0002u", "run_0001u", "run_0000u"]
        );
        assert!(page(b, "nobody", query(10)).await.runs.is_empty());
        if let Kind::Memory = kind {
            break;
        }
        h.reopen().await;
    }
}

/// Pages of `MAX_LIMIT` runs, more than one read of the index each, still
/// say where the next one starts.
pub(super) async fn full_pages_of_the_largest_limit_follow_on(kind: Kind) {
    let h = Harness::new(kind).await;
    let b = &*h.backend;
    let count = 2 * crate::backend::listing::MAX_LIMIT + 1;
    for i in 0..count {
        b.create_run(run(i, "t")).await.unwrap();
    }
    let newest_first: Vec<String> = (0..count).rev().map(|i| format!("run_{i:04x}t")).collect();
    let query = RunQuery {
        limit: crate::backend::listing::MAX_LIMIT,
        ..RunQuery::default()
    };
    let first = page(b, "t", query.clone()).await;
    assert_eq!(first.runs.len(), query.limit as usize);
    assert_eq!(
        first.next_cursor.as_deref(),
        Some(newest_first[query.limit as usize - 1].as_str())
    );
    assert_eq!(all_pages(b, "t", query).await, newest_first);
}

pub(super) async fn an_expired_run_leaves_the_listing(kind: Kind) {
    let h = Harness::new(kind).await;
    let b = &*h.backend;
    let mut short = run(1, "t");
    Arc::get_mut(&mut short.spec).unwrap().defaults.retention_ms = 300;
    b.create_run(short).await.unwrap();
    b.create_run(run(2, "t")).await.unwrap();
    b.cancel("t", "run_0001t", T0).await.unwrap();
    // The manual clock for the embedded backend, real time for Redis's expiry.
    h.clock.advance(Duration::from_secs(1));
    tokio::time::sleep(Duration::from_millis(600)).await;
    // A run ending is when the embedded backend expires others.
    b.create_run(run(3, "t")).await.unwrap();
    b.cancel("t", "run_0003t", T0 + 1_000).await.unwrap();
    let query = RunQuery {
        limit: 10,
        ..RunQuery::default()
    };
    assert_eq!(ids(&page(b, "t", query).await), ["run_0003t", "run_0002t"]);
}
