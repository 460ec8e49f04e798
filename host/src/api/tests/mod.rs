//! The router driven with `oneshot` over real components, a real engine and
//! the embedded backend. Every answer that the OpenAPI document describes is
//! checked against it, which keeps the document true.

mod errors;
mod registry;
mod runs;

use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use super::{AppState, router_and_openapi};
use crate::backend::memory::{MemoryBackend, Retention};
use crate::backend::{Limits, StateStore};
use crate::bundled::paths;
use crate::cache::ComponentCache;
use crate::engine::{Engine, EngineConfig};
use crate::registry::Registry;
use crate::scheduler::Scheduler;
use crate::scheduler::clock::{Clock, SystemClock};
use crate::worker::Worker;

pub const ADMIN: &str = "admin-secret";

/// One compile cache for the whole test process, so each component is
/// compiled once.
fn cache() -> Arc<ComponentCache> {
    static CACHE: OnceLock<Arc<ComponentCache>> = OnceLock::new();
    CACHE
        .get_or_init(|| {
            let engine = Engine::new(&EngineConfig::default()).expect("engine");
            Arc::new(ComponentCache::new(engine, None, 64))
        })
        .clone()
}

pub fn wasm(path: &str) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("read {path}: {e}"))
}

/// A fresh node: its own backend and worker, tenants `acme` and `other`,
/// each with `echo`, `sleep` and `fail` published as 1.0.0.
pub struct Api {
    pub router: Router,
    pub openapi: Value,
    pub state: AppState,
    pub acme: String,
    pub other: String,
    stop: CancellationToken,
}

impl Drop for Api {
    fn drop(&mut self) {
        self.stop.cancel();
        self.state.shutdown.cancel();
    }
}

impl Api {
    pub async fn new() -> Self {
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let backend = MemoryBackend::new(clock.clone(), None, Retention::default());
        let scheduler = Scheduler::new(backend.clone(), backend.clone(), clock.clone());
        let state = AppState::new(
            scheduler.clone(),
            cache(),
            Some(ADMIN),
            Some(crate::capability::secrets::SecretsKey::random()),
        );
        let registry = Registry::new(backend.clone(), cache(), clock.clone());
        let mut keys = Vec::new();
        for name in ["acme", "other"] {
            let (record, key) = super::tenants::new_tenant(name, Limits::default(), clock.now());
            assert!(backend.create_tenant(record).await.unwrap());
            for (component, path) in [
                ("echo", paths::ECHO),
                ("sleep", paths::SLEEP),
                ("fail", paths::FAIL),
            ] {
                registry
                    .publish(name, component, "1.0.0", wasm(path).into(), u64::MAX)
                    .await
                    .expect("publish");
            }
            keys.push(key);
        }
        let stop = CancellationToken::new();
        let capabilities = crate::worker::Capabilities::of_tenants(&scheduler, None);
        tokio::spawn(Worker::new(scheduler, cache(), 8, capabilities).run(stop.clone()));
        let (router, openapi) = router_and_openapi(state.clone());
        Self {
            router,
            openapi: serde_json::to_value(&openapi).unwrap(),
            state,
            acme: keys.remove(0),
            other: keys.remove(0),
            stop,
        }
    }

    /// Sends a request and checks the answer against the OpenAPI document.
    pub async fn send(&self, request: Request<Body>) -> Reply {
        let method = request.method().clone();
        let path = request.uri().path().to_string();
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()))
        };
        let reply = Reply {
            status,
            headers,
            body,
        };
        conforms(&self.openapi, &method, &path, &reply);
        reply
    }

    pub async fn call(&self, method: Method, path: &str, key: &str, body: Option<Value>) -> Reply {
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::AUTHORIZATION, format!("Bearer {key}"));
        let body = match body {
            Some(v) => {
                request = request.header(header::CONTENT_TYPE, "application/json");
                Body::from(serde_json::to_vec(&v).unwrap())
            }
            None => Body::empty(),
        };
        self.send(request.body(body).unwrap()).await
    }

    pub async fn get(&self, path: &str, key: &str) -> Reply {
        self.call(Method::GET, path, key, None).await
    }

    pub async fn post(&self, path: &str, key: &str, body: Value) -> Reply {
        self.call(Method::POST, path, key, Some(body)).await
    }

    /// Submits a run for `acme` and returns its id.
    pub async fn submit(&self, workflow: Value) -> String {
        let reply = self
            .post("/v1/runs", &self.acme, json!({ "workflow": workflow }))
            .await;
        assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.body);
        reply.body["id"].as_str().unwrap().to_string()
    }

    /// Waits for a run of `acme` to end and returns it.
    pub async fn finished(&self, id: &str) -> Value {
        for _ in 0..500 {
            let run = self.get(&format!("/v1/runs/{id}"), &self.acme).await;
            let status = run.body["status"].as_str().unwrap_or("").to_string();
            if ["succeeded", "failed", "cancelled"].contains(&status.as_str()) {
                return run.body;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        panic!("run {id} did not end");
    }

    pub async fn set_limits(&self, tenant: &str, limits: Value) {
        let reply = self
            .call(
                Method::PUT,
                &format!("/v1/tenants/{tenant}/limits"),
                ADMIN,
                Some(limits),
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    }
}

#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Reply {
    /// The error code of an error answer.
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }
}

