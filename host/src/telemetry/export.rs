//! OTLP/HTTP export of spans (protobuf over HTTP POST), batched by a task of
//! its own so that emitting a span never waits: a span that finds the queue
//! full, or whose batch the collector does not take, is dropped and counted
//! in `weft_trace_spans_dropped_total`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::text;

/// Where and how spans are exported: `--otlp-endpoint` and the standard
/// `OTEL_*` variables.
#[derive(Clone)]
pub struct OtlpConfig {
    /// The URL spans are POSTed to (ends in `/v1/traces` unless the operator
    /// gave a full traces URL).
    pub endpoint: String,
    /// Headers sent with every export (`OTEL_EXPORTER_OTLP_HEADERS`); never
    /// logged, since they often hold a collector's API key.
    pub headers: Vec<(String, String)>,
    pub timeout: Duration,
    /// How long a batch waits to fill (`OTEL_BSP_SCHEDULE_DELAY`).
    pub delay: Duration,
    pub max_batch: usize,
    pub max_queue: usize,
    /// A PEM file of CA certificates the collector's certificate may chain to.
    pub ca_file: Option<std::path::PathBuf>,
    pub resource: Vec<KeyValue>,
}

impl std::fmt::Debug for OtlpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OtlpConfig")
            .field("endpoint", &self.endpoint)
            .field("headers", &self.headers.len())
            .field("timeout", &self.timeout)
            .field("delay", &self.delay)
            .field("max_batch", &self.max_batch)
            .field("max_queue", &self.max_queue)
            .finish()
    }
}

/// The path OTLP/HTTP serves traces on.
const TRACES_PATH: &str = "/v1/traces";

impl OtlpConfig {
    /// The export settings from `--otlp-endpoint` (`flag`) and the
    /// environment (`env` reads a variable); `None` when traces are not
    /// exported. `node` names this process in the spans' resource.
    pub fn from_env(
        flag: Option<&str>,
        env: impl Fn(&str) -> Option<String>,
        node: &str,
    ) -> Result<Option<Self>, String> {
        let var = |name: &str| env(name).filter(|v| !v.trim().is_empty());
        // The traces variable first, then the general one, as the
        // specification orders them.
        let signal = |name: &str| {
            var(&format!("OTEL_EXPORTER_OTLP_TRACES_{name}"))
                .or_else(|| var(&format!("OTEL_EXPORTER_OTLP_{name}")))
        };
        if var("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"))
            || var("OTEL_TRACES_EXPORTER").is_some_and(|v| v.eq_ignore_ascii_case("none"))
        {
            return Ok(None);
        }
        let endpoint = match (flag, var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")) {
            (Some(base), _) => traces_url(base)?,
            (None, Some(full)) => check_url(&full)?,
            (None, None) => match var("OTEL_EXPORTER_OTLP_ENDPOINT") {
                Some(base) => traces_url(&base)?,
                None => return Ok(None),
            },
        };
        if let Some(protocol) = signal("PROTOCOL")
            && protocol != "http/protobuf"
        {
            return Err(format!(
                "OTLP protocol {protocol:?} is not supported: weft exports traces as http/protobuf \
                 (set OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf and point the endpoint at the \
                 collector's OTLP/HTTP port, usually 4318)"
            ));
        }
        let headers = match signal("HEADERS") {
            Some(list) => parse_headers(&list)?,
            None => Vec::new(),
        };
        for (name, value) in &headers {
            if http::HeaderName::from_bytes(name.as_bytes()).is_err()
                || http::HeaderValue::from_str(value).is_err()
            {
                return Err(format!(
                    "OTEL_EXPORTER_OTLP_HEADERS: {name:?} is not a valid HTTP header name and value"
                ));
            }
        }
        let millis = |name: &str, default: u64| -> Result<Duration, String> {
            match var(name) {
                None => Ok(Duration::from_millis(default)),
                Some(v) => v
                    .trim()
                    .parse::<u64>()
                    .map(Duration::from_millis)
                    .map_err(|_| format!("{name} must be a number of milliseconds, not {v:?}")),
            }
        };
        let count = |name: &str, default: usize| -> Result<usize, String> {
            match var(name) {
                None => Ok(default),
                Some(v) => match v.trim().parse::<usize>() {
                    Ok(n) if n > 0 => Ok(n),
                    _ => Err(format!("{name} must be a positive number, not {v:?}")),
                },
            }
        };
        let timeout = match signal("TIMEOUT") {
            Some(v) => Duration::from_millis(v.trim().parse::<u64>().map_err(|_| {
                format!("OTEL_EXPORTER_OTLP_TIMEOUT must be milliseconds, not {v:?}")
            })?),
            None => Duration::from_secs(10),
        };
        let max_queue = count("OTEL_BSP_MAX_QUEUE_SIZE", 2048)?;
        let max_batch = count("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512)?.min(max_queue);
        let service = var("OTEL_SERVICE_NAME").unwrap_or_else(|| "weft".into());
        let mut resource = vec![
            text("service.name", &service),
            text("service.version", env!("CARGO_PKG_VERSION")),
            text("service.instance.id", node),
        ];
        if let Some(list) = var("OTEL_RESOURCE_ATTRIBUTES") {
            for (key, value) in parse_headers(&list)? {
                if key == "service.name" && var("OTEL_SERVICE_NAME").is_some() {
                    continue;
                }
                resource.retain(|kv| kv.key != key);
                resource.push(text(&key, &value));
            }
        }
        Ok(Some(Self {
            endpoint,
            headers,
            timeout,
            delay: millis("OTEL_BSP_SCHEDULE_DELAY", 5000)?,
            max_batch,
            max_queue,
            ca_file: signal("CERTIFICATE").map(Into::into),
            resource,
        }))
    }
}

