//! The disk's own speed (sequential write with and without fsync), the
//! yardstick the log's figures are compared with.

use super::*;

#[derive(Debug, Clone, Serialize)]
pub(super) struct Baseline {
    pub(super) mb: u64,
    pub(super) fdatasync_mb_per_s: f64,
    pub(super) page_cache_mb_per_s: f64,
}

/// Section 1: sequential writes with and without the final fdatasync.
pub(super) fn baseline(plan: &Plan, work: &WorkDir) -> Result<Baseline> {
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
pub(super) fn sequential_write(path: &Path, mib: u64, sync: bool) -> Result<f64> {
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
