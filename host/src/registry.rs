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
    /// The tenant's blobs would take more than its `storage_bytes`.
    #[error(
        "the tenant's components take {used} bytes; {size} more would pass its storage_bytes of {limit}: delete nothing is possible yet, so ask the operator to raise the limit"
    )]
    QuotaExceeded { used: u64, size: u64, limit: u64 },
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

    /// Checks the bytes (types, imports and `run`, without compiling their
    /// code), stores the blob once per digest, records the immutable version
    /// and starts compiling it in the background.
    pub async fn publish(
        &self,
        tenant: &str,
        name: &str,
        version: &str,
        bytes: Bytes,
        storage_bytes: u64,
    ) -> Result<Published, PublishError> {
        if !is_valid_name(name) {
            return Err(PublishError::InvalidName(name.to_string()));
        }
        let parsed = Version::parse(version)
            .map_err(|_| PublishError::InvalidVersion(version.to_string()))?;
        let size = bytes.len() as u64;
        let digest = crate::cache::digest(&bytes);
        // Refused before anything is stored or compiled: an existing version,
        // and a blob over the tenant's storage.
        let existing = self.store.versions(tenant, name).await?;
        if let Some(same) = existing.iter().find(|v| v.version == parsed.to_string()) {
            return Ok(if same.digest == digest {
                Published::Unchanged(same.clone())
            } else {
                Published::Conflict(same.clone())
            });
        }
        let used = self.stored_bytes(tenant, &digest).await?;
        if let Some(used) = used
            && used.saturating_add(size) > storage_bytes
        {
            return Err(PublishError::QuotaExceeded {
                used,
                size,
                limit: storage_bytes,
            });
        }
        // Checked without compiling, so that publishing answers fast; the
        // code is compiled in the background once the version is recorded.
        self.cache.check(&digest, bytes.clone()).await?;
        self.store.put_blob(&digest, bytes.clone()).await?;
        let record = VersionRecord {
            name: name.to_string(),
            version: parsed.to_string(),
            digest: digest.clone(),
            size,
            published_at: self.clock.now(),
        };
        let published = self.store.publish(tenant, record).await?;
        if matches!(published, Published::Created(_)) {
            self.cache.prepare(digest, bytes);
        }
        Ok(published)
    }

    /// Stores a workflow template: `document` must have been validated.
    /// The same document again (keys in any order) changes nothing; another
    /// under a published version is a conflict.
    pub async fn publish_template(
        &self,
        tenant: &str,
        name: &str,
        version: &Version,
        document: &serde_json::Value,
        storage_bytes: u64,
    ) -> Result<Published, PublishError> {
        let bytes = Bytes::from(canonical_json(document));
        let digest = crate::cache::digest(&bytes);
        let key = template_key(name);
        let existing = self.store.versions(tenant, &key).await?;
        if let Some(same) = existing.iter().find(|v| v.version == version.to_string()) {
            let mut same = same.clone();
            same.name = name.to_string();
            return Ok(if same.digest == digest {
                Published::Unchanged(same)
            } else {
                Published::Conflict(same)
            });
        }
        let size = bytes.len() as u64;
        if let Some(used) = self.stored_bytes(tenant, &digest).await?
            && used.saturating_add(size) > storage_bytes
        {
            return Err(PublishError::QuotaExceeded {
                used,
                size,
                limit: storage_bytes,
            });
        }
        self.store.put_blob(&digest, bytes).await?;
        let record = VersionRecord {
            name: key,
            version: version.to_string(),
            digest,
            size,
            published_at: self.clock.now(),
        };
        Ok(match self.store.publish(tenant, record).await? {
            Published::Created(r) => Published::Created(named(r, name)),
            Published::Unchanged(r) => Published::Unchanged(named(r, name)),
            Published::Conflict(r) => Published::Conflict(named(r, name)),
        })
    }

    /// Every version of the tenant's template `name` (named `name`), oldest first.
    pub async fn template_versions(
        &self,
        tenant: &str,
        name: &str,
    ) -> Result<Vec<VersionRecord>, BackendError> {
        let versions = self.store.versions(tenant, &template_key(name)).await?;
        Ok(versions.into_iter().map(|r| named(r, name)).collect())
    }

    /// The names of the tenant's templates, sorted.
    pub async fn template_names(&self, tenant: &str) -> Result<Vec<String>, BackendError> {
        let names = self.store.component_names(tenant).await?;
        Ok(names
            .iter()
            .filter_map(|n| n.strip_prefix(TEMPLATE_PREFIX))
            .map(str::to_string)
            .collect())
    }

    /// The names of the tenant's components, sorted (templates left out).
    pub async fn component_names(&self, tenant: &str) -> Result<Vec<String>, BackendError> {
        let mut names = self.store.component_names(tenant).await?;
        names.retain(|n| !n.starts_with(TEMPLATE_PREFIX));
        Ok(names)
    }

    /// The document of a template version.
    pub async fn template_document(
        &self,
        record: &VersionRecord,
    ) -> Result<serde_json::Value, BackendError> {
        let bytes = self.store.blob(&record.digest).await?.ok_or_else(|| {
            BackendError::Corrupt(format!(
                "the document of template {}@{} is missing",
                record.name, record.version
            ))
        })?;
        serde_json::from_slice(&bytes)
            .map_err(|e| BackendError::Corrupt(format!("template {}: {e}", record.name)))
    }

    /// The highest version of the tenant's template `name` that `requirement`
    /// matches, with its document; Err says why there is none.
    pub async fn resolve_template(
        &self,
        tenant: &str,
        name: &str,
        requirement: &VersionReq,
    ) -> Result<Result<(VersionRecord, serde_json::Value), String>, BackendError> {
        let versions = self.template_versions(tenant, name).await?;
        if versions.is_empty() {
            return Ok(Err(format!(
                "unknown workflow template \"{name}\": publish it first with PUT /v1/workflows/{name}/{{version}}"
            )));
        }
        let best = versions
            .iter()
            .filter_map(|v| Some((Version::parse(&v.version).ok()?, v)))
            .filter(|(v, _)| requirement.matches(v))
            .max_by(|a, b| a.0.cmp(&b.0));
        let Some((_, record)) = best else {
            let available: Vec<&str> = versions.iter().map(|v| v.version.as_str()).collect();
            return Ok(Err(format!(
                "no version of workflow template \"{name}\" matches {requirement} (available: {})",
                available.join(", ")
            )));
        };
        let document = self.template_document(record).await?;
        Ok(Ok((record.clone(), document)))
    }

    /// The bytes of the tenant's distinct blobs, or None when `digest` is
    /// one of them already (publishing it again costs nothing).
    async fn stored_bytes(&self, tenant: &str, digest: &str) -> Result<Option<u64>, BackendError> {
        let mut seen = std::collections::HashSet::new();
        let mut used = 0u64;
        for name in self.store.component_names(tenant).await? {
            for v in self.store.versions(tenant, &name).await? {
                if v.digest == digest {
                    return Ok(None);
                }
                if seen.insert(v.digest) {
                    used = used.saturating_add(v.size);
                }
            }
        }
        Ok(Some(used))
    }

    /// The versions of every component `names` mention, for resolving a document.
    pub async fn snapshot<'a>(
        &self,
        tenant: &str,
        names: impl IntoIterator<Item = &'a str>,
    ) -> Result<Snapshot, BackendError> {
        use futures::StreamExt;
        let mut snapshot = Snapshot::default().with_unknown_hint(": publish it first");
        // A name that is not a valid component name is a schema problem already;
        // looking it up would only send a hostile string to the backend.
        let mut names: Vec<String> = names
            .into_iter()
            .filter(|n| is_valid_name(n))
            .map(str::to_string)
            .collect();
        names.sort_unstable();
        names.dedup();
        let lookups = names.into_iter().map(|name| {
            let store = self.store.clone();
            let tenant = tenant.to_string();
            async move {
                let versions = store.versions(&tenant, &name).await;
                (name, versions)
            }
        });
        let mut lookups = futures::stream::iter(lookups).buffered(32);
        while let Some((name, versions)) = lookups.next().await {
            for v in versions? {
                if let Ok(parsed) = Version::parse(&v.version) {
                    snapshot.add(&name, parsed, v.digest);
                }
            }
            snapshot.versions.entry(name).or_default();
        }
        Ok(snapshot)
    }
}

