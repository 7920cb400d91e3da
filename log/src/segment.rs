//! One segment: a `<base-offset>.log` file of consecutive record batches, and
//! its two sparse indexes.
//!
//! Batches are stored byte for byte as appended. Offsets inside a segment are
//! contiguous: the batch after one ending at offset `n` starts at `n + 1`,
//! which is what lets recovery tell a torn tail from data.
//!
//! Closed segments are cheap at start-up: their file is opened and their
//! indexes loaded only when a read or retention first needs them, so opening
//! a partition costs the same whatever its size.

use std::fs::{self, File, OpenOptions};
use std::io::{self, ErrorKind};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::RwLock;
use sluice_protocol::batch::{BatchHeader, BatchView, HEADER_LEN};

use super::LogError;
use super::index::{Index, OffsetEntry, TimeEntry, read_last_entry};

/// Bytes read per syscall when scanning a segment.
const SCAN_CHUNK: usize = 1 << 20;

pub(crate) fn log_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.log"))
}

fn index_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.index"))
}

fn time_index_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.timeindex"))
}

/// Parses `00000000000000000042.log` into 42.
pub(crate) fn parse_log_file_name(name: &str) -> Option<u64> {
    let stem = name.strip_suffix(".log")?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

/// The in-memory indexes of a segment and what appends need to extend them.
#[derive(Debug, Clone)]
pub(crate) struct Indexes {
    pub offsets: Index<OffsetEntry>,
    pub times: Index<TimeEntry>,
    /// Greatest record timestamp in the segment (`i64::MIN` when empty).
    pub max_timestamp: i64,
    /// Log bytes appended since the last index entry.
    pub bytes_since_entry: u64,
}

impl Indexes {
    pub fn empty() -> Self {
        Indexes {
            offsets: Index::new(),
            times: Index::new(),
            max_timestamp: i64::MIN,
            bytes_since_entry: 0,
        }
    }

    /// Accounts for a batch appended at `position`, adding index entries when
    /// `interval` bytes have passed since the last ones.
    pub fn on_append(&mut self, base: u64, header: &BatchHeader, position: u64, interval: u32) {
        if self.offsets.is_empty() || self.bytes_since_entry >= interval as u64 {
            let rel_offset = (header.base_offset - base) as u32;
            self.offsets.push(OffsetEntry {
                rel_offset,
                position: position as u32,
            });
            self.times.push(TimeEntry {
                max_timestamp_before: self.max_timestamp,
                rel_offset,
            });
            self.bytes_since_entry = 0;
        }
        self.bytes_since_entry += header.total_len() as u64;
        self.max_timestamp = self.max_timestamp.max(header.max_timestamp);
    }
}

/// What a scan of a segment's bytes found.
#[derive(Debug)]
pub(crate) struct ScanOutcome {
    /// Position after the last good batch.
    pub end: u64,
    /// Offset after the last good batch.
    pub next_offset: u64,
    /// First good batch's max timestamp, if any batch was scanned.
    pub first_timestamp: Option<i64>,
    /// Why the scan stopped before the end of the file, if it did.
    pub torn: Option<String>,
}

#[derive(Debug)]
pub(crate) struct Segment {
    pub base_offset: u64,
    dir: PathBuf,
    file: OnceLock<File>,
    size: AtomicU64,
    indexes: RwLock<Option<Indexes>>,
}

impl Segment {
    /// Creates an empty segment file (the caller syncs the directory).
    pub fn create(dir: &Path, base_offset: u64) -> Result<Segment, LogError> {
        let path = log_path(dir, base_offset);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(|e| LogError::io(&path, e))?;
        for p in [
            index_path(dir, base_offset),
            time_index_path(dir, base_offset),
        ] {
            match fs::remove_file(&p) {
                Err(e) if e.kind() != ErrorKind::NotFound => return Err(LogError::io(&p, e)),
                _ => {}
            }
        }
        let seg = Segment {
            base_offset,
            dir: dir.to_path_buf(),
            file: OnceLock::new(),
            size: AtomicU64::new(0),
            indexes: RwLock::new(Some(Indexes::empty())),
        };
        let _ = seg.file.set(file);
        Ok(seg)
    }

    /// Describes an existing segment without opening it.
    pub fn existing(dir: &Path, base_offset: u64) -> Result<Segment, LogError> {
        let path = log_path(dir, base_offset);
        let size = fs::metadata(&path)
            .map_err(|e| LogError::io(&path, e))?
            .len();
        Ok(Segment {
            base_offset,
            dir: dir.to_path_buf(),
            file: OnceLock::new(),
            size: AtomicU64::new(size),
            indexes: RwLock::new(None),
        })
    }

    pub fn path(&self) -> PathBuf {
        log_path(&self.dir, self.base_offset)
    }

    pub fn size(&self) -> u64 {
        self.size.load(Ordering::Acquire)
    }

    fn file(&self) -> Result<&File, LogError> {
        if let Some(f) = self.file.get() {
            return Ok(f);
        }
        let path = self.path();
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| LogError::io(&path, e))?;
        let _ = self.file.set(f);
        Ok(self.file.get().expect("just set"))
    }

    /// Writes `bytes` at the end. Called only by the partition's writer. On
    /// failure the file is cut back so no partial batch remains.
    pub fn append(&self, bytes: &[u8]) -> Result<u64, LogError> {
        let position = self.size();
        let file = self.file()?;
        if let Err(e) = file.write_all_at(bytes, position) {
            let _ = file.set_len(position);
            return Err(LogError::io(&self.path(), e));
        }
        self.size
            .store(position + bytes.len() as u64, Ordering::Release);
        Ok(position)
    }

    /// Reads exactly `len` bytes at `position`.
    pub fn read_at(&self, position: u64, len: usize) -> Result<Vec<u8>, LogError> {
        let mut buf = vec![0u8; len];
        self.file()?
            .read_exact_at(&mut buf, position)
            .map_err(|e| LogError::io(&self.path(), e))?;
        Ok(buf)
    }

    /// Reads up to `len` bytes at `position` (fewer at the end of the file).
    fn read_some_at(&self, position: u64, len: usize) -> Result<Vec<u8>, LogError> {
        let mut buf = vec![0u8; len];
        let file = self.file()?;
        let mut filled = 0;
        while filled < len {
            match file.read_at(&mut buf[filled..], position + filled as u64) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(LogError::io(&self.path(), e)),
            }
        }
        buf.truncate(filled);
        Ok(buf)
    }

    /// `fdatasync` of the log file.
    pub fn sync(&self) -> Result<(), LogError> {
        self.file()?
            .sync_data()
            .map_err(|e| LogError::io(&self.path(), e))
    }

    /// Cuts the file at `position` (after a torn tail) and syncs.
    pub fn truncate(&self, position: u64) -> Result<(), LogError> {
        let file = self.file()?;
        file.set_len(position)
            .and_then(|_| file.sync_all())
            .map_err(|e| LogError::io(&self.path(), e))?;
        self.size.store(position, Ordering::Release);
        Ok(())
    }

    /// Runs `f` with the indexes, loading (or rebuilding) them first for a
    /// closed segment that ends just before `end_offset`.
    pub fn with_indexes<R>(
        &self,
        end_offset: u64,
        interval: u32,
        f: impl FnOnce(&Indexes) -> R,
    ) -> Result<R, LogError> {
        {
            let guard = self.indexes.read();
            if let Some(ix) = guard.as_ref() {
                return Ok(f(ix));
            }
        }
        let mut guard = self.indexes.write();
        if guard.is_none() {
            *guard = Some(self.load_closed_indexes(end_offset, interval)?);
        }
        let read = parking_lot::RwLockWriteGuard::downgrade(guard);
        Ok(f(read.as_ref().expect("loaded")))
    }

    /// Indexes of the active segment (always in memory).
    pub fn indexes_mut(&self) -> parking_lot::MappedRwLockWriteGuard<'_, Indexes> {
        parking_lot::RwLockWriteGuard::map(self.indexes.write(), |ix| {
            ix.get_or_insert_with(Indexes::empty)
        })
    }

    pub fn set_indexes(&self, ix: Indexes) {
        *self.indexes.write() = Some(ix);
    }

    fn load_closed_indexes(&self, end_offset: u64, interval: u32) -> Result<Indexes, LogError> {
        let size = self.size();
        let end_rel = (end_offset - self.base_offset) as u32;
        let ip = index_path(&self.dir, self.base_offset);
        let tp = time_index_path(&self.dir, self.base_offset);
        let offsets = Index::<OffsetEntry>::load(&ip).map_err(|e| LogError::io(&ip, e))?;
        let times = Index::<TimeEntry>::load(&tp).map_err(|e| LogError::io(&tp, e))?;
        if let (Some(offsets), Some(times)) = (offsets, times) {
            let sane = offsets
                .entries()
                .iter()
                .all(|e| (e.position as u64) < size && e.rel_offset < end_rel)
                && times.entries().last().map(|e| e.rel_offset) == Some(end_rel)
                && offsets
                    .entries()
                    .first()
                    .map(|e| (e.rel_offset, e.position))
                    == Some((0, 0));
            if sane {
                let max_timestamp = times
                    .entries()
                    .last()
                    .expect("checked")
                    .max_timestamp_before;
                return Ok(Indexes {
                    offsets,
                    times,
                    max_timestamp,
                    bytes_since_entry: 0,
                });
            }
        }
        tracing::warn!(segment = %self.path().display(), "index missing or corrupt; rebuilding");
        let mut ix = Indexes::empty();
        let outcome = self.scan(0, self.base_offset, &mut ix, interval, false)?;
        if let Some(reason) = outcome.torn {
            tracing::warn!(segment = %self.path().display(), %reason, "closed segment ends early");
        }
        self.seal_indexes(&mut ix, outcome.next_offset)?;
        Ok(ix)
    }

    /// Adds the closing time-index entry and writes both index files.
    pub fn seal_indexes(&self, ix: &mut Indexes, end_offset: u64) -> Result<(), LogError> {
        let end_rel = (end_offset - self.base_offset) as u32;
        if ix.times.entries().last().map(|e| e.rel_offset) != Some(end_rel) {
            ix.times.push(TimeEntry {
                max_timestamp_before: ix.max_timestamp,
                rel_offset: end_rel,
            });
        }
        self.persist_indexes(ix)
    }

    /// Writes index entries not yet on disk.
    pub fn persist_indexes(&self, ix: &mut Indexes) -> Result<(), LogError> {
        let ip = index_path(&self.dir, self.base_offset);
        let tp = time_index_path(&self.dir, self.base_offset);
        ix.offsets.persist(&ip).map_err(|e| LogError::io(&ip, e))?;
        ix.times.persist(&tp).map_err(|e| LogError::io(&tp, e))?;
        Ok(())
    }

    /// The segment's greatest record timestamp, read from the end of its time
    /// index when the indexes are not in memory.
    pub fn max_timestamp(&self, end_offset: u64, interval: u32) -> Result<i64, LogError> {
        if let Some(ix) = self.indexes.read().as_ref() {
            return Ok(ix.max_timestamp);
        }
        let tp = time_index_path(&self.dir, self.base_offset);
        if let Ok(Some(last)) = read_last_entry::<TimeEntry>(&tp)
            && last.rel_offset as u64 == end_offset - self.base_offset
        {
            return Ok(last.max_timestamp_before);
        }
        self.with_indexes(end_offset, interval, |ix| ix.max_timestamp)
    }

    /// Walks batches from `from` (which must start a batch with offset
    /// `next_offset`), extending `ix`, until the end of the file or the first
    /// batch that is torn: short, unparsable, out of sequence, or (with
    /// `check_crc`) failing its CRC.
    pub fn scan(
        &self,
        from: u64,
        mut next_offset: u64,
        ix: &mut Indexes,
        interval: u32,
        check_crc: bool,
    ) -> Result<ScanOutcome, LogError> {
        let size = self.size();
        let mut pos = from;
        let mut first_timestamp = None;
        let mut buf: Vec<u8> = Vec::new();
        let mut buf_start = pos;
        let torn = loop {
            if pos >= size {
                break None;
            }
            let in_buf = (pos - buf_start) as usize;
            if buf.len() < in_buf + HEADER_LEN {
                buf = self.read_some_at(pos, SCAN_CHUNK.min((size - pos) as usize))?;
                buf_start = pos;
                if buf.len() < HEADER_LEN {
                    break Some(format!(
                        "{} trailing bytes, less than a batch header",
                        buf.len()
                    ));
                }
            }
            let in_buf = (pos - buf_start) as usize;
            let header = match BatchHeader::parse(&buf[in_buf..]) {
                Ok(h) => h,
                Err(e) => break Some(e.to_string()),
            };
            if header.base_offset != next_offset {
                break Some(format!(
                    "batch at byte {pos} has offset {}, expected {next_offset}",
                    header.base_offset
                ));
            }
            let total = header.total_len();
            if pos + total as u64 > size {
                break Some(format!("batch at byte {pos} runs past the end of the file"));
            }
            if check_crc {
                if buf.len() < in_buf + total {
                    buf =
                        self.read_some_at(pos, SCAN_CHUNK.max(total).min((size - pos) as usize))?;
                    buf_start = pos;
                }
                let in_buf = (pos - buf_start) as usize;
                if let Err(e) = BatchView::parse(&buf[in_buf..]).and_then(|v| v.verify_crc()) {
                    break Some(format!("batch at byte {pos}: {e}"));
                }
            }
            ix.on_append(self.base_offset, &header, pos, interval);
            first_timestamp.get_or_insert(header.max_timestamp);
            next_offset = header.next_offset();
            pos += total as u64;
        };
        Ok(ScanOutcome {
            end: pos,
            next_offset,
            first_timestamp,
            torn,
        })
    }

    /// Position of the batch that contains `offset`, starting from the index
    /// and walking headers forward. `None` if the segment ends first.
    pub fn find_batch(
        &self,
        offset: u64,
        end_offset: u64,
        limit: u64,
        interval: u32,
    ) -> Result<Option<u64>, LogError> {
        let rel = (offset - self.base_offset) as u32;
        let mut pos = self
            .with_indexes(end_offset, interval, |ix| ix.offsets.floor(rel))?
            .map_or(0, |e| e.position as u64);
        while pos + HEADER_LEN as u64 <= limit {
            let bytes = self.read_at(pos, HEADER_LEN)?;
            let header = BatchHeader::parse(&bytes).map_err(|e| LogError::Corrupt {
                path: self.path(),
                position: pos,
                reason: e.to_string(),
            })?;
            if header.last_offset() >= offset {
                return Ok(Some(pos));
            }
            pos += header.total_len() as u64;
        }
        Ok(None)
    }

    /// Removes the segment's files.
    pub fn delete_files(&self) -> io::Result<()> {
        for p in [
            self.path(),
            index_path(&self.dir, self.base_offset),
            time_index_path(&self.dir, self.base_offset),
        ] {
            match fs::remove_file(&p) {
                Err(e) if e.kind() != ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        Ok(())
    }

    /// Reads whole batches from `position` up to the end of the file and about
    /// `max_bytes`, always at least one batch, stopping before the first batch
    /// at or past `high_watermark` (written but not yet committed). Each
    /// batch's CRC is checked: corrupt bytes are reported, never served.
    pub fn read_batches(
        &self,
        position: u64,
        high_watermark: u64,
        max_bytes: usize,
    ) -> Result<Vec<u8>, LogError> {
        let limit = self.size();
        if position >= limit {
            return Ok(Vec::new());
        }
        let want = (limit - position).min(max_bytes.max(HEADER_LEN) as u64) as usize;
        let mut buf = self.read_at(position, want)?;
        let corrupt = |at: usize, reason: String| LogError::Corrupt {
            path: self.path(),
            position: position + at as u64,
            reason,
        };
        let mut end = 0usize;
        loop {
            if end + HEADER_LEN > buf.len() {
                break;
            }
            let header =
                BatchHeader::parse(&buf[end..]).map_err(|e| corrupt(end, e.to_string()))?;
            if header.base_offset >= high_watermark {
                break;
            }
            let total = header.total_len();
            if end + total > buf.len() {
                if end == 0 {
                    // The first batch is larger than max_bytes: serve it whole.
                    if position + total as u64 > limit {
                        return Err(corrupt(0, "batch runs past the end of the log".into()));
                    }
                    buf = self.read_at(position, total)?;
                } else {
                    break;
                }
            }
            BatchView::parse(&buf[end..])
                .and_then(|v| v.verify_crc())
                .map_err(|e| corrupt(end, e.to_string()))?;
            end += total;
        }
        buf.truncate(end);
        Ok(buf)
    }
}
