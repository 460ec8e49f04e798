//! The rules of the workflow language, version 2, replayed against every
//! store: what a skip, a continued failure, a list, an item and a
//! compensation do to a run. The decisions come from `scheduler::rules`;
//! these cases check that each store applies them the same way.

use std::time::Duration;

use serde_json::json;

use super::{
    Backend, Harness, Kind, T0, claim_next, claim_next_current, claim_unacked, ok, spec, status,
};
use crate::backend::{Cancelled, Claim, Committed, NewRun, Outcome, StepWork};
use crate::engine::Failure;
use crate::scheduler::model::{RunStatus, StepStatus, Target, TaskKind};

fn failed(continues: bool) -> Outcome {
    Outcome::Failed {
        failure: Failure::host("trap", "boom"),
        logs: vec![],
        continues,
    }
}

fn skipped(reason: &str) -> Outcome {
    Outcome::Skipped {
        reason: reason.into(),
        error: None,
    }
}

async fn commit(b: &dyn Backend, work: &StepWork, outcome: Outcome) -> Committed {
    let committed = b
        .commit("run_1", work.target, work.lease, outcome, T0)
        .await
        .unwrap();
    assert!(committed.applied, "{:?} not applied", work.target);
    committed
}

async fn run_status(b: &dyn Backend) -> RunStatus {
    b.run("t", "run_1").await.unwrap().unwrap().status
}

/// Nothing becomes ready within 200 ms.
async fn nothing_ready(b: &dyn Backend, what: &str) {
    assert!(
        tokio::time::timeout(Duration::from_millis(200), b.next(1))
            .await
            .is_err(),
        "{what}"
    );
}

/// Claims the next `n` tasks, sorted by what they are for.
async fn claim_sorted(b: &dyn Backend, n: usize) -> Vec<StepWork> {
    let mut works = Vec::new();
    for _ in 0..n {
        works.push(claim_next_current(b).await);
    }
    works.sort_by_key(|w| format!("{:?}", w.target));
    works
}

pub(super) async fn a_skip_ends_the_step_and_its_dependents_see_it_at_their_claim(kind: Kind) {
    let h = Harness::new(kind).await;
    let b = &*h.backend;
    b.create_run(NewRun::new(spec(json!({ "steps": [
        { "id": "a", "component": "x@1", "when": "input.go == true" },
        { "id": "b", "component": "x@1", "input": "${steps.a.output}" }
    ] }))))
    .await
    .unwrap();
    let a = claim_next(b).await;
    assert!(a.facts.is_empty(), "a root has no dependencies to tell of");
    commit(b, &a, skipped("when is false: input.go == true")).await;
    let view = b.run("t", "run_1").await.unwrap().unwrap();
    assert_eq!(view.steps["a"].status, StepStatus::Skipped);
    assert_eq!(view.steps["a"].attempts, 0);
    assert!(view.steps["a"].started_at.is_none());
    assert_eq!(
        view.steps["a"].reason.as_deref(),
        Some("when is false: input.go == true")
    );
    let bw = claim_next(b).await;
    assert_eq!(bw.index, 1);
    assert_eq!(bw.facts.len(), 1);
    assert_eq!((bw.facts[0].0, bw.facts[0].1), (0, StepStatus::Skipped));
    assert!(bw.deps.is_empty(), "a skipped step has no output to read");
    commit(b, &bw, skipped("every dependency was skipped")).await;
    // Every step ended: the run finalises and succeeds.
    let d = b.next(1).await.unwrap().pop().unwrap();
    assert!(matches!(d.task.kind, TaskKind::Finalize));
    let Claim::Finalize { outputs, .. } = b.claim(&d, T0).await.unwrap() else {
        panic!("expected finalisation")
    };
    assert!(outputs.iter().all(Option::is_none));
    assert!(b.finish("run_1", Ok(json!(null)), T0).await.unwrap());
    assert_eq!(run_status(b).await, RunStatus::Succeeded);
}

pub(super) async fn a_continued_failure_satisfies_its_dependents(kind: Kind) {
    let h = Harness::new(kind).await;
    let b = &*h.backend;
    b.create_run(NewRun::new(spec(json!({ "steps": [
        { "id": "a", "component": "x@1", "on_error": "continue" },
        { "id": "b", "component": "x@1", "needs": ["a"] }
    ] }))))
    .await
    .unwrap();
    let a = claim_next(b).await;
    let committed = commit(b, &a, failed(true)).await;
    assert!(committed.run_ended.is_none());
    assert_eq!(status(b, "a").await, StepStatus::Failed);
    let bw = claim_next(b).await;
    assert_eq!((bw.facts[0].0, bw.facts[0].1), (0, StepStatus::Failed));
    assert_eq!(
        bw.facts[0].2.as_ref().map(|f| f.code.as_str()),
        Some("trap")
    );
    assert_eq!(run_status(b).await, RunStatus::Running);
}

