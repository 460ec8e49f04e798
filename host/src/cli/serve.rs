//! `weft serve`: the HTTP API and a worker in one process.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio_util::sync::CancellationToken;

use super::redact::printable_redis_url;
use crate::api::{self, AppState, server, tenants};
use crate::backend::memory::{Fsync, MemoryBackend, Retention, store};
use crate::backend::redis::{RedisBackend, RedisConfig};
use crate::backend::{BackendError, Limits, NodeInfo, Published, StateStore, WorkQueue};
use crate::bundled;
use crate::cache::ComponentCache;
use crate::capability::secrets::SecretsKey;
use crate::engine::{Engine, EngineConfig};
use crate::registry::Registry;
use crate::scheduler::Scheduler;
use crate::scheduler::clock::{Clock, SystemClock, rfc3339};
use crate::worker::{Capabilities, Worker};

/// Arguments of `weft serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "WEFT_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Where blobs, compiled artifacts, tenants, the registry and the default
    /// tenant's API key are kept.
    #[arg(long, env = "WEFT_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Where compiled components are kept (in `artifacts/` under it); several
    /// servers may share one. Default: the data directory.
    #[arg(long, env = "WEFT_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Redis URL of a shared backend (e.g. redis://127.0.0.1:6379). Without
    /// it, the embedded backend keeps runs in this process. Printed and
    /// logged only with its password replaced by `***`.
    #[arg(long, env = "WEFT_REDIS_URL", hide_env_values = true)]
    pub redis: Option<String>,
    /// Token for admin calls (`POST /v1/tenants`, ...). Without it, one is
    /// generated on first start and kept in DATA_DIR/admin-token.
    #[arg(long, env = "WEFT_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// What this process does: the API and a worker (`all`), or one of them.
    #[arg(long, env = "WEFT_ROLE", value_enum, default_value = "all")]
    pub role: Role,
    /// Steps this node runs at once.
    #[arg(long, env = "WEFT_CONCURRENCY", default_value_t = 64)]
    pub concurrency: u32,
    /// The queues this node takes steps from, in order of preference
    /// (comma separated, e.g. `default,gpu`). A step with `"queue": "gpu"`
    /// runs only on nodes started with `gpu`; an admin declares queues with
    /// `PUT /v1/queues/{name}`.
    #[arg(long, env = "WEFT_QUEUES", value_delimiter = ',', default_value = "default", value_parser = queue_name)]
    pub queues: Vec<String>,
    /// With --redis: work a node has held this long without finishing or
    /// renewing it (the node stopped) goes to another node.
    #[arg(long, env = "WEFT_VISIBILITY_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub visibility_timeout: Duration,
    /// Finished runs the embedded backend keeps per tenant at most (the
    /// oldest go first; each is also kept no longer than its tenant's
    /// `retention_hours`). Not used with --redis, where retention alone decides.
    #[arg(long, env = "WEFT_MAX_FINISHED_RUNS", default_value_t = Retention::DEFAULT_MAX_FINISHED,
        value_parser = clap::value_parser!(u32).range(1..))]
    pub max_finished_runs: u32,
    /// How long to wait for running steps when shutting down.
    #[arg(long, env = "WEFT_DRAIN_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub drain_timeout: Duration,
    /// Time a client has to send a request's headers, from connecting or
    /// from the first byte of its next request; then the connection is closed.
    #[arg(long, env = "WEFT_HEADER_TIMEOUT", default_value = "10s", value_parser = timeout)]
    pub header_timeout: Duration,
    /// Time a client has to send a request's whole body, from the end of its
    /// headers; then it is answered 408 and the connection closed.
    #[arg(long, env = "WEFT_BODY_TIMEOUT", default_value = "60s", value_parser = timeout)]
    pub body_timeout: Duration,
    /// How long a kept-alive connection may wait for its next request.
    #[arg(long, env = "WEFT_IDLE_TIMEOUT", default_value = "60s", value_parser = timeout)]
    pub idle_timeout: Duration,
    /// Connections open at once; further ones wait in the listen backlog
    /// until one closes.
    #[arg(long, env = "WEFT_MAX_CONNECTIONS", default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,
    /// Embedded backend: `normal` writes every commit to the operating
    /// system before answering, which survives the process being killed;
    /// `always` also flushes it to the disk, which survives power loss and
    /// costs a disk flush per group commit (see BENCHMARKS.md).
    #[arg(long, env = "WEFT_FSYNC", value_enum, default_value = "normal")]
    pub fsync: Fsync,
    /// Embedded backend: `file` keeps runs, tenants and the registry in
    /// DATA_DIR/weft.db, so that they survive a restart or a crash; `memory`
    /// keeps them in this process only (lost when it stops), for trying
    /// things out and for comparing.
    #[arg(long, env = "WEFT_STORE", value_enum, default_value = "file")]
    pub store: StoreKind,
    /// The 256-bit key secrets are sealed with, as 64 hexadecimal digits
    /// (e.g. from `openssl rand -hex 32`); the same on every node of a
    /// cluster. Needed with --redis for secrets; without it the embedded
    /// backend generates one in DATA_DIR/secrets-key (mode 0600).
    #[arg(long, env = "WEFT_SECRETS_KEY", hide_env_values = true)]
    pub secrets_key: Option<String>,
    /// A PEM file of CA certificates that steps' HTTPS requests trust besides
    /// the usual public roots (a private CA); repeatable.
    #[arg(long = "http-ca-file", env = "WEFT_HTTP_CA_FILE", value_name = "PEM")]
    pub http_ca_files: Vec<PathBuf>,
    /// Export a trace of every run over OTLP/HTTP to this collector (e.g.
    /// http://127.0.0.1:4318; `/v1/traces` is added unless the URL ends in
    /// it). Without it, the standard OTEL_EXPORTER_OTLP_TRACES_ENDPOINT or
    /// OTEL_EXPORTER_OTLP_ENDPOINT is used; OTEL_EXPORTER_OTLP_HEADERS,
    /// OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES and OTEL_BSP_* apply too
    /// (docs/traces.md).
    #[arg(long, value_name = "URL")]
    pub otlp_endpoint: Option<String>,
}

