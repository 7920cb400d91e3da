//! The delivery path of one partition, in two halves so that the group
//! lock is never held across I/O or guest code:
//!
//! - *read* (no lock): redeliveries are re-read from the log; new messages
//!   are read, parsed, judged by the tag filter and the filter function,
//!   and keyed — into a [`NewRead`], which says what to push, not how the
//!   window looks;
//! - *apply* (under the lock, no I/O): [`apply_redelivered`] and
//!   [`apply_new`] put the result into the window and the response, if the
//!   window is still the one the read was planned against (its epoch).
//!
//! Both hand out whole stored batches plus the offset ranges meant for the
//! member.

use std::ops::Range;

use bytes::Bytes;
use sluice_protocol::batch::BatchIter;
use sluice_protocol::headers;
use sluice_protocol::ops::{DeliveredRange, GroupBatch, GroupDelivery, TopicPartition};

use super::tag_expr::TagExpr;
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

/// What re-reading redeliveries found.
#[derive(Debug, Default)]
pub(super) struct Redelivered {
    pub deliveries: Vec<GroupDelivery>,
    /// Not sent after all (the response was full, or reading failed):
    /// ready again, attempt not counted.
    pub untake: Vec<u64>,
    /// Deleted by retention meanwhile: settled (they are gone).
    pub gone: Vec<u64>,
}

/// Reads the batches holding redelivered messages, one log read per batch.
pub(super) fn read_redeliveries(
    partition: &Partition,
    tp: &TopicPartition,
    redo: &[Delivered],
    budget: &mut Budget,
) -> Redelivered {
    let mut out = Redelivered::default();
    let mut i = 0;
    while i < redo.len() {
        if budget.bytes == 0 {
            // The response is full: the rest waits for the next take.
            out.untake.extend(redo[i..].iter().map(|d| d.offset));
            break;
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
                out.untake.extend(redo[i..].iter().map(|d| d.offset));
                break;
            }
        };
        let Some((chunk, (first, next, len))) = batch else {
            out.gone.push(redo[i].offset);
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
            out.gone.push(redo[i].offset);
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
    out
}

/// Puts what [`read_redeliveries`] found into the window and the response.
pub(super) fn apply_redelivered(w: &mut Window, found: Redelivered, out: &mut GroupBatch) {
    for offset in found.untake {
        w.untake(offset);
    }
    for offset in found.gone {
        w.ack(offset);
    }
    out.deliveries.extend(found.deliveries);
}

/// How to read new messages of one partition, fixed under the lock.
pub(super) struct NewReader<'a> {
    /// The window's end when the read was claimed.
    pub from: u64,
    /// Most messages (delivered or not) to push: the window's free room
    /// when the read was claimed, which acks can only grow.
    pub room: usize,
    pub filter: Option<&'a TagExpr>,
    /// The group's filter function, asked per stored batch.
    pub function: Option<&'a dyn BatchFilter>,
    pub group: &'a str,
    pub keyed: bool,
    pub is_retry: bool,
}

/// One stored batch of a read and the entries it gave.
#[derive(Debug)]
struct ReadBatch {
    chunk: usize,
    bytes: Range<usize>,
    entries: Range<usize>,
}

/// New messages read for a window, to push in order from `from`.
#[derive(Debug, Default)]
pub(super) struct NewRead {
    pub from: u64,
    /// One per offset from `from`: `None` = nothing to deliver (filtered
    /// out, a gap, a control record) and settled at once.
    entries: Vec<Option<NewMessage>>,
    chunks: Vec<Bytes>,
    batches: Vec<ReadBatch>,
    /// Retention deleted messages the window had not read: it restarts
    /// here.
    pub restart_at: Option<u64>,
}

