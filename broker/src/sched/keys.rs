//! Byte layouts of the scheduler's column families.
//!
//! | CF             | key                                        | value                                  |
//! |----------------|--------------------------------------------|----------------------------------------|
//! | `delays`       | [`DueKey`]: due ms u64 BE ++ seq u64 BE    | `1` ++ [`Entry`]                       |
//! | `delay_ids`    | delay id u64 BE                            | [`IdState`]                            |
//! | `delay_topics` | u16 BE len ++ topic ++ [`DueKey`]          | empty                                  |
//! | `delay_counts` | topic, UTF-8                               | i64 LE, summed by a merge operator     |
//! | `delay_state`  | `seq_limit`, `intent/<id u64 BE>`          | u64 BE / [`Intent`]                    |
//!
//! Big-endian integers make byte order numeric order, so an iterator over
//! `delays` returns messages in due order, and among equal due times in
//! the order they were scheduled (the sequence is global and increasing).
//! Values carry a version byte and every decoder reports damage as
//! [`SchedError::Corrupt`] instead of panicking.

use bytes::Bytes;
use sluice_protocol::codec::{Reader, Writer};
use sluice_protocol::ops::LoopSpec;
use sluice_protocol::ops::delay::{DelayedRecord, read_loop, write_loop};

use super::SchedError;

const ENTRY_VERSION: u8 = 1;
/// Intents written before batches carried the scheduler's producer stamp:
/// still read (a broker upgraded with a crash's leftovers), never written.
const INTENT_VERSION_UNSTAMPED: u8 = 1;
const INTENT_VERSION: u8 = 2;

/// Where a scheduled message sits in the due order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DueKey {
    pub due_ms: u64,
    pub seq: u64,
}

impl DueKey {
    pub const LEN: usize = 16;

    pub fn new(due_ms: u64, seq: u64) -> Self {
        DueKey { due_ms, seq }
    }

    /// The first key due at `due_ms`.
    pub fn start_of(due_ms: u64) -> Self {
        DueKey { due_ms, seq: 0 }
    }

    pub fn encode(self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&self.due_ms.to_be_bytes());
        b[8..].copy_from_slice(&self.seq.to_be_bytes());
        b
    }

    pub fn decode(b: &[u8]) -> Result<Self, SchedError> {
        if b.len() != Self::LEN {
            return Err(SchedError::corrupt(format!(
                "due key is {} bytes, not 16",
                b.len()
            )));
        }
        Ok(DueKey {
            due_ms: u64::from_be_bytes(b[..8].try_into().unwrap_or_default()),
            seq: u64::from_be_bytes(b[8..].try_into().unwrap_or_default()),
        })
    }

    /// The smallest key after this one.
    pub fn successor(self) -> Self {
        match self.seq.checked_add(1) {
            Some(seq) => DueKey { seq, ..self },
            None => DueKey::start_of(self.due_ms.saturating_add(1)),
        }
    }
}

/// A scheduled message as stored: where it goes and what it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Stable across a loop message's deliveries.
    pub delay_id: u64,
    pub topic: String,
    pub partition: u32,
    /// Which delivery this is, from 1.
    pub iteration: u32,
    /// For a loop message: `interval_ms` is the interval to the next
    /// delivery (it grows under exponential backoff).
    pub repeat: Option<LoopSpec>,
    pub record: DelayedRecord,
}

impl Entry {
    pub fn encode(&self) -> Bytes {
        let mut w = Writer::with_capacity(64 + self.record.approx_size());
        w.u8(ENTRY_VERSION)
            .u64(self.delay_id)
            .string(&self.topic)
            .u32(self.partition)
            .u32(self.iteration);
        write_loop(&mut w, &self.repeat);
        self.record.write(&mut w);
        w.finish()
    }

    pub fn decode(b: &[u8]) -> Result<Self, SchedError> {
        let mut r = Reader::new(Bytes::copy_from_slice(b));
        let corrupt = |e| SchedError::corrupt(format!("delay entry: {e}"));
        let version = r.u8("version").map_err(corrupt)?;
        if version != ENTRY_VERSION {
            return Err(SchedError::corrupt(format!(
                "delay entry has version {version}, this broker reads {ENTRY_VERSION}"
            )));
        }
        let entry = (|| {
            Ok(Entry {
                delay_id: r.u64("delay id")?,
                topic: r.string("topic")?,
                partition: r.u32("partition")?,
                iteration: r.u32("iteration")?,
                repeat: read_loop(&mut r)?,
                record: DelayedRecord::read(&mut r)?,
            })
        })()
        .map_err(corrupt)?;
        r.finish().map_err(corrupt)?;
        Ok(entry)
    }
}

/// What became of a delay id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdState {
    /// Waiting at this key.
    Pending(DueKey),
    /// Its last delivery was appended at this time.
    Delivered { at_ms: i64 },
    /// Cancelled at this time.
    Cancelled { at_ms: i64 },
    /// Dropped at this time because its topic or partition no longer exists.
    Dropped { at_ms: i64 },
}

