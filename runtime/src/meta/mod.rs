//! The metadata store: everything the broker must remember besides the log
//! itself, in one RocksDB instance.
//!
//! One instance, several column families, so that a change touching several
//! kinds of metadata (deleting a topic and every group's offsets for it) is
//! one atomic `WriteBatch`, and each kind can be scanned on its own.
//!
//! Column families (names are the `CF_*` constants; byte layouts are
//! documented in [`keys`]):
//!
//! - `topics`: topic name → storage settings (`TopicConfig`).
//! - `group_offsets`: (group, topic, partition) → the group's committed
//!   offset, keyed so that one group's offsets are one contiguous prefix.
//! - `cluster`: broker-wide counters (the next idempotent-producer id).
//!
//! Later features add their own families (function registry, function kv
//! state, delay queue, delay ids, transactions, producer state): add a
//! `CF_*` constant and list it in [`COLUMN_FAMILIES`]; existing databases get
//! the new family created on their next open.
//!
//! Every call here blocks on disk I/O (writes wait for an fsync), so async
//! code goes through [`MetaStore::call`], which runs them on tokio's blocking
//! pool instead of a worker thread.

mod error;
pub mod keys;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rocksdb::{
    ColumnFamily, ColumnFamilyDescriptor, DB, DBCompressionType, DBIteratorWithThreadMode,
    IteratorMode, Options, PrefixRange, ReadOptions, WriteBatch, WriteOptions,
};

pub use error::MetaError;

use crate::log::TopicConfig;

/// Topic name → topic settings.
pub const CF_TOPICS: &str = "topics";

/// (group, topic, partition) → committed offset.
pub const CF_GROUP_OFFSETS: &str = "group_offsets";

/// Every column family this build uses; [`MetaStore::open`] creates the
/// missing ones.
pub const COLUMN_FAMILIES: &[&str] = &[
    CF_TOPICS,
    CF_GROUP_OFFSETS,
    CF_CLUSTER,
    crate::groups::CF_GROUPS,
    crate::sched::CF_DELAYS,
    crate::sched::CF_DELAY_IDS,
    crate::sched::CF_DELAY_TOPICS,
    crate::sched::CF_DELAY_COUNTS,
    crate::sched::CF_DELAY_STATE,
    crate::functions::CF_FUNCTIONS,
    crate::functions::CF_FUNCTION_KV,
    crate::functions::CF_FUNCTION_STATE,
];

/// Write-ahead log size past which RocksDB flushes memtables.
const MAX_TOTAL_WAL_BYTES: u64 = 64 << 20;

/// Broker-wide counters: `next_producer_id` → u64 big-endian.
pub const CF_CLUSTER: &str = "cluster";
const NEXT_PRODUCER_ID: &[u8] = b"next_producer_id";

/// Whether a metadata write waits for its fsync.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Survives power loss once the call returns.
    Synced,
    /// Survives a crash of the process, not of the machine.
    Unsynced,
}

/// The broker's metadata: topics and consumer-group offsets (more to come).
///
/// All methods are synchronous and may block on disk; from async code use
/// [`MetaStore::call`]. The store is `Send + Sync` and meant to be shared as
/// `Arc<MetaStore>`.
///
/// Every write is one `WriteBatch` written with `sync = true`, so it is
/// atomic and, once the call returns, survives kill -9 and power loss.
/// Read-modify-write sequences across calls are not atomic: callers that need
/// that (a group coordinator committing while the group is deleted) serialise
/// such operations themselves.
pub struct MetaStore {
    db: DB,
    path: PathBuf,
    /// Write options for every write. `sync` makes RocksDB fsync its WAL
    /// before the write returns. Without it a write acknowledged to a client
    /// (a created topic, a committed offset) could vanish in a power loss:
    /// a lost topic loses its data, a lost offset commit makes consumers
    /// re-read messages they have already processed. Metadata writes are rare
    /// next to appends, and offset commits are batched per group, so the
    /// fsync per write is affordable; correctness first.
    sync_write: WriteOptions,
    /// For writes that may be lost in a power loss (see
    /// [`MetaStore::commit_offsets_with`]).
    unsynced_write: WriteOptions,
    /// Serialises producer-id allocation (a read-modify-write).
    producer_ids: parking_lot::Mutex<()>,
}

