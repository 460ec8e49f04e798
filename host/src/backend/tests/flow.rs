//! Flow control against every store (`scheduler::flow`): tenants share the
//! workers by weight, a tenant's higher-priority runs go first, a tenant at
//! its `concurrent_steps` waits while others go on, and a step waits in its
//! queue for a node that serves it.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::{Backend, Harness, Kind, T0, spec};
use crate::backend::{Cancelled, Claim, Delivery, Limits, NewRun, RateLimit, TenantRecord};
use crate::scheduler::model::{RunStatus, TaskKind};

async fn tenant(b: &dyn Backend, name: &str, limits: Limits) {
    let record = TenantRecord {
        name: name.into(),
        key_hashes: vec![format!("hash-of-{name}")],
        limits,
        created_at: T0,
    };
    assert!(b.create_tenant(record).await.unwrap());
}

/// `n` one-step runs of `tenant` at `priority`, ids `<prefix>_<k>`.
async fn runs(b: &dyn Backend, tenant: &str, prefix: &str, n: usize, priority: u8) {
    for k in 0..n {
        let mut s = spec(json!({ "steps": [ { "id": "a", "component": "x@1" } ] }));
        s.id = format!("{prefix}_{k:03}");
        s.tenant = tenant.into();
        s.priority = priority;
        b.create_run(NewRun::new(s)).await.unwrap();
    }
}

/// The next `max` deliveries at most, or none if nothing comes within 300 ms.
async fn take(b: &dyn Backend, max: usize) -> Vec<Delivery> {
    tokio::time::timeout(Duration::from_millis(300), b.next(max))
        .await
        .map(|d| d.unwrap())
        .unwrap_or_default()
}

/// Every delivery until none comes for 300 ms.
async fn drain(b: &dyn Backend) -> Vec<Delivery> {
    let mut got = Vec::new();
    loop {
        let more = take(b, 10).await;
        if more.is_empty() {
            return got;
        }
        got.extend(more);
    }
}

/// The runs of every delivery until none comes for 300 ms.
async fn drained_runs(b: &dyn Backend) -> Vec<String> {
    drain(b)
        .await
        .into_iter()
        .map(|d| d.task.run.to_string())
        .collect()
}

/// Claims and acknowledges a delivery, as a worker whose attempt ended.
async fn finish(b: &dyn Backend, d: Delivery) {
    assert!(matches!(b.claim(&d, T0).await.unwrap(), Claim::Step(_)));
    b.ack(&[d]).await.unwrap();
}

pub(super) async fn weights_share_the_workers_between_saturating_tenants(kind: Kind) {
    let h = Harness::new(kind).await;
    let b = &*h.backend;
    let heavy = Limits {
        weight: 3,
        ..Limits::default()
    };
    tenant(b, "heavy", heavy).await;
    tenant(b, "light", Limits::default()).await;
    runs(b, "heavy", "run_h", 40, 5).await;
    runs(b, "light", "run_l", 40, 5).await;
    let mut heavy_taken = 0;
    for _ in 0..40 {
        let d = take(b, 1).await.pop().expect("both tenants have work");
        if d.task.run.starts_with("run_h") {
            heavy_taken += 1;
        }
        finish(b, d).await;
    }
    assert!(
        (29..=31).contains(&heavy_taken),
        "weight 3 against 1 took {heavy_taken} of 40"
    );
}

pub(super) async fn a_newcomer_waits_behind_no_backlog(kind: Kind) {
    let h = Harness::new(kind).await;
    let b = &*h.backend;
    tenant(b, "big", Limits::default()).await;
    tenant(b, "small", Limits::default()).await;
    runs(b, "big", "run_b", 200, 5).await;
    for d in take(b, 10).await {
        finish(b, d).await;
    }
    // The small tenant's one run arrives behind 190 ready tasks of the big one.
    runs(b, "small", "run_s", 1, 5).await;
    let next = take(b, 2).await;
    assert!(
        next.iter().any(|d| d.task.run.starts_with("run_s")),
        "the newcomer waited: {:?}",
        next.iter().map(|d| &d.task.run).collect::<Vec<_>>()
    );
}

