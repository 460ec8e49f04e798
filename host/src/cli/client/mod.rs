//! The client commands `weft publish`, `submit`, `status`, `runs`, `cancel`,
//! `signal`, `secret`, `workflow` and `tenant`: they
//! talk to a `weft serve` over the HTTP API of docs/api.md.
//!
//! Exit codes: 0 success, 1 the run failed or was cancelled (`submit --wait`),
//! 2 the server refused the request (its error document on stderr, as JSON),
//! 3 the server cannot be reached or failed, or a local file cannot be read.

mod queues;
mod rate_limits;
mod runs;
mod schedules;
mod secrets;
mod submit;

pub use queues::{QueueArgs, queue};
pub use rate_limits::{RateLimitArgs, rate_limit};
pub use runs::{
    CancelArgs, RunsArgs, SignalArgs, TenantLimitsArgs, WorkflowArgs, cancel, runs, signal,
    workflow,
};
pub use schedules::{ScheduleArgs, schedule};
pub use secrets::{SecretArgs, secret};
pub use submit::{SubmitArgs, submit};

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use reqwest::{Method, RequestBuilder, Response, StatusCode, Url};
use serde_json::{Value, json};

/// How long to wait for a TCP connection before saying the server is unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the server listens, and the data directory holding its key files.
#[derive(Debug, clap::Args)]
pub struct Server {
    /// Base URL of the Weft server (plain http).
    #[arg(long, env = "WEFT_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// Data directory of a local `weft serve`, whose `api-key` and
    /// `admin-token` files are used when no key or token is given
    /// [default: $XDG_DATA_HOME/weft, else ~/.local/share/weft].
    #[arg(long, env = "WEFT_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
}

/// A tenant's connection: the server and the tenant's API key.
#[derive(Debug, clap::Args)]
pub struct Connection {
    #[command(flatten)]
    pub server: Server,
    /// The tenant's API key (`weft_...`). Without it, the key in the data
    /// directory's `api-key` file (the tenant `default`) is used.
    #[arg(long, env = "WEFT_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
}

/// An administrator's connection: the server and its admin token.
#[derive(Debug, clap::Args)]
pub struct AdminConnection {
    #[command(flatten)]
    pub server: Server,
    /// The server's admin token. Without it, the token in the data
    /// directory's `admin-token` file is used.
    #[arg(long, env = "WEFT_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
}

/// Arguments of `weft publish`.
#[derive(Debug, clap::Args)]
pub struct PublishArgs {
    /// The component (`.wasm`).
    pub file: PathBuf,
    /// The component's name, as workflows refer to it (`name@version`).
    #[arg(long)]
    pub name: String,
    /// Its semantic version, e.g. `1.0.0`; once published, a version never changes.
    #[arg(long)]
    pub version: String,
    #[command(flatten)]
    pub connection: Connection,
}

/// Arguments of `weft status`.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// The run's id (`run_...`), as `weft submit` printed it.
    pub run_id: String,
    #[command(flatten)]
    pub connection: Connection,
}

/// Arguments of `weft tenant`.
#[derive(Debug, clap::Args)]
pub struct TenantArgs {
    #[command(subcommand)]
    pub command: TenantCommand,
}

/// What `weft tenant` does.
#[derive(Debug, clap::Subcommand)]
pub enum TenantCommand {
    /// Create a tenant and print its API key (shown only this once).
    Create(TenantCreateArgs),
    /// Show a tenant's limits, or change some with `--set KEY=VALUE`.
    Limits(TenantLimitsArgs),
}

/// Arguments of `weft tenant create`.
#[derive(Debug, clap::Args)]
pub struct TenantCreateArgs {
    /// The tenant's name.
    pub name: String,
    #[command(flatten)]
    pub connection: AdminConnection,
}

/// Why a client command stopped.
#[derive(Debug)]
enum Error {
    /// The request was refused (exit 2): the error document to show.
    Refused(Value),
    /// The server could not be asked or could not answer, or a local file
    /// could not be read (exit 3): what happened and what to do.
    Other(String),
}

impl Error {
    /// A refusal decided locally, in the server's error format.
    fn refused(code: &str, message: impl Into<String>, details: Value) -> Self {
        Self::Refused(
            json!({"error": {"code": code, "message": message.into(), "details": details}}),
        )
    }

    /// Prints the error on stderr and gives the exit code.
    fn report(self) -> ExitCode {
        match self {
            Self::Refused(doc) => {
                eprintln!("{}", pretty(&doc));
                ExitCode::from(2)
            }
            Self::Other(message) => {
                eprintln!("weft: {message}");
                ExitCode::from(3)
            }
        }
    }
}

fn finish(result: Result<ExitCode, Error>) -> ExitCode {
    result.unwrap_or_else(Error::report)
}

