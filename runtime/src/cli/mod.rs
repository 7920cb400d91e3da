//! The `sluice` command line: one binary for the broker, its tools and its
//! benchmarks.

mod client;
#[cfg(feature = "demo")]
mod demo;
mod dev;

use clap::{Parser, Subcommand};

/// Sluice: a WebAssembly-extensible event bus.
#[derive(Debug, Parser)]
#[command(name = "sluice", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start a broker on embedded defaults: data in ./sluice-data, no config
    /// file needed.
    Dev(dev::DevArgs),
    /// Start a broker for production: needs a certificate and tokens, from
    /// --config FILE, SLUICE_* environment variables or flags.
    Serve(dev::ServeArgs),
    /// Create, list, describe and delete topics.
    #[command(subcommand)]
    Topic(client::topic::TopicCommand),
    // `produce` and `consume` take their help from their argument structs.
    Produce(client::produce::ProduceArgs),
    Consume(client::consume::ConsumeArgs),
    /// Schedule messages for later (once or in a loop), cancel them, list
    /// what is pending.
    #[command(subcommand)]
    Delay(client::delay::DelayCommand),
    /// Consumer groups: list, describe (lag), reset or rewind, re-drive dead
    /// letters, delete, and consume as a member.
    #[command(subcommand)]
    Group(client::group::GroupCommand),
    /// WebAssembly functions the broker runs: deploy (or a new version),
    /// list, describe (metrics, lag), logs, delete, rollback.
    #[command(name = "fn", subcommand)]
    Fn(client::function::FnCommand),
    /// Run a benchmark program and print its figures.
    Bench(Box<crate::bench::BenchArgs>),
}

/// Parses the command line and runs it.
pub fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_tracing();
    match cli.command {
        Command::Dev(args) => dev::run_dev(args),
        Command::Serve(args) => dev::run_serve(args),
        Command::Topic(cmd) => client::exit_on_error(client::topic::run(cmd)),
        Command::Produce(args) => client::exit_on_error(client::produce::run(args)),
        Command::Consume(args) => client::exit_on_error(client::consume::run(args)),
        Command::Delay(cmd) => client::exit_on_error(client::delay::run(cmd)),
        Command::Group(cmd) => client::exit_on_error(client::group::run(cmd)),
        Command::Fn(cmd) => client::exit_on_error(client::function::run(cmd)),
        Command::Bench(args) => crate::bench::run(*args),
    }
}

/// Logs to stderr; `RUST_LOG` filters (default `info`). Colours only on a
/// terminal: logs sent to a file or a pipe carry no escape codes.
fn init_tracing() {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .try_init();
}
