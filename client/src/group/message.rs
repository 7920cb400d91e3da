//! What a group member receives: [`GroupMessage`] and the [`AckHandle`]
//! that settles it, parsed out of a poll's answer or a pushed batch.

use std::fmt;
use std::ops::Deref;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use sluice_protocol::batch::{BatchIter, Record};
use sluice_protocol::ops::{
    DeliveredRange, GroupBatch, GroupDelivery, Nack, NackAction, TopicPartition,
};

use super::acks::AckQueue;
use super::config::millis_u32;
use crate::error::{ClientError, Result};
use crate::message::ConsumedMessage;

/// A message delivered to a group member: the message (with the
/// coordinates it was first consumed at, see [`GroupMessage::delivered_from`]),
/// its attempt, and how to settle it.
///
/// Settling is cheap and does not wait: it queues into the consumer's
/// batched acker. Only the first settlement of a message counts (clones
/// share it). Dropping a message unsettled does nothing; the broker
/// delivers it again after the group's ack timeout.
#[derive(Debug, Clone)]
pub struct GroupMessage {
    message: ConsumedMessage,
    attempt: u16,
    handle: AckHandle,
}

impl GroupMessage {
    /// The message itself (also reachable through `Deref`).
    pub fn message(&self) -> &ConsumedMessage {
        &self.message
    }

    /// The message, dropping the settlement handle (unsettled: it comes
    /// back after the ack timeout unless settled through a kept handle).
    pub fn into_message(self) -> ConsumedMessage {
        self.message
    }

    /// Which delivery this is: 1 for the first.
    pub fn attempt(&self) -> u16 {
        self.attempt
    }

    /// Where this delivery came from: the message's own coordinates, or,
    /// for a retry, the retry topic's partition and offset. Settlements
    /// name these.
    pub fn delivered_from(&self) -> (&str, u32, u64) {
        (
            self.handle.topic(),
            self.handle.partition(),
            self.handle.offset(),
        )
    }

    /// A handle that settles this message, to keep after the message is
    /// consumed or to pass elsewhere.
    pub fn ack_handle(&self) -> AckHandle {
        self.handle.clone()
    }

    /// Whether it was acked or nacked already (by any clone).
    pub fn is_settled(&self) -> bool {
        self.handle.is_settled()
    }

    /// Done: the message will not be delivered again. False when it was
    /// already settled.
    pub fn ack(&self) -> bool {
        self.handle.ack()
    }

    /// Failed: retry after the group's retry-ladder delay for this attempt
    /// (the dead-letter topic after the last attempt). `reason` is kept
    /// with a dead letter.
    pub fn nack(&self, reason: impl Into<String>) -> bool {
        self.handle.nack(reason)
    }

    /// Failed: retry after `delay` (whole milliseconds).
    pub fn retry_after(&self, delay: Duration, reason: impl Into<String>) -> bool {
        self.handle.retry_after(delay, reason)
    }

    /// Failed for good: straight to the dead-letter topic.
    pub fn dead_letter(&self, reason: impl Into<String>) -> bool {
        self.handle.dead_letter(reason)
    }
}

impl Deref for GroupMessage {
    type Target = ConsumedMessage;

    fn deref(&self) -> &ConsumedMessage {
        &self.message
    }
}

/// Settles one delivered message; see [`GroupMessage`]. Clones share the
/// settlement: only the first counts.
#[derive(Clone)]
pub struct AckHandle(Arc<HandleInner>);

struct HandleInner {
    /// Where it was delivered from (shared by the messages of a delivery).
    from: Arc<TopicPartition>,
    offset: u64,
    settled: AtomicBool,
    queue: Arc<AckQueue>,
}

impl fmt::Debug for AckHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AckHandle")
            .field("topic", &self.topic())
            .field("partition", &self.partition())
            .field("offset", &self.offset())
            .field("settled", &self.is_settled())
            .finish()
    }
}

impl AckHandle {
    pub(super) fn new(from: Arc<TopicPartition>, offset: u64, queue: Arc<AckQueue>) -> Self {
        AckHandle(Arc::new(HandleInner {
            from,
            offset,
            settled: AtomicBool::new(false),
            queue,
        }))
    }

    /// The topic it was delivered from (the retry topic for a retry).
    pub fn topic(&self) -> &str {
        &self.0.from.topic
    }

