//! `weft secret set|list|delete`: the tenant's secrets.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use reqwest::{Method, StatusCode};
use serde_json::json;

use super::runs::print_table;
use super::{Client, Connection, Error, finish, pretty};

/// Arguments of `weft secret`.
#[derive(Debug, clap::Args)]
pub struct SecretArgs {
    #[command(subcommand)]
    pub command: SecretCommand,
}

/// What `weft secret` does.
#[derive(Debug, clap::Subcommand)]
pub enum SecretCommand {
    /// Set a secret (created or replaced). The value comes from --from-file,
    /// or from standard input (one trailing newline dropped), so that it
    /// stays out of the shell's history: `printf %s "$KEY" | weft secret set stripe_key`.
    Set(SecretSetArgs),
    /// List the tenant's secrets: names and when each was set, never values.
    List(SecretListArgs),
    /// Delete a secret.
    Delete(SecretDeleteArgs),
}

#[derive(Debug, clap::Args)]
pub struct SecretSetArgs {
    /// The secret's name, as steps list it under `"secrets"`.
    pub name: String,
    /// Read the value from this file instead of standard input.
    #[arg(long, value_name = "FILE")]
    pub from_file: Option<PathBuf>,
    #[command(flatten)]
    pub connection: Connection,
}

#[derive(Debug, clap::Args)]
pub struct SecretListArgs {
    /// Print the server's JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub connection: Connection,
}

#[derive(Debug, clap::Args)]
pub struct SecretDeleteArgs {
    /// The secret's name.
    pub name: String,
    #[command(flatten)]
    pub connection: Connection,
}

/// `weft secret ...`.
pub async fn secret(args: SecretArgs) -> ExitCode {
    finish(match args.command {
        SecretCommand::Set(args) => set(args).await,
        SecretCommand::List(args) => list(args).await,
        SecretCommand::Delete(args) => delete(args).await,
    })
}

async fn set(args: SecretSetArgs) -> Result<ExitCode, Error> {
    let value = match &args.from_file {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| Error::Other(format!("cannot read {}: {e}", path.display())))?,
        None => {
            let mut text = String::new();
            std::io::stdin().read_to_string(&mut text).map_err(|e| {
                Error::Other(format!("cannot read the value from standard input: {e}"))
            })?;
            if text.ends_with('\n') {
                text.pop();
                if text.ends_with('\r') {
                    text.pop();
                }
            }
            text
        }
    };
    let client = Client::tenant(&args.connection)?;
    let request = client
        .request(Method::PUT, &["v1", "secrets", &args.name])
        .json(&json!({"value": value}));
    let (status, answer) = client.call(request).await?;
    let what = if status == StatusCode::CREATED {
        "set"
    } else {
        "replaced"
    };
    eprintln!("weft: secret {} {what}", args.name);
    println!("{}", pretty(&answer));
    Ok(ExitCode::SUCCESS)
}

async fn list(args: SecretListArgs) -> Result<ExitCode, Error> {
    let client = Client::tenant(&args.connection)?;
    let (_, answer) = client
        .call(client.request(Method::GET, &["v1", "secrets"]))
        .await?;
    if args.json {
        println!("{}", pretty(&answer));
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<[String; 2]> = answer["secrets"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            [
                s["name"].as_str().unwrap_or_default().to_string(),
                s["updated_at"].as_str().unwrap_or_default().to_string(),
            ]
        })
        .collect();
    if rows.is_empty() {
        eprintln!("no secrets");
    } else {
        print_table(&["NAME", "UPDATED"], &rows);
    }
    Ok(ExitCode::SUCCESS)
}

async fn delete(args: SecretDeleteArgs) -> Result<ExitCode, Error> {
    let client = Client::tenant(&args.connection)?;
    client
        .call(client.request(Method::DELETE, &["v1", "secrets", &args.name]))
        .await?;
    eprintln!("weft: secret {} deleted", args.name);
    Ok(ExitCode::SUCCESS)
}
