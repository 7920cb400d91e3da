//! One partition: an ordered run of segments, one writer, many readers.
//!
//! Appends take the writer lock only to assign offsets and write to the page
//! cache. Under `sync` durability the appender then waits for an fdatasync
//! that covers its batch; whichever waiting appender gets the sync lock first
//! syncs for everyone written so far (group commit), so N concurrent
//! appenders share about one fsync per round instead of paying N.
//!
//! Readers never take the writer lock: they see batches below the high
//! watermark — the durable end under `sync`, the written end otherwise — so
//! nothing a consumer reads can vanish in a crash that the producer was told
//! survived.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, PoisonError};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use parking_lot::{Mutex, RwLock};
use sluice_protocol::batch::{BatchView, set_base_offset, set_log_append_time};

use super::cache::TailCache;
use super::checkpoint::Checkpoint;
use super::index::{Index, OffsetEntry, TimeEntry};
use super::producers::{ProducerSnapshot, ProducerTable, SequenceCheck};
use super::segment::{Indexes, Segment, parse_log_file_name};
use super::{Durability, LogError, LogOptions, TimestampPolicy, TopicConfig};
use crate::clock::Clock;

/// Where an append landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    pub base_offset: u64,
    pub last_offset: u64,
    /// The broker's timestamp for the batch when the topic uses log-append time.
    pub log_append_time: Option<i64>,
    /// The batch was a producer's retry of one already written: nothing was
    /// appended and the offsets are the original batch's.
    pub duplicate: bool,
}

/// A batch written to the page cache but maybe not yet durable; see
/// [`Partition::write_batch`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PendingAppend {
    pub info: AppendInfo,
    /// Offset after the batch: durable once `durable_offset()` reaches it.
    next_offset: u64,
}

/// Batches returned by a read, each chunk holding one or more whole batches.
#[derive(Debug, Clone, Default)]
pub struct ReadResult {
    pub chunks: Vec<Bytes>,
    /// The next offset a consumer can read (exclusive end of committed data).
    pub high_watermark: u64,
    pub log_start_offset: u64,
}

impl ReadResult {
    pub fn is_empty(&self) -> bool {
        self.chunks.iter().all(|c| c.is_empty())
    }

    pub fn byte_len(&self) -> usize {
        self.chunks.iter().map(Bytes::len).sum()
    }
}

/// What a retention pass removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionOutcome {
    pub segments_deleted: usize,
    pub bytes_deleted: u64,
}

/// The longest a group-commit leader waits for followers before syncing.
const MAX_LINGER: Duration = Duration::from_micros(500);

/// The previous group-commit round, as the next leader needs it.
#[derive(Debug, Default)]
struct Round {
    /// Batches written when the round's leader took its snapshot.
    batches_at_capture: u64,
    /// Batches the round's sync covered.
    size: u64,
    sync_time: Duration,
}

#[derive(Debug)]
struct Writer {
    active: Arc<Segment>,
    next_offset: u64,
    /// Broker time of the active segment's first append; drives roll by age.
    /// (After a crash without a checkpoint, the first batch's timestamp.)
    first_timestamp: Option<i64>,
    /// Idempotent producers' recent batches (dedup and sequence checks).
    producers: ProducerTable,
}

#[derive(Debug)]
pub struct Partition {
    topic: Arc<str>,
    id: u32,
    dir: PathBuf,
    config: TopicConfig,
    clock: Arc<dyn Clock>,
    segments: RwLock<Vec<Arc<Segment>>>,
    writer: Mutex<Writer>,
    /// Whether a group-commit leader is syncing right now.
    /// (std's condvar wakes every follower at once; parking_lot's requeues
    /// them to wake one by one, which serialises a round's wake-ups.)
    sync_state: std::sync::Mutex<bool>,
    sync_done: Condvar,
    /// Appenders between entering `append` and finishing their write.
    writers_in_flight: AtomicUsize,
    /// Batches written so far (drives the group-commit linger).
    batches_written: AtomicU64,
    /// Segments rolled and not yet synced (a roll never syncs: it runs
    /// under the writer lock, on the appender's thread).
    unsynced_closed: Mutex<Vec<Arc<Segment>>>,
    /// Held while closed segments are synced, so whoever returns from
    /// [`Self::sync_closed_segments`] knows every earlier roll is durable.
    closed_sync: Mutex<()>,
    /// A segment file was created since the directory was last synced.
    dir_unsynced: AtomicBool,
    /// The last group-commit round; held by the leader while it syncs.
    round: Mutex<Round>,
    /// fdatasync calls made so far (appends per sync shows group commit at work).
    syncs: AtomicU64,
    /// Serialises checkpoints; holds (segment base, position) of the last.
    checkpoint_lock: Mutex<Option<(u64, u64)>>,
    /// Exclusive end of what readers see: `durable` under `sync`, the
    /// written end otherwise.
    high_watermark: AtomicU64,
    /// Exclusive end of what is known to be synced.
    durable: AtomicU64,
    log_start: AtomicU64,
    cache: TailCache,
    /// Set after a failed fsync: appends are refused until a restart.
    failed: AtomicBool,
    /// Publishes the high watermark to long-polling readers.
    watermark_tx: tokio::sync::watch::Sender<u64>,
}

