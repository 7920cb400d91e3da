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
//! The table lives in memory and is rebuilt when a partition opens from the
//! batch headers in the last [`REBUILD_WINDOW_BYTES`] of the active segment:
//! enough for the batches in flight when the broker stopped, which are the
//! ones a producer retries. A producer the table does not know (new, or older
//! than the window) is accepted at whatever sequence it sends.

use std::collections::{HashMap, VecDeque};

use sluice_protocol::batch::BatchHeader;

use super::LogError;

/// Batches remembered per producer (the client's in-flight limit per partition).
pub const REMEMBERED_BATCHES: usize = 5;
/// Tail of the active segment scanned at open to rebuild the table.
pub const REBUILD_WINDOW_BYTES: u64 = 4 << 20;
/// Producers remembered per partition; the least recently seen are dropped first.
const MAX_PRODUCERS: usize = 10_000;

/// A batch a producer wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WrittenBatch {
    pub first_sequence: i32,
    pub last_sequence: i32,
    pub base_offset: u64,
    pub last_offset: u64,
}

#[derive(Debug)]
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
}

#[derive(Debug, Default)]
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
}
