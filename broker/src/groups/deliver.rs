//! The delivery path of one partition: redeliveries re-read from the log,
//! new messages read, filtered and keyed into the window, both handed out
//! as whole stored batches plus the offset ranges meant for the member.

use super::tag_expr::TagExpr;
use sluice_protocol::batch::BatchIter;
use sluice_protocol::headers;
use sluice_protocol::ops::{DeliveredRange, GroupBatch, GroupDelivery, TopicPartition};

use super::window::{Delivered, MemberSlot, NewMessage, Window};
use super::{BatchFilter, copies};
use crate::log::{LogError, Partition};

/// Messages and bytes a take may still hand out.
#[derive(Debug)]
pub(super) struct Budget {
    pub messages: usize,
    pub bytes: usize,
}

impl Budget {
    pub(super) fn spent(&self) -> bool {
        self.messages == 0 || self.bytes == 0
    }
}

/// Appends `item` to `ranges`, merging it into the last range when it
/// continues it.
pub(super) fn push_range(ranges: &mut Vec<DeliveredRange>, d: Delivered) {
    if let Some(last) = ranges.last_mut()
        && last.attempt == d.attempt
        && last.first_offset + u64::from(last.count) == d.offset
    {
        last.count += 1;
        return;
    }
    ranges.push(DeliveredRange {
        first_offset: d.offset,
        count: 1,
        attempt: d.attempt,
    });
}

/// Adds the batches holding redelivered messages to `out`, one log read per
/// batch. A message retention deleted meanwhile is settled (it is gone).
pub(super) fn redeliver(
    partition: &Partition,
    tp: &TopicPartition,
    w: &mut Window,
    redo: &[Delivered],
    out: &mut GroupBatch,
    budget: &mut Budget,
) {
    let mut i = 0;
    while i < redo.len() {
        if budget.bytes == 0 {
            // The response is full: the rest waits for the next take.
            for d in &redo[i..] {
                w.untake(d.offset);
            }
            return;
        }
        let batch = match partition.read(redo[i].offset, 1) {
            Ok(read) => read.chunks.into_iter().next().and_then(|chunk| {
                let len = match BatchIter::new(&chunk).next() {
                    Some(Ok(b)) => (
                        b.header().base_offset,
                        b.header().next_offset(),
                        b.as_bytes().len(),
                    ),
                    _ => return None,
                };
                Some((chunk, len))
            }),
            Err(LogError::OffsetOutOfRange { .. }) => None,
            Err(e) => {
                tracing::warn!(topic = %tp.topic, partition = tp.partition, error = %e,
                    "reading a redelivery failed; it stays ready");
                for d in &redo[i..] {
                    w.untake(d.offset);
                }
                return;
            }
        };
        let Some((chunk, (first, next, len))) = batch else {
            // Retention deleted it: gone, so settled.
            w.ack(redo[i].offset);
            i += 1;
            continue;
        };
        let mut ranges = Vec::new();
        while i < redo.len() && redo[i].offset >= first && redo[i].offset < next {
            push_range(&mut ranges, redo[i]);
            i += 1;
        }
        if ranges.is_empty() {
            // The read started past it: deleted by retention.
            w.ack(redo[i].offset);
            i += 1;
            continue;
        }
        budget.bytes = budget.bytes.saturating_sub(len);
        out.deliveries.push(GroupDelivery {
            topic: tp.topic.clone(),
            partition: tp.partition,
            records: chunk.slice(..len),
            ranges,
        });
    }
}

/// Reads new messages of one partition into its window.
pub(super) struct NewReader<'a> {
    pub slot: MemberSlot,
    pub deadline: i64,
    pub max_in_flight: usize,
    pub filter: Option<&'a TagExpr>,
    /// The group's filter function, asked per stored batch.
    pub function: Option<&'a dyn BatchFilter>,
    pub group: &'a str,
    pub keyed: bool,
    pub is_retry: bool,
}

