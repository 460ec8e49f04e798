//! Tenants, registry records and component blobs of the embedded backend.
//! Tenants and records are written to one JSON file after every change, so
//! that they survive a restart; blobs go to their own files.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::MemoryBackend;
use crate::backend::{BackendError, Limits, Published, TenantRecord, VersionRecord};

/// Tenants and `(tenant, name)` -> versions, oldest first.
#[derive(Default)]
pub(super) struct Registry {
    components: HashMap<(String, String), Vec<VersionRecord>>,
    tenants: HashMap<String, TenantRecord>,
    /// API key hash -> tenant name.
    keys: HashMap<String, String>,
    /// Bumped by every change, so that a slow write never replaces a newer one.
    revision: u64,
}

/// The file form of [`Registry`].
#[derive(Serialize, Deserialize)]
struct Saved {
    tenants: Vec<TenantRecord>,
    /// tenant -> name -> versions
    components: BTreeMap<String, BTreeMap<String, Vec<VersionRecord>>>,
}

impl Registry {
    pub(super) fn from_json(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        let saved: Saved = serde_json::from_slice(bytes)?;
        let mut registry = Self::default();
        for tenant in saved.tenants {
            registry.create_tenant(tenant);
        }
        for (tenant, names) in saved.components {
            for (name, versions) in names {
                registry.components.insert((tenant.clone(), name), versions);
            }
        }
        Ok(registry)
    }

    fn to_json(&self) -> Vec<u8> {
        let mut saved = Saved {
            tenants: self.tenants.values().cloned().collect(),
            components: BTreeMap::new(),
        };
        saved.tenants.sort_by(|a, b| a.name.cmp(&b.name));
        for ((tenant, name), versions) in &self.components {
            saved
                .components
                .entry(tenant.clone())
                .or_default()
                .insert(name.clone(), versions.clone());
        }
        serde_json::to_vec_pretty(&saved).expect("registry serialises")
    }

    pub(super) fn publish(&mut self, tenant: &str, record: VersionRecord) -> Published {
        let versions = self
            .components
            .entry((tenant.to_string(), record.name.clone()))
            .or_default();
        if let Some(existing) = versions.iter().find(|v| v.version == record.version) {
            return if existing.digest == record.digest {
                Published::Unchanged(existing.clone())
            } else {
                Published::Conflict(existing.clone())
            };
        }
        versions.push(record.clone());
        self.revision += 1;
        Published::Created(record)
    }

    pub(super) fn versions(&self, tenant: &str, name: &str) -> Vec<VersionRecord> {
        self.components
            .get(&(tenant.to_string(), name.to_string()))
            .cloned()
            .unwrap_or_default()
    }

    pub(super) fn names(&self, tenant: &str) -> Vec<String> {
        let mut names: Vec<String> = self
            .components
            .iter()
            .filter(|((t, _), versions)| t == tenant && !versions.is_empty())
            .map(|((_, name), _)| name.clone())
            .collect();
        names.sort();
        names
    }

    pub(super) fn create_tenant(&mut self, tenant: TenantRecord) -> bool {
        if self.tenants.contains_key(&tenant.name) {
            return false;
        }
        for hash in &tenant.key_hashes {
            self.keys.insert(hash.clone(), tenant.name.clone());
        }
        self.tenants.insert(tenant.name.clone(), tenant);
        self.revision += 1;
        true
    }

    pub(super) fn tenant(&self, name: &str) -> Option<TenantRecord> {
        self.tenants.get(name).cloned()
    }

    pub(super) fn tenant_by_key(&self, key_hash: &str) -> Option<TenantRecord> {
        self.keys
            .get(key_hash)
            .and_then(|name| self.tenants.get(name))
            .cloned()
    }

    pub(super) fn set_limits(&mut self, name: &str, limits: Limits) -> bool {
        let Some(tenant) = self.tenants.get_mut(name) else {
            return false;
        };
        tenant.limits = limits;
        self.revision += 1;
        true
    }
}

impl MemoryBackend {
    /// Writes tenants and registry records to the state file, whole or not at all.
    pub(super) async fn persist(&self) -> Result<(), BackendError> {
        let Some(path) = &self.state_file else {
            return Ok(());
        };
        let _writing = self.persisting.lock().await;
        let (revision, bytes) = {
            let inner = self.lock();
            (inner.registry.revision, inner.registry.to_json())
        };
        let io = |e: std::io::Error| BackendError::Unavailable(format!("{}: {e}", path.display()));
        let dir = path.parent().expect("the state file is in a directory");
        tokio::fs::create_dir_all(dir).await.map_err(io)?;
        let tmp = path.with_extension(format!("tmp-{revision}"));
        tokio::fs::write(&tmp, &bytes).await.map_err(io)?;
        let file = tokio::fs::File::open(&tmp).await.map_err(io)?;
        file.sync_all().await.map_err(io)?;
        tokio::fs::rename(&tmp, path).await.map_err(io)?;
        Ok(())
    }

    pub(super) async fn put_blob_now(
        &self,
        digest: &str,
        bytes: Bytes,
    ) -> Result<(), BackendError> {
        let Some(dir) = &self.blob_dir else {
            self.lock().blobs.entry(digest.to_string()).or_insert(bytes);
            return Ok(());
        };
        let path = dir.join(blob_file(digest));
        if tokio::fs::try_exists(&path).await.unwrap_or(false) {
            return Ok(());
        }
        // Write whole or not at all: a reader never sees half a blob.
        let tmp = dir.join(format!(
            "{}.tmp-{}",
            blob_file(digest),
            rand::random::<u32>()
        ));
        let io = |e: std::io::Error| {
            BackendError::Unavailable(format!("blob store {}: {e}", dir.display()))
        };
        tokio::fs::create_dir_all(dir).await.map_err(io)?;
        tokio::fs::write(&tmp, &bytes).await.map_err(io)?;
        tokio::fs::rename(&tmp, &path).await.map_err(io)?;
        Ok(())
    }

    pub(super) async fn blob_now(&self, digest: &str) -> Result<Option<Bytes>, BackendError> {
        if let Some(bytes) = self.lock().blobs.get(digest) {
            return Ok(Some(bytes.clone()));
        }
        let Some(dir) = &self.blob_dir else {
            return Ok(None);
        };
        match tokio::fs::read(dir.join(blob_file(digest))).await {
            Ok(bytes) => Ok(Some(Bytes::from(bytes))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(BackendError::Unavailable(format!(
                "blob store {}: {e}",
                dir.display()
            ))),
        }
    }
}

/// `sha256:<hex>` -> `<hex>.wasm`
fn blob_file(digest: &str) -> String {
    format!("{}.wasm", digest.trim_start_matches("sha256:"))
}