pub(super) async fn higher_priority_runs_go_first_within_a_tenant(kind: Kind) {
    let h = Harness::new(kind).await;
    let b = &*h.backend;
    runs(b, "t", "run_low", 2, 1).await;
    runs(b, "t", "run_high", 2, 9).await;
    runs(b, "t", "run_mid", 2, 5).await;
    let mut order = Vec::new();
    while order.len() < 6 {
        let got = take(b, 6 - order.len()).await;
        assert!(!got.is_empty(), "six tasks are ready");
        order.extend(got.iter().map(|d| d.task.run.to_string()));
    }
    assert_eq!(
        order,
        [
            "run_high_000",
            "run_high_001",
            "run_mid_000",
            "run_mid_001",
            "run_low_000",
            "run_low_001"
        ]
    );
}

pub(super) async fn a_tenant_at_its_concurrent_steps_waits_and_others_go_on(kind: Kind) {
    let h = Harness::new(kind).await;
    let b = &*h.backend;
    let capped = Limits {
        concurrent_steps: 2,
        ..Limits::default()
    };
    tenant(b, "capped", capped).await;
    tenant(b, "free", Limits::default()).await;
    runs(b, "capped", "run_c", 5, 5).await;
    runs(b, "free", "run_f", 3, 5).await;
    let mut held = drain(b).await;
    let of = |held: &[Delivery], p: &str| held.iter().filter(|d| d.task.run.starts_with(p)).count();
    assert_eq!(of(&held, "run_c"), 2, "the capped tenant runs two at most");
    assert_eq!(of(&held, "run_f"), 3, "the other tenant is not held back");
    // One of the capped tenant's attempts ends: one more of its steps goes.
    let at = held
        .iter()
        .position(|d| d.task.run.starts_with("run_c"))
        .unwrap();
    finish(b, held.remove(at)).await;
    let next = take(b, 10).await;
    assert_eq!(next.len(), 1);
    assert!(next[0].task.run.starts_with("run_c"));
    assert!(take(b, 10).await.is_empty(), "still two at most");
}

pub(super) async fn a_step_waits_in_its_queue_for_a_node_that_serves_it(kind: Kind) {
    let mut h = Harness::new(kind).await;
    assert!(h.backend.declare_queue("gpu").await.unwrap());
    assert!(!h.backend.declare_queue("gpu").await.unwrap());
    assert!(!h.backend.declare_queue("default").await.unwrap());
    let mut s = spec(json!({ "steps": [
        { "id": "train", "component": "x@1", "queue": "gpu" },
        { "id": "plain", "component": "x@1" }
    ] }));
    s.id = "run_1".into();
    h.backend.create_run(NewRun::new(s)).await.unwrap();
    // A node of the default queue takes the plain step only.
    let got = take(&*h.backend, 10).await;
    assert_eq!(got.len(), 1);
    assert_eq!(
        got[0].task.kind,
        TaskKind::Step {
            index: 1,
            attempt: 1
        }
    );
    let queues = h.backend.queues().await.unwrap();
    let names: Vec<&str> = queues.iter().map(|q| q.name.as_str()).collect();
    assert_eq!(names, ["default", "gpu"]);
    assert_eq!((queues[0].depth, queues[1].depth), (0, 1));
    h.backend.ack(&got).await.unwrap();
    // The declaration outlives the process.
    let b: Arc<dyn Backend> = match kind {
        Kind::Memory => h.backend.clone(),
        _ => h.reopen().await,
    };
    assert_eq!(b.queues().await.unwrap().len(), 2);
    b.serve_queues(&["gpu".to_string()]);
    let got = take(&*b, 10).await;
    assert_eq!(got.len(), 1, "a node of the gpu queue takes the gpu step");
    assert_eq!(
        got[0].task.kind,
        TaskKind::Step {
            index: 0,
            attempt: 1
        }
    );
}