impl IdState {
    pub fn encode(self) -> Vec<u8> {
        let mut b = Vec::with_capacity(17);
        match self {
            IdState::Pending(key) => {
                b.push(1);
                b.extend_from_slice(&key.encode());
            }
            IdState::Delivered { at_ms } => {
                b.push(2);
                b.extend_from_slice(&at_ms.to_be_bytes());
            }
            IdState::Cancelled { at_ms } => {
                b.push(3);
                b.extend_from_slice(&at_ms.to_be_bytes());
            }
            IdState::Dropped { at_ms } => {
                b.push(4);
                b.extend_from_slice(&at_ms.to_be_bytes());
            }
        }
        b
    }

    pub fn decode(b: &[u8]) -> Result<Self, SchedError> {
        let at = || -> Result<i64, SchedError> {
            b.get(1..9)
                .and_then(|s| s.try_into().ok())
                .map(i64::from_be_bytes)
                .ok_or_else(|| SchedError::corrupt("delay id state is too short"))
        };
        match b.first() {
            Some(1) => Ok(IdState::Pending(DueKey::decode(&b[1..])?)),
            Some(2) => Ok(IdState::Delivered { at_ms: at()? }),
            Some(3) => Ok(IdState::Cancelled { at_ms: at()? }),
            Some(4) => Ok(IdState::Dropped { at_ms: at()? }),
            _ => Err(SchedError::corrupt("delay id state has an unknown tag")),
        }
    }

    /// When a finished id finished, for the retention sweep (`None` while
    /// pending or unreadable).
    pub fn finished_at(b: &[u8]) -> Option<i64> {
        match IdState::decode(b).ok()? {
            IdState::Pending(_) => None,
            IdState::Delivered { at_ms }
            | IdState::Cancelled { at_ms }
            | IdState::Dropped { at_ms } => Some(at_ms),
        }
    }
}

pub fn id_key(delay_id: u64) -> [u8; 8] {
    delay_id.to_be_bytes()
}

/// The prefix of one topic's keys in `delay_topics`. Length-prefixed so
/// that no topic's keys are a prefix of another's.
pub fn topic_prefix(topic: &str) -> Vec<u8> {
    let mut b = Vec::with_capacity(2 + topic.len() + DueKey::LEN);
    b.extend_from_slice(&(topic.len() as u16).to_be_bytes());
    b.extend_from_slice(topic.as_bytes());
    b
}

pub fn topic_index_key(topic: &str, key: DueKey) -> Vec<u8> {
    let mut b = topic_prefix(topic);
    b.extend_from_slice(&key.encode());
    b
}

/// The due key at the end of a `delay_topics` key.
pub fn due_key_of_topic_index(b: &[u8]) -> Result<DueKey, SchedError> {
    if b.len() < 2 + DueKey::LEN {
        return Err(SchedError::corrupt("topic index key is too short"));
    }
    DueKey::decode(&b[b.len() - DueKey::LEN..])
}

/// Adds `delta` to a topic's pending count (a merge operand).
pub fn count_delta(delta: i64) -> [u8; 8] {
    delta.to_le_bytes()
}

pub fn decode_count(b: &[u8]) -> i64 {
    b.try_into().map(i64::from_le_bytes).unwrap_or(0)
}

/// Keys in `delay_state`.
#[derive(Debug)]
pub enum StateKey {}

impl StateKey {
    /// Sequence numbers below this may have been handed out (u64 BE).
    pub const SEQ_LIMIT: &'static [u8] = b"seq_limit";
    pub const INTENT_PREFIX: &'static [u8] = b"intent/";
    /// The idempotent-producer id the scheduler stamps its batches with
    /// (i64 BE), allocated once per data directory.
    pub const PRODUCER_ID: &'static [u8] = b"producer_id";

    pub fn intent(id: u64) -> Vec<u8> {
        let mut b = Self::INTENT_PREFIX.to_vec();
        b.extend_from_slice(&id.to_be_bytes());
        b
    }
}

/// A batch about to be appended, recorded before the append so that after
/// a crash the broker can tell whether it reached the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Intent {
    pub id: u64,
    pub topic: String,
    pub partition: u32,
    /// The partition's log end before the append: if the batch is in the
    /// log, it is at or after this offset.
    pub log_end_before: u64,
    /// The time the batch's records are stamped with.
    pub dispatch_ms: i64,
    /// The messages, in batch order.
    pub keys: Vec<DueKey>,
    /// The (producer id, base sequence) the batch is stamped with, so that
    /// appending it again after a crash is recognised by the partition's
    /// producer table like any producer's retry. `None` only for intents
    /// written by an older broker, resolved by searching the log.
    pub stamp: Option<(i64, i32)>,
}

