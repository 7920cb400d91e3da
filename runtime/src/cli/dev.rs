//! `sluice dev` and `sluice serve`: run the broker.
//!
//! `dev` is for a first run: embedded defaults, data in ./sluice-data, a
//! self-signed certificate generated into the data directory, anonymous
//! access allowed unless tokens are given. `serve` is for production: it
//! needs a config file (or flags) naming a certificate and tokens.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;

use sluice_broker::clock::SystemClock;
use sluice_broker::config::{BrokerConfig, ConfigOverrides};
use sluice_broker::log::LogOptions;
use sluice_broker::node::Node;
use sluice_broker::store::Store;

#[derive(Debug, Args)]
pub struct DevArgs {
    /// Optional TOML config file (see docs/operations.md).
    #[arg(long, env = "SLUICE_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub overrides: ConfigOverrides,
    /// Open the store, print the report and exit instead of serving.
    #[arg(long)]
    pub check: bool,
    /// Deploy the sample functions on demo topics (a filter, transforms
    /// and handlers) and seed a few orders: see what functions do.
    #[arg(long)]
    pub demo: bool,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// TOML config file (see docs/operations.md).
    #[arg(long, env = "SLUICE_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub overrides: ConfigOverrides,
}

pub fn run_dev(args: DevArgs) -> anyhow::Result<()> {
    let mut config = BrokerConfig::load(args.config.as_deref(), &args.overrides)?;
    if args.overrides.allow_anonymous.is_none() && config.auth.tokens.is_empty() {
        config.auth.allow_anonymous = true;
    }
    if args.check {
        let store = Store::open(
            &config.data_dir,
            LogOptions::default(),
            Arc::new(SystemClock),
            &sluice_broker::keyspaces(),
        )
        .with_context(|| format!("opening the data directory {}", config.data_dir.display()))?;
        print_report(&store);
        store.close()?;
        return Ok(());
    }
    run_broker(config, args.demo)
}

pub fn run_serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = BrokerConfig::load(args.config.as_deref(), &args.overrides)?;
    config.validate_for_serve()?;
    run_broker(config, false)
}

fn run_broker(config: BrokerConfig, demo: bool) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(async move {
            use tokio::signal::unix::{SignalKind, signal};
            // Handlers first, so a signal sent as soon as a supervisor (or a
            // test) sees the "running" line shuts down cleanly.
            let mut term = signal(SignalKind::terminate())?;
            let mut interrupt = signal(SignalKind::interrupt())?;
            let node = Node::start(&config, Arc::new(SystemClock)).await?;
            print_report(node.broker().store());
            if demo {
                #[cfg(feature = "demo")]
                println!("{}", super::demo::install(node.broker()).await?);
                #[cfg(not(feature = "demo"))]
                anyhow::bail!(
                    "this sluice was built without the sample functions; rebuild it with \
                     `--features demo` (the default) to use --demo"
                );
            }
            let anonymous = if config.auth.allow_anonymous { "anonymous access allowed" } else { "tokens required" };
            println!(
                "Sluice is running on {} ({anonymous}); clients trust {}. Ctrl-C to stop.",
                node.addr(),
                node.cert_path().display()
            );
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = term.recv() => {}
            }
            println!("Shutting down: finishing in-flight requests, then syncing and checkpointing the log.");
            node.shutdown().await
        })
}

fn print_report(store: &Store) {
    let topics = store.log().topics();
    println!(
        "Sluice storage opened at {} in {:.1} ms: {} topic(s).",
        store.dir().display(),
        store.open_time().as_secs_f64() * 1e3,
        topics.len()
    );
    for topic in topics {
        let cfg = topic.config();
        println!(
            "  {} ({} partition(s), durability {})",
            topic.name(),
            cfg.partitions,
            cfg.durability
        );
        for p in topic.partitions() {
            println!(
                "    partition {}: offsets [{}, {}), {} segment(s), {} bytes",
                p.id(),
                p.log_start_offset(),
                p.high_watermark(),
                p.segment_count(),
                p.size_bytes()
            );
        }
    }
}