pub(super) async fn a_list_keeps_its_window_full_and_ends_with_outputs_in_item_order(kind: Kind) {
    let h = Harness::new(kind).await;
    let b = &*h.backend;
    b.create_run(NewRun::new(spec(json!({ "steps": [
        { "id": "each", "component": "x@1", "for_each": "${input}", "max_concurrency": 2,
          "input": "${item}" },
        { "id": "after", "component": "x@1", "input": "${steps.each.output}" }
    ] }))))
    .await
    .unwrap();
    let each = claim_next(b).await;
    let items: Vec<_> = (0..5).map(|i| json!({ "n": i })).collect();
    commit(b, &each, Outcome::Expand { items }).await;
    let started = claim_sorted(b, 2).await;
    let (first, second) = (&started[0], &started[1]);
    assert_eq!(first.target, Target::Item(0, 0));
    assert_eq!(second.target, Target::Item(0, 1));
    assert_eq!(first.item.as_deref(), Some(&json!({ "n": 0 })));
    nothing_ready(b, "a third item started with two running").await;
    // Items may end in any order; each ended one starts the next.
    commit(b, second, ok(json!("o1"))).await;
    let third = claim_next(b).await;
    assert_eq!(third.target, Target::Item(0, 2));
    commit(b, first, ok(json!("o0"))).await;
    commit(b, &third, failed(true)).await;
    let rest = claim_sorted(b, 2).await;
    assert_eq!(rest[0].target, Target::Item(0, 3));
    commit(b, &rest[1], ok(json!("o4"))).await;
    assert_eq!(status(b, "each").await, StepStatus::Running);
    let view = b.run("t", "run_1").await.unwrap().unwrap();
    let summary = view.steps["each"].items.clone().unwrap();
    assert_eq!(summary.total, 5);
    let c = summary.counts;
    assert_eq!((c.succeeded, c.failed, c.running, c.pending), (3, 1, 1, 0));
    assert_eq!(summary.failed[0].index, 2);
    commit(b, &rest[0], ok(json!("o3"))).await;
    let after = claim_next(b).await;
    assert_eq!(after.index, 1);
    assert_eq!(
        after.deps[0].1.as_ref(),
        &json!(["o0", "o1", null, "o3", "o4"]),
        "outputs in item order, a continued item's slot null"
    );
    let page = b.items("t", "run_1", "each", 3, 10).await.unwrap().unwrap();
    assert_eq!(page.items.len(), 2);
    assert_eq!(page.items[0].index, 3);
    assert!(page.next_cursor.is_none());
    let page = b.items("t", "run_1", "each", 0, 2).await.unwrap().unwrap();
    assert_eq!(page.next_cursor.as_deref(), Some("2"));
    assert_eq!(page.items[1].record.status, StepStatus::Succeeded);
    assert!(b.items("u", "run_1", "each", 0, 2).await.unwrap().is_none());
}

pub(super) async fn a_failed_item_fails_the_step_and_stops_the_others(kind: Kind) {
    let h = Harness::new(kind).await;
    let b = &*h.backend;
    b.create_run(NewRun::new(spec(json!({ "steps": [
        { "id": "each", "component": "x@1", "for_each": "${input}", "max_concurrency": 2 }
    ] }))))
    .await
    .unwrap();
    let each = claim_next(b).await;
    let items = vec![json!(1); 4];
    commit(b, &each, Outcome::Expand { items }).await;
    let started = claim_sorted(b, 2).await;
    let committed = commit(b, &started[0], failed(false)).await;
    assert_eq!(committed.run_ended, Some(RunStatus::Failed));
    assert!(
        committed.cancelled.contains(&0),
        "the step's items are stopped"
    );
    let view = b.run("t", "run_1").await.unwrap().unwrap();
    let step = &view.steps["each"];
    assert_eq!(step.status, StepStatus::Failed);
    assert!(step.error.as_ref().unwrap().message.starts_with("item 0:"));
    let c = step.items.as_ref().unwrap().counts;
    assert_eq!((c.failed, c.cancelled, c.pending), (1, 1, 2));
    assert_eq!(view.error.unwrap().step.as_deref(), Some("each"));
    // The stopped item's late result is ignored.
    let second = &started[1];
    let late = b
        .commit("run_1", second.target, second.lease, ok(json!(1)), T0)
        .await
        .unwrap();
    assert!(!late.applied);
}

