//! The message model: what a producer sends and a consumer receives.
//!
//! Covers DDMQ's model (topic, key, value, tags, properties) plus a unique,
//! time-ordered message id for tracing and consumer-side dedup. On the wire
//! a message is one Kafka record: key and value as they are, the id and the
//! tags as reserved `sluice.*` headers, properties as the other headers.

use std::fmt;

use bytes::Bytes;
use sluice_protocol::batch::Record;
use sluice_protocol::headers;

/// A 128-bit message id in the UUIDv7 layout: 48 bits of Unix milliseconds,
/// then random bits, so ids sort by creation time.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageId(pub [u8; 16]);

impl MessageId {
    /// A fresh UUIDv7: time-ordered, so ids sort by creation.
    pub fn new() -> Self {
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let mut b: [u8; 16] = rand::random();
        b[..6].copy_from_slice(&ms.to_be_bytes()[2..]);
        b[6] = (b[6] & 0x0f) | 0x70; // version 7
        b[8] = (b[8] & 0x3f) | 0x80; // RFC 4122 variant
        MessageId(b)
    }

    /// The id in 16 bytes; `None` for any other length.
    pub fn from_slice(b: &[u8]) -> Option<Self> {
        Some(MessageId(b.try_into().ok()?))
    }
}

impl Default for MessageId {
    fn default() -> Self {
        MessageId::new()
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, byte) in self.0.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                f.write_str("-")?;
            }
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MessageId({self})")
    }
}

/// Which partition a message goes to (DDMQ's partitionId: `>= 0` explicit,
/// `-1` by key hash, `-2` round robin).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Partitioning {
    /// By key hash when the message has a key, round robin otherwise.
    #[default]
    Auto,
    /// This partition.
    Explicit(u32),
    /// `crc32c(key) % partitions`: the same key always lands on the same
    /// partition, which orders a key's messages.
    ByKey,
    /// The next partition in turn, to spread load.
    RoundRobin,
}

impl Partitioning {
    /// DDMQ's integer form.
    pub fn from_ddmq(partition_id: i32) -> Self {
        match partition_id {
            p if p >= 0 => Partitioning::Explicit(p as u32),
            -1 => Partitioning::ByKey,
            _ => Partitioning::RoundRobin,
        }
    }
}

/// A message to send.
#[derive(Debug, Clone, Default)]
pub struct Message {
    /// The topic to append to.
    pub topic: String,
    /// Picks the partition under [`Partitioning::Auto`] and orders a
    /// key's messages.
    pub key: Option<Bytes>,
    /// The payload.
    pub value: Bytes,
    /// Tags that group tag filters match on.
    pub tags: Vec<String>,
    /// Application headers (reserved `sluice.` names are dropped).
    pub properties: Vec<(String, Bytes)>,
    /// Which partition it goes to.
    pub partitioning: Partitioning,
    /// Set at creation; kept across retries so consumers can dedup.
    pub id: MessageId,
    /// Milliseconds since the epoch; `None` = when it is sent.
    pub timestamp: Option<i64>,
}

impl Message {
    /// A message for `topic` with this value and no key.
    pub fn new(topic: impl Into<String>, value: impl Into<Bytes>) -> Self {
        Message {
            topic: topic.into(),
            value: value.into(),
            id: MessageId::new(),
            ..Message::default()
        }
    }

