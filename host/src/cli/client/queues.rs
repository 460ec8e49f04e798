//! `weft queue declare|list`: the cluster's queues (admin).

use std::process::ExitCode;

use reqwest::{Method, StatusCode};

use super::runs::print_table;
use super::{AdminConnection, Client, Error, finish, pretty};

/// Arguments of `weft queue`.
#[derive(Debug, clap::Args)]
pub struct QueueArgs {
    #[command(subcommand)]
    pub command: QueueCommand,
}

/// What `weft queue` does.
#[derive(Debug, clap::Subcommand)]
pub enum QueueCommand {
    /// Declare a queue, so that steps may name it with `"queue"`; they run
    /// on the nodes started with it (`weft serve --queues default,NAME`).
    Declare(QueueDeclareArgs),
    /// List the queues with their depth (ready steps no node has taken) and
    /// how long the oldest has waited.
    List(QueueListArgs),
}

#[derive(Debug, clap::Args)]
pub struct QueueDeclareArgs {
    /// The queue's name: lowercase letters, digits, `_` and `-`.
    pub name: String,
    #[command(flatten)]
    pub connection: AdminConnection,
}

#[derive(Debug, clap::Args)]
pub struct QueueListArgs {
    /// Print the server's JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub connection: AdminConnection,
}

/// `weft queue ...`.
pub async fn queue(args: QueueArgs) -> ExitCode {
    finish(match args.command {
        QueueCommand::Declare(args) => declare(args).await,
        QueueCommand::List(args) => list(args).await,
    })
}

async fn declare(args: QueueDeclareArgs) -> Result<ExitCode, Error> {
    let client = Client::admin(&args.connection)?;
    let (status, _) = client
        .call(client.request(Method::PUT, &["v1", "queues", &args.name]))
        .await?;
    let what = if status == StatusCode::CREATED {
        "declared"
    } else {
        "was declared already"
    };
    eprintln!("weft: queue {} {what}", args.name);
    Ok(ExitCode::SUCCESS)
}

async fn list(args: QueueListArgs) -> Result<ExitCode, Error> {
    let client = Client::admin(&args.connection)?;
    let (_, answer) = client
        .call(client.request(Method::GET, &["v1", "queues"]))
        .await?;
    if args.json {
        println!("{}", pretty(&answer));
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<[String; 3]> = answer["queues"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|q| {
            [
                q["name"].as_str().unwrap_or_default().to_string(),
                q["depth"].to_string(),
                format!("{:.1}s", q["oldest_age_seconds"].as_f64().unwrap_or(0.0)),
            ]
        })
        .collect();
    print_table(&["QUEUE", "DEPTH", "OLDEST"], &rows);
    Ok(ExitCode::SUCCESS)
}