pub(super) async fn an_empty_or_too_long_list(kind: Kind) {
    let h = Harness::new(kind).await;
    let b = &*h.backend;
    let mut s = spec(json!({ "steps": [
        { "id": "each", "component": "x@1", "for_each": "${input}" },
        { "id": "long", "component": "x@1", "for_each": "${input}", "needs": ["each"] }
    ] }));
    s.defaults.steps_per_run = 4;
    b.create_run(NewRun::new(s)).await.unwrap();
    let each = claim_next(b).await;
    commit(b, &each, Outcome::Expand { items: vec![] }).await;
    let view = b.run("t", "run_1").await.unwrap().unwrap();
    assert_eq!(view.steps["each"].status, StepStatus::Succeeded);
    assert_eq!(
        view.steps["each"].output.as_ref().unwrap().to_value(),
        json!([])
    );
    // Two steps, one of them four items: one more than steps_per_run allows.
    let long = claim_next(b).await;
    let items = vec![json!(0); 4];
    let committed = commit(b, &long, Outcome::Expand { items }).await;
    assert_eq!(committed.run_ended, Some(RunStatus::Failed));
    let view = b.run("t", "run_1").await.unwrap().unwrap();
    assert_eq!(
        view.steps["long"].error.as_ref().unwrap().code,
        "too_many_items"
    );
}

fn saga() -> NewRun {
    let comp = json!({ "component": "undo@1", "input": "${steps.a.output}" });
    NewRun::new(spec(json!({ "steps": [
        { "id": "a", "component": "x@1", "compensate": comp },
        { "id": "b", "component": "x@1", "compensate": comp },
        { "id": "plain", "component": "x@1" },
        { "id": "c", "component": "x@1", "compensate": comp },
        { "id": "last", "component": "x@1", "needs": ["a", "b", "plain", "c"] }
    ] })))
}

/// Claims the four roots of [`saga`], by step index.
async fn saga_roots(b: &dyn Backend) -> Vec<StepWork> {
    let mut roots = Vec::new();
    for _ in 0..4 {
        roots.push(claim_next(b).await);
    }
    roots.sort_by_key(|w| w.index);
    roots
}

pub(super) async fn compensations_run_one_at_a_time_in_reverse_order_of_completion(kind: Kind) {
    let h = Harness::new(kind).await;
    let b = &*h.backend;
    b.create_run(saga()).await.unwrap();
    let roots = saga_roots(b).await;
    // They end b, then a, then plain; c fails.
    commit(b, &roots[1], ok(json!("b"))).await;
    commit(b, &roots[0], ok(json!("a"))).await;
    commit(b, &roots[2], ok(json!("plain"))).await;
    let committed = commit(b, &roots[3], failed(false)).await;
    assert_eq!(committed.run_ended, None, "compensations are to run first");
    assert_eq!(run_status(b).await, RunStatus::Compensating);
    // a ended last of the steps that succeeded with a compensation: it goes first.
    let first = claim_next(b).await;
    assert_eq!(first.target, Target::Compensation(0));
    assert_eq!(first.deps[0].1.as_ref(), &json!("a"));
    nothing_ready(b, "two compensations at once").await;
    let retry = Outcome::Retry {
        failure: Failure::host("trap", "again"),
        logs: vec![],
        due: T0,
    };
    assert!(commit(b, &first, retry).await.retrying);
    let again = claim_next_current(b).await;
    assert_eq!((again.target, again.attempt), (Target::Compensation(0), 2));
    commit(b, &again, ok(json!("undone a"))).await;
    let second = claim_next(b).await;
    assert_eq!(second.target, Target::Compensation(1));
    // A compensation that fails for good is recorded; the run still ends.
    let committed = commit(b, &second, failed(false)).await;
    assert_eq!(committed.run_ended, Some(RunStatus::Failed));
    let view = b.run("t", "run_1").await.unwrap().unwrap();
    assert_eq!(view.status, RunStatus::Failed);
    assert_eq!(view.error.unwrap().step.as_deref(), Some("c"));
    let a = view.steps["a"].compensation.clone().unwrap();
    assert_eq!((a.status, a.attempts), (StepStatus::Succeeded, 2));
    assert_eq!(a.output.unwrap().to_value(), json!("undone a"));
    let b_comp = view.steps["b"].compensation.clone().unwrap();
    assert_eq!(b_comp.status, StepStatus::Failed);
    assert!(view.steps["plain"].compensation.is_none());
    assert!(
        view.steps["c"].compensation.is_none(),
        "c failed: nothing to undo"
    );
}

