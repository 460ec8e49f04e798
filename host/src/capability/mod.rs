//! What a step may do beyond computing, each a WIT interface plus the policy
//! that grants it: outgoing HTTP (`wasi:http`, [`http`]) and the tenant's
//! secrets (`weft:step/secrets`, [`secrets`]). The engine links them; the
//! rest of the host never sees wasi:http types.

pub mod hosts;
pub mod http;
pub mod secrets;

use std::sync::Arc;

use crate::backend::{Limits, StateStore};
use crate::engine::{Failure, Grants};
use crate::scheduler::Scheduler;
use crate::workflow::Step;
use hosts::HostPattern;
use http::HttpPolicy;
use secrets::{SecretError, SecretsKey, Vault};

/// Where a worker finds what steps are granted.
pub struct Capabilities {
    /// The tenants' secrets.
    vault: Vault,
    /// Whose limits give `allowed_hosts`, `http_requests` and `http_response_bytes`.
    hosts: Hosts,
}

enum Hosts {
    /// The step's tenant's current limits.
    Tenants(Arc<dyn StateStore>),
    /// The same limits for every step (`weft exec`).
    Fixed(Limits),
}

impl Capabilities {
    /// The tenants' own limits and secrets in the scheduler's store, sealed with `key`.
    pub fn of_tenants(scheduler: &Scheduler, key: Option<SecretsKey>) -> Self {
        Self {
            vault: Vault::new(scheduler.store().clone(), key, scheduler.clock().clone()),
            hosts: Hosts::Tenants(scheduler.store().clone()),
        }
    }

    /// The secrets of `vault`, and `limits` for every step whatever its tenant.
    pub fn fixed(vault: Vault, limits: Limits) -> Self {
        Self {
            vault,
            hosts: Hosts::Fixed(limits),
        }
    }

    /// What the step may reach and read: the hosts both it and its tenant's
    /// current `allowed_hosts` name, and the values of the secrets it lists.
    pub async fn grants(&self, tenant: &str, step: &Step) -> Result<Grants, Failure> {
        let mut grants = Grants::default();
        if !step.http_allow.is_empty() {
            let fetched;
            let limits = match &self.hosts {
                Hosts::Fixed(limits) => Some(limits),
                Hosts::Tenants(store) => {
                    fetched = store
                        .tenant(tenant)
                        .await
                        .map_err(|e| Failure::host("backend_unavailable", e.to_string()))?;
                    fetched.as_ref().map(|record| &record.limits)
                }
            };
            if let Some(limits) = limits {
                grants.http = HttpPolicy {
                    // Entries were checked when the admin set them.
                    tenant: limits
                        .allowed_hosts
                        .iter()
                        .filter_map(|h| HostPattern::parse(h).ok())
                        .collect(),
                    step: step.http_allow.clone(),
                    max_requests: limits.http_requests,
                    max_response_bytes: limits.http_response_bytes,
                };
            }
        }
        if !step.secrets.is_empty() {
            let revealed = self.vault.reveal(tenant, &step.secrets).await;
            grants.secrets = revealed
                .map_err(|e| match e {
                    SecretError::Missing(name) => Failure::host(
                        "secret_missing",
                        format!(
                            "secret {name:?} was deleted after the run was submitted: set it again (weft secret set {name}) and the next attempt reads it"
                        ),
                    ),
                    other => Failure::host("secrets_unavailable", other.to_string()),
                })?
                .into_iter()
                .collect();
        }
        Ok(grants)
    }
}
