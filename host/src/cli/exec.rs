//! `weft exec`: run one workflow in-process on the embedded backend.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use bytes::Bytes;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::redact::printable_redis_url;
use crate::backend::Limits;
use crate::backend::memory::{MemoryBackend, Retention};
use crate::backend::redis::{RedisBackend, RedisConfig};
use crate::backend::{StateStore, WorkQueue};
use crate::bundled;
use crate::cache::ComponentCache;
use crate::capability::hosts::HostPattern;
use crate::capability::secrets::{MAX_SECRET_BYTES, SecretsKey, Vault};
use crate::engine::{Engine, EngineConfig};
use crate::registry::Snapshot;
use crate::scheduler::clock::{Clock, SystemClock};
use crate::scheduler::model::{RunSpec, RunStatus, StepDefaults};
use crate::scheduler::{Scheduler, new_run_id};
use crate::worker::{Capabilities, Worker};
use crate::workflow::{self, Problem};

/// Arguments of `weft exec`.
#[derive(Debug, clap::Args)]
pub struct ExecArgs {
    /// The workflow document (JSON).
    pub workflow: PathBuf,
    /// The run's input: inline JSON, or `@FILE` to read it from a file. Default `{}`.
    #[arg(long)]
    pub input: Option<String>,
    /// Directory of components named `<name>@<version>.wasm`. Without it, the
    /// example components bundled into `weft` are used.
    #[arg(long)]
    pub components: Option<PathBuf>,
    /// Where compiled artifacts are kept between runs.
    #[arg(long, env = "WEFT_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Steps run at once.
    #[arg(long, env = "WEFT_CONCURRENCY", default_value_t = 64)]
    pub concurrency: u32,
    /// Keep the run in Redis (e.g. redis://127.0.0.1:6379) instead of this
    /// process's memory; the steps still run in this process. Printed only
    /// with its password replaced by `***`.
    #[arg(long, env = "WEFT_REDIS_URL", hide_env_values = true)]
    pub redis: Option<String>,
    /// A secret the steps may list under `"secrets"`: `NAME=VALUE`, or
    /// `NAME=@FILE` to read the value from a file; repeatable. Kept in this
    /// process only.
    #[arg(long = "secret", value_name = "NAME=VALUE")]
    pub secrets: Vec<String>,
    /// A host the steps may call when they also list it under
    /// `"http": {"allow": [...]}` (`api.example.com`, `*.example.com`,
    /// `127.0.0.1:8080`); repeatable. Without it no request goes out.
    #[arg(long = "allow-host", value_name = "PATTERN")]
    pub allow_hosts: Vec<String>,
    /// Export the run's trace over OTLP/HTTP to this collector, as
    /// `weft serve --otlp-endpoint` does (the OTEL_* variables apply too).
    #[arg(long, value_name = "URL")]
    pub otlp_endpoint: Option<String>,
}

/// A component available to `weft exec`.
struct Source {
    name: String,
    version: semver::Version,
    origin: Origin,
}

enum Origin {
    File(PathBuf),
    Bundled(&'static [u8]),
}

impl Source {
    fn label(&self) -> String {
        match &self.origin {
            Origin::File(p) => p.display().to_string(),
            Origin::Bundled(_) => format!("bundled {}@{}", self.name, self.version),
        }
    }
}

/// Why `exec` stopped before running anything.
struct Refusal {
    code: &'static str,
    message: String,
    details: Vec<Problem>,
}

impl Refusal {
    fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            details: Vec::new(),
        }
    }

    /// A JSON argument that cannot be used, as a refusal with `code`; a parse
    /// error is reported at `pointer`.
    fn from_arg(code: &'static str, pointer: &str, e: super::JsonArg) -> Self {
        match e {
            super::JsonArg::Unreadable(message) => Self::new(code, message),
            super::JsonArg::NotJson { origin, error } => {
                let mut r = Self::new(code, format!("{origin} is not JSON"));
                r.details.push(Problem::new(pointer, error));
                r
            }
        }
    }

    fn print(&self) {
        let body =
            json!({"error": {"code": self.code, "message": self.message, "details": self.details}});
        eprintln!("{}", serde_json::to_string_pretty(&body).expect("JSON"));
    }
}

