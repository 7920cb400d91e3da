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

// ---------------------------------------------------------------- baseline

#[derive(Debug, Clone, Serialize)]
struct Baseline {
    mb: u64,
    fdatasync_mb_per_s: f64,
    page_cache_mb_per_s: f64,
}

/// Section 1: sequential writes with and without the final fdatasync.
fn baseline(plan: &Plan, work: &WorkDir) -> Result<Baseline> {
    let bar = progress(2 * plan.reps as u64, "baseline");
    let path = work.path().join("baseline.dat");
    let (mut synced, mut cached) = (Vec::new(), Vec::new());
    for _ in 0..plan.reps {
        bar.set_message("1 MiB blocks + fdatasync");
        synced.push(sequential_write(&path, plan.baseline_mb, true)?);
        bar.inc(1);
        bar.set_message("1 MiB blocks, no sync");
        cached.push(sequential_write(&path, plan.baseline_mb, false)?);
        bar.inc(1);
    }
    bar.finish_and_clear();
    let b = Baseline {
        mb: plan.baseline_mb,
        fdatasync_mb_per_s: median(synced),
        page_cache_mb_per_s: median(cached),
    };
    let mut t = Table::new(&["sequential write", "MiB", "MB/s"]);
    for (name, rate) in [
        ("dd bs=1M conv=fdatasync", b.fdatasync_mb_per_s),
        ("page cache (no sync)", b.page_cache_mb_per_s),
    ] {
        t.row(vec![name.into(), b.mb.to_string(), format!("{rate:.0}")]);
    }
    print!("\n1. Baseline: sequential write of {} MiB\n{t}", b.mb);
    Ok(b)
}

/// Writes `mib` 1 MiB blocks to a new file, then (if `sync`) fdatasyncs it,
/// and returns MB/s over the whole; the file is removed afterwards (its
/// unwritten pages are then simply dropped).
fn sequential_write(path: &Path, mib: u64, sync: bool) -> Result<f64> {
    use std::io::Write;
    let block = vec![0x5a_u8; 1 << 20];
    let start = Instant::now();
    let mut file =
        fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    for _ in 0..mib {
        file.write_all(&block)?;
    }
    if sync {
        file.sync_data()?;
    }
    let secs = start.elapsed().as_secs_f64();
    drop(file);
    fs::remove_file(path)?;
    Ok((mib << 20) as f64 / MB / secs)
}

// ------------------------------------------------------------------ append

#[derive(Debug, Clone, Serialize)]
struct AppendFigures {
    record_bytes: usize,
    batch_records: usize,
    batch_bytes: usize,
    durability: Durability,
    mb_per_s: f64,
    batches_per_s: f64,
    records_per_s: f64,
    p50_us: f64,
    p99_us: f64,
}

/// The log's best sequential append against the disk baseline.
#[derive(Debug, Clone, Serialize)]
struct Comparison {
    cell: String,
    vs_fdatasync: f64,
    vs_page_cache: f64,
    target: f64,
    met: bool,
}

/// The paired comparison with dd.
#[derive(Debug, Clone, Serialize)]
struct PairedFigures {
    mib: u64,
    dd_mb_per_s: f64,
    log_mb_per_s: f64,
    /// Median over pairs of (log / dd), each pair measured back to back.
    ratio: f64,
    target: f64,
    met: bool,
}

