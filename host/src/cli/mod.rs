//! The `weft` command line.

mod client;
mod exec;
mod redact;
mod serve;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// Weft runs workflows of sandboxed WebAssembly components.
#[derive(Debug, Parser)]
#[command(name = "weft", version, about, long_about = None)]
pub struct Cli {
    /// Log format on stderr; the level is set with WEFT_LOG (e.g. `info`, `weft=debug`).
    #[arg(
        long,
        value_enum,
        global = true,
        env = "WEFT_LOG_FORMAT",
        default_value = "text"
    )]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the HTTP API and run steps (embedded backend unless --redis).
    ///
    /// On first start with a new data directory, creates the tenant
    /// `default`, writes its API key to DATA_DIR/api-key and publishes the
    /// example components for it. Stops on Ctrl-C or SIGTERM after the
    /// running steps finish (up to --drain-timeout).
    Serve(serve::ServeArgs),
    /// Run one workflow in this process on the embedded backend and print the
    /// finished run as JSON.
    ///
    /// Exit code 0 when the run succeeded, 1 when it failed, 2 when the
    /// document, the input or a component is invalid (details on stderr, as
    /// JSON), 3 when Weft itself could not run.
    Exec(exec::ExecArgs),
    /// Publish a component to a Weft server.
    ///
    /// Exit code 0 when it is published (or already was, with the same
    /// bytes), 2 when the server refused it (its error on stderr, as JSON), 3
    /// when the server cannot be reached or failed.
    Publish(client::PublishArgs),
    /// Submit a workflow run to a Weft server (a document file, or a
    /// published template as NAME@REQUIREMENT); with --wait, follow it to the end.
    ///
    /// Exit code 0 when the run was accepted (with --wait: when it succeeded),
    /// 1 when it failed or was cancelled (--wait), 2 when the server refused
    /// it (its error on stderr, as JSON), 3 when the server cannot be reached
    /// or failed.
    Submit(client::SubmitArgs),
    /// Print a run of a Weft server as JSON.
    ///
    /// Exit code 0 when the run was found, 2 when the server refused (e.g. no
    /// such run; its error on stderr, as JSON), 3 when the server cannot be
    /// reached or failed.
    Status(client::StatusArgs),
    /// List the tenant's runs, newest first, as a table (`--json`: as JSON).
    ///
    /// Exit code 0 when listed, 2 when the server refused (e.g. a bad
    /// --status), 3 when the server cannot be reached or failed.
    Runs(client::RunsArgs),
    /// Cancel a run: steps not started are skipped, running ones stopped;
    /// compensations, if any, run first.
    ///
    /// Exit code 0 when cancelled, 2 when the server refused (no such run, or
    /// it has already ended), 3 when the server cannot be reached or failed.
    Cancel(client::CancelArgs),
    /// Send a signal to a run: the step waiting for it takes it (its payload
    /// becomes the step's output), or the run keeps it for a later one.
    ///
    /// Exit code 0 when sent, 2 when the server refused (no such run, it has
    /// ended, too many kept), 3 when the server cannot be reached or failed.
    Signal(client::SignalArgs),
    /// Set, list and delete the tenant's secrets, which steps read when they
    /// list them under `"secrets"`; values are never shown again.
    ///
    /// Exit code 0 when done, 2 when the server refused (e.g. no such
    /// secret; its error on stderr, as JSON), 3 when the server cannot be
    /// reached or failed.
    Secret(client::SecretArgs),
    /// Declare and list the queues steps wait in for the nodes that serve
    /// them (needs the admin token).
    ///
    /// Exit code 0 when done, 2 when the server refused (e.g. a bad name),
    /// 3 when the server cannot be reached or failed.
    Queue(client::QueueArgs),
    /// Set, list and delete the tenant's rate limits, within which the
    /// steps that name one (`"rate_limit"`) start, across the cluster.
    ///
    /// Exit code 0 when done, 2 when the server refused (e.g. a bad value),
    /// 3 when the server cannot be reached or failed.
    RateLimit(client::RateLimitArgs),
    /// Create, list, pause, resume and delete the tenant's schedules, which
    /// start a published workflow on a cron clock in a timezone.
    ///
    /// Exit code 0 when done, 2 when the server refused (e.g. a bad cron
    /// pattern), 3 when the server cannot be reached or failed.
    Schedule(client::ScheduleArgs),
    /// Publish and list workflow templates.
    Workflow(client::WorkflowArgs),
    /// Manage the tenants of a Weft server (needs the admin token).
    Tenant(client::TenantArgs),
}

