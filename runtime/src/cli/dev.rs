//! `sluice dev`: the broker on embedded defaults, for a first run.
//!
//! Until the network front end lands it opens the store (recovering it),
//! reports what it holds, keeps background maintenance running, and shuts
//! down cleanly on Ctrl-C or SIGTERM.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;

use crate::clock::SystemClock;
use crate::log::LogOptions;
use crate::store::Store;

#[derive(Debug, Args)]
pub struct DevArgs {
    /// Where topics, offsets and logs are kept.
    #[arg(long, env = "SLUICE_DATA_DIR", default_value = "./sluice-data")]
    pub data_dir: PathBuf,
    /// Open the store, print the report and exit instead of serving.
    #[arg(long)]
    pub check: bool,
}

pub fn run(args: DevArgs) -> anyhow::Result<()> {
    let store = Store::open(&args.data_dir, LogOptions::default(), Arc::new(SystemClock))
        .with_context(|| format!("opening the data directory {}", args.data_dir.display()))?;
    print_report(&store);
    if !args.check {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(serve_until_shutdown())?;
        println!("Shutting down: syncing and checkpointing the log.");
    }
    store.close()?;
    Ok(())
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

/// Waits for Ctrl-C or SIGTERM. The handlers are installed before the
/// "running" line is printed, so a signal sent as soon as a supervisor (or a
/// test) sees that line shuts down cleanly instead of killing the process.
async fn serve_until_shutdown() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    println!("Sluice is running (storage only; the QUIC listener comes next). Ctrl-C to stop.");
    tokio::select! {
        _ = interrupt.recv() => {}
        _ = term.recv() => {}
    }
    Ok(())
}