    /// The partition it was delivered from.
    pub fn partition(&self) -> u32 {
        self.0.from.partition
    }

    /// The offset it was delivered from.
    pub fn offset(&self) -> u64 {
        self.0.offset
    }

    /// Whether it was acked or nacked already (by any clone).
    pub fn is_settled(&self) -> bool {
        self.0.settled.load(Ordering::Acquire)
    }

    /// Marks it settled; true for the first caller only.
    fn claim(&self) -> bool {
        !self.0.settled.swap(true, Ordering::AcqRel)
    }

    /// See [`GroupMessage::ack`].
    pub fn ack(&self) -> bool {
        let first = self.claim();
        if first {
            self.0.queue.ack(&self.0.from, self.0.offset);
        }
        first
    }

    fn settle_failed(&self, action: NackAction, reason: String) -> bool {
        let first = self.claim();
        if first {
            self.0.queue.nack(Nack {
                topic: self.0.from.topic.clone(),
                partition: self.0.from.partition,
                offset: self.0.offset,
                action,
                reason,
            });
        }
        first
    }

    /// See [`GroupMessage::nack`].
    pub fn nack(&self, reason: impl Into<String>) -> bool {
        self.settle_failed(NackAction::Retry, reason.into())
    }

    /// See [`GroupMessage::retry_after`].
    pub fn retry_after(&self, delay: Duration, reason: impl Into<String>) -> bool {
        self.settle_failed(NackAction::RetryAfter(millis_u32(delay)), reason.into())
    }

    /// See [`GroupMessage::dead_letter`].
    pub fn dead_letter(&self, reason: impl Into<String>) -> bool {
        self.settle_failed(NackAction::DeadLetter, reason.into())
    }
}

/// Parses a poll's answer or a pushed batch into messages, keeping only the
/// records inside the delivered ranges.
pub(super) fn parse_batch(
    batch: &GroupBatch,
    retry_topic: &str,
    queue: &Arc<AckQueue>,
) -> Result<Vec<GroupMessage>> {
    let mut out = Vec::with_capacity(batch.message_count());
    for d in &batch.deliveries {
        parse_delivery(d, retry_topic, queue, &mut out)?;
    }
    Ok(out)
}

fn range_end(r: &DeliveredRange) -> u64 {
    r.first_offset.saturating_add(u64::from(r.count))
}

fn parse_delivery(
    d: &GroupDelivery,
    retry_topic: &str,
    queue: &Arc<AckQueue>,
    out: &mut Vec<GroupMessage>,
) -> Result<()> {
    if d.ranges.is_empty() {
        return Ok(());
    }
    let corrupt = |e: sluice_protocol::batch::BatchError| {
        ClientError::Corrupt(format!("{}/{}: {e}", d.topic, d.partition))
    };
    let mut ranges = d.ranges.clone();
    ranges.sort_unstable_by_key(|r| r.first_offset);
    let from = Arc::new(TopicPartition {
        topic: d.topic.clone(),
        partition: d.partition,
    });
    let from_retry = d.topic == retry_topic;
    // Records and ranges both ascend: one cursor walks the ranges.
    let mut i = 0;
    'batches: for batch in BatchIter::new(&d.records) {
        let batch = batch.map_err(corrupt)?;
        let header = batch.header();
        if header.is_control() {
            continue;
        }
        while i < ranges.len() && range_end(&ranges[i]) <= header.base_offset {
            i += 1;
        }
        if i == ranges.len() {
            break;
        }
        if header.last_offset() < ranges[i].first_offset {
            continue; // nothing of this batch is ours: skip without decoding
        }
        for record in batch.records() {
            let record = record.map_err(corrupt)?;
            while i < ranges.len() && range_end(&ranges[i]) <= record.offset {
                i += 1;
            }
            let Some(range) = ranges.get(i) else {
                break 'batches;
            };
            if record.offset < range.first_offset {
                continue;
            }
            out.push(GroupMessage {
                message: visible_message(&d.records, &from, &record, from_retry),
                attempt: range.attempt,
                handle: AckHandle::new(from.clone(), record.offset, queue.clone()),
            });
        }
    }
    Ok(())
}

