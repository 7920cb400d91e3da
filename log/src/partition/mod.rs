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
//!
//! - `append`: the write path, group commit and segment rolls;
//! - `maintenance`: recovery points and retention;
//! - `recovery`: opening after a clean shutdown or a crash.

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

mod append;
mod maintenance;
mod recovery;

use recovery::{Recovered, recover_active, restore_producers};

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

    /// Flushes and checkpoints, so the next open scans nothing.
    pub fn close(&self) -> Result<(), LogError> {
        if self.failed.load(Ordering::Acquire) {
            return Ok(());
        }
        self.flush()?;
        self.checkpoint()
    }
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
