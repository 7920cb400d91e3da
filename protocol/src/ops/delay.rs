//! Delayed and loop delivery: schedule a message for later, cancel it, list
//! what is pending. The broker keeps scheduled messages in its scheduler
//! until they are due and then appends them to their topic.

use bytes::Bytes;

use crate::codec::{DecodeError, Reader, Wire, Writer};
use crate::error::ErrorCode;
use crate::{wire_struct, wire_u8_enum};

/// When a scheduled message is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    /// At an absolute time, in milliseconds since the Unix epoch. A time in
    /// the past is due at once.
    At(i64),
    /// This many milliseconds after the broker accepts the request.
    After(u64),
}

/// How the interval between loop deliveries evolves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoopBackoff {
    /// The same interval every time.
    Fixed,
    /// The interval doubles after each delivery, up to `max_interval_ms`
    /// (0 = no cap).
    Exponential {
        /// Cap of the doubling interval, ms; 0 = no cap, otherwise at least the loop's interval.
        max_interval_ms: u64,
    },
}

/// A loop message (DDMQ's loop delay): delivered first when due, then again
/// every interval until it has been delivered `times` times or the next
/// delivery would fall after `expire_at_ms`, whichever comes first. At least
/// one of the two bounds is required.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoopSpec {
    /// Time between due times, ms: at least 10 and no longer than the scheduler's horizon. Each due time counts from the previous one, so a late delivery does not shift the rest.
    pub interval_ms: u64,
    /// Total deliveries, the first included; 0 = bounded by `expire_at_ms` only.
    pub times: u32,
    /// No delivery is due after this time (ms since the epoch); -1 = no
    /// expiry, bounded by `times` only.
    pub expire_at_ms: i64,
    /// Whether the interval stays fixed or doubles.
    pub backoff: LoopBackoff,
}

/// The message a schedule carries: a record without an offset.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DelayedRecord {
    /// The record key, `None` for none; the client's partitioner already used it to pick the partition.
    pub key: Option<Bytes>,
    /// The record value.
    pub value: Bytes,
    /// Record headers, the message id and tags included (see `headers`).
    pub headers: Vec<(String, Bytes)>,
    /// The record's timestamp; -1 = the time it is delivered.
    pub timestamp: i64,
}

/// One message to schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleEntry {
    /// Topic to append to when due; a topic deleted by then drops the message.
    pub topic: String,
    /// Chosen by the client (its partitioner), as for a produce.
    pub partition: u32,
    /// When it is (first) due; further ahead than the scheduler's horizon is `INVALID_ARGUMENT`.
    pub when: When,
    /// `Some` for a loop message, delivered repeatedly.
    pub repeat: Option<LoopSpec>,
    /// What is appended when due.
    pub record: DelayedRecord,
}

/// Schedules messages; each entry succeeds or fails on its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleRequest {
    /// Messages to schedule, answered in this order.
    pub entries: Vec<ScheduleEntry>,
}

/// The outcome of one entry, in request order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleResult {
    /// [`ErrorCode::None`] on success; the other entries are unaffected by this one's error.
    pub error: ErrorCode,
    /// What went wrong; empty on success.
    pub message: String,
    /// The id to cancel it by (0 on error).
    pub delay_id: u64,
    /// When it is due, as the broker resolved `when` (ms since the epoch).
    pub due_at_ms: i64,
}

/// Answers a schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleResponse {
    /// One per entry, in request order.
    pub results: Vec<ScheduleResult>,
}

/// `u8 kind`, then 0: `i64` due time; 1: `u64` delay.
impl Wire for When {
    const MIN_LEN: usize = 9;
    fn encode_to(&self, w: &mut Writer) {
        match *self {
            When::At(ms) => w.u8(0).i64(ms),
            When::After(ms) => w.u8(1).u64(ms),
        };
    }
    fn decode_from(r: &mut Reader, _: &'static str) -> Result<Self, DecodeError> {
        match r.u8("when kind")? {
            0 => Ok(When::At(r.i64("due time")?)),
            1 => Ok(When::After(r.u64("delay")?)),
            v => Err(DecodeError::InvalidValue {
                what: "when kind",
                value: v as i64,
            }),
        }
    }
}

