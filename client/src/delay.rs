//! Delayed and loop delivery: hand the broker a message to append to its
//! topic later, once or repeatedly, and cancel or list what is pending.
//!
//! ```no_run
//! # async fn demo(client: sluice_client::Client) -> sluice_client::Result<()> {
//! use std::time::Duration;
//! use sluice_client::{DelayedMessage, Loop, Message};
//!
//! // Once, in 30 minutes.
//! let reminder = Message::new("reminders", "pay invoice 42").key("customer-7");
//! let scheduled = client
//!     .schedule(DelayedMessage::after(reminder, Duration::from_secs(30 * 60)))
//!     .await?;
//!
//! // Now, then every 5 s, 3 deliveries in all.
//! let poll = Message::new("jobs", "check order 42");
//! client
//!     .schedule(
//!         DelayedMessage::after(poll, Duration::ZERO)
//!             .repeat(Loop::every(Duration::from_secs(5)).times(3)),
//!     )
//!     .await?;
//!
//! client.cancel_delay(scheduled.delay_id).await?;
//! # Ok(()) }
//! ```
//!
//! The scheduled message is appended as a produce would append it: same
//! partition choice ([`Partitioning`](crate::Partitioning)), key, value, id,
//! tags and properties, plus the reserved headers `sluice.delay-id` and, on
//! loop deliveries, `sluice.loop-iteration`, which a consumer reads as
//! [`ConsumedMessage::delay_id`](crate::ConsumedMessage::delay_id) and
//! [`ConsumedMessage::loop_iteration`](crate::ConsumedMessage::loop_iteration).
//! A message without a timestamp gets the time it is delivered.

use std::time::Duration;

pub use sluice_protocol::ops::{
    CancelOutcome, CancelResult, DelaySummary, LoopBackoff, LoopSpec, When,
};
use sluice_protocol::ops::{DelayedRecord, ScheduleEntry, ScheduleRequest};
use sluice_protocol::{ErrorCode, WireError};

use bytes::Bytes;

use crate::Client;
use crate::error::{ClientError, Result};
use crate::message::Message;

/// A message to deliver later: the message, when, and whether to repeat.
///
/// ```
/// use std::time::Duration;
/// use sluice_client::{DelayedMessage, Loop, Message, When};
///
/// let d = DelayedMessage::at(Message::new("orders", "expire cart"), 1_900_000_000_000)
///     .repeat(Loop::every(Duration::from_secs(60)).times(5).exponential(None));
/// assert_eq!(d.when, When::At(1_900_000_000_000));
/// assert_eq!(d.repeat.unwrap().times, 5);
/// ```
#[derive(Debug, Clone)]
pub struct DelayedMessage {
    /// Topic, partitioning, key, value, id, tags, properties and timestamp
    /// (`None`: the time of delivery), as for a produce.
    pub message: Message,
    /// When it is (first) due.
    pub when: When,
    /// `None`: delivered once.
    pub repeat: Option<LoopSpec>,
}

impl DelayedMessage {
    /// Due `when`, delivered once.
    pub fn new(message: Message, when: When) -> Self {
        DelayedMessage {
            message,
            when,
            repeat: None,
        }
    }

    /// Due `delay` after the broker accepts it (whole milliseconds;
    /// `Duration::ZERO` is due at once).
    pub fn after(message: Message, delay: Duration) -> Self {
        DelayedMessage::new(message, When::After(millis(delay)))
    }

    /// Due at `at_ms` milliseconds since the Unix epoch; a time in the past
    /// is due at once. The broker refuses times beyond its horizon (two
    /// years by default) with [`ErrorCode::InvalidArgument`].
    pub fn at(message: Message, at_ms: i64) -> Self {
        DelayedMessage::new(message, When::At(at_ms))
    }

    /// Makes it a loop message (see [`Loop`]).
    pub fn repeat(mut self, spec: impl Into<LoopSpec>) -> Self {
        self.repeat = Some(spec.into());
        self
    }

    fn into_entry(self, partition: u32) -> ScheduleEntry {
        let m = &self.message;
        let headers = m
            .headers()
            .into_iter()
            .map(|(name, value)| {
                (
                    name.to_owned(),
                    Bytes::copy_from_slice(value.unwrap_or_default()),
                )
            })
            .collect();
        let record = DelayedRecord {
            key: m.key.clone(),
            value: m.value.clone(),
            headers,
            timestamp: m.timestamp.unwrap_or(-1),
        };
        ScheduleEntry {
            topic: self.message.topic,
            partition,
            when: self.when,
            repeat: self.repeat,
            record,
        }
    }
}

