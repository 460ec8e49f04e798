//! Outgoing HTTP of a step (`wasi:http/outgoing-handler`) under its policy:
//! the authority must match both the tenant's `allowed_hosts` and the step's
//! `"http": {"allow": [...]}`; the host resolves the name itself and connects
//! only to an address it checked (no DNS rebinding), refusing internal
//! addresses the tenant did not name literally; at most `http_requests`
//! requests per attempt and `http_response_bytes` per response body.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http::uri::Scheme;
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use tokio::net::TcpStream;
use wasmtime_wasi_http::io::TokioIo;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpCtx, WasiHttpHooks};

use super::hosts::{HostPattern, restricted};
use crate::engine::Attempt;

/// What one step attempt may reach.
#[derive(Debug, Clone, Default)]
pub struct HttpPolicy {
    /// The tenant's `allowed_hosts`, as the admin set them.
    pub tenant: Arc<[HostPattern]>,
    /// The step's `"http": {"allow": [...]}`.
    pub step: Vec<HostPattern>,
    /// Requests per attempt (`http_requests`).
    pub max_requests: u32,
    /// Bytes of one response body (`http_response_bytes`).
    pub max_response_bytes: u64,
}

/// The node's TLS client setup, shared by every step: webpki's roots plus
/// any CA certificates the operator adds (`--http-ca-file`).
#[derive(Clone)]
pub struct Outbound {
    tls: Arc<rustls::ClientConfig>,
}

impl Outbound {
    /// Trusts webpki's roots and the PEM certificates in `extra_ca`.
    pub fn new(extra_ca: &[impl AsRef<Path>]) -> anyhow::Result<Self> {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.into(),
        };
        for file in extra_ca {
            let file = file.as_ref();
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(file)
                .and_then(|certs| certs.collect::<Result<_, _>>())
                .map_err(|e| anyhow::anyhow!("cannot read CA file {}: {e}", file.display()))?;
            if certs.is_empty() {
                anyhow::bail!("CA file {} holds no certificate", file.display());
            }
            for cert in certs {
                roots.add(cert)?;
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Self { tls: Arc::new(tls) })
    }

    /// The TLS client setup, for other clients of this node (the OTLP exporter).
    pub fn client_config(&self) -> rustls::ClientConfig {
        (*self.tls).clone()
    }
}

/// The `wasi:http` state of one attempt.
pub(crate) struct StepHttp {
    pub(crate) ctx: WasiHttpCtx,
    pub(crate) hooks: Hooks,
}

impl StepHttp {
    pub(crate) fn new(policy: HttpPolicy, outbound: Outbound, attempt: Arc<Attempt>) -> Self {
        Self {
            ctx: WasiHttpCtx::new(),
            hooks: Hooks {
                policy: Arc::new(policy),
                outbound,
                attempt,
                sent: 0,
            },
        }
    }
}

pub(crate) struct Hooks {
    policy: Arc<HttpPolicy>,
    outbound: Outbound,
    attempt: Arc<Attempt>,
    sent: u32,
}

type SendFuture = Box<
    dyn Future<
            Output = Result<
                (
                    http::Response<WasiBody>,
                    Box<dyn Future<Output = Result<(), Error>> + Send>,
                ),
                Error,
            >,
        > + Send,
>;

impl WasiHttpHooks for Hooks {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        _options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), Error>> + Send>,
    ) -> SendFuture {
        let line = RequestLine::of(&request);
        self.sent += 1;
        if self.sent > self.policy.max_requests {
            let message = format!(
                "{line} refused: the step made more than {} requests (http_requests)",
                self.policy.max_requests
            );
            self.attempt.log("warn", &message);
            self.attempt.stop("http_requests_exceeded", message);
            return Box::new(async { Err(Error::HttpRequestDenied) });
        }
        let target = match self.allowed(&request) {
            Ok(target) => target,
            Err(why) => {
                self.attempt.log("warn", &format!("{line} refused: {why}"));
                return Box::new(async { Err(Error::HttpRequestDenied) });
            }
        };
        let outbound = self.outbound.clone();
        let policy = self.policy.clone();
        let attempt = self.attempt.clone();
        Box::new(async move {
            let started = Instant::now();
            let sent = send(request, &target, &outbound, &policy, &attempt).await;
            let ms = started.elapsed().as_millis();
            match &sent {
                Ok((response, _)) => {
                    let status = response.status().as_u16();
                    attempt.log("info", &format!("{line} -> {status} ({ms} ms)"));
                }
                Err(Refused(why)) => attempt.log("warn", &format!("{line} refused: {why}")),
                Err(Failed(e)) => attempt.log("warn", &format!("{line} failed: {e} ({ms} ms)")),
            }
            sent.map_err(|e| match e {
                Refused(_) => Error::HttpRequestDenied,
                Failed(e) => e,
            })
        })
    }
}

/// A request cleared by the allow-lists: where it goes.
struct Target {
    tls: bool,
    host: String,
    port: u16,
    default_port: u16,
}

impl Hooks {
    fn allowed(&self, request: &http::Request<WasiBody>) -> Result<Target, String> {
        let uri = request.uri();
        let tls = match uri.scheme() {
            Some(s) if *s == Scheme::HTTPS => true,
            Some(s) if *s == Scheme::HTTP => false,
            _ => return Err("only http and https are supported".into()),
        };
        let authority = uri.authority().ok_or("the request names no host")?;
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        let default_port = if tls { 443 } else { 80 };
        let port = authority.port_u16().unwrap_or(default_port);
        let matches = |p: &HostPattern| p.matches(host, port, default_port);
        if !self.policy.tenant.iter().any(matches) {
            return Err(format!(
                "{host}:{port} is not in the tenant's allowed_hosts (an admin sets them with `weft tenant limits`)"
            ));
        }
        if !self.policy.step.iter().any(matches) {
            return Err(format!(
                "{host}:{port} is not in the step's \"http\": {{\"allow\": [...]}}"
            ));
        }
        Ok(Target {
            tls,
            host: host.to_ascii_lowercase(),
            port,
            default_port,
        })
    }
}