/// `weft publish`: uploads a component.
pub async fn publish(args: PublishArgs) -> ExitCode {
    finish(try_publish(args).await)
}

async fn try_publish(args: PublishArgs) -> Result<ExitCode, Error> {
    let bytes = tokio::fs::read(&args.file)
        .await
        .map_err(|e| Error::Other(format!("cannot read {}: {e}", args.file.display())))?;
    let client = Client::tenant(&args.connection)?;
    let request = client
        .request(
            Method::PUT,
            &["v1", "components", &args.name, &args.version],
        )
        .header(reqwest::header::CONTENT_TYPE, "application/wasm")
        .body(bytes);
    let (status, answer) = client.call(request).await?;
    let label = format!(
        "{}@{}",
        answer["name"].as_str().unwrap_or(&args.name),
        answer["version"].as_str().unwrap_or(&args.version)
    );
    if status == StatusCode::CREATED {
        eprintln!("weft: published {label}");
    } else {
        eprintln!("weft: {label} was already published with these bytes; nothing changed");
    }
    println!("{}", pretty(&answer));
    Ok(ExitCode::SUCCESS)
}

/// `weft status`: prints a run.
pub async fn status(args: StatusArgs) -> ExitCode {
    finish(try_status(args).await)
}

async fn try_status(args: StatusArgs) -> Result<ExitCode, Error> {
    let client = Client::tenant(&args.connection)?;
    let (_, run) = client
        .call(client.request(Method::GET, &["v1", "runs", &args.run_id]))
        .await?;
    println!("{}", pretty(&run));
    Ok(ExitCode::SUCCESS)
}

/// `weft tenant ...`: administers tenants.
pub async fn tenant(args: TenantArgs) -> ExitCode {
    match args.command {
        TenantCommand::Create(args) => finish(tenant_create(args).await),
        TenantCommand::Limits(args) => finish(runs::tenant_limits(args).await),
    }
}

