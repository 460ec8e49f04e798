//! The transitions every backend must make the same way, driven by hand with
//! a manual clock: on the in-memory backend, on the embedded backend over its
//! file store, and on a real `redis-server`.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::memory::{Fsync, MemoryBackend, Retention};
use super::redis::{RedisBackend, RedisConfig};
use super::{
    Admission, Cancelled, Claim, Delivery, Idempotency, Limits, NewRun, Outcome, StateStore,
    StepWork, TenantRecord, WorkQueue,
};
use crate::engine::Failure;
use crate::scheduler::clock::ManualClock;
use crate::scheduler::model::{RunSpec, RunStatus, StepDefaults, StepStatus, Target, TaskKind};
use crate::testing::RedisServer;
use crate::workflow;

const T0: u64 = 1_700_000_000_000;

/// Both traits, so a test can hold either backend.
pub trait Backend: StateStore + WorkQueue {}
impl<T: StateStore + WorkQueue> Backend for T {}

#[derive(Clone, Copy, Debug)]
pub enum Kind {
    /// In memory only, as `weft exec` uses it.
    Memory,
    /// The embedded backend over a data directory, as `weft serve` uses it.
    File,
    Redis,
}

struct Harness {
    kind: Kind,
    backend: Arc<dyn Backend>,
    clock: Arc<ManualClock>,
    dir: tempfile::TempDir,
    redis: Option<RedisServer>,
    upkeep: CancellationToken,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.upkeep.cancel();
    }
}

impl Harness {
    async fn new(kind: Kind) -> Self {
        let clock = Arc::new(ManualClock::new(T0));
        let dir = tempfile::tempdir().unwrap();
        let redis = match kind {
            Kind::Memory | Kind::File => None,
            Kind::Redis => Some(RedisServer::start()),
        };
        let mut h = Self {
            kind,
            backend: MemoryBackend::new(clock.clone(), None, Retention::default()),
            clock,
            dir,
            redis,
            upkeep: CancellationToken::new(),
        };
        h.backend = h.open().await;
        h
    }

    async fn open(&self) -> Arc<dyn Backend> {
        match (self.kind, &self.redis) {
            (Kind::Memory, _) => MemoryBackend::new(self.clock.clone(), None, Retention::default()),
            (Kind::File, _) => MemoryBackend::open(
                self.clock.clone(),
                self.dir.path(),
                Retention::default(),
                Fsync::Normal,
            )
            .unwrap(),
            (Kind::Redis, None) => unreachable!("a Redis harness has a server"),
            (Kind::Redis, Some(server)) => {
                let mut config = RedisConfig::new(server.url());
                config.visibility = Duration::from_millis(500);
                let backend = RedisBackend::connect(config, self.clock.clone())
                    .await
                    .unwrap();
                backend.start_upkeep(self.upkeep.clone());
                backend
            }
        }
    }

