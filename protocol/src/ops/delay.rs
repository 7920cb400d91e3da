//! Delayed and loop delivery: schedule a message for later, cancel it, list
//! what is pending. The broker keeps scheduled messages in its scheduler
//! until they are due and then appends them to their topic.

use bytes::Bytes;

use super::{Payload, error_code};
use crate::codec::{DecodeError, Reader, Writer};
use crate::error::ErrorCode;

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
    Exponential { max_interval_ms: u64 },
}

/// A loop message (DDMQ's loop delay): delivered first when due, then again
/// every interval until it has been delivered `times` times or the next
/// delivery would fall after `expire_at_ms`, whichever comes first. At least
/// one of the two bounds is required.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoopSpec {
    pub interval_ms: u64,
    /// Total deliveries, the first included; 0 = bounded by `expire_at_ms` only.
    pub times: u32,
    /// No delivery is due after this time (ms since the epoch); -1 = no
    /// expiry, bounded by `times` only.
    pub expire_at_ms: i64,
    pub backoff: LoopBackoff,
}

/// The message a schedule carries: a record without an offset.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DelayedRecord {
    pub key: Option<Bytes>,
    pub value: Bytes,
    /// Record headers, the message id and tags included (see `headers`).
    pub headers: Vec<(String, Bytes)>,
    /// The record's timestamp; -1 = the time it is delivered.
    pub timestamp: i64,
}

/// One message to schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleEntry {
    pub topic: String,
    /// Chosen by the client (its partitioner), as for a produce.
    pub partition: u32,
    pub when: When,
    pub repeat: Option<LoopSpec>,
    pub record: DelayedRecord,
}

/// Schedules messages; each entry succeeds or fails on its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleRequest {
    pub entries: Vec<ScheduleEntry>,
}

/// The outcome of one entry, in request order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleResult {
    pub error: ErrorCode,
    pub message: String,
    /// The id to cancel it by (0 on error).
    pub delay_id: u64,
    /// When it is due, as the broker resolved `when` (ms since the epoch).
    pub due_at_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleResponse {
    pub results: Vec<ScheduleResult>,
}

fn write_when(w: &mut Writer, when: When) {
    match when {
        When::At(ms) => w.u8(0).i64(ms),
        When::After(ms) => w.u8(1).u64(ms),
    };
}

fn read_when(r: &mut Reader) -> Result<When, DecodeError> {
    match r.u8("when kind")? {
        0 => Ok(When::At(r.i64("due time")?)),
        1 => Ok(When::After(r.u64("delay")?)),
        v => Err(DecodeError::InvalidValue {
            what: "when kind",
            value: v as i64,
        }),
    }
}

/// Writes an optional loop spec (also the scheduler's storage encoding).
pub fn write_loop(w: &mut Writer, spec: &Option<LoopSpec>) {
    let Some(l) = spec else {
        w.bool(false);
        return;
    };
    w.bool(true)
        .u64(l.interval_ms)
        .u32(l.times)
        .i64(l.expire_at_ms);
    match l.backoff {
        LoopBackoff::Fixed => w.u8(0),
        LoopBackoff::Exponential { max_interval_ms } => w.u8(1).u64(max_interval_ms),
    };
}