impl NewReader<'_> {
    /// Reads from `from`, spending the budget on what matches.
    pub(super) fn read(
        &self,
        partition: &Partition,
        tp: &TopicPartition,
        budget: &mut Budget,
    ) -> NewRead {
        let mut out = NewRead {
            from: self.from,
            ..NewRead::default()
        };
        if self.room == 0 || budget.spent() || self.from >= partition.high_watermark() {
            return out;
        }
        let read = match partition.read(self.from, budget.bytes) {
            Ok(r) => r,
            Err(LogError::OffsetOutOfRange { start, .. }) if self.from < start => {
                tracing::warn!(topic = %tp.topic, partition = tp.partition, from = self.from, to = start,
                    "messages were deleted by retention before the group read them");
                out.restart_at = Some(start);
                return out;
            }
            Err(e) => {
                tracing::warn!(topic = %tp.topic, partition = tp.partition, error = %e, "group read failed");
                return out;
            }
        };
        let parse = self.filter.is_some() || self.function.is_some() || self.keyed || self.is_retry;
        let full =
            |out: &NewRead, budget: &Budget| out.entries.len() >= self.room || budget.spent();
        for (ci, chunk) in read.chunks.iter().enumerate() {
            for batch in BatchIter::new(chunk) {
                let Ok(batch) = batch else { break };
                let h = *batch.header();
                let end = out.end();
                if h.next_offset() <= end {
                    continue;
                }
                if full(&out, budget) {
                    break;
                }
                let pos = batch.as_bytes().as_ptr() as usize - chunk.as_ptr() as usize;
                let len = batch.as_bytes().len();
                let first_entry = out.entries.len();
                let left_before = budget.messages;
                if h.is_control() {
                    while out.end() < h.next_offset() && !full(&out, budget) {
                        out.entries.push(None);
                    }
                    continue;
                }
                if parse {
                    let verdicts = self.function.and_then(|f| {
                        f.verdicts(self.group, &tp.topic, tp.partition, batch.as_bytes())
                    });
                    for (i, r) in batch.records().flatten().enumerate() {
                        if r.offset < out.end() {
                            continue;
                        }
                        while out.end() < r.offset && !full(&out, budget) {
                            out.entries.push(None); // a gap: nothing there
                        }
                        if full(&out, budget) {
                            break;
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
                        if message.is_some() {
                            budget.messages -= 1;
                        }
                        out.entries.push(message);
                    }
                } else {
                    let plain = NewMessage {
                        key: 0,
                        attempts_before: 0,
                    };
                    while out.end() < h.next_offset() && !full(&out, budget) {
                        out.entries.push(Some(plain));
                        budget.messages -= 1;
                    }
                }
                if budget.messages < left_before {
                    budget.bytes = budget.bytes.saturating_sub(len);
                }
                out.batches.push(ReadBatch {
                    chunk: ci,
                    bytes: pos..pos + len,
                    entries: first_entry..out.entries.len(),
                });
            }
            if full(&out, budget) {
                break;
            }
        }
        out.chunks = read.chunks;
        out
    }
}

impl NewRead {
    fn end(&self) -> u64 {
        self.from + self.entries.len() as u64
    }

    /// Whether nothing was read.
    pub(super) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Pushes what [`NewReader::read`] found into the window (whose end must be
/// `read.from`) and adds the batches with deliveries to `out`.
pub(super) fn apply_new(
    w: &mut Window,
    slot: MemberSlot,
    deadline: i64,
    read: NewRead,
    tp: &TopicPartition,
    out: &mut GroupBatch,
) {
    debug_assert_eq!(w.end(), read.from);
    let mut entries = read.entries.into_iter();
    let mut pushed = 0;
    // Per chunk, one delivery spanning its batches that delivered something.
    let mut current: Option<(usize, Range<usize>, Vec<DeliveredRange>)> = None;
    let flush = |current: &mut Option<(usize, Range<usize>, Vec<DeliveredRange>)>,
                 out: &mut GroupBatch| {
        if let Some((chunk, bytes, ranges)) = current.take() {
            out.deliveries.push(GroupDelivery {
                topic: tp.topic.clone(),
                partition: tp.partition,
                records: read.chunks[chunk].slice(bytes),
                ranges,
            });
        }
    };
    for b in &read.batches {
        // Entries between batches (none today) and before this one.
        while pushed < b.entries.start {
            let Some(e) = entries.next() else { break };
            w.push(slot, e, deadline);
            pushed += 1;
        }
        let mut ranges = Vec::new();
        while pushed < b.entries.end {
            let Some(e) = entries.next() else { break };
            if let Some(d) = w.push(slot, e, deadline) {
                push_range(&mut ranges, d);
            }
            pushed += 1;
        }
        if ranges.is_empty() {
            continue;
        }
        match &mut current {
            Some((chunk, bytes, rs)) if *chunk == b.chunk => {
                bytes.end = b.bytes.end;
                for r in ranges {
                    match rs.last_mut() {
                        Some(last)
                            if last.attempt == r.attempt
                                && last.first_offset + u64::from(last.count) == r.first_offset =>
                        {
                            last.count += r.count;
                        }
                        _ => rs.push(r),
                    }
                }
            }
            _ => {
                flush(&mut current, out);
                current = Some((b.chunk, b.bytes.clone(), ranges));
            }
        }
    }
    for e in entries {
        w.push(slot, e, deadline);
    }
    flush(&mut current, out);
}

/// A key's hash for per-key ordering; never 0 (0 = no key). Collisions only
/// serialise two keys, they never break an order.
pub(super) fn key_hash(key: Option<&[u8]>) -> u64 {
    use std::hash::{BuildHasher, BuildHasherDefault};
    let Some(k) = key else { return 0 };
    let h = BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default().hash_one(k);
    h.max(1)
}
