//! `weft rate-limit set|list|delete`: the tenant's rate limits.

use std::process::ExitCode;

use reqwest::{Method, StatusCode};
use serde_json::json;

use super::runs::print_table;
use super::{Client, Connection, Error, finish, pretty};

/// Arguments of `weft rate-limit`.
#[derive(Debug, clap::Args)]
pub struct RateLimitArgs {
    #[command(subcommand)]
    pub command: RateLimitCommand,
}

/// What `weft rate-limit` does.
#[derive(Debug, clap::Subcommand)]
pub enum RateLimitCommand {
    /// Set a rate limit (created or replaced): steps naming it with
    /// `"rate_limit"` start at most PER_SECOND a second, BURST at once.
    Set(RateLimitSetArgs),
    /// List the tenant's rate limits.
    List(RateLimitListArgs),
    /// Delete a rate limit; the steps waiting for it start.
    Delete(RateLimitDeleteArgs),
}

#[derive(Debug, clap::Args)]
pub struct RateLimitSetArgs {
    /// The rate limit's name, as steps name it.
    pub name: String,
    /// Starts per second (fractions allowed, e.g. 0.5).
    #[arg(long)]
    pub per_second: f64,
    /// Starts at once after a quiet spell; default: PER_SECOND rounded up.
    #[arg(long)]
    pub burst: Option<u32>,
    #[command(flatten)]
    pub connection: Connection,
}

#[derive(Debug, clap::Args)]
pub struct RateLimitListArgs {
    /// Print the server's JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub connection: Connection,
}

#[derive(Debug, clap::Args)]
pub struct RateLimitDeleteArgs {
    /// The rate limit's name.
    pub name: String,
    #[command(flatten)]
    pub connection: Connection,
}

/// `weft rate-limit ...`.
pub async fn rate_limit(args: RateLimitArgs) -> ExitCode {
    finish(match args.command {
        RateLimitCommand::Set(args) => set(args).await,
        RateLimitCommand::List(args) => list(args).await,
        RateLimitCommand::Delete(args) => delete(args).await,
    })
}

async fn set(args: RateLimitSetArgs) -> Result<ExitCode, Error> {
    let client = Client::tenant(&args.connection)?;
    let mut body = json!({ "per_second": args.per_second });
    if let Some(burst) = args.burst {
        body["burst"] = burst.into();
    }
    let request = client
        .request(Method::PUT, &["v1", "rate-limits", &args.name])
        .json(&body);
    let (status, answer) = client.call(request).await?;
    let what = if status == StatusCode::CREATED {
        "set"
    } else {
        "replaced"
    };
    eprintln!("weft: rate limit {} {what}", args.name);
    println!("{}", pretty(&answer));
    Ok(ExitCode::SUCCESS)
}

async fn list(args: RateLimitListArgs) -> Result<ExitCode, Error> {
    let client = Client::tenant(&args.connection)?;
    let (_, answer) = client
        .call(client.request(Method::GET, &["v1", "rate-limits"]))
        .await?;
    if args.json {
        println!("{}", pretty(&answer));
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<[String; 3]> = answer["rate_limits"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|l| {
            [
                l["name"].as_str().unwrap_or_default().to_string(),
                l["per_second"].to_string(),
                l["burst"].to_string(),
            ]
        })
        .collect();
    if rows.is_empty() {
        eprintln!("no rate limits");
    } else {
        print_table(&["NAME", "PER SECOND", "BURST"], &rows);
    }
    Ok(ExitCode::SUCCESS)
}

async fn delete(args: RateLimitDeleteArgs) -> Result<ExitCode, Error> {
    let client = Client::tenant(&args.connection)?;
    client
        .call(client.request(Method::DELETE, &["v1", "rate-limits", &args.name]))
        .await?;
    eprintln!("weft: rate limit {} deleted", args.name);
    Ok(ExitCode::SUCCESS)
}