/// Builds a [`LoopSpec`]: delivered when due, then every interval, until
/// `times` deliveries or until the next one would fall after `until`,
/// whichever comes first. The broker requires at least one of the two
/// bounds and an interval of at least 10 ms ([`ErrorCode::InvalidArgument`]
/// otherwise).
///
/// ```
/// use std::time::Duration;
/// use sluice_client::{Loop, LoopBackoff};
///
/// // 1 s, 2 s, 4 s, 8 s, then every 10 s, 20 deliveries in all.
/// let spec = Loop::every(Duration::from_secs(1))
///     .times(20)
///     .exponential(Some(Duration::from_secs(10)))
///     .spec();
/// assert_eq!(spec.backoff, LoopBackoff::Exponential { max_interval_ms: 10_000 });
/// assert_eq!(spec.expire_at_ms, -1);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Loop(LoopSpec);

impl Loop {
    /// Every `interval` (whole milliseconds), with neither bound set yet.
    pub fn every(interval: Duration) -> Loop {
        Loop(LoopSpec {
            interval_ms: millis(interval),
            times: 0,
            expire_at_ms: -1,
            backoff: LoopBackoff::Fixed,
        })
    }

    /// At most `n` deliveries, the first included.
    pub fn times(mut self, n: u32) -> Loop {
        self.0.times = n;
        self
    }

    /// No delivery after `expire_at_ms` (milliseconds since the Unix epoch).
    pub fn until(mut self, expire_at_ms: i64) -> Loop {
        self.0.expire_at_ms = expire_at_ms;
        self
    }

    /// Doubles the interval after each delivery, up to `max_interval`
    /// (`None`: no cap).
    pub fn exponential(mut self, max_interval: Option<Duration>) -> Loop {
        self.0.backoff = LoopBackoff::Exponential {
            max_interval_ms: max_interval.map_or(0, millis),
        };
        self
    }

    /// The wire form of the loop.
    pub fn spec(self) -> LoopSpec {
        self.0
    }
}

impl From<Loop> for LoopSpec {
    fn from(l: Loop) -> LoopSpec {
        l.0
    }
}