pub(super) async fn a_scheduled_run_starts_at_its_time_also_after_a_reopen(kind: Kind) {
    let mut h = Harness::new(kind).await;
    let later = |id: &str, at: u64| {
        let mut s = spec(json!({ "steps": [ { "id": "a", "component": "x@1" } ] }));
        s.id = id.into();
        s.start_at = Some(at);
        NewRun::new(s)
    };
    h.backend
        .create_run(later("run_1", T0 + 3_000))
        .await
        .unwrap();
    let status = |b: Arc<dyn Backend>, id: &'static str| async move {
        b.run("t", id).await.unwrap().unwrap().status
    };
    assert_eq!(
        status(h.backend.clone(), "run_1").await,
        RunStatus::Scheduled
    );
    // Its time outlives the process.
    let b: Arc<dyn Backend> = match kind {
        Kind::Memory => h.backend.clone(),
        _ => h.reopen().await,
    };
    assert_eq!(status(b.clone(), "run_1").await, RunStatus::Scheduled);
    let d = super::delivered_once_due(&h, b.clone(), 3_000)
        .await
        .pop()
        .unwrap();
    assert!(matches!(
        b.claim(&d, T0 + 3_000).await.unwrap(),
        Claim::Step(_)
    ));
    b.ack(&[d]).await.unwrap();
    assert_eq!(status(b.clone(), "run_1").await, RunStatus::Running);

    // Cancelled while scheduled: it ends, and its step never runs.
    b.create_run(later("run_2", T0 + 8_000)).await.unwrap();
    let cancelled = b.cancel("t", "run_2", T0 + 3_000).await.unwrap();
    assert!(matches!(
        cancelled,
        Some(Cancelled::Now {
            status: RunStatus::Cancelled,
            ..
        })
    ));
    h.clock.advance(Duration::from_secs(5));
    if let Some(d) = take(&*b, 1).await.pop() {
        assert!(matches!(
            b.claim(&d, T0 + 8_000).await.unwrap(),
            Claim::Stale
        ));
    }
    assert_eq!(status(b, "run_2").await, RunStatus::Cancelled);
}

pub(super) async fn rate_limited_steps_start_within_their_limit(kind: Kind) {
    let h = Harness::new(kind).await;
    let b = &*h.backend;
    let limit = RateLimit {
        name: "api".into(),
        per_second: 2.0,
        burst: 2,
    };
    assert!(b.put_rate_limit("t", limit.clone()).await.unwrap());
    assert!(!b.put_rate_limit("t", limit.clone()).await.unwrap());
    assert_eq!(b.rate_limits("t").await.unwrap(), vec![limit]);
    assert!(b.rate_limits("u").await.unwrap().is_empty());
    for k in 0..5 {
        let mut s =
            spec(json!({ "steps": [ { "id": "a", "component": "x@1", "rate_limit": "api" } ] }));
        s.id = format!("run_r{k}");
        b.create_run(NewRun::new(s)).await.unwrap();
    }
    runs(b, "t", "run_free", 1, 5).await;
    // At once: the burst of two, and the step without a limit.
    let mut first = drained_runs(b).await;
    first.sort();
    assert_eq!(first, ["run_free_000", "run_r0", "run_r1"]);
    // One more each half second of the clock, in order.
    h.clock.advance(Duration::from_millis(499));
    assert!(drained_runs(b).await.is_empty(), "a start before its token");
    h.clock.advance(Duration::from_millis(1));
    assert_eq!(drained_runs(b).await, ["run_r2"]);
    h.clock.advance(Duration::from_millis(500));
    assert_eq!(drained_runs(b).await, ["run_r3"]);
    // Deleting the limit lets the rest go.
    assert!(b.delete_rate_limit("t", "api").await.unwrap());
    assert!(!b.delete_rate_limit("t", "api").await.unwrap());
    assert_eq!(drained_runs(b).await, ["run_r4"]);
}

pub(super) async fn a_concurrency_key_is_held_by_at_most_its_limit(kind: Kind) {
    let h = Harness::new(kind).await;
    let b = &*h.backend;
    for (k, customer) in ["acme", "acme", "acme", "globex"].iter().enumerate() {
        let mut s = spec(json!({ "steps": [ { "id": "a", "component": "x@1",
            "concurrency": { "key": "${input.customer}", "limit": 2 } } ] }));
        s.id = format!("run_{k}_{customer}");
        s.input = json!({ "customer": customer });
        b.create_run(NewRun::new(s)).await.unwrap();
    }
    // Two of acme's three, and globex's: other keys are not held back.
    let first = drain(b).await;
    let mut runs: Vec<&str> = first.iter().map(|d| &*d.task.run).collect();
    runs.sort();
    assert_eq!(runs, ["run_0_acme", "run_1_acme", "run_3_globex"]);
    // An attempt holding acme ends: the third takes its place.
    let at = first
        .iter()
        .position(|d| &*d.task.run == "run_0_acme")
        .unwrap();
    let mut first = first;
    finish(b, first.remove(at)).await;
    let next = drain(b).await;
    assert_eq!(next.len(), 1);
    assert_eq!(&*next[0].task.run, "run_2_acme");
}