    /// Sets the key (partitioning, per-key order).
    pub fn key(mut self, key: impl Into<Bytes>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Adds a tag (for group tag filters).
    pub fn tag(mut self, tag: impl Into<String>) -> Self {
        self.tags.push(tag.into());
        self
    }

    /// A user property. Names starting with `sluice.` are reserved and dropped.
    pub fn property(mut self, name: impl Into<String>, value: impl Into<Bytes>) -> Self {
        self.properties.push((name.into(), value.into()));
        self
    }

    /// Sets how the partition is chosen.
    pub fn partition(mut self, p: Partitioning) -> Self {
        self.partitioning = p;
        self
    }

    /// Sets the timestamp (ms since the epoch); unset: the append time.
    pub fn timestamp(mut self, ms: i64) -> Self {
        self.timestamp = Some(ms);
        self
    }

    /// The record headers that carry id, tags and properties.
    pub(crate) fn headers(&self) -> Vec<(&str, Option<&[u8]>)> {
        let mut h = Vec::with_capacity(1 + self.tags.len() + self.properties.len());
        h.push((headers::MESSAGE_ID, Some(&self.id.0[..])));
        for t in &self.tags {
            h.push((headers::TAG, Some(t.as_bytes())));
        }
        for (k, v) in &self.properties {
            if !headers::is_reserved(k) {
                h.push((k.as_str(), Some(&v[..])));
            }
        }
        h
    }

    /// Bytes this message adds to a batch, roughly (for batching decisions).
    pub(crate) fn approx_size(&self) -> usize {
        32 + self.key.as_ref().map_or(0, |k| k.len())
            + self.value.len()
            + 32
            + self.tags.iter().map(|t| t.len() + 16).sum::<usize>()
            + self
                .properties
                .iter()
                .map(|(k, v)| k.len() + v.len() + 8)
                .sum::<usize>()
    }
}

/// A message as a consumer receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumedMessage {
    /// The topic it was read from.
    pub topic: String,
    /// Its partition.
    pub partition: u32,
    /// Its offset.
    pub offset: u64,
    /// Its timestamp (ms since the epoch).
    pub timestamp: i64,
    /// Its key.
    pub key: Option<Bytes>,
    /// Its payload.
    pub value: Bytes,
    /// Its tags.
    pub tags: Vec<String>,
    /// Its application headers.
    pub properties: Vec<(String, Bytes)>,
    /// `None` for records written by other clients without an id. Every
    /// delivery of a loop message carries the id of the scheduled message:
    /// dedup those by `(id, loop_iteration)`.
    pub id: Option<MessageId>,
    /// For a message the broker's scheduler delivered (see
    /// [`Client::schedule`](crate::Client::schedule)): the delay id it was
    /// scheduled under; `None` for a message produced directly.
    pub delay_id: Option<u64>,
    /// For each delivery of a loop message: which one it is, from 1.
    pub loop_iteration: Option<u32>,
    /// For a message the scheduler delivered: when it was due (ms since
    /// the epoch); its lateness is `timestamp - due_at` for a message
    /// stamped at delivery.
    pub due_at: Option<i64>,
    /// On a consumer group's retry copy or dead letter: where the message
    /// was first consumed from.
    pub origin: Option<Origin>,
    /// On a retry copy or dead letter: how many deliveries failed.
    pub failed_attempts: Option<u32>,
    /// On a dead letter: why its last delivery failed.
    pub dead_reason: Option<String>,
}

/// Where a retried or dead-lettered message was first consumed from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The topic it was first consumed from.
    pub topic: String,
    /// Its partition there.
    pub partition: u32,
    /// Its offset there.
    pub offset: u64,
}