/// Entry point of the `weft` binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // A server reports what it does; one-shot commands only what goes wrong.
    let default_level = match cli.command {
        Command::Serve(_) => "info",
        _ => "warn",
    };
    init_tracing(cli.log_format, default_level);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("weft: cannot start the async runtime: {e}");
            return ExitCode::from(3);
        }
    };
    runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => serve::serve(args).await,
            Command::Exec(args) => exec::exec(args).await,
            Command::Publish(args) => client::publish(args).await,
            Command::Submit(args) => client::submit(args).await,
            Command::Status(args) => client::status(args).await,
            Command::Runs(args) => client::runs(args).await,
            Command::Cancel(args) => client::cancel(args).await,
            Command::Signal(args) => client::signal(args).await,
            Command::Secret(args) => client::secret(args).await,
            Command::Queue(args) => client::queue(args).await,
            Command::RateLimit(args) => client::rate_limit(args).await,
            Command::Schedule(args) => client::schedule(args).await,
            Command::Workflow(args) => client::workflow(args).await,
            Command::Tenant(args) => client::tenant(args).await,
        }
    })
}

fn init_tracing(format: LogFormat, default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("WEFT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Exports the spans of the scheduler's runs when `--otlp-endpoint` or the
/// `OTEL_*` variables ask for it; the tracer, to flush at the end.
fn trace_runs(
    scheduler: &crate::scheduler::Scheduler,
    endpoint: Option<&str>,
    node: &str,
) -> Result<Option<std::sync::Arc<crate::telemetry::Tracer>>, String> {
    use crate::telemetry::{Exporter, OtlpConfig, Tracer};
    let Some(config) = OtlpConfig::from_env(endpoint, |name| std::env::var(name).ok(), node)?
    else {
        return Ok(None);
    };
    let tracer = Tracer::new(Exporter::start(config)?);
    scheduler.trace_with(tracer.clone());
    Ok(Some(tracer))
}

/// Why a JSON argument (a document file, `--input`) cannot be used.
pub(crate) enum JsonArg {
    /// A file cannot be read; the message says which and why.
    Unreadable(String),
    /// It is not JSON: where it came from, and the parser's error.
    NotJson { origin: String, error: String },
}

/// The JSON in a file.
pub(crate) fn read_json_file(path: &std::path::Path) -> Result<serde_json::Value, JsonArg> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| JsonArg::Unreadable(format!("cannot read {}: {e}", path.display())))?;
    parse_json_arg(&text, &path.display().to_string())
}

/// `--input`: inline JSON, or `@FILE` to read it from a file.
pub(crate) fn read_input_arg(arg: &str) -> Result<serde_json::Value, JsonArg> {
    read_json_arg(arg, "--input", "input")
}

/// A JSON option (`flag`, e.g. `--payload`): inline JSON, or `@FILE` to
/// read it from a file (`what` the file holds, for its errors).
pub(crate) fn read_json_arg(
    arg: &str,
    flag: &str,
    what: &str,
) -> Result<serde_json::Value, JsonArg> {
    let (text, origin) = match arg.strip_prefix('@') {
        Some(path) => (
            std::fs::read_to_string(path)
                .map_err(|e| JsonArg::Unreadable(format!("cannot read {what} file {path}: {e}")))?,
            path,
        ),
        None => (arg.to_string(), flag),
    };
    parse_json_arg(&text, origin)
}

/// JSON text within the nesting budget the server applies too.
fn parse_json_arg(text: &str, origin: &str) -> Result<serde_json::Value, JsonArg> {
    let max = crate::budget::MAX_JSON_DEPTH;
    if crate::budget::json_too_deep(text.as_bytes(), max) {
        return Err(JsonArg::NotJson {
            origin: origin.to_string(),
            error: format!("arrays and objects nest deeper than {max} levels"),
        });
    }
    serde_json::from_str(text).map_err(|e| JsonArg::NotJson {
        origin: origin.to_string(),
        error: e.to_string(),
    })
}

/// Where Weft keeps blobs and compiled artifacts when no `--data-dir` is given:
/// `$XDG_DATA_HOME/weft`, else `~/.local/share/weft`, else `./.weft`.
pub fn default_data_dir() -> PathBuf {
    if let Some(xdg) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(xdg).join("weft");
    }
    if let Some(home) = std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(home).join(".local/share/weft");
    }
    PathBuf::from(".weft")
}