/// `u8 kind`, then for exponential: `u64 max_interval_ms`.
impl Wire for LoopBackoff {
    const MIN_LEN: usize = 1;
    fn encode_to(&self, w: &mut Writer) {
        match *self {
            LoopBackoff::Fixed => w.u8(0),
            LoopBackoff::Exponential { max_interval_ms } => w.u8(1).u64(max_interval_ms),
        };
    }
    fn decode_from(r: &mut Reader, _: &'static str) -> Result<Self, DecodeError> {
        match r.u8("loop backoff")? {
            0 => Ok(LoopBackoff::Fixed),
            1 => Ok(LoopBackoff::Exponential {
                max_interval_ms: r.u64("loop max interval")?,
            }),
            v => Err(DecodeError::InvalidValue {
                what: "loop backoff",
                value: v as i64,
            }),
        }
    }
}

/// Writes an optional loop spec (also the scheduler's storage encoding).
pub fn write_loop(w: &mut Writer, spec: &Option<LoopSpec>) {
    spec.encode_to(w);
}

/// Reads what [`write_loop`] wrote.
pub fn read_loop(r: &mut Reader) -> Result<Option<LoopSpec>, DecodeError> {
    Option::decode_from(r, "loop")
}

impl DelayedRecord {
    /// A record with this value and nothing else: no key, no headers,
    /// stamped when it is delivered.
    pub fn with_value(value: impl Into<Bytes>) -> Self {
        DelayedRecord {
            key: None,
            value: value.into(),
            headers: Vec::new(),
            timestamp: -1,
        }
    }

    /// Writes the record (also the scheduler's storage encoding of it).
    pub fn write(&self, w: &mut Writer) {
        self.encode_to(w);
    }

    /// Reads what [`DelayedRecord::write`] wrote.
    pub fn read(r: &mut Reader) -> Result<Self, DecodeError> {
        Self::decode_from(r, "record")
    }

    /// Bytes the record takes, roughly (for size limits).
    pub fn approx_size(&self) -> usize {
        16 + self.key.as_ref().map_or(0, |k| k.len())
            + self.value.len()
            + self
                .headers
                .iter()
                .map(|(k, v)| k.len() + v.len() + 8)
                .sum::<usize>()
    }
}

// ---------------------------------------------------------------- cancel

/// Cancels scheduled messages (a loop message stops looping).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CancelDelaysRequest {
    /// Delay ids, as [`ScheduleResult::delay_id`] gave them.
    pub ids: Vec<u64>,
}

/// What happened to one id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelOutcome {
    /// It was pending and will not be delivered (again).
    Cancelled,
    /// Too late: it has been delivered (a loop message: its last delivery),
    /// or it is being delivered right now.
    AlreadyDelivered,
    /// It had been cancelled before.
    AlreadyCancelled,
    /// No such id, or it finished longer ago than the broker remembers.
    Unknown,
}

impl CancelOutcome {
    fn to_u8(self) -> u8 {
        match self {
            CancelOutcome::Cancelled => 0,
            CancelOutcome::AlreadyDelivered => 1,
            CancelOutcome::AlreadyCancelled => 2,
            CancelOutcome::Unknown => 3,
        }
    }

    fn from_u8(v: u8) -> Result<Self, DecodeError> {
        Ok(match v {
            0 => CancelOutcome::Cancelled,
            1 => CancelOutcome::AlreadyDelivered,
            2 => CancelOutcome::AlreadyCancelled,
            3 => CancelOutcome::Unknown,
            v => {
                return Err(DecodeError::InvalidValue {
                    what: "cancel outcome",
                    value: v as i64,
                });
            }
        })
    }
}

/// The outcome of cancelling one id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CancelResult {
    /// The id asked about.
    pub delay_id: u64,
    /// What happened to it.
    pub outcome: CancelOutcome,
    /// A sentence for people (when it was delivered or cancelled, ...).
    pub message: String,
}

/// Answers a cancel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CancelDelaysResponse {
    /// One per id, in request order.
    pub results: Vec<CancelResult>,
}

