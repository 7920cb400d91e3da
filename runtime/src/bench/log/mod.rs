//! `sluice bench log`: the storage engine on this machine's disk.
//!
//! Five sections, each printed as a table:
//!
//! 1. **Baseline**: what the disk gives a plain sequential writer — 1 MiB
//!    blocks then one `fdatasync`, like `dd bs=1M conv=fdatasync` — and the
//!    same without the sync (page-cache bandwidth). The log is judged against
//!    these, measured in the same run.
//! 2. **Append matrix**: one appender per record size × batch size ×
//!    durability policy, on a fresh log each time. Batches are encoded once
//!    before the clock starts; each append gets its own copy of the bytes (a
//!    memcpy, as the network layer hands over a buffer it received), which is
//!    inside the measurement.
//! 3. **Group commit**: `sync` durability, one appender against many on one
//!    partition. Concurrent appenders share fsyncs, so batches/s must grow
//!    with the number of appenders.
//! 4. **Reads**: a full sequential pass over a large log from a freshly
//!    opened log with no tail cache (page-cache reads through the index), and
//!    repeated reads of the newest megabytes (tail-cache hits, the path of a
//!    consumer that keeps up).
//! 5. **Recovery**: how long `Log::open` takes on a large log after a clean
//!    close, after a crash (`Log::simulate_crash`: the page cache keeps the
//!    data, as after kill -9; open rescans what came after the last
//!    checkpoint), and without a recovery point (it rescans the whole active
//!    segment).

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use bytes::{Bytes, BytesMut};
use hdrhistogram::Histogram;
use serde::Serialize;
use sluice_protocol::batch::{BatchBuilder, BatchIter};

use super::{MB, Table, WorkDir, median, progress, run_for, thousands, verdict};
use sluice_broker::clock::{Clock, SystemClock};
use sluice_broker::log::{Durability, Log, LogOptions, Partition, TopicConfig};

/// Options of `sluice bench log`.
#[derive(Debug, Clone, clap::Args)]
pub struct LogBenchArgs {
    /// Where to create the run's scratch directory (removed at the end).
    #[arg(long, default_value = "sluice-bench-data")]
    pub dir: PathBuf,
    /// Seconds per measured cell [default: 2, or 0.2 with --quick].
    #[arg(long)]
    pub seconds: Option<f64>,
    /// Repetitions of every measurement; medians are reported [default: 3,
    /// or 1 with --quick].
    #[arg(long)]
    pub reps: Option<usize>,
    /// Record (value) sizes in bytes for the append matrix.
    #[arg(long, value_delimiter = ',', default_value = "100,1024")]
    pub record_sizes: Vec<usize>,
    /// Records per batch for the append matrix.
    #[arg(long, value_delimiter = ',', default_value = "1,16,256")]
    pub batch_sizes: Vec<usize>,
    /// Durability policies for the append matrix: sync, none, interval:<ms>.
    #[arg(long, value_delimiter = ',', default_value = "sync,interval:10,none")]
    pub durability: Vec<Durability>,
    /// Concurrent appenders in the group-commit comparison.
    #[arg(long, default_value_t = 8)]
    pub appenders: usize,
    /// Size of the log for the read and recovery sections, in GB (10^9
    /// bytes) [default: 1, or 0.016 with --quick].
    #[arg(long)]
    pub recovery_gb: Option<f64>,
    /// MiB (1 MiB blocks) written by the sequential-write baseline [default: 1024, or 16
    /// with --quick].
    #[arg(long)]
    pub baseline_mb: Option<u64>,
    /// Segment size of every log the benchmark creates, in MiB [default: the
    /// topic default, 1024]. Appends that fill a segment pay for a roll.
    #[arg(long)]
    pub segment_mb: Option<u64>,
    /// Also write every figure to this file as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Tiny sizes and short cells: a smoke test, not figures.
    #[arg(long)]
    pub quick: bool,
    /// Sections to run (the append-vs-dd ratio needs both baseline and append).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "baseline,append,paired,group-commit,read"
    )]
    pub sections: Vec<Section>,
}