/// The path template of the document that `path` fits, if any.
fn template<'a>(openapi: &'a Value, path: &str) -> Option<&'a str> {
    let parts: Vec<&str> = path.split('/').collect();
    openapi["paths"]
        .as_object()?
        .keys()
        .find(|t| {
            let t: Vec<&str> = t.split('/').collect();
            t.len() == parts.len()
                && t.iter()
                    .zip(&parts)
                    .all(|(t, p)| t == p || (t.starts_with('{') && !p.is_empty()))
        })
        .map(String::as_str)
}

/// Asserts that a documented route documents this status and that a JSON
/// body matches the documented schema.
fn conforms(openapi: &Value, method: &Method, path: &str, reply: &Reply) {
    let Some(template) = template(openapi, path) else {
        return; // unknown routes answer 404 and are not in the document
    };
    let operation = &openapi["paths"][template][method.as_str().to_lowercase()];
    if operation.is_null() {
        assert_eq!(
            reply.status,
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {path}"
        );
        return;
    }
    let documented = &operation["responses"][reply.status.as_str()];
    assert!(
        !documented.is_null(),
        "{method} {template} answered {} which the OpenAPI document does not list: {}",
        reply.status,
        reply.body
    );
    let Some(schema) = documented["content"]["application/json"]["schema"].as_object() else {
        return;
    };
    let mut root = Value::Object(schema.clone());
    root["components"] = openapi["components"].clone();
    let validator = jsonschema::validator_for(&root).expect("the document's schema compiles");
    let errors: Vec<String> = validator
        .iter_errors(&reply.body)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "{method} {template} {}: the body breaks the documented schema: {errors:?}\n{}",
        reply.status,
        reply.body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_ready_metrics_and_the_document_itself() {
    let api = Api::new().await;
    let health = api.get("/healthz", "").await;
    assert_eq!(
        (health.status, &health.body),
        (StatusCode::OK, &json!({"status": "ok"}))
    );
    let ready = api.get("/readyz", "").await;
    assert_eq!(ready.status, StatusCode::OK);
    let doc = api.get("/v1/openapi.json", "").await;
    assert_eq!(doc.status, StatusCode::OK);
    assert_eq!(doc.body["openapi"], "3.1.0");
    // Operation ids are unique, as Open API requires (clients and links name operations by them).
    let mut ids: Vec<&str> = doc.body["paths"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|item| item.as_object().unwrap().values())
        .filter_map(|operation| operation["operationId"].as_str())
        .collect();
    let count = ids.len();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), count, "duplicate operationId among {ids:?}");
    // Every route of the API is in the document.
    for path in [
        "/v1/tenants",
        "/v1/tenants/{name}",
        "/v1/tenants/{name}/limits",
        "/v1/components",
        "/v1/components/{name}/{version}",
        "/v1/workflows/validate",
        "/v1/runs",
        "/v1/runs/{id}",
        "/v1/runs/{id}/events",
        "/v1/runs/{id}/cancel",
        "/healthz",
        "/readyz",
        "/metrics",
    ] {
        assert!(
            doc.body["paths"][path].is_object(),
            "{path} is not documented"
        );
    }

    let id = api
        .submit(json!({"steps": [{"id": "a", "component": "echo@1"}]}))
        .await;
    api.finished(&id).await;
    let metrics = api.get("/metrics", "").await;
    assert_eq!(metrics.status, StatusCode::OK);
    let text = metrics.body.as_str().unwrap();
    for name in [
        "weft_runs_submitted_total",
        "weft_runs_finished_total{status=\"succeeded\"}",
        "weft_steps_total{status=\"succeeded\",code=\"\"}",
        "weft_step_duration_seconds_bucket",
        "weft_queue_depth",
        "weft_component_cache_hits_total",
        "weft_component_cache_misses_total",
        "weft_component_cache_compiles_total",
        "weft_http_requests_total{method=\"POST\",route=\"/v1/runs\",status=\"202\"}",
    ] {
        assert!(text.contains(name), "{name} missing from /metrics:\n{text}");
    }
}
