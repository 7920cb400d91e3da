//! The metadata store: one RocksDB instance holding everything the broker
//! must remember besides the log itself.
//!
//! This crate knows no subsystem. Each subsystem above it *declares* the
//! column families it keeps here as [`Keyspace`]s (name and tuning) and the
//! broker opens the store with all of them; the subsystem then reaches its
//! families only through typed [`Table`] handles and atomic [`Batch`]es, and
//! keeps its own key layouts next to its code. One instance with many
//! families, so that a change spanning subsystems (a handler's kv writes and
//! its group's offsets) is still one atomic write.
//!
//! - [`table`]: `Table` (one column family), `Batch`, `WriteMode`;
//! - `error`: [`MetaError`].
//!
//! The store's own family is `cluster` (broker-wide counters such as the next
//! idempotent-producer id).
//!
//! Every call here blocks on disk I/O (synced writes wait for an fsync), so
//! async code goes through [`MetaStore::call`], which runs them on tokio's
//! blocking pool instead of a worker thread.

mod error;
pub mod table;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rocksdb::{ColumnFamilyDescriptor, DB, DBCompressionType, Options, WriteOptions};

pub use error::MetaError;
pub use table::{Batch, Table, WriteMode, prefix_successor};

/// A column family some subsystem keeps in the store: its name and the
/// per-family options it needs (merge operators, compaction filters, …).
#[derive(Clone, Copy)]
pub struct Keyspace {
    /// The column family's name on disk; never renamed once shipped.
    pub name: &'static str,
    /// Adjusts the family's options before it is opened.
    pub tune: fn(&mut Options),
}

impl Keyspace {
    /// A family with default options.
    pub const fn plain(name: &'static str) -> Keyspace {
        Keyspace { name, tune: |_| {} }
    }

    /// A family whose options `tune` adjusts.
    pub const fn tuned(name: &'static str, tune: fn(&mut Options)) -> Keyspace {
        Keyspace { name, tune }
    }
}

impl fmt::Debug for Keyspace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Keyspace").field(&self.name).finish()
    }
}

/// Write-ahead log size past which RocksDB flushes memtables.
const MAX_TOTAL_WAL_BYTES: u64 = 64 << 20;

/// Broker-wide counters: `next_producer_id` → u64 big-endian.
pub const CLUSTER: Keyspace = Keyspace::plain("cluster");
const NEXT_PRODUCER_ID: &[u8] = b"next_producer_id";

/// The broker's metadata, shared as `Arc<MetaStore>`.
///
/// All methods are synchronous and may block on disk; from async code use
/// [`MetaStore::call`]. Every write is one atomic batch; a
/// [`WriteMode::Synced`] write survives kill -9 and power loss once the call
/// returns. Read-modify-write sequences across calls are not atomic: callers
/// that need that serialise such operations themselves.
pub struct MetaStore {
    db: DB,
    path: PathBuf,
    /// Every family this build declared, for [`MetaStore::flush`].
    declared: Vec<&'static str>,
    /// `sync` makes RocksDB fsync its WAL before the write returns. Without
    /// it a write acknowledged to a client (a created topic, a committed
    /// offset) could vanish in a power loss.
    sync_write: WriteOptions,
    /// For writes that may be lost in a power loss (see [`WriteMode`]).
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
    /// Opens the metadata database at `path` with the store's own families
    /// and every one in `keyspaces`, creating the database and any missing
    /// family.
    ///
    /// Column families found on disk that this build does not declare
    /// (written by a newer broker) are opened too and left untouched: RocksDB
    /// refuses to open a database without all of its families, and a
    /// downgrade should not leave the broker unable to start.
    pub fn open(path: &Path, keyspaces: &[Keyspace]) -> Result<MetaStore, MetaError> {
        let mut opts = base_options();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        // Bounds what an open after a crash replays: once the write-ahead
        // log passes this size the oldest memtables are flushed. Keeps a
        // restart with a million pending delayed messages under a second.
        opts.set_max_total_wal_size(MAX_TOTAL_WAL_BYTES);

        let mut declared: Vec<Keyspace> = vec![CLUSTER];
        for ks in keyspaces {
            if declared.iter().any(|d| d.name == ks.name) {
                return Err(MetaError::DuplicateKeyspace(ks.name));
            }
            declared.push(*ks);
        }
        let mut descriptors: Vec<ColumnFamilyDescriptor> = declared
            .iter()
            .map(|ks| {
                let mut cf_opts = base_options();
                (ks.tune)(&mut cf_opts);
                ColumnFamilyDescriptor::new(ks.name, cf_opts)
            })
            .collect();
        // `CURRENT` names the live manifest; without it there is no database
        // yet and nothing to list.
        if path.join("CURRENT").exists() {
            for name in DB::list_cf(&opts, path)? {
                if declared.iter().any(|d| d.name == name) {
                    continue;
                }
                if name != rocksdb::DEFAULT_COLUMN_FAMILY_NAME {
                    tracing::warn!(
                        path = %path.display(),
                        column_family = %name,
                        "metadata store has a column family this broker does not know; leaving it untouched"
                    );
                }
                descriptors.push(ColumnFamilyDescriptor::new(name, base_options()));
            }
        }
        let db = DB::open_cf_descriptors(&opts, path, descriptors)?;

        let mut sync_write = WriteOptions::default();
        sync_write.set_sync(true);

        let store = MetaStore {
            db,
            path: path.to_path_buf(),
            declared: declared.iter().map(|ks| ks.name).collect(),
            sync_write,
            unsynced_write: WriteOptions::default(),
            producer_ids: parking_lot::Mutex::new(()),
        };
        tracing::debug!(path = %path.display(), "opened metadata store");
        Ok(store)
    }

