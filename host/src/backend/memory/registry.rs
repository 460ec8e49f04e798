//! Tenants, registry records and component blobs of the embedded backend.
//! Tenants and records are kept in memory and, with a file store, written to
//! it before they change here; blobs go to their own files, named by digest,
//! before the record naming them is written.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;

use super::MemoryBackend;
use crate::backend::{
    BackendError, Limits, Published, Schedule, SealedSecret, SecretInfo, TenantRecord,
    VersionRecord,
};
use crate::scheduler::clock::Millis;

/// Tenants and `(tenant, name)` -> versions, oldest first.
#[derive(Default)]
pub(super) struct Registry {
    components: HashMap<(String, String), Vec<VersionRecord>>,
    tenants: HashMap<String, TenantRecord>,
    /// API key hash -> tenant name.
    keys: HashMap<String, String>,
    /// (tenant, name) -> sealed secret; sorted so that listing is by name.
    secrets: BTreeMap<(String, String), SealedSecret>,
    /// The queues an admin declared (`default` always exists besides).
    queues: std::collections::BTreeSet<String>,
    /// (tenant, name) -> rate limit; sorted so that listing is by name.
    rate_limits: BTreeMap<(String, String), crate::backend::RateLimit>,
    /// (tenant, name) -> schedule, and (next tick, tenant, name) of those
    /// not paused.
    schedules: BTreeMap<(String, String), Schedule>,
    due: std::collections::BTreeSet<(Millis, String, String)>,
}

impl Registry {
    /// The registry holding these tenants and versions (oldest first).
    pub(super) fn from_records(
        tenants: Vec<TenantRecord>,
        versions: Vec<(String, VersionRecord)>,
        secrets: Vec<((String, String), SealedSecret)>,
        flow: Vec<((String, String, String), String)>,
    ) -> Self {
        let mut registry = Self {
            secrets: secrets.into_iter().collect(),
            queues: flow
                .iter()
                .filter(|((kind, _, _), _)| kind == "queue")
                .map(|((_, _, name), _)| name.clone())
                .collect(),
            rate_limits: flow
                .iter()
                .filter(|((kind, _, _), _)| kind == "rate_limit")
                .filter_map(|((_, tenant, name), record)| {
                    Some((
                        (tenant.clone(), name.clone()),
                        serde_json::from_str(record).ok()?,
                    ))
                })
                .collect(),
            ..Self::default()
        };
        for ((kind, tenant, _), record) in &flow {
            if kind == "schedule"
                && let Ok(schedule) = serde_json::from_str(record)
            {
                registry.put_schedule(tenant, schedule);
            }
        }
        for tenant in tenants {
            registry.create_tenant(tenant);
        }
        for (tenant, record) in versions {
            registry.publish(&tenant, record);
        }
        registry
    }

    /// What publishing `record` would answer when its version exists.
    pub(super) fn existing(&self, tenant: &str, record: &VersionRecord) -> Option<Published> {
        let versions = self
            .components
            .get(&(tenant.to_string(), record.name.clone()))?;
        let existing = versions.iter().find(|v| v.version == record.version)?;
        Some(if existing.digest == record.digest {
            Published::Unchanged(existing.clone())
        } else {
            Published::Conflict(existing.clone())
        })
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
        true
    }

    pub(super) fn tenant(&self, name: &str) -> Option<TenantRecord> {
        self.tenants.get(name).cloned()
    }

    /// The tenant's share of the nodes (the defaults for a tenant not known,
    /// as in `weft exec`).
    pub(super) fn share(&self, name: &str) -> crate::scheduler::flow::Share {
        self.tenants
            .get(name)
            .map(|t| t.limits.share())
            .unwrap_or_default()
    }

    /// Sets a rate limit; true when it is new.
    pub(super) fn put_rate_limit(
        &mut self,
        tenant: &str,
        limit: crate::backend::RateLimit,
    ) -> bool {
        self.rate_limits
            .insert((tenant.to_string(), limit.name.clone()), limit)
            .is_none()
    }

    /// The tenant's rate limit `name`, as the dispatcher reads it.
    pub(super) fn rate(&self, tenant: &str, name: &str) -> Option<crate::scheduler::flow::Rate> {
        self.rate_limits
            .get(&(tenant.to_string(), name.to_string()))
            .map(crate::backend::RateLimit::rate)
    }

