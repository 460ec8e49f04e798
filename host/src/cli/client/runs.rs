//! `weft runs`, `weft cancel`, `weft signal`, `weft workflow ...` and `weft tenant limits`:
//! a table or a line for people by default, the server's JSON with `--json`.

use std::path::PathBuf;
use std::process::ExitCode;

use reqwest::{Method, StatusCode};
use serde_json::{Map, Value, json};

use super::{AdminConnection, Client, Connection, Error, finish, pretty};

/// Most runs one request asks for (the server's page limit).
const MAX_PAGE: u32 = 500;

/// Arguments of `weft runs`.
#[derive(Debug, clap::Args)]
pub struct RunsArgs {
    /// Only runs with this status: queued, running, compensating, succeeded,
    /// failed or cancelled.
    #[arg(long)]
    pub status: Option<String>,
    /// Only runs of this workflow: a template's name, or a document's `name`.
    #[arg(long)]
    pub workflow: Option<String>,
    /// Show at most this many runs, newest first.
    #[arg(long, default_value_t = 50)]
    pub limit: u32,
    /// Start after this run: the cursor an earlier `weft runs` printed.
    #[arg(long)]
    pub cursor: Option<String>,
    /// Print the server's JSON (`{"runs": [...], "next_cursor": ...}`).
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub connection: Connection,
}

/// Arguments of `weft cancel`.
#[derive(Debug, clap::Args)]
pub struct CancelArgs {
    /// The run's id (`run_...`).
    pub run_id: String,
    /// Print the server's JSON (`{"id", "status"}`).
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub connection: Connection,
}

/// Arguments of `weft signal`.
#[derive(Debug, clap::Args)]
pub struct SignalArgs {
    /// The run's id (`run_...`).
    pub run_id: String,
    /// The signal's name: what the run's signal step waits for.
    pub name: String,
    /// What the signal carries, as JSON (or @FILE): the output of the step
    /// that takes it; null when left out.
    #[arg(long)]
    pub payload: Option<String>,
    /// Print the server's JSON (`{"run", "signal", "status", "step" or "buffered"}`).
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub connection: Connection,
}

/// Arguments of `weft workflow`.
#[derive(Debug, clap::Args)]
pub struct WorkflowArgs {
    #[command(subcommand)]
    pub command: WorkflowCommand,
}

/// What `weft workflow` does.
#[derive(Debug, clap::Subcommand)]
pub enum WorkflowCommand {
    /// Publish a workflow document as a template, started later with
    /// `weft submit NAME@REQUIREMENT`. Versions never change once published.
    Publish(WorkflowPublishArgs),
    /// List the tenant's workflow templates and their versions.
    List(WorkflowListArgs),
}

/// Arguments of `weft workflow publish`.
#[derive(Debug, clap::Args)]
pub struct WorkflowPublishArgs {
    /// The workflow document (JSON).
    pub file: PathBuf,
    /// The template's name, as runs refer to it (`name@requirement`).
    #[arg(long)]
    pub name: String,
    /// Its semantic version, e.g. `1.0.0`.
    #[arg(long)]
    pub version: String,
    /// Print the server's JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub connection: Connection,
}

/// Arguments of `weft workflow list`.
#[derive(Debug, clap::Args)]
pub struct WorkflowListArgs {
    /// Print the server's JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub connection: Connection,
}

/// Arguments of `weft tenant limits`.
#[derive(Debug, clap::Args)]
pub struct TenantLimitsArgs {
    /// The tenant's name.
    pub name: String,
    /// Change a limit, e.g. `--set concurrent_runs=50` (repeatable);
    /// `--set allowed_hosts=api.example.com,*.stripe.com:443` replaces the
    /// hosts the tenant's steps may call (`--set allowed_hosts=` allows none).
    /// The limits are printed either way.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Print the server's JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub connection: AdminConnection,
}

/// `weft runs`: the tenant's runs, newest first.
pub async fn runs(args: RunsArgs) -> ExitCode {
    finish(try_runs(args).await)
}

