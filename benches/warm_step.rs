//! One warm step through Weft (cache hit, fresh store with limits, instantiate,
//! `run`, output checked) against the same component on bare wasmtime
//! (`InstancePre` built once, then a new store, instantiate and call).
//!
//! `bare` is a plain engine (default `Config`); `bare_pooled` adds only the
//! pooling allocator as Weft sets it up, to show what Weft's own policy costs.

#[path = "common/mod.rs"]
mod common;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use tokio_util::sync::CancellationToken;
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{Config, Enabled, InstanceAllocationStrategy, PoolingAllocationConfig, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use weft::backend::StateStore;
use weft::bindings::v2::StepPre;
use weft::bindings::{self, v2};
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

impl v2::weft::step::types::Host for Bare {}

impl v2::weft::step::secrets::Host for Bare {
    fn get(&mut self, _name: String) -> Option<String> {
        None
    }
}

/// `InstancePre` of a component on an engine with `config`.
fn bare_pre(config: &Config, path: &str) -> (wasmtime::Engine, StepPre<Bare>) {
    let engine = wasmtime::Engine::new(config).expect("engine");
    let mut linker = Linker::new(&engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker).expect("WASI links");
    v2::weft::step::host::add_to_linker::<_, HasSelf<Bare>>(&mut linker, |h| h)
        .expect("step imports link");
    v2::weft::step::secrets::add_to_linker::<_, HasSelf<Bare>>(&mut linker, |h| h)
        .expect("step imports link");
    v2::weft::step::types::add_to_linker::<_, HasSelf<Bare>>(&mut linker, |h| h)
        .expect("step imports link");
    let component = Component::from_file(&engine, path).expect("component compiles");
    let pre = linker
        .instantiate_pre(&component)
        .expect("imports satisfied");
    (engine, StepPre::new(pre).expect("step export"))
}

/// The default configuration plus the pooling allocator, reset as Weft resets it.
fn pooled() -> Config {
    let mut pool = PoolingAllocationConfig::new();
    pool.linear_memory_keep_resident(128 << 10)
        .table_keep_resident(16 << 10)
        .pagemap_scan(Enabled::Auto);
    let mut config = Config::new();
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    config
}

fn warm_step(c: &mut Criterion) {
    let rt = common::runtime();
    let node = common::Node::new();
    let limits = common::limits();
    let cancel = CancellationToken::new();
    let order = r#"{"order":42,"customer":"Ada","items":["tea","scones"],"total":12.5}"#;

    for (name, path, input) in [("noop", paths::NOOP, "{}"), ("echo", paths::ECHO, order)] {
        let digest = rt.block_on(node.add(path));
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
                    .run(
                        &linked,
                        common::invocation(),
                        input,
                        &limits,
                        weft::engine::Grants::default(),
                        &cancel,
                    )
                    .await;
                execution.result.expect("step succeeds")
            });
        });

        for (baseline, config) in [("bare", Config::new()), ("bare_pooled", pooled())] {
            let (engine, pre) = bare_pre(&config, path);
            group.bench_function(BenchmarkId::from_parameter(baseline), |b| {
                b.to_async(&rt).iter(|| async {
                    let host = Bare {
                        wasi: WasiCtx::builder().build(),
                        table: ResourceTable::new(),
                    };
                    let mut store = Store::new(&engine, host);
                    let step = pre
                        .instantiate_async(&mut store)
                        .await
                        .expect("instantiates");
                    let output = step.call_run(&mut store, input).await.expect("no trap");
                    output.expect("step succeeds")
                });
            });
        }
        group.finish();
    }
}

criterion_group!(benches, warm_step);
criterion_main!(benches);
