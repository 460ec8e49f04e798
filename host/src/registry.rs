//! Publish components and resolve `name@requirement` to a digest, per tenant.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use semver::{Version, VersionReq};

use crate::backend::{BackendError, Published, StateStore, VersionRecord};
use crate::cache::ComponentCache;
use crate::engine::ComponentError;
use crate::scheduler::clock::Clock;
use crate::workflow::{ComponentResolver, is_valid_name};

/// Why a publish was refused.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error(
        "invalid component name {0:?}: use lowercase letters, digits, `_` and `-`, starting with a letter"
    )]
    InvalidName(String),
    #[error("invalid version {0:?}: versions are semantic versions such as 1.2.3")]
    InvalidVersion(String),
    #[error(transparent)]
    Component(#[from] ComponentError),
    #[error(transparent)]
    Backend(#[from] BackendError),
}

/// The component registry of a node.
pub struct Registry {
    store: Arc<dyn StateStore>,
    cache: Arc<ComponentCache>,
    clock: Arc<dyn Clock>,
}

impl Registry {
    pub fn new(
        store: Arc<dyn StateStore>,
        cache: Arc<ComponentCache>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            store,
            cache,
            clock,
        }
    }

    /// Checks the bytes exactly as a run would use them (compiling them), stores
    /// the blob once per digest and records the immutable version.
    pub async fn publish(
        &self,
        tenant: &str,
        name: &str,
        version: &str,
        bytes: Bytes,
    ) -> Result<Published, PublishError> {
        if !is_valid_name(name) {
            return Err(PublishError::InvalidName(name.to_string()));
        }
        let parsed = Version::parse(version)
            .map_err(|_| PublishError::InvalidVersion(version.to_string()))?;
        let size = bytes.len() as u64;
        let digest = self.cache.add(bytes.clone()).await?;
        self.store.put_blob(&digest, bytes).await?;
        let record = VersionRecord {
            name: name.to_string(),
            version: parsed.to_string(),
            digest,
            size,
            published_at: self.clock.now(),
        };
        Ok(self.store.publish(tenant, record).await?)
    }

    /// The versions of every component `names` mention, for resolving a document.
    pub async fn snapshot<'a>(
        &self,
        tenant: &str,
        names: impl IntoIterator<Item = &'a str>,
    ) -> Result<Snapshot, BackendError> {
        let mut snapshot = Snapshot::default().with_unknown_hint(": publish it first");
        for name in names {
            if snapshot.versions.contains_key(name) {
                continue;
            }
            let versions = self.store.versions(tenant, name).await?;
            for v in versions {
                if let Ok(parsed) = Version::parse(&v.version) {
                    snapshot.add(name, parsed, v.digest);
                }
            }
            snapshot.versions.entry(name.to_string()).or_default();
        }
        Ok(snapshot)
    }
}

/// The component names a document refers to, read leniently (the document is
/// validated afterwards).
pub fn referenced_names(doc: &serde_json::Value) -> Vec<&str> {
    let mut names: Vec<&str> = doc
        .get("steps")
        .and_then(|s| s.as_array())
        .into_iter()
        .flatten()
        .filter_map(|step| step.get("component")?.as_str())
        .filter_map(|c| c.split_once('@').map(|(name, _)| name))
        .collect();
    names.sort_unstable();
    names.dedup();
    names
}

/// Known versions of some components, each with its pin; resolves a
/// requirement to the highest matching version.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    versions: HashMap<String, Vec<(Version, String)>>,
    unknown_hint: String,
}

impl Snapshot {
    /// What to tell the user about a component that is not known at all.
    pub fn with_unknown_hint(mut self, hint: impl Into<String>) -> Self {
        self.unknown_hint = hint.into();
        self
    }

    /// Adds a version of `name` pinned as `pin`.
    pub fn add(&mut self, name: &str, version: Version, pin: String) {
        self.versions
            .entry(name.to_string())
            .or_default()
            .push((version, pin));
    }
}

impl ComponentResolver for Snapshot {
    fn resolve(&self, name: &str, requirement: &VersionReq) -> Result<String, String> {
        let versions = match self.versions.get(name) {
            Some(v) if !v.is_empty() => v,
            _ => {
                let hint = self.unknown_hint.replace("{name}", name);
                return Err(format!("unknown component \"{name}\"{hint}"));
            }
        };
        versions
            .iter()
            .filter(|(v, _)| requirement.matches(v))
            .max_by(|a, b| a.0.cmp(&b.0))
            .map(|(_, pin)| pin.clone())
            .ok_or_else(|| {
                let mut available: Vec<&Version> = versions.iter().map(|(v, _)| v).collect();
                available.sort();
                let available: Vec<String> = available.iter().map(|v| v.to_string()).collect();
                format!(
                    "no version of \"{name}\" matches {requirement} (available: {})",
                    available.join(", ")
                )
            })
    }
}
