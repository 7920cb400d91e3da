//! The broker's storage opened from one data directory: the metadata store
//! (which topics exist, with what settings — the [`catalog`] — and every
//! subsystem's own tables) and the log (the topics' data).
//!
//! ```text
//! <data>/meta/   RocksDB: topic definitions, group offsets, …
//! <data>/log/    one directory per topic, one per partition
//! ```
//!
//! Topic changes go to the metadata store first and the log second. A crash
//! between the two leaves either a topic whose directories `open` creates,
//! or directories of a deleted topic that are left in place and reported
//! (data is never deleted because metadata is missing).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub mod catalog;

use sluice_log::clock::Clock;
use sluice_log::{Log, LogError, LogOptions, Topic, TopicConfig, validate_topic_name};
use sluice_meta::{Keyspace, MetaError, MetaStore};

pub use catalog::Catalog;

/// Failures opening or changing storage.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Log(#[from] LogError),
    #[error(transparent)]
    Meta(#[from] MetaError),
}

/// Metadata and log, opened together.
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    meta: Arc<MetaStore>,
    log: Log,
    open_time: Duration,
}

impl Store {
    /// Opens (creating if needed) the store in `dir`, with the catalog's
    /// tables and those the subsystems declare in `keyspaces` (the broker's
    /// are [`crate::keyspaces`]).
    pub fn open(
        dir: &Path,
        options: LogOptions,
        clock: Arc<dyn Clock>,
        keyspaces: &[Keyspace],
    ) -> Result<Store, StoreError> {
        let started = Instant::now();
        let all: Vec<Keyspace> = catalog::KEYSPACES
            .iter()
            .chain(keyspaces)
            .copied()
            .collect();
        let meta = Arc::new(MetaStore::open(&dir.join("meta"), &all)?);
        let topics = meta.list_topics()?;
        let log = Log::open(&dir.join("log"), topics, options, clock)?;
        Ok(Store {
            dir: dir.to_path_buf(),
            meta,
            log,
            open_time: started.elapsed(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn meta(&self) -> &Arc<MetaStore> {
        &self.meta
    }

    pub fn log(&self) -> &Log {
        &self.log
    }

    /// How long `open` took (recovery included).
    pub fn open_time(&self) -> Duration {
        self.open_time
    }

    /// Creates a topic: records it, then creates its partitions.
    pub fn create_topic(&self, name: &str, config: TopicConfig) -> Result<Arc<Topic>, StoreError> {
        validate_topic_name(name)?;
        config.validate().map_err(LogError::InvalidConfig)?;
        if self.meta.get_topic(name)?.is_some() {
            return Err(LogError::TopicExists(name.to_string()).into());
        }
        self.meta.put_topic(name, &config)?;
        Ok(self.log.create_topic(name, config)?)
    }

    /// Deletes a topic (and every group's offsets for it), then its data.
    pub fn delete_topic(&self, name: &str) -> Result<(), StoreError> {
        if self.meta.get_topic(name)?.is_none() {
            return Err(LogError::UnknownTopic(name.to_string()).into());
        }
        self.meta.delete_topic(name)?;
        Ok(self.log.delete_topic(name)?)
    }

    /// Syncs and checkpoints the log and flushes the metadata store's
    /// memtables, so the next open replays neither.
    pub fn close(&self) -> Result<(), StoreError> {
        self.log.close()?;
        Ok(self.meta.flush()?)
    }
}