/// The key secrets are sealed with: `--secrets-key`, else on the embedded
/// backend the one in the data directory (made on first start); with Redis
/// and no key, the node refuses secrets.
fn secrets_key(args: &ServeArgs, data_dir: &Path) -> Result<Option<SecretsKey>, String> {
    match (&args.secrets_key, &args.redis) {
        (Some(hex), _) => SecretsKey::from_hex(hex).map(Some),
        (None, None) => SecretsKey::load_or_create(data_dir).map(Some),
        (None, Some(_)) => {
            tracing::warn!(
                "no WEFT_SECRETS_KEY: this node refuses secrets; give every node the same key to use them"
            );
            Ok(None)
        }
    }
}

/// A queue's name, as `--queues` lists it.
fn queue_name(text: &str) -> Result<String, String> {
    let name = text.trim();
    if crate::scheduler::flow::valid_queue(name) {
        Ok(name.to_string())
    } else {
        Err(format!(
            "{name:?} is not a queue name: lowercase letters, digits, `_` and `-`, starting with a letter"
        ))
    }
}

/// A duration such as `10s` or `1m`, not zero.
fn timeout(text: &str) -> Result<Duration, String> {
    match humantime::parse_duration(text) {
        Ok(d) if d.is_zero() => Err("must be more than zero".into()),
        Ok(d) => Ok(d),
        Err(e) => Err(e.to_string()),
    }
}

/// File descriptors kept for data files, Redis and the listener beyond one
/// per connection.
const SPARE_FILES: u64 = 1024;

/// Where the embedded backend keeps its state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StoreKind {
    File,
    Memory,
}

/// What a `weft serve` process does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    /// The HTTP API and a worker.
    All,
    /// Only the HTTP API.
    Api,
    /// Only a worker.
    Worker,
}

pub async fn serve(args: ServeArgs) -> ExitCode {
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("weft: {message}");
            ExitCode::from(3)
        }
    }
}

