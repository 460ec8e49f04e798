//! digest -> compiled component -> linked `InstancePre`: a memory LRU bounded by
//! count, then serialized artifacts on disk keyed by digest and engine
//! fingerprint, then compilation.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use lru::LruCache;
use sha2::{Digest as _, Sha256};

use crate::backend::BackendError;
use crate::engine::{ComponentError, Engine, Linked};

/// Why a component could not be made ready to run.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("component {0} is not in the blob store")]
    Missing(String),
    #[error("blob {digest} is corrupt: its bytes hash to {actual}")]
    Corrupt { digest: String, actual: String },
    #[error(transparent)]
    Component(#[from] ComponentError),
    #[error(transparent)]
    Backend(#[from] BackendError),
}

/// Counters of where components came from.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct CacheStats {
    /// Found in memory.
    pub hits: u64,
    /// Not in memory.
    pub misses: u64,
    /// Loaded from a serialized artifact on disk.
    pub loads: u64,
    /// Compiled from bytes.
    pub compiles: u64,
}

/// The `sha256:<hex>` digest of component bytes.
pub fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// Compiled components of one engine.
pub struct ComponentCache {
    engine: Arc<Engine>,
    memory: Mutex<LruCache<String, Linked>>,
    artifacts: Option<PathBuf>,
    /// One load at a time: concurrent misses of the same digest compile once.
    /// One lock per digest being loaded or compiled: a component is compiled
    /// once at a time, and different components compile in parallel.
    loading: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    hits: AtomicU64,
    misses: AtomicU64,
    loads: AtomicU64,
    compiles: AtomicU64,
}

impl ComponentCache {
    /// A cache holding up to `capacity` linked components in memory and, with a
    /// data directory, artifacts under `<data_dir>/artifacts/<fingerprint>/`.
    pub fn new(engine: Arc<Engine>, data_dir: Option<&Path>, capacity: usize) -> Self {
        let artifacts = data_dir.map(|d| d.join("artifacts").join(engine.fingerprint()));
        Self {
            engine,
            memory: Mutex::new(LruCache::new(
                NonZeroUsize::new(capacity.max(1)).expect("non-zero"),
            )),
            artifacts,
            loading: std::sync::Mutex::new(HashMap::new()),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            loads: AtomicU64::new(0),
            compiles: AtomicU64::new(0),
        }
    }