impl ConsumedMessage {
    /// Decodes a fetched record; `buf` is the fetched buffer the record
    /// borrows from, so key and value share it instead of being copied.
    pub(crate) fn from_record(topic: &str, partition: u32, buf: &Bytes, r: &Record<'_>) -> Self {
        let mut tags = Vec::new();
        let mut properties = Vec::new();
        let mut id = None;
        let mut delay_id = None;
        let mut loop_iteration = None;
        let mut due_at = None;
        let (mut origin_topic, mut origin_partition, mut origin_offset) = (None, None, None);
        let mut failed_attempts = None;
        let mut dead_reason = None;
        for (name, value) in r.headers().flatten() {
            let value = value.unwrap_or_default();
            match name {
                headers::MESSAGE_ID => id = MessageId::from_slice(value),
                headers::DELAY_ID => delay_id = value.try_into().ok().map(u64::from_be_bytes),
                headers::DUE_AT => due_at = value.try_into().ok().map(i64::from_be_bytes),
                headers::LOOP_ITERATION => {
                    loop_iteration = value.try_into().ok().map(u32::from_be_bytes)
                }
                headers::TAG => tags.push(String::from_utf8_lossy(value).into_owned()),
                headers::ORIGIN_TOPIC => origin_topic = std::str::from_utf8(value).ok(),
                headers::ORIGIN_PARTITION => {
                    origin_partition = value.try_into().ok().map(u32::from_be_bytes)
                }
                headers::ORIGIN_OFFSET => {
                    origin_offset = value.try_into().ok().map(u64::from_be_bytes)
                }
                headers::ATTEMPT => failed_attempts = value.try_into().ok().map(u32::from_be_bytes),
                headers::DEAD_REASON => {
                    dead_reason = Some(String::from_utf8_lossy(value).into_owned())
                }
                n if headers::is_reserved(n) => {}
                n => properties.push((n.to_owned(), Bytes::copy_from_slice(value))),
            }
        }
        ConsumedMessage {
            topic: topic.to_owned(),
            partition,
            offset: r.offset,
            timestamp: r.timestamp,
            key: r.key.map(|k| buf.slice_ref(k)),
            value: r.value.map(|v| buf.slice_ref(v)).unwrap_or_default(),
            tags,
            properties,
            id,
            delay_id,
            loop_iteration,
            due_at,
            origin: match (origin_topic, origin_partition, origin_offset) {
                (Some(topic), Some(partition), Some(offset)) => Some(Origin {
                    topic: topic.to_owned(),
                    partition,
                    offset,
                }),
                _ => None,
            },
            failed_attempts,
            dead_reason,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_time_ordered_and_print_as_uuids() {
        let a = MessageId::new();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = MessageId::new();
        assert!(a < b);
        let s = a.to_string();
        assert_eq!(s.len(), 36);
        assert_eq!(&s[14..15], "7");
    }

    fn consumed(headers: &[(&str, Option<&[u8]>)]) -> ConsumedMessage {
        let mut b = sluice_protocol::batch::BatchBuilder::new(0);
        b.push(5, Some(b"k"), Some(b"v"), headers);
        let buf = b.finish();
        let batch = sluice_protocol::batch::BatchView::parse(&buf).unwrap();
        let record = batch.records().next().unwrap().unwrap();
        ConsumedMessage::from_record("t", 1, &buf, &record)
    }

    #[test]
    fn scheduler_headers_are_kept_apart_from_properties() {
        let id = MessageId::new();
        let m = consumed(&[
            (headers::MESSAGE_ID, Some(&id.0[..])),
            (
                headers::DELAY_ID,
                Some(&0x0102_0304_0506_0708u64.to_be_bytes()[..]),
            ),
            (headers::LOOP_ITERATION, Some(&3u32.to_be_bytes()[..])),
            ("trace", Some(b"abc")),
        ]);
        assert_eq!(m.id, Some(id));
        assert_eq!(m.delay_id, Some(0x0102_0304_0506_0708));
        assert_eq!(m.loop_iteration, Some(3));
        assert_eq!(m.properties, [("trace".into(), Bytes::from_static(b"abc"))]);
        assert_eq!(
            (m.key.as_deref(), &m.value[..]),
            (Some(&b"k"[..]), &b"v"[..])
        );

        let plain = consumed(&[("trace", Some(b"abc"))]);
        assert_eq!((plain.delay_id, plain.loop_iteration), (None, None));
        // Values of the wrong width are not guessed at.
        let odd = consumed(&[
            (headers::DELAY_ID, Some(&[1, 2, 3][..])),
            (headers::LOOP_ITERATION, None),
        ]);
        assert_eq!((odd.delay_id, odd.loop_iteration), (None, None));
        assert!(odd.properties.is_empty());
    }

    #[test]
    fn ddmq_partition_ids_map() {
        assert_eq!(Partitioning::from_ddmq(3), Partitioning::Explicit(3));
        assert_eq!(Partitioning::from_ddmq(-1), Partitioning::ByKey);
        assert_eq!(Partitioning::from_ddmq(-2), Partitioning::RoundRobin);
    }
}