/// Reads what [`write_loop`] wrote.
pub fn read_loop(r: &mut Reader) -> Result<Option<LoopSpec>, DecodeError> {
    if !r.bool("has loop")? {
        return Ok(None);
    }
    let interval_ms = r.u64("loop interval")?;
    let times = r.u32("loop times")?;
    let expire_at_ms = r.i64("loop expiry")?;
    let backoff = match r.u8("loop backoff")? {
        0 => LoopBackoff::Fixed,
        1 => LoopBackoff::Exponential {
            max_interval_ms: r.u64("loop max interval")?,
        },
        v => {
            return Err(DecodeError::InvalidValue {
                what: "loop backoff",
                value: v as i64,
            });
        }
    };
    Ok(Some(LoopSpec {
        interval_ms,
        times,
        expire_at_ms,
        backoff,
    }))
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
        match &self.key {
            Some(k) => w.bool(true).bytes(k),
            None => w.bool(false),
        };
        w.bytes(&self.value).i64(self.timestamp);
        w.count(self.headers.len());
        for (k, v) in &self.headers {
            w.string(k).bytes(v);
        }
    }

    pub fn read(r: &mut Reader) -> Result<Self, DecodeError> {
        let key = if r.bool("has key")? {
            Some(r.bytes("key")?)
        } else {
            None
        };
        Ok(DelayedRecord {
            key,
            value: r.bytes("value")?,
            timestamp: r.i64("timestamp")?,
            headers: r.array("headers", 6, |r| {
                Ok((r.string("header name")?, r.bytes("header value")?))
            })?,
        })
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

impl Payload for ScheduleRequest {
    fn write(&self, w: &mut Writer) {
        w.count(self.entries.len());
        for e in &self.entries {
            w.string(&e.topic).u32(e.partition);
            write_when(w, e.when);
            write_loop(w, &e.repeat);
            e.record.write(w);
        }
    }
    fn read(r: &mut Reader) -> Result<Self, DecodeError> {
        Ok(ScheduleRequest {
            entries: r.array("schedule entries", 30, |r| {
                Ok(ScheduleEntry {
                    topic: r.string("topic")?,
                    partition: r.u32("partition")?,
                    when: read_when(r)?,
                    repeat: read_loop(r)?,
                    record: DelayedRecord::read(r)?,
                })
            })?,
        })
    }
}

impl Payload for ScheduleResponse {
    fn write(&self, w: &mut Writer) {
        w.count(self.results.len());
        for res in &self.results {
            w.u16(res.error.to_u16())
                .string(&res.message)
                .u64(res.delay_id)
                .i64(res.due_at_ms);
        }
    }
    fn read(r: &mut Reader) -> Result<Self, DecodeError> {
        Ok(ScheduleResponse {
            results: r.array("schedule results", 20, |r| {
                Ok(ScheduleResult {
                    error: error_code(r)?,
                    message: r.string("error message")?,
                    delay_id: r.u64("delay id")?,
                    due_at_ms: r.i64("due time")?,
                })
            })?,
        })
    }
}

// ---------------------------------------------------------------- cancel

/// Cancels scheduled messages (a loop message stops looping).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CancelDelaysRequest {
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

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CancelResult {
    pub delay_id: u64,
    pub outcome: CancelOutcome,
    /// A sentence for people (when it was delivered or cancelled, ...).
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CancelDelaysResponse {
    pub results: Vec<CancelResult>,
}

impl Payload for CancelDelaysRequest {
    fn write(&self, w: &mut Writer) {
        w.count(self.ids.len());
        for id in &self.ids {
            w.u64(*id);
        }
    }
    fn read(r: &mut Reader) -> Result<Self, DecodeError> {
        Ok(CancelDelaysRequest {
            ids: r.array("delay ids", 8, |r| r.u64("delay id"))?,
        })
    }
}

impl Payload for CancelDelaysResponse {
    fn write(&self, w: &mut Writer) {
        w.count(self.results.len());
        for res in &self.results {
            w.u64(res.delay_id)
                .u8(res.outcome.to_u8())
                .string(&res.message);
        }
    }
    fn read(r: &mut Reader) -> Result<Self, DecodeError> {
        Ok(CancelDelaysResponse {
            results: r.array("cancel results", 11, |r| {
                Ok(CancelResult {
                    delay_id: r.u64("delay id")?,
                    outcome: CancelOutcome::from_u8(r.u8("cancel outcome")?)?,
                    message: r.string("message")?,
                })
            })?,
        })
    }
}

// ---------------------------------------------------------------- list

/// Pending scheduled messages per topic.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ListDelaysRequest {
    /// Only this topic; empty = every topic with pending messages.
    pub topic: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DelaySummary {
    pub topic: String,
    /// Messages waiting (a loop message counts once).
    pub pending: u64,
    /// The earliest due time among them (ms since the epoch), -1 if none.
    pub next_due_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListDelaysResponse {
    pub topics: Vec<DelaySummary>,
}

impl Payload for ListDelaysRequest {
    fn write(&self, w: &mut Writer) {
        w.string(&self.topic);
    }
    fn read(r: &mut Reader) -> Result<Self, DecodeError> {
        Ok(ListDelaysRequest {
            topic: r.string("topic")?,
        })
    }
}

impl Payload for ListDelaysResponse {
    fn write(&self, w: &mut Writer) {
        w.count(self.topics.len());
        for t in &self.topics {
            w.string(&t.topic).u64(t.pending).i64(t.next_due_ms);
        }
    }
    fn read(r: &mut Reader) -> Result<Self, DecodeError> {
        Ok(ListDelaysResponse {
            topics: r.array("topics", 18, |r| {
                Ok(DelaySummary {
                    topic: r.string("topic")?,
                    pending: r.u64("pending")?,
                    next_due_ms: r.i64("next due")?,
                })
            })?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