    /// The same store opened again, as by another process or a restart. The
    /// embedded backend is closed first, as a process that ended; nothing it
    /// did not store yet is written on the way out.
    async fn reopen(&mut self) -> Arc<dyn Backend> {
        if let Kind::File = self.kind {
            let closed = std::mem::replace(
                &mut self.backend,
                MemoryBackend::new(self.clock.clone(), None, Retention::default()),
            );
            let weak = Arc::downgrade(&closed);
            drop(closed);
            let closed = weak;
            // The store's writer thread may hold it a moment longer.
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            while closed.strong_count() > 0 {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the backend is still held"
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        // The old Redis node stops renewing what it holds.
        self.upkeep.cancel();
        self.upkeep = CancellationToken::new();
        self.backend = self.open().await;
        self.backend.clone()
    }
}

fn spec(doc: Value) -> RunSpec {
    let resolver = |_: &str, _: &semver::VersionReq| Ok::<_, String>("sha256:00".to_string());
    let validated = workflow::validate(&doc, &resolver).expect("valid workflow");
    RunSpec {
        id: "run_1".into(),
        tenant: "t".into(),
        document: doc,
        pins: validated.pins,
        workflow: validated.workflow,
        input: json!({}),
        defaults: StepDefaults::default(),
        created_at: T0,
        template: None,
        parent: None,
        parent_step: None,
        children: Default::default(),
        priority: crate::scheduler::flow::DEFAULT_PRIORITY,
        start_at: None,
        schedule: None,
        trace: None,
    }
}

async fn claim_next(b: &dyn Backend) -> StepWork {
    let (work, d) = claim_delivered(b).await;
    b.ack(&[d]).await.unwrap();
    work
}

/// Waits for the next delivery of `b` while `h`'s clock is moved on: not
/// one millisecond before `ms` from now, and at once when it is due.
async fn delivered_once_due(h: &Harness, b: Arc<dyn Backend>, ms: u64) -> Vec<Delivery> {
    let waiting = tokio::spawn(async move { b.next(1).await.unwrap() });
    h.clock.advance(Duration::from_millis(ms - 1));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "delivered before its due time");
    h.clock.advance(Duration::from_millis(1));
    tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("delivered once due")
        .unwrap()
}

/// Claims the next task and never acknowledges it, as a process that stops
/// while the attempt runs.
async fn claim_unacked(b: &dyn Backend) -> StepWork {
    claim_delivered(b).await.0
}

/// Claims the next task, which must be an attempt, with its delivery.
async fn claim_delivered(b: &dyn Backend) -> (StepWork, Delivery) {
    let d = tokio::time::timeout(Duration::from_secs(5), b.next(1))
        .await
        .expect("a task is ready")
        .unwrap()
        .pop()
        .unwrap();
    match b.claim(&d, T0).await.unwrap() {
        Claim::Step(w) => (w, d),
        _ => panic!("expected an attempt for {:?}", d.task),
    }
}

/// The next task that is current, dropping stale ones as a worker does (a
/// node taking over another's work may be handed a task twice).
async fn claim_next_current(b: &dyn Backend) -> StepWork {
    loop {
        let d = tokio::time::timeout(Duration::from_secs(5), b.next(1))
            .await
            .expect("a task is ready")
            .unwrap()
            .pop()
            .unwrap();
        let claim = b.claim(&d, T0).await.unwrap();
        b.ack(&[d]).await.unwrap();
        match claim {
            Claim::Step(w) => return w,
            Claim::Stale => continue,
            Claim::Finalize { .. } => panic!("expected a step"),
        }
    }
}

fn ok(v: Value) -> Outcome {
    Outcome::Succeeded {
        output: v,
        logs: vec![],
    }
}

async fn status(b: &dyn Backend, step: &str) -> StepStatus {
    b.run("t", "run_1").await.unwrap().unwrap().steps[step].status
}

/// Runs each test on every backend.
macro_rules! on_every_backend {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn memory() {
                    super::$name(super::Kind::Memory).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn file() {
                    super::$name(super::Kind::File).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn redis() {
                    super::$name(super::Kind::Redis).await
                }
            }
        )*
    };
}

/// Runs each test on the backends that outlive a process: the file store and Redis.
macro_rules! on_durable_backends {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn file() {
                    super::$name(super::Kind::File).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn redis() {
                    super::$name(super::Kind::Redis).await
                }
            }
        )*
    };
}

mod flow;
mod language;
mod listing;
mod waits;
use flow::*;
use language::*;
use listing::*;
use waits::*;

on_every_backend!(
    a_wait_holds_no_attempt_and_its_wake_up_ends_it,
    cancelling_ends_a_waiting_step,
    signals_are_kept_taken_once_in_order_and_refused_past_their_limits,
    a_child_run_is_not_counted_and_its_end_wakes_its_parents_step,
);

on_every_backend!(
    weights_share_the_workers_between_saturating_tenants,
    a_newcomer_waits_behind_no_backlog,
    higher_priority_runs_go_first_within_a_tenant,
    a_tenant_at_its_concurrent_steps_waits_and_others_go_on,
    a_step_waits_in_its_queue_for_a_node_that_serves_it,
    a_scheduled_run_starts_at_its_time_also_after_a_reopen,
    rate_limited_steps_start_within_their_limit,
    a_concurrency_key_is_held_by_at_most_its_limit,
    a_schedule_changes_only_over_the_version_it_was_read_at,
);