fn check_url(url: &str) -> Result<String, String> {
    let url = url.trim();
    match url.parse::<http::Uri>() {
        Ok(u) if matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some() => {
            Ok(url.to_string())
        }
        _ => Err(format!(
            "OTLP endpoint {url:?} is not an http:// or https:// URL (e.g. http://127.0.0.1:4318)"
        )),
    }
}

/// The traces URL of a base endpoint: `/v1/traces` appended, unless it is
/// there already.
fn traces_url(base: &str) -> Result<String, String> {
    let base = check_url(base)?;
    let trimmed = base.trim_end_matches('/');
    if trimmed.ends_with(TRACES_PATH) {
        Ok(trimmed.to_string())
    } else {
        Ok(format!("{trimmed}{TRACES_PATH}"))
    }
}

/// `key=value,key2=value2`, values percent-decoded (W3C Baggage form, as
/// `OTEL_EXPORTER_OTLP_HEADERS` and `OTEL_RESOURCE_ATTRIBUTES` use it).
fn parse_headers(list: &str) -> Result<Vec<(String, String)>, String> {
    let mut pairs = Vec::new();
    for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let Some((key, value)) = item.split_once('=') else {
            return Err(format!(
                "{:?} is not key=value",
                item.chars().take(40).collect::<String>()
            ));
        };
        let key = key.trim();
        if key.is_empty() {
            return Err("a key=value pair has no key".into());
        }
        pairs.push((key.to_string(), percent_decode(value.trim())));
    }
    Ok(pairs)
}