async fn tenant_create(args: TenantCreateArgs) -> Result<ExitCode, Error> {
    let client = Client::admin(&args.connection)?;
    let request = client
        .request(Method::POST, &["v1", "tenants"])
        .json(&json!({"name": args.name}));
    let (_, answer) = client.call(request).await?;
    println!("{}", pretty(&answer));
    if let Some(key) = answer["api_key"].as_str() {
        eprintln!(
            "weft: tenant {} created; its key is shown only now. To use it:\n  export WEFT_API_KEY={key}",
            answer["tenant"].as_str().unwrap_or(&args.name)
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// One server and the credential sent to it.
struct Client {
    http: reqwest::Client,
    base: Url,
    credential: String,
}

impl Client {
    /// A client authenticating as a tenant.
    fn tenant(connection: &Connection) -> Result<Self, Error> {
        let base = base_url(&connection.server.url)?;
        let key = credential(
            connection.api_key.as_deref(),
            &connection.server,
            Secret {
                file: "api-key",
                what: "API key",
                flag: "--api-key",
                env: "WEFT_API_KEY",
                holder: "the key of the tenant `default`",
            },
        )?;
        Self::new(base, key)
    }

    /// A client authenticating as the administrator.
    fn admin(connection: &AdminConnection) -> Result<Self, Error> {
        let base = base_url(&connection.server.url)?;
        let token = credential(
            connection.admin_token.as_deref(),
            &connection.server,
            Secret {
                file: "admin-token",
                what: "admin token",
                flag: "--admin-token",
                env: "WEFT_ADMIN_TOKEN",
                holder: "the admin token",
            },
        )?;
        Self::new(base, token)
    }

    fn new(base: Url, credential: String) -> Result<Self, Error> {
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(concat!("weft/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::Other(format!("cannot set up the HTTP client: {}", chain(&e))))?;
        Ok(Self {
            http,
            base,
            credential,
        })
    }

    /// The URL of the API path made of `segments` (each one escaped).
    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .expect("http URLs have a path")
            .pop_if_empty()
            .extend(segments);
        url
    }

    /// An authenticated request to the API path made of `segments`.
    fn request(&self, method: Method, segments: &[&str]) -> RequestBuilder {
        self.http
            .request(method, self.url(segments))
            .bearer_auth(&self.credential)
    }

    /// Sends a request; failing to get any answer is an [`Error::Other`].
    async fn send(&self, request: RequestBuilder) -> Result<Response, Error> {
        request.send().await.map_err(|e| self.transport(&e))
    }

    /// Sends a request and reads its JSON answer (`null` for a 204); a 4xx
    /// is [`Error::Refused`].
    async fn call(&self, request: RequestBuilder) -> Result<(StatusCode, Value), Error> {
        let response = self.send(request).await?;
        let status = response.status();
        let text = response.text().await.map_err(|e| self.transport(&e))?;
        if status == StatusCode::NO_CONTENT {
            return Ok((status, Value::Null));
        }
        let body = serde_json::from_str::<Value>(&text);
        if status.is_success() {
            return body.map(|v| (status, v)).map_err(|e| {
                Error::Other(format!(
                    "the server at {} answered {status} with something that is not JSON ({e}): {}",
                    self.base,
                    excerpt(&text)
                ))
            });
        }
        match body {
            Ok(doc) if status.is_client_error() && doc["error"].is_object() => {
                Err(Error::Refused(doc))
            }
            _ if status.is_client_error() => Err(Error::refused(
                &format!("http_{}", status.as_u16()),
                format!("{status}: {}", excerpt(&text)),
                json!([]),
            )),
            Ok(doc) if doc["error"].is_object() => Err(Error::Other(format!(
                "the server at {} could not answer ({status}): {}: {}; its log may say more",
                self.base,
                doc["error"]["code"].as_str().unwrap_or("?"),
                doc["error"]["message"].as_str().unwrap_or("?"),
            ))),
            _ => Err(Error::Other(format!(
                "the server at {} could not answer ({status}): {}",
                self.base,
                excerpt(&text)
            ))),
        }
    }

    /// What to say when a request got no answer.
    fn transport(&self, e: &reqwest::Error) -> Error {
        if e.is_connect() || e.is_timeout() {
            // The innermost cause ("Connection refused") is the one that helps.
            let mut cause: &dyn std::error::Error = e;
            while let Some(inner) = cause.source() {
                cause = inner;
            }
            Error::Other(format!(
                "cannot reach the Weft server at {} ({cause})\n\
                 Is `weft serve` running there? Start it, or set --url (WEFT_URL) to where it listens.",
                self.base
            ))
        } else {
            Error::Other(format!(
                "talking to the Weft server at {} failed: {}",
                self.base,
                chain(e)
            ))
        }
    }
}

/// Parses `--url`, which must be plain http.
fn base_url(text: &str) -> Result<Url, Error> {
    let url = Url::parse(text)
        .map_err(|e| Error::Other(format!("--url (WEFT_URL) {text:?} is not a URL: {e}")))?;
    match url.scheme() {
        "http" => Ok(url),
        "https" => Err(Error::Other(format!(
            "cannot reach {url}: this build of weft speaks plain http only, not https; \
             use an http:// URL (e.g. the plain-http side of the TLS proxy)"
        ))),
        _ => Err(Error::Other(format!(
            "--url (WEFT_URL) must be an http:// URL, not {url}"
        ))),
    }
}

/// Where a credential comes from when it is not given.
struct Secret {
    /// File in the data directory.
    file: &'static str,
    what: &'static str,
    flag: &'static str,
    env: &'static str,
    /// What the file holds, for the message when it is missing.
    holder: &'static str,
}

/// The credential given, or the one in the data directory's file.
fn credential(given: Option<&str>, server: &Server, secret: Secret) -> Result<String, Error> {
    if let Some(value) = given.map(str::trim).filter(|v| !v.is_empty()) {
        return Ok(value.to_string());
    }
    let dir = server
        .data_dir
        .clone()
        .unwrap_or_else(crate::cli::default_data_dir);
    let path = dir.join(secret.file);
    match std::fs::read_to_string(&path) {
        Ok(text) if !text.trim().is_empty() => Ok(text.trim().to_string()),
        Ok(_) => Err(Error::Other(format!(
            "no {what}: {path} is empty; set {env} (or {flag})",
            what = secret.what,
            path = path.display(),
            env = secret.env,
            flag = secret.flag,
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(missing(&secret, &path)),
        Err(e) => Err(Error::Other(format!(
            "no {}: cannot read {}: {e}; set {} (or {})",
            secret.what,
            path.display(),
            secret.env,
            secret.flag
        ))),
    }
}

fn missing(secret: &Secret, path: &Path) -> Error {
    Error::Other(format!(
        "no {what}: set {env} (or {flag}), or set WEFT_DATA_DIR (or --data-dir) to the data \
         directory of `weft serve`, whose `{file}` file holds {holder} (there is no {path})",
        what = secret.what,
        env = secret.env,
        flag = secret.flag,
        file = secret.file,
        holder = secret.holder,
        path = path.display(),
    ))
}

/// An error and its causes, as one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let part = cause.to_string();
        if !text.ends_with(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = cause.source();
    }
    text
}

/// The start of a body that is not what was expected, to show.
fn excerpt(text: &str) -> String {
    let text = text.trim();
    match text.char_indices().nth(300) {
        Some((i, _)) => format!("{}...", &text[..i]),
        None if text.is_empty() => "(empty body)".to_string(),
        None => text.to_string(),
    }
}

fn pretty(value: &Value) -> String {
    serde_json::to_string_pretty(value).expect("a JSON value serializes")
}