/// Section 2b: in each repetition, a dd-like write of `baseline_mb` MiB
/// ending in fdatasync, then the log appending the same bytes as 100 B x 256
/// batches under `none` and ending with a flush (fdatasync). Same volume,
/// same end state, back to back, so drift on a shared machine hits both.
fn paired_with_dd(plan: &Plan, work: &WorkDir) -> Result<PairedFigures> {
    let batch = build_batch(100, 256);
    let target_bytes = plan.baseline_mb << 20;
    let bar = progress(2 * plan.reps as u64, "paired");
    let (mut dd, mut log_rates, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..plan.reps {
        let d = sequential_write(&work.path().join("paired-dd.dat"), plan.baseline_mb, true)?;
        bar.inc(1);
        let dir = work.fresh("paired-log")?;
        let (log, partition) = open_log(plan, &dir, Durability::None, LogOptions::default())?;
        let start = Instant::now();
        let mut written = 0u64;
        while written < target_bytes {
            partition.append(BytesMut::from(&batch[..]))?;
            written += batch.len() as u64;
        }
        partition.flush()?;
        let l = written as f64 / MB / start.elapsed().as_secs_f64();
        discard(log, partition, &dir)?;
        bar.inc(1);
        dd.push(d);
        log_rates.push(l);
        ratios.push(l / d);
    }
    bar.finish_and_clear();
    let ratio = median(ratios);
    let f = PairedFigures {
        mib: plan.baseline_mb,
        dd_mb_per_s: median(dd),
        log_mb_per_s: median(log_rates),
        ratio,
        target: 0.5,
        met: ratio >= 0.5,
    };
    let mut t = Table::new(&["writer", "MiB", "MB/s"]);
    t.row(vec![
        "dd bs=1M conv=fdatasync".into(),
        f.mib.to_string(),
        format!("{:.0}", f.dd_mb_per_s),
    ]);
    t.row(vec![
        "log 100 B x 256, none, + flush".into(),
        f.mib.to_string(),
        format!("{:.0}", f.log_mb_per_s),
    ]);
    print!("\n2b. Same bytes as dd, back to back, both ending in fdatasync\n{t}");
    println!(
        "log / dd: {:.3} (median of per-pair ratios) [target >= {:.2}: {}]",
        f.ratio,
        f.target,
        verdict(f.met)
    );
    Ok(f)
}

/// Section 2: one appender per cell, fresh log per cell and repetition.
/// Repetitions are the outer loop so a noisy spell spreads over all cells
/// instead of spoiling one.
fn append_matrix(plan: &Plan, work: &WorkDir) -> Result<Vec<AppendFigures>> {
    let mut cells = Vec::new();
    for &record_bytes in &plan.record_sizes {
        for &batch_records in &plan.batch_sizes {
            for &durability in &plan.durability {
                let batch = build_batch(record_bytes, batch_records);
                cells.push((record_bytes, batch_records, durability, batch));
            }
        }
    }
    let bar = progress((cells.len() * plan.reps) as u64, "append");
    let mut runs: Vec<Vec<AppendRun>> = vec![Vec::new(); cells.len()];
    for _ in 0..plan.reps {
        for (i, (record_bytes, batch_records, durability, batch)) in cells.iter().enumerate() {
            bar.set_message(format!("{record_bytes} B x {batch_records}, {durability}"));
            let dir = work.fresh("append")?;
            let (log, partition) = open_log(plan, &dir, *durability, LogOptions::default())?;
            let run = append_for(&partition, batch, 1, plan.cell())?;
            discard(log, partition, &dir)?;
            runs[i].push(run);
            bar.inc(1);
        }
    }
    bar.finish_and_clear();

    let mut t = Table::new(&[
        "record",
        "batch",
        "durability",
        "batch B",
        "MB/s",
        "batches/s",
        "records/s",
        "p50 us",
        "p99 us",
    ]);
    let mut figures = Vec::new();
    for ((record_bytes, batch_records, durability, batch), runs) in cells.iter().zip(&runs) {
        let f = AppendFigures {
            record_bytes: *record_bytes,
            batch_records: *batch_records,
            batch_bytes: batch.len(),
            durability: *durability,
            mb_per_s: median(
                runs.iter()
                    .map(|r| r.batches_per_s() * batch.len() as f64 / MB)
                    .collect(),
            ),
            batches_per_s: median(runs.iter().map(AppendRun::batches_per_s).collect()),
            records_per_s: median(
                runs.iter()
                    .map(|r| r.batches_per_s() * *batch_records as f64)
                    .collect(),
            ),
            p50_us: median(runs.iter().map(|r| r.quantile_us(0.5)).collect()),
            p99_us: median(runs.iter().map(|r| r.quantile_us(0.99)).collect()),
        };
        t.row(vec![
            format!("{record_bytes} B"),
            batch_records.to_string(),
            durability.to_string(),
            thousands(f.batch_bytes as f64),
            format!("{:.1}", f.mb_per_s),
            thousands(f.batches_per_s),
            thousands(f.records_per_s),
            format!("{:.1}", f.p50_us),
            format!("{:.1}", f.p99_us),
        ]);
        figures.push(f);
    }
    print!(
        "\n2. Append throughput, one appender, {} s per cell\n{t}",
        plan.seconds
    );
    Ok(figures)
}

/// The 256 × 100 B `none` cell against the baseline (target: at least half
/// of the fdatasync'd sequential write).
fn compare_with_baseline(append: &[AppendFigures], baseline: &Baseline) -> Option<Comparison> {
    let cell = append.iter().find(|f| {
        f.record_bytes == 100 && f.batch_records == 256 && f.durability == Durability::None
    });
    let Some(cell) = cell else {
        println!(
            "(the 100 B x 256, none cell is not in the matrix: no comparison with the baseline)"
        );
        return None;
    };
    let c = Comparison {
        cell: "100 B x 256, none".into(),
        vs_fdatasync: cell.mb_per_s / baseline.fdatasync_mb_per_s,
        vs_page_cache: cell.mb_per_s / baseline.page_cache_mb_per_s,
        target: 0.5,
        met: cell.mb_per_s / baseline.fdatasync_mb_per_s >= 0.5,
    };
    println!(
        "{}: {:.3} x the dd (fdatasync) baseline [target >= {:.2}: {}], {:.3} x the page-cache baseline",
        c.cell,
        c.vs_fdatasync,
        c.target,
        verdict(c.met),
        c.vs_page_cache
    );
    Some(c)
}

/// What the appenders of one timed run achieved together.
#[derive(Debug, Clone)]
struct AppendRun {
    batches: u64,
    elapsed: Duration,
    /// Append latency in nanoseconds.
    latency: Histogram<u64>,
}

impl AppendRun {
    fn batches_per_s(&self) -> f64 {
        self.batches as f64 / self.elapsed.as_secs_f64()
    }

    fn quantile_us(&self, q: f64) -> f64 {
        self.latency.value_at_quantile(q) as f64 / 1e3
    }
}

/// Appends copies of `batch` to `partition` from `threads` threads, started
/// together, for `duration`. Timing each append adds two clock reads (tens
/// of nanoseconds) per append.
fn append_for(
    partition: &Partition,
    batch: &Bytes,
    threads: usize,
    duration: Duration,
) -> Result<AppendRun> {
    let start = Barrier::new(threads);
    let results: Vec<Result<AppendRun>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| -> Result<AppendRun> {
                    let mut latency = latency_histogram();
                    start.wait();
                    let (batches, elapsed) = run_for(duration, || {
                        let t = Instant::now();
                        partition.append(BytesMut::from(&batch[..]))?;
                        latency.saturating_record(t.elapsed().as_nanos().max(1) as u64);
                        Ok(())
                    })?;
                    Ok(AppendRun {
                        batches,
                        elapsed,
                        latency,
                    })
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect()
    });
    let mut total = AppendRun {
        batches: 0,
        elapsed: Duration::ZERO,
        latency: latency_histogram(),
    };
    for run in results {
        let run = run?;
        total.batches += run.batches;
        // The slowest thread's time: a conservative rate.
        total.elapsed = total.elapsed.max(run.elapsed);
        total.latency.add(&run.latency)?;
    }
    Ok(total)
}

