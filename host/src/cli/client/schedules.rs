//! `weft schedule create|list|pause|resume|delete`: the tenant's schedules.

use std::process::ExitCode;

use reqwest::Method;
use serde_json::json;

use super::runs::print_table;
use super::{Client, Connection, Error, finish, pretty};

/// Arguments of `weft schedule`.
#[derive(Debug, clap::Args)]
pub struct ScheduleArgs {
    #[command(subcommand)]
    pub command: ScheduleCommand,
}

/// What `weft schedule` does.
#[derive(Debug, clap::Subcommand)]
pub enum ScheduleCommand {
    /// Create a schedule: each tick of CRON in TIMEZONE starts one run of a
    /// published workflow, e.g.
    /// `weft schedule create nightly --cron "0 3 * * *" --timezone Europe/Berlin --workflow report@^1`.
    Create(ScheduleCreateArgs),
    /// List the tenant's schedules, with their next tick and last run.
    List(ScheduleListArgs),
    /// Pause a schedule: its ticks start nothing until it is resumed.
    Pause(ScheduleNameArgs),
    /// Resume a paused schedule from its next tick on.
    Resume(ScheduleNameArgs),
    /// Delete a schedule; the runs it started go on.
    Delete(ScheduleNameArgs),
}

#[derive(Debug, clap::Args)]
pub struct ScheduleCreateArgs {
    /// The schedule's name (lowercase letters, digits, `_`, `-`).
    pub name: String,
    /// Five fields (minute hour day month weekday), or six with seconds first.
    #[arg(long)]
    pub cron: String,
    /// An IANA timezone such as Europe/Berlin; UTC when left out.
    #[arg(long)]
    pub timezone: Option<String>,
    /// A published workflow template, NAME@REQUIREMENT (e.g. report@^1).
    #[arg(long)]
    pub workflow: String,
    /// Each run's input, as JSON; {} when left out.
    #[arg(long)]
    pub input: Option<String>,
    /// While the previous run has not ended, a tick is skipped (`skip`, the
    /// default), starts beside it (`allow`) or cancels it (`cancel_previous`).
    #[arg(long, value_parser = ["skip", "allow", "cancel_previous"])]
    pub overlap: Option<String>,
    /// Ticks missed while no node ran: none fire (`none`), the newest fires
    /// (`latest`, the default) or all do, the newest 100 (`all`).
    #[arg(long, value_parser = ["none", "latest", "all"])]
    pub catch_up: Option<String>,
    /// Create it paused.
    #[arg(long)]
    pub paused: bool,
    #[command(flatten)]
    pub connection: Connection,
}

#[derive(Debug, clap::Args)]
pub struct ScheduleListArgs {
    /// Print the server's JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub connection: Connection,
}

#[derive(Debug, clap::Args)]
pub struct ScheduleNameArgs {
    /// The schedule's name.
    pub name: String,
    #[command(flatten)]
    pub connection: Connection,
}

/// `weft schedule ...`.
pub async fn schedule(args: ScheduleArgs) -> ExitCode {
    finish(match args.command {
        ScheduleCommand::Create(args) => create(args).await,
        ScheduleCommand::List(args) => list(args).await,
        ScheduleCommand::Pause(args) => change(args, "pause", "paused").await,
        ScheduleCommand::Resume(args) => change(args, "resume", "resumed").await,
        ScheduleCommand::Delete(args) => delete(args).await,
    })
}

async fn create(args: ScheduleCreateArgs) -> Result<ExitCode, Error> {
    let client = Client::tenant(&args.connection)?;
    let mut body = json!({"name": args.name, "cron": args.cron, "workflow": args.workflow});
    if let Some(input) = &args.input {
        body["input"] = serde_json::from_str(input).map_err(|e| {
            Error::refused("bad_input", format!("--input is not JSON: {e}"), json!([]))
        })?;
    }
    for (field, value) in [
        ("timezone", &args.timezone),
        ("overlap", &args.overlap),
        ("catch_up", &args.catch_up),
    ] {
        if let Some(value) = value {
            body[field] = value.as_str().into();
        }
    }
    if args.paused {
        body["paused"] = true.into();
    }
    let request = client
        .request(Method::POST, &["v1", "schedules"])
        .json(&body);
    let (_, answer) = client.call(request).await?;
    eprintln!(
        "weft: schedule {} created; next tick {}",
        args.name,
        answer["next_tick"].as_str().unwrap_or("none (paused)")
    );
    println!("{}", pretty(&answer));
    Ok(ExitCode::SUCCESS)
}

async fn list(args: ScheduleListArgs) -> Result<ExitCode, Error> {
    let client = Client::tenant(&args.connection)?;
    let (_, answer) = client
        .call(client.request(Method::GET, &["v1", "schedules"]))
        .await?;
    if args.json {
        println!("{}", pretty(&answer));
        return Ok(ExitCode::SUCCESS);
    }
    let text = |v: &serde_json::Value| v.as_str().unwrap_or("-").to_string();
    let rows: Vec<[String; 6]> = answer["schedules"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            [
                text(&s["name"]),
                format!("{} ({})", text(&s["cron"]), text(&s["timezone"])),
                text(&s["workflow"]),
                if s["paused"] == true {
                    "paused"
                } else {
                    "active"
                }
                .to_string(),
                text(&s["next_tick"]),
                text(&s["last_run"]),
            ]
        })
        .collect();
    if rows.is_empty() {
        eprintln!("no schedules");
    } else {
        print_table(
            &["NAME", "CRON", "WORKFLOW", "STATE", "NEXT TICK", "LAST RUN"],
            &rows,
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn change(args: ScheduleNameArgs, action: &str, done: &str) -> Result<ExitCode, Error> {
    let client = Client::tenant(&args.connection)?;
    let request = client.request(Method::POST, &["v1", "schedules", &args.name, action]);
    let (_, answer) = client.call(request).await?;
    eprintln!("weft: schedule {} {done}", args.name);
    println!("{}", pretty(&answer));
    Ok(ExitCode::SUCCESS)
}

async fn delete(args: ScheduleNameArgs) -> Result<ExitCode, Error> {
    let client = Client::tenant(&args.connection)?;
    client
        .call(client.request(Method::DELETE, &["v1", "schedules", &args.name]))
        .await?;
    eprintln!("weft: schedule {} deleted", args.name);
    Ok(ExitCode::SUCCESS)
}
