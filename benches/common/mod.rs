//! Shared set-up of the benchmarks: one warm Weft node in this process, built
//! as `weft exec` builds it (engine, component cache, embedded backend).

#![allow(dead_code)]

use std::sync::Arc;

use bytes::Bytes;
use weft::backend::StateStore;
use weft::backend::memory::{MemoryBackend, Retention};
use weft::cache::ComponentCache;
use weft::engine::{Engine, EngineConfig, Invocation, StepLimits};
use weft::scheduler::clock::{Clock, SystemClock};
use weft::scheduler::model::StepDefaults;

/// Steps run at once: the default of `weft exec` and `weft serve`.
pub const CONCURRENCY: u32 = 64;

/// The runtime the node runs on, as in the `weft` binary.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// An engine with Weft's policy and the default configuration.
pub fn engine() -> Arc<Engine> {
    Engine::new(&EngineConfig {
        max_concurrency: CONCURRENCY,
        ..EngineConfig::default()
    })
    .expect("engine")
}

/// The bytes of a built component.
pub fn read(path: &str) -> Bytes {
    Bytes::from(std::fs::read(path).unwrap_or_else(|e| panic!("{path}: {e}")))
}

/// Engine, component cache and embedded backend of one node.
pub struct Node {
    pub cache: Arc<ComponentCache>,
    pub backend: Arc<MemoryBackend>,
    pub clock: Arc<dyn Clock>,
}

impl Node {
    /// A node that keeps only the last few finished runs, so that a long
    /// benchmark does not grow its memory.
    pub fn new() -> Self {
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let retention = Retention { max_finished: 16 };
        Self {
            cache: Arc::new(ComponentCache::new(engine(), None, 256)),
            backend: MemoryBackend::new(clock.clone(), None, retention),
            clock,
        }
    }

    /// Compiles a component into the cache and stores its blob, as publishing
    /// does; returns its digest.
    pub async fn add(&self, path: &str) -> String {
        let bytes = read(path);
        let digest = self
            .cache
            .add(bytes.clone())
            .await
            .expect("component compiles");
        self.backend
            .put_blob(&digest, bytes)
            .await
            .expect("blob stored");
        digest
    }
}

/// The limits a step gets from the default tenant limits.
pub fn limits() -> StepLimits {
    let d = StepDefaults::default();
    StepLimits {
        fuel: d.fuel,
        memory_bytes: (d.memory_mb as usize) << 20,
        timeout: std::time::Duration::from_millis(d.timeout_ms),
        output_bytes: d.output_bytes,
    }
}

/// Who runs the step, as the worker builds it from a claimed task.
pub fn invocation() -> Invocation {
    Invocation {
        tenant: "default".to_string(),
        run_id: "run_0000000000000000000000000000".to_string(),
        step_id: "step".to_string(),
        attempt: 1,
    }
}