fn latency_histogram() -> Histogram<u64> {
    // 1 ns to 60 s at 3 significant digits.
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid histogram bounds")
}

// ------------------------------------------------------------ group commit

#[derive(Debug, Clone, Serialize)]
struct GroupCommitFigures {
    record_bytes: usize,
    batch_records: usize,
    appenders: usize,
    one_batches_per_s: f64,
    many_batches_per_s: f64,
    /// Batches covered by one fdatasync (median over repetitions).
    one_batches_per_sync: f64,
    many_batches_per_sync: f64,
    /// Median over repetitions of (many / one), each pair measured back to back.
    ratio: f64,
    target: f64,
    met: bool,
    one_p50_us: f64,
    one_p99_us: f64,
    many_p50_us: f64,
    many_p99_us: f64,
}

/// Section 3: `sync`, 100 B records, one appender against `appenders` on one
/// partition, each pair on one fresh log.
fn group_commit(plan: &Plan, work: &WorkDir) -> Result<Vec<GroupCommitFigures>> {
    const RECORD_BYTES: usize = 100;
    let batch_sizes = [1, 16];
    let bar = progress((batch_sizes.len() * plan.reps * 2) as u64, "group");
    let mut figures = Vec::new();
    let mut t = Table::new(&[
        "batch",
        "appenders",
        "batches/s",
        "batches/fsync",
        "ratio",
        "p50 us",
        "p99 us",
    ]);
    for batch_records in batch_sizes {
        let batch = build_batch(RECORD_BYTES, batch_records);
        let (mut one, mut many) = (Vec::new(), Vec::new());
        let (mut one_per_sync, mut many_per_sync) = (Vec::new(), Vec::new());
        for _ in 0..plan.reps {
            let dir = work.fresh("group-commit")?;
            let (log, partition) = open_log(plan, &dir, Durability::Sync, LogOptions::default())?;
            bar.set_message(format!("{RECORD_BYTES} B x {batch_records}, 1 appender"));
            let syncs_before = partition.sync_count();
            let run = append_for(&partition, &batch, 1, plan.cell())?;
            one_per_sync
                .push(run.batches as f64 / (partition.sync_count() - syncs_before).max(1) as f64);
            one.push(run);
            bar.inc(1);
            bar.set_message(format!(
                "{RECORD_BYTES} B x {batch_records}, {} appenders",
                plan.appenders
            ));
            let syncs_before = partition.sync_count();
            let run = append_for(&partition, &batch, plan.appenders, plan.cell())?;
            many_per_sync
                .push(run.batches as f64 / (partition.sync_count() - syncs_before).max(1) as f64);
            many.push(run);
            bar.inc(1);
            discard(log, partition, &dir)?;
        }
        let rate = |runs: &[AppendRun]| median(runs.iter().map(AppendRun::batches_per_s).collect());
        let q = |runs: &[AppendRun], quantile| {
            median(runs.iter().map(|r| r.quantile_us(quantile)).collect())
        };
        let ratio = median(
            one.iter()
                .zip(&many)
                .map(|(o, m)| m.batches_per_s() / o.batches_per_s())
                .collect(),
        );
        let f = GroupCommitFigures {
            record_bytes: RECORD_BYTES,
            batch_records,
            appenders: plan.appenders,
            one_batches_per_s: rate(&one),
            many_batches_per_s: rate(&many),
            ratio,
            target: 4.0,
            met: ratio >= 4.0,
            one_batches_per_sync: median(one_per_sync),
            many_batches_per_sync: median(many_per_sync),
            one_p50_us: q(&one, 0.5),
            one_p99_us: q(&one, 0.99),
            many_p50_us: q(&many, 0.5),
            many_p99_us: q(&many, 0.99),
        };
        t.row(vec![
            format!("{RECORD_BYTES} B x {batch_records}"),
            "1".into(),
            thousands(f.one_batches_per_s),
            format!("{:.1}", f.one_batches_per_sync),
            String::new(),
            format!("{:.1}", f.one_p50_us),
            format!("{:.1}", f.one_p99_us),
        ]);
        t.row(vec![
            format!("{RECORD_BYTES} B x {batch_records}"),
            plan.appenders.to_string(),
            thousands(f.many_batches_per_s),
            format!("{:.1}", f.many_batches_per_sync),
            format!("{:.2}", f.ratio),
            format!("{:.1}", f.many_p50_us),
            format!("{:.1}", f.many_p99_us),
        ]);
        figures.push(f);
    }
    bar.finish_and_clear();
    print!(
        "\n3. Group commit: durability sync, one partition, {} s per run\n{t}",
        plan.seconds
    );
    for f in &figures {
        println!(
            "batch {}: {} appenders give {:.2} x the batches/s of one [target >= {:.0}: {}]",
            f.batch_records,
            f.appenders,
            f.ratio,
            f.target,
            verdict(f.met)
        );
    }
    Ok(figures)
}

