//! Outgoing HTTP requests from a step, over `wasi:http`.
//!
//! A request goes out only to a host that both the tenant's `allowed_hosts`
//! (set by the operator) and the step's `"http": {"allow": [...]}` name;
//! anything else fails with [`HttpError::Denied`] without touching the
//! network. Redirects are followed (up to [`Request::max_redirects`]), each
//! hop checked by the host like a new request; `Authorization` and `Cookie`
//! headers go along only while the origin stays the same.
//!
//! ```no_run
//! use weft_sdk::http;
//!
//! # fn f() -> Result<(), weft_sdk::StepError> {
//! let token = weft_sdk::secret("api_token").unwrap_or_default();
//! let response = http::Request::get("https://api.example.com/v1/orders")
//!     .header("authorization", &format!("Bearer {token}"))
//!     .send()?;
//! let orders: serde_json::Value = response.json()?;
//! # Ok(()) }
//! ```

use std::fmt;

use crate::StepError;

/// Redirects followed unless the request says otherwise.
pub const DEFAULT_MAX_REDIRECTS: u32 = 5;

/// A request to send.
#[derive(Debug, Clone)]
pub struct Request {
    method: String,
    url: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    max_redirects: u32,
}

/// A response with its whole body.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The URL that answered, after redirects.
    pub url: String,
}

/// Why a request got no response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpError {
    /// The host refused it: the host is not allowed for this step or
    /// tenant, or resolves to an address that is not (see the step's log).
    Denied(String),
    /// The URL cannot be sent (not http or https, no host, bad header).
    InvalidRequest(String),
    /// DNS, connection, TLS or protocol failure, or a timeout.
    Transport(String),
    /// More redirects than the request allows.
    TooManyRedirects(String),
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Denied(m) => write!(f, "request denied: {m}"),
            Self::InvalidRequest(m) => write!(f, "invalid request: {m}"),
            Self::Transport(m) => write!(f, "request failed: {m}"),
            Self::TooManyRedirects(m) => write!(f, "too many redirects: {m}"),
        }
    }
}

impl std::error::Error for HttpError {}

/// Becomes a step error with code `http_error`: retryable when the network
/// failed, not when the request was denied or invalid.
impl From<HttpError> for StepError {
    fn from(e: HttpError) -> Self {
        let retryable = matches!(e, HttpError::Transport(_));
        StepError::new("http_error", e.to_string()).with_retryable(retryable)
    }
}

impl Request {
    /// A request with `method` (`GET`, `POST`, ...) to `url`.
    pub fn new(method: &str, url: &str) -> Self {
        Self {
            method: method.to_ascii_uppercase(),
            url: url.to_string(),
            headers: Vec::new(),
            body: Vec::new(),
            max_redirects: DEFAULT_MAX_REDIRECTS,
        }
    }

    pub fn get(url: &str) -> Self {
        Self::new("GET", url)
    }

    pub fn post(url: &str) -> Self {
        Self::new("POST", url)
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// Sets the body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// Sets the body to `value` as JSON, with its content type.
    pub fn json(self, value: &impl serde::Serialize) -> Self {
        let body = serde_json::to_vec(value).expect("a serde value serialises to JSON");
        self.header("content-type", "application/json").body(body)
    }

    /// How many redirects to follow; 0 returns a 3xx response as it is.
    pub fn max_redirects(mut self, n: u32) -> Self {
        self.max_redirects = n;
        self
    }

    /// Sends the request and reads the whole response, following redirects.
    pub fn send(self) -> Result<Response, HttpError> {
        let mut request = self;
        let mut hops = 0;
        loop {
            let response = send_once(&request)?;
            let location = response
                .header("location")
                .filter(|_| matches!(response.status, 301 | 302 | 303 | 307 | 308));
            let Some(location) = location else {
                return Ok(response);
            };
            if hops >= request.max_redirects {
                return Err(HttpError::TooManyRedirects(format!(
                    "{} redirected more than {} times",
                    request.url, request.max_redirects
                )));
            }
            hops += 1;
            let next = resolve(&request.url, location)?;
            // 303, and 301/302 after a POST, turn into a GET without a body.
            if response.status == 303
                || (matches!(response.status, 301 | 302) && request.method == "POST")
            {
                request.method = "GET".into();
                request.body.clear();
            }
            // Credentials go to the origin they were meant for only.
            if origin(&next) != origin(&request.url) {
                request.headers.retain(|(k, _)| {
                    !k.eq_ignore_ascii_case("authorization") && !k.eq_ignore_ascii_case("cookie")
                });
            }
            request.url = next;
        }
    }
}

impl Response {
    /// The first header called `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Is the status 2xx?
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The body as text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON; a body that is not fails with `bad_response`.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, StepError> {
        serde_json::from_slice(&self.body).map_err(|e| {
            StepError::new(
                "bad_response",
                format!(
                    "{} answered {} with a body that is not the JSON expected: {e}",
                    self.url, self.status
                ),
            )
        })
    }
}

/// The parts of an absolute http(s) URL.
struct Parts<'a> {
    https: bool,
    authority: &'a str,
    path_and_query: &'a str,
}

