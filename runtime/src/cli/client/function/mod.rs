//! `sluice fn deploy|list|describe|logs|delete|rollback`: WebAssembly
//! functions the broker runs (see docs/functions.md).
//!
//! A deploy is described by flags, by a TOML manifest (`--manifest`), or
//! both: the manifest holds what rarely changes, and flags given on the
//! command line override it field by field.
//!
//! - [`args`]: the clap arguments and their value parsers;
//! - [`manifest`]: the manifest file, read into typed fields;
//! - [`plan`]: flags and manifest merged into what is deployed (pure);
//! - [`render`]: what the subcommands print (pure);
//! - here: running each subcommand against the broker.

mod args;
mod manifest;
mod plan;
mod render;

use std::io::Write;
use std::time::Duration;

use anyhow::Context;
use sluice_client::Client;

pub use args::FnCommand;

use super::{block_on, is_broken_pipe};
use args::{DeployArgs, DescribeArgs, ListArgs, LogsArgs};
use manifest::read_manifest;
use plan::plan_deploy;
use render::{
    describe_json, describe_text, list_json, list_text, log_json, log_text, version_line,
};

pub fn run(cmd: FnCommand) -> anyhow::Result<()> {
    block_on(async move {
        match cmd {
            FnCommand::Deploy(args) => deploy(*args).await,
            FnCommand::List(args) => list(args).await,
            FnCommand::Describe(args) => describe(args).await,
            FnCommand::Logs(args) => logs(args).await,
            FnCommand::Delete(args) => {
                args.connect
                    .with_client(async |c| {
                        c.delete_function(&args.name)
                            .await
                            .with_context(|| format!("cannot delete function {}", args.name))
                    })
                    .await?;
                println!("deleted function {}", args.name);
                Ok(())
            }
            FnCommand::Rollback(args) => {
                let r = args
                    .connect
                    .with_client(async |c| {
                        c.rollback_function(&args.name, args.to)
                            .await
                            .with_context(|| format!("cannot roll back function {}", args.name))
                    })
                    .await?;
                println!("rolled back {} to {}", args.name, version_line(&r));
                Ok(())
            }
        }
    })
}

async fn deploy(args: DeployArgs) -> anyhow::Result<()> {
    let file = args.manifest.as_deref().map(read_manifest).transpose()?;
    let plan = plan_deploy(&args, file.as_ref(), args.manifest.as_deref())?;
    let bytes = std::fs::read(&plan.component)
        .with_context(|| format!("cannot read the component {}", plan.component.display()))?;
    let name = plan.manifest.name.clone();
    let r = args
        .connect
        .with_client(async |c| {
            c.deploy_function(plan.manifest, bytes)
                .await
                .with_context(|| format!("cannot deploy function {name}"))
        })
        .await?;
    println!("deployed {name} {}", version_line(&r));
    Ok(())
}

async fn list(args: ListArgs) -> anyhow::Result<()> {
    let mut functions = args
        .connect
        .with_client(async |c| {
            c.list_functions()
                .await
                .context("cannot list the functions")
        })
        .await?;
    functions.sort_by(|a, b| a.name.cmp(&b.name));
    if args.json {
        println!("{}", list_json(&functions));
    } else {
        print!("{}", list_text(functions));
    }
    Ok(())
}

async fn describe(args: DescribeArgs) -> anyhow::Result<()> {
    let d = args
        .connect
        .with_client(async |c| {
            c.describe_function(&args.name)
                .await
                .with_context(|| format!("cannot describe function {}", args.name))
        })
        .await?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&describe_json(&d)).expect("JSON values serialise")
        );
    } else {
        print!("{}", describe_text(&d));
    }
    Ok(())
}

/// Lines asked for per logs request.
const LOG_PAGE: u64 = 1000;
/// How often `--follow` asks for new lines.
const LOG_POLL: Duration = Duration::from_millis(500);

async fn logs(args: LogsArgs) -> anyhow::Result<()> {
    args.connect
        .with_client(async |c| print_logs(c, &args).await)
        .await
}

/// Pages through the log (and with --follow keeps polling) until caught up,
/// the limit, Ctrl-C, or a closed stdout.
async fn print_logs(client: &Client, args: &LogsArgs) -> anyhow::Result<()> {
    let mut after = args.after;
    let mut printed = 0u64;
    let mut dropped: Option<u64> = None;
    loop {
        let want = match args.limit {
            Some(limit) if printed >= limit => return Ok(()),
            Some(limit) => (limit - printed).min(LOG_PAGE),
            None => LOG_PAGE,
        };
        let page = client
            .function_logs(&args.name, after, want as u32)
            .await
            .with_context(|| format!("cannot read the logs of function {}", args.name))?;
        match dropped {
            None if page.dropped > 0 => eprintln!(
                "({} log lines of {} dropped by its log rate so far)",
                page.dropped, args.name
            ),
            Some(before) if page.dropped > before => {
                eprintln!("({} log lines dropped)", page.dropped - before)
            }
            _ => {}
        }
        dropped = Some(page.dropped);
        let mut text = String::new();
        let mut new = 0u64;
        for line in page.lines.iter().filter(|l| l.seq > after) {
            if args.limit.is_some_and(|limit| printed + new >= limit) {
                break;
            }
            text.push_str(&if args.json {
                log_json(line)
            } else {
                log_text(line)
            });
            text.push('\n');
            new += 1;
        }
        if let Err(e) = std::io::stdout().lock().write_all(text.as_bytes()) {
            return if is_broken_pipe(&e) {
                Ok(())
            } else {
                Err(e.into())
            };
        }
        printed += new;
        after = page.next_after(after);
        if new == 0 {
            if !args.follow {
                return Ok(());
            }
            tokio::select! {
                _ = tokio::time::sleep(LOG_POLL) => {}
                _ = tokio::signal::ctrl_c() => return Ok(()),
            }
        }
    }
}
