//! Opening a partition after a clean shutdown or a crash: the active
//! segment is trusted up to its checkpoint and scanned after it, and the
//! idempotent producers' state is loaded from its snapshot and the batch
//! headers written since.

use super::*;

/// The state of an active segment after recovery.
#[derive(Debug)]
pub(super) struct Recovered {
    pub(super) next_offset: u64,
    pub(super) first_timestamp: Option<i64>,
    /// The checkpoint already describes the segment exactly (clean shutdown).
    pub(super) up_to_date_checkpoint: bool,
}

/// Rebuilds the active segment's state after open: trusts what the
/// checkpoint vouches for and scans (with CRCs) only what came after,
/// cutting off a torn tail.
pub(super) fn recover_active(
    seg: &Segment,
    checkpoint: Option<Checkpoint>,
    interval: u32,
) -> Result<Recovered, LogError> {
    let dir = seg
        .path()
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let base = seg.base_offset;
    let trusted = checkpoint.filter(|cp| cp.segment_base == base && cp.position <= seg.size());
    let mut start = (0, base, Indexes::empty(), None, false);
    if let Some(cp) = trusted {
        let offsets = Index::<OffsetEntry>::load(&dir.join(format!("{base:020}.index")))
            .map_err(|e| LogError::io(&dir, e))?;
        let times = Index::<TimeEntry>::load(&dir.join(format!("{base:020}.timeindex")))
            .map_err(|e| LogError::io(&dir, e))?;
        if let (Some(mut offsets), Some(mut times)) = (offsets, times)
            && offsets.len() >= cp.index_entries as usize
            && times.len() >= cp.time_entries as usize
        {
            offsets.truncate(cp.index_entries as usize);
            times.truncate(cp.time_entries as usize);
            let bytes_since_entry = offsets
                .entries()
                .last()
                .map_or(cp.position, |e| cp.position - e.position as u64);
            let first_ts = (cp.first_timestamp != i64::MIN).then_some(cp.first_timestamp);
            let ix = Indexes {
                offsets,
                times,
                max_timestamp: cp.max_timestamp,
                bytes_since_entry,
            };
            start = (cp.position, cp.next_offset, ix, first_ts, true);
        }
    }
    let (from, next, mut ix, first_ts, used_checkpoint) = start;
    let outcome = seg.scan(from, next, &mut ix, interval, true)?;
    if outcome.end < seg.size() {
        tracing::warn!(
            segment = %seg.path().display(),
            kept = outcome.end,
            dropped = seg.size() - outcome.end,
            reason = outcome.torn.as_deref().unwrap_or("unknown"),
            "truncating torn tail"
        );
        seg.truncate(outcome.end)?;
    }
    // Drop index entries past what was kept, so the files match memory.
    seg.persist_indexes(&mut ix)?;
    seg.set_indexes(ix);
    Ok(Recovered {
        next_offset: outcome.next_offset,
        first_timestamp: first_ts.or(outcome.first_timestamp),
        up_to_date_checkpoint: used_checkpoint && outcome.end == from,
    })
}

/// Restores the idempotent-producer table: the snapshot stored with the
/// last recovery point, then every batch header written after it (in its
/// segment and all later ones). Without a usable snapshot (a data directory
/// from before snapshots, or a damaged file) every segment is replayed.
pub(super) fn restore_producers(
    dir: &Path,
    segments: &[Arc<Segment>],
) -> Result<ProducerTable, LogError> {
    let mut table = ProducerTable::new();
    let mut from = (0, 0);
    match ProducerSnapshot::load(dir) {
        Some(snapshot) => {
            match segments
                .iter()
                .position(|s| s.base_offset == snapshot.segment_base)
            {
                Some(i) if snapshot.position <= segments[i].size() => {
                    table = snapshot.table;
                    from = (i, snapshot.position);
                }
                _ => tracing::warn!(
                    dir = %dir.display(),
                    "producer state names a position no longer in the log; replaying the whole log"
                ),
            }
        }
        None if segments.iter().any(|s| s.size() > 0) => {
            tracing::info!(dir = %dir.display(), "no producer state; replaying the batch headers of the whole log");
        }
        None => {}
    }
    let (first, mut position) = from;
    for segment in &segments[first..] {
        replay_headers(segment, position, &mut table)?;
        position = 0;
    }
    Ok(table)
}

/// Records in `table` every batch of `segment` from `position` on, reading
/// only the batch headers.
fn replay_headers(
    segment: &Segment,
    mut position: u64,
    table: &mut ProducerTable,
) -> Result<(), LogError> {
    use sluice_protocol::batch::{BatchHeader, HEADER_LEN};
    let size = segment.size();
    while position + HEADER_LEN as u64 <= size {
        let bytes = segment.read_at(position, HEADER_LEN)?;
        let header = BatchHeader::parse(&bytes)?;
        table.record(&header, header.base_offset);
        position += header.total_len() as u64;
    }
    Ok(())
}
