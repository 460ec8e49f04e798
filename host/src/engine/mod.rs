//! Weft's wasmtime policy, and the only place that configures wasmtime: pooling
//! allocator, epoch ticker, fuel, memory limiter, a WASI context that grants
//! nothing, and the capabilities a step is granted (`capability`).

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
    #[error("the component imports {0}, which Weft does not provide")]
    UnsatisfiedImport(String),
    #[error(
        "the component does not export `run: func(input: string) -> result<string, step-error>` \
         of world `weft:step/step`: {0}"
    )]
    WrongExport(String),
    #[error("cannot load compiled artifact: {0}")]
    Artifact(String),
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

        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
        type Data = wasmtime::component::HasSelf<StepHost>;
        // World 0.2.0's own interfaces; its `wasi:http` is linked above.
        v2::weft::step::host::add_to_linker::<_, Data>(&mut linker, |h| h)?;
        v2::weft::step::secrets::add_to_linker::<_, Data>(&mut linker, |h| h)?;
        v2::weft::step::types::add_to_linker::<_, Data>(&mut linker, |h| h)?;
        v1::Step::add_to_linker::<_, Data>(&mut linker, |h| h)?;
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
        let component = Component::new(&self.engine, bytes)
            .map_err(|e| ComponentError::Invalid(root_cause(&e)))?;
        self.compiles.fetch_add(1, Ordering::Relaxed);
        let linked = self.link(&component)?;
        let artifact = component
            .serialize()
            .map_err(|e| ComponentError::Artifact(root_cause(&e)))?;
        Ok((linked, artifact))
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
        let instance_pre = self.linker.instantiate_pre(component).map_err(|e| {
            let msg = root_cause(&e);
            ComponentError::UnsatisfiedImport(describe_import(&msg))
        })?;
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

/// wasmtime names the missing import in its message: keep that part.
fn describe_import(msg: &str) -> String {
    match msg.find("import `") {
        Some(start) => {
            let rest = &msg[start + "import ".len()..];
            match rest[1..].find('`') {
                Some(end) => format!("{} ({msg})", &rest[..end + 2]),
                None => msg.to_string(),
            }
        }
        None => msg.to_string(),
    }
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
