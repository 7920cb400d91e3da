//! Append throughput and latency across batch sizes and durabilities, and
//! the paired comparison with `dd`.

use super::*;

#[derive(Debug, Clone, Serialize)]
pub(super) struct AppendFigures {
    pub(super) record_bytes: usize,
    pub(super) batch_records: usize,
    pub(super) batch_bytes: usize,
    pub(super) durability: Durability,
    pub(super) mb_per_s: f64,
    pub(super) batches_per_s: f64,
    pub(super) records_per_s: f64,
    pub(super) p50_us: f64,
    pub(super) p99_us: f64,
}

/// The log's best sequential append against the disk baseline.
#[derive(Debug, Clone, Serialize)]
pub(super) struct Comparison {
    pub(super) cell: String,
    pub(super) vs_fdatasync: f64,
    pub(super) vs_page_cache: f64,
    pub(super) target: f64,
    pub(super) met: bool,
}

/// The paired comparison with dd.
#[derive(Debug, Clone, Serialize)]
pub(super) struct PairedFigures {
    pub(super) mib: u64,
    pub(super) dd_mb_per_s: f64,
    pub(super) log_mb_per_s: f64,
    /// Median over pairs of (log / dd), each pair measured back to back.
    pub(super) ratio: f64,
    pub(super) target: f64,
    pub(super) met: bool,
}

/// Section 2b: in each repetition, a dd-like write of `baseline_mb` MiB
/// ending in fdatasync, then the log appending the same bytes as 100 B x 256
/// batches under `none` and ending with a flush (fdatasync). Same volume,
/// same end state, back to back, so drift on a shared machine hits both.
pub(super) fn paired_with_dd(plan: &Plan, work: &WorkDir) -> Result<PairedFigures> {
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
pub(super) fn append_matrix(plan: &Plan, work: &WorkDir) -> Result<Vec<AppendFigures>> {
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
pub(super) fn compare_with_baseline(
    append: &[AppendFigures],
    baseline: &Baseline,
) -> Option<Comparison> {
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
pub(super) struct AppendRun {
    pub(super) batches: u64,
    pub(super) elapsed: Duration,
    /// Append latency in nanoseconds.
    pub(super) latency: Histogram<u64>,
}

impl AppendRun {
    pub(super) fn batches_per_s(&self) -> f64 {
        self.batches as f64 / self.elapsed.as_secs_f64()
    }

    pub(super) fn quantile_us(&self, q: f64) -> f64 {
        self.latency.value_at_quantile(q) as f64 / 1e3
    }
}

/// Appends copies of `batch` to `partition` from `threads` threads, started
/// together, for `duration`. Timing each append adds two clock reads (tens
/// of nanoseconds) per append.
pub(super) fn append_for(
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

pub(super) fn latency_histogram() -> Histogram<u64> {
    // 1 ns to 60 s at 3 significant digits.
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid histogram bounds")
}
