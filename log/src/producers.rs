//! Idempotent-producer state of one partition: the last batches each
//! producer wrote, so a retried batch is recognised instead of written twice
//! and a lost batch shows up as a sequence gap.
//!
//! A batch from an idempotent producer carries its producer id, epoch and
//! the sequence number of its first record (Kafka v2 header fields). Per
//! producer, batches must arrive with consecutive sequences. The table keeps
//! the last [`REMEMBERED_BATCHES`] batches per producer (as many as a client
//! keeps in flight per partition), so any retry of one of them is answered
//! with its original offsets.
//!
//! The table survives restarts whole: every recovery point stores a
//! snapshot of it taken at the same log position ([`ProducerSnapshot`],
//! file `producer-state`), and opening a partition loads the snapshot and
//! replays the batch headers written after it. (It was once rebuilt from
//! only the last 4 MiB of the active segment; a producer whose batches lay
//! before that window, or in the segment before a roll, was forgotten, and
//! its retries after a restart were written twice.) A producer the table
//! does not know (new, or evicted as the least recently seen of more than
//! [`MAX_PRODUCERS`]) is accepted at whatever sequence it sends.

use std::collections::{HashMap, VecDeque};
use std::fs;
use std::io::{self, Write};
use std::path::Path;

use sluice_protocol::batch::BatchHeader;

use super::LogError;

/// Batches remembered per producer (the client's in-flight limit per partition).
pub const REMEMBERED_BATCHES: usize = 5;
/// Producers remembered per partition; the least recently seen are dropped first.
pub const MAX_PRODUCERS: usize = 10_000;

/// A batch a producer wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WrittenBatch {
    pub first_sequence: i32,
    pub last_sequence: i32,
    pub base_offset: u64,
    pub last_offset: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct ProducerEntry {
    epoch: i16,
    recent: VecDeque<WrittenBatch>,
    /// Order of last write, for eviction.
    touched: u64,
}

/// What to do with an incoming batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SequenceCheck {
    /// Not from an idempotent producer, or the next in sequence: write it.
    Append,
    /// A retry of a batch already written: answer with its offsets.
    Duplicate(WrittenBatch),
    /// (Replays only, see [`ProducerTable::check_replay`].) A batch from
    /// before the remembered ones: the log already holds it.
    AlreadyWritten,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ProducerTable {
    producers: HashMap<i64, ProducerEntry>,
    clock: u64,
}

fn last_sequence(h: &BatchHeader) -> i32 {
    h.base_sequence.wrapping_add(h.last_offset_delta as i32) & i32::MAX
}

fn next_sequence(seq: i32) -> i32 {
    if seq == i32::MAX { 0 } else { seq + 1 }
}

impl ProducerTable {
    pub fn new() -> Self {
        ProducerTable::default()
    }

    /// Decides whether `h` may be written. Does not change the table.
    pub fn check(&self, h: &BatchHeader) -> Result<SequenceCheck, LogError> {
        if h.producer_id < 0 {
            return Ok(SequenceCheck::Append);
        }
        let Some(entry) = self.producers.get(&h.producer_id) else {
            return Ok(SequenceCheck::Append);
        };
        if h.producer_epoch < entry.epoch {
            return Err(LogError::ProducerFenced {
                producer_id: h.producer_id,
                epoch: h.producer_epoch,
                current: entry.epoch,
            });
        }
        if h.producer_epoch > entry.epoch {
            return if h.base_sequence == 0 {
                Ok(SequenceCheck::Append)
            } else {
                Err(LogError::OutOfOrderSequence {
                    producer_id: h.producer_id,
                    expected: 0,
                    got: h.base_sequence,
                })
            };
        }
        let last = last_sequence(h);
        if let Some(dup) = entry
            .recent
            .iter()
            .find(|b| b.first_sequence == h.base_sequence && b.last_sequence == last)
        {
            return Ok(SequenceCheck::Duplicate(*dup));
        }
        let expected = entry
            .recent
            .back()
            .map_or(0, |b| next_sequence(b.last_sequence));
        if h.base_sequence == expected {
            Ok(SequenceCheck::Append)
        } else {
            Err(LogError::OutOfOrderSequence {
                producer_id: h.producer_id,
                expected,
                got: h.base_sequence,
            })
        }
    }

