//! Recovery points and retention: the background work the log's thread
//! runs per partition.

use super::*;

impl Partition {
    /// Makes everything written so far durable and records a recovery point,
    /// so the next open scans nothing before it. Skips the work when nothing
    /// changed since the last checkpoint.
    pub fn checkpoint(&self) -> Result<(), LogError> {
        let mut last = self.checkpoint_lock.lock();
        let (segment, cp, index_bytes, time_bytes, producers) = {
            let w = self.writer.lock();
            let position = w.active.size();
            if *last == Some((w.active.base_offset, position)) {
                return Ok(());
            }
            let ix = w.active.indexes_mut();
            let cp = Checkpoint {
                segment_base: w.active.base_offset,
                position,
                next_offset: w.next_offset,
                index_entries: ix.offsets.len() as u32,
                time_entries: ix.times.len() as u32,
                max_timestamp: ix.max_timestamp,
                first_timestamp: w.first_timestamp.unwrap_or(i64::MIN),
            };
            let producers = ProducerSnapshot {
                segment_base: w.active.base_offset,
                position,
                table: w.producers.clone(),
            };
            (
                w.active.clone(),
                cp,
                ix.offsets.unpersisted(),
                ix.times.unpersisted(),
                producers,
            )
        };
        // Everything before the recovery point must be durable, including
        // segments rolled without a sync.
        self.sync_closed_segments()?;
        segment.sync()?;
        let base = segment.base_offset;
        let ip = self.dir.join(format!("{base:020}.index"));
        let tp = self.dir.join(format!("{base:020}.timeindex"));
        Index::<OffsetEntry>::write_entries(&ip, index_bytes.0, &index_bytes.1)
            .map_err(|e| LogError::io(&ip, e))?;
        Index::<TimeEntry>::write_entries(&tp, time_bytes.0, &time_bytes.1)
            .map_err(|e| LogError::io(&tp, e))?;
        {
            let mut ix = segment.indexes_mut();
            ix.offsets.mark_persisted(cp.index_entries as usize);
            ix.times.mark_persisted(cp.time_entries as usize);
        }
        // The producer state first: a snapshot newer than the recovery point
        // is still exact (what it covers was synced above), while one older
        // than it only means more headers to replay.
        producers
            .store(&self.dir)
            .map_err(|e| LogError::io(&self.dir, e))?;
        cp.store(&self.dir)
            .map_err(|e| LogError::io(&self.dir, e))?;
        self.durable.fetch_max(cp.next_offset, Ordering::AcqRel);
        self.publish_high_watermark(cp.next_offset);
        *last = Some((cp.segment_base, cp.position));
        Ok(())
    }

    /// Bytes written to the active segment since the last checkpoint.
    pub fn bytes_since_checkpoint(&self) -> u64 {
        let last = *self.checkpoint_lock.lock();
        let w = self.writer.lock();
        match last {
            Some((base, pos)) if base == w.active.base_offset => w.active.size() - pos,
            _ => w.active.size(),
        }
    }

    /// Deletes closed segments past the topic's retention by age and by size
    /// (the active segment is first rolled if it is due by age, so an idle
    /// topic still expires). Whole segments only: a partition may stay above
    /// `retention_bytes` by less than one segment.
    pub fn enforce_retention(&self) -> Result<RetentionOutcome, LogError> {
        let now = self.clock.now_ms();
        {
            let mut w = self.writer.lock();
            let due = w
                .first_timestamp
                .is_some_and(|t| now.saturating_sub(t) >= self.config.segment_ms as i64);
            if due && w.active.size() > 0 {
                self.roll(&mut w)?;
            }
        }
        let segments = self.segments.read().clone();
        let interval = self.config.index_interval_bytes;
        let mut total: u64 = segments.iter().map(|s| s.size()).sum();
        let mut doomed = 0;
        for (i, seg) in segments.iter().enumerate().take(segments.len() - 1) {
            let end = segments[i + 1].base_offset;
            let by_age = match self.config.retention_ms {
                Some(ms) => seg.max_timestamp(end, interval)? < now.saturating_sub(ms as i64),
                None => false,
            };
            let by_size = self
                .config
                .retention_bytes
                .is_some_and(|limit| total - seg.size() >= limit);
            if !(by_age || by_size) {
                break;
            }
            total -= seg.size();
            doomed += 1;
        }
        if doomed == 0 {
            return Ok(RetentionOutcome::default());
        }
        let removed: Vec<Arc<Segment>> = {
            let mut segs = self.segments.write();
            let removed: Vec<_> = segs.drain(..doomed).collect();
            self.log_start.store(segs[0].base_offset, Ordering::Release);
            removed
        };
        let mut outcome = RetentionOutcome::default();
        for seg in removed {
            outcome.segments_deleted += 1;
            outcome.bytes_deleted += seg.size();
            seg.delete_files()
                .map_err(|e| LogError::io(&seg.path(), e))?;
            tracing::info!(topic = %self.topic, partition = self.id, base = seg.base_offset, "retention deleted segment");
        }
        Ok(outcome)
    }
}