/// The parts of `sluice bench log`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Section {
    /// dd-like sequential write bandwidth.
    Baseline,
    /// The append matrix: record size x batch size x durability.
    Append,
    /// One appender against many under `sync`.
    GroupCommit,
    /// Read throughput and recovery time of a large log.
    Read,
    /// dd and the log writing the same bytes back to back, both ending in
    /// fdatasync: the target's ratio, measured in pairs.
    Paired,
}

/// The settings a run actually uses, defaults and `--quick` applied.
#[derive(Debug, Clone, Serialize)]
struct Plan {
    cpus: usize,
    seconds: f64,
    reps: usize,
    record_sizes: Vec<usize>,
    batch_sizes: Vec<usize>,
    durability: Vec<Durability>,
    appenders: usize,
    recovery_bytes: u64,
    baseline_mb: u64,
    segment_bytes: u64,
}

impl Plan {
    fn new(args: &LogBenchArgs) -> Result<Plan> {
        let quick = args.quick;
        let plan = Plan {
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            seconds: args.seconds.unwrap_or(if quick { 0.2 } else { 2.0 }),
            reps: args.reps.unwrap_or(if quick { 1 } else { 3 }),
            record_sizes: args.record_sizes.clone(),
            batch_sizes: args.batch_sizes.clone(),
            durability: args.durability.clone(),
            appenders: args.appenders,
            recovery_bytes: (args.recovery_gb.unwrap_or(if quick { 0.016 } else { 1.0 }) * 1e9)
                as u64,
            baseline_mb: args.baseline_mb.unwrap_or(if quick { 16 } else { 1024 }),
            segment_bytes: args
                .segment_mb
                .map_or(TopicConfig::default().segment_bytes, |mib| mib << 20),
        };
        ensure!(plan.seconds > 0.0, "--seconds must be positive");
        ensure!(plan.reps > 0, "--reps must be at least 1");
        ensure!(plan.appenders > 0, "--appenders must be at least 1");
        ensure!(plan.baseline_mb > 0, "--baseline-mb must be at least 1");
        ensure!(
            plan.recovery_bytes >= 1 << 20,
            "--recovery-gb must be at least 0.001"
        );
        ensure!(
            plan.record_sizes
                .iter()
                .chain(&plan.batch_sizes)
                .all(|n| *n > 0),
            "record and batch sizes must be positive"
        );
        plan.topic_config(Durability::Sync)
            .validate()
            .map_err(|e| anyhow::anyhow!("--segment-mb: {e}"))?;
        Ok(plan)
    }

    /// The benchmark topic's configuration.
    fn topic_config(&self, durability: Durability) -> TopicConfig {
        TopicConfig {
            durability,
            segment_bytes: self.segment_bytes,
            ..TopicConfig::default()
        }
    }

    fn cell(&self) -> Duration {
        Duration::from_secs_f64(self.seconds)
    }
}

/// Every figure of a run, as `--json` writes it.
#[derive(Debug, Serialize)]
struct Report {
    plan: Plan,
    baseline: Option<Baseline>,
    append: Vec<AppendFigures>,
    append_vs_baseline: Option<Comparison>,
    paired: Option<PairedFigures>,
    group_commit: Vec<GroupCommitFigures>,
    read: Vec<ReadFigures>,
    recovery: Option<RecoveryFigures>,
}

/// Runs `sluice bench log`.
pub fn run(args: LogBenchArgs) -> Result<()> {
    let plan = Plan::new(&args)?;
    let work = WorkDir::new(&args.dir)?;
    println!(
        "sluice bench log: {} CPUs, {} s per cell, median of {} reps, {} MiB segments, MB = 10^6 bytes, in {}",
        plan.cpus,
        plan.seconds,
        plan.reps,
        plan.segment_bytes >> 20,
        work.path().display()
    );
    let wants = |s| args.sections.contains(&s);
    let baseline = wants(Section::Baseline)
        .then(|| baseline(&plan, &work))
        .transpose()?;
    let append = if wants(Section::Append) {
        append_matrix(&plan, &work)?
    } else {
        Vec::new()
    };
    let append_vs_baseline = baseline
        .as_ref()
        .and_then(|b| compare_with_baseline(&append, b));
    let paired = wants(Section::Paired)
        .then(|| paired_with_dd(&plan, &work))
        .transpose()?;
    let group_commit = if wants(Section::GroupCommit) {
        group_commit(&plan, &work)?
    } else {
        Vec::new()
    };
    let (read, recovery) = if wants(Section::Read) {
        let (read, recovery) = read_and_recovery(&plan, &work)?;
        (read, Some(recovery))
    } else {
        (Vec::new(), None)
    };
    let report = Report {
        plan,
        baseline,
        append,
        append_vs_baseline,
        paired,
        group_commit,
        read,
        recovery,
    };
    if let Some(path) = &args.json {
        let json = serde_json::to_vec_pretty(&report)?;
        fs::write(path, json).with_context(|| format!("writing {}", path.display()))?;
        println!("\nwrote {}", path.display());
    }
    Ok(())
}

