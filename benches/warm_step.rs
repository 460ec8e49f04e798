//! One warm step through Weft (cache hit, fresh store with limits, instantiate,
//! `run`, output checked) against the same component on bare wasmtime
//! (`InstancePre` built once, then a new store, instantiate and call).

#[path = "common/mod.rs"]
mod common;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use tokio_util::sync::CancellationToken;
use wasmtime::Store;
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use weft::backend::StateStore;
use weft::bindings::{self, Step, StepPre};
use weft::bundled::paths;

/// Bare wasmtime's store data: a WASI context as the builder makes it, and
/// the step imports doing nothing.
struct Bare {
    wasi: WasiCtx,
    table: ResourceTable,
}

impl WasiView for Bare {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl bindings::Host for Bare {
    fn current_invocation(&mut self) -> bindings::Invocation {
        bindings::Invocation {
            tenant: String::new(),
            run_id: String::new(),
            step_id: String::new(),
            attempt: 1,
        }
    }

    fn log(&mut self, _level: bindings::Level, _message: String) {}
}

impl bindings::weft::step::types::Host for Bare {}

/// `InstancePre` of a component on a plain engine (default `Config`).
fn bare_pre(path: &str) -> (wasmtime::Engine, StepPre<Bare>) {
    let engine = wasmtime::Engine::default();
    let mut linker = Linker::new(&engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker).expect("WASI links");
    Step::add_to_linker::<_, HasSelf<Bare>>(&mut linker, |h| h).expect("step imports link");
    let component = Component::from_file(&engine, path).expect("component compiles");
    let pre = StepPre::new(
        linker
            .instantiate_pre(&component)
            .expect("imports satisfied"),
    )
    .expect("step export");
    (engine, pre)
}

fn warm_step(c: &mut Criterion) {
    let rt = common::runtime();
    let node = common::Node::new();
    let limits = common::limits();
    let cancel = CancellationToken::new();

    for (name, path, input) in [
        ("noop", paths::NOOP, "{}"),
        (
            "echo",
            paths::ECHO,
            r#"{"order":42,"customer":"Ada","items":["tea","scones"],"total":12.5}"#,
        ),
    ] {
        let digest = rt.block_on(node.add(path));
        let (bare_engine, pre) = bare_pre(path);
        let mut group = c.benchmark_group(format!("warm_step/{name}"));

        group.bench_function(BenchmarkId::from_parameter("weft"), |b| {
            b.to_async(&rt).iter(|| async {
                let linked = node
                    .cache
                    .get(&digest, node.backend.blob(&digest))
                    .await
                    .expect("cache hit");
                let execution = node
                    .cache
                    .engine()
                    .run(&linked, common::invocation(), input, &limits, &cancel)
                    .await;
                execution.result.expect("step succeeds")
            });
        });

        group.bench_function(BenchmarkId::from_parameter("bare"), |b| {
            b.to_async(&rt).iter(|| async {
                let host = Bare {
                    wasi: WasiCtx::builder().build(),
                    table: ResourceTable::new(),
                };
                let mut store = Store::new(&bare_engine, host);
                let step = pre
                    .instantiate_async(&mut store)
                    .await
                    .expect("instantiates");
                step.call_run(&mut store, input)
                    .await
                    .expect("no trap")
                    .expect("step succeeds")
            });
        });
        group.finish();
    }
}

criterion_group!(benches, warm_step);
criterion_main!(benches);