    /// Like [`check`](Self::check), for the broker's own writers (transform
    /// outputs, the scheduler's dispatches), which record each batch with
    /// its producer id and sequence before appending it and append it again
    /// after a crash. Such a writer appends in sequence order and alone
    /// under its producer id, so a sequence before the next expected one
    /// was written, even when it is older than the remembered batches
    /// ([`SequenceCheck::AlreadyWritten`]); and a sequence past it only
    /// means a batch of its was refused (too large for its topic) and
    /// dropped, so it is written.
    pub fn check_replay(&self, h: &BatchHeader) -> Result<SequenceCheck, LogError> {
        match self.check(h) {
            Err(LogError::OutOfOrderSequence { expected, got, .. }) => {
                if (expected.wrapping_sub(got) & i32::MAX) < (1 << 30) {
                    Ok(SequenceCheck::AlreadyWritten)
                } else {
                    Ok(SequenceCheck::Append)
                }
            }
            other => other,
        }
    }

    /// The sequence `producer_id`'s next batch must start with (0 for a
    /// producer the table does not know).
    pub fn next_sequence(&self, producer_id: i64) -> i32 {
        self.producers
            .get(&producer_id)
            .and_then(|e| e.recent.back())
            .map_or(0, |b| next_sequence(b.last_sequence))
    }

    /// Records a batch written at `base_offset`.
    pub fn record(&mut self, h: &BatchHeader, base_offset: u64) {
        if h.producer_id < 0 {
            return;
        }
        self.clock += 1;
        let touched = self.clock;
        let entry = self
            .producers
            .entry(h.producer_id)
            .or_insert_with(|| ProducerEntry {
                epoch: h.producer_epoch,
                recent: VecDeque::with_capacity(REMEMBERED_BATCHES),
                touched,
            });
        if h.producer_epoch != entry.epoch {
            entry.epoch = h.producer_epoch;
            entry.recent.clear();
        }
        if entry.recent.len() == REMEMBERED_BATCHES {
            entry.recent.pop_front();
        }
        entry.recent.push_back(WrittenBatch {
            first_sequence: h.base_sequence,
            last_sequence: last_sequence(h),
            base_offset,
            last_offset: base_offset + h.last_offset_delta as u64,
        });
        entry.touched = touched;
        if self.producers.len() > MAX_PRODUCERS {
            self.evict_oldest();
        }
    }

    fn evict_oldest(&mut self) {
        if let Some(id) = self
            .producers
            .iter()
            .min_by_key(|(_, e)| e.touched)
            .map(|(id, _)| *id)
        {
            self.producers.remove(&id);
        }
    }
}

/// The producer table as of one log position, stored beside the recovery
/// point so a restart knows every producer, not just recent ones.
///
/// File `producer-state`, big-endian: magic `SLPS`, version 1, segment base
/// u64, position u64 (a batch boundary in that segment; everything before it
/// was synced before the file was written), producer count u32, then per
/// producer, least recently seen first: id i64, epoch i16, batch count u8
/// and per batch first sequence i32, last sequence i32, base offset u64,
/// last offset u64; then a CRC-32C of everything before it. Written by temp
/// file, fsync and rename; a missing or damaged file makes the open replay
/// the whole log instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ProducerSnapshot {
    pub segment_base: u64,
    pub position: u64,
    pub table: ProducerTable,
}

const SNAPSHOT_MAGIC: &[u8; 4] = b"SLPS";
const SNAPSHOT_VERSION: u8 = 1;
pub(crate) const SNAPSHOT_FILE: &str = "producer-state";