async fn run(args: ServeArgs) -> Result<(), String> {
    if args.redis.is_none() && args.role != Role::All {
        return Err(
            "--role api and --role worker need a shared backend (--redis URL): with the embedded backend, one process does both".into(),
        );
    }
    let redis_shown = args.redis.as_deref().map(printable_redis_url).transpose()?;
    open_files_limit(args.max_connections);
    let data_dir = args
        .data_dir
        .clone()
        .unwrap_or_else(super::default_data_dir);
    std::fs::create_dir_all(&data_dir)
        .map_err(|e| format!("cannot create data directory {}: {e}", data_dir.display()))?;

    let engine = Engine::new(&EngineConfig {
        max_concurrency: args.concurrency,
        http_ca_files: args.http_ca_files.clone(),
        ..EngineConfig::default()
    })
    .map_err(|e| format!("cannot create the wasm engine: {e:#}"))?;
    let cache_dir = args.cache_dir.as_deref().unwrap_or(&data_dir);
    let cache = Arc::new(ComponentCache::new(engine, Some(cache_dir), 256));
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let shutdown = CancellationToken::new();
    let signal = {
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("shutting down: no new requests; finishing running steps");
            shutdown.cancel();
        })
    };

    let (store, queue, node_id, backend_name): (
        Arc<dyn StateStore>,
        Arc<dyn WorkQueue>,
        String,
        &str,
    ) = match &args.redis {
        None => {
            let retention = Retention {
                max_finished: args.max_finished_runs as usize,
            };
            let backend = match args.store {
                StoreKind::Memory => {
                    MemoryBackend::new(clock.clone(), Some(data_dir.join("blobs")), retention)
                }
                StoreKind::File => {
                    let opening = std::time::Instant::now();
                    let backend =
                        MemoryBackend::open(clock.clone(), &data_dir, retention, args.fsync)
                            .map_err(|e| match e {
                                BackendError::Corrupt(m) | BackendError::Unavailable(m) => {
                                    format!("cannot open the data directory: {m}")
                                }
                            })?;
                    tracing::info!(
                        store = %data_dir.join(store::FILE_NAME).display(),
                        bytes = backend.store_bytes(),
                        took_ms = opening.elapsed().as_millis() as u64,
                        "opened the store"
                    );
                    backend
                }
            };
            WorkQueue::serve_queues(&*backend, &args.queues);
            (backend.clone(), backend, "embedded".to_string(), "embedded")
        }
        Some(url) => {
            let mut config = RedisConfig::new(url.clone());
            config.visibility = args.visibility_timeout;
            config.queues = args.queues.clone();
            let shown = redis_shown.as_deref().unwrap_or_default();
            let backend = connect_redis(config, shown, clock.clone(), &shutdown).await?;
            if args.role != Role::Api {
                backend.start_upkeep(shutdown.clone());
            }
            let node = backend.config().node.clone();
            (backend.clone(), backend, node, "redis")
        }
    };
    let scheduler = Scheduler::new(store.clone(), queue, clock.clone());

    let admin_token = match &args.admin_token {
        Some(t) => t.clone(),
        None => secret_file(&data_dir.join("admin-token"), || {
            format!("weft_admin_{}", hex::encode(rand::random::<[u8; 32]>()))
        })?,
    };
    let first_start = first_start(store.as_ref(), &data_dir, clock.now()).await?;
    let registry = Registry::new(store.clone(), cache.clone(), clock.clone());
    publish_examples(&registry).await;

    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    let url = format!(
        "http://{}",
        listener.local_addr().map_err(|e| e.to_string())?
    );
    let secrets_key = secrets_key(&args, &data_dir)?;
    let state = AppState::new(
        scheduler.clone(),
        cache.clone(),
        Some(&admin_token),
        secrets_key.clone(),
    );
    // After the state, which installs the metrics the exporter counts in.
    let tracer = super::trace_runs(&scheduler, args.otlp_endpoint.as_deref(), &node_id)?;
    let router = match args.role {
        Role::Worker => api::probes(state.clone()),
        Role::All | Role::Api => api::router(state.clone()),
    };

    let worker = Worker::new(
        scheduler.clone(),
        cache.clone(),
        args.concurrency as usize,
        Capabilities::of_tenants(&scheduler, secrets_key),
    );
    let stop_worker = CancellationToken::new();
    let worker_task =
        (args.role != Role::Api).then(|| tokio::spawn(worker.clone().run(stop_worker.clone())));
    api::ticker::spawn(state.clone(), shutdown.clone());
    let role = format!("{:?}", args.role).to_lowercase();
    spawn_heartbeat(
        store.clone(),
        scheduler.clone(),
        NodeInfo {
            node: node_id.clone(),
            role: role.clone(),
            listen: url.clone(),
            concurrency: args.concurrency,
            running: 0,
            seen_at: String::new(),
        },
        shutdown.clone(),
    );

    let backend_shown = match &redis_shown {
        Some(redis) => format!("{backend_name} backend at {redis}"),
        None => format!("{backend_name} backend"),
    };
    tracing::info!(%url, node = %node_id, %role, backend = backend_name, data_dir = %data_dir.display(), "weft serving");
    eprintln!(
        "weft: serving {url} ({backend_shown}, role {role}, data in {})",
        data_dir.display()
    );
    let key_file = data_dir.join("api-key");
    if first_start {
        eprintln!("weft: created tenant \"default\" and published the example components for it");
    }
    if key_file.exists() && args.role != Role::Worker {
        eprintln!(
            "weft: the API key of tenant \"default\" is in {key}; try:\n\n  \
             export WEFT_URL={url} WEFT_API_KEY=$(cat {key})\n  \
             curl -s -H \"Authorization: Bearer $WEFT_API_KEY\" $WEFT_URL/v1/components\n",
            key = key_file.display()
        );
    }

    let stopping = shutdown.clone();
    let ending = state.shutdown.clone();
    let limits = server::Limits {
        header_timeout: args.header_timeout,
        body_timeout: args.body_timeout,
        idle_timeout: args.idle_timeout,
        max_connections: args.max_connections,
    };
    server::serve(listener, router, limits, async move {
        stopping.cancelled().await;
        ending.cancel();
    })
    .await;
    signal.abort();
    stop_worker.cancel();
    if let Some(task) = worker_task {
        let _ = task.await;
        if !worker.drain(args.drain_timeout).await {
            tracing::warn!(timeout = ?args.drain_timeout, "steps still running at shutdown were abandoned");
        }
        match scheduler.queue().release().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(tasks = n, "handed back tasks this node had not started"),
            Err(e) => {
                tracing::warn!(error = %e, "cannot hand back held tasks; other nodes take them after the visibility timeout")
            }
        }
    }
    shutdown.cancel();
    if let Some(tracer) = tracer {
        tracer.shutdown(Duration::from_secs(5)).await;
    }
    Ok(())
}