/// A message the broker accepted for later delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scheduled {
    /// The id to cancel it by; its deliveries carry it in `sluice.delay-id`.
    pub delay_id: u64,
    /// When it is (first) due, milliseconds since the Unix epoch.
    pub due_at_ms: i64,
    /// The partition it will be appended to.
    pub partition: u32,
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Client {
    /// Schedules one message (see [`DelayedMessage`]).
    ///
    /// ```no_run
    /// # async fn demo(client: sluice_client::Client) -> sluice_client::Result<()> {
    /// use std::time::Duration;
    /// use sluice_client::{DelayedMessage, Message};
    /// let s = client
    ///     .schedule(DelayedMessage::after(Message::new("orders", "late"), Duration::from_secs(10)))
    ///     .await?;
    /// println!("delay {} due at {}", s.delay_id, s.due_at_ms);
    /// # Ok(()) }
    /// ```
    pub async fn schedule(&self, msg: DelayedMessage) -> Result<Scheduled> {
        let mut results = self.schedule_batch(vec![msg]).await?;
        results.pop().expect("one result per message")
    }

    /// Schedules many messages in one request. The outer error fails them
    /// all (the request did not get an answer); otherwise each message has
    /// its own result, in input order, a broker refusal as
    /// [`ClientError::Broker`] with the entry's code (e.g.
    /// [`ErrorCode::InvalidArgument`]).
    ///
    /// ```no_run
    /// # async fn demo(client: sluice_client::Client) -> sluice_client::Result<()> {
    /// use std::time::Duration;
    /// use sluice_client::{DelayedMessage, Message};
    /// let msgs = (0..10)
    ///     .map(|i| DelayedMessage::after(Message::new("orders", format!("m{i}")), Duration::from_secs(i)))
    ///     .collect();
    /// for r in client.schedule_batch(msgs).await? {
    ///     println!("{:?}", r.map(|s| s.delay_id));
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn schedule_batch(
        &self,
        msgs: Vec<DelayedMessage>,
    ) -> Result<Vec<Result<Scheduled>>> {
        let mut out: Vec<Option<Result<Scheduled>>> = (0..msgs.len()).map(|_| None).collect();
        let mut entries = Vec::with_capacity(msgs.len());
        // (input index, partition) of each entry sent.
        let mut sent = Vec::with_capacity(msgs.len());
        for (i, msg) in msgs.into_iter().enumerate() {
            match self
                .partitioner
                .partition_for(&self.conn, &msg.message)
                .await
            {
                Ok(partition) => {
                    entries.push(msg.into_entry(partition));
                    sent.push((i, partition));
                }
                Err(e) => out[i] = Some(Err(e)),
            }
        }
        if !entries.is_empty() {
            let resp = self.conn.request(&ScheduleRequest { entries }).await?;
            if resp.results.len() != sent.len() {
                return Err(ClientError::Corrupt(format!(
                    "{} schedule result(s) for {} message(s)",
                    resp.results.len(),
                    sent.len()
                )));
            }
            for ((i, partition), r) in sent.into_iter().zip(resp.results) {
                out[i] = Some(if r.error == ErrorCode::None {
                    Ok(Scheduled {
                        delay_id: r.delay_id,
                        due_at_ms: r.due_at_ms,
                        partition,
                    })
                } else {
                    Err(ClientError::Broker(WireError::new(r.error, r.message)))
                });
            }
        }
        Ok(out
            .into_iter()
            .map(|r| r.expect("every message has a result"))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use sluice_protocol::headers;

    use super::*;
    use crate::message::Partitioning;

    #[test]
    fn loops_build_their_spec() {
        let every = Loop::every(Duration::from_millis(20));
        assert_eq!(
            every.spec(),
            LoopSpec {
                interval_ms: 20,
                times: 0,
                expire_at_ms: -1,
                backoff: LoopBackoff::Fixed,
            }
        );
        let spec: LoopSpec = every
            .times(3)
            .until(1_900_000_000_000)
            .exponential(Some(Duration::from_secs(2)))
            .into();
        assert_eq!(
            spec,
            LoopSpec {
                interval_ms: 20,
                times: 3,
                expire_at_ms: 1_900_000_000_000,
                backoff: LoopBackoff::Exponential {
                    max_interval_ms: 2000
                },
            }
        );
        assert_eq!(
            every.exponential(None).spec().backoff,
            LoopBackoff::Exponential { max_interval_ms: 0 }
        );
        // Sub-millisecond parts are dropped; absurd durations saturate.
        assert_eq!(
            Loop::every(Duration::from_micros(10_900))
                .spec()
                .interval_ms,
            10
        );
        assert_eq!(Loop::every(Duration::MAX).spec().interval_ms, u64::MAX);
    }

    #[test]
    fn delayed_messages_say_when() {
        let m = || Message::new("t", "v");
        assert_eq!(
            DelayedMessage::after(m(), Duration::from_millis(1500)).when,
            When::After(1500)
        );
        assert_eq!(
            DelayedMessage::after(m(), Duration::ZERO).when,
            When::After(0)
        );
        let d = DelayedMessage::at(m(), 5);
        assert_eq!((d.when, d.repeat), (When::At(5), None));
        let spec = Loop::every(Duration::from_secs(1)).times(2);
        assert_eq!(d.repeat(spec).repeat, Some(spec.spec()));
    }

    #[test]
    fn entries_carry_the_message_as_a_produce_would() {
        let msg = Message::new("orders", "hello")
            .key("customer-7")
            .tag("eu")
            .tag("vip")
            .property("trace", "abc")
            .property("sluice.delay-id", "forged")
            .partition(Partitioning::Explicit(2));
        let id = msg.id;
        let e = DelayedMessage::after(msg, Duration::from_secs(1))
            .repeat(Loop::every(Duration::from_secs(1)).times(2))
            .into_entry(2);
        assert_eq!((e.topic.as_str(), e.partition), ("orders", 2));
        assert_eq!(e.when, When::After(1000));
        assert_eq!(e.repeat.map(|r| r.times), Some(2));
        assert_eq!(e.record.key.as_deref(), Some(&b"customer-7"[..]));
        assert_eq!(&e.record.value[..], b"hello");
        assert_eq!(e.record.timestamp, -1, "no timestamp: the delivery time");
        let h = |name: &str, value: &[u8]| (name.to_owned(), Bytes::copy_from_slice(value));
        assert_eq!(
            e.record.headers,
            [
                h(headers::MESSAGE_ID, &id.0),
                h(headers::TAG, b"eu"),
                h(headers::TAG, b"vip"),
                h("trace", b"abc"),
            ],
            "reserved names given as properties are dropped"
        );

        let e = DelayedMessage::at(Message::new("t", "v").timestamp(77), 0).into_entry(0);
        assert_eq!(e.record.timestamp, 77);
        assert_eq!(e.record.key, None);
    }
}
