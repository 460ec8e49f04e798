//! A real OTLP/HTTP receiver for the tests: it takes `POST /v1/traces`
//! bodies, decodes them as the protocol's protobuf messages, and keeps the
//! spans with their resource's attributes.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value::Value};
use prost::Message;
use tokio::net::TcpListener;

/// A span as received, with what the tests read of it.
#[derive(Debug, Clone)]
pub struct Received {
    pub trace_id: String,
    pub span_id: String,
    pub parent_span_id: String,
    pub name: String,
    pub start: u64,
    pub end: u64,
    pub attributes: HashMap<String, String>,
    /// 1 ok, 2 error (`Status.code`).
    pub status: i32,
    pub status_message: String,
    pub resource: HashMap<String, String>,
}

impl Received {
    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }
}

/// The running receiver; stops with the test process.
pub struct Receiver {
    pub port: u16,
    /// The CA of its certificate (for 127.0.0.1), when it speaks TLS.
    pub ca_pem: Option<String>,
    spans: Arc<Mutex<Vec<Received>>>,
    /// Requests that could not be decoded.
    bad: Arc<Mutex<Vec<String>>>,
}

impl Receiver {
    pub fn start() -> Self {
        Self::start_with(None)
    }

    /// A receiver on HTTPS, its certificate signed by a test CA.
    pub fn start_tls() -> Self {
        let (config, ca) = super::target::tls_config();
        let mut receiver =
            Self::start_with(Some(tokio_rustls::TlsAcceptor::from(Arc::new(config))));
        receiver.ca_pem = Some(ca);
        receiver
    }

    fn start_with(tls: Option<tokio_rustls::TlsAcceptor>) -> Self {
        let spans = Arc::new(Mutex::new(Vec::new()));
        let bad = Arc::new(Mutex::new(Vec::new()));
        let (port_tx, port_rx) = std::sync::mpsc::channel();
        let (kept, refused) = (spans.clone(), bad.clone());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
                port_tx.send(listener.local_addr().unwrap().port()).unwrap();
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        continue;
                    };
                    let (kept, refused) = (kept.clone(), refused.clone());
                    let tls = tls.clone();
                    tokio::spawn(async move {
                        let service = hyper::service::service_fn(move |r| {
                            let (kept, refused) = (kept.clone(), refused.clone());
                            async move { Ok::<_, Infallible>(take(r, &kept, &refused).await) }
                        });
                        let http = hyper::server::conn::http1::Builder::new();
                        match tls {
                            None => {
                                let io = hyper_util::rt::TokioIo::new(stream);
                                let _ = http.serve_connection(io, service).await;
                            }
                            Some(acceptor) => {
                                if let Ok(stream) = acceptor.accept(stream).await {
                                    let io = hyper_util::rt::TokioIo::new(stream);
                                    let _ = http.serve_connection(io, service).await;
                                }
                            }
                        }
                    });
                }
            });
        });
        Self {
            port: port_rx.recv().expect("receiver port"),
            ca_pem: None,
            spans,
            bad,
        }
    }

    /// The base endpoint, as `--otlp-endpoint` takes it.
    pub fn endpoint(&self) -> String {
        let scheme = if self.ca_pem.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    pub fn spans(&self) -> Vec<Received> {
        assert!(
            self.bad.lock().unwrap().is_empty(),
            "undecodable exports: {:?}",
            self.bad.lock().unwrap()
        );
        self.spans.lock().unwrap().clone()
    }

    /// The spans of trace `trace_id` once there are at least `count`, for
    /// at most 20 s.
    pub fn trace(&self, trace_id: &str, count: usize) -> Vec<Received> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let spans: Vec<Received> = self
                .spans()
                .into_iter()
                .filter(|s| s.trace_id == trace_id)
                .collect();
            if spans.len() >= count {
                return spans;
            }
            assert!(
                Instant::now() < deadline,
                "trace {trace_id}: {} of {count} spans arrived: {spans:#?}",
                spans.len()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

async fn take(
    request: Request<hyper::body::Incoming>,
    kept: &Mutex<Vec<Received>>,
    refused: &Mutex<Vec<String>>,
) -> Response<Full<Bytes>> {
    let answer = |status: u16, body: Vec<u8>| {
        Response::builder()
            .status(status)
            .header("content-type", "application/x-protobuf")
            .body(Full::new(Bytes::from(body)))
            .unwrap()
    };
    let path = request.uri().path().to_string();
    let kind = request
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    if request.method() != hyper::Method::POST
        || path != "/v1/traces"
        || kind != "application/x-protobuf"
    {
        refused
            .lock()
            .unwrap()
            .push(format!("{} {path} ({kind})", request.method()));
        return answer(404, Vec::new());
    }
    let body = match request.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            refused.lock().unwrap().push(format!("body: {e}"));
            return answer(400, Vec::new());
        }
    };
    let export = match ExportTraceServiceRequest::decode(body) {
        Ok(e) => e,
        Err(e) => {
            refused.lock().unwrap().push(format!("decode: {e}"));
            return answer(400, Vec::new());
        }
    };
    let mut spans = kept.lock().unwrap();
    for rs in export.resource_spans {
        let resource = rs
            .resource
            .map(|r| texts(&r.attributes))
            .unwrap_or_default();
        for ss in rs.scope_spans {
            for s in ss.spans {
                let status = s.status.unwrap_or_default();
                spans.push(Received {
                    trace_id: hex::encode(&s.trace_id),
                    span_id: hex::encode(&s.span_id),
                    parent_span_id: hex::encode(&s.parent_span_id),
                    name: s.name,
                    start: s.start_time_unix_nano,
                    end: s.end_time_unix_nano,
                    attributes: texts(&s.attributes),
                    status: status.code,
                    status_message: status.message,
                    resource: resource.clone(),
                });
            }
        }
    }
    answer(200, ExportTraceServiceResponse::default().encode_to_vec())
}

/// Attributes as text: strings as they are, numbers and booleans written out.
fn texts(attributes: &[KeyValue]) -> HashMap<String, String> {
    attributes
        .iter()
        .filter_map(|kv| {
            let value = match kv.value.as_ref()?.value.as_ref()? {
                Value::StringValue(s) => s.clone(),
                Value::IntValue(i) => i.to_string(),
                Value::BoolValue(b) => b.to_string(),
                Value::DoubleValue(d) => d.to_string(),
                other => format!("{other:?}"),
            };
            Some((kv.key.clone(), value))
        })
        .collect()
}