async fn try_runs(args: RunsArgs) -> Result<ExitCode, Error> {
    let client = Client::tenant(&args.connection)?;
    let mut runs = Vec::new();
    let mut cursor = args.cursor.clone();
    // Filtered pages may hold fewer runs than asked: follow the cursor until
    // enough are shown or none are left.
    loop {
        let want = (args.limit as usize)
            .saturating_sub(runs.len())
            .clamp(1, MAX_PAGE as usize);
        let mut query: Vec<(&str, String)> = vec![("limit", want.to_string())];
        if let Some(status) = &args.status {
            query.push(("status", status.clone()));
        }
        if let Some(workflow) = &args.workflow {
            query.push(("workflow", workflow.clone()));
        }
        if let Some(cursor) = &cursor {
            query.push(("cursor", cursor.clone()));
        }
        let mut url = client.url(&["v1", "runs"]);
        url.query_pairs_mut().extend_pairs(&query);
        let request = client
            .http
            .request(Method::GET, url)
            .bearer_auth(&client.credential);
        let (_, page) = client.call(request).await?;
        runs.extend(page["runs"].as_array().cloned().unwrap_or_default());
        cursor = page["next_cursor"].as_str().map(str::to_string);
        if cursor.is_none() || runs.len() >= args.limit as usize {
            break;
        }
    }
    runs.truncate(args.limit as usize);
    if args.json {
        println!("{}", pretty(&json!({"runs": runs, "next_cursor": cursor})));
        return Ok(ExitCode::SUCCESS);
    }
    if runs.is_empty() {
        eprintln!("no runs");
    } else {
        let rows: Vec<[String; 5]> = runs
            .iter()
            .map(|r| {
                let text = |k: &str| r[k].as_str().unwrap_or("-").to_string();
                [
                    text("id"),
                    text("status"),
                    text("workflow"),
                    text("created_at"),
                    text("finished_at"),
                ]
            })
            .collect();
        print_table(&["ID", "STATUS", "WORKFLOW", "CREATED", "FINISHED"], &rows);
    }
    if let Some(cursor) = cursor {
        eprintln!("more runs: weft runs --cursor {cursor}");
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) fn print_table<const N: usize>(header: &[&str; N], rows: &[[String; N]]) {
    let mut widths = header.map(str::len);
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

/// `weft cancel`: cancels a run.
pub async fn cancel(args: CancelArgs) -> ExitCode {
    finish(try_cancel(args).await)
}

async fn try_cancel(args: CancelArgs) -> Result<ExitCode, Error> {
    let client = Client::tenant(&args.connection)?;
    let request = client.request(Method::POST, &["v1", "runs", &args.run_id, "cancel"]);
    let (_, answer) = client.call(request).await?;
    if args.json {
        println!("{}", pretty(&answer));
    } else {
        let status = answer["status"].as_str().unwrap_or("cancelled");
        match status {
            "compensating" => println!(
                "run {}: compensating (its compensations run, then it ends cancelled)",
                args.run_id
            ),
            other => println!("run {}: {other}", args.run_id),
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `weft signal`: sends a signal to a run.
pub async fn signal(args: SignalArgs) -> ExitCode {
    finish(try_signal(args).await)
}

async fn try_signal(args: SignalArgs) -> Result<ExitCode, Error> {
    let payload = match &args.payload {
        None => Value::Null,
        Some(arg) => crate::cli::read_json_arg(arg, "--payload", "payload")
            .map_err(|e| super::submit::refusal("invalid_request", "/payload", e))?,
    };
    let client = Client::tenant(&args.connection)?;
    let request = client
        .request(
            Method::POST,
            &["v1", "runs", &args.run_id, "signals", &args.name],
        )
        .json(&json!({ "payload": payload }));
    let (_, answer) = client.call(request).await?;
    if args.json {
        println!("{}", pretty(&answer));
    } else if let Some(step) = answer["step"].as_str() {
        println!(
            "run {}: signal {} taken by step {step}",
            args.run_id, args.name
        );
    } else {
        println!(
            "run {}: signal {} kept until a step waits for it ({} kept)",
            args.run_id,
            args.name,
            answer["buffered"].as_u64().unwrap_or(1)
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `weft workflow ...`: publishes and lists workflow templates.
pub async fn workflow(args: WorkflowArgs) -> ExitCode {
    match args.command {
        WorkflowCommand::Publish(args) => finish(workflow_publish(args).await),
        WorkflowCommand::List(args) => finish(workflow_list(args).await),
    }
}

async fn workflow_publish(args: WorkflowPublishArgs) -> Result<ExitCode, Error> {
    let document = crate::cli::read_json_file(&args.file)
        .map_err(|e| super::submit::refusal("invalid_workflow", "", e))?;
    let client = Client::tenant(&args.connection)?;
    let request = client
        .request(Method::PUT, &["v1", "workflows", &args.name, &args.version])
        .json(&document);
    let (status, answer) = client.call(request).await?;
    if args.json {
        println!("{}", pretty(&answer));
    } else if status == StatusCode::CREATED {
        println!(
            "published workflow {}@{}; start it with: weft submit {}@{} --input '{{...}}'",
            args.name, args.version, args.name, args.version
        );
    } else {
        println!(
            "workflow {}@{} was already published with this document; nothing changed",
            args.name, args.version
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn workflow_list(args: WorkflowListArgs) -> Result<ExitCode, Error> {
    let client = Client::tenant(&args.connection)?;
    let (_, answer) = client
        .call(client.request(Method::GET, &["v1", "workflows"]))
        .await?;
    if args.json {
        println!("{}", pretty(&answer));
        return Ok(ExitCode::SUCCESS);
    }
    let templates = answer["workflows"].as_array().cloned().unwrap_or_default();
    if templates.is_empty() {
        eprintln!(
            "no workflow templates: publish one with `weft workflow publish FILE --name N --version V`"
        );
    }
    let rows: Vec<[String; 2]> = templates
        .iter()
        .map(|t| {
            let versions: Vec<&str> = t["versions"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            [
                t["name"].as_str().unwrap_or("?").to_string(),
                versions.join(", "),
            ]
        })
        .collect();
    if !rows.is_empty() {
        print_table(&["NAME", "VERSIONS"], &rows);
    }
    Ok(ExitCode::SUCCESS)
}

/// The JSON of `--set KEY=VALUE`: a whole number, or for `allowed_hosts` a
/// comma-separated list of host patterns (empty for none).
fn limit_value(key: &str, value: &str) -> Result<Value, Error> {
    if key == "allowed_hosts" {
        let hosts: Vec<Value> = value
            .split(',')
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .map(Value::from)
            .collect();
        return Ok(Value::Array(hosts));
    }
    value.parse::<u64>().map(Value::from).map_err(|_| {
        Error::refused(
            "invalid_limits",
            format!("--set {key}: {value:?} is not a whole number"),
            json!([]),
        )
    })
}

/// `weft tenant limits`: shows a tenant's limits, changing some first.
pub(super) async fn tenant_limits(args: TenantLimitsArgs) -> Result<ExitCode, Error> {
    let client = Client::admin(&args.connection)?;
    let limits = if args.set.is_empty() {
        let (_, tenant) = client
            .call(client.request(Method::GET, &["v1", "tenants", &args.name]))
            .await?;
        tenant["limits"].clone()
    } else {
        let mut patch = Map::new();
        for pair in &args.set {
            let Some((key, value)) = pair.split_once('=') else {
                return Err(Error::refused(
                    "invalid_limits",
                    format!("--set {pair:?} is not KEY=VALUE, e.g. --set concurrent_runs=50"),
                    json!([]),
                ));
            };
            let value = limit_value(key.trim(), value.trim())?;
            patch.insert(key.trim().to_string(), value);
        }
        let request = client
            .request(Method::PUT, &["v1", "tenants", &args.name, "limits"])
            .json(&Value::Object(patch));
        client.call(request).await?.1
    };
    if args.json {
        println!("{}", pretty(&limits));
    } else if let Some(limits) = limits.as_object() {
        let rows: Vec<[String; 2]> = limits
            .iter()
            .map(|(k, v)| [k.clone(), v.to_string()])
            .collect();
        print_table(&["LIMIT", "VALUE"], &rows);
    }
    Ok(ExitCode::SUCCESS)
}