impl Partition {
    /// Opens (or creates) the partition in `dir`, recovering the tail of its
    /// active segment. Cost depends on what was written since the last
    /// checkpoint, not on the size of the log.
    pub(crate) fn open(
        topic: Arc<str>,
        id: u32,
        dir: &Path,
        config: TopicConfig,
        options: &LogOptions,
        clock: Arc<dyn Clock>,
    ) -> Result<Partition, LogError> {
        fs::create_dir_all(dir).map_err(|e| LogError::io(dir, e))?;
        let mut bases = Vec::new();
        for entry in fs::read_dir(dir).map_err(|e| LogError::io(dir, e))? {
            let entry = entry.map_err(|e| LogError::io(dir, e))?;
            if let Some(base) = entry.file_name().to_str().and_then(parse_log_file_name) {
                bases.push(base);
            }
        }
        bases.sort_unstable();
        let interval = config.index_interval_bytes;
        let checkpoint = Checkpoint::load(dir);

        let mut segments = Vec::with_capacity(bases.len().max(1));
        for base in bases.iter().take(bases.len().saturating_sub(1)) {
            segments.push(Arc::new(Segment::existing(dir, *base)?));
        }
        let (active, recovered) = match bases.last() {
            None => {
                let base = checkpoint.map_or(0, |c| c.next_offset);
                let seg = Segment::create(dir, base)?;
                sync_dir(dir)?;
                let recovered = Recovered {
                    next_offset: base,
                    first_timestamp: None,
                    up_to_date_checkpoint: false,
                };
                (seg, recovered)
            }
            Some(&base) => {
                let seg = Segment::existing(dir, base)?;
                let recovered = recover_active(&seg, checkpoint, interval)?;
                (seg, recovered)
            }
        };
        let next_offset = recovered.next_offset;
        let last_checkpoint = recovered
            .up_to_date_checkpoint
            .then(|| (active.base_offset, active.size()));
        let active = Arc::new(active);
        segments.push(active.clone());
        let producers = restore_producers(dir, &segments)?;
        let log_start = segments[0].base_offset;
        let partition = Partition {
            topic,
            id,
            dir: dir.to_path_buf(),
            config,
            clock,
            segments: RwLock::new(segments),
            writer: Mutex::new(Writer {
                active,
                next_offset,
                first_timestamp: recovered.first_timestamp,
                producers,
            }),
            sync_state: std::sync::Mutex::new(false),
            sync_done: Condvar::new(),
            writers_in_flight: AtomicUsize::new(0),
            syncs: AtomicU64::new(0),
            batches_written: AtomicU64::new(0),
            round: Mutex::new(Round::default()),
            unsynced_closed: Mutex::new(Vec::new()),
            closed_sync: Mutex::new(()),
            dir_unsynced: AtomicBool::new(false),
            checkpoint_lock: Mutex::new(last_checkpoint),
            high_watermark: AtomicU64::new(next_offset),
            durable: AtomicU64::new(next_offset),
            log_start: AtomicU64::new(log_start),
            cache: TailCache::new(options.tail_cache_bytes),
            failed: AtomicBool::new(false),
            watermark_tx: tokio::sync::watch::Sender::new(next_offset),
        };
        partition.checkpoint()?;
        Ok(partition)
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    pub fn id(&self) -> u32 {
        self.id
    }

    pub fn config(&self) -> &TopicConfig {
        &self.config
    }

    /// Exclusive end of what consumers may read.
    pub fn high_watermark(&self) -> u64 {
        self.high_watermark.load(Ordering::Acquire)
    }

    /// Exclusive end of what is known to be on disk.
    pub fn durable_offset(&self) -> u64 {
        self.durable.load(Ordering::Acquire)
    }

    /// First offset still stored.
    pub fn log_start_offset(&self) -> u64 {
        self.log_start.load(Ordering::Acquire)
    }

    /// Exclusive end of what has been written (durable or not).
    pub fn log_end_offset(&self) -> u64 {
        self.writer.lock().next_offset
    }

    /// Bytes on disk across all segments.
    pub fn size_bytes(&self) -> u64 {
        self.segments.read().iter().map(|s| s.size()).sum()
    }

    pub fn segment_count(&self) -> usize {
        self.segments.read().len()
    }

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
    fn publish_high_watermark(&self, end: u64) {
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
    fn sync_closed_segments(&self) -> Result<(), LogError> {
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
    fn roll(&self, w: &mut Writer) -> Result<(), LogError> {
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

    /// Reads whole batches starting with the one that contains `offset`, up
    /// to about `max_bytes` (always at least one batch when any is readable).
    /// The caller skips records before `offset` in the first batch.
    pub fn read(&self, offset: u64, max_bytes: usize) -> Result<ReadResult, LogError> {
        let hw = self.high_watermark();
        let start = self.log_start_offset();
        if offset < start || offset > hw {
            return Err(LogError::OffsetOutOfRange {
                offset,
                start,
                end: hw,
            });
        }
        let mut result = ReadResult {
            chunks: Vec::new(),
            high_watermark: hw,
            log_start_offset: start,
        };
        if offset == hw {
            return Ok(result);
        }
        if let Some(chunks) = self.cache.read(offset, hw, max_bytes) {
            result.chunks = chunks;
            return Ok(result);
        }
        let segments = {
            let segs = self.segments.read();
            let first = segs
                .partition_point(|s| s.base_offset <= offset)
                .saturating_sub(1);
            segs[first..].to_vec()
        };
        let mut idx = 0;
        while idx < segments.len() {
            let seg = &segments[idx];
            let end = segments.get(idx + 1).map_or(u64::MAX, |s| s.base_offset);
            let from = offset.max(seg.base_offset);
            let interval = self.config.index_interval_bytes;
            if let Some(pos) = seg.find_batch(from, end, seg.size(), interval)? {
                let data = seg.read_batches(pos, hw, max_bytes)?;
                if !data.is_empty() {
                    result.chunks.push(Bytes::from(data));
                    return Ok(result);
                }
            }
            idx += 1;
        }
        Ok(result)
    }

    /// The earliest offset whose record timestamp is at or after `timestamp`,
    /// or `None` if every committed record is older.
    pub fn offset_for_timestamp(&self, timestamp: i64) -> Result<Option<u64>, LogError> {
        let hw = self.high_watermark();
        let segments = self.segments.read().clone();
        let interval = self.config.index_interval_bytes;
        for (i, seg) in segments.iter().enumerate() {
            let end = segments.get(i + 1).map_or(u64::MAX, |s| s.base_offset);
            if seg.base_offset >= hw {
                break;
            }
            if seg.size() == 0 || seg.max_timestamp(end, interval)? < timestamp {
                continue;
            }
            let start = seg.with_indexes(end, interval, |ix| {
                ix.times
                    .last_older_than(timestamp)
                    .and_then(|t| ix.offsets.exact(t.rel_offset))
                    .map_or(0, |e| e.position as u64)
            })?;
            let mut pos = start;
            while pos < seg.size() {
                let data = seg.read_batches(pos, hw, 1)?;
                if data.is_empty() {
                    break;
                }
                let view = BatchView::parse(&data)?;
                if view.header().max_timestamp >= timestamp {
                    for record in view.records() {
                        let record = record?;
                        if record.timestamp >= timestamp {
                            return Ok(Some(record.offset));
                        }
                    }
                }
                pos += data.len() as u64;
            }
        }
        Ok(None)
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

    /// Flushes and checkpoints, so the next open scans nothing.
    pub fn close(&self) -> Result<(), LogError> {
        if self.failed.load(Ordering::Acquire) {
            return Ok(());
        }
        self.flush()?;
        self.checkpoint()
    }
}

/// The state of an active segment after recovery.
#[derive(Debug)]
struct Recovered {
    next_offset: u64,
    first_timestamp: Option<i64>,
    /// The checkpoint already describes the segment exactly (clean shutdown).
    up_to_date_checkpoint: bool,
}

/// Rebuilds the active segment's state after open: trusts what the
/// checkpoint vouches for and scans (with CRCs) only what came after,
/// cutting off a torn tail.
fn recover_active(
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
fn restore_producers(dir: &Path, segments: &[Arc<Segment>]) -> Result<ProducerTable, LogError> {
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

/// Locks a std mutex whose data stays valid even if a holder panicked.
fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// fsyncs a directory so a created or renamed file's entry survives power loss.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), LogError> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| LogError::io(dir, e))
}