on_every_backend!(
    a_listing_pages_newest_first_filters_and_keeps_tenants_apart,
    an_expired_run_leaves_the_listing,
    full_pages_of_the_largest_limit_follow_on,
);

on_every_backend!(
    a_skip_ends_the_step_and_its_dependents_see_it_at_their_claim,
    a_continued_failure_satisfies_its_dependents,
    a_list_keeps_its_window_full_and_ends_with_outputs_in_item_order,
    a_failed_item_fails_the_step_and_stops_the_others,
    an_empty_or_too_long_list,
    compensations_run_one_at_a_time_in_reverse_order_of_completion,
    a_cancel_compensates_and_ends_cancelled,
);

on_durable_backends!(
    a_compensation_goes_on_after_a_reopen,
    a_list_goes_on_after_a_reopen
);

on_every_backend!(
    a_join_is_ready_only_when_every_dependency_succeeded,
    a_retry_waits_for_the_clock_not_for_real_time,
    a_superseded_attempt_cannot_commit,
    a_failure_skips_waiting_steps_and_cancels_running_ones,
    runs_are_invisible_to_other_tenants,
    admission_honours_idempotency_keys_and_the_active_run_limit,
    a_commit_past_run_bytes_fails_the_step_run_too_large,
    an_attempt_delivered_too_often_is_marked_over_delivered,
    a_finished_run_and_its_idempotency_key_live_for_its_own_retention,
);

async fn a_finished_run_and_its_idempotency_key_live_for_its_own_retention(kind: Kind) {
    let h = Harness::new(kind).await;
    let b = &*h.backend;
    let run = |id: &str, tenant: &str, retention_ms: u64| {
        let mut new = one_step(id, Some(("k", "f")), 10);
        let spec = Arc::get_mut(&mut new.spec).unwrap();
        spec.tenant = tenant.into();
        spec.defaults.retention_ms = retention_ms;
        new
    };
    // Tenant t keeps its runs for 300 ms, tenant u for an hour.
    assert_eq!(
        b.create_run(run("run_short", "t", 300)).await.unwrap(),
        Admission::Created
    );
    assert_eq!(
        b.create_run(run("run_long", "u", 3_600_000)).await.unwrap(),
        Admission::Created
    );
    b.cancel("t", "run_short", T0).await.unwrap();
    b.cancel("u", "run_long", T0).await.unwrap();
    // The manual clock for the embedded backend, real time for Redis's expiry.
    h.clock.advance(Duration::from_secs(1));
    tokio::time::sleep(Duration::from_millis(600)).await;
    // A run of another tenant ending now is when the embedded backend expires.
    let mut tick = run("run_tick", "u", 3_600_000);
    tick.idempotency = None;
    assert_eq!(b.create_run(tick).await.unwrap(), Admission::Created);
    b.cancel("u", "run_tick", T0 + 1_000).await.unwrap();
    assert!(
        b.run("t", "run_short").await.unwrap().is_none(),
        "kept past its retention"
    );
    assert!(
        b.run("u", "run_long").await.unwrap().is_some(),
        "another tenant's run was dropped"
    );
    // The key went with its run: the same key makes a new run now.
    assert_eq!(
        b.create_run(run("run_again", "t", 300)).await.unwrap(),
        Admission::Created
    );
    assert!(matches!(
        b.create_run(run("run_dup", "u", 3_600_000)).await.unwrap(),
        Admission::Existing { .. }
    ));
}