fn parts(url: &str) -> Result<Parts<'_>, HttpError> {
    let (https, rest) = if let Some(rest) = url.strip_prefix("https://") {
        (true, rest)
    } else if let Some(rest) = url.strip_prefix("http://") {
        (false, rest)
    } else {
        return Err(HttpError::InvalidRequest(format!(
            "{url:?} is not an http:// or https:// URL"
        )));
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..end];
    if authority.is_empty() || authority.contains('@') {
        return Err(HttpError::InvalidRequest(format!(
            "{url:?} names no host (or carries credentials, which go in a header)"
        )));
    }
    let mut path_and_query = &rest[end..];
    if let Some(hash) = path_and_query.find('#') {
        path_and_query = &path_and_query[..hash];
    }
    Ok(Parts {
        https,
        authority,
        path_and_query,
    })
}

/// `scheme://authority` of a URL, lowercased.
fn origin(url: &str) -> Option<String> {
    let p = parts(url).ok()?;
    Some(format!(
        "{}://{}",
        if p.https { "https" } else { "http" },
        p.authority.to_ascii_lowercase()
    ))
}

/// `location` made absolute against `base`.
fn resolve(base: &str, location: &str) -> Result<String, HttpError> {
    if location.starts_with("http://") || location.starts_with("https://") {
        return Ok(location.to_string());
    }
    let b = parts(base)?;
    let scheme = if b.https { "https" } else { "http" };
    if let Some(rest) = location.strip_prefix("//") {
        return Ok(format!("{scheme}://{rest}"));
    }
    if location.starts_with('/') {
        return Ok(format!("{scheme}://{}{location}", b.authority));
    }
    let path = b.path_and_query.split('?').next().unwrap_or("");
    let dir = &path[..path.rfind('/').map_or(0, |i| i + 1)];
    let dir = if dir.is_empty() { "/" } else { dir };
    Ok(format!("{scheme}://{}{dir}{location}", b.authority))
}