pub async fn exec(args: ExecArgs) -> ExitCode {
    let data_dir = args
        .data_dir
        .clone()
        .unwrap_or_else(super::default_data_dir);
    let engine = match Engine::new(&EngineConfig {
        max_concurrency: args.concurrency,
        ..EngineConfig::default()
    }) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("weft: cannot create the wasm engine: {e:#}");
            return ExitCode::from(3);
        }
    };
    let cache = Arc::new(ComponentCache::new(engine, Some(&data_dir), 256));
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let shutdown = CancellationToken::new();
    let (store, queue): (Arc<dyn StateStore>, Arc<dyn WorkQueue>) = match &args.redis {
        None => {
            let backend = MemoryBackend::new(clock.clone(), None, Retention::default());
            (backend.clone(), backend)
        }
        Some(url) => {
            let shown = match printable_redis_url(url) {
                Ok(shown) => shown,
                Err(message) => {
                    eprintln!("weft: {message}");
                    return ExitCode::from(3);
                }
            };
            match RedisBackend::connect(RedisConfig::new(url.clone()), clock.clone()).await {
                Ok(backend) => {
                    backend.start_upkeep(shutdown.clone());
                    (backend.clone(), backend)
                }
                Err(e) => {
                    eprintln!("weft: cannot use Redis at {shown}: {e}");
                    return ExitCode::from(3);
                }
            }
        }
    };

    let spec = match prepare(&args, &cache, store.as_ref(), clock.now()).await {
        Ok(spec) => spec,
        Err(refusal) => {
            refusal.print();
            return ExitCode::from(2);
        }
    };
    let stats = cache.stats();
    tracing::info!(
        hits = stats.hits,
        loads = stats.loads,
        compiles = stats.compiles,
        "components ready"
    );

    let capabilities = match capabilities(&args, &spec, clock.clone()).await {
        Ok(c) => c,
        Err(refusal) => {
            refusal.print();
            return ExitCode::from(2);
        }
    };
    let scheduler = Scheduler::new(store, queue, clock);
    let tracer = match super::trace_runs(&scheduler, args.otlp_endpoint.as_deref(), "exec") {
        Ok(t) => t,
        Err(message) => {
            eprintln!("weft: {message}");
            return ExitCode::from(2);
        }
    };
    let worker = Worker::new(
        scheduler.clone(),
        cache.clone(),
        args.concurrency as usize,
        capabilities,
    );
    let worker_task = tokio::spawn(worker.run(shutdown.clone()));

    let tenant = spec.tenant.clone();
    let run_id = match scheduler.start(spec).await {
        Ok(id) => id,
        Err(e) => {
            eprintln!("weft: cannot start the run: {e}");
            return ExitCode::from(3);
        }
    };
    let view = scheduler.wait(&tenant, &run_id).await;
    shutdown.cancel();
    let _ = worker_task.await;
    let _ = scheduler.queue().release().await;
    if let Some(tracer) = tracer {
        tracer.shutdown(std::time::Duration::from_secs(5)).await;
    }
    match view {
        Ok(Some(view)) => {
            println!("{}", serde_json::to_string_pretty(&view).expect("JSON"));
            if view.status == RunStatus::Succeeded {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Ok(None) => {
            eprintln!("weft: the run disappeared");
            ExitCode::from(3)
        }
        Err(e) => {
            eprintln!("weft: {e}");
            ExitCode::from(3)
        }
    }
}

/// The secrets of `--secret` (in a store of this process only, sealed like a
/// server's) and the hosts of `--allow-host`; every secret a step lists must
/// be given.
async fn capabilities(
    args: &ExecArgs,
    spec: &RunSpec,
    clock: Arc<dyn Clock>,
) -> Result<Capabilities, Refusal> {
    let problems: Vec<Problem> = (args.allow_hosts.iter().enumerate())
        .filter_map(|(i, h)| {
            let why = HostPattern::parse(h).err()?;
            Some(Problem::new(format!("/allow-host/{i}"), why))
        })
        .collect();
    if !problems.is_empty() {
        return Err(Refusal {
            code: "invalid_request",
            message: "an --allow-host is not a host pattern".into(),
            details: problems,
        });
    }
    let store = MemoryBackend::new(clock.clone(), None, Retention::default());
    let vault = Vault::new(store, Some(SecretsKey::random()), clock);
    let mut given = Vec::new();
    for arg in &args.secrets {
        let Some((name, value)) = arg.split_once('=') else {
            return Err(Refusal::new(
                "invalid_request",
                format!(
                    "--secret {:?} is not NAME=VALUE (or NAME=@FILE)",
                    arg.split('=').next().unwrap_or_default()
                ),
            ));
        };
        let value = match value.strip_prefix('@') {
            Some(path) => std::fs::read_to_string(path).map_err(|e| {
                Refusal::new(
                    "invalid_request",
                    format!("--secret {name}: cannot read {path}: {e}"),
                )
            })?,
            None => value.to_string(),
        };
        if !workflow::is_valid_name(name) || value.len() > MAX_SECRET_BYTES {
            return Err(Refusal::new(
                "invalid_request",
                format!(
                    "--secret {name}: a name is lowercase letters, digits, `_` and `-`, and a value at most {MAX_SECRET_BYTES} bytes"
                ),
            ));
        }
        vault
            .set(&spec.tenant, name, &value)
            .await
            .map_err(|e| Refusal::new("invalid_request", e.to_string()))?;
        given.push(name.to_string());
    }
    let missing: Vec<Problem> = (spec.workflow.steps.iter().enumerate())
        .flat_map(|(i, step)| step.secrets.iter().enumerate().map(move |(k, n)| (i, k, n)))
        .filter(|(_, _, name)| !given.contains(name))
        .map(|(i, k, name)| {
            Problem::new(
                format!("/steps/{i}/secrets/{k}"),
                format!("unknown secret {name:?}: give it with --secret {name}=VALUE"),
            )
        })
        .collect();
    if !missing.is_empty() {
        return Err(Refusal {
            code: "invalid_workflow",
            message: format!("the workflow has {} problem(s)", missing.len()),
            details: missing,
        });
    }
    Ok(Capabilities::fixed(
        vault,
        Limits {
            allowed_hosts: args.allow_hosts.clone(),
            ..Limits::default()
        },
    ))
}

/// Reads and validates everything; compiles (or loads) the components used.
async fn prepare(
    args: &ExecArgs,
    cache: &ComponentCache,
    backend: &dyn StateStore,
    now: u64,
) -> Result<RunSpec, Refusal> {
    let document = super::read_json_file(&args.workflow)
        .map_err(|e| Refusal::from_arg("invalid_workflow", "", e))?;
    let input = match args.input.as_deref() {
        Some(arg) => super::read_input_arg(arg)
            .map_err(|e| Refusal::from_arg("invalid_input", "/input", e))?,
        None => json!({}),
    };
    let sources = match &args.components {
        Some(dir) => scan_dir(dir)?,
        None => bundled_sources(),
    };
    let hint = match &args.components {
        Some(dir) => format!(": no file {{name}}@<version>.wasm in {}", dir.display()),
        None => format!(
            ": the bundled components are {} (use --components DIR for others)",
            bundled::EXAMPLES
                .iter()
                .map(|b| b.name)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut snapshot = Snapshot::default().with_unknown_hint(hint);
    for (i, s) in sources.iter().enumerate() {
        snapshot.add(&s.name, s.version.clone(), i.to_string());
    }

    let validated = workflow::validate(&document, &snapshot).map_err(|details| Refusal {
        code: "invalid_workflow",
        message: format!("the workflow has {} problem(s)", details.len()),
        details,
    })?;
    // Templates are published to a server; here there are none to start.
    let children: Vec<Problem> = (validated.workflow.steps.iter().enumerate())
        .filter(|(_, step)| step.sub_workflow().is_some())
        .map(|(i, _)| {
            Problem::new(
                format!("/steps/{i}/workflow"),
                "a sub-workflow starts a published workflow template, which weft exec has none of: \
                 run it on a server (weft serve, then weft submit)",
            )
        })
        .collect();
    if !children.is_empty() {
        return Err(Refusal {
            code: "invalid_workflow",
            message: format!("the workflow has {} problem(s)", children.len()),
            details: children,
        });
    }
    let problems = workflow::check_input(&validated.workflow, &input);
    if !problems.is_empty() {
        return Err(Refusal {
            code: "invalid_input",
            message: format!(
                "the input does not match input_schema ({} problem(s))",
                problems.len()
            ),
            details: problems,
        });
    }

    // Check and compile each component used, once, reporting every bad one.
    let mut digests: Vec<Option<Result<String, String>>> =
        (0..sources.len()).map(|_| None).collect();
    let mut problems = Vec::new();
    let mut pins = Vec::with_capacity(validated.pins.len());
    let steps = validated.workflow.steps.len();
    for (n, pin) in validated.pins.iter().enumerate() {
        // After the steps' pins come their compensations' (empty for none).
        if pin.is_empty() {
            pins.push(String::new());
            continue;
        }
        let i: usize = pin.parse().expect("pins are source indexes");
        if digests[i].is_none() {
            digests[i] = Some(load(&sources[i], cache, backend).await);
        }
        match digests[i].as_ref().expect("just set") {
            Ok(digest) => pins.push(digest.clone()),
            Err(message) => problems.push(Problem::new(
                match n.checked_sub(steps) {
                    None => format!("/steps/{n}/component"),
                    Some(step) => format!("/steps/{step}/compensate/component"),
                },
                message.clone(),
            )),
        }
    }
    if !problems.is_empty() {
        return Err(Refusal {
            code: "invalid_component",
            message: "a component cannot be used".into(),
            details: problems,
        });
    }
    Ok(RunSpec {
        id: new_run_id(now),
        tenant: "default".into(),
        document,
        workflow: validated.workflow,
        pins,
        input,
        defaults: StepDefaults::default(),
        created_at: now,
        template: None,
        parent: None,
        parent_step: None,
        children: Default::default(),
        priority: crate::scheduler::flow::DEFAULT_PRIORITY,
        start_at: None,
        schedule: None,
        trace: Some(crate::telemetry::TraceContext::new()),
    })
}

async fn load(
    source: &Source,
    cache: &ComponentCache,
    backend: &dyn StateStore,
) -> Result<String, String> {
    let bytes = match &source.origin {
        Origin::File(path) => {
            Bytes::from(std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?)
        }
        Origin::Bundled(b) => Bytes::from_static(b),
    };
    let digest = cache
        .add(bytes.clone())
        .await
        .map_err(|e| format!("{}: {e}", source.label()))?;
    backend
        .put_blob(&digest, bytes)
        .await
        .map_err(|e| e.to_string())?;
    Ok(digest)
}

/// Components in `dir` named `<name>@<version>.wasm`.
fn scan_dir(dir: &Path) -> Result<Vec<Source>, Refusal> {
    let entries = std::fs::read_dir(dir).map_err(|e| {
        Refusal::new(
            "invalid_workflow",
            format!("cannot read components directory {}: {e}", dir.display()),
        )
    })?;
    let mut sources = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let Some(file) = path.file_name().and_then(|f| f.to_str()) else {
            continue;
        };
        let Some(stem) = file.strip_suffix(".wasm") else {
            continue;
        };
        let parsed = stem
            .split_once('@')
            .and_then(|(name, version)| Some((name, semver::Version::parse(version).ok()?)));
        match parsed {
            Some((name, version)) => sources.push(Source {
                name: name.to_string(),
                version,
                origin: Origin::File(path.clone()),
            }),
            None => {
                tracing::warn!(file = %path.display(), "ignored: not named <name>@<version>.wasm")
            }
        }
    }
    Ok(sources)
}

fn bundled_sources() -> Vec<Source> {
    bundled::EXAMPLES
        .iter()
        .filter_map(|b| {
            Some(Source {
                name: b.name.to_string(),
                version: semver::Version::parse(b.version).ok()?,
                origin: Origin::Bundled(b.wasm),
            })
        })
        .collect()
}