async fn a_commit_past_run_bytes_fails_the_step_run_too_large(kind: Kind) {
    let h = Harness::new(kind).await;
    let b = &*h.backend;
    let mut s = spec(json!({ "steps": [
        { "id": "a", "component": "x@1" },
        { "id": "b", "component": "x@1" },
        { "id": "c", "component": "x@1" }
    ] }));
    // The input `{}` (2 bytes), "a"'s 42-byte output and the empty logs `[]`
    // fit; "b"'s would not.
    s.defaults.run_bytes = 2 + 42 + 2 + 30;
    b.create_run(NewRun::new(s)).await.unwrap();
    let a = claim_next(b).await;
    let bw = claim_next(b).await;
    let c = claim_next(b).await;
    let forty = json!("x".repeat(40));
    let first = b
        .commit(
            "run_1",
            Target::Step(a.index),
            a.lease,
            ok(forty.clone()),
            T0,
        )
        .await
        .unwrap();
    assert!(first.applied && first.run_ended.is_none());
    let second = b
        .commit("run_1", Target::Step(bw.index), bw.lease, ok(forty), T0)
        .await
        .unwrap();
    assert!(second.applied);
    assert_eq!(second.run_ended, Some(RunStatus::Failed));
    assert_eq!(second.cancelled, vec![c.index]);
    let run = b.run("t", "run_1").await.unwrap().unwrap();
    assert_eq!(run.steps["a"].status, StepStatus::Succeeded);
    assert_eq!(run.steps["b"].status, StepStatus::Failed);
    assert!(run.steps["b"].output.is_none());
    let error = run.steps["b"].error.clone().unwrap();
    assert_eq!(error.code, "run_too_large");
    assert!(!error.retryable);
    assert_eq!(run.error.unwrap().code, "run_too_large");
}

async fn an_attempt_delivered_too_often_is_marked_over_delivered(kind: Kind) {
    let h = Harness::new(kind).await;
    let b = &*h.backend;
    let mut s = spec(json!({ "steps": [ { "id": "a", "component": "x@1" } ] }));
    s.defaults.max_deliveries = 2;
    b.create_run(NewRun::new(s)).await.unwrap();
    let d = b.next(1).await.unwrap().pop().unwrap();
    // The same task delivered again and again, as when the nodes holding it die.
    let mut over = Vec::new();
    for _ in 0..3 {
        let Claim::Step(w) = b.claim(&d, T0).await.unwrap() else {
            panic!("expected a step")
        };
        over.push(w.over_delivered);
    }
    assert_eq!(over, vec![false, false, true]);
}

async fn a_join_is_ready_only_when_every_dependency_succeeded(kind: Kind) {
    let h = Harness::new(kind).await;
    let b = &*h.backend;
    b.create_run(NewRun::new(spec(json!({ "steps": [
        { "id": "a", "component": "x@1" },
        { "id": "b", "component": "x@1" },
        { "id": "join", "component": "x@1", "needs": ["a", "b"] }
    ] }))))
    .await
    .unwrap();
    let a = claim_next(b).await;
    let bw = claim_next(b).await;
    b.commit("run_1", Target::Step(a.index), a.lease, ok(json!(1)), T0)
        .await
        .unwrap();
    assert_eq!(status(b, "join").await, StepStatus::Pending);
    assert_eq!(b.depth().await.unwrap(), 0);
    b.commit("run_1", Target::Step(bw.index), bw.lease, ok(json!(2)), T0)
        .await
        .unwrap();
    assert_eq!(status(b, "join").await, StepStatus::Queued);
    let join = claim_next(b).await;
    assert_eq!(join.index, 2);
    b.commit(
        "run_1",
        Target::Step(join.index),
        join.lease,
        ok(json!(3)),
        T0,
    )
    .await
    .unwrap();
    // The last success enqueues finalisation, not another step.
    let d = b.next(1).await.unwrap().pop().unwrap();
    assert_eq!(d.task.kind, TaskKind::Finalize);
    assert!(matches!(
        b.claim(&d, T0).await.unwrap(),
        Claim::Finalize { .. }
    ));
    assert!(b.finish("run_1", Ok(json!("done")), T0).await.unwrap());
    let run = b.run("t", "run_1").await.unwrap().unwrap();
    assert_eq!(run.status, RunStatus::Succeeded);
    assert_eq!(run.output, json!("done"));
}

async fn a_retry_waits_for_the_clock_not_for_real_time(kind: Kind) {
    let h = Harness::new(kind).await;
    let b = &*h.backend;
    b.create_run(NewRun::new(spec(
        json!({ "steps": [ { "id": "a", "component": "x@1" } ] }),
    )))
    .await
    .unwrap();
    let a = claim_next(b).await;
    let retry = Outcome::Retry {
        failure: Failure::host("trap", "boom"),
        logs: vec![],
        due: T0 + 5_000,
    };
    let committed = b
        .commit("run_1", Target::Step(0), a.lease, retry, T0)
        .await
        .unwrap();
    assert!(committed.applied && committed.retrying);
    assert_eq!(status(b, "a").await, StepStatus::Queued);

    let got = delivered_once_due(&h, h.backend.clone(), 5_000).await;
    assert_eq!(
        got[0].task.kind,
        TaskKind::Step {
            index: 0,
            attempt: 2
        }
    );
}