/// The message as the application sees it: a retry shows the topic,
/// partition and offset it was first consumed at (from its origin headers).
fn visible_message(
    buf: &Bytes,
    from: &TopicPartition,
    record: &Record<'_>,
    from_retry: bool,
) -> ConsumedMessage {
    let mut m = ConsumedMessage::from_record(&from.topic, from.partition, buf, record);
    if from_retry && let Some(origin) = &m.origin {
        m.topic = origin.topic.clone();
        m.partition = origin.partition;
        m.offset = origin.offset;
    }
    m
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;
    use sluice_protocol::batch::{BatchBuilder, set_base_offset};
    use sluice_protocol::headers;
    use sluice_protocol::ops::PartitionAcks;
    use sluice_protocol::ops::group::retry_topic;

    use super::*;
    use crate::group::test_support::{range, tp};

    fn queue() -> Arc<AckQueue> {
        Arc::new(AckQueue::new(1024))
    }

    #[test]
    fn settlements_group_by_partition_and_settle_once() {
        let q = queue();
        let (a, b) = (tp("orders", 0), tp("orders", 1));
        let h =
            |from: &Arc<TopicPartition>, offset| AckHandle::new(from.clone(), offset, q.clone());
        for o in [10, 11, 12] {
            assert!(h(&a, o).ack());
        }
        h(&b, 4).ack();
        // A different Arc for the same partition lands in the same entry.
        h(&tp("orders", 0), 13).ack();
        let failed = h(&a, 20);
        assert!(failed.retry_after(Duration::from_millis(1500), "db down"));
        assert!(!failed.ack(), "settled already");
        assert!(failed.is_settled());
        let msg = GroupMessage {
            message: test_message(),
            attempt: 1,
            handle: h(&b, 5),
        };
        let copy = msg.clone();
        assert!(msg.dead_letter("poison"));
        assert!(!copy.ack(), "clones share the settlement");
        h(&a, 21).nack("later");

        let batch = q.take().expect("something queued");
        assert!(q.take().is_none());
        assert_eq!(batch.messages, 8);
        assert_eq!(
            batch.acks,
            [
                PartitionAcks {
                    topic: "orders".into(),
                    partition: 0,
                    ranges: vec![range(10, 4)],
                },
                PartitionAcks {
                    topic: "orders".into(),
                    partition: 1,
                    ranges: vec![range(4, 1)],
                },
            ]
        );
        let nacks: Vec<_> = batch
            .nacks
            .iter()
            .map(|n| (n.partition, n.offset, n.action, n.reason.as_str()))
            .collect();
        assert_eq!(
            nacks,
            [
                (0, 20, NackAction::RetryAfter(1500), "db down"),
                (1, 5, NackAction::DeadLetter, "poison"),
                (0, 21, NackAction::Retry, "later"),
            ]
        );
    }

    fn test_message() -> ConsumedMessage {
        let mut b = BatchBuilder::new(0);
        b.push(1, None, Some(b"v"), &[]);
        let buf = b.finish();
        let batch = sluice_protocol::batch::BatchView::parse(&buf).unwrap();
        let record = batch.records().next().unwrap().unwrap();
        ConsumedMessage::from_record("t", 0, &buf, &record)
    }

    /// A batch of `values.len()` records starting at `base`.
    fn batch_at(base: u64, values: &[&str], headers: &[(&str, Option<&[u8]>)]) -> Bytes {
        let mut b = BatchBuilder::new(1_000);
        for v in values {
            b.push(1_000, Some(b"k"), Some(v.as_bytes()), headers);
        }
        let mut buf = BytesMut::from(&b.finish()[..]);
        set_base_offset(&mut buf, base);
        buf.freeze()
    }

    fn delivered(first_offset: u64, count: u32, attempt: u16) -> DeliveredRange {
        DeliveredRange {
            first_offset,
            count,
            attempt,
        }
    }

    #[test]
    fn only_records_in_the_delivered_ranges_are_handed_out() {
        let mut records = BytesMut::new();
        records.extend_from_slice(&batch_at(10, &["a", "b", "c", "d"], &[]));
        records.extend_from_slice(&batch_at(14, &["e", "f"], &[]));
        records.extend_from_slice(&batch_at(16, &["g", "h", "i"], &[]));
        let batch = GroupBatch {
            generation: 3,
            deliveries: vec![GroupDelivery {
                topic: "orders".into(),
                partition: 2,
                records: records.freeze(),
                // Out of order on purpose; the middle batch holds none of them.
                ranges: vec![delivered(17, 5, 1), delivered(11, 2, 3)],
            }],
        };
        let q = queue();
        let msgs = parse_batch(&batch, "sluice.retry.g", &q).unwrap();
        let got: Vec<_> = msgs
            .iter()
            .map(|m| (&m.value[..], m.offset, m.attempt(), m.delivered_from()))
            .collect();
        assert_eq!(
            got,
            [
                (&b"b"[..], 11, 3, ("orders", 2, 11)),
                (&b"c"[..], 12, 3, ("orders", 2, 12)),
                (&b"h"[..], 17, 1, ("orders", 2, 17)),
                (&b"i"[..], 18, 1, ("orders", 2, 18)),
            ]
        );
        assert!(msgs.iter().all(|m| m.topic == "orders" && m.partition == 2));
        assert_eq!(msgs[0].key.as_deref(), Some(&b"k"[..]));

        // No ranges: nothing, even with records.
        let mut none = batch.clone();
        none.deliveries[0].ranges.clear();
        assert!(parse_batch(&none, "sluice.retry.g", &q).unwrap().is_empty());
        // A corrupt buffer is an error, not a silent skip.
        let mut bad = batch;
        bad.deliveries[0].records = Bytes::from_static(b"not a batch at all, clearly too short");
        assert!(matches!(
            parse_batch(&bad, "sluice.retry.g", &q),
            Err(ClientError::Corrupt(_))
        ));
    }

    #[test]
    fn retries_show_their_origin_and_ack_where_they_came_from() {
        let origin_headers: &[(&str, Option<&[u8]>)] = &[
            (headers::ORIGIN_TOPIC, Some(b"orders")),
            (headers::ORIGIN_PARTITION, Some(&5u32.to_be_bytes())),
            (headers::ORIGIN_OFFSET, Some(&1234u64.to_be_bytes())),
            (headers::ATTEMPT, Some(&1u32.to_be_bytes())),
            ("trace", Some(b"abc")),
        ];
        let retry = retry_topic("g");
        let delivery = |topic: &str, headers| GroupDelivery {
            topic: topic.into(),
            partition: 1,
            records: batch_at(40, &["x"], headers),
            ranges: vec![delivered(40, 1, 2)],
        };
        let q = queue();
        let batch = GroupBatch {
            generation: 1,
            deliveries: vec![delivery(&retry, origin_headers)],
        };
        let msgs = parse_batch(&batch, &retry, &q).unwrap();
        let m = &msgs[0];
        assert_eq!(
            (m.topic.as_str(), m.partition, m.offset, m.attempt()),
            ("orders", 5, 1234, 2)
        );
        assert_eq!(m.delivered_from(), (retry.as_str(), 1, 40));
        assert_eq!(
            m.properties,
            [("trace".into(), Bytes::from_static(b"abc"))],
            "reserved headers are not properties"
        );
        m.ack();
        let settled = q.take().unwrap();
        assert_eq!(
            (
                settled.acks[0].topic.as_str(),
                settled.acks[0].partition,
                &settled.acks[0].ranges[..]
            ),
            (retry.as_str(), 1, &[range(40, 1)][..]),
            "the ack names the retry topic"
        );

        // Origin headers on another topic's message are not followed.
        let batch = GroupBatch {
            generation: 1,
            deliveries: vec![delivery("orders", origin_headers)],
        };
        let m = &parse_batch(&batch, &retry, &q).unwrap()[0];
        assert_eq!((m.topic.as_str(), m.partition, m.offset), ("orders", 1, 40));

        // A retry copy with malformed origin headers keeps its own coordinates.
        let broken: &[(&str, Option<&[u8]>)] = &[
            (headers::ORIGIN_TOPIC, Some(b"orders")),
            (headers::ORIGIN_PARTITION, Some(&[0, 5])),
            (headers::ORIGIN_OFFSET, Some(&1234u64.to_be_bytes())),
        ];
        let batch = GroupBatch {
            generation: 1,
            deliveries: vec![delivery(&retry, broken)],
        };
        let m = &parse_batch(&batch, &retry, &q).unwrap()[0];
        assert_eq!(
            (m.topic.as_str(), m.partition, m.offset),
            (retry.as_str(), 1, 40)
        );
    }
}
