//! `weft submit`: starts a run and, with `--wait`, follows it to the end.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, UNIX_EPOCH};

use eventsource_stream::Eventsource;
use futures::StreamExt;
use reqwest::Method;
use serde_json::{Value, json};

use super::{Client, Connection, Error, finish, pretty};
use crate::cli::JsonArg;
use crate::engine::Failure;
use crate::scheduler::model::{RunEvent, RunStatus, StepStatus};

/// How often the run is fetched when the event stream is not available.
const POLL_EVERY: Duration = Duration::from_millis(200);
/// The server sends a comment every 15 s; a stream silent for this long is dead.
const STREAM_IDLE: Duration = Duration::from_secs(45);
/// Consecutive failed polls (5 s worth) tolerated before giving up.
const POLL_MISSES: u32 = 25;

/// Arguments of `weft submit`.
#[derive(Debug, clap::Args)]
pub struct SubmitArgs {
    /// The workflow document (a JSON file), or a published template as
    /// NAME@REQUIREMENT, e.g. `orders@^1` (see `weft workflow publish`).
    pub workflow: PathBuf,
    /// The run's input: inline JSON, or `@FILE` to read it from a file. Default `{}`.
    #[arg(long)]
    pub input: Option<String>,
    /// Submitting again with the same key and the same body returns the run
    /// the first submission created instead of starting another (1 to 255
    /// visible ASCII characters).
    #[arg(long)]
    pub idempotency_key: Option<String>,
    /// 0 to 9 (default 5): while the tenant's steps wait for workers, those
    /// of runs of higher priority go first.
    #[arg(long, value_parser = clap::value_parser!(u8).range(0..=9))]
    pub priority: Option<u8>,
    /// Start the run at this time (RFC 3339, e.g. 2026-12-24T18:00:00Z),
    /// at most 365 days ahead; it is `scheduled` until then.
    #[arg(long, value_name = "TIME", conflicts_with = "delay")]
    pub start_at: Option<String>,
    /// Start the run after this long (e.g. `90s`, `2h`).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub delay: Option<std::time::Duration>,
    /// Follow the run: each step's progress on stderr, then the finished run
    /// on stdout. Exit code 1 when the run failed or was cancelled.
    #[arg(long)]
    pub wait: bool,
    #[command(flatten)]
    pub connection: Connection,
}

/// `weft submit`: starts a run; prints `{"id","status"}`, or with `--wait` the finished run.
pub async fn submit(args: SubmitArgs) -> ExitCode {
    finish(try_submit(args).await)
}

