//! Weft's wasmtime policy, and the only place that configures wasmtime: pooling
//! allocator, epoch ticker, fuel, memory limiter, a WASI context that grants
//! nothing, and the capabilities a step is granted (`capability`).

mod check;
mod host;
mod output;
mod run;

use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Enabled, InstanceAllocationStrategy, OptLevel, PoolingAllocationConfig};

use crate::bindings::{v1, v2};
use crate::capability::http::Outbound;

pub(crate) use host::Attempt;
pub use host::{Grants, LogLine, StepHost};
pub use run::{Execution, Failure, Invocation, StepLimits};

/// How a node's wasmtime engine is set up. Every field changes either the
/// generated code (and so the engine fingerprint) or the pool's capacity.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineConfig {
    /// Steps this node runs at once; the instance pool is sized for it.
    pub max_concurrency: u32,
    /// Largest linear memory any step may be given, in MiB.
    pub max_memory_mb: u32,
    /// How often the epoch advances; the granularity of deadlines and cancellation.
    pub epoch_tick_ms: u64,
    /// Cranelift optimisation; `false` compiles faster and runs slower.
    pub optimize: bool,
    /// PEM files of CA certificates that steps' HTTPS requests trust besides
    /// webpki's roots (a private CA).
    #[serde(default)]
    pub http_ca_files: Vec<std::path::PathBuf>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            max_concurrency: 64,
            max_memory_mb: 4096,
            epoch_tick_ms: 10,
            optimize: true,
            http_ca_files: Vec::new(),
        }
    }
}

/// Why bytes cannot become a runnable step component.
#[derive(Debug, thiserror::Error)]
pub enum ComponentError {
    #[error("not a WebAssembly file: it does not start with the `\\0asm` magic number")]
    NotWasm,
    #[error(
        "this is a core WebAssembly module, not a component: build it with `--target wasm32-wasip2` \
         (or wrap it with `wasm-tools component new`)"
    )]
    CoreModule,
    #[error("invalid component: {0}")]
    Invalid(String),
    #[error("the component's imports do not match what Weft links: {0}")]
    UnsatisfiedImport(String),
    /// Imports the host does not link at all: each with what to do about it.
    #[error("{}", unlinked_message(.0))]
    Unlinked(Vec<(String, &'static str)>),
    #[error(
        "the component does not export `run: func(input: string) -> result<string, step-error>` \
         of world `weft:step/step`: {0}"
    )]
    WrongExport(String),
    #[error("cannot load compiled artifact: {0}")]
    Artifact(String),
}