// ---------------------------------------------------------------- list

/// Pending scheduled messages per topic.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ListDelaysRequest {
    /// Only this topic; empty = every topic with pending messages.
    pub topic: String,
}

/// Pending scheduled messages of one topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DelaySummary {
    /// Topic name.
    pub topic: String,
    /// Messages waiting (a loop message counts once).
    pub pending: u64,
    /// The earliest due time among them (ms since the epoch), -1 if none.
    pub next_due_ms: i64,
}

/// Answers a list of delays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListDelaysResponse {
    /// One per topic with pending messages, sorted by name; a topic with none is left out.
    pub topics: Vec<DelaySummary>,
}

wire_u8_enum!(CancelOutcome);
wire_struct!(LoopSpec {
    interval_ms,
    times,
    expire_at_ms,
    backoff
});
wire_struct!(DelayedRecord {
    key,
    value,
    timestamp,
    headers
});
wire_struct!(ScheduleEntry {
    topic,
    partition,
    when,
    repeat,
    record
});
wire_struct!(ScheduleRequest { entries });
wire_struct!(ScheduleResult {
    error,
    message,
    delay_id,
    due_at_ms
});
wire_struct!(ScheduleResponse { results });
wire_struct!(CancelDelaysRequest { ids });
wire_struct!(CancelResult {
    delay_id,
    outcome,
    message
});
wire_struct!(CancelDelaysResponse { results });
wire_struct!(ListDelaysRequest { topic });
wire_struct!(DelaySummary {
    topic,
    pending,
    next_due_ms
});
wire_struct!(ListDelaysResponse { topics });

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::Payload;

    fn round_trip<P: Payload + std::fmt::Debug + PartialEq>(p: P) {
        let bytes = p.encode();
        assert_eq!(P::decode(bytes.clone()).unwrap(), p);
        for cut in 0..bytes.len() {
            assert!(P::decode(bytes.slice(..cut)).is_err());
        }
    }

    #[test]
    fn delay_payloads_round_trip() {
        round_trip(ScheduleRequest {
            entries: vec![
                ScheduleEntry {
                    topic: "t".into(),
                    partition: 1,
                    when: When::After(500),
                    repeat: None,
                    record: DelayedRecord {
                        key: Some(Bytes::from_static(b"k")),
                        value: Bytes::from_static(b"v"),
                        headers: vec![("h".into(), Bytes::from_static(b"x"))],
                        timestamp: -1,
                    },
                },
                ScheduleEntry {
                    topic: "u".into(),
                    partition: 0,
                    when: When::At(1_700_000_000_000),
                    repeat: Some(LoopSpec {
                        interval_ms: 1000,
                        times: 5,
                        expire_at_ms: -1,
                        backoff: LoopBackoff::Exponential {
                            max_interval_ms: 60_000,
                        },
                    }),
                    record: DelayedRecord::default(),
                },
            ],
        });
        round_trip(ScheduleResponse {
            results: vec![ScheduleResult {
                error: ErrorCode::InvalidArgument,
                message: "too far".into(),
                delay_id: 0,
                due_at_ms: 5,
            }],
        });
        round_trip(CancelDelaysRequest { ids: vec![1, 2, 3] });
        round_trip(CancelDelaysResponse {
            results: vec![CancelResult {
                delay_id: 9,
                outcome: CancelOutcome::AlreadyDelivered,
                message: "delivered at 5".into(),
            }],
        });
        round_trip(ListDelaysRequest { topic: "t".into() });
        round_trip(ListDelaysResponse {
            topics: vec![DelaySummary {
                topic: "t".into(),
                pending: 3,
                next_due_ms: 77,
            }],
        });
    }

    #[test]
    fn unknown_enum_values_are_refused() {
        let mut w = Writer::new();
        w.count(1).string("t").u32(0).u8(7).bytes(&[0; 32]);
        assert!(matches!(
            ScheduleRequest::decode(w.finish()),
            Err(DecodeError::InvalidValue {
                what: "when kind",
                ..
            })
        ));
    }
}
