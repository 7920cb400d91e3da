//! The ack queue: settlements (acks and nacks) waiting to be sent, grouped
//! by the partition they were delivered from, with consecutive offsets
//! coalesced into ranges. Pure bookkeeping; [`super::settle`] sends them.

use std::sync::Arc;

use parking_lot::Mutex;
use sluice_protocol::ops::{Nack, OffsetRange, PartitionAcks, TopicPartition};
use tokio::sync::Notify;

/// Ack requests in flight at once per consumer: enough to keep acks
/// flowing while one waits for its answer, few enough that a stalled
/// broker makes acks queue up (and coalesce) locally.
pub(super) const ACK_REQUESTS_IN_FLIGHT: usize = 4;

/// Acks settled by the broker so far, as its answers counted them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AckStats {
    /// Messages the broker settled (acked, or nacked into a retry or the
    /// dead-letter topic).
    pub settled: u64,
    /// Settlements of messages no longer in flight (already settled, or
    /// their ack timeout passed and someone else settled them).
    pub stale: u64,
    /// Settlements whose request failed (connection lost, member gone): the
    /// broker delivers those messages again.
    pub failed: u64,
}

/// Settlements waiting to be sent; see the module docs.
#[derive(Debug)]
pub(super) struct AckQueue {
    pending: Mutex<PendingSettlements>,
    /// The first settlement after a send was queued.
    pub(super) queued: Notify,
    /// `max_batch` settlements are queued.
    pub(super) full: Notify,
    max_batch: usize,
}

#[derive(Debug, Default)]
struct PendingSettlements {
    /// Acked offsets per partition delivered from.
    acks: Vec<(Arc<TopicPartition>, Vec<u64>)>,
    /// The index in `acks` used last: messages come in runs from one partition.
    last: usize,
    nacks: Vec<Nack>,
    count: usize,
}

impl PendingSettlements {
    fn push_ack(&mut self, from: &Arc<TopicPartition>, offset: u64) {
        let same = |tp: &Arc<TopicPartition>| Arc::ptr_eq(tp, from) || **tp == **from;
        let i = match self.acks.get(self.last) {
            Some((tp, _)) if same(tp) => self.last,
            _ => match self.acks.iter().position(|(tp, _)| same(tp)) {
                Some(i) => i,
                None => {
                    self.acks.push((from.clone(), Vec::new()));
                    self.acks.len() - 1
                }
            },
        };
        self.last = i;
        self.acks[i].1.push(offset);
        self.count += 1;
    }

    fn into_batch(self) -> SettleBatch {
        SettleBatch {
            acks: self
                .acks
                .into_iter()
                .map(|(tp, mut offsets)| PartitionAcks {
                    topic: tp.topic.clone(),
                    partition: tp.partition,
                    ranges: coalesce(&mut offsets),
                })
                .collect(),
            nacks: self.nacks,
            messages: self.count,
        }
    }
}

/// Offsets as ascending ranges of consecutive offsets (duplicates dropped).
fn coalesce(offsets: &mut [u64]) -> Vec<OffsetRange> {
    offsets.sort_unstable();
    let mut out: Vec<OffsetRange> = Vec::new();
    for &o in offsets.iter() {
        if let Some(last) = out.last_mut() {
            let end = last.first_offset.saturating_add(u64::from(last.count));
            if o < end {
                continue;
            }
            if o == end && last.count < u32::MAX {
                last.count += 1;
                continue;
            }
        }
        out.push(OffsetRange {
            first_offset: o,
            count: 1,
        });
    }
    out
}

/// What one ack request carries.
#[derive(Debug, Clone)]
pub(super) struct SettleBatch {
    pub(super) acks: Vec<PartitionAcks>,
    pub(super) nacks: Vec<Nack>,
    /// Messages settled by it.
    pub(super) messages: usize,
}

impl AckQueue {
    pub(super) fn new(max_batch: usize) -> Self {
        AckQueue {
            pending: Mutex::default(),
            queued: Notify::new(),
            full: Notify::new(),
            max_batch: max_batch.max(1),
        }
    }

    pub(super) fn ack(&self, from: &Arc<TopicPartition>, offset: u64) {
        let count = {
            let mut p = self.pending.lock();
            p.push_ack(from, offset);
            p.count
        };
        self.signal(count);
    }

    pub(super) fn nack(&self, nack: Nack) {
        let count = {
            let mut p = self.pending.lock();
            p.nacks.push(nack);
            p.count += 1;
            p.count
        };
        self.signal(count);
    }

    fn signal(&self, count: usize) {
        if count == 1 {
            self.queued.notify_one();
        }
        if count == self.max_batch {
            self.full.notify_one();
        }
    }

    pub(super) fn is_full(&self) -> bool {
        self.pending.lock().count >= self.max_batch
    }

    pub(super) fn take(&self) -> Option<SettleBatch> {
        let mut p = self.pending.lock();
        if p.count == 0 {
            return None;
        }
        Some(std::mem::take(&mut *p).into_batch())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::group::test_support::{range, tp};

    #[test]
    fn acked_offsets_coalesce_into_ranges() {
        assert_eq!(coalesce(&mut []), []);
        assert_eq!(coalesce(&mut [7]), [range(7, 1)]);
        assert_eq!(
            coalesce(&mut [5, 3, 4, 9, 10, 4, 12, 0]),
            [range(0, 1), range(3, 3), range(9, 2), range(12, 1)],
            "sorted, duplicates dropped"
        );
        let mut many: Vec<u64> = (100..10_100).rev().collect();
        assert_eq!(coalesce(&mut many), [range(100, 10_000)]);
    }

    #[test]
    fn the_queue_says_when_it_is_full() {
        let q = Arc::new(AckQueue::new(3));
        let a = tp("t", 0);
        q.ack(&a, 1);
        q.ack(&a, 2);
        assert!(!q.is_full());
        q.ack(&a, 3);
        assert!(q.is_full());
        q.take();
        assert!(!q.is_full());
    }
}