/// The registry keeps workflow templates beside components, under names no
/// component can have (component names have no `/`).
const TEMPLATE_PREFIX: &str = "workflow/";

fn template_key(name: &str) -> String {
    format!("{TEMPLATE_PREFIX}{name}")
}

fn named(mut record: VersionRecord, name: &str) -> VersionRecord {
    record.name = name.to_string();
    record
}

/// `value` as compact JSON with every object's keys sorted, so that one
/// document has one digest whatever order its keys came in.
pub fn canonical_json(value: &serde_json::Value) -> Vec<u8> {
    fn sorted(value: &serde_json::Value) -> serde_json::Value {
        match value {
            serde_json::Value::Object(map) => {
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort();
                serde_json::Value::Object(
                    keys.into_iter()
                        .map(|k| (k.clone(), sorted(&map[k])))
                        .collect(),
                )
            }
            serde_json::Value::Array(items) => {
                serde_json::Value::Array(items.iter().map(sorted).collect())
            }
            other => other.clone(),
        }
    }
    serde_json::to_vec(&sorted(value)).expect("a JSON value serialises")
}

/// The component names a document refers to, read leniently (the document is
/// validated afterwards).
pub fn referenced_names(doc: &serde_json::Value) -> Vec<&str> {
    let mut names: Vec<&str> = doc
        .get("steps")
        .and_then(|s| s.as_array())
        .into_iter()
        .flatten()
        .flat_map(|step| {
            let own = step.get("component");
            let compensation = step.get("compensate").and_then(|c| c.get("component"));
            [own, compensation].into_iter().flatten()
        })
        .filter_map(|c| c.as_str()?.split_once('@').map(|(name, _)| name))
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