async fn a_superseded_attempt_cannot_commit(kind: Kind) {
    let h = Harness::new(kind).await;
    let b = &*h.backend;
    b.create_run(NewRun::new(spec(
        json!({ "steps": [ { "id": "a", "component": "x@1" } ] }),
    )))
    .await
    .unwrap();
    let d = b.next(1).await.unwrap().pop().unwrap();
    let Claim::Step(first) = b.claim(&d, T0).await.unwrap() else {
        panic!()
    };
    // The same task delivered again (as after a node died) supersedes the first holder.
    let Claim::Step(second) = b.claim(&d, T0).await.unwrap() else {
        panic!()
    };
    assert!(second.lease > first.lease);
    assert!(
        !b.commit("run_1", Target::Step(0), first.lease, ok(json!("late")), T0)
            .await
            .unwrap()
            .applied
    );
    assert!(
        b.commit(
            "run_1",
            Target::Step(0),
            second.lease,
            ok(json!("mine")),
            T0
        )
        .await
        .unwrap()
        .applied
    );
    assert!(
        !b.commit(
            "run_1",
            Target::Step(0),
            second.lease,
            ok(json!("twice")),
            T0
        )
        .await
        .unwrap()
        .applied
    );
    let run = b.run("t", "run_1").await.unwrap().unwrap();
    assert_eq!(
        run.steps["a"].output.as_ref().map(|o| o.to_value()),
        Some(json!("mine"))
    );
    assert_eq!(run.steps["a"].attempts, 1);
}

async fn a_failure_skips_waiting_steps_and_cancels_running_ones(kind: Kind) {
    let h = Harness::new(kind).await;
    let b = &*h.backend;
    b.create_run(NewRun::new(spec(json!({ "steps": [
        { "id": "bad", "component": "x@1" },
        { "id": "busy", "component": "x@1" },
        { "id": "after", "component": "x@1", "needs": ["bad"] }
    ] }))))
    .await
    .unwrap();
    let bad = claim_next(b).await;
    let busy = claim_next(b).await;
    let failed = Outcome::Failed {
        failure: Failure::host("trap", "boom"),
        logs: vec![],
        continues: false,
    };
    let committed = b
        .commit("run_1", Target::Step(bad.index), bad.lease, failed, T0)
        .await
        .unwrap();
    assert_eq!(committed.cancelled, vec![busy.index]);
    assert_eq!(committed.run_ended, Some(RunStatus::Failed));
    assert_eq!(status(b, "after").await, StepStatus::Skipped);
    assert_eq!(status(b, "busy").await, StepStatus::Cancelled);
    // The cancelled step's late result changes nothing.
    assert!(
        !b.commit(
            "run_1",
            Target::Step(busy.index),
            busy.lease,
            ok(json!(1)),
            T0
        )
        .await
        .unwrap()
        .applied
    );
    let run = b.run("t", "run_1").await.unwrap().unwrap();
    assert_eq!(run.error.unwrap().step.as_deref(), Some("bad"));
}

async fn runs_are_invisible_to_other_tenants(kind: Kind) {
    let h = Harness::new(kind).await;
    let b = &*h.backend;
    b.create_run(NewRun::new(spec(
        json!({ "steps": [ { "id": "a", "component": "x@1" } ] }),
    )))
    .await
    .unwrap();
    assert!(b.run("t", "run_1").await.unwrap().is_some());
    assert!(b.run("other", "run_1").await.unwrap().is_none());
    assert!(b.cancel("other", "run_1", T0).await.unwrap().is_none());
    assert_eq!(
        b.cancel("t", "run_1", T0).await.unwrap(),
        Some(Cancelled::Now {
            stopped: vec![],
            status: RunStatus::Cancelled
        })
    );
    assert_eq!(
        b.cancel("t", "run_1", T0).await.unwrap(),
        Some(Cancelled::AlreadyEnded(RunStatus::Cancelled))
    );
}