impl fmt::Debug for MetaStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MetaStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// Options shared by the database and every column family. LZ4 because
/// metadata is small, JSON-heavy and read often: it compresses well at a
/// decompression cost that does not show.
fn base_options() -> Options {
    let mut opts = Options::default();
    opts.set_compression_type(DBCompressionType::Lz4);
    opts
}

impl MetaStore {
    /// Opens the metadata database at `path`, creating it and any missing
    /// column family.
    ///
    /// Column families found on disk that this build does not know (written
    /// by a newer broker) are opened too and left untouched: RocksDB refuses
    /// to open a database without all of its families, and a downgrade should
    /// not leave the broker unable to start.
    pub fn open(path: &Path) -> Result<MetaStore, MetaError> {
        let mut opts = base_options();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        // Bounds what an open after a crash replays: once the write-ahead
        // log passes this size the oldest memtables are flushed. Keeps a
        // restart with a million pending delayed messages under a second.
        opts.set_max_total_wal_size(MAX_TOTAL_WAL_BYTES);

        let mut names: Vec<String> = COLUMN_FAMILIES.iter().map(|s| s.to_string()).collect();
        // `CURRENT` names the live manifest; without it there is no database
        // yet and nothing to list.
        if path.join("CURRENT").exists() {
            for name in DB::list_cf(&opts, path)? {
                if !names.contains(&name) {
                    if name != rocksdb::DEFAULT_COLUMN_FAMILY_NAME {
                        tracing::warn!(
                            path = %path.display(),
                            column_family = %name,
                            "metadata store has a column family this broker does not know; leaving it untouched"
                        );
                    }
                    names.push(name);
                }
            }
        }
        let descriptors = names.into_iter().map(|name| {
            let mut cf_opts = base_options();
            crate::sched::tune_column_family(&name, &mut cf_opts);
            ColumnFamilyDescriptor::new(name, cf_opts)
        });
        let db = DB::open_cf_descriptors(&opts, path, descriptors)?;

        let mut sync_write = WriteOptions::default();
        sync_write.set_sync(true);

        let store = MetaStore {
            db,
            path: path.to_path_buf(),
            sync_write,
            unsynced_write: WriteOptions::default(),
            producer_ids: parking_lot::Mutex::new(()),
        };
        // Fail at open, not at the first request, if a family is missing.
        for &name in COLUMN_FAMILIES {
            store.cf(name)?;
        }
        tracing::debug!(path = %path.display(), "opened metadata store");
        Ok(store)
    }