impl ProducerSnapshot {
    fn encode(&self) -> Vec<u8> {
        let t = &self.table;
        let mut b = Vec::with_capacity(32 + t.producers.len() * (11 + 24 * REMEMBERED_BATCHES));
        b.extend_from_slice(SNAPSHOT_MAGIC);
        b.push(SNAPSHOT_VERSION);
        b.extend_from_slice(&self.segment_base.to_be_bytes());
        b.extend_from_slice(&self.position.to_be_bytes());
        b.extend_from_slice(&(t.producers.len() as u32).to_be_bytes());
        let mut entries: Vec<_> = t.producers.iter().collect();
        entries.sort_unstable_by_key(|(_, e)| e.touched);
        for (id, e) in entries {
            b.extend_from_slice(&id.to_be_bytes());
            b.extend_from_slice(&e.epoch.to_be_bytes());
            b.push(e.recent.len() as u8);
            for w in &e.recent {
                b.extend_from_slice(&w.first_sequence.to_be_bytes());
                b.extend_from_slice(&w.last_sequence.to_be_bytes());
                b.extend_from_slice(&w.base_offset.to_be_bytes());
                b.extend_from_slice(&w.last_offset.to_be_bytes());
            }
        }
        let crc = crc32c::crc32c(&b);
        b.extend_from_slice(&crc.to_be_bytes());
        b
    }

    fn decode(b: &[u8]) -> Option<ProducerSnapshot> {
        let (body, crc) = b.split_at_checked(b.len().checked_sub(4)?)?;
        if u32::from_be_bytes(crc.try_into().ok()?) != crc32c::crc32c(body) {
            return None;
        }
        let mut r = Reader(body);
        if r.take(4)? != SNAPSHOT_MAGIC || r.take(1)?[0] != SNAPSHOT_VERSION {
            return None;
        }
        let segment_base = r.u64()?;
        let position = r.u64()?;
        let count = r.u32()? as usize;
        let mut table = ProducerTable::new();
        for _ in 0..count.min(MAX_PRODUCERS) {
            let id = r.u64()? as i64;
            let epoch = r.u16()? as i16;
            let n = r.take(1)?[0] as usize;
            if n > REMEMBERED_BATCHES {
                return None;
            }
            let mut recent = VecDeque::with_capacity(REMEMBERED_BATCHES);
            for _ in 0..n {
                recent.push_back(WrittenBatch {
                    first_sequence: r.u32()? as i32,
                    last_sequence: r.u32()? as i32,
                    base_offset: r.u64()?,
                    last_offset: r.u64()?,
                });
            }
            table.clock += 1;
            let touched = table.clock;
            table.producers.insert(
                id,
                ProducerEntry {
                    epoch,
                    recent,
                    touched,
                },
            );
        }
        r.0.is_empty().then_some(ProducerSnapshot {
            segment_base,
            position,
            table,
        })
    }

    /// Reads the partition's snapshot; `None` if missing or damaged.
    pub fn load(dir: &Path) -> Option<ProducerSnapshot> {
        let bytes = fs::read(dir.join(SNAPSHOT_FILE)).ok()?;
        let snapshot = ProducerSnapshot::decode(&bytes);
        if snapshot.is_none() {
            tracing::warn!(dir = %dir.display(), "producer state damaged; replaying the whole log");
        }
        snapshot
    }

    /// Replaces the partition's snapshot atomically (temp file, fsync, rename).
    pub fn store(&self, dir: &Path) -> io::Result<()> {
        let tmp = dir.join(format!("{SNAPSHOT_FILE}.tmp"));
        let mut f = fs::File::create(&tmp)?;
        f.write_all(&self.encode())?;
        f.sync_data()?;
        fs::rename(&tmp, dir.join(SNAPSHOT_FILE))
    }
}