fn one_step(id: &str, key: Option<(&str, &str)>, max_active: u32) -> NewRun {
    let mut s = spec(json!({ "steps": [ { "id": "a", "component": "x@1" } ] }));
    s.id = id.to_string();
    NewRun {
        spec: Arc::new(s),
        idempotency: key.map(|(key, fingerprint)| Idempotency {
            key: key.into(),
            fingerprint: fingerprint.into(),
        }),
        max_active,
    }
}

async fn admission_honours_idempotency_keys_and_the_active_run_limit(kind: Kind) {
    let h = Harness::new(kind).await;
    let b = &*h.backend;
    let created = b.create_run(one_step("run_a", Some(("k", "f1")), 2)).await;
    assert_eq!(created.unwrap(), Admission::Created);
    // The same key again names the first run, whatever else it carries.
    let again = b.create_run(one_step("run_b", Some(("k", "f1")), 2)).await;
    assert_eq!(
        again.unwrap(),
        Admission::Existing {
            run: "run_a".into(),
            same_request: true
        }
    );
    let other = b.create_run(one_step("run_c", Some(("k", "f2")), 2)).await;
    assert_eq!(
        other.unwrap(),
        Admission::Existing {
            run: "run_a".into(),
            same_request: false
        }
    );
    assert!(b.run("t", "run_b").await.unwrap().is_none());

    assert_eq!(
        b.create_run(one_step("run_d", None, 2)).await.unwrap(),
        Admission::Created
    );
    assert_eq!(
        b.create_run(one_step("run_e", None, 2)).await.unwrap(),
        Admission::AtLimit { active: 2 }
    );
    // A run that ends frees its place.
    b.cancel("t", "run_a", T0).await.unwrap();
    assert_eq!(
        b.create_run(one_step("run_e", None, 2)).await.unwrap(),
        Admission::Created
    );
}

async fn tenants_and_registry_records_survive_a_reopen(kind: Kind) {
    let mut h = Harness::new(kind).await;
    let b = h.backend.clone();
    let tenant = TenantRecord {
        name: "acme".into(),
        key_hashes: vec!["abc".into()],
        limits: Limits::default(),
        created_at: T0,
    };
    assert!(b.create_tenant(tenant.clone()).await.unwrap());
    assert!(!b.create_tenant(tenant).await.unwrap());
    let limits = Limits {
        concurrent_runs: 3,
        ..Limits::default()
    };
    assert!(b.set_limits("acme", limits).await.unwrap());
    let record = crate::backend::VersionRecord {
        name: "echo".into(),
        version: "1.0.0".into(),
        digest: "sha256:00".into(),
        size: 1,
        published_at: T0,
    };
    b.publish("acme", record.clone()).await.unwrap();
    drop(b);

    let b = h.reopen().await;
    let acme = b.tenant_by_key("abc").await.unwrap().expect("tenant kept");
    assert_eq!(acme.name, "acme");
    assert_eq!(acme.limits.concurrent_runs, 3);
    assert_eq!(b.versions("acme", "echo").await.unwrap(), vec![record]);
    assert_eq!(b.component_names("acme").await.unwrap(), vec!["echo"]);
    assert!(b.component_names("other").await.unwrap().is_empty());
    assert!(b.tenant_by_key("nope").await.unwrap().is_none());
}

on_durable_backends!(
    tenants_and_registry_records_survive_a_reopen,
    an_unfinished_run_goes_on_after_a_reopen,
);

