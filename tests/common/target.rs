//! A real local HTTP and HTTPS server that steps call in the tests: plain
//! on one port, TLS (a certificate for 127.0.0.1 and localhost, signed by a
//! test CA written to `ca.pem`) on another. It records what it was asked.
//!
//! Routes: `/json` (a JSON object), `/echo-auth` (the Authorization header
//! it got, as JSON), `/text` (words), `/redirect?to=URL` (302),
//! `/big?bytes=N` (N bytes), `/status/N`, `/hang` (never answers).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response};
use tokio::net::TcpListener;

/// One request the server got.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub authorization: Option<String>,
}

/// The running server; stops with the test process.
pub struct Target {
    pub port: u16,
    pub tls_port: u16,
    /// The test CA, for `weft serve --http-ca-file`.
    pub ca_pem: PathBuf,
    seen: Arc<Mutex<Vec<Seen>>>,
}

/// Words `/text` answers with.
pub const TEXT: &str =
    "the quick brown fox jumps over the lazy dog while the cat sleeps in the warm afternoon sun";

impl Target {
    /// Starts both listeners on free ports and writes the CA to `dir/ca.pem`.
    pub fn start(dir: &Path) -> Self {
        let (server_config, ca) = tls_config();
        let ca_pem = dir.join("ca.pem");
        std::fs::write(&ca_pem, ca).expect("write ca.pem");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (ports_tx, ports_rx) = std::sync::mpsc::channel();
        let log = seen.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let plain = TcpListener::bind("127.0.0.1:0").await.expect("bind");
                let tls = TcpListener::bind("127.0.0.1:0").await.expect("bind");
                let ports = (
                    plain.local_addr().unwrap().port(),
                    tls.local_addr().unwrap().port(),
                );
                ports_tx.send(ports).unwrap();
                let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_config));
                let log2 = log.clone();
                tokio::spawn(async move {
                    loop {
                        let Ok((stream, peer)) = tls.accept().await else {
                            continue;
                        };
                        let acceptor = acceptor.clone();
                        let log = log2.clone();
                        tokio::spawn(async move {
                            if let Ok(stream) = acceptor.accept(stream).await {
                                serve(stream, peer, log).await;
                            }
                        });
                    }
                });
                loop {
                    let Ok((stream, peer)) = plain.accept().await else {
                        continue;
                    };
                    tokio::spawn(serve(stream, peer, log.clone()));
                }
            });
        });
        let (port, tls_port) = ports_rx.recv().expect("target ports");
        Self {
            port,
            tls_port,
            ca_pem,
            seen,
        }
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// `https://127.0.0.1:<tls_port><path>`.
    pub fn tls_url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.tls_port)
    }

    /// The requests so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

async fn serve<S>(stream: S, _peer: SocketAddr, seen: Arc<Mutex<Vec<Seen>>>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
        let seen = seen.clone();
        async move { Ok::<_, Infallible>(answer(request, &seen).await) }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
        .await;
}

async fn answer(
    request: Request<hyper::body::Incoming>,
    seen: &Mutex<Vec<Seen>>,
) -> Response<Full<Bytes>> {
    let path = request.uri().path().to_string();
    let query = request.uri().query().unwrap_or("").to_string();
    let authorization = request
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    seen.lock().unwrap().push(Seen {
        method: request.method().to_string(),
        path: path.clone(),
        authorization: authorization.clone(),
    });
    let param = |name: &str| {
        query
            .split('&')
            .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
            .map(|v| v.replace("%3A", ":").replace("%2F", "/"))
    };
    let json = |status: u16, value: serde_json::Value| {
        Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(value.to_string())))
            .unwrap()
    };
    match path.as_str() {
        "/json" => json(
            200,
            serde_json::json!({"ok": true, "authorized": authorization.is_some()}),
        ),
        "/echo-auth" => json(200, serde_json::json!({"authorization": authorization})),
        "/text" => Response::builder()
            .header("content-type", "text/plain")
            .body(Full::new(Bytes::from_static(TEXT.as_bytes())))
            .unwrap(),
        "/redirect" => Response::builder()
            .status(302)
            .header("location", param("to").unwrap_or_default())
            .body(Full::new(Bytes::new()))
            .unwrap(),
        "/big" => {
            let n: usize = param("bytes").and_then(|n| n.parse().ok()).unwrap_or(0);
            Response::new(Full::new(Bytes::from(vec![b'a'; n])))
        }
        "/hang" => {
            tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
            json(200, serde_json::json!({}))
        }
        other => match other.strip_prefix("/status/").and_then(|s| s.parse().ok()) {
            Some(status) => json(status, serde_json::json!({"status": status})),
            None => json(404, serde_json::json!({"error": "no such route"})),
        },
    }
}

/// A server config for 127.0.0.1 and localhost, and the PEM of the CA that signed it.
pub fn tls_config() -> (rustls::ServerConfig, String) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Weft test CA");
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let params =
        CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    let chain = vec![cert.der().clone()];
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    (config, ca_cert.pem())
}