    /// Where the database lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs blocking store calls on tokio's blocking pool, so that an fsync
    /// or a compaction stall never holds up an async worker thread (and with
    /// it every connection scheduled there).
    ///
    /// `f` gets the store and may make several calls. A panic in `f` is
    /// reported as [`MetaError::TaskFailed`] rather than propagated.
    pub async fn call<T, F>(self: &Arc<Self>, f: F) -> Result<T, MetaError>
    where
        F: FnOnce(&MetaStore) -> Result<T, MetaError> + Send + 'static,
        T: Send + 'static,
    {
        let store = Arc::clone(self);
        match tokio::task::spawn_blocking(move || f(&store)).await {
            Ok(result) => result,
            Err(e) if e.is_panic() => {
                let payload = e.into_panic();
                let message = payload
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "non-string panic payload".to_owned());
                Err(MetaError::TaskFailed(format!(
                    "metadata call panicked: {message}"
                )))
            }
            Err(e) => Err(MetaError::TaskFailed(format!(
                "metadata call did not finish: {e}"
            ))),
        }
    }

    /// Flushes every column family's memtable to disk (on shutdown), so
    /// the next open has no write-ahead log to replay.
    pub fn flush(&self) -> Result<(), MetaError> {
        for name in COLUMN_FAMILIES {
            self.db.flush_cf(self.cf(name)?)?;
        }
        Ok(())
    }

    /// The database itself, for modules that keep their own column families
    /// here (the scheduler) so their writes can share a `WriteBatch` with the
    /// rest of the metadata.
    pub(crate) fn db(&self) -> &DB {
        &self.db
    }

    /// The options every durable write uses (`sync = true`).
    pub(crate) fn sync_write_options(&self) -> &WriteOptions {
        &self.sync_write
    }

    pub(crate) fn cf(&self, name: &'static str) -> Result<&ColumnFamily, MetaError> {
        self.db
            .cf_handle(name)
            .ok_or(MetaError::MissingColumnFamily(name))
    }

    /// Every key-value pair of `cf` whose key starts with `prefix`, in key
    /// order. The bound is set in the read options so RocksDB stops at the
    /// end of the prefix instead of us reading one key too far.
    fn scan_prefix<'a>(
        &'a self,
        cf: &'a ColumnFamily,
        prefix: &[u8],
    ) -> DBIteratorWithThreadMode<'a, DB> {
        let mut read = ReadOptions::default();
        read.set_iterate_range(PrefixRange(prefix));
        self.db.iterator_cf_opt(cf, read, IteratorMode::Start)
    }

    // ----------------------------------------------------------- cluster ---

    /// Hands out a producer id never handed out before by this data
    /// directory (the counter is written with a synced write first).
    pub fn allocate_producer_id(&self) -> Result<i64, MetaError> {
        let _serial = self.producer_ids.lock();
        let cf = self.cf(CF_CLUSTER)?;
        let next = match self.db.get_pinned_cf(cf, NEXT_PRODUCER_ID)? {
            Some(v) if v.len() == 8 => u64::from_be_bytes(v[..].try_into().unwrap_or_default()),
            Some(_) => {
                return Err(MetaError::corrupt(
                    CF_CLUSTER,
                    "next_producer_id is not 8 bytes",
                ));
            }
            None => 0,
        };
        let mut batch = WriteBatch::default();
        batch.put_cf(cf, NEXT_PRODUCER_ID, (next + 1).to_be_bytes());
        self.db.write_opt(batch, &self.sync_write)?;
        Ok(next as i64)
    }

    // ------------------------------------------------------------ topics ---

    /// Creates or replaces a topic's settings. The caller validates `cfg`
    /// (`TopicConfig::validate`); the store keeps whatever it is given.
    pub fn put_topic(&self, name: &str, cfg: &TopicConfig) -> Result<(), MetaError> {
        let key = keys::topic_key(name)?;
        let value = keys::encode_topic_value(cfg)?;
        let mut batch = WriteBatch::default();
        batch.put_cf(self.cf(CF_TOPICS)?, key, value);
        self.db.write_opt(batch, &self.sync_write)?;
        tracing::debug!(topic = name, "stored topic config");
        Ok(())
    }

    /// A topic's settings, or `None` if there is no such topic.
    pub fn get_topic(&self, name: &str) -> Result<Option<TopicConfig>, MetaError> {
        let key = keys::topic_key(name)?;
        match self.db.get_pinned_cf(self.cf(CF_TOPICS)?, key)? {
            Some(value) => Ok(Some(keys::decode_topic_value(&value)?)),
            None => Ok(None),
        }
    }

    /// Every topic, sorted by name. Topic keys are the bare names, so RocksDB's
    /// byte order is already name order.
    pub fn list_topics(&self) -> Result<Vec<(String, TopicConfig)>, MetaError> {
        self.db
            .iterator_cf(self.cf(CF_TOPICS)?, IteratorMode::Start)
            .map(|item| {
                let (key, value) = item?;
                Ok((
                    keys::decode_topic_key(&key)?,
                    keys::decode_topic_value(&value)?,
                ))
            })
            .collect()
    }

    /// Deletes a topic together with every group's committed offsets for it,
    /// in one atomic write: offsets left behind would be picked up by a later
    /// topic of the same name, whose offsets start again at zero.
    ///
    /// Returns whether the topic existed. Offsets for the topic are removed
    /// even if it did not, which also cleans up after a caller that committed
    /// offsets for a topic that was being deleted.
    pub fn delete_topic(&self, name: &str) -> Result<bool, MetaError> {
        let key = keys::topic_key(name)?;
        let topics = self.cf(CF_TOPICS)?;
        let offsets = self.cf(CF_GROUP_OFFSETS)?;
        let existed = self.db.get_pinned_cf(topics, &key)?.is_some();

        let mut batch = WriteBatch::default();
        batch.delete_cf(topics, &key);

        // Visit each group once: jump to its (group, topic) range, take the
        // keys there, then jump past the group. Cost is one seek per group
        // plus the deleted keys, not a read of every offset of every group.
        let mut removed = 0usize;
        let mut it = self.db.raw_iterator_cf(offsets);
        it.seek_to_first();
        while let Some(first) = it.key() {
            let group = keys::decode_offset_key_group(first)?.to_owned();
            let range = keys::group_topic_prefix(&group, name)?;
            it.seek(&range);
            while let Some(k) = it.key().filter(|k| k.starts_with(&range)) {
                batch.delete_cf(offsets, k);
                removed += 1;
                it.next();
            }
            match keys::prefix_successor(&keys::group_prefix(&group)?) {
                Some(next_group) => it.seek(next_group),
                None => break,
            }
        }
        it.status()?;
        drop(it);

        self.db.write_opt(batch, &self.sync_write)?;
        tracing::debug!(
            topic = name,
            existed,
            offsets_removed = removed,
            "deleted topic"
        );
        Ok(existed)
    }

    // ----------------------------------------------------- group offsets ---

    /// Records `group`'s committed offsets, given as (topic, partition,
    /// offset), all or none. If a (topic, partition) appears twice the last
    /// one wins.
    ///
    /// The store does not check that the topics exist: that is the caller's
    /// decision, made under whatever lock orders commits against deletes.
    pub fn commit_offsets(
        &self,
        group: &str,
        offsets: &[(&str, u32, u64)],
    ) -> Result<(), MetaError> {
        self.commit_offsets_with(group, offsets, Durability::Synced)
    }

    /// [`commit_offsets`](Self::commit_offsets), choosing whether the write
    /// waits for an fsync. Consumer groups commit their progress every few
    /// tens of milliseconds `Unsynced`: the write survives a crash of the
    /// broker process (it is in the OS's page cache) but not a power loss,
    /// which costs redeliveries, never a lost message — and keeps those
    /// fsyncs from queueing behind (and in front of) the log's.
    pub fn commit_offsets_with(
        &self,
        group: &str,
        offsets: &[(&str, u32, u64)],
        durability: Durability,
    ) -> Result<(), MetaError> {
        keys::validate_name("group", group)?;
        if offsets.is_empty() {
            // Nothing to make durable; skip the fsync.
            return Ok(());
        }
        let cf = self.cf(CF_GROUP_OFFSETS)?;
        let mut batch = WriteBatch::default();
        for &(topic, partition, offset) in offsets {
            batch.put_cf(
                cf,
                keys::offset_key(group, topic, partition)?,
                keys::encode_offset_value(offset),
            );
        }
        let options = match durability {
            Durability::Synced => &self.sync_write,
            Durability::Unsynced => &self.unsynced_write,
        };
        self.db.write_opt(batch, options)?;
        Ok(())
    }

    /// The offset `group` committed for one partition, if any.
    pub fn committed_offset(
        &self,
        group: &str,
        topic: &str,
        partition: u32,
    ) -> Result<Option<u64>, MetaError> {
        let key = keys::offset_key(group, topic, partition)?;
        match self.db.get_pinned_cf(self.cf(CF_GROUP_OFFSETS)?, key)? {
            Some(value) => Ok(Some(keys::decode_offset_value(&value)?)),
            None => Ok(None),
        }
    }

    /// Every offset `group` has committed, as (topic, partition, offset),
    /// sorted by topic name then partition.
    pub fn group_offsets(&self, group: &str) -> Result<Vec<(String, u32, u64)>, MetaError> {
        let prefix = keys::group_prefix(group)?;
        let mut out = Vec::new();
        for item in self.scan_prefix(self.cf(CF_GROUP_OFFSETS)?, &prefix) {
            let (key, value) = item?;
            let key = keys::decode_offset_key(&key)?;
            out.push((key.topic, key.partition, keys::decode_offset_value(&value)?));
        }
        // Keys order topics by length first (see `keys`); callers want names.
        out.sort_unstable_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
        Ok(out)
    }

    /// Every group with at least one committed offset, sorted by name.
    pub fn list_groups(&self) -> Result<Vec<String>, MetaError> {
        // One seek per group: read a group's name from its first key, then
        // jump past all of its keys.
        let mut groups = Vec::new();
        let mut it = self.db.raw_iterator_cf(self.cf(CF_GROUP_OFFSETS)?);
        it.seek_to_first();
        while let Some(key) = it.key() {
            let group = keys::decode_offset_key_group(key)?.to_owned();
            let next = keys::prefix_successor(&keys::group_prefix(&group)?);
            groups.push(group);
            match next {
                Some(next) => it.seek(next),
                None => break,
            }
        }
        it.status()?;
        // Keys order groups by length first (see `keys`); callers want names.
        groups.sort_unstable();
        Ok(groups)
    }

    /// Forgets every offset `group` has committed, in one atomic write.
    /// Returns whether there was anything to forget.
    pub fn delete_group(&self, group: &str) -> Result<bool, MetaError> {
        let prefix = keys::group_prefix(group)?;
        let cf = self.cf(CF_GROUP_OFFSETS)?;
        let mut batch = WriteBatch::default();
        for item in self.scan_prefix(cf, &prefix) {
            let (key, _) = item?;
            batch.delete_cf(cf, key);
        }
        let removed = batch.len();
        if removed == 0 {
            return Ok(false);
        }
        self.db.write_opt(batch, &self.sync_write)?;
        tracing::debug!(group, offsets_removed = removed, "deleted group offsets");
        Ok(true)
    }
}

