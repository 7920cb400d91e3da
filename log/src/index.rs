//! Sparse indexes beside each segment.
//!
//! Every `index_interval_bytes` of log, the segment records one entry in each
//! index, for the batch that starts there:
//!
//! - `<base>.index`: `relative offset u32 BE, position u32 BE` (8 bytes) —
//!   where the batch with that base offset starts in the `.log` file;
//! - `<base>.timeindex`: `max timestamp i64 BE, relative offset u32 BE`
//!   (12 bytes) — the greatest record timestamp in the segment *before* that
//!   batch, so a lookup by time knows every batch before the entry is older.
//!
//! A closed segment's time index ends with one more entry whose offset is the
//! segment's end: its timestamp is the segment's max timestamp, which
//! retention reads without scanning the log.
//!
//! The in-memory entries are the truth while the broker runs; the files are
//! written at checkpoints and on roll, and recovery trusts only the prefix a
//! checkpoint covers (see `checkpoint.rs`). A file that fails its sanity
//! checks is rebuilt from the log.

use std::fs::{self, File, OpenOptions};
use std::io::{self, ErrorKind};
use std::os::unix::fs::FileExt;
use std::path::Path;

/// A fixed-size index entry.
pub(crate) trait Entry: Copy + std::fmt::Debug {
    const SIZE: usize;
    fn encode(&self, out: &mut [u8]);
    fn decode(bytes: &[u8]) -> Self;
    /// The relative offset the entry is about; strictly increasing in a file.
    fn rel_offset(&self) -> u32;
}

/// `<base>.index` entry: where a batch starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OffsetEntry {
    pub rel_offset: u32,
    pub position: u32,
}

impl Entry for OffsetEntry {
    const SIZE: usize = 8;

    fn encode(&self, out: &mut [u8]) {
        out[..4].copy_from_slice(&self.rel_offset.to_be_bytes());
        out[4..8].copy_from_slice(&self.position.to_be_bytes());
    }

    fn decode(b: &[u8]) -> Self {
        OffsetEntry {
            rel_offset: u32::from_be_bytes(b[..4].try_into().expect("4 bytes")),
            position: u32::from_be_bytes(b[4..8].try_into().expect("4 bytes")),
        }
    }

    fn rel_offset(&self) -> u32 {
        self.rel_offset
    }
}

/// `<base>.timeindex` entry: the max timestamp of everything before a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TimeEntry {
    pub max_timestamp_before: i64,
    pub rel_offset: u32,
}

impl Entry for TimeEntry {
    const SIZE: usize = 12;

    fn encode(&self, out: &mut [u8]) {
        out[..8].copy_from_slice(&self.max_timestamp_before.to_be_bytes());
        out[8..12].copy_from_slice(&self.rel_offset.to_be_bytes());
    }

    fn decode(b: &[u8]) -> Self {
        TimeEntry {
            max_timestamp_before: i64::from_be_bytes(b[..8].try_into().expect("8 bytes")),
            rel_offset: u32::from_be_bytes(b[8..12].try_into().expect("4 bytes")),
        }
    }

    fn rel_offset(&self) -> u32 {
        self.rel_offset
    }
}

/// The entries of one index, in memory, plus how many are already on disk.
#[derive(Debug, Clone, Default)]
pub(crate) struct Index<E> {
    entries: Vec<E>,
    persisted: usize,
}

impl<E: Entry> Index<E> {
    pub fn new() -> Self {
        Index {
            entries: Vec::new(),
            persisted: 0,
        }
    }

    /// Reads an index file. Returns `None` if it is missing or fails the
    /// sanity checks (partial entry, offsets not increasing), so the caller
    /// rebuilds it.
    pub fn load(path: &Path) -> io::Result<Option<Self>> {
        let bytes = match fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        if bytes.len() % E::SIZE != 0 {
            return Ok(None);
        }
        let entries: Vec<E> = bytes.chunks_exact(E::SIZE).map(E::decode).collect();
        if entries
            .windows(2)
            .any(|w| w[0].rel_offset() >= w[1].rel_offset())
        {
            return Ok(None);
        }
        let persisted = entries.len();
        Ok(Some(Index { entries, persisted }))
    }

    pub fn entries(&self) -> &[E] {
        &self.entries
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn push(&mut self, entry: E) {
        self.entries.push(entry);
    }

    /// Keeps the first `n` entries (in memory; the file follows on `persist`).
    pub fn truncate(&mut self, n: usize) {
        self.entries.truncate(n);
        self.persisted = self.persisted.min(n);
    }

    /// Writes entries not yet on disk, truncating the file to match memory.
    /// Returns whether the file changed.
    pub fn persist(&mut self, path: &Path) -> io::Result<bool> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)?;
        let want_len = (self.entries.len() * E::SIZE) as u64;
        let have_len = file.metadata()?.len();
        if have_len == want_len && self.persisted == self.entries.len() {
            return Ok(false);
        }
        let from = if have_len >= (self.persisted * E::SIZE) as u64 {
            self.persisted
        } else {
            0
        };
        let mut buf = vec![0u8; (self.entries.len() - from) * E::SIZE];
        for (chunk, e) in buf.chunks_exact_mut(E::SIZE).zip(&self.entries[from..]) {
            e.encode(chunk);
        }
        file.write_all_at(&buf, (from * E::SIZE) as u64)?;
        file.set_len(want_len)?;
        file.sync_data()?;
        self.persisted = self.entries.len();
        Ok(true)
    }

    /// The encoded entries not yet on disk: `(first index, bytes)`.
    pub fn unpersisted(&self) -> (usize, Vec<u8>) {
        let from = self.persisted;
        let mut buf = vec![0u8; (self.entries.len() - from) * E::SIZE];
        for (chunk, e) in buf.chunks_exact_mut(E::SIZE).zip(&self.entries[from..]) {
            e.encode(chunk);
        }
        (from, buf)
    }

    /// Writes entries from [`Self::unpersisted`] into the file and syncs it.
    /// Never shortens the file, so it is safe to race with [`Self::persist`]
    /// of the same entries.
    pub fn write_entries(path: &Path, from: usize, bytes: &[u8]) -> io::Result<()> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)?;
        file.write_all_at(bytes, (from * E::SIZE) as u64)?;
        file.sync_data()
    }

    /// Records that the first `n` entries are on disk.
    pub fn mark_persisted(&mut self, n: usize) {
        self.persisted = self.persisted.max(n.min(self.entries.len()));
    }
}