// -------------------------------------------------------- read and recovery

#[derive(Debug, Clone, Serialize)]
struct ReadFigures {
    source: String,
    mb_per_s: f64,
    records_per_s: f64,
}

#[derive(Debug, Clone, Serialize)]
struct RecoveryFigures {
    log_bytes: u64,
    /// Append rate while building the log (durability none, 1 KiB x 256).
    build_mb_per_s: f64,
    clean_reopen_ms: f64,
    clean_target_ms: f64,
    clean_met: bool,
    crash_reopen_ms: f64,
    /// Bytes after the last checkpoint at the crash: what recovery rescans.
    crash_scan_bytes: u64,
    no_recovery_point_reopen_ms: f64,
    /// Size of the active segment, all of which is rescanned.
    no_recovery_point_scan_bytes: u64,
}

/// The file in a partition directory that says how far the active segment
/// is known good (see `log::checkpoint`).
const RECOVERY_POINT: &str = "recovery-point";

/// Sections 4 and 5 share one large log (durability none, 1 KiB records,
/// batches of 256): build it, read its newest batches from the tail cache,
/// close it, time reopens (after crashes, after clean closes, without a
/// recovery point), then read it all from a log without tail cache.
fn read_and_recovery(plan: &Plan, work: &WorkDir) -> Result<(Vec<ReadFigures>, RecoveryFigures)> {
    const RECORD_BYTES: usize = 1024;
    const BATCH_RECORDS: usize = 256;
    let dir = work.fresh("large")?;
    let partition_dir = dir.join(TOPIC).join("0");
    let batch = build_batch(RECORD_BYTES, BATCH_RECORDS);

    // Build.
    let batches = (plan.recovery_bytes / batch.len() as u64).max(1);
    let bar = progress(batches, "build");
    bar.set_message(format!("{:.2} GB log", plan.recovery_bytes as f64 / 1e9));
    let options = LogOptions::default();
    let (log, partition) = open_log(plan, &dir, Durability::None, options.clone())?;
    let start = Instant::now();
    for _ in 0..batches {
        partition.append(BytesMut::from(&batch[..]))?;
        bar.inc(1);
    }
    let build_secs = start.elapsed().as_secs_f64();
    bar.finish_and_clear();
    let build_bytes = partition.size_bytes();

    // 4b: the newest batches, about half the tail cache, read over and over.
    let bar = progress(plan.reps as u64, "read");
    bar.set_message("tail cache");
    let tail_end = partition.high_watermark();
    let tail_batches = (options.tail_cache_bytes / 2 / batch.len()).clamp(1, batches as usize);
    let from = tail_end - (tail_batches * BATCH_RECORDS) as u64;
    let mut cached = Vec::new();
    for _ in 0..plan.reps {
        let (mut bytes, mut records) = (0, 0);
        let (_, elapsed) = run_for(plan.cell(), || {
            let (b, r) = read_range(&partition, from, tail_end)?;
            bytes += b;
            records += r;
            Ok(())
        })?;
        cached.push((bytes, records, elapsed));
        bar.inc(1);
    }
    bar.finish_and_clear();

    drop(partition);
    log.close()?;
    drop(log);

    // 5: each reopen is timed; the log is closed cleanly after each.
    let bar = progress(3 * plan.reps as u64, "recovery");
    let timed_open = || -> Result<f64> {
        let start = Instant::now();
        let log = open(plan, &dir, Durability::None, options.clone())?;
        let ms = start.elapsed().as_secs_f64() * 1e3;
        log.close()?;
        bar.inc(1);
        Ok(ms)
    };
    // A crash just before the next checkpoint was due: the most a crash
    // leaves to rescan. The reopen also syncs that tail (it was still only in
    // the page cache, as after a real kill -9) before writing a checkpoint.
    bar.set_message("after a crash");
    let (mut crash_ms, mut crash_scan) = (Vec::new(), Vec::new());
    for _ in 0..plan.reps {
        let (log, partition) = open_log(plan, &dir, Durability::None, options.clone())?;
        while partition.bytes_since_checkpoint() + (batch.len() as u64) < options.checkpoint_bytes {
            partition.append(BytesMut::from(&batch[..]))?;
        }
        log.simulate_crash();
        crash_scan.push(partition.bytes_since_checkpoint() as f64);
        drop(partition);
        crash_ms.push(timed_open()?);
    }
    bar.set_message("after a clean close");
    let clean_ms = (0..plan.reps)
        .map(|_| timed_open())
        .collect::<Result<Vec<_>>>()?;
    bar.set_message("without recovery point");
    let mut full_ms = Vec::new();
    for _ in 0..plan.reps {
        fs::remove_file(partition_dir.join(RECOVERY_POINT))
            .context("removing the recovery point")?;
        full_ms.push(timed_open()?);
    }
    bar.finish_and_clear();

    // 4a: everything, front to back, from a log that caches nothing.
    let bar = progress(plan.reps as u64, "read");
    bar.set_message("whole log, no tail cache");
    let (log, partition) = open_log(
        plan,
        &dir,
        Durability::None,
        LogOptions {
            tail_cache_bytes: 0,
            ..options.clone()
        },
    )?;
    let (start_offset, end) = (partition.log_start_offset(), partition.high_watermark());
    let log_bytes = partition.size_bytes();
    let mut sequential = Vec::new();
    for _ in 0..plan.reps {
        let start = Instant::now();
        let (bytes, records) = read_range(&partition, start_offset, end)?;
        sequential.push((bytes, records, start.elapsed()));
        bar.inc(1);
    }
    bar.finish_and_clear();
    let no_recovery_point_scan_bytes = active_segment_bytes(&partition_dir)?;
    discard(log, partition, &dir)?;

    let read = [
        ("whole log, no tail cache (page cache)", sequential),
        ("newest batches, tail cache (zero-copy)", cached),
    ]
    .into_iter()
    .map(|(source, runs)| ReadFigures {
        source: source.into(),
        mb_per_s: median(
            runs.iter()
                .map(|(b, _, e)| *b as f64 / MB / e.as_secs_f64())
                .collect(),
        ),
        records_per_s: median(
            runs.iter()
                .map(|(_, r, e)| *r as f64 / e.as_secs_f64())
                .collect(),
        ),
    })
    .collect::<Vec<_>>();
    let mut t = Table::new(&["source", "MB/s", "records/s"]);
    for r in &read {
        t.row(vec![
            r.source.clone(),
            format!("{:.0}", r.mb_per_s),
            thousands(r.records_per_s),
        ]);
    }
    print!(
        "\n4. Read throughput: {:.2} GB log of {RECORD_BYTES} B x {BATCH_RECORDS} batches, 1 MiB reads\n{t}",
        log_bytes as f64 / 1e9
    );

    const CLEAN_TARGET_MS: f64 = 200.0;
    let clean_reopen_ms = median(clean_ms);
    let recovery = RecoveryFigures {
        log_bytes,
        build_mb_per_s: build_bytes as f64 / MB / build_secs,
        clean_reopen_ms,
        clean_target_ms: CLEAN_TARGET_MS,
        clean_met: clean_reopen_ms < CLEAN_TARGET_MS,
        crash_reopen_ms: median(crash_ms),
        crash_scan_bytes: median(crash_scan) as u64,
        no_recovery_point_reopen_ms: median(full_ms),
        no_recovery_point_scan_bytes,
    };
    let mut t = Table::new(&["reopen", "rescanned MB", "ms"]);
    for (name, scanned, ms) in [
        ("after a clean close", 0, recovery.clean_reopen_ms),
        (
            "after a crash",
            recovery.crash_scan_bytes,
            recovery.crash_reopen_ms,
        ),
        (
            "without recovery point",
            recovery.no_recovery_point_scan_bytes,
            recovery.no_recovery_point_reopen_ms,
        ),
    ] {
        t.row(vec![
            name.into(),
            format!("{:.1}", scanned as f64 / MB),
            format!("{ms:.1}"),
        ]);
    }
    print!(
        "\n5. Recovery: Log::open of a {:.2} GB log (built at {:.0} MB/s)\n{t}",
        log_bytes as f64 / 1e9,
        recovery.build_mb_per_s
    );
    println!(
        "clean reopen: {:.1} ms [target < {:.0} ms: {}]",
        recovery.clean_reopen_ms,
        recovery.clean_target_ms,
        verdict(recovery.clean_met)
    );
    Ok((read, recovery))
}