fn percent_decode(text: &str) -> String {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let (Some(hi), Some(lo)) = (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            )
        {
            out.push(hi << 4 | lo);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The exporting side: a bounded queue of spans and the task that sends
/// them in batches.
#[derive(Clone)]
pub struct Exporter {
    queue: mpsc::Sender<Span>,
    flush: CancellationToken,
    task: Arc<Mutex<Option<tokio::task::JoinHandle<()>>>>,
}

impl Exporter {
    /// Starts exporting to `config.endpoint`, on the current Tokio runtime.
    pub fn start(config: OtlpConfig) -> Result<Self, String> {
        let transport = Transport::new(&config)?;
        let (queue, spans) = mpsc::channel(config.max_queue);
        let flush = CancellationToken::new();
        for reason in ["queue_full", "export"] {
            metrics::counter!("weft_trace_spans_dropped_total", "reason" => reason).increment(0);
        }
        metrics::counter!("weft_trace_spans_exported_total").increment(0);
        tracing::info!(endpoint = %config.endpoint, "exporting traces over OTLP/HTTP");
        let task = tokio::spawn(send_batches(transport, config, spans, flush.clone()));
        Ok(Self {
            queue,
            flush,
            task: Arc::new(Mutex::new(Some(task))),
        })
    }

    /// Queues a span; drops it (counted) when the queue is full.
    pub fn emit(&self, span: Span) {
        if self.queue.try_send(span).is_err() {
            self.dropped("queue_full", 1);
        }
    }

    /// Queues many spans, waiting up to two seconds in all for room; those
    /// that find none are dropped (counted).
    pub async fn emit_all(&self, spans: Vec<Span>) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        let mut spans = spans.into_iter();
        while let Some(span) = spans.next() {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if self.queue.send_timeout(span, left).await.is_err() {
                self.dropped("queue_full", 1 + spans.len() as u64);
                return;
            }
        }
    }

    pub fn dropped(&self, reason: &'static str, n: u64) {
        metrics::counter!("weft_trace_spans_dropped_total", "reason" => reason).increment(n);
    }

    /// Sends what is queued and stops, within `timeout`.
    pub async fn shutdown(&self, timeout: Duration) {
        self.flush.cancel();
        let task = self.task.lock().unwrap().take();
        if let Some(task) = task
            && tokio::time::timeout(timeout, task).await.is_err()
        {
            tracing::warn!("spans still queued at shutdown were not exported");
        }
    }
}

async fn send_batches(
    mut client: Transport,
    config: OtlpConfig,
    mut spans: mpsc::Receiver<Span>,
    flush: CancellationToken,
) {
    let resource = Resource {
        attributes: config.resource.clone(),
        ..Default::default()
    };
    let mut batch = Vec::with_capacity(config.max_batch);
    loop {
        // Wait for a first span, then for the batch to fill or the delay to pass.
        let first = tokio::select! {
            s = spans.recv() => s,
            _ = flush.cancelled() => None,
        };
        let Some(first) = first else {
            break;
        };
        batch.push(first);
        let until = tokio::time::Instant::now() + config.delay;
        while batch.len() < config.max_batch {
            tokio::select! {
                s = spans.recv() => match s {
                    Some(s) => batch.push(s),
                    None => break,
                },
                _ = tokio::time::sleep_until(until) => break,
                _ = flush.cancelled() => break,
            }
        }
        export(&mut client, &config, &resource, std::mem::take(&mut batch)).await;
    }
    // Flushing: what is queued goes out in full batches.
    while let Ok(span) = spans.try_recv() {
        batch.push(span);
        if batch.len() == config.max_batch {
            export(&mut client, &config, &resource, std::mem::take(&mut batch)).await;
        }
    }
    if !batch.is_empty() {
        export(&mut client, &config, &resource, batch).await;
    }
}

async fn export(
    client: &mut Transport,
    config: &OtlpConfig,
    resource: &Resource,
    spans: Vec<Span>,
) {
    let count = spans.len() as u64;
    let request = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(resource.clone()),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "weft".into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                    ..Default::default()
                }),
                spans,
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    };
    let dropped = |reason: &'static str, n: u64| {
        metrics::counter!("weft_trace_spans_dropped_total", "reason" => reason).increment(n);
    };
    let sent = tokio::time::timeout(
        config.timeout,
        client.post(request.encode_to_vec(), &config.headers),
    )
    .await;
    match sent {
        Ok(Ok((status, body))) if status.is_success() => {
            let rejected = ExportTraceServiceResponse::decode(body)
                .ok()
                .and_then(|r| r.partial_success)
                .map_or(0, |p| u64::try_from(p.rejected_spans).unwrap_or(0))
                .min(count);
            metrics::counter!("weft_trace_spans_exported_total").increment(count - rejected);
            if rejected > 0 {
                dropped("export", rejected);
            }
        }
        Ok(Ok((status, _))) => {
            tracing::debug!(%status, spans = count, "the collector refused spans");
            dropped("export", count);
        }
        Ok(Err(e)) => {
            tracing::debug!(error = %e, spans = count, "cannot export spans");
            client.reset();
            dropped("export", count);
        }
        Err(_) => {
            tracing::debug!(spans = count, "exporting spans timed out");
            client.reset();
            dropped("export", count);
        }
    }
}

