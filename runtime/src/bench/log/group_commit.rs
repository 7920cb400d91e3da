//! Group commit: how concurrent `sync` appenders share fsyncs.

use super::*;

#[derive(Debug, Clone, Serialize)]
pub(super) struct GroupCommitFigures {
    pub(super) record_bytes: usize,
    pub(super) batch_records: usize,
    pub(super) appenders: usize,
    pub(super) one_batches_per_s: f64,
    pub(super) many_batches_per_s: f64,
    /// Batches covered by one fdatasync (median over repetitions).
    pub(super) one_batches_per_sync: f64,
    pub(super) many_batches_per_sync: f64,
    /// Median over repetitions of (many / one), each pair measured back to back.
    pub(super) ratio: f64,
    pub(super) target: f64,
    pub(super) met: bool,
    pub(super) one_p50_us: f64,
    pub(super) one_p99_us: f64,
    pub(super) many_p50_us: f64,
    pub(super) many_p99_us: f64,
}

/// Section 3: `sync`, 100 B records, one appender against `appenders` on one
/// partition, each pair on one fresh log.
pub(super) fn group_commit(plan: &Plan, work: &WorkDir) -> Result<Vec<GroupCommitFigures>> {
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