/// A process that stopped at any point: what it stored is read back, a step
/// it was running is delivered again, a retry keeps its due time, and a
/// finished run and its idempotency key are kept as they were.
async fn an_unfinished_run_goes_on_after_a_reopen(kind: Kind) {
    let mut h = Harness::new(kind).await;
    let chain = || {
        let mut new = NewRun::new(spec(json!({ "steps": [
            { "id": "a", "component": "x@1" },
            { "id": "b", "component": "x@1", "input": "${steps.a.output}" },
            { "id": "c", "component": "x@1", "needs": ["b"] }
        ] })));
        new.idempotency = Some(Idempotency {
            key: "order-7".into(),
            fingerprint: "f".into(),
        });
        new
    };
    let b = h.backend.clone();
    assert_eq!(b.create_run(chain()).await.unwrap(), Admission::Created);
    let a = claim_next(&*b).await;
    assert!(
        b.commit("run_1", Target::Step(a.index), a.lease, ok(json!("A")), T0)
            .await
            .unwrap()
            .applied
    );
    // Claimed and never acknowledged: the process stops while it runs.
    let running = claim_unacked(&*b).await;
    assert_eq!((running.index, running.attempt), (1, 1));
    // A claim is stored within a few milliseconds, though nobody waits for it.
    tokio::time::sleep(Duration::from_millis(50)).await;
    drop(b);

    // Stopped while `b` ran: it is delivered again, as the same attempt.
    let b = h.reopen().await;
    assert_eq!(status(&*b, "a").await, StepStatus::Succeeded);
    let again = claim_next_current(&*b).await;
    assert_eq!((again.index, again.attempt), (1, 1));
    assert!(again.lease > running.lease, "the old holder is superseded");
    assert_eq!(again.deps[0].1.as_ref(), &json!("A"));
    assert!(
        !b.commit(
            "run_1",
            Target::Step(1),
            running.lease,
            ok(json!("old")),
            T0
        )
        .await
        .unwrap()
        .applied,
        "the attempt of the stopped process cannot commit"
    );
    assert!(
        b.commit("run_1", Target::Step(1), again.lease, ok(json!("B")), T0)
            .await
            .unwrap()
            .applied
    );
    let c = claim_next_current(&*b).await;
    assert_eq!(c.index, 2);
    let retry = Outcome::Retry {
        failure: Failure::host("trap", "boom"),
        logs: vec![],
        due: T0 + 5_000,
    };
    assert!(
        b.commit("run_1", Target::Step(2), c.lease, retry, T0)
            .await
            .unwrap()
            .retrying
    );
    drop(b);

    // Stopped while `c` waited for its retry: it keeps its due time.
    let b = h.reopen().await;
    let waiting = {
        let b = b.clone();
        tokio::spawn(async move { b.next(1).await.unwrap() })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "the retry came before its due time");
    h.clock.advance(Duration::from_secs(5));
    let d = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("the retry is delivered once due")
        .unwrap()
        .pop()
        .unwrap();
    assert_eq!(
        d.task.kind,
        TaskKind::Step {
            index: 2,
            attempt: 2
        }
    );
    let Claim::Step(c) = b.claim(&d, T0).await.unwrap() else {
        panic!("expected step c")
    };
    b.ack(&[d]).await.unwrap();
    assert!(
        b.commit("run_1", Target::Step(2), c.lease, ok(json!("C")), T0)
            .await
            .unwrap()
            .applied
    );
    let d = tokio::time::timeout(Duration::from_secs(5), b.next(1))
        .await
        .expect("finalisation is queued")
        .unwrap()
        .pop()
        .unwrap();
    assert!(matches!(
        b.claim(&d, T0).await.unwrap(),
        Claim::Finalize { .. }
    ));
    b.ack(&[d]).await.unwrap();
    assert!(
        b.finish("run_1", Ok(json!({ "done": true })), T0)
            .await
            .unwrap()
    );
    drop(b);

    // Finished: kept as it was, and its key still names it.
    let b = h.reopen().await;
    let run = b.run("t", "run_1").await.unwrap().expect("the run is kept");
    assert_eq!(run.status, RunStatus::Succeeded);
    assert_eq!(run.output, json!({ "done": true }));
    let outputs: Vec<Value> = run
        .steps
        .values()
        .map(|s| s.output.as_ref().unwrap().to_value())
        .collect();
    assert_eq!(outputs, vec![json!("A"), json!("B"), json!("C")]);
    assert_eq!(run.steps["b"].attempts, 1);
    assert_eq!(run.steps["c"].attempts, 2);
    assert_eq!(
        b.create_run(chain()).await.unwrap(),
        Admission::Existing {
            run: "run_1".into(),
            same_request: true
        }
    );
    // Nothing is left to do.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), b.next(1))
            .await
            .is_err(),
        "a finished run was queued again"
    );
}