/// Largest answer of a collector that is read.
const MAX_ANSWER: usize = 64 << 10;

/// One HTTP/1.1 connection to the collector (TLS for `https://`), opened
/// when first needed and again after a failure.
struct Transport {
    uri: http::Uri,
    authority: String,
    host: String,
    port: u16,
    tls: Option<tokio_rustls::TlsConnector>,
    connection: Option<hyper::client::conn::http1::SendRequest<http_body_util::Full<bytes::Bytes>>>,
}

impl Transport {
    fn new(config: &OtlpConfig) -> Result<Self, String> {
        let uri: http::Uri = config
            .endpoint
            .parse()
            .map_err(|e| format!("OTLP endpoint {}: {e}", config.endpoint))?;
        let https = uri.scheme_str() == Some("https");
        let host = uri
            .host()
            .unwrap_or_default()
            .trim_matches(['[', ']'])
            .to_string();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let authority = uri.authority().map(|a| a.to_string()).unwrap_or_default();
        let tls = if https {
            let outbound = crate::capability::http::Outbound::new(config.ca_file.as_slice())
                .map_err(|e| format!("OTLP exporter: {e}"))?;
            Some(tokio_rustls::TlsConnector::from(Arc::new(
                outbound.client_config(),
            )))
        } else {
            None
        };
        Ok(Self {
            uri,
            authority,
            host,
            port,
            tls,
            connection: None,
        })
    }

    fn reset(&mut self) {
        self.connection = None;
    }

    async fn connect(
        &self,
    ) -> Result<hyper::client::conn::http1::SendRequest<http_body_util::Full<bytes::Bytes>>, String>
    {
        let tcp = tokio::net::TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| format!("connect {}: {e}", self.authority))?;
        let _ = tcp.set_nodelay(true);
        match &self.tls {
            None => handshake(tcp).await,
            Some(connector) => {
                let name = rustls::pki_types::ServerName::try_from(self.host.clone())
                    .map_err(|e| format!("{}: {e}", self.host))?;
                let stream = connector
                    .connect(name, tcp)
                    .await
                    .map_err(|e| format!("TLS with {}: {e}", self.authority))?;
                handshake(stream).await
            }
        }
    }

    /// POSTs `body`; the answer's status and (at most [`MAX_ANSWER`] of) body.
    async fn post(
        &mut self,
        body: Vec<u8>,
        headers: &[(String, String)],
    ) -> Result<(http::StatusCode, bytes::Bytes), String> {
        use http_body_util::BodyExt;
        let mut connection = match self.connection.take() {
            Some(c) if !c.is_closed() => c,
            _ => self.connect().await?,
        };
        connection
            .ready()
            .await
            .map_err(|e| format!("connection: {e}"))?;
        let path = self
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string();
        let mut request = http::Request::post(path)
            .header(http::header::HOST, &self.authority)
            .header(http::header::CONTENT_TYPE, "application/x-protobuf");
        for (name, value) in headers {
            request = request.header(name.as_str(), value.as_str());
        }
        let request = request
            .body(http_body_util::Full::new(bytes::Bytes::from(body)))
            .map_err(|e| format!("request: {e}"))?;
        let response = connection
            .send_request(request)
            .await
            .map_err(|e| format!("send: {e}"))?;
        let status = response.status();
        let answer = http_body_util::Limited::new(response.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map_err(|e| format!("answer: {e}"))?
            .to_bytes();
        self.connection = Some(connection);
        Ok((status, answer))
    }
}

