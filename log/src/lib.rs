//! The partitioned append-only log.
//!
//! ```text
//! <data>/log/<topic>/<partition>/
//!     00000000000000000000.log        record batches, byte for byte
//!     00000000000000000000.index      sparse offset -> position
//!     00000000000000000000.timeindex  sparse timestamp -> offset
//!     00000000000000012345.log        next segment, named by its base offset
//!     recovery-point                  how far the active segment is known good
//! ```
//!
//! - [`clock`]: wall-clock time behind a trait, so time-driven logic here
//!   and in the layers above is tested with a clock the test controls;
//! - [`config`]: per-topic settings (partitions, durability, roll, retention);
//! - [`partition`]: appends, group commit, reads, retention for one partition;
//! - `segment`: one `.log` file and its indexes, recovery scans;
//! - `index`: the sparse offset and time indexes;
//! - `checkpoint`: the recovery point that keeps start-up independent of
//!   log size;
//! - `cache`: the in-memory tail cache.
//!
//! [`Log`] owns the topics and a background thread that syncs `interval`
//! topics, writes checkpoints and applies retention. Topic *definitions* are
//! kept by the metadata store; the log is told which topics exist.

pub mod clock;
pub mod config;
pub mod partition;

mod cache;
mod checkpoint;
mod index;
mod producers;
mod segment;

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use sluice_protocol::batch::BatchError;

pub use config::{
    ConfigError, Durability, DurabilityParseError, SetError, TimestampPolicy, TopicConfig,
};
pub use partition::{AppendInfo, Partition, PendingAppend, ReadResult, RetentionOutcome};

use crate::clock::Clock;

/// Everything that can go wrong in the log. Each variant is a distinct,
/// documented condition a client can act on.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("topic {0:?} does not exist")]
    UnknownTopic(String),
    #[error("topic {topic:?} has no partition {partition}")]
    UnknownPartition { topic: String, partition: u32 },
    #[error("topic {0:?} already exists")]
    TopicExists(String),
    #[error("invalid topic name {name:?}: {reason}")]
    InvalidTopicName { name: String, reason: &'static str },
    #[error("invalid topic configuration: {0}")]
    InvalidConfig(#[source] ConfigError),
    #[error("batch of {size} bytes is over the topic's limit of {max} bytes")]
    BatchTooLarge { size: usize, max: usize },
    #[error("invalid record batch: {0}")]
    InvalidBatch(#[from] BatchError),
    #[error("offset {offset} is out of range: the partition holds [{start}, {end})")]
    OffsetOutOfRange { offset: u64, start: u64, end: u64 },
    #[error("corrupt log data in {} at byte {position}: {reason}", path.display())]
    Corrupt {
        path: PathBuf,
        position: u64,
        reason: String,
    },
    #[error(
        "partition {topic}/{partition} stopped accepting appends after a failed fsync; restart to recover"
    )]
    Failed { topic: String, partition: u32 },
    #[error(
        "producer {producer_id}: batch sequence {got} does not follow the last one written (expected {expected})"
    )]
    OutOfOrderSequence {
        producer_id: i64,
        expected: i32,
        got: i32,
    },
    /// Only from [`Partition::write_replayed`], which turns it into `None`.
    #[error("the batch is already in the log (replayed by the broker's own writer)")]
    AlreadyWritten,
    #[error("producer {producer_id}: epoch {epoch} is fenced by newer epoch {current}")]
    ProducerFenced {
        producer_id: i64,
        epoch: i16,
        current: i16,
    },
    #[error("I/O error on {}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
}

impl LogError {
    pub(crate) fn io(path: &Path, source: io::Error) -> Self {
        LogError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Settings of the log as a whole (per-topic settings are in [`TopicConfig`]).
#[derive(Debug, Clone)]
pub struct LogOptions {
    /// Newest bytes per partition kept in memory for readers that keep up.
    pub tail_cache_bytes: usize,
    /// Write a recovery point after this many new bytes in a partition; a
    /// crash re-scans at most about this much per partition on open.
    pub checkpoint_bytes: u64,
    /// How often the background thread looks for work.
    pub maintenance_tick: Duration,
    /// How often retention runs.
    pub retention_check: Duration,
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions {
            tail_cache_bytes: 4 << 20,
            checkpoint_bytes: 16 << 20,
            maintenance_tick: Duration::from_millis(10),
            retention_check: Duration::from_secs(60),
        }
    }
}

/// A topic and its partitions.
#[derive(Debug)]
pub struct Topic {
    name: Arc<str>,
    config: TopicConfig,
    partitions: Vec<Arc<Partition>>,
}

impl Topic {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn config(&self) -> &TopicConfig {
        &self.config
    }

