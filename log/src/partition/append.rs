//! The write path: checking and appending a batch under the writer lock,
//! group commit (one fdatasync per round of waiting appenders), and segment
//! rolls, whose fsyncs happen after the writer lock is released.

use super::*;

impl Partition {
    /// Appends one record batch (Kafka v2 layout) as it is, after checking
    /// it. Assigns the base offset (and log-append time when the topic says
    /// so) and returns once the batch is as durable as the topic's policy
    /// requires.
    pub fn append(&self, batch: BytesMut) -> Result<AppendInfo, LogError> {
        let pending = self.write_batch(batch)?;
        self.wait_durable(&pending)?;
        Ok(pending.info)
    }

    /// The first half of [`append`](Self::append): checks the batch, assigns
    /// its offsets and writes it to the page cache, without waiting for the
    /// fsync. Batches are ordered by when this returns, so a caller that
    /// must keep a producer's batches in order calls it in that order and
    /// may then wait for durability concurrently.
    pub fn write_batch(&self, batch: BytesMut) -> Result<PendingAppend, LogError> {
        self.write_checked(batch, false)
    }

    /// [`write_batch`](Self::write_batch) for the broker's own idempotent
    /// writers replaying, after a crash, batches they recorded before
    /// appending them (stamped with their producer id and sequence): the
    /// one mechanism that makes those appends exactly once. `None` when
    /// the log already holds the batch (a retry of a remembered batch, or
    /// one older than them; see [`ProducerTable::check_replay`]).
    pub fn write_replayed(&self, batch: BytesMut) -> Result<Option<PendingAppend>, LogError> {
        match self.write_checked(batch, true) {
            Ok(p) if p.info.duplicate => Ok(None),
            Ok(p) => Ok(Some(p)),
            Err(LogError::AlreadyWritten) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The sequence `producer_id`'s next batch must start with here (for
    /// the broker's own writers, which number their batches from the log).
    pub fn next_sequence(&self, producer_id: i64) -> i32 {
        self.writer.lock().producers.next_sequence(producer_id)
    }

    fn write_checked(&self, batch: BytesMut, replay: bool) -> Result<PendingAppend, LogError> {
        self.writers_in_flight.fetch_add(1, Ordering::AcqRel);
        let written = self.write(batch, replay);
        self.writers_in_flight.fetch_sub(1, Ordering::AcqRel);
        let (info, next_offset) = written?;
        Ok(PendingAppend { info, next_offset })
    }

    /// The second half of [`append`](Self::append): returns once the batch is
    /// as durable as the topic's policy requires (blocks under `sync`).
    pub fn wait_durable(&self, pending: &PendingAppend) -> Result<(), LogError> {
        if self.config.durability == Durability::Sync {
            self.sync_to(pending.next_offset)?;
        }
        Ok(())
    }

    /// Watches the high watermark, for readers that wait for new data.
    pub fn watch_high_watermark(&self) -> tokio::sync::watch::Receiver<u64> {
        self.watermark_tx.subscribe()
    }

    /// Raises the high watermark and wakes readers waiting for it.
    pub(super) fn publish_high_watermark(&self, end: u64) {
        if self.high_watermark.fetch_max(end, Ordering::AcqRel) < end {
            self.watermark_tx.send_if_modified(|hw| {
                let raise = end > *hw;
                if raise {
                    *hw = end;
                }
                raise
            });
        }
    }

    /// Checks and writes one batch; returns where it landed and the offset
    /// after it.
    fn write(&self, batch: BytesMut, replay: bool) -> Result<(AppendInfo, u64), LogError> {
        if self.failed.load(Ordering::Acquire) {
            return Err(self.failed_error());
        }
        let size = batch.len();
        if size > self.config.max_batch_bytes as usize {
            return Err(LogError::BatchTooLarge {
                size,
                max: self.config.max_batch_bytes as usize,
            });
        }
        let view = BatchView::parse(&batch)?;
        if view.as_bytes().len() != size {
            return Err(LogError::InvalidBatch(
                sluice_protocol::batch::BatchError::Malformed("bytes after the end of the batch"),
            ));
        }
        view.validate()?;
        let mut header = *view.header();
        let mut batch = batch;

        {
            let mut w = self.writer.lock();
            let check = if replay {
                w.producers.check_replay(&header)?
            } else {
                w.producers.check(&header)?
            };
            match check {
                SequenceCheck::Append => {}
                SequenceCheck::Duplicate(dup) => {
                    let info = AppendInfo {
                        base_offset: dup.base_offset,
                        last_offset: dup.last_offset,
                        log_append_time: None,
                        duplicate: true,
                    };
                    return Ok((info, dup.last_offset + 1));
                }
                SequenceCheck::AlreadyWritten => return Err(LogError::AlreadyWritten),
            }
            let now = self.clock.now_ms();
            self.maybe_roll(&mut w, size, header.last_offset_delta, now)?;
            header.base_offset = w.next_offset;
            set_base_offset(&mut batch, header.base_offset);
            let log_append_time = match self.config.timestamp {
                TimestampPolicy::LogAppendTime => {
                    set_log_append_time(&mut batch, now);
                    header.max_timestamp = now;
                    Some(now)
                }
                TimestampPolicy::CreateTime => None,
            };
            let position = w.active.append(&batch)?;
            w.active.indexes_mut().on_append(
                w.active.base_offset,
                &header,
                position,
                self.config.index_interval_bytes,
            );
            w.next_offset = header.next_offset();
            w.producers.record(&header, header.base_offset);
            self.batches_written.fetch_add(1, Ordering::Release);
            w.first_timestamp.get_or_insert(now);
            self.cache
                .push(header.base_offset, header.next_offset(), batch.freeze());
            if self.config.durability != Durability::Sync {
                self.publish_high_watermark(w.next_offset);
            }
            let info = AppendInfo {
                base_offset: header.base_offset,
                last_offset: header.last_offset(),
                log_append_time,
                duplicate: false,
            };
            Ok((info, w.next_offset))
        }
    }

    /// Waits until everything before `target` is synced: the group commit.
    ///
    /// If no sync is running, this appender becomes the leader: it syncs
    /// everything written so far, then wakes every waiting follower at once.
    /// Followers whose batches the sync covered return; one of those written
    /// during it leads the next round. Waking all followers together (rather
    /// than handing a mutex from one to the next) keeps the gap between
    /// rounds short, so a round covers every appender that arrived during
    /// the previous fsync.
    fn sync_to(&self, target: u64) -> Result<(), LogError> {
        if self.durable.load(Ordering::Acquire) >= target {
            return Ok(());
        }
        let mut syncing = lock(&self.sync_state);
        loop {
            if self.durable.load(Ordering::Acquire) >= target {
                return Ok(());
            }
            if *syncing {
                syncing = self
                    .sync_done
                    .wait(syncing)
                    .unwrap_or_else(PoisonError::into_inner);
                continue;
            }
            *syncing = true;
            drop(syncing);
            let result = self.sync_active();
            syncing = lock(&self.sync_state);
            *syncing = false;
            self.sync_done.notify_all();
            result?;
        }
    }

    /// Syncs the active segment and publishes what it covers. Called by the
    /// group-commit leader only (never two at once).
    fn sync_active(&self) -> Result<(), LogError> {
        if self.failed.load(Ordering::Acquire) {
            return Err(self.failed_error());
        }
        let mut round = self.round.lock();
        if self.config.durability == Durability::Sync {
            self.linger_for_followers(&round);
        }
        let (segment, written, batches) = {
            let w = self.writer.lock();
            let batches = self.batches_written.load(Ordering::Acquire);
            (w.active.clone(), w.next_offset, batches)
        };
        let started = Instant::now();
        // Segments rolled since the last round hold batches before `written`.
        if let Err(e) = self.sync_closed_segments().and_then(|()| segment.sync()) {
            // After a failed fsync the page cache state is unknown (the
            // "fsyncgate" lesson): refuse further appends until a restart
            // recovers from what is really on disk.
            self.failed.store(true, Ordering::Release);
            tracing::error!(topic = %self.topic, partition = self.id, error = %e, "fsync failed; partition refuses appends");
            return Err(e);
        }
        *round = Round {
            batches_at_capture: batches,
            size: batches - round.batches_at_capture,
            sync_time: started.elapsed(),
        };
        self.syncs.fetch_add(1, Ordering::Relaxed);
        self.durable.fetch_max(written, Ordering::AcqRel);
        self.publish_high_watermark(written);
        Ok(())
    }

    /// Before syncing, gives the appenders the last round covered the CPU to
    /// write their next batches, so this fsync covers them too instead of
    /// making them wait a whole extra round. Waits (yielding) until as many
    /// batches as last round have arrived and no appender is mid-write, for
    /// at most half the last fsync's time. A lone appender never waits: its
    /// own batch is the whole round.
    fn linger_for_followers(&self, round: &Round) {
        let deadline = Instant::now() + (round.sync_time / 2).min(MAX_LINGER);
        loop {
            let arrived = self.batches_written.load(Ordering::Acquire) - round.batches_at_capture;
            let settled = self.writers_in_flight.load(Ordering::Acquire) == 0;
            if (arrived >= round.size && settled) || Instant::now() >= deadline {
                return;
            }
            std::thread::yield_now();
        }
    }

    /// How many fdatasync calls appends and flushes have made; appends per
    /// sync shows how well group commit is batching.
    pub fn sync_count(&self) -> u64 {
        self.syncs.load(Ordering::Relaxed)
    }

    /// Syncs everything written so far (used by the `interval` flusher and on
    /// close; a no-op when nothing is pending).
    pub fn flush(&self) -> Result<(), LogError> {
        let written = self.writer.lock().next_offset;
        self.sync_closed_segments()?;
        self.sync_to(written)
    }

    /// Syncs the directory entries of new segments and the segments rolled
    /// since the last call (see [`Self::roll`]).
    pub(super) fn sync_closed_segments(&self) -> Result<(), LogError> {
        let _serial = self.closed_sync.lock();
        if self.dir_unsynced.swap(false, Ordering::AcqRel)
            && let Err(e) = sync_dir(&self.dir)
        {
            self.dir_unsynced.store(true, Ordering::Release);
            return Err(e);
        }
        let pending = std::mem::take(&mut *self.unsynced_closed.lock());
        for (i, segment) in pending.iter().enumerate() {
            if let Err(e) = segment.sync() {
                self.unsynced_closed
                    .lock()
                    .extend(pending[i..].iter().cloned());
                return Err(e);
            }
        }
        Ok(())
    }

    fn failed_error(&self) -> LogError {
        LogError::Failed {
            topic: self.topic.to_string(),
            partition: self.id,
        }
    }

    fn maybe_roll(
        &self,
        w: &mut Writer,
        incoming: usize,
        last_offset_delta: u32,
        now: i64,
    ) -> Result<(), LogError> {
        let size = w.active.size();
        if size == 0 {
            return Ok(());
        }
        let too_big = size + incoming as u64 > self.config.segment_bytes;
        let too_old = w
            .first_timestamp
            .is_some_and(|t| now.saturating_sub(t) >= self.config.segment_ms as i64);
        let offsets_full =
            w.next_offset + last_offset_delta as u64 - w.active.base_offset >= u32::MAX as u64;
        if too_big || too_old || offsets_full {
            self.roll(w)?;
        }
        Ok(())
    }

    /// Closes the active segment (indexes sealed) and starts a new one.
    ///
    /// Nothing here waits for the disk: this runs under the writer lock on
    /// the appender's thread (a tokio worker for QUIC produce), where an
    /// fsync would stall every other producer of the partition. The old
    /// segment and the directory entry of the new one are synced by the
    /// next group commit (`sync`), flush (`interval`) or checkpoint, each of
    /// which syncs closed segments before it publishes anything as durable.
    pub(super) fn roll(&self, w: &mut Writer) -> Result<(), LogError> {
        let old = w.active.clone();
        {
            let mut ix = old.indexes_mut();
            old.seal_indexes(&mut ix, w.next_offset)?;
        }
        let new = Arc::new(Segment::create(&self.dir, w.next_offset)?);
        self.dir_unsynced.store(true, Ordering::Release);
        self.unsynced_closed.lock().push(old);
        tracing::debug!(topic = %self.topic, partition = self.id, base = w.next_offset, "rolled segment");
        self.segments.write().push(new.clone());
        w.active = new;
        w.first_timestamp = None;
        // No recovery point here: recovery scans an active segment the
        // checkpoint does not name from its start. The maintenance thread
        // checkpoints the new segment once it has grown; only it writes the
        // file (under `checkpoint_lock`).
        Ok(())
    }
}