impl Index<OffsetEntry> {
    /// The last entry at or before `rel_offset`.
    pub fn floor(&self, rel_offset: u32) -> Option<OffsetEntry> {
        let i = self.entries.partition_point(|e| e.rel_offset <= rel_offset);
        i.checked_sub(1).map(|i| self.entries[i])
    }

    /// The entry for exactly this batch, if it was indexed.
    pub fn exact(&self, rel_offset: u32) -> Option<OffsetEntry> {
        self.floor(rel_offset)
            .filter(|e| e.rel_offset == rel_offset)
    }
}

impl Index<TimeEntry> {
    /// The last entry whose batches before it are all older than `timestamp`.
    pub fn last_older_than(&self, timestamp: i64) -> Option<TimeEntry> {
        let i = self
            .entries
            .partition_point(|e| e.max_timestamp_before < timestamp);
        i.checked_sub(1).map(|i| self.entries[i])
    }
}

/// Reads the last entry of an index file without loading the rest.
pub(crate) fn read_last_entry<E: Entry>(path: &Path) -> io::Result<Option<E>> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let len = file.metadata()?.len();
    if len == 0 || len % E::SIZE as u64 != 0 {
        return Ok(None);
    }
    let mut buf = vec![0u8; E::SIZE];
    file.read_exact_at(&mut buf, len - E::SIZE as u64)?;
    Ok(Some(E::decode(&buf)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn offset_index_round_trips_and_floors(mut rels in proptest::collection::btree_set(0u32..1_000_000, 0..200),
                                               probe in 0u32..1_100_000) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("x.index");
            let mut idx = Index::<OffsetEntry>::new();
            for (i, r) in rels.iter().enumerate() {
                idx.push(OffsetEntry { rel_offset: *r, position: i as u32 * 100 });
            }
            idx.persist(&path).unwrap();
            let loaded = Index::<OffsetEntry>::load(&path).unwrap().unwrap();
            prop_assert_eq!(loaded.entries(), idx.entries());
            let _above_probe = rels.split_off(&(probe + 1));
            let expect = rels.iter().next_back().copied();
            prop_assert_eq!(loaded.floor(probe).map(|e| e.rel_offset), expect);
        }

        #[test]
        fn time_index_round_trips(ts in proptest::collection::vec(-1_000i64..1_000, 0..100), probe in -1_100i64..1_100) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("x.timeindex");
            let mut idx = Index::<TimeEntry>::new();
            let mut running = i64::MIN;
            let mut all = Vec::new();
            for (i, t) in ts.iter().enumerate() {
                running = running.max(*t);
                let e = TimeEntry { max_timestamp_before: running, rel_offset: i as u32 };
                idx.push(e);
                all.push(e);
            }
            idx.persist(&path).unwrap();
            let loaded = Index::<TimeEntry>::load(&path).unwrap().unwrap();
            prop_assert_eq!(loaded.entries(), &all[..]);
            let expect = all.iter().rev().find(|e| e.max_timestamp_before < probe).copied();
            prop_assert_eq!(loaded.last_older_than(probe), expect);
            prop_assert_eq!(read_last_entry::<TimeEntry>(&path).unwrap(), all.last().copied());
        }
    }

    #[test]
    fn corrupt_or_missing_files_load_as_none() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.index");
        assert!(Index::<OffsetEntry>::load(&path).unwrap().is_none());
        std::fs::write(&path, [0u8; 7]).unwrap();
        assert!(Index::<OffsetEntry>::load(&path).unwrap().is_none());
        // Offsets going backwards.
        let mut bytes = Vec::new();
        for rel in [5u32, 3] {
            bytes.extend_from_slice(&rel.to_be_bytes());
            bytes.extend_from_slice(&0u32.to_be_bytes());
        }
        std::fs::write(&path, bytes).unwrap();
        assert!(Index::<OffsetEntry>::load(&path).unwrap().is_none());
    }

    #[test]
    fn persist_truncates_the_file_after_truncate() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.index");
        let mut idx = Index::<OffsetEntry>::new();
        for i in 0..10 {
            idx.push(OffsetEntry {
                rel_offset: i,
                position: i * 10,
            });
        }
        idx.persist(&path).unwrap();
        idx.truncate(4);
        idx.push(OffsetEntry {
            rel_offset: 4,
            position: 77,
        });
        idx.persist(&path).unwrap();
        let loaded = Index::<OffsetEntry>::load(&path).unwrap().unwrap();
        assert_eq!(loaded.len(), 5);
        assert_eq!(loaded.entries()[4].position, 77);
    }
}