#[cfg(test)]
mod producer_id_tests {
    use super::*;

    #[test]
    fn producer_ids_are_never_reused_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let first = {
            let store = MetaStore::open(dir.path()).unwrap();
            let a = store.allocate_producer_id().unwrap();
            let b = store.allocate_producer_id().unwrap();
            assert_eq!(b, a + 1);
            b
        };
        let store = MetaStore::open(dir.path()).unwrap();
        assert_eq!(store.allocate_producer_id().unwrap(), first + 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic_cfg(partitions: u32) -> TopicConfig {
        TopicConfig {
            partitions,
            ..TopicConfig::default()
        }
    }

    fn open_temp() -> (tempfile::TempDir, MetaStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = MetaStore::open(dir.path()).unwrap();
        (dir, store)
    }

    #[test]
    fn topics_round_trip() {
        let (_dir, store) = open_temp();
        assert_eq!(store.get_topic("orders").unwrap(), None);
        assert!(store.list_topics().unwrap().is_empty());

        for (name, parts) in [("orders", 3), ("audit", 1), ("payments", 8)] {
            store.put_topic(name, &topic_cfg(parts)).unwrap();
        }
        assert_eq!(store.get_topic("orders").unwrap(), Some(topic_cfg(3)));

        // Replacing keeps one entry.
        store.put_topic("orders", &topic_cfg(4)).unwrap();
        let listed = store.list_topics().unwrap();
        let names: Vec<_> = listed.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["audit", "orders", "payments"]);
        assert_eq!(listed[1].1, topic_cfg(4));
    }