pub(super) async fn a_cancel_compensates_and_ends_cancelled(kind: Kind) {
    let h = Harness::new(kind).await;
    let b = &*h.backend;
    b.create_run(saga()).await.unwrap();
    let roots = saga_roots(b).await;
    commit(b, &roots[0], ok(json!("a"))).await;
    let compensating = |c: Cancelled| {
        matches!(
            c,
            Cancelled::Now {
                status: RunStatus::Compensating,
                ..
            }
        )
    };
    let cancelled = b.cancel("t", "run_1", T0).await.unwrap().unwrap();
    assert!(compensating(cancelled));
    // Cancelling again while compensating changes nothing.
    let again = b.cancel("t", "run_1", T0).await.unwrap().unwrap();
    assert!(compensating(again));
    let late = b
        .commit("run_1", roots[1].target, roots[1].lease, ok(json!("b")), T0)
        .await
        .unwrap();
    assert!(!late.applied, "a step's result after the cancel is ignored");
    let undo = claim_next_current(b).await;
    assert_eq!(undo.target, Target::Compensation(0));
    let committed = commit(b, &undo, ok(json!("undone"))).await;
    assert_eq!(committed.run_ended, Some(RunStatus::Cancelled));
    let view = b.run("t", "run_1").await.unwrap().unwrap();
    assert!(view.error.is_none());
}

pub(super) async fn a_compensation_goes_on_after_a_reopen(kind: Kind) {
    let mut h = Harness::new(kind).await;
    let b = h.backend.clone();
    b.create_run(saga()).await.unwrap();
    let roots = saga_roots(&*b).await;
    commit(&*b, &roots[0], ok(json!("a"))).await;
    commit(&*b, &roots[1], ok(json!("b"))).await;
    commit(&*b, &roots[2], failed(false)).await;
    let running = claim_unacked(&*b).await;
    assert_eq!(running.target, Target::Compensation(1));
    tokio::time::sleep(Duration::from_millis(50)).await;
    drop(b);
    let b = h.reopen().await;
    assert_eq!(run_status(&*b).await, RunStatus::Compensating);
    let again = claim_next_current(&*b).await;
    assert_eq!((again.target, again.attempt), (Target::Compensation(1), 1));
    commit(&*b, &again, ok(json!("undone b"))).await;
    let next = claim_next_current(&*b).await;
    assert_eq!(next.target, Target::Compensation(0));
    commit(&*b, &next, ok(json!("undone a"))).await;
    assert_eq!(run_status(&*b).await, RunStatus::Failed);
}

pub(super) async fn a_list_goes_on_after_a_reopen(kind: Kind) {
    let mut h = Harness::new(kind).await;
    let b = h.backend.clone();
    b.create_run(NewRun::new(spec(json!({ "steps": [
        { "id": "each", "component": "x@1", "for_each": "${input}", "max_concurrency": 2 }
    ] }))))
    .await
    .unwrap();
    let each = claim_next(&*b).await;
    let items = (0..4).map(|i| json!(i)).collect();
    commit(&*b, &each, Outcome::Expand { items }).await;
    let item_of = |t: Target| match t {
        Target::Item(_, k) => k,
        other => panic!("expected an item, got {other:?}"),
    };
    let first = claim_next(&*b).await;
    let k = item_of(first.target);
    commit(&*b, &first, ok(json!(format!("o{k}")))).await;
    let running = claim_unacked(&*b).await.target;
    tokio::time::sleep(Duration::from_millis(50)).await;
    drop(b);
    let b = h.reopen().await;
    let works = claim_sorted(&*b, 2).await;
    let again = works
        .iter()
        .find(|w| w.target == running)
        .expect("delivered again");
    assert_eq!(again.attempt, 1);
    for w in &works {
        let item = item_of(w.target);
        assert_eq!(w.item.as_deref(), Some(&json!(item)));
        commit(&*b, w, ok(json!(format!("o{item}")))).await;
    }
    let last = claim_next_current(&*b).await;
    let item = item_of(last.target);
    commit(&*b, &last, ok(json!(format!("o{item}")))).await;
    let view = b.run("t", "run_1").await.unwrap().unwrap();
    assert_eq!(
        view.steps["each"].output.as_ref().unwrap().to_value(),
        json!(["o0", "o1", "o2", "o3"])
    );
}