/// Reads offsets `[from, to)` front to back in 1 MiB requests, as a
/// consumer does, and returns the bytes and records read. Walking the batch
/// headers (to find the next offset and count records) is part of the cost.
fn read_range(partition: &Partition, from: u64, to: u64) -> Result<(u64, u64)> {
    const MAX_BYTES: usize = 1 << 20;
    let (mut offset, mut bytes, mut records) = (from, 0, 0);
    while offset < to {
        let read = partition.read(offset, MAX_BYTES)?;
        ensure!(
            !read.is_empty(),
            "read at offset {offset} returned nothing (want up to {to})"
        );
        for chunk in &read.chunks {
            bytes += chunk.len() as u64;
            for batch in BatchIter::new(chunk) {
                let header = *batch?.header();
                records += u64::from(header.record_count);
                offset = header.next_offset();
            }
        }
    }
    Ok((bytes, records))
}

/// Size of the newest `.log` file in a partition directory.
fn active_segment_bytes(partition_dir: &Path) -> Result<u64> {
    let mut newest: Option<(String, u64)> = None;
    for entry in fs::read_dir(partition_dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".log") && newest.as_ref().is_none_or(|(n, _)| name > *n) {
            newest = Some((name, entry.metadata()?.len()));
        }
    }
    Ok(newest.map_or(0, |(_, len)| len))
}

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
