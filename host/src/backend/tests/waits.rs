//! Steps that wait (sleep and signal steps) against every store: the wait
//! holds no attempt, its wake-up is delivered at its time (also after a
//! restart) and ends it, and a cancel ends a waiting step.

use std::time::Duration;

use serde_json::json;

use super::{Harness, Kind, T0, claim_next, spec, status};
use crate::backend::{Claim, NewRun, Outcome};
use crate::scheduler::model::{StepStatus, Target, TaskKind};

pub(super) async fn a_wait_holds_no_attempt_and_its_wake_up_ends_it(kind: Kind) {
    let mut h = Harness::new(kind).await;
    h.backend
        .create_run(NewRun::new(spec(json!({ "steps": [
            { "id": "nap", "sleep_ms": 5_000 },
            { "id": "after", "component": "x@1", "needs": ["nap"] }
        ] }))))
        .await
        .unwrap();
    let first = claim_next(&*h.backend).await;
    assert!(!first.woken);
    let wait = Outcome::Wait {
        due: Some(T0 + 5_000),
        signal: None,
    };
    let committed = h
        .backend
        .commit("run_1", Target::Step(0), first.lease, wait, T0)
        .await
        .unwrap();
    assert!(committed.applied && !committed.retrying);
    assert_eq!(status(&*h.backend, "nap").await, StepStatus::Waiting);
    let view = h.backend.run("t", "run_1").await.unwrap().unwrap();
    assert_eq!(view.steps["nap"].component, "", "a sleep runs no component");

    // The wait outlives its process: read back, it is still waiting (the
    // in-memory store keeps nothing to read back).
    let b = match kind {
        Kind::Memory => h.backend.clone(),
        _ => h.reopen().await,
    };
    assert_eq!(status(&*b, "nap").await, StepStatus::Waiting);
    let woken = {
        let b = b.clone();
        tokio::spawn(async move { b.next(1).await.unwrap() })
    };
    h.clock.advance(Duration::from_millis(4_999));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!woken.is_finished(), "woken before its time");
    h.clock.advance(Duration::from_millis(1));
    let got = tokio::time::timeout(Duration::from_secs(5), woken)
        .await
        .expect("woken once due")
        .unwrap();
    assert_eq!(
        got[0].task.kind,
        TaskKind::Step {
            index: 0,
            attempt: 1
        },
        "the wake-up is the same attempt"
    );
    let Claim::Step(wake) = b.claim(&got[0], T0 + 5_000).await.unwrap() else {
        panic!("the wake-up is a step's");
    };
    b.ack(&got).await.unwrap();
    assert!(wake.woken);
    assert_eq!(status(&*b, "nap").await, StepStatus::Waiting);
    let done = Outcome::Succeeded {
        output: serde_json::Value::Null,
        logs: vec![],
    };
    let committed = b
        .commit("run_1", Target::Step(0), wake.lease, done, T0 + 5_000)
        .await
        .unwrap();
    assert!(committed.applied);
    let view = b.run("t", "run_1").await.unwrap().unwrap();
    assert_eq!(view.steps["nap"].status, StepStatus::Succeeded);
    assert_eq!(view.steps["nap"].attempts, 1);
    let next = claim_next(&*b).await;
    assert_eq!(next.index, 1, "the step after the sleep is ready");
}

pub(super) async fn cancelling_ends_a_waiting_step(kind: Kind) {
    let h = Harness::new(kind).await;
    let b = &*h.backend;
    b.create_run(NewRun::new(spec(
        json!({ "steps": [ { "id": "approval", "signal": "approved" } ] }),
    )))
    .await
    .unwrap();
    let first = claim_next(b).await;
    let wait = Outcome::Wait {
        due: None,
        signal: Some("approved".into()),
    };
    b.commit("run_1", Target::Step(0), first.lease, wait, T0)
        .await
        .unwrap();
    assert_eq!(status(b, "approval").await, StepStatus::Waiting);
    b.cancel("t", "run_1", T0 + 10).await.unwrap();
    assert_eq!(status(b, "approval").await, StepStatus::Cancelled);
}
