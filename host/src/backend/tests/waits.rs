//! Steps that wait (sleep and signal steps) against every store: the wait
//! holds no attempt, its wake-up is delivered at its time (also after a
//! restart) and ends it, and a cancel ends a waiting step.

use serde_json::json;

use super::{Harness, Kind, T0, claim_next, spec, status};
use crate::backend::{Admission, Claim, NewRun, Outcome, Signalled};
use crate::scheduler::model::{RunStatus, StepStatus, Target, TaskKind};

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
    let got = super::delivered_once_due(&h, b.clone(), 5_000).await;
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

/// The output of `step` of run_1, as a value.
async fn output(b: &dyn super::Backend, step: &str) -> Option<serde_json::Value> {
    let view = b.run("t", "run_1").await.unwrap().unwrap();
    view.steps[step].output.as_ref().map(|o| o.to_value())
}

/// Claims the next signal step and commits its wait (no timeout).
async fn wait_for(b: &dyn super::Backend, index: usize, name: &str) {
    let work = claim_next(b).await;
    assert_eq!(work.index, index);
    let wait = Outcome::Wait {
        due: None,
        signal: Some(name.into()),
    };
    let committed = b
        .commit("run_1", Target::Step(index), work.lease, wait, T0)
        .await
        .unwrap();
    assert!(committed.applied);
}

pub(super) async fn signals_are_kept_taken_once_in_order_and_refused_past_their_limits(kind: Kind) {
    let mut h = Harness::new(kind).await;
    let mut run = spec(json!({ "steps": [
        { "id": "first", "signal": "go" },
        { "id": "second", "signal": "go", "needs": ["first"] },
        { "id": "third", "signal": "go", "needs": ["second"] },
        { "id": "after", "component": "x@1", "needs": ["third"] }
    ] }));
    run.defaults.run_bytes = 100_000;
    h.backend.create_run(NewRun::new(run)).await.unwrap();
    let b = h.backend.clone();
    let send = |b: std::sync::Arc<dyn super::Backend>, tenant: &'static str, payload| async move {
        b.signal(tenant, "run_1", "go", payload, T0).await.unwrap()
    };

    // Sent before any step waits: kept, oldest first; not another tenant's.
    assert_eq!(
        send(b.clone(), "t", json!(1)).await,
        Signalled::Buffered { buffered: 1 }
    );
    assert_eq!(
        send(b.clone(), "t", json!(2)).await,
        Signalled::Buffered { buffered: 2 }
    );
    assert_eq!(send(b.clone(), "u", json!(0)).await, Signalled::Missing);
    assert_eq!(
        b.signal("t", "run_9", "go", json!(0), T0).await.unwrap(),
        Signalled::Missing
    );

    // A step reached later takes the oldest kept one at once.
    wait_for(&*b, 0, "go").await;
    assert_eq!(status(&*b, "first").await, StepStatus::Succeeded);
    assert_eq!(output(&*b, "first").await, Some(json!(1)));

    // What is kept outlives the process.
    let b = match kind {
        Kind::Memory => b,
        _ => {
            drop(b);
            h.reopen().await
        }
    };
    wait_for(&*b, 1, "go").await;
    assert_eq!(output(&*b, "second").await, Some(json!(2)));

    // Sent while a step waits: that step takes it; two sent at once are
    // taken once: one by the step, the other kept.
    wait_for(&*b, 2, "go").await;
    assert_eq!(status(&*b, "third").await, StepStatus::Waiting);
    let (one, two) = tokio::join!(
        send(b.clone(), "t", json!(3)),
        send(b.clone(), "t", json!(4))
    );
    let delivered = Signalled::Delivered {
        step: "third".into(),
    };
    let kept = Signalled::Buffered { buffered: 1 };
    assert!(
        (one == delivered && two == kept) || (one == kept && two == delivered),
        "{one:?} {two:?}"
    );
    assert_eq!(status(&*b, "third").await, StepStatus::Succeeded);
    let taken = output(&*b, "third").await.unwrap();
    assert!(taken == json!(3) || taken == json!(4), "{taken}");

    // At most 100 are kept per name; a payload past run_bytes is refused.
    for n in 2..=100 {
        assert_eq!(
            send(b.clone(), "t", json!(n)).await,
            Signalled::Buffered { buffered: n }
        );
    }
    assert_eq!(send(b.clone(), "t", json!(101)).await, Signalled::Full);
    let other = b
        .signal("t", "run_1", "other", json!("x".repeat(200_000)), T0)
        .await
        .unwrap();
    assert_eq!(other, Signalled::TooLarge { run_bytes: 100_000 });

    // The step after the signals runs; once the run ends, signals are refused.
    let after = claim_next(&*b).await;
    assert_eq!(after.index, 3);
    let done = Outcome::Succeeded {
        output: json!(null),
        logs: vec![],
    };
    b.commit("run_1", Target::Step(3), after.lease, done, T0)
        .await
        .unwrap();
    let d = b.next(1).await.unwrap().pop().unwrap();
    assert_eq!(d.task.kind, TaskKind::Finalize);
    assert!(matches!(
        b.claim(&d, T0).await.unwrap(),
        Claim::Finalize { .. }
    ));
    b.ack(&[d]).await.unwrap();
    b.finish("run_1", Ok(json!(null)), T0).await.unwrap();
    assert_eq!(
        send(b.clone(), "t", json!(5)).await,
        Signalled::Finished(RunStatus::Succeeded)
    );
}