/// Why a request that passed the allow-lists did not get a response.
enum SendError {
    /// The host would not connect (a forbidden address): the guest sees
    /// `HTTP-request-denied`.
    Refused(String),
    /// The network or the server failed.
    Failed(Error),
}
use SendError::{Failed, Refused};

async fn send(
    mut request: http::Request<WasiBody>,
    target: &Target,
    outbound: &Outbound,
    policy: &HttpPolicy,
    attempt: &Arc<Attempt>,
) -> Result<
    (
        http::Response<WasiBody>,
        Box<dyn Future<Output = Result<(), Error>> + Send>,
    ),
    SendError,
> {
    let stream = connect(target, policy).await?;
    let io: Box<dyn Stream> = if target.tls {
        let name = server_name(&target.host).map_err(Refused)?;
        let connector = tokio_rustls::TlsConnector::from(outbound.tls.clone());
        let stream = connector
            .connect(name, stream)
            .await
            .map_err(|e| Failed(Error::Tls(e)))?;
        Box::new(stream)
    } else {
        Box::new(stream)
    };
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| Failed(e.into()))?;
    // The request line carries only the path: the authority is in `Host`.
    let path = request
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/")
        .to_string();
    *request.uri_mut() = http::Uri::builder()
        .path_and_query(path)
        .build()
        .map_err(|_| Failed(Error::HttpRequestUriInvalid))?;
    let mut conn = Box::pin(conn);
    let mut response = Box::pin(sender.send_request(request));
    // Drive the connection while waiting for the response head.
    let response = std::future::poll_fn(|cx| {
        if let Poll::Ready(r) = response.as_mut().poll(cx) {
            return Poll::Ready(r);
        }
        match conn.as_mut().poll(cx) {
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            _ => Poll::Pending,
        }
    })
    .await
    .map_err(|e| Failed(e.into()))?;
    let limit = policy.max_response_bytes;
    let attempt = attempt.clone();
    let response = response.map(move |body| {
        CappedBody {
            inner: body.map_err(Error::from).boxed_unsync(),
            read: 0,
            limit,
            attempt,
        }
        .boxed_unsync()
    });
    let io: Box<dyn Future<Output = Result<(), Error>> + Send> =
        Box::new(async move { conn.await.map_err(Error::from) });
    Ok((response, io))
}

trait Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static {}
impl<T> Stream for T where T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static {}

/// Resolves the name (or takes the literal address) and connects to the
/// first address the policy permits; the check is on the address connected to.
async fn connect(target: &Target, policy: &HttpPolicy) -> Result<TcpStream, SendError> {
    let addresses: Vec<SocketAddr> = match target.host.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, target.port)],
        Err(_) => tokio::net::lookup_host((target.host.as_str(), target.port))
            .await
            .map_err(|e| {
                Failed(Error::DnsError {
                    rcode: Some(e.to_string()),
                    info_code: None,
                })
            })?
            .collect(),
    };
    let mut refused = None;
    let mut last_error = None;
    for address in addresses {
        if let Some(kind) = restricted(address.ip()) {
            let named = policy
                .tenant
                .iter()
                .any(|p| p.names_address(address.ip(), target.port, target.default_port));
            if !named {
                refused = Some(format!(
                    "{} resolves to {}, {kind}; only an address the tenant's allowed_hosts names literally may be reached",
                    target.host,
                    address.ip()
                ));
                continue;
            }
        }
        match TcpStream::connect(address).await {
            Ok(stream) => return Ok(stream),
            Err(e) => last_error = Some(e),
        }
    }
    match (last_error, refused) {
        (Some(e), _) => Err(Failed(Error::Connect(e))),
        (None, Some(why)) => Err(Refused(why)),
        (None, None) => Err(Failed(Error::DestinationNotFound)),
    }
}

fn server_name(host: &str) -> Result<rustls::pki_types::ServerName<'static>, String> {
    use rustls::pki_types::ServerName;
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(ServerName::from(ip));
    }
    ServerName::try_from(host.to_string()).map_err(|e| format!("{host} is not a TLS name: {e}"))
}

/// A response body that stops the step once it passes `http_response_bytes`.
struct CappedBody {
    inner: WasiBody,
    read: u64,
    limit: u64,
    attempt: Arc<Attempt>,
}

impl Body for CappedBody {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let frame = match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => frame,
            other => return other,
        };
        if let Some(data) = frame.data_ref() {
            self.read += data.len() as u64;
            if self.read > self.limit {
                let message = format!(
                    "a response body passed the step's {} bytes (http_response_bytes)",
                    self.limit
                );
                self.attempt.log("warn", &message);
                self.attempt.stop("http_response_too_large", message);
                return Poll::Ready(Some(Err(Error::HttpResponseBodySize(Some(self.limit)))));
            }
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
}

/// `GET https://api.example.com/v1/charges`: no query, no headers.
struct RequestLine(String);

impl RequestLine {
    fn of(request: &http::Request<WasiBody>) -> Self {
        let uri = request.uri();
        let scheme = uri.scheme_str().unwrap_or("https");
        let host = uri
            .authority()
            .map(|a| match a.port() {
                Some(p) => format!("{}:{p}", a.host()),
                None => a.host().to_string(),
            })
            .unwrap_or_default();
        Self(format!(
            "{} {scheme}://{host}{}",
            request.method(),
            uri.path()
        ))
    }
}

impl std::fmt::Display for RequestLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
