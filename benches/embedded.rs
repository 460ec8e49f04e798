//! Whole runs on the embedded node, in process: engine, component cache,
//! memory backend, scheduler and worker wired as `weft exec` wires them, kept
//! warm across runs; each iteration is one new run, timed from submission of
//! the validated run to the end of `Scheduler::wait`.

#[path = "common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use weft::bundled::paths;
use weft::scheduler::model::{RunSpec, RunStatus, StepDefaults};
use weft::scheduler::{Scheduler, new_run_id};
use weft::worker::Worker;
use weft::workflow::{self, Validated};

/// `steps` no-op steps, each needing the one before it when `chained`.
fn document(name: &str, steps: usize, chained: bool) -> Value {
    let steps: Vec<Value> = (0..steps)
        .map(|i| {
            let mut step = json!({"id": format!("s{i}"), "component": "noop@1"});
            if chained && i > 0 {
                step["needs"] = json!([format!("s{}", i - 1)]);
            }
            step
        })
        .collect();
    json!({"name": name, "steps": steps})
}

fn validate(document: &Value, noop: &str) -> Validated {
    let resolver = |name: &str, _: &semver::VersionReq| match name {
        "noop" => Ok(noop.to_string()),
        other => Err(format!("unknown component {other:?}")),
    };
    workflow::validate(document, &resolver).expect("valid workflow")
}

fn embedded(c: &mut Criterion) {
    let rt = common::runtime();
    let node = common::Node::new();
    let noop = rt.block_on(node.add(paths::NOOP));
    let scheduler = Scheduler::new(
        node.backend.clone(),
        node.backend.clone(),
        node.clock.clone(),
    );
    let worker = Worker::new(
        scheduler.clone(),
        node.cache.clone(),
        common::CONCURRENCY as usize,
        weft::worker::Capabilities::of_tenants(&scheduler, None),
    );
    let shutdown = CancellationToken::new();
    rt.spawn(worker.run(shutdown.clone()));

    let mut group = c.benchmark_group("embedded");
    // A run is milliseconds to seconds long: the same number of runs per sample.
    group.sampling_mode(SamplingMode::Flat).sample_size(20);
    for (name, steps, chained) in [("independent_1000", 1000, false), ("chain_200", 200, true)] {
        let document = document(name, steps, chained);
        let validated = validate(&document, &noop);
        group.throughput(Throughput::Elements(steps as u64));
        group.bench_function(name, |b| {
            b.to_async(&rt).iter_custom(|runs| {
                let (scheduler, clock, document, validated) =
                    (&scheduler, &node.clock, &document, &validated);
                async move {
                    let mut total = Duration::ZERO;
                    for _ in 0..runs {
                        let now = clock.now();
                        let spec = RunSpec {
                            id: new_run_id(now),
                            tenant: "default".into(),
                            document: document.clone(),
                            workflow: validated.workflow.clone(),
                            pins: validated.pins.clone(),
                            input: json!({}),
                            defaults: StepDefaults::default(),
                            created_at: now,
                            template: None,
                            parent: None,
                            parent_step: None,
                            children: Default::default(),
                            priority: weft::scheduler::flow::DEFAULT_PRIORITY,
                            start_at: None,
                            schedule: None,
                            trace: None,
                        };
                        let started = Instant::now();
                        let id = scheduler.start(spec).await.expect("run stored");
                        let view = scheduler
                            .wait("default", &id)
                            .await
                            .expect("backend")
                            .expect("run exists");
                        total += started.elapsed();
                        assert_eq!(view.status, RunStatus::Succeeded, "{:?}", view.error);
                    }
                    total
                }
            });
        });
    }
    group.finish();
    shutdown.cancel();
}

criterion_group!(benches, embedded);
criterion_main!(benches);