impl NewReader<'_> {
    fn room(&self, w: &Window, budget: &Budget) -> bool {
        !budget.spent() && w.len() < self.max_in_flight
    }

    pub(super) fn read(
        &self,
        partition: &Partition,
        tp: &TopicPartition,
        w: &mut Window,
        out: &mut GroupBatch,
        budget: &mut Budget,
    ) {
        if !self.room(w, budget) || w.end() >= partition.high_watermark() {
            return;
        }
        let read = match partition.read(w.end(), budget.bytes) {
            Ok(r) => r,
            Err(LogError::OffsetOutOfRange { start, .. }) if w.end() < start => {
                tracing::warn!(topic = %tp.topic, partition = tp.partition, from = w.end(), to = start,
                    "messages were deleted by retention before the group read them");
                w.reset(start);
                return;
            }
            Err(e) => {
                tracing::warn!(topic = %tp.topic, partition = tp.partition, error = %e, "group read failed");
                return;
            }
        };
        let parse = self.filter.is_some() || self.function.is_some() || self.keyed || self.is_retry;
        for chunk in &read.chunks {
            let mut span: Option<(usize, usize)> = None;
            let mut ranges = Vec::new();
            for batch in BatchIter::new(chunk) {
                let Ok(batch) = batch else { break };
                let h = *batch.header();
                if h.next_offset() <= w.end() {
                    continue;
                }
                if !self.room(w, budget) {
                    break;
                }
                let pos = batch.as_bytes().as_ptr() as usize - chunk.as_ptr() as usize;
                let len = batch.as_bytes().len();
                let left_before = budget.messages;
                if h.is_control() {
                    while w.end() < h.next_offset() {
                        w.push(self.slot, None, self.deadline);
                    }
                    continue;
                }
                if parse {
                    let verdicts = self.function.and_then(|f| {
                        f.verdicts(self.group, &tp.topic, tp.partition, batch.as_bytes())
                    });
                    for (i, r) in batch.records().flatten().enumerate() {
                        if r.offset < w.end() {
                            continue;
                        }
                        if !self.room(w, budget) {
                            break;
                        }
                        while w.end() < r.offset {
                            w.push(self.slot, None, self.deadline); // a gap: nothing there
                        }
                        let matched = self.filter.is_none_or(|f| {
                            f.matches(
                                r.headers()
                                    .flatten()
                                    .filter(|(k, _)| *k == headers::TAG)
                                    .filter_map(|(_, v)| v),
                            )
                        }) && verdicts
                            .as_ref()
                            .is_none_or(|v| v.get(i).copied().unwrap_or(true));
                        let message = matched.then(|| NewMessage {
                            key: if self.keyed { key_hash(r.key) } else { 0 },
                            attempts_before: if self.is_retry {
                                copies::attempts_of(r.header(headers::ATTEMPT))
                            } else {
                                0
                            },
                        });
                        if let Some(d) = w.push(self.slot, message, self.deadline) {
                            push_range(&mut ranges, d);
                            budget.messages -= 1;
                        }
                    }
                } else {
                    while w.end() < h.next_offset() && self.room(w, budget) {
                        let message = NewMessage {
                            key: 0,
                            attempts_before: 0,
                        };
                        if let Some(d) = w.push(self.slot, Some(message), self.deadline) {
                            push_range(&mut ranges, d);
                            budget.messages -= 1;
                        }
                    }
                }
                if budget.messages < left_before {
                    let (start, _) = *span.get_or_insert((pos, pos + len));
                    span = Some((start, pos + len));
                    budget.bytes = budget.bytes.saturating_sub(len);
                }
            }
            if let Some((start, end)) = span {
                out.deliveries.push(GroupDelivery {
                    topic: tp.topic.clone(),
                    partition: tp.partition,
                    records: chunk.slice(start..end),
                    ranges,
                });
            }
            if !self.room(w, budget) {
                break;
            }
        }
    }
}

/// A key's hash for per-key ordering; never 0 (0 = no key). Collisions only
/// serialise two keys, they never break an order.
pub(super) fn key_hash(key: Option<&[u8]>) -> u64 {
    use std::hash::{BuildHasher, BuildHasherDefault};
    let Some(k) = key else { return 0 };
    let h = BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default().hash_one(k);
    h.max(1)
}