impl Intent {
    pub fn encode(&self) -> Bytes {
        let mut w = Writer::with_capacity(64 + self.keys.len() * DueKey::LEN);
        w.u8(INTENT_VERSION)
            .string(&self.topic)
            .u32(self.partition)
            .u64(self.log_end_before)
            .i64(self.dispatch_ms)
            .count(self.keys.len());
        for k in &self.keys {
            w.u64(k.due_ms).u64(k.seq);
        }
        let (producer_id, base_sequence) = self.stamp.unwrap_or((-1, -1));
        w.i64(producer_id).u32(base_sequence as u32);
        w.finish()
    }

    pub fn decode(id: u64, b: &[u8]) -> Result<Self, SchedError> {
        let mut r = Reader::new(Bytes::copy_from_slice(b));
        let corrupt = |e| SchedError::corrupt(format!("dispatch intent: {e}"));
        let version = r.u8("version").map_err(corrupt)?;
        if version != INTENT_VERSION && version != INTENT_VERSION_UNSTAMPED {
            return Err(SchedError::corrupt(format!(
                "dispatch intent has unknown version {version} (this broker reads 1 and 2)"
            )));
        }
        let intent = (|| {
            let mut intent = Intent {
                id,
                topic: r.string("topic")?,
                partition: r.u32("partition")?,
                log_end_before: r.u64("log end")?,
                dispatch_ms: r.i64("dispatch time")?,
                keys: r.array("keys", 16, |r| {
                    Ok(DueKey::new(r.u64("due")?, r.u64("seq")?))
                })?,
                stamp: None,
            };
            if version == INTENT_VERSION {
                let producer_id = r.i64("producer id")?;
                let base_sequence = r.u32("base sequence")? as i32;
                intent.stamp = (producer_id >= 0).then_some((producer_id, base_sequence));
            }
            Ok(intent)
        })()
        .map_err(corrupt)?;
        r.finish().map_err(corrupt)?;
        Ok(intent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_protocol::ops::LoopBackoff;

    #[test]
    fn due_keys_sort_by_time_then_sequence() {
        let a = DueKey::new(5, 9).encode();
        let b = DueKey::new(6, 1).encode();
        let c = DueKey::new(6, 2).encode();
        assert!(a < b && b < c);
        assert_eq!(DueKey::decode(&c).unwrap(), DueKey::new(6, 2));
        assert!(DueKey::decode(&c[..15]).is_err());
        assert_eq!(DueKey::new(1, u64::MAX).successor(), DueKey::new(2, 0));
    }

    #[test]
    fn entries_and_states_round_trip() {
        let e = Entry {
            delay_id: 7,
            topic: "t".into(),
            partition: 3,
            iteration: 2,
            repeat: Some(LoopSpec {
                interval_ms: 100,
                times: 0,
                expire_at_ms: 99,
                backoff: LoopBackoff::Fixed,
            }),
            record: DelayedRecord {
                key: None,
                value: Bytes::from_static(b"v"),
                headers: vec![],
                timestamp: -1,
            },
        };
        let bytes = e.encode();
        assert_eq!(Entry::decode(&bytes).unwrap(), e);
        assert!(Entry::decode(&bytes[..bytes.len() - 1]).is_err());
        assert!(Entry::decode(b"\x09rubbish").is_err());
        for s in [
            IdState::Pending(DueKey::new(1, 2)),
            IdState::Delivered { at_ms: 5 },
            IdState::Cancelled { at_ms: 6 },
            IdState::Dropped { at_ms: 7 },
        ] {
            assert_eq!(IdState::decode(&s.encode()).unwrap(), s);
        }
        assert!(IdState::decode(&[9]).is_err());
        assert!(IdState::decode(&[2, 1]).is_err());
        let i = Intent {
            id: 4,
            topic: "t".into(),
            partition: 1,
            log_end_before: 100,
            dispatch_ms: 5,
            keys: vec![DueKey::new(1, 1), DueKey::new(1, 2)],
            stamp: Some((7, i32::MAX)),
        };
        assert_eq!(Intent::decode(4, &i.encode()).unwrap(), i);
        let unstamped = Intent {
            stamp: None,
            ..i.clone()
        };
        assert_eq!(Intent::decode(4, &unstamped.encode()).unwrap(), unstamped);
        // A version 1 intent (no stamp) from an older broker still reads.
        let mut v1 = unstamped.encode().to_vec();
        v1[0] = 1;
        v1.truncate(v1.len() - 12);
        assert_eq!(Intent::decode(4, &v1).unwrap(), unstamped);
        let mut v9 = v1.clone();
        v9[0] = 9;
        assert!(Intent::decode(4, &v9).is_err());
        assert_eq!(
            due_key_of_topic_index(&topic_index_key("t", DueKey::new(3, 4))).unwrap(),
            DueKey::new(3, 4)
        );
    }
}
