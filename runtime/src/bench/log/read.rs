//! Reads (cold and from the tail cache) and recovery after a clean and an
//! unclean shutdown.

use super::*;

#[derive(Debug, Clone, Serialize)]
pub(super) struct ReadFigures {
    pub(super) source: String,
    pub(super) mb_per_s: f64,
    pub(super) records_per_s: f64,
}

#[derive(Debug, Clone, Serialize)]
pub(super) struct RecoveryFigures {
    pub(super) log_bytes: u64,
    /// Append rate while building the log (durability none, 1 KiB x 256).
    pub(super) build_mb_per_s: f64,
    pub(super) clean_reopen_ms: f64,
    pub(super) clean_target_ms: f64,
    pub(super) clean_met: bool,
    pub(super) crash_reopen_ms: f64,
    /// Bytes after the last checkpoint at the crash: what recovery rescans.
    pub(super) crash_scan_bytes: u64,
    pub(super) no_recovery_point_reopen_ms: f64,
    /// Size of the active segment, all of which is rescanned.
    pub(super) no_recovery_point_scan_bytes: u64,
}

/// The file in a partition directory that says how far the active segment
/// is known good (see `log::checkpoint`).
const RECOVERY_POINT: &str = "recovery-point";

/// Sections 4 and 5 share one large log (durability none, 1 KiB records,
/// batches of 256): build it, read its newest batches from the tail cache,
/// close it, time reopens (after crashes, after clean closes, without a
/// recovery point), then read it all from a log without tail cache.
pub(super) fn read_and_recovery(
    plan: &Plan,
    work: &WorkDir,
) -> Result<(Vec<ReadFigures>, RecoveryFigures)> {
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
pub(super) fn read_range(partition: &Partition, from: u64, to: u64) -> Result<(u64, u64)> {
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
pub(super) fn active_segment_bytes(partition_dir: &Path) -> Result<u64> {
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