/// Raises the open-files limit as far as allowed and says whether
/// `max_connections` connections fit in it.
fn open_files_limit(max_connections: u32) {
    let wanted = u64::from(max_connections) + SPARE_FILES;
    match server::raise_open_files_limit() {
        Ok(limit) if limit < wanted => tracing::warn!(
            limit,
            max_connections,
            "the open-files limit is below --max-connections plus {SPARE_FILES} spare: once it is \
             reached, connections wait unaccepted and files cannot be opened; raise the hard limit \
             (ulimit -Hn) or lower --max-connections"
        ),
        Ok(limit) => tracing::info!(limit, "open-files limit"),
        Err(e) => tracing::warn!(error = %e, "cannot read the open-files limit"),
    }
}

/// Connects to Redis, waiting (with backoff) while it is unreachable, until
/// `shutdown`; `shown` is its URL as it may be printed.
async fn connect_redis(
    config: RedisConfig,
    shown: &str,
    clock: Arc<dyn Clock>,
    shutdown: &CancellationToken,
) -> Result<Arc<RedisBackend>, String> {
    let stopped = || Err("stopped before Redis could be reached".to_string());
    let mut delay = Duration::from_millis(100);
    loop {
        // The client may itself retry a refused connection for ever: each
        // attempt is bounded, so that the wait is reported and can be stopped.
        let attempt = tokio::time::timeout(
            REDIS_ATTEMPT,
            RedisBackend::connect(config.clone(), clock.clone()),
        );
        let attempt = tokio::select! {
            attempt = attempt => attempt,
            _ = shutdown.cancelled() => return stopped(),
        };
        match attempt {
            Ok(Ok(backend)) => {
                tracing::info!(url = %shown, "connected to Redis");
                return Ok(backend);
            }
            Ok(Err(BackendError::Unavailable(e))) => {
                tracing::warn!(url = %shown, error = %e, "Redis unreachable; retrying in {delay:?}");
            }
            Ok(Err(e)) => return Err(format!("cannot use Redis at {shown}: {e}")),
            Err(_) => tracing::warn!(
                url = %shown,
                "Redis unreachable: no connection within {REDIS_ATTEMPT:?}; retrying in {delay:?}"
            ),
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.cancelled() => return stopped(),
        }
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

/// How long one attempt to connect to Redis at start may take.
const REDIS_ATTEMPT: Duration = Duration::from_secs(5);

/// Tells the backend every 2 s that this node is alive and how busy it is.
fn spawn_heartbeat(
    store: Arc<dyn StateStore>,
    scheduler: Arc<Scheduler>,
    mut info: NodeInfo,
    shutdown: CancellationToken,
) {
    tokio::spawn(async move {
        loop {
            info.running = scheduler.running() as u64;
            info.seen_at = rfc3339(scheduler.clock().now());
            if let Err(e) = store.heartbeat(&info).await {
                tracing::debug!(error = %e, "heartbeat not written");
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                _ = shutdown.cancelled() => return,
            }
        }
    });
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// Creates the tenant `default` and writes its API key to `DATA_DIR/api-key`
/// when the backend has no such tenant; true when it did.
async fn first_start(store: &dyn StateStore, dir: &Path, now: u64) -> Result<bool, String> {
    if store
        .tenant("default")
        .await
        .map_err(|e| e.to_string())?
        .is_some()
    {
        return Ok(false);
    }
    let (record, key) = tenants::new_tenant("default", Limits::default(), now);
    // The key is on disk before the tenant exists, so that a process killed
    // in between never leaves a tenant nobody has the key of.
    let key_file = dir.join("api-key");
    write_secret(&key_file, &key)?;
    let created = store
        .create_tenant(record)
        .await
        .map_err(|e| format!("cannot create tenant \"default\": {e}"))?;
    if !created {
        // Another node of the cluster created it first: its key is in that
        // node's data directory.
        let _ = std::fs::remove_file(&key_file);
    }
    Ok(created)
}

/// Publishes the bundled example components for tenant `default`; the same
/// bytes again change nothing.
async fn publish_examples(registry: &Registry) {
    for example in bundled::EXAMPLES {
        let bytes = Bytes::from_static(example.wasm);
        match registry
            .publish("default", example.name, example.version, bytes, u64::MAX)
            .await
        {
            Ok(Published::Created(_) | Published::Unchanged(_)) => {}
            Ok(Published::Conflict(existing)) => tracing::warn!(
                component = example.name,
                version = example.version,
                published = %existing.digest,
                "the bundled example differs from the version already published; keeping the published one"
            ),
            Err(e) => {
                tracing::warn!(component = example.name, error = %e, "cannot publish bundled example")
            }
        }
    }
}

/// The secret in `path`, or a new one from `make` written there.
fn secret_file(path: &Path, make: impl FnOnce() -> String) -> Result<String, String> {
    match std::fs::read_to_string(path) {
        Ok(s) if !s.trim().is_empty() => Ok(s.trim().to_string()),
        Ok(_) => Err(format!("{} is empty", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let secret = make();
            write_secret(path, &secret)?;
            Ok(secret)
        }
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

/// Writes a secret readable only by its owner.
fn write_secret(path: &Path, secret: &str) -> Result<(), String> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    writeln!(file, "{secret}").map_err(|e| format!("cannot write {}: {e}", path.display()))
}