pub(super) async fn a_child_run_is_not_counted_and_its_end_wakes_its_parents_step(kind: Kind) {
    let mut h = Harness::new(kind).await;
    let b = h.backend.clone();
    let parent = spec(json!({ "steps": [{ "id": "ship", "workflow": "shipping@1" }] }));
    let new = |spec, max_active| NewRun {
        max_active,
        ..NewRun::new(spec)
    };
    assert_eq!(
        b.create_run(new(parent, 1)).await.unwrap(),
        Admission::Created
    );
    let ship = claim_next(&*b).await;
    let wait = Outcome::Wait {
        due: None,
        signal: None,
    };
    b.commit("run_1", Target::Step(0), ship.lease, wait, T0)
        .await
        .unwrap();
    assert_eq!(status(&*b, "ship").await, StepStatus::Waiting);

    // The child: admitted beside its parent, and not counted: one more root
    // fits under a limit of two.
    let mut child = spec(json!({ "steps": [{ "id": "pack", "component": "x@1" }] }));
    child.id = "run_2".into();
    child.parent = Some("run_1".into());
    child.parent_step = Some(0);
    assert_eq!(
        b.create_run(new(child, u32::MAX)).await.unwrap(),
        Admission::Created
    );
    let mut other = spec(json!({ "steps": [{ "id": "a", "component": "x@1" }] }));
    other.id = "run_3".into();
    assert_eq!(
        b.create_run(new(other, 2)).await.unwrap(),
        Admission::Created
    );
    let listed = b.run("t", "run_2").await.unwrap().unwrap();
    assert_eq!(listed.parent.as_deref(), Some("run_1"));

    let pack = claim_next(&*b).await;
    assert_eq!(pack.spec.id, "run_2");
    let done = Outcome::Succeeded {
        output: json!("packed"),
        logs: vec![],
    };
    b.commit("run_2", Target::Step(0), pack.lease, done, T0)
        .await
        .unwrap();
    let other = claim_next(&*b).await;
    assert_eq!(other.spec.id, "run_3");
    let d = b.next(1).await.unwrap().pop().unwrap();
    assert!(matches!(
        b.claim(&d, T0).await.unwrap(),
        Claim::Finalize { .. }
    ));
    b.ack(&[d]).await.unwrap();
    assert!(
        b.finish("run_2", Ok(json!({ "parcel": 7 })), T0)
            .await
            .unwrap()
    );

    // The child ended: its parent's step is woken, also after a restart.
    drop(b);
    let b = match kind {
        Kind::Memory => h.backend.clone(),
        _ => h.reopen().await,
    };
    let woken = super::claim_next_current(&*b).await;
    assert_eq!((woken.spec.id.as_str(), woken.index), ("run_1", 0));
    assert!(woken.woken, "the wake-up of the waiting step");
    assert_eq!(woken.attempt, 1);
    // Another root still fits: the ended child took nothing from the count.
    let mut last = spec(json!({ "steps": [{ "id": "a", "component": "x@1" }] }));
    last.id = "run_4".into();
    assert!(
        matches!(
            b.create_run(new(last, 2)).await.unwrap(),
            Admission::AtLimit { active: 2 }
        ),
        "run_1 and run_3 are the two counted"
    );
}
