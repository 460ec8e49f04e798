//! Registry records and component blobs of the embedded backend.

use std::collections::HashMap;

use bytes::Bytes;

use super::MemoryBackend;
use crate::backend::{BackendError, Published, VersionRecord};

/// `(tenant, name)` -> versions, oldest first.
#[derive(Default)]
pub(super) struct Registry {
    components: HashMap<(String, String), Vec<VersionRecord>>,
}

impl Registry {
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
        Published::Created(record)
    }

    pub(super) fn versions(&self, tenant: &str, name: &str) -> Vec<VersionRecord> {
        self.components
            .get(&(tenant.to_string(), name.to_string()))
            .cloned()
            .unwrap_or_default()
    }
}

impl MemoryBackend {
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