async fn try_submit(args: SubmitArgs) -> Result<ExitCode, Error> {
    let workflow = match template_reference(&args.workflow) {
        Some(reference) => Value::String(reference),
        None => read_workflow(&args.workflow)?,
    };
    let input = args.input.as_deref().map(read_input).transpose()?;
    let client = Client::tenant(&args.connection)?;

    let mut body = json!({ "workflow": workflow });
    if let Some(input) = input {
        body["input"] = input;
    }
    if let Some(priority) = args.priority {
        body["priority"] = priority.into();
    }
    if let Some(at) = &args.start_at {
        body["start_at"] = at.as_str().into();
    }
    if let Some(delay) = args.delay {
        body["delay_ms"] = (delay.as_millis() as u64).into();
    }
    let mut request = client.request(Method::POST, &["v1", "runs"]).json(&body);
    if let Some(key) = &args.idempotency_key {
        request = request.header("Idempotency-Key", key);
    }
    let (_, answer) = client.call(request).await?;
    if !args.wait {
        println!("{}", pretty(&answer));
        return Ok(ExitCode::SUCCESS);
    }
    let Some(id) = answer["id"].as_str() else {
        return Err(Error::Other(format!(
            "the server accepted the run but gave no id: {answer}"
        )));
    };

    eprintln!("run {id} submitted");
    let mut progress = Progress::new(id, &workflow);
    if let Err(reason) = follow(&client, id, &mut progress).await {
        eprintln!(
            "weft: {reason}; polling the run every {} ms instead",
            POLL_EVERY.as_millis()
        );
    }
    let run = poll(&client, id, &mut progress).await?;
    println!("{}", pretty(&run));
    Ok(if run["status"] == "succeeded" {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// `NAME@REQUIREMENT` when the argument is one and no such file exists.
fn template_reference(arg: &Path) -> Option<String> {
    let text = arg.to_str()?;
    let (name, requirement) = text.split_once('@')?;
    let is_reference =
        crate::workflow::is_valid_name(name) && !requirement.is_empty() && !arg.exists();
    is_reference.then(|| text.to_string())
}

fn read_workflow(path: &Path) -> Result<Value, Error> {
    crate::cli::read_json_file(path).map_err(|e| refusal("invalid_workflow", "", e))
}

/// `--input`: inline JSON, or `@FILE`.
fn read_input(arg: &str) -> Result<Value, Error> {
    crate::cli::read_input_arg(arg).map_err(|e| refusal("invalid_input", "/input", e))
}

/// A JSON argument that cannot be used: a file that cannot be read is a local
/// error; JSON that does not parse is refused as the server would.
pub(super) fn refusal(code: &str, pointer: &str, e: JsonArg) -> Error {
    match e {
        JsonArg::Unreadable(message) => Error::Other(message),
        JsonArg::NotJson { origin, error } => Error::refused(
            code,
            format!("{origin} is not JSON"),
            json!([{"path": pointer, "message": error}]),
        ),
    }
}

/// Follows the run's event stream, showing each event, until the run ends.
/// `Err` says why the stream ended before that.
async fn follow(client: &Client, id: &str, progress: &mut Progress) -> Result<(), String> {
    let request = client
        .request(Method::GET, &["v1", "runs", id, "events"])
        .header(reqwest::header::ACCEPT, "text/event-stream");
    let response = client.send(request).await.map_err(|e| match e {
        Error::Other(message) => message,
        Error::Refused(doc) => doc.to_string(),
    })?;
    if !response.status().is_success() {
        return Err(format!("the event stream answered {}", response.status()));
    }
    let bytes = futures::stream::unfold(Box::pin(response.bytes_stream()), |mut s| async move {
        match tokio::time::timeout(STREAM_IDLE, s.next()).await {
            Ok(Some(chunk)) => Some((chunk.map_err(|e| super::chain(&e)), s)),
            Ok(None) => None,
            Err(_) => Some((Err(format!("nothing for {} s", STREAM_IDLE.as_secs())), s)),
        }
    });
    let mut events = std::pin::pin!(bytes.eventsource());
    while let Some(event) = events.next().await {
        let event = event.map_err(|e| format!("the event stream broke: {e}"))?;
        match serde_json::from_str::<RunEvent>(&event.data) {
            Ok(event) => {
                progress.event(&event);
                if let RunEvent::Run { status, .. } = event
                    && status.is_terminal()
                {
                    return Ok(());
                }
            }
            Err(e) => tracing::debug!(data = %event.data, "ignored event: {e}"),
        }
    }
    Err("the event stream ended before the run".into())
}

/// Fetches the run until it has ended, showing what changed; returns it.
async fn poll(client: &Client, id: &str, progress: &mut Progress) -> Result<Value, Error> {
    let mut misses = 0;
    loop {
        match client
            .call(client.request(Method::GET, &["v1", "runs", id]))
            .await
        {
            Ok((_, run)) => {
                progress.run(&run);
                if run["status"]
                    .as_str()
                    .and_then(run_status)
                    .is_some_and(RunStatus::is_terminal)
                {
                    return Ok(run);
                }
                misses = 0;
            }
            Err(Error::Other(message)) if misses < POLL_MISSES => {
                tracing::debug!("poll failed, trying again: {message}");
                misses += 1;
            }
            Err(e) => return Err(e),
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

/// Shows the progress of one run on stderr, one line per change.
struct Progress {
    run: String,
    /// Width of the step column.
    width: usize,
    run_status: Option<RunStatus>,
    /// Each step's last status and attempt shown.
    steps: HashMap<String, (StepStatus, u32)>,
    /// When each step's current attempt started (ms since the epoch).
    started: HashMap<String, u128>,
}

impl Progress {
    fn new(run: &str, workflow: &Value) -> Self {
        let width = workflow["steps"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s["id"].as_str())
            .map(str::len)
            .max()
            .unwrap_or(0)
            .max(10);
        Self {
            run: run.to_string(),
            width,
            run_status: None,
            steps: HashMap::new(),
            started: HashMap::new(),
        }
    }

    /// Shows one event of the stream.
    fn event(&mut self, event: &RunEvent) {
        match event {
            RunEvent::Run { status, .. } => self.run_changed(*status),
            RunEvent::Step {
                step,
                status,
                attempt,
                error,
                at,
                ..
            } => {
                let at = millis(at);
                let duration = match status {
                    StepStatus::Running => {
                        if let Some(at) = at {
                            self.started.insert(step.clone(), at);
                        }
                        None
                    }
                    _ => match (self.started.remove(step), at) {
                        (Some(start), Some(end)) => Some(end.saturating_sub(start)),
                        _ => None,
                    },
                };
                self.steps.insert(step.clone(), (*status, *attempt));
                self.line(step, *status, *attempt, error.as_ref(), duration);
            }
            RunEvent::Items {
                step,
                total,
                succeeded,
                failed,
                ..
            } => println!("  {step}: {succeeded} of {total} items succeeded, {failed} failed"),
            RunEvent::Compensation {
                step,
                status,
                attempt,
                error,
                ..
            } => {
                let what = format!("{step} (compensation)");
                self.line(&what, *status, *attempt, error.as_ref(), None);
            }
        }
    }

    /// Shows what changed in a fetched run since the last line shown.
    fn run(&mut self, run: &Value) {
        let status = run["status"].as_str().and_then(run_status);
        // A run's start reads best before its steps, its end after them.
        if let Some(status) = status.filter(|s| !s.is_terminal()) {
            self.run_changed(status);
        }
        if let Some(steps) = run["steps"].as_object() {
            for (step, view) in steps {
                let Some(status) = view["status"].as_str().and_then(step_status) else {
                    continue;
                };
                let attempt = view["attempts"].as_u64().unwrap_or(0) as u32;
                let before = self.steps.get(step).copied();
                let unseen = before.is_none() && status != StepStatus::Pending;
                if !unseen && before.is_none_or(|b| b == (status, attempt)) {
                    continue;
                }
                self.steps.insert(step.clone(), (status, attempt));
                let error = serde_json::from_value::<Failure>(view["error"].clone()).ok();
                let duration = view["duration_ms"].as_u64().map(u128::from);
                self.line(step, status, attempt, error.as_ref(), duration);
            }
        }
        if let Some(status) = status.filter(|s| s.is_terminal()) {
            self.run_changed(status);
        }
    }

    fn run_changed(&mut self, status: RunStatus) {
        if self.run_status != Some(status) {
            self.run_status = Some(status);
            eprintln!("run {} {}", self.run, status.as_str());
        }
    }

    fn line(
        &self,
        step: &str,
        status: StepStatus,
        attempt: u32,
        error: Option<&Failure>,
        duration: Option<u128>,
    ) {
        let failure = |e: Option<&Failure>| {
            e.map(|e| format!(" {}: {}", e.code, e.message))
                .unwrap_or_default()
        };
        let (label, detail) = match status {
            StepStatus::Running => ("running", format!("(attempt {attempt})")),
            StepStatus::Succeeded => (
                "succeeded",
                duration.map(|d| format!("{d} ms")).unwrap_or_default(),
            ),
            StepStatus::Failed => ("failed", format!("(attempt {attempt}){}", failure(error))),
            StepStatus::Queued if error.is_some() => (
                "retrying",
                format!("(attempt {attempt} failed){}", failure(error)),
            ),
            other => (other.as_str(), String::new()),
        };
        let line = format!("  {step:<w$} {label:<9} {detail}", w = self.width);
        eprintln!("{}", line.trim_end());
    }
}

fn run_status(text: &str) -> Option<RunStatus> {
    serde_json::from_value(Value::from(text)).ok()
}

fn step_status(text: &str) -> Option<StepStatus> {
    serde_json::from_value(Value::from(text)).ok()
}

/// Milliseconds since the epoch of an RFC 3339 timestamp.
fn millis(at: &str) -> Option<u128> {
    let time = humantime::parse_rfc3339(at).ok()?;
    Some(time.duration_since(UNIX_EPOCH).ok()?.as_millis())
}