fn unlinked_message(imports: &[(String, &'static str)]) -> String {
    let each: Vec<String> = imports
        .iter()
        .map(|(name, fix)| format!("`{name}` not linked: {fix}"))
        .collect();
    format!(
        "the component imports {} interface(s) Weft does not link: {}",
        imports.len(),
        each.join("; ")
    )
}

/// A compiled component whose imports are linked and whose `run` export has
/// the step signature: the only state in which a component can be run.
#[derive(Clone)]
pub struct Linked {
    pre: Pre,
}

/// The world version a component was built against.
#[derive(Clone)]
enum Pre {
    V1(v1::StepPre<StepHost>),
    V2(v2::StepPre<StepHost>),
}

/// The node's wasmtime engine with Weft's policy applied.
pub struct Engine {
    engine: wasmtime::Engine,
    linker: Linker<StepHost>,
    fingerprint: String,
    tick: Duration,
    compiles: AtomicU64,
    outbound: Outbound,
    /// What the linker links, by interface name (`check`).
    linked: std::collections::BTreeSet<String>,
    /// The engine and linker of [`Engine::check`].
    checker: wasmtime::Engine,
    check_linker: Linker<StepHost>,
    check_pool: rayon::ThreadPool,
}

impl Engine {
    /// Builds the engine, its linker, and starts the epoch ticker thread.
    pub fn new(config: &EngineConfig) -> anyhow::Result<Arc<Self>> {
        let mut pool = PoolingAllocationConfig::new();
        let slots = config.max_concurrency.max(1);
        pool.total_component_instances(slots + 8)
            .total_core_instances((slots + 8) * 16)
            .total_memories((slots + 8) * 4)
            .total_tables((slots + 8) * 16)
            .total_stacks(slots + 8)
            .max_memory_size(config.max_memory_mb as usize * (1 << 20))
            // A step component is one program, not a composition of hundreds:
            // bounding these keeps one component from draining the shared pool.
            .max_memories_per_component(4)
            .max_tables_per_component(16)
            .max_core_instances_per_component(16)
            // Keep a little of each memory mapped so that small steps do not fault
            // in fresh pages on every instantiation.
            .linear_memory_keep_resident(128 << 10)
            .table_keep_resident(16 << 10)
            // Where the kernel reports which pages a step wrote (PAGEMAP_SCAN, Linux
            // 6.7+), reset only those, by hand, up to the amount kept resident: no
            // `madvise`, so no TLB shootdowns across cores and no page faults at the
            // next instantiation. Elsewhere wasmtime falls back to memset + madvise.
            .pagemap_scan(Enabled::Auto)
            .max_unused_warm_slots(slots);

        let mut wasm = Config::new();
        wasm.allocation_strategy(InstanceAllocationStrategy::Pooling(pool))
            .wasm_component_model(true)
            .epoch_interruption(true)
            .consume_fuel(true)
            .cranelift_opt_level(if config.optimize {
                OptLevel::Speed
            } else {
                OptLevel::None
            });
        let engine = wasmtime::Engine::new(&wasm)?;
        let linker = step_linker(&engine)?;
        // Publishing type-checks stubs on an engine of its own, unoptimised,
        // whose compiles run on a thread pool of their own (`check_pool`), so
        // that a check never queues behind a large component compiling in the
        // background on the shared pool.
        let mut checking = Config::new();
        checking
            .wasm_component_model(true)
            .epoch_interruption(true)
            .consume_fuel(true)
            .cranelift_opt_level(OptLevel::None);
        let check_pool = rayon::ThreadPoolBuilder::new()
            .thread_name(|i| format!("weft-check-{i}"))
            .build()?;
        let checker = wasmtime::Engine::new(&checking)?;
        let check_linker = step_linker(&checker)?;
        let outbound = Outbound::new(&config.http_ca_files)?;

        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let fingerprint = format!("{:016x}", hasher.finish());

        let tick = Duration::from_millis(config.epoch_tick_ms.max(1));
        spawn_epoch_ticker(engine.weak(), tick);

        Ok(Arc::new(Self {
            engine,
            linker,
            fingerprint,
            tick,
            compiles: AtomicU64::new(0),
            outbound,
            linked: check::linked_interfaces(),
            checker,
            check_linker,
            check_pool,
        }))
    }

    /// Identifies the code this engine generates; compiled artifacts are keyed by it.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// How many components this engine has compiled from bytes.
    pub fn compiles(&self) -> u64 {
        self.compiles.load(Ordering::Relaxed)
    }

    /// Compiles and checks component bytes: is it a component, are its imports
    /// satisfiable, does it export `run` with the step signature?
    pub fn compile(&self, bytes: &[u8]) -> Result<(Linked, Vec<u8>), ComponentError> {
        check_header(bytes)?;
        self.check_imports(bytes)?;
        let component = Component::new(&self.engine, bytes)
            .map_err(|e| ComponentError::Invalid(root_cause(&e)))?;
        self.compiles.fetch_add(1, Ordering::Relaxed);
        let linked = self.link(&component)?;
        let artifact = component
            .serialize()
            .map_err(|e| ComponentError::Artifact(root_cause(&e)))?;
        Ok((linked, artifact))
    }

    /// Checks bytes as [`Engine::compile`] does, without compiling their code:
    /// each import the host does not link is named, and the types of
    /// imports and of `run` are checked on a stub of the component whose
    /// functions do nothing (`check`). Compiling can still fail where the
    /// code itself is beyond wasmtime, which the stub does not carry.
    pub fn check(&self, bytes: &[u8]) -> Result<(), ComponentError> {
        let started = std::time::Instant::now();
        check_header(bytes)?;
        self.check_imports(bytes)?;
        let stub = check::stub(bytes)?;
        let stubbed = started.elapsed();
        let component = self
            .check_pool
            .install(|| Component::new(&self.checker, &stub))
            .map_err(|e| ComponentError::Invalid(root_cause(&e)))?;
        let compiled = started.elapsed();
        link(&self.check_linker, &component)?;
        tracing::debug!(
            bytes = bytes.len(),
            stub_bytes = stub.len(),
            validated_and_stubbed_ms = stubbed.as_millis() as u64,
            stub_compiled_ms = (compiled - stubbed).as_millis() as u64,
            linked_ms = (started.elapsed() - compiled).as_millis() as u64,
            "component checked"
        );
        Ok(())
    }

    /// Names every import of the component the host does not link.
    fn check_imports(&self, bytes: &[u8]) -> Result<(), ComponentError> {
        let unlinked = check::unlinked_imports(bytes, &self.linked);
        if unlinked.is_empty() {
            return Ok(());
        }
        Err(ComponentError::Unlinked(
            unlinked
                .into_iter()
                .map(|name| {
                    let fix = check::fix_for(&name);
                    (name, fix)
                })
                .collect(),
        ))
    }

    /// Loads an artifact previously produced by [`Engine::compile`] with an
    /// engine of the same fingerprint.
    pub fn load_artifact(&self, artifact: &[u8]) -> Result<Linked, ComponentError> {
        // SAFETY: artifacts come only from this node's own data directory, written by
        // `compile` of an engine with the same fingerprint; wasmtime still checks the
        // header and rejects artifacts from another version or configuration.
        let component = unsafe { Component::deserialize(&self.engine, artifact) }
            .map_err(|e| ComponentError::Artifact(root_cause(&e)))?;
        self.link(&component)
    }

    fn link(&self, component: &Component) -> Result<Linked, ComponentError> {
        link(&self.linker, component)
    }

    pub(crate) fn wasmtime(&self) -> &wasmtime::Engine {
        &self.engine
    }

    pub(crate) fn tick(&self) -> Duration {
        self.tick
    }

    pub(crate) fn outbound(&self) -> &Outbound {
        &self.outbound
    }
}

/// Links a component's imports and finds its `run` export, of either world version.
fn link(linker: &Linker<StepHost>, component: &Component) -> Result<Linked, ComponentError> {
    let instance_pre = linker
        .instantiate_pre(component)
        .map_err(|e| ComponentError::UnsatisfiedImport(root_cause(&e)))?;
    // A component of either version exports `run` with its own `step-error`.
    let pre = match v2::StepPre::new(instance_pre.clone()) {
        Ok(pre) => Pre::V2(pre),
        Err(v2_error) => match v1::StepPre::new(instance_pre) {
            Ok(pre) => Pre::V1(pre),
            Err(_) => return Err(ComponentError::WrongExport(root_cause(&v2_error))),
        },
    };
    Ok(Linked { pre })
}

/// Every import a step may have: WASI 0.2 (granting nothing), wasi:http
/// (under the step's policy) and both versions of the `weft:step` world.
fn step_linker(engine: &wasmtime::Engine) -> anyhow::Result<Linker<StepHost>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
    type Data = wasmtime::component::HasSelf<StepHost>;
    // World 0.2.0's own interfaces; its `wasi:http` is linked above.
    v2::weft::step::host::add_to_linker::<_, Data>(&mut linker, |h| h)?;
    v2::weft::step::secrets::add_to_linker::<_, Data>(&mut linker, |h| h)?;
    v2::weft::step::types::add_to_linker::<_, Data>(&mut linker, |h| h)?;
    v1::Step::add_to_linker::<_, Data>(&mut linker, |h| h)?;
    Ok(linker)
}

fn check_header(bytes: &[u8]) -> Result<(), ComponentError> {
    const MAGIC: &[u8; 4] = b"\0asm";
    if bytes.len() < 8 || &bytes[..4] != MAGIC {
        return Err(ComponentError::NotWasm);
    }
    // Core modules carry version 1 with layer 0; components carry layer 1.
    if bytes[4..8] == [1, 0, 0, 0] {
        return Err(ComponentError::CoreModule);
    }
    Ok(())
}

fn root_cause(e: &wasmtime::Error) -> String {
    let chain: Vec<String> = e.chain().map(|c| c.to_string()).collect();
    chain.join(": ")
}

fn spawn_epoch_ticker(engine: wasmtime::EngineWeak, tick: Duration) {
    std::thread::Builder::new()
        .name("weft-epoch".into())
        .spawn(move || {
            loop {
                std::thread::sleep(tick);
                match engine.upgrade() {
                    Some(engine) => engine.increment_epoch(),
                    None => break,
                }
            }
        })
        .expect("spawn epoch ticker thread");
}

#[cfg(test)]
mod tests;
