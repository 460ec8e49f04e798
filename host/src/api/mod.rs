//! The HTTP API (`docs/api.md`): an axum router over [`AppState`]. Auth,
//! tenants and limits, error mapping, server-sent events and metrics live
//! here; everything else goes through the scheduler, registry and backend.

mod auth;
mod body;
mod children;
mod cluster;
mod components;
pub mod error;
mod events;
pub mod metrics;
mod openapi;
mod queues;
mod rate_limits;
mod run_body;
mod runs;
mod schedules;
mod secrets;
pub mod server;
mod signals;
mod start;
pub mod tenants;
pub mod ticker;
mod ui;
mod workflows;

#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use tokio_util::sync::CancellationToken;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::backend::StateStore;
use crate::cache::ComponentCache;
use crate::capability::secrets::{SecretsKey, Vault};
use crate::registry::Registry;
use crate::scheduler::Scheduler;
pub use error::ApiError;

/// Largest JSON request body (a workflow document and its input).
pub const MAX_JSON_BODY: usize = 4 << 20;

/// Everything a request handler may use; cheap to clone.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

/// The parts of a node the API talks to.
pub struct Shared {
    pub scheduler: Arc<Scheduler>,
    pub registry: Registry,
    pub cache: Arc<ComponentCache>,
    /// The tenants' secrets.
    pub vault: Vault,
    /// SHA-256 of the admin token; admin calls are refused without one.
    admin_token_hash: Option<[u8; 32]>,
    rates: tenants::RateLimits,
    publishes: tenants::RateLimits,
    metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    /// Cancelled when the server shuts down, ending event streams.
    pub shutdown: CancellationToken,
}

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl AppState {
    pub fn new(
        scheduler: Arc<Scheduler>,
        cache: Arc<ComponentCache>,
        admin_token: Option<&str>,
        secrets_key: Option<SecretsKey>,
    ) -> Self {
        let registry = Registry::new(
            scheduler.store().clone(),
            cache.clone(),
            scheduler.clock().clone(),
        );
        let vault = Vault::new(
            scheduler.store().clone(),
            secrets_key,
            scheduler.clock().clone(),
        );
        Self(Arc::new(Shared {
            scheduler,
            registry,
            cache,
            vault,
            admin_token_hash: admin_token.map(tenants::hash_secret),
            rates: tenants::RateLimits::default(),
            publishes: tenants::RateLimits::default(),
            metrics: metrics::handle(),
            shutdown: CancellationToken::new(),
        }))
    }

    pub fn store(&self) -> &Arc<dyn StateStore> {
        self.scheduler.store()
    }
}

/// Every documented route: the router and the OpenAPI document both come from here.
fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(openapi::base())
        .routes(routes!(tenants::create))
        .routes(routes!(tenants::get))
        .routes(routes!(tenants::set_limits))
        .routes(routes!(components::list))
        .routes(routes!(components::publish, components::get))
        .routes(routes!(runs::validate))
        .routes(routes!(runs::submit, runs::list))
        .routes(routes!(runs::get))
        .routes(routes!(events::stream))
        .routes(routes!(runs::cancel))
        .routes(routes!(runs::items))
        .routes(routes!(signals::send))
        .routes(routes!(secrets::list))
        .routes(routes!(secrets::set, secrets::delete))
        .routes(routes!(runs::schema))
        .routes(routes!(workflows::list))
        .routes(routes!(workflows::publish, workflows::get))
        .routes(routes!(cluster::get))
        .routes(routes!(queues::list))
        .routes(routes!(rate_limits::list))
        .routes(routes!(
            rate_limits::set,
            rate_limits::get,
            rate_limits::delete
        ))
        .routes(routes!(schedules::create, schedules::list))
        .routes(routes!(schedules::get, schedules::delete))
        .routes(routes!(schedules::pause))
        .routes(routes!(schedules::resume))
        .routes(routes!(queues::declare))
        .routes(routes!(health))
        .routes(routes!(ready))
        .routes(routes!(metrics::render))
}

/// The whole API, and its OpenAPI document.
pub fn router_and_openapi(state: AppState) -> (Router, utoipa::openapi::OpenApi) {
    let (router, api) = routes().with_state(state).split_for_parts();
    let document = Arc::new(api.clone());
    let router = router
        .route(
            "/v1/openapi.json",
            axum::routing::get(move || {
                let document = document.clone();
                async move { axum::Json(document.as_ref().clone()) }
            }),
        )
        // The web console: beside the API, not in its OpenAPI document.
        .merge(ui::routes())
        .fallback(unknown_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn(metrics::track))
        .layer(tower_http::trace::TraceLayer::new_for_http());
    (router, api)
}

/// The OpenAPI document of the API, as `GET /v1/openapi.json` serves it.
pub fn openapi() -> utoipa::openapi::OpenApi {
    routes().into_openapi()
}

/// Only the probes and metrics, for worker nodes.
pub fn probes(state: AppState) -> Router {
    Router::new()
        .route("/healthz", axum::routing::get(health))
        .route("/readyz", axum::routing::get(ready))
        .route("/metrics", axum::routing::get(metrics::render))
        .with_state(state)
        .fallback(unknown_route)
}

/// The whole API as a router.
pub fn router(state: AppState) -> Router {
    router_and_openapi(state).0
}

async fn unknown_route(uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!(
            "no route {}; the API is described at /v1/openapi.json",
            uri.path()
        ),
    )
}

async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{} does not accept {method}", uri.path()),
    )
}

/// Status of a health probe.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct Health {
    /// `ok`, `ready` or `unavailable`.
    pub status: &'static str,
}

/// Liveness: the process serves requests.
#[utoipa::path(get, path = "/healthz", tag = "health", operation_id = "health",
    responses((status = 200, description = "The process is alive", body = Health)))]
async fn health() -> axum::Json<Health> {
    axum::Json(Health { status: "ok" })
}

/// Readiness: the backend can be reached.
#[utoipa::path(get, path = "/readyz", tag = "health", operation_id = "ready", responses(
    (status = 200, description = "Ready to serve", body = Health),
    (status = 503, description = "The backend cannot be reached", body = Health)))]
async fn ready(axum::extract::State(state): axum::extract::State<AppState>) -> Response {
    let ping = tokio::time::timeout(Duration::from_secs(2), state.store().ping()).await;
    match ping {
        Ok(Ok(())) => axum::Json(Health { status: "ready" }).into_response(),
        _ => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(Health {
                status: "unavailable",
            }),
        )
            .into_response(),
    }
}