async fn handshake<S>(
    stream: S,
) -> Result<hyper::client::conn::http1::SendRequest<http_body_util::Full<bytes::Bytes>>, String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| format!("HTTP handshake: {e}"))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn the_endpoint_comes_from_the_flag_then_the_traces_variable_then_the_base_variable() {
        let off = OtlpConfig::from_env(None, env(&[]), "n").unwrap();
        assert!(off.is_none());
        let base = [("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/")];
        let c = OtlpConfig::from_env(None, env(&base), "n")
            .unwrap()
            .unwrap();
        assert_eq!(c.endpoint, "http://collector:4318/v1/traces");
        let full = [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
            (
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "http://other:9999/custom",
            ),
        ];
        let c = OtlpConfig::from_env(None, env(&full), "n")
            .unwrap()
            .unwrap();
        assert_eq!(c.endpoint, "http://other:9999/custom");
        let c = OtlpConfig::from_env(Some("https://x:4318/v1/traces"), env(&full), "n")
            .unwrap()
            .unwrap();
        assert_eq!(c.endpoint, "https://x:4318/v1/traces");
        let disabled = [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
            ("OTEL_SDK_DISABLED", "true"),
        ];
        assert!(
            OtlpConfig::from_env(None, env(&disabled), "n")
                .unwrap()
                .is_none()
        );
        assert!(OtlpConfig::from_env(Some("collector:4318"), env(&[]), "n").is_err());
        let grpc = [("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")];
        let e = OtlpConfig::from_env(Some("http://c:4317"), env(&grpc), "n").unwrap_err();
        assert!(e.contains("http/protobuf"), "{e}");
    }

    #[test]
    fn headers_resource_and_batching_follow_the_otel_variables() {
        let vars = [
            (
                "OTEL_EXPORTER_OTLP_HEADERS",
                "api-key=s%3Dcret, x-team = core",
            ),
            ("OTEL_SERVICE_NAME", "orders-weft"),
            (
                "OTEL_RESOURCE_ATTRIBUTES",
                "deployment.environment=prod,service.name=ignored",
            ),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
            ("OTEL_BSP_MAX_QUEUE_SIZE", "10"),
            ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "512"),
            ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "2500"),
        ];
        let c = OtlpConfig::from_env(Some("http://c:4318"), env(&vars), "node-1")
            .unwrap()
            .unwrap();
        assert_eq!(
            c.headers,
            vec![
                ("api-key".to_string(), "s=cret".to_string()),
                ("x-team".to_string(), "core".to_string())
            ]
        );
        assert_eq!(c.delay, Duration::from_millis(100));
        assert_eq!((c.max_queue, c.max_batch), (10, 10));
        assert_eq!(c.timeout, Duration::from_millis(2500));
        let attr = |key: &str| {
            c.resource.iter().find(|kv| kv.key == key).and_then(|kv| {
                match kv.value.as_ref()?.value.as_ref()? {
                    opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue(s) => {
                        Some(s.clone())
                    }
                    _ => None,
                }
            })
        };
        assert_eq!(attr("service.name").as_deref(), Some("orders-weft"));
        assert_eq!(attr("service.instance.id").as_deref(), Some("node-1"));
        assert_eq!(attr("deployment.environment").as_deref(), Some("prod"));
        // The headers may hold a key: the debug form shows only how many.
        assert!(!format!("{c:?}").contains("cret"));
        let bad = [("OTEL_BSP_MAX_QUEUE_SIZE", "0")];
        assert!(OtlpConfig::from_env(Some("http://c:4318"), env(&bad), "n").is_err());
        let bad = [("OTEL_EXPORTER_OTLP_HEADERS", "novalue")];
        assert!(OtlpConfig::from_env(Some("http://c:4318"), env(&bad), "n").is_err());
    }
}