/// Big-endian reads off the front of a slice.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = self.0.split_at_checked(n)?;
        self.0 = rest;
        Some(head)
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_be_bytes(self.take(2)?.try_into().ok()?))
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_be_bytes(self.take(8)?.try_into().ok()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(pid: i64, epoch: i16, seq: i32, records: u32) -> BatchHeader {
        let mut b = sluice_protocol::batch::BatchBuilder::new(0).producer(pid, epoch, seq);
        for _ in 0..records {
            b.push(0, None, Some(b"v"), &[]);
        }
        BatchHeader::parse(&b.finish()).unwrap()
    }

    #[test]
    fn sequences_must_follow_and_retries_are_recognised() {
        let mut t = ProducerTable::new();
        let a = header(7, 0, 0, 3);
        assert_eq!(t.check(&a).unwrap(), SequenceCheck::Append);
        t.record(&a, 100);
        let b = header(7, 0, 3, 2);
        assert_eq!(t.check(&b).unwrap(), SequenceCheck::Append);
        t.record(&b, 103);
        // A retry of either is a duplicate with its original offsets.
        assert_eq!(
            t.check(&a).unwrap(),
            SequenceCheck::Duplicate(WrittenBatch {
                first_sequence: 0,
                last_sequence: 2,
                base_offset: 100,
                last_offset: 102
            })
        );
        assert!(
            matches!(t.check(&b).unwrap(), SequenceCheck::Duplicate(w) if w.base_offset == 103)
        );
        // A gap is refused.
        assert!(matches!(
            t.check(&header(7, 0, 9, 1)),
            Err(LogError::OutOfOrderSequence {
                expected: 5,
                got: 9,
                ..
            })
        ));
        // An older epoch is fenced; a newer one starts at 0.
        assert!(matches!(
            t.check(&header(7, -1, 5, 1)),
            Err(LogError::ProducerFenced { .. })
        ));
        assert!(t.check(&header(7, 1, 3, 1)).is_err());
        assert_eq!(t.check(&header(7, 1, 0, 1)).unwrap(), SequenceCheck::Append);
        // Plain batches are never checked.
        assert_eq!(
            t.check(&header(-1, -1, -1, 1)).unwrap(),
            SequenceCheck::Append
        );
    }

    #[test]
    fn replays_of_older_batches_are_already_written() {
        let mut t = ProducerTable::new();
        for i in 0..10 {
            t.record(&header(3, 0, i, 1), i as u64);
        }
        assert!(t.check(&header(3, 0, 1, 1)).is_err());
        assert_eq!(
            t.check_replay(&header(3, 0, 1, 1)).unwrap(),
            SequenceCheck::AlreadyWritten
        );
        assert!(matches!(
            t.check_replay(&header(3, 0, 9, 1)).unwrap(),
            SequenceCheck::Duplicate(_)
        ));
        assert_eq!(
            t.check_replay(&header(3, 0, 10, 1)).unwrap(),
            SequenceCheck::Append
        );
        // A gap: a batch of the writer's was refused and dropped.
        assert_eq!(
            t.check_replay(&header(3, 0, 12, 1)).unwrap(),
            SequenceCheck::Append
        );
        assert_eq!(t.next_sequence(3), 10);
        assert_eq!(t.next_sequence(4), 0);
    }

    #[test]
    fn only_the_last_batches_are_remembered() {
        let mut t = ProducerTable::new();
        let first = header(1, 0, 0, 1);
        t.record(&first, 0);
        for i in 1..=REMEMBERED_BATCHES as i32 {
            t.record(&header(1, 0, i, 1), i as u64);
        }
        assert!(t.check(&first).is_err());
        assert!(matches!(
            t.check(&header(1, 0, 1, 1)).unwrap(),
            SequenceCheck::Duplicate(_)
        ));
    }

    #[test]
    fn snapshot_round_trips_and_rejects_damage() {
        let mut t = ProducerTable::new();
        for pid in 0..50 {
            for seq in 0..7 {
                t.record(&header(pid, 2, seq * 3, 3), (pid * 100 + seq as i64) as u64);
            }
        }
        let snap = ProducerSnapshot {
            segment_base: 42,
            position: 4096,
            table: t.clone(),
        };
        let dir = tempfile::tempdir().unwrap();
        snap.store(dir.path()).unwrap();
        let loaded = ProducerSnapshot::load(dir.path()).unwrap();
        assert_eq!((loaded.segment_base, loaded.position), (42, 4096));
        // Same answers as the table it was taken from.
        for pid in 0..50 {
            for seq in 0..8 {
                let h = header(pid, 2, seq * 3, 3);
                assert_eq!(loaded.table.check(&h).ok(), t.check(&h).ok());
            }
        }
        let path = dir.path().join(SNAPSHOT_FILE);
        let mut bytes = fs::read(&path).unwrap();
        bytes[30] ^= 1;
        fs::write(&path, &bytes).unwrap();
        assert!(ProducerSnapshot::load(dir.path()).is_none());
        fs::write(&path, &bytes[..3]).unwrap();
        assert!(ProducerSnapshot::load(dir.path()).is_none());
    }
}
