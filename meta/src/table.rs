//! Typed handles to one column family, and atomic batches across several.
//!
//! A subsystem never sees the database, only the tables it declared: what
//! it can touch is what it owns, and every write goes through
//! [`MetaStore::write`](crate::MetaStore::write) with an explicit
//! [`WriteMode`].

use std::fmt;

use rocksdb::{
    ColumnFamily, DB, DBIteratorWithThreadMode, DBPinnableSlice, DBRawIterator, Direction,
    IteratorMode, PrefixRange, ReadOptions, WriteBatch,
};

use crate::MetaError;

/// Whether a metadata write waits for its fsync.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteMode {
    /// Survives power loss once the call returns.
    Synced,
    /// Survives a crash of the process, not of the machine: for frequent
    /// progress writes (group offsets every few tens of milliseconds) whose
    /// loss costs redeliveries, never a lost message.
    Unsynced,
}

/// One column family of the store.
#[derive(Clone, Copy)]
pub struct Table<'a> {
    db: &'a DB,
    cf: &'a ColumnFamily,
    name: &'static str,
}

impl fmt::Debug for Table<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Table").field(&self.name).finish()
    }
}

/// Key-value pairs of a scan, in key order.
pub type Scan<'a> = DBIteratorWithThreadMode<'a, DB>;

impl<'a> Table<'a> {
    pub(crate) fn new(db: &'a DB, cf: &'a ColumnFamily, name: &'static str) -> Table<'a> {
        Table { db, cf, name }
    }

    /// The column family's name, for errors and logs.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The value under `key`, pinned in RocksDB's block cache (no copy).
    pub fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<DBPinnableSlice<'a>>, MetaError> {
        Ok(self.db.get_pinned_cf(self.cf, key)?)
    }

    /// The values under `keys`, in one batched lookup (`sorted`: the keys
    /// are in key order, which saves RocksDB a sort).
    pub fn multi_get<'k, K, I>(
        &self,
        keys: I,
        sorted: bool,
    ) -> Vec<Result<Option<DBPinnableSlice<'a>>, MetaError>>
    where
        K: AsRef<[u8]> + 'k + ?Sized,
        I: IntoIterator<Item = &'k K>,
    {
        self.db
            .batched_multi_get_cf(self.cf, keys, sorted)
            .into_iter()
            .map(|r| r.map_err(MetaError::from))
            .collect()
    }

    /// Whether `key` has a value.
    pub fn contains(&self, key: impl AsRef<[u8]>) -> Result<bool, MetaError> {
        Ok(self.get(key)?.is_some())
    }

    /// Every pair in key order.
    pub fn scan(&self) -> Scan<'a> {
        self.db.iterator_cf(self.cf, IteratorMode::Start)
    }

    /// Every pair from `key` on, in key order.
    pub fn scan_from(&self, key: &[u8]) -> Scan<'a> {
        self.db
            .iterator_cf(self.cf, IteratorMode::From(key, Direction::Forward))
    }

    /// Every pair whose key starts with `prefix`, in key order. The bound is
    /// set in the read options so RocksDB stops at the end of the prefix
    /// instead of reading one key too far.
    pub fn scan_prefix(&self, prefix: &[u8]) -> Scan<'a> {
        let mut read = ReadOptions::default();
        read.set_iterate_range(PrefixRange(prefix));
        self.db.iterator_cf_opt(self.cf, read, IteratorMode::Start)
    }

    /// A seekable cursor, for scans that jump (one seek per group instead of
    /// a read of every key). `read` carries bounds and snapshot settings.
    pub fn cursor(&self, read: ReadOptions) -> DBRawIterator<'a> {
        self.db.raw_iterator_cf_opt(self.cf, read)
    }

    /// A [`MetaError::Corrupt`] naming this table.
    pub fn corrupt(&self, reason: impl Into<String>) -> MetaError {
        MetaError::corrupt(self.name, reason)
    }
}

/// Writes to any number of tables, applied all or none by
/// [`MetaStore::write`](crate::MetaStore::write).
#[derive(Default)]
pub struct Batch(WriteBatch);

impl fmt::Debug for Batch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Batch").field("len", &self.0.len()).finish()
    }
}

impl Batch {
    /// Sets `key` to `value`.
    pub fn put(&mut self, table: &Table<'_>, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) {
        self.0.put_cf(table.cf, key, value);
    }

    /// Removes `key`.
    pub fn delete(&mut self, table: &Table<'_>, key: impl AsRef<[u8]>) {
        self.0.delete_cf(table.cf, key);
    }

    /// Removes every key in `from..to`.
    pub fn delete_range<K: AsRef<[u8]>>(&mut self, table: &Table<'_>, from: K, to: K) {
        self.0.delete_range_cf(table.cf, from, to);
    }

    /// Hands `operand` to the table's merge operator.
    pub fn merge(&mut self, table: &Table<'_>, key: impl AsRef<[u8]>, operand: impl AsRef<[u8]>) {
        self.0.merge_cf(table.cf, key, operand);
    }

    /// How many writes the batch holds.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the batch holds no write.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(crate) fn into_inner(self) -> WriteBatch {
        self.0
    }
}

/// The smallest key greater than every key starting with `prefix`, or `None`
/// if there is none (the prefix is empty or all `0xFF`). Used to skip past a
/// group's keys in one seek.
pub fn prefix_successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut out = prefix.to_vec();
    while let Some(last) = out.pop() {
        if last < u8::MAX {
            out.push(last + 1);
            return Some(out);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_successor_skips_the_prefix() {
        assert_eq!(prefix_successor(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_successor(b"a\xff"), Some(b"b".to_vec()));
        assert_eq!(prefix_successor(b"\xff\xff"), None);
        assert_eq!(prefix_successor(b""), None);
    }
}