    pub fn partitions(&self) -> &[Arc<Partition>] {
        &self.partitions
    }

    pub fn partition(&self, id: u32) -> Result<&Arc<Partition>, LogError> {
        self.partitions
            .get(id as usize)
            .ok_or_else(|| LogError::UnknownPartition {
                topic: self.name.to_string(),
                partition: id,
            })
    }
}

/// Checks a topic name: 1–249 characters of `A-Z a-z 0-9 . _ -`, not `.`
/// or `..` (it names a directory).
pub fn validate_topic_name(name: &str) -> Result<(), LogError> {
    let bad = |reason| {
        Err(LogError::InvalidTopicName {
            name: name.to_string(),
            reason,
        })
    };
    if name.is_empty() || name.len() > 249 {
        return bad("must be 1 to 249 characters");
    }
    if name == "." || name == ".." {
        return bad("must not be '.' or '..'");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
    {
        return bad("may contain only ASCII letters, digits, '.', '_' and '-'");
    }
    Ok(())
}

#[derive(Debug)]
struct Shared {
    dir: PathBuf,
    options: LogOptions,
    clock: Arc<dyn Clock>,
    topics: RwLock<HashMap<String, Arc<Topic>>>,
}

/// The log: topics, their partitions, and background maintenance.
#[derive(Debug)]
pub struct Log {
    shared: Arc<Shared>,
    stop: Mutex<Option<(mpsc::Sender<()>, JoinHandle<()>)>>,
}

impl Log {
    /// Opens the log in `dir` with the given topics (from the metadata
    /// store). Directories of topics not listed are left alone and reported,
    /// never deleted: losing metadata must not destroy data.
    pub fn open(
        dir: &Path,
        topics: impl IntoIterator<Item = (String, TopicConfig)>,
        options: LogOptions,
        clock: Arc<dyn Clock>,
    ) -> Result<Log, LogError> {
        fs::create_dir_all(dir).map_err(|e| LogError::io(dir, e))?;
        let shared = Arc::new(Shared {
            dir: dir.to_path_buf(),
            options,
            clock,
            topics: RwLock::new(HashMap::new()),
        });
        for (name, config) in topics {
            let topic = open_topic(&shared, &name, config)?;
            shared.topics.write().insert(name, Arc::new(topic));
        }
        for entry in fs::read_dir(dir).map_err(|e| LogError::io(dir, e))? {
            let entry = entry.map_err(|e| LogError::io(dir, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(".deleted-") {
                // A topic deletion interrupted by a crash: finish it.
                fs::remove_dir_all(entry.path()).map_err(|e| LogError::io(&entry.path(), e))?;
            } else if !shared.topics.read().contains_key(&name) {
                tracing::warn!(dir = %entry.path().display(), "log directory of an unknown topic left in place");
            }
        }
        let (tx, rx) = mpsc::channel();
        let bg = shared.clone();
        let handle = std::thread::Builder::new()
            .name("sluice-log-maintenance".into())
            .spawn(move || maintenance_loop(&bg, &rx))
            .map_err(|e| LogError::io(dir, e))?;
        Ok(Log {
            shared,
            stop: Mutex::new(Some((tx, handle))),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// Creates a topic's partition directories.
    pub fn create_topic(&self, name: &str, config: TopicConfig) -> Result<Arc<Topic>, LogError> {
        validate_topic_name(name)?;
        config.validate().map_err(LogError::InvalidConfig)?;
        let mut topics = self.shared.topics.write();
        if topics.contains_key(name) {
            return Err(LogError::TopicExists(name.to_string()));
        }
        let dir = self.shared.dir.join(name);
        if dir.exists() {
            // Left over from a topic deleted before its files were removed.
            fs::remove_dir_all(&dir).map_err(|e| LogError::io(&dir, e))?;
        }
        let topic = Arc::new(open_topic(&self.shared, name, config)?);
        partition::sync_dir(&self.shared.dir)?;
        topics.insert(name.to_string(), topic.clone());
        Ok(topic)
    }

    /// Removes a topic and its files.
    pub fn delete_topic(&self, name: &str) -> Result<(), LogError> {
        let topic = self
            .shared
            .topics
            .write()
            .remove(name)
            .ok_or_else(|| LogError::UnknownTopic(name.to_string()))?;
        drop(topic);
        let dir = self.shared.dir.join(name);
        let doomed = self.shared.dir.join(format!(".deleted-{name}"));
        fs::rename(&dir, &doomed).map_err(|e| LogError::io(&dir, e))?;
        fs::remove_dir_all(&doomed).map_err(|e| LogError::io(&doomed, e))
    }

    pub fn topic(&self, name: &str) -> Result<Arc<Topic>, LogError> {
        self.shared
            .topics
            .read()
            .get(name)
            .cloned()
            .ok_or_else(|| LogError::UnknownTopic(name.to_string()))
    }

    pub fn partition(&self, topic: &str, partition: u32) -> Result<Arc<Partition>, LogError> {
        self.topic(topic)?.partition(partition).cloned()
    }

    /// All topics, sorted by name.
    pub fn topics(&self) -> Vec<Arc<Topic>> {
        let mut all: Vec<_> = self.shared.topics.read().values().cloned().collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    /// Applies retention to every partition now.
    pub fn enforce_retention(&self) -> Result<RetentionOutcome, LogError> {
        let mut total = RetentionOutcome::default();
        for p in all_partitions(&self.shared) {
            let o = p.enforce_retention()?;
            total.segments_deleted += o.segments_deleted;
            total.bytes_deleted += o.bytes_deleted;
        }
        Ok(total)
    }

    /// Stops maintenance, then syncs and checkpoints every partition so the
    /// next open scans nothing.
    pub fn close(&self) -> Result<(), LogError> {
        self.stop_maintenance();
        for p in all_partitions(&self.shared) {
            p.close()?;
        }
        Ok(())
    }

    /// Drops the log the way `kill -9` would: no flush, no checkpoint (the
    /// page cache keeps what was written). For benchmarks and tests of
    /// recovery.
    pub fn simulate_crash(self) {
        self.stop_maintenance();
        self.shared.topics.write().clear();
        std::mem::forget(self);
    }

    fn stop_maintenance(&self) {
        if let Some((tx, handle)) = self.stop.lock().take() {
            let _ = tx.send(());
            let _ = handle.join();
        }
    }
}

impl Drop for Log {
    fn drop(&mut self) {
        if let Err(e) = self.close() {
            tracing::error!(error = %e, "closing the log failed");
        }
    }
}

fn open_topic(shared: &Shared, name: &str, config: TopicConfig) -> Result<Topic, LogError> {
    let name: Arc<str> = Arc::from(name);
    let mut partitions = Vec::with_capacity(config.partitions as usize);
    for id in 0..config.partitions {
        let dir = shared.dir.join(&*name).join(id.to_string());
        partitions.push(Arc::new(Partition::open(
            name.clone(),
            id,
            &dir,
            config.clone(),
            &shared.options,
            shared.clock.clone(),
        )?));
    }
    Ok(Topic {
        name,
        config,
        partitions,
    })
}

fn all_partitions(shared: &Shared) -> Vec<Arc<Partition>> {
    shared
        .topics
        .read()
        .values()
        .flat_map(|t| t.partitions.iter().cloned())
        .collect()
}

/// Syncs `interval` partitions when due, writes checkpoints after
/// `checkpoint_bytes` of new data, and runs retention. Real time drives only
/// *when* this runs; what retention deletes depends on the log's clock.
fn maintenance_loop(shared: &Shared, stop: &mpsc::Receiver<()>) {
    let mut last_flush: HashMap<(Arc<str>, u32), Instant> = HashMap::new();
    let mut last_retention = Instant::now();
    loop {
        match stop.recv_timeout(shared.options.maintenance_tick) {
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            _ => return,
        }
        let now = Instant::now();
        for p in all_partitions(shared) {
            if let Durability::Interval(ms) = p.config().durability {
                let key = (Arc::from(p.topic()), p.id());
                let due = last_flush
                    .get(&key)
                    .is_none_or(|t| now.duration_since(*t) >= Duration::from_millis(ms));
                if due {
                    if let Err(e) = p.flush() {
                        tracing::error!(topic = p.topic(), partition = p.id(), error = %e, "interval flush failed");
                    }
                    last_flush.insert(key, now);
                }
            }
            if p.bytes_since_checkpoint() >= shared.options.checkpoint_bytes
                && let Err(e) = p.checkpoint()
            {
                tracing::error!(topic = p.topic(), partition = p.id(), error = %e, "checkpoint failed");
            }
        }
        if now.duration_since(last_retention) >= shared.options.retention_check {
            last_retention = now;
            for p in all_partitions(shared) {
                if let Err(e) = p.enforce_retention() {
                    tracing::error!(topic = p.topic(), partition = p.id(), error = %e, "retention failed");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