    /// The tenant's rate limits, by name.
    pub(super) fn rate_limits(&self, tenant: &str) -> Vec<crate::backend::RateLimit> {
        self.rate_limits
            .range((tenant.to_string(), String::new())..)
            .take_while(|((t, _), _)| t == tenant)
            .map(|(_, l)| l.clone())
            .collect()
    }

    pub(super) fn delete_rate_limit(&mut self, tenant: &str, name: &str) -> bool {
        self.rate_limits
            .remove(&(tenant.to_string(), name.to_string()))
            .is_some()
    }

    /// Stores a schedule, in place of the one of its name.
    pub(super) fn put_schedule(&mut self, tenant: &str, schedule: Schedule) {
        self.delete_schedule(tenant, &schedule.name);
        if let Some(next) = schedule.next_tick {
            self.due
                .insert((next, tenant.to_string(), schedule.name.clone()));
        }
        self.schedules
            .insert((tenant.to_string(), schedule.name.clone()), schedule);
    }

    pub(super) fn schedule(&self, tenant: &str, name: &str) -> Option<&Schedule> {
        self.schedules.get(&(tenant.to_string(), name.to_string()))
    }

    /// The tenant's schedules, by name.
    pub(super) fn schedules(&self, tenant: &str) -> Vec<Schedule> {
        self.schedules
            .range((tenant.to_string(), String::new())..)
            .take_while(|((t, _), _)| t == tenant)
            .map(|(_, s)| s.clone())
            .collect()
    }

    pub(super) fn delete_schedule(&mut self, tenant: &str, name: &str) -> bool {
        let Some(old) = self
            .schedules
            .remove(&(tenant.to_string(), name.to_string()))
        else {
            return false;
        };
        if let Some(next) = old.next_tick {
            self.due
                .remove(&(next, tenant.to_string(), name.to_string()));
        }
        true
    }

    /// Up to `max` schedules due at `now`, the most overdue first.
    pub(super) fn due_schedules(&self, now: Millis, max: usize) -> Vec<(String, Schedule)> {
        self.due
            .iter()
            .take_while(|(at, _, _)| *at <= now)
            .take(max)
            .filter_map(|(_, tenant, name)| {
                Some((tenant.clone(), self.schedule(tenant, name)?.clone()))
            })
            .collect()
    }

    /// Declares a queue; true when it is new.
    pub(super) fn declare_queue(&mut self, name: &str) -> bool {
        name != crate::scheduler::flow::DEFAULT_QUEUE && self.queues.insert(name.to_string())
    }

    /// The declared queues, `default` first, then by name.
    pub(super) fn queues(&self) -> Vec<String> {
        std::iter::once(crate::scheduler::flow::DEFAULT_QUEUE.to_string())
            .chain(self.queues.iter().cloned())
            .collect()
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
        true
    }

    /// Sets a secret; true when it is new.
    pub(super) fn put_secret(&mut self, tenant: &str, name: &str, secret: SealedSecret) -> bool {
        self.secrets
            .insert((tenant.to_string(), name.to_string()), secret)
            .is_none()
    }

    pub(super) fn secret(&self, tenant: &str, name: &str) -> Option<SealedSecret> {
        self.secrets
            .get(&(tenant.to_string(), name.to_string()))
            .cloned()
    }

    pub(super) fn has_secret(&self, tenant: &str, name: &str) -> bool {
        self.secrets
            .contains_key(&(tenant.to_string(), name.to_string()))
    }

    pub(super) fn secrets(&self, tenant: &str) -> Vec<SecretInfo> {
        let from = (tenant.to_string(), String::new());
        self.secrets
            .range(from..)
            .take_while(|((t, _), _)| t == tenant)
            .map(|((_, name), s)| SecretInfo {
                name: name.clone(),
                updated_at: s.updated_at,
            })
            .collect()
    }

    pub(super) fn delete_secret(&mut self, tenant: &str, name: &str) -> bool {
        self.secrets
            .remove(&(tenant.to_string(), name.to_string()))
            .is_some()
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
        // On the disk before the record naming it is stored.
        tokio::fs::File::open(&tmp)
            .await
            .map_err(io)?
            .sync_all()
            .await
            .map_err(io)?;
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