mod append;
mod baseline;
mod group_commit;
mod read;

use append::*;
use baseline::*;
use group_commit::*;
use read::*;

// ----------------------------------------------------------------- helpers

const TOPIC: &str = "bench";

/// One batch of `records` records of `record_bytes` each, encoded once so
/// encoding stays outside the measurements.
fn build_batch(record_bytes: usize, records: usize) -> Bytes {
    let now = SystemClock.now_ms();
    let value = vec![b'v'; record_bytes];
    let mut builder = BatchBuilder::with_capacity(now, records * (record_bytes + 16));
    for _ in 0..records {
        builder.push(now, None, Some(&value), &[]);
    }
    builder.finish()
}

/// Opens a log in `dir` with the benchmark's single one-partition topic.
fn open(plan: &Plan, dir: &Path, durability: Durability, options: LogOptions) -> Result<Log> {
    let topics = [(TOPIC.to_string(), plan.topic_config(durability))];
    Log::open(dir, topics, options, Arc::new(SystemClock))
        .with_context(|| format!("opening the log in {}", dir.display()))
}

/// [`open`], and the partition.
fn open_log(
    plan: &Plan,
    dir: &Path,
    durability: Durability,
    options: LogOptions,
) -> Result<(Log, Arc<Partition>)> {
    let log = open(plan, dir, durability, options)?;
    let partition = log.partition(TOPIC, 0)?;
    Ok((log, partition))
}

/// Throws a measured log away. A clean close would fsync what `none` and
/// `interval` left in the page cache — gigabytes nobody needs, and seconds
/// of disk traffic disturbing the next measurement — so the log is dropped
/// like after a crash and its files deleted, unwritten pages with them.
fn discard(log: Log, partition: Arc<Partition>, dir: &Path) -> Result<()> {
    drop(partition);
    log.simulate_crash();
    fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))
}

#[cfg(test)]
mod tests {
    use std::ffi::OsString;

    use clap::Parser;

    use super::super::{BenchArgs, run};

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        bench: BenchArgs,
    }

    /// The whole program in `--quick` mode, through its command line, so it
    /// keeps working as the log changes.
    #[test]
    fn quick_run_produces_every_figure() {
        let tmp = tempfile::tempdir().unwrap();
        let json = tmp.path().join("figures.json");
        let data = tmp.path().join("data");
        let args: Vec<OsString> = vec![
            "sluice".into(),
            "log".into(),
            "--quick".into(),
            "--seconds=0.05".into(),
            "--dir".into(),
            data.clone().into(),
            "--json".into(),
            json.clone().into(),
        ];
        let cli = Cli::try_parse_from(args).unwrap();
        run(cli.bench).unwrap();

        let report: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
        assert_eq!(report["append"].as_array().unwrap().len(), 2 * 3 * 3);
        assert!(
            report["append_vs_baseline"]["vs_fdatasync"]
                .as_f64()
                .unwrap()
                > 0.0
        );
        assert_eq!(report["group_commit"].as_array().unwrap().len(), 2);
        assert_eq!(report["read"].as_array().unwrap().len(), 2);
        let recovery = &report["recovery"];
        assert!(recovery["log_bytes"].as_u64().unwrap() > 10_000_000);
        assert!(recovery["no_recovery_point_scan_bytes"].as_u64().unwrap() > 10_000_000);
        for key in [
            "clean_reopen_ms",
            "crash_reopen_ms",
            "no_recovery_point_reopen_ms",
        ] {
            assert!(recovery[key].as_f64().unwrap() > 0.0, "{key}");
        }
        // The scratch directory, and the parent it created, are gone.
        assert!(!data.exists());
    }
}
