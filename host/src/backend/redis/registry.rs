//! Tenants, registry records and component blobs in Redis.

use bytes::Bytes;

use super::{RedisBackend, keys, unavailable};
use crate::backend::{
    BackendError, Limits, Published, SealedSecret, SecretInfo, TenantRecord, VersionRecord,
};

impl RedisBackend {
    pub(super) async fn put_blob_now(
        &self,
        digest: &str,
        bytes: Bytes,
    ) -> Result<(), BackendError> {
        let _: Option<String> = redis::cmd("SET")
            .arg(keys::blob(digest))
            .arg(bytes.as_ref())
            .arg("NX")
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    pub(super) async fn blob_now(&self, digest: &str) -> Result<Option<Bytes>, BackendError> {
        let bytes: Option<Vec<u8>> = redis::cmd("GET")
            .arg(keys::blob(digest))
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(bytes.map(Bytes::from))
    }

    pub(super) async fn publish_now(
        &self,
        tenant: &str,
        record: VersionRecord,
    ) -> Result<Published, BackendError> {
        let key = keys::versions(tenant, &record.name);
        let json = serde_json::to_string(&record).expect("JSON");
        let (created, existing): (i64, String) = redis::pipe()
            .atomic()
            .cmd("HSETNX")
            .arg(&key)
            .arg(&record.version)
            .arg(&json)
            .cmd("HGET")
            .arg(&key)
            .arg(&record.version)
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        if created == 1 {
            let _: i64 = redis::cmd("SADD")
                .arg(keys::components(tenant))
                .arg(&record.name)
                .query_async(&mut self.conn())
                .await
                .map_err(unavailable)?;
            return Ok(Published::Created(record));
        }
        let existing: VersionRecord = serde_json::from_str(&existing)
            .map_err(|e| BackendError::Corrupt(format!("version record: {e}")))?;
        Ok(if existing.digest == record.digest {
            Published::Unchanged(existing)
        } else {
            Published::Conflict(existing)
        })
    }

    pub(super) async fn versions_now(
        &self,
        tenant: &str,
        name: &str,
    ) -> Result<Vec<VersionRecord>, BackendError> {
        let values: Vec<String> = redis::cmd("HVALS")
            .arg(keys::versions(tenant, name))
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        let mut records = values
            .iter()
            .map(|v| {
                serde_json::from_str::<VersionRecord>(v)
                    .map_err(|e| BackendError::Corrupt(format!("version record: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        records.sort_by_key(|r| r.published_at);
        Ok(records)
    }

    pub(super) async fn component_names_now(
        &self,
        tenant: &str,
    ) -> Result<Vec<String>, BackendError> {
        let mut names: Vec<String> = redis::cmd("SMEMBERS")
            .arg(keys::components(tenant))
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        names.sort();
        Ok(names)
    }

    pub(super) async fn create_tenant_now(
        &self,
        tenant: TenantRecord,
    ) -> Result<bool, BackendError> {
        // One script: the tenant and its key hashes are stored together or not at all.
        const CREATE_TENANT: &str = r#"#!lua
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 0 end
redis.call('HSET', KEYS[3], 'w', ARGV[3], 'cap', ARGV[4])
for k = 5, #ARGV do redis.call('HSET', KEYS[2], ARGV[k], ARGV[1]) end
return 1
"#;
        static SCRIPT: std::sync::LazyLock<redis::Script> =
            std::sync::LazyLock::new(|| redis::Script::new(CREATE_TENANT));
        let json = serde_json::to_string(&tenant).expect("JSON");
        let mut invocation = SCRIPT.prepare_invoke();
        invocation
            .key(keys::TENANTS)
            .key(keys::KEYS)
            .key(keys::flow_tenant(&tenant.name))
            .arg(&tenant.name)
            .arg(json)
            .arg(tenant.limits.weight)
            .arg(tenant.limits.concurrent_steps);
        for hash in &tenant.key_hashes {
            invocation.arg(hash);
        }
        let created: i64 = invocation
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(created == 1)
    }

    pub(super) async fn tenant_now(
        &self,
        name: &str,
    ) -> Result<Option<TenantRecord>, BackendError> {
        let json: Option<String> = redis::cmd("HGET")
            .arg(keys::TENANTS)
            .arg(name)
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        json.map(|j| {
            serde_json::from_str(&j).map_err(|e| BackendError::Corrupt(format!("tenant: {e}")))
        })
        .transpose()
    }

    pub(super) async fn tenant_by_key_now(
        &self,
        key_hash: &str,
    ) -> Result<Option<TenantRecord>, BackendError> {
        let name: Option<String> = redis::cmd("HGET")
            .arg(keys::KEYS)
            .arg(key_hash)
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        match name {
            Some(name) => self.tenant_now(&name).await,
            None => Ok(None),
        }
    }

    pub(super) async fn set_limits_now(
        &self,
        name: &str,
        limits: Limits,
    ) -> Result<bool, BackendError> {
        let Some(tenant) = self.tenant_now(name).await? else {
            return Ok(false);
        };
        // The dispatcher reads weight and concurrent_steps from a hash of
        // their own, beside the attempts the tenant runs.
        let _: () = redis::pipe()
            .atomic()
            .hset(
                keys::TENANTS,
                name,
                serde_json::to_string(&TenantRecord {
                    limits: limits.clone(),
                    ..tenant
                })
                .expect("JSON"),
            )
            .ignore()
            .hset_multiple(
                keys::flow_tenant(name),
                &[("w", limits.weight), ("cap", limits.concurrent_steps)],
            )
            .ignore()
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(true)
    }

    pub(super) async fn put_secret_now(
        &self,
        tenant: &str,
        name: &str,
        secret: SealedSecret,
    ) -> Result<bool, BackendError> {
        // Value and time side by side, in one transaction: listing and
        // counting read only the small hash of times.
        let (created, _): (i64, i64) = redis::pipe()
            .atomic()
            .hset(keys::secrets(tenant), name, secret.sealed)
            .hset(keys::secret_times(tenant), name, secret.updated_at)
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(created == 1)
    }

    pub(super) async fn secret_now(
        &self,
        tenant: &str,
        name: &str,
    ) -> Result<Option<SealedSecret>, BackendError> {
        let (sealed, updated_at): (Option<Vec<u8>>, Option<u64>) = redis::pipe()
            .atomic()
            .hget(keys::secrets(tenant), name)
            .hget(keys::secret_times(tenant), name)
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(sealed.map(|sealed| SealedSecret {
            sealed,
            updated_at: updated_at.unwrap_or_default(),
        }))
    }

    pub(super) async fn secrets_now(&self, tenant: &str) -> Result<Vec<SecretInfo>, BackendError> {
        let all: Vec<(String, u64)> = redis::cmd("HGETALL")
            .arg(keys::secret_times(tenant))
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        let mut infos: Vec<SecretInfo> = all
            .into_iter()
            .map(|(name, updated_at)| SecretInfo { name, updated_at })
            .collect();
        infos.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(infos)
    }

    pub(super) async fn delete_secret_now(
        &self,
        tenant: &str,
        name: &str,
    ) -> Result<bool, BackendError> {
        let (removed, _): (i64, i64) = redis::pipe()
            .atomic()
            .hdel(keys::secrets(tenant), name)
            .hdel(keys::secret_times(tenant), name)
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(removed == 1)
    }
}