    /// Where the database lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The handle to one declared column family.
    pub fn table(&self, keyspace: &Keyspace) -> Result<Table<'_>, MetaError> {
        let cf = self
            .db
            .cf_handle(keyspace.name)
            .ok_or(MetaError::MissingColumnFamily(keyspace.name))?;
        Ok(Table::new(&self.db, cf, keyspace.name))
    }

    /// Writes `batch` atomically; with [`WriteMode::Synced`] it is on disk
    /// (WAL fsynced) when this returns.
    pub fn write(&self, batch: Batch, mode: WriteMode) -> Result<(), MetaError> {
        let options = match mode {
            WriteMode::Synced => &self.sync_write,
            WriteMode::Unsynced => &self.unsynced_write,
        };
        self.db.write_opt(batch.into_inner(), options)?;
        Ok(())
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

    /// Flushes every declared column family's memtable to disk (on
    /// shutdown), so the next open has no write-ahead log to replay.
    pub fn flush(&self) -> Result<(), MetaError> {
        for name in &self.declared {
            if let Some(cf) = self.db.cf_handle(name) {
                self.db.flush_cf(cf)?;
            }
        }
        Ok(())
    }

    /// Hands out a producer id never handed out before by this data
    /// directory (the counter is written with a synced write first).
    pub fn allocate_producer_id(&self) -> Result<i64, MetaError> {
        let _serial = self.producer_ids.lock();
        let cluster = self.table(&CLUSTER)?;
        let next = match cluster.get(NEXT_PRODUCER_ID)? {
            Some(v) if v.len() == 8 => u64::from_be_bytes(v[..].try_into().unwrap_or_default()),
            Some(_) => return Err(cluster.corrupt("next_producer_id is not 8 bytes")),
            None => 0,
        };
        let mut batch = Batch::default();
        batch.put(&cluster, NEXT_PRODUCER_ID, (next + 1).to_be_bytes());
        self.write(batch, WriteMode::Synced)?;
        Ok(next as i64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const THINGS: Keyspace = Keyspace::plain("things");

    fn open(dir: &Path) -> MetaStore {
        MetaStore::open(dir, &[THINGS]).unwrap()
    }

    #[test]
    fn producer_ids_are_never_reused_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let first = {
            let store = open(dir.path());
            let a = store.allocate_producer_id().unwrap();
            let b = store.allocate_producer_id().unwrap();
            assert_eq!(b, a + 1);
            b
        };
        let store = open(dir.path());
        assert_eq!(store.allocate_producer_id().unwrap(), first + 1);
        assert!(format!("{store:?}").starts_with("MetaStore"));
    }

    #[test]
    fn tables_write_atomically_and_persist() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = open(dir.path());
            let things = store.table(&THINGS).unwrap();
            let mut batch = Batch::default();
            batch.put(&things, b"a", b"1");
            batch.put(&things, b"ab", b"2");
            batch.put(&things, b"b", b"3");
            assert_eq!(batch.len(), 3);
            store.write(batch, WriteMode::Synced).unwrap();
        }
        let store = open(dir.path());
        let things = store.table(&THINGS).unwrap();
        assert_eq!(things.get(b"ab").unwrap().as_deref(), Some(&b"2"[..]));
        let under_a: Vec<_> = things
            .scan_prefix(b"a")
            .map(|kv| kv.unwrap().0.to_vec())
            .collect();
        assert_eq!(under_a, [b"a".to_vec(), b"ab".to_vec()]);
        store.flush().unwrap();
    }

    #[test]
    fn undeclared_and_duplicate_keyspaces_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let err = store.table(&Keyspace::plain("nope")).unwrap_err();
        assert!(
            matches!(err, MetaError::MissingColumnFamily("nope")),
            "{err}"
        );
        drop(store);
        let err = MetaStore::open(dir.path(), &[THINGS, THINGS]).unwrap_err();
        assert!(
            matches!(err, MetaError::DuplicateKeyspace("things")),
            "{err}"
        );
    }

    #[test]
    fn unknown_column_families_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut opts = Options::default();
            opts.create_if_missing(true);
            opts.create_missing_column_families(true);
            let db = DB::open_cf(&opts, dir.path(), ["things", "from_the_future"]).unwrap();
            let cf = db.cf_handle("from_the_future").unwrap();
            db.put_cf(cf, "k", "v").unwrap();
        }
        let store = open(dir.path());
        store.allocate_producer_id().unwrap();
        let cf = store.db.cf_handle("from_the_future").unwrap();
        assert_eq!(
            store.db.get_cf(cf, "k").unwrap().as_deref(),
            Some(&b"v"[..])
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn call_runs_off_the_async_workers_and_reports_panics() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(open(dir.path()));
        let id = store.call(|m| m.allocate_producer_id()).await.unwrap();
        assert_eq!(id, 0);
        let err = store
            .call(|_| -> Result<(), MetaError> { panic!("boom") })
            .await
            .unwrap_err();
        match err {
            MetaError::TaskFailed(msg) => assert!(msg.contains("boom"), "{msg}"),
            other => panic!("expected TaskFailed, got {other:?}"),
        }
        // The store is still usable afterwards.
        store.call(|m| m.allocate_producer_id()).await.unwrap();
    }
}