/// A schedule as the API would create it, due at `next`.
fn schedule(name: &str, next: u64) -> crate::backend::Schedule {
    crate::backend::Schedule {
        name: name.into(),
        cron: "* * * * * *".into(),
        timezone: "UTC".into(),
        workflow: "report@^1".into(),
        input: json!({"day": 1}),
        overlap: Default::default(),
        catch_up: Default::default(),
        paused: false,
        created_at: T0,
        after: T0,
        next_tick: Some(next),
        last_tick: None,
        last_run: None,
        last_error: None,
        version: 1,
    }
}

pub(super) async fn a_schedule_changes_only_over_the_version_it_was_read_at(kind: Kind) {
    let mut h = Harness::new(kind).await;
    let b = h.backend.clone();
    assert!(
        b.create_schedule("t", schedule("b", T0 + 2_000))
            .await
            .unwrap()
    );
    assert!(
        b.create_schedule("t", schedule("a", T0 + 1_000))
            .await
            .unwrap()
    );
    // A name is taken once per tenant; another tenant has its own.
    assert!(!b.create_schedule("t", schedule("a", T0)).await.unwrap());
    assert!(
        b.create_schedule("u", schedule("a", T0 + 5_000))
            .await
            .unwrap()
    );
    let names =
        |list: Vec<crate::backend::Schedule>| list.into_iter().map(|s| s.name).collect::<Vec<_>>();
    assert_eq!(names(b.schedules("t").await.unwrap()), ["a", "b"]);

    // Due: the most overdue first, across tenants, at most `max`.
    let due = |b: Arc<dyn Backend>, at: u64, max: usize| async move {
        b.due_schedules(at, max)
            .await
            .unwrap()
            .into_iter()
            .map(|(t, s)| format!("{t}/{}", s.name))
            .collect::<Vec<_>>()
    };
    assert!(due(b.clone(), T0 + 999, 10).await.is_empty());
    assert_eq!(due(b.clone(), T0 + 2_000, 10).await, ["t/a", "t/b"]);
    assert_eq!(due(b.clone(), T0 + 9_000, 2).await, ["t/a", "t/b"]);
    assert_eq!(due(b.clone(), T0 + 9_000, 10).await, ["t/a", "t/b", "u/a"]);

    // Two nodes fired the same tick from version 1: one record stands.
    let mut first = schedule("a", T0 + 3_000);
    first.version = 2;
    first.last_run = Some("run_first".into());
    let mut second = first.clone();
    second.last_run = Some("run_second".into());
    assert!(b.update_schedule("t", first).await.unwrap());
    assert!(!b.update_schedule("t", second).await.unwrap());
    let stored = b.schedule("t", "a").await.unwrap().unwrap();
    assert_eq!(
        (stored.version, stored.last_run.as_deref()),
        (2, Some("run_first"))
    );
    assert_eq!(due(b.clone(), T0 + 2_500, 10).await, ["t/b"]);

    // Paused: no longer due; and it outlives the process.
    let mut paused = stored;
    paused.version = 3;
    paused.paused = true;
    paused.next_tick = None;
    assert!(b.update_schedule("t", paused).await.unwrap());
    let b: Arc<dyn Backend> = match kind {
        Kind::Memory => b,
        _ => {
            drop(b);
            h.reopen().await
        }
    };
    assert_eq!(due(b.clone(), T0 + 9_000, 10).await, ["t/b", "u/a"]);
    let kept = b.schedule("t", "a").await.unwrap().unwrap();
    assert!(kept.paused && kept.version == 3, "{kept:?}");
    assert_eq!(kept.input, json!({"day": 1}));

    // Deleted: gone, not due, and an update over it stores nothing.
    assert!(b.delete_schedule("t", "b").await.unwrap());
    assert!(!b.delete_schedule("t", "b").await.unwrap());
    let mut late = schedule("b", T0);
    late.version = 2;
    assert!(!b.update_schedule("t", late).await.unwrap());
    assert!(b.schedule("t", "b").await.unwrap().is_none());
    assert_eq!(due(b.clone(), T0 + 9_000, 10).await, ["u/a"]);
}
