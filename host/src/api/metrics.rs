//! Prometheus metrics: the recorder, `GET /metrics`, and per-request counters.

use std::sync::OnceLock;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use super::AppState;
use super::server::BodyTimedOut;

/// Installs the process's metrics recorder (once) and returns its handle;
/// `None` if another recorder was installed first.
pub fn handle() -> Option<PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            const SECONDS: &[f64] = &[
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0, 30.0, 60.0,
            ];
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS)
                .ok()?
                .install_recorder();
            match recorder {
                Ok(handle) => {
                    describe();
                    Some(handle)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "metrics are off: a recorder is already installed");
                    None
                }
            }
        })
        .clone()
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!("weft_runs_submitted_total", "Runs accepted");
    describe_counter!("weft_runs_finished_total", "Runs that ended, by status");
    describe_counter!(
        "weft_steps_total",
        "Step attempts that ended, by status and error code"
    );
    describe_histogram!(
        "weft_step_duration_seconds",
        metrics::Unit::Seconds,
        "Time of each step attempt"
    );
    describe_gauge!(
        "weft_queue_depth",
        "Steps ready and waiting for a node that serves the queue, per declared queue"
    );
    describe_gauge!(
        "weft_queue_oldest_age_seconds",
        metrics::Unit::Seconds,
        "How long the oldest ready step of the queue has waited, per declared queue"
    );
    describe_gauge!("weft_event_streams_open", "Open event streams");
    describe_counter!(
        "weft_component_cache_hits_total",
        "Components found compiled in memory"
    );
    describe_counter!(
        "weft_component_cache_misses_total",
        "Components not in memory"
    );
    describe_counter!(
        "weft_component_cache_loads_total",
        "Components loaded from compiled artifacts on disk"
    );
    describe_counter!("weft_component_cache_compiles_total", "Components compiled");
    describe_counter!("weft_http_requests_total", "HTTP requests answered");
    describe_histogram!(
        "weft_http_request_duration_seconds",
        metrics::Unit::Seconds,
        "Time to answer an HTTP request"
    );
}

/// Prometheus metrics of this node.
#[utoipa::path(get, path = "/metrics", tag = "health", operation_id = "metrics", responses(
    (status = 200, description = "Prometheus text format", content_type = "text/plain", body = String)))]
pub async fn render(State(state): State<AppState>) -> Response {
    let stats = state.cache.stats();
    metrics::counter!("weft_component_cache_hits_total").absolute(stats.hits);
    metrics::counter!("weft_component_cache_misses_total").absolute(stats.misses);
    metrics::counter!("weft_component_cache_loads_total").absolute(stats.loads);
    metrics::counter!("weft_component_cache_compiles_total").absolute(stats.compiles);
    // Labelled only with declared queues: an admin's fixed set.
    if let Ok(queues) = state.scheduler.store().queues().await {
        for q in queues {
            metrics::gauge!("weft_queue_depth", "queue" => q.name.clone()).set(q.depth as f64);
            metrics::gauge!("weft_queue_oldest_age_seconds", "queue" => q.name)
                .set(q.oldest_age_seconds);
        }
    }
    let text = state
        .metrics
        .as_ref()
        .map(|h| h.render())
        .unwrap_or_default();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// Counts and times every request by method, route and status. Every label
/// comes from a fixed set, so that clients cannot grow the series without
/// bound: a known method or `other`, a route template or `unmatched`, and a
/// status code.
pub async fn track(request: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = method_label(request.method());
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let body_timed_out = request.extensions().get::<BodyTimedOut>().cloned();
    let response = next.run(request).await;
    // The server answers a body that came too slowly with 408, whatever the
    // handler made of it.
    let status = if body_timed_out.is_some_and(|t| t.happened()) {
        StatusCode::REQUEST_TIMEOUT
    } else {
        response.status()
    };
    metrics::counter!("weft_http_requests_total", "method" => method, "route" => route.clone(), "status" => status.as_str().to_owned()).increment(1);
    metrics::histogram!("weft_http_request_duration_seconds", "method" => method, "route" => route)
        .record(start.elapsed().as_secs_f64());
    response
}

/// The label of an HTTP method: the standard ones by name, any other `other`.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_outside_the_known_set_are_other() {
        for (method, label) in [
            ("GET", "GET"),
            ("POST", "POST"),
            ("PUT", "PUT"),
            ("DELETE", "DELETE"),
            ("PATCH", "PATCH"),
            ("HEAD", "HEAD"),
            ("OPTIONS", "OPTIONS"),
            ("TRACE", "other"),
            ("CONNECT", "other"),
            ("BREW", "other"),
            ("get", "other"),
        ] {
            let method = Method::from_bytes(method.as_bytes()).unwrap();
            assert_eq!(method_label(&method), label, "{method}");
        }
    }
}