    #[test]
    fn reopen_persists() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = MetaStore::open(dir.path()).unwrap();
            store.put_topic("t", &topic_cfg(2)).unwrap();
            store
                .commit_offsets("g", &[("t", 0, 10), ("t", 1, 20)])
                .unwrap();
        }
        let store = MetaStore::open(dir.path()).unwrap();
        assert_eq!(store.get_topic("t").unwrap(), Some(topic_cfg(2)));
        assert_eq!(store.committed_offset("g", "t", 1).unwrap(), Some(20));
        assert_eq!(store.list_groups().unwrap(), ["g"]);
        assert!(format!("{store:?}").starts_with("MetaStore"));
    }

    #[test]
    fn commit_and_read_offsets() {
        let (_dir, store) = open_temp();
        assert_eq!(store.committed_offset("g", "t", 0).unwrap(), None);
        assert!(store.group_offsets("g").unwrap().is_empty());

        store
            .commit_offsets("g", &[("t", 1, 5), ("t", 0, 7), ("aa", 3, 1), ("b", 0, 2)])
            .unwrap();
        store.commit_offsets("g", &[("t", 1, 9)]).unwrap();
        store.commit_offsets("g", &[]).unwrap();

        assert_eq!(store.committed_offset("g", "t", 1).unwrap(), Some(9));
        assert_eq!(store.committed_offset("g", "t", 0).unwrap(), Some(7));
        assert_eq!(store.committed_offset("g", "t", 2).unwrap(), None);
        assert_eq!(store.committed_offset("other", "t", 0).unwrap(), None);
        // Sorted by topic name then partition, although "b" sorts before
        // "aa" in the keys (shorter name first).
        assert_eq!(
            store.group_offsets("g").unwrap(),
            [
                ("aa".to_owned(), 3, 1),
                ("b".to_owned(), 0, 2),
                ("t".to_owned(), 0, 7),
                ("t".to_owned(), 1, 9),
            ]
        );
    }

    #[test]
    fn group_prefixes_do_not_mix() {
        let (_dir, store) = open_temp();
        // With unprefixed keys "a"+"bx" and "ab"+"x" would collide.
        store.commit_offsets("a", &[("bx", 0, 1)]).unwrap();
        store.commit_offsets("ab", &[("x", 0, 2)]).unwrap();
        store.commit_offsets("b", &[("x", 0, 3)]).unwrap();

        assert_eq!(store.group_offsets("a").unwrap(), [("bx".to_owned(), 0, 1)]);
        assert_eq!(store.group_offsets("ab").unwrap(), [("x".to_owned(), 0, 2)]);
        assert_eq!(store.committed_offset("a", "bx", 0).unwrap(), Some(1));
        assert_eq!(store.committed_offset("ab", "x", 0).unwrap(), Some(2));

        assert!(store.delete_group("a").unwrap());
        assert!(store.group_offsets("a").unwrap().is_empty());
        assert_eq!(store.group_offsets("ab").unwrap(), [("x".to_owned(), 0, 2)]);
    }

    #[test]
    fn list_groups_sorted_by_name() {
        let (_dir, store) = open_temp();
        assert!(store.list_groups().unwrap().is_empty());
        for group in ["zz", "b", "ab", "a"] {
            store
                .commit_offsets(group, &[("t", 0, 1), ("t", 1, 1), ("u", 0, 1)])
                .unwrap();
        }
        assert_eq!(store.list_groups().unwrap(), ["a", "ab", "b", "zz"]);
    }

    #[test]
    fn delete_group_removes_only_that_group() {
        let (_dir, store) = open_temp();
        store
            .commit_offsets("g1", &[("t", 0, 1), ("u", 0, 2)])
            .unwrap();
        store.commit_offsets("g2", &[("t", 0, 3)]).unwrap();

        assert!(store.delete_group("g1").unwrap());
        assert!(!store.delete_group("g1").unwrap());
        assert!(!store.delete_group("never").unwrap());
        assert_eq!(store.committed_offset("g1", "t", 0).unwrap(), None);
        assert_eq!(store.committed_offset("g2", "t", 0).unwrap(), Some(3));
        assert_eq!(store.list_groups().unwrap(), ["g2"]);
    }

    #[test]
    fn delete_topic_removes_its_offsets_in_every_group() {
        let (_dir, store) = open_temp();
        for t in ["t", "tt", "u"] {
            store.put_topic(t, &topic_cfg(2)).unwrap();
        }
        store
            .commit_offsets("g1", &[("t", 0, 1), ("t", 1, 2), ("tt", 0, 3), ("u", 0, 4)])
            .unwrap();
        store.commit_offsets("g2", &[("t", 1, 5)]).unwrap();
        store.commit_offsets("g3", &[("u", 1, 6)]).unwrap();

        assert!(store.delete_topic("t").unwrap());

        assert_eq!(store.get_topic("t").unwrap(), None);
        let names: Vec<_> = store
            .list_topics()
            .unwrap()
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(names, ["tt", "u"]);
        assert_eq!(
            store.group_offsets("g1").unwrap(),
            [("tt".to_owned(), 0, 3), ("u".to_owned(), 0, 4)]
        );
        assert!(store.group_offsets("g2").unwrap().is_empty());
        assert_eq!(store.group_offsets("g3").unwrap(), [("u".to_owned(), 1, 6)]);
        assert_eq!(store.list_groups().unwrap(), ["g1", "g3"]);

        // Deleting again reports that nothing was there and changes nothing.
        assert!(!store.delete_topic("t").unwrap());
        assert_eq!(store.group_offsets("g1").unwrap().len(), 2);
    }

    #[test]
    fn delete_topic_cleans_orphan_offsets() {
        let (_dir, store) = open_temp();
        store
            .commit_offsets("g", &[("gone", 0, 1), ("kept", 0, 2)])
            .unwrap();
        assert!(!store.delete_topic("gone").unwrap());
        assert_eq!(
            store.group_offsets("g").unwrap(),
            [("kept".to_owned(), 0, 2)]
        );
    }

    #[test]
    fn invalid_names_are_rejected() {
        let (_dir, store) = open_temp();
        let long = "x".repeat(keys::MAX_NAME_LEN + 1);
        let invalid = |r: Result<(), MetaError>| matches!(r, Err(MetaError::InvalidName(_)));

        assert!(invalid(store.put_topic("", &topic_cfg(1))));
        assert!(invalid(store.put_topic(&long, &topic_cfg(1))));
        assert!(invalid(store.get_topic("").map(drop)));
        assert!(invalid(store.delete_topic(&long).map(drop)));
        assert!(invalid(store.commit_offsets("", &[("t", 0, 1)])));
        assert!(invalid(store.commit_offsets("", &[])));
        assert!(invalid(store.commit_offsets(&long, &[("t", 0, 1)])));
        assert!(invalid(
            store.commit_offsets("g", &[("t", 0, 1), ("", 0, 1)])
        ));
        assert!(invalid(store.committed_offset("g", &long, 0).map(drop)));
        assert!(invalid(store.group_offsets("").map(drop)));
        assert!(invalid(store.delete_group("").map(drop)));

        // A rejected batch writes nothing, not even its valid entries.
        assert!(store.list_groups().unwrap().is_empty());
        // The longest allowed name works.
        let max = "y".repeat(keys::MAX_NAME_LEN);
        store.put_topic(&max, &topic_cfg(1)).unwrap();
        store.commit_offsets(&max, &[(&max, 0, 1)]).unwrap();
        assert_eq!(store.committed_offset(&max, &max, 0).unwrap(), Some(1));
    }

    fn assert_corrupt<T: fmt::Debug>(r: Result<T, MetaError>, want: &str) {
        match r {
            Err(MetaError::Corrupt { cf, ref reason }) => {
                assert_eq!(cf, want, "{reason}");
            }
            other => panic!("expected Corrupt in {want}, got {other:?}"),
        }
    }

    #[test]
    fn corrupt_entries_are_errors_not_panics() {
        let (_dir, store) = open_temp();
        let topics = store.cf(CF_TOPICS).unwrap();
        let offsets = store.cf(CF_GROUP_OFFSETS).unwrap();

        store.db.put_cf(topics, "bad", b"\x01{not json").unwrap();
        store.db.put_cf(topics, "v9", b"\x09{}").unwrap();
        assert_corrupt(store.get_topic("bad"), CF_TOPICS);
        assert_corrupt(store.get_topic("v9"), CF_TOPICS);
        assert_corrupt(store.list_topics(), CF_TOPICS);

        let key = keys::offset_key("g", "t", 0).unwrap();
        store.db.put_cf(offsets, &key, b"\x01short").unwrap();
        assert_corrupt(store.committed_offset("g", "t", 0), CF_GROUP_OFFSETS);
        assert_corrupt(store.group_offsets("g"), CF_GROUP_OFFSETS);

        // A key that does not parse breaks scans over it, loudly.
        store.db.put_cf(offsets, [0u8, 9, b'x'], [1u8; 9]).unwrap();
        assert_corrupt(store.list_groups(), CF_GROUP_OFFSETS);
        assert_corrupt(store.delete_topic("t"), CF_GROUP_OFFSETS);
        let err = store.get_topic("bad").unwrap_err();
        assert_eq!(err.code(), "meta.corrupt");
        assert!(err.to_string().contains("topics"), "{err}");
    }

    #[test]
    fn unknown_column_families_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut opts = Options::default();
            opts.create_if_missing(true);
            opts.create_missing_column_families(true);
            let db = DB::open_cf(&opts, dir.path(), [CF_TOPICS, "from_the_future"]).unwrap();
            let cf = db.cf_handle("from_the_future").unwrap();
            db.put_cf(cf, "k", "v").unwrap();
        }
        let store = MetaStore::open(dir.path()).unwrap();
        store.commit_offsets("g", &[("t", 0, 1)]).unwrap();
        let cf = store.db.cf_handle("from_the_future").unwrap();
        assert_eq!(
            store.db.get_cf(cf, "k").unwrap().as_deref(),
            Some(&b"v"[..])
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn call_runs_off_the_async_workers() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(MetaStore::open(dir.path()).unwrap());

        store
            .call(|m| m.put_topic("t", &topic_cfg(3)))
            .await
            .unwrap();
        let got = store.call(|m| m.get_topic("t")).await.unwrap();
        assert_eq!(got, Some(topic_cfg(3)));

        let offset = store
            .call(|m| {
                m.commit_offsets("g", &[("t", 2, 42)])?;
                m.committed_offset("g", "t", 2)
            })
            .await
            .unwrap();
        assert_eq!(offset, Some(42));

        // Errors from the closure come back unchanged.
        let err = store.call(|m| m.get_topic("")).await.unwrap_err();
        assert!(matches!(err, MetaError::InvalidName(_)), "{err}");
    }

    #[tokio::test]
    async fn call_reports_a_panic_as_task_failed() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(MetaStore::open(dir.path()).unwrap());
        let err = store
            .call(|_| -> Result<(), MetaError> { panic!("boom") })
            .await
            .unwrap_err();
        match err {
            MetaError::TaskFailed(msg) => assert!(msg.contains("boom"), "{msg}"),
            other => panic!("expected TaskFailed, got {other:?}"),
        }
        // The store is still usable afterwards.
        store.call(|m| m.list_topics()).await.unwrap();
    }
}