    /// The engine components are compiled for.
    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// Counters since this cache was created.
    pub fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            loads: self.loads.load(Ordering::Relaxed),
            compiles: self.compiles.load(Ordering::Relaxed),
        }
    }

    /// The linked component for `digest`, fetching its bytes with `fetch` only
    /// when neither memory nor an artifact on disk has it.
    pub async fn get<F>(&self, digest: &str, fetch: F) -> Result<Linked, CacheError>
    where
        F: std::future::Future<Output = Result<Option<Bytes>, BackendError>>,
    {
        if let Some(linked) = self.memory.lock().unwrap().get(digest) {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(linked.clone());
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        let _one_at_a_time = self.lock_digest(digest).await;
        if let Some(linked) = self.memory.lock().unwrap().get(digest) {
            return Ok(linked.clone());
        }
        if let Some(linked) = self.load_artifact(digest).await {
            self.remember(digest, &linked);
            return Ok(linked);
        }
        let bytes = fetch
            .await?
            .ok_or_else(|| CacheError::Missing(digest.to_string()))?;
        let actual = self::digest(&bytes);
        if actual != digest {
            return Err(CacheError::Corrupt {
                digest: digest.to_string(),
                actual,
            });
        }
        let linked = self.compile_and_store(digest, bytes).await?;
        Ok(linked)
    }

    /// Checks and compiles bytes that are about to be published, and caches the
    /// result; returns their digest. This is the full check of `weft exec` and
    /// of the registry.
    pub async fn add(&self, bytes: Bytes) -> Result<String, ComponentError> {
        let digest = self::digest(&bytes);
        if self.memory.lock().unwrap().contains(&digest) {
            return Ok(digest);
        }
        let _one_at_a_time = self.lock_digest(&digest).await;
        if self.memory.lock().unwrap().contains(&digest) {
            return Ok(digest);
        }
        if let Some(linked) = self.load_artifact(&digest).await {
            self.remember(&digest, &linked);
            return Ok(digest);
        }
        match self.compile_and_store(&digest, bytes).await {
            Ok(_) => Ok(digest),
            Err(CacheError::Component(e)) => Err(e),
            Err(e) => Err(ComponentError::Invalid(e.to_string())),
        }
    }

    /// Checks bytes about to be published, whose digest is `digest`, without
    /// compiling their code ([`Engine::check`]).
    pub async fn check(&self, digest: &str, bytes: Bytes) -> Result<(), ComponentError> {
        if self.memory.lock().unwrap().contains(digest) {
            return Ok(());
        }
        let engine = self.engine.clone();
        tokio::task::spawn_blocking(move || engine.check(&bytes))
            .await
            .map_err(|e| ComponentError::Invalid(format!("checker crashed: {e}")))?
    }

    /// Compiles `bytes` in the background, unless memory or an artifact has
    /// them already; a step that needs them meanwhile waits for this compile
    /// (the digest's lock) instead of starting another.
    pub fn prepare(self: &Arc<Self>, digest: String, bytes: Bytes) {
        let cache = self.clone();
        tokio::spawn(async move {
            if let Err(e) = cache.get(&digest, async { Ok(Some(bytes)) }).await {
                tracing::warn!(%digest, error = %e, "a published component does not compile; its steps fail component_unavailable");
            }
        });
    }

    /// Holds the lock of `digest` until the guard is dropped; the lock is
    /// forgotten once nobody holds or waits for it.
    async fn lock_digest(&self, digest: &str) -> DigestGuard<'_> {
        let lock = self
            .loading
            .lock()
            .unwrap()
            .entry(digest.to_string())
            .or_default()
            .clone();
        let guard = lock.clone().lock_owned().await;
        DigestGuard {
            cache: self,
            digest: digest.to_string(),
            lock,
            guard: Some(guard),
        }
    }

    async fn compile_and_store(&self, digest: &str, bytes: Bytes) -> Result<Linked, CacheError> {
        let engine = self.engine.clone();
        let (linked, artifact) = tokio::task::spawn_blocking(move || engine.compile(&bytes))
            .await
            .map_err(|e| ComponentError::Invalid(format!("compiler crashed: {e}")))??;
        self.compiles.fetch_add(1, Ordering::Relaxed);
        if let Some(dir) = &self.artifacts
            && let Err(e) = write_atomically(dir, &artifact_file(digest), &artifact).await
        {
            tracing::warn!(%digest, error = %e, "cannot store compiled artifact; will compile again next start");
        }
        self.remember(digest, &linked);
        Ok(linked)
    }

    async fn load_artifact(&self, digest: &str) -> Option<Linked> {
        let path = self.artifacts.as_ref()?.join(artifact_file(digest));
        let bytes = tokio::fs::read(&path).await.ok()?;
        let engine = self.engine.clone();
        match tokio::task::spawn_blocking(move || engine.load_artifact(&bytes)).await {
            Ok(Ok(linked)) => {
                self.loads.fetch_add(1, Ordering::Relaxed);
                Some(linked)
            }
            Ok(Err(e)) => {
                tracing::warn!(path = %path.display(), error = %e, "ignoring unusable artifact; compiling instead");
                None
            }
            Err(_) => None,
        }
    }

    fn remember(&self, digest: &str, linked: &Linked) {
        self.memory
            .lock()
            .unwrap()
            .put(digest.to_string(), linked.clone());
    }
}

fn artifact_file(digest: &str) -> String {
    format!("{}.cwasm", digest.trim_start_matches("sha256:"))
}

async fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    tokio::fs::create_dir_all(dir).await?;
    let tmp = dir.join(format!("{name}.tmp-{}", rand::random::<u32>()));
    tokio::fs::write(&tmp, bytes).await?;
    tokio::fs::rename(&tmp, dir.join(name)).await
}

/// The lock of one digest in [`ComponentCache::lock_digest`].
struct DigestGuard<'a> {
    cache: &'a ComponentCache,
    digest: String,
    lock: Arc<tokio::sync::Mutex<()>>,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl Drop for DigestGuard<'_> {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut locks = self.cache.loading.lock().unwrap();
        // Two references: the map's and ours. Nobody else waits for it.
        if Arc::strong_count(&self.lock) == 2 {
            locks.remove(&self.digest);
        }
    }
}