#[cfg(target_arch = "wasm32")]
fn send_once(request: &Request) -> Result<Response, HttpError> {
    use crate::__bindings::wasi::http::outgoing_handler;
    use crate::__bindings::wasi::http::types::{
        ErrorCode, Fields, IncomingBody, Method, OutgoingBody, OutgoingRequest, Scheme,
    };
    use crate::__bindings::wasi::io::streams::StreamError;

    let url = parts(&request.url)?;
    let invalid = |what: &str| HttpError::InvalidRequest(format!("{}: {what}", request.url));
    let entries: Vec<(String, Vec<u8>)> = request
        .headers
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.as_bytes().to_vec()))
        .collect();
    let headers = Fields::from_list(&entries).map_err(|e| invalid(&format!("header: {e:?}")))?;
    let outgoing = OutgoingRequest::new(headers);
    let method = match request.method.as_str() {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        "POST" => Method::Post,
        "PUT" => Method::Put,
        "DELETE" => Method::Delete,
        "PATCH" => Method::Patch,
        "OPTIONS" => Method::Options,
        other => Method::Other(other.to_string()),
    };
    outgoing
        .set_method(&method)
        .map_err(|_| invalid("method"))?;
    let scheme = if url.https {
        Scheme::Https
    } else {
        Scheme::Http
    };
    outgoing
        .set_scheme(Some(&scheme))
        .map_err(|_| invalid("scheme"))?;
    outgoing
        .set_authority(Some(url.authority))
        .map_err(|_| invalid("host"))?;
    let path = if url.path_and_query.is_empty() {
        "/"
    } else {
        url.path_and_query
    };
    outgoing
        .set_path_with_query(Some(path))
        .map_err(|_| invalid("path"))?;
    let body = outgoing.body().map_err(|_| invalid("body"))?;
    if !request.body.is_empty() {
        let stream = body.write().map_err(|_| invalid("body"))?;
        for chunk in request.body.chunks(4096) {
            stream
                .blocking_write_and_flush(chunk)
                .map_err(|e| HttpError::Transport(format!("sending the body: {e:?}")))?;
        }
    }
    let error = |e: ErrorCode| match e {
        ErrorCode::HttpRequestDenied => HttpError::Denied(format!(
            "{} is not allowed for this step (see the step's log)",
            url.authority
        )),
        other => HttpError::Transport(format!("{}: {other:?}", request.url)),
    };
    let future = outgoing_handler::handle(outgoing, None).map_err(error)?;
    OutgoingBody::finish(body, None).map_err(error)?;
    let response = loop {
        match future.get() {
            Some(result) => break result,
            None => future.subscribe().block(),
        }
    };
    let response = response
        .map_err(|()| HttpError::Transport("the response was taken twice".into()))?
        .map_err(error)?;
    let status = response.status();
    let headers = response
        .headers()
        .entries()
        .into_iter()
        .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
        .collect();
    let incoming = response
        .consume()
        .map_err(|()| HttpError::Transport("the response body was taken twice".into()))?;
    let stream = incoming
        .stream()
        .map_err(|()| HttpError::Transport("the response body was taken twice".into()))?;
    let mut bytes = Vec::new();
    loop {
        match stream.blocking_read(64 * 1024) {
            Ok(chunk) => bytes.extend_from_slice(&chunk),
            Err(StreamError::Closed) => break,
            Err(StreamError::LastOperationFailed(e)) => {
                return Err(HttpError::Transport(format!(
                    "reading the response of {}: {}",
                    request.url,
                    e.to_debug_string()
                )));
            }
        }
    }
    drop(stream);
    let _ = IncomingBody::finish(incoming);
    Ok(Response {
        status,
        headers,
        body: bytes,
        url: request.url.clone(),
    })
}

/// Outside a component there is no host to send through.
#[cfg(not(target_arch = "wasm32"))]
fn send_once(request: &Request) -> Result<Response, HttpError> {
    parts(&request.url)?;
    Err(HttpError::Transport(
        "outgoing HTTP needs the Weft host: run the step as a component".into(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_locations_resolve_against_the_url() {
        let base = "https://api.example.com/v1/orders?page=2";
        for (location, want) in [
            ("https://other.example/x", "https://other.example/x"),
            ("//cdn.example/y", "https://cdn.example/y"),
            ("/v2/orders", "https://api.example.com/v2/orders"),
            ("next", "https://api.example.com/v1/next"),
        ] {
            assert_eq!(resolve(base, location).unwrap(), want);
        }
    }

    #[test]
    fn origins_compare_scheme_host_and_port() {
        assert_eq!(
            origin("https://A.example.com/x"),
            origin("https://a.example.com/y?z")
        );
        assert_ne!(
            origin("https://a.example.com/"),
            origin("http://a.example.com/")
        );
        assert_ne!(
            origin("https://a.example.com/"),
            origin("https://a.example.com:8443/")
        );
    }

    #[test]
    fn only_absolute_http_urls_without_credentials_are_sent() {
        assert!(parts("ftp://x").is_err());
        assert!(parts("https://user:pw@x.com/").is_err());
        assert!(parts("https:///path").is_err());
        let p = parts("http://x.com:8080/a?b=1#frag").unwrap();
        assert_eq!(
            (p.https, p.authority, p.path_and_query),
            (false, "x.com:8080", "/a?b=1")
        );
    }

    #[test]
    fn denied_requests_are_not_retried_and_network_failures_are() {
        let denied: StepError = HttpError::Denied("x".into()).into();
        let transport: StepError = HttpError::Transport("x".into()).into();
        assert_eq!(
            (denied.code.as_str(), denied.retryable),
            ("http_error", false)
        );
        assert!(transport.retryable);
    }
}
