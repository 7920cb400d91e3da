//! Native unit tests for functions: an in-memory host and message builders.
//!
//! Off `wasm32` every host call ([`emit`](crate::emit()),
//! [`schedule`](crate::schedule), [`kv`](crate::kv), [`config`](crate::config),
//! [`clock`](crate::clock), [`log`](crate::log)) is answered by a mock whose
//! state is per thread, so tests running in parallel (one thread each under
//! `cargo test`) never see each other's config, kv entries or emitted
//! messages. Tests set config and time, run the function, then inspect what
//! it emitted, scheduled, stored and logged.
//!
//! Build input messages with [`MessageBuilder`]. Either call your trait
//! method on one message ([`TestMessage::message`]) or run a list of them
//! through [`run_filter`], [`run_transform`] or [`run_handler`]: those encode
//! the messages as real record batches and go through the same parsing and
//! answer encoding as the component, so they also catch what a direct call
//! would not (a panic in `init`, outputs discarded by a failure).
//!
//! ```
//! use sluice_guest::testing::{self, run_handler, MessageBuilder};
//! use sluice_guest::{emit, Handler, Message, OutMessage, Outcome};
//!
//! struct Echo { topic: String }
//!
//! impl Handler for Echo {
//!     fn init() -> Result<Self, String> {
//!         Ok(Echo { topic: sluice_guest::config::require("topic")? })
//!     }
//!     fn handle(&mut self, msg: &Message<'_>) -> Outcome {
//!         match emit(&self.topic, OutMessage::from_input(msg)) {
//!             Ok(()) => Outcome::Ack,
//!             Err(e) => e.into(),
//!         }
//!     }
//! }
//!
//! testing::set_config("topic", "echo");
//! let outcomes = run_handler::<Echo>(&[MessageBuilder::new("hi").tag("x")]);
//! assert_eq!(outcomes, [Outcome::Ack]);
//! let sent = testing::emitted();
//! assert_eq!((sent[0].topic.as_str(), sent[0].message.value.as_slice()), ("echo", &b"hi"[..]));
//! assert_eq!(sent[0].message.tags().collect::<Vec<_>>(), ["x"]);
//! ```

use std::cell::RefCell;
use std::collections::BTreeMap;

use sluice_protocol::batch::{BatchBuilder, BatchView, set_base_offset};
use sluice_protocol::headers;
use sluice_protocol::transform_output::{OutputEntry, OutputReader};

use crate::log::Level;
use crate::message::Source;
use crate::run::{filter_batch, handler_batch, init_or_panic, transform_batch};
use crate::{Filter, Handler, HostError, Message, OutMessage, Outcome, Output, Transform};

/// Where the mock clock starts: 2023-11-14T22:13:20Z.
pub const DEFAULT_NOW_MS: u64 = 1_700_000_000_000;

/// A message published through [`emit`](crate::emit()).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Emitted {
    /// The topic it was emitted to.
    pub topic: String,
    /// The message as emitted.
    pub message: OutMessage,
}

/// A message handed to the scheduler and not cancelled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scheduled {
    /// The delay id the call returned (`delay-1`, `delay-2`, ... in the mock).
    pub id: String,
    /// The topic it will be published to.
    pub topic: String,
    /// When it is due, in milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// The delay it was scheduled with, for [`schedule::after`](crate::schedule::after);
    /// `None` for [`schedule::at`](crate::schedule::at).
    pub delay_ms: Option<u64>,
    /// The message as scheduled.
    pub message: OutMessage,
}

/// One logged line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// The level it was logged at.
    pub level: Level,
    /// The text.
    pub message: String,
}

/// The host capabilities whose calls can fail, for [`fail`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Capability {
    /// [`emit`](crate::emit()) calls.
    Emit,
    /// [`schedule`](crate::schedule) calls, `cancel` included.
    Schedule,
    /// [`kv`](crate::kv) calls: `get`, `set` and `delete`.
    Kv,
}

#[derive(Debug)]
struct MockState {
    config: BTreeMap<String, String>,
    now_ms: u64,
    kv: BTreeMap<String, Vec<u8>>,
    emitted: Vec<Emitted>,
    scheduled: Vec<Scheduled>,
    next_delay_id: u64,
    logs: Vec<LogLine>,
    failures: [Option<HostError>; 3],
}

impl Default for MockState {
    fn default() -> Self {
        MockState {
            config: BTreeMap::new(),
            now_ms: DEFAULT_NOW_MS,
            kv: BTreeMap::new(),
            emitted: Vec::new(),
            scheduled: Vec::new(),
            next_delay_id: 1,
            logs: Vec::new(),
            failures: [None, None, None],
        }
    }
}

thread_local! {
    static STATE: RefCell<MockState> = RefCell::new(MockState::default());
}

fn with_state<R>(f: impl FnOnce(&mut MockState) -> R) -> R {
    STATE.with(|s| f(&mut s.borrow_mut()))
}

/// Forgets everything this thread's mock holds: config, kv, emitted and
/// scheduled messages, logs, failures; the clock goes back to
/// [`DEFAULT_NOW_MS`].
///
/// ```
/// use sluice_guest::testing;
/// testing::set_config("a", "1");
/// testing::reset();
/// assert_eq!(sluice_guest::config::get("a"), None);
/// ```
pub fn reset() {
    with_state(|s| *s = MockState::default());
}

/// Sets deployment parameter `key`.
///
/// ```
/// sluice_guest::testing::set_config("tags", "red || blue");
/// assert_eq!(sluice_guest::config::get("tags").as_deref(), Some("red || blue"));
/// ```
pub fn set_config(key: impl Into<String>, value: impl Into<String>) {
    with_state(|s| s.config.insert(key.into(), value.into()));
}

/// Removes deployment parameter `key`.
///
/// ```
/// sluice_guest::testing::set_config("a", "1");
/// sluice_guest::testing::unset_config("a");
/// assert_eq!(sluice_guest::config::get("a"), None);
/// ```
pub fn unset_config(key: &str) {
    with_state(|s| s.config.remove(key));
}

/// Sets the clock.
///
/// ```
/// sluice_guest::testing::set_now_ms(42);
/// assert_eq!(sluice_guest::clock::now_ms(), 42);
/// ```
pub fn set_now_ms(ms: u64) {
    with_state(|s| s.now_ms = ms);
}

/// Moves the clock forward by `ms` milliseconds.
///
/// ```
/// use sluice_guest::{clock, testing};
/// let before = clock::now_ms();
/// testing::advance_ms(1_500);
/// assert_eq!(clock::now_ms(), before + 1_500);
/// ```
pub fn advance_ms(ms: u64) {
    with_state(|s| s.now_ms = s.now_ms.saturating_add(ms));
}

/// What the function emitted so far, oldest first.
///
/// ```
/// sluice_guest::emit("t", sluice_guest::OutMessage::new("v")).unwrap();
/// assert_eq!(sluice_guest::testing::emitted().len(), 1);
/// ```
pub fn emitted() -> Vec<Emitted> {
    with_state(|s| s.emitted.clone())
}

/// What the function scheduled and did not cancel, in call order.
///
/// ```
/// sluice_guest::schedule::after_ms("t", 10, sluice_guest::OutMessage::new("v")).unwrap();
/// assert_eq!(sluice_guest::testing::scheduled()[0].delay_ms, Some(10));
/// ```
pub fn scheduled() -> Vec<Scheduled> {
    with_state(|s| s.scheduled.clone())
}

/// The kv store's content.
///
/// ```
/// sluice_guest::kv::set("k", "v").unwrap();
/// assert_eq!(sluice_guest::testing::kv_snapshot()["k"], b"v");
/// ```
pub fn kv_snapshot() -> BTreeMap<String, Vec<u8>> {
    with_state(|s| s.kv.clone())
}

/// Stores an entry as if an earlier run had (bypassing [`fail`]).
///
/// ```
/// sluice_guest::testing::set_kv("total/c-1", "10");
/// assert_eq!(sluice_guest::kv::get("total/c-1"), Ok(Some(b"10".to_vec())));
/// ```
pub fn set_kv(key: impl Into<String>, value: impl Into<Vec<u8>>) {
    with_state(|s| s.kv.insert(key.into(), value.into()));
}

/// The lines logged so far, oldest first.
///
/// ```
/// sluice_guest::warn!("careful");
/// let logs = sluice_guest::testing::logs();
/// assert_eq!((logs[0].level, logs[0].message.as_str()), (sluice_guest::log::Level::Warn, "careful"));
/// ```
pub fn logs() -> Vec<LogLine> {
    with_state(|s| s.logs.clone())
}

/// Makes every later call of `capability` fail with `error` (until
/// [`clear_failures`] or [`reset`]), to test how a function copes.
///
/// ```
/// use sluice_guest::{kv, testing::{self, Capability}, HostError};
/// testing::fail(Capability::Kv, HostError::Unavailable("down".into()));
/// assert_eq!(kv::get("k"), Err(HostError::Unavailable("down".into())));
/// testing::clear_failures();
/// assert_eq!(kv::get("k"), Ok(None));
/// ```
pub fn fail(capability: Capability, error: HostError) {
    with_state(|s| s.failures[capability as usize] = Some(error));
}

/// Undoes [`fail`] for every capability.
///
/// ```
/// sluice_guest::testing::clear_failures();
/// ```
pub fn clear_failures() {
    with_state(|s| s.failures = [None, None, None]);
}

/// The host side of every host call on native targets.
pub(crate) mod mock {
    use super::*;

    fn check(s: &MockState, capability: Capability) -> Result<(), HostError> {
        match &s.failures[capability as usize] {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }

    fn check_topic(topic: &str) -> Result<(), HostError> {
        if topic.is_empty() {
            return Err(HostError::Invalid("empty topic name".into()));
        }
        Ok(())
    }

    pub(crate) fn log(level: Level, message: &str) {
        eprintln!("[{level}] {message}");
        with_state(|s| {
            s.logs.push(LogLine {
                level,
                message: message.to_owned(),
            })
        });
    }

    pub(crate) fn emit(topic: &str, message: OutMessage) -> Result<(), HostError> {
        with_state(|s| {
            check(s, Capability::Emit)?;
            check_topic(topic)?;
            s.emitted.push(Emitted {
                topic: topic.to_owned(),
                message,
            });
            Ok(())
        })
    }

    pub(crate) fn schedule(
        topic: &str,
        delay_ms: Option<u64>,
        at_ms: u64,
        message: OutMessage,
    ) -> Result<String, HostError> {
        with_state(|s| {
            check(s, Capability::Schedule)?;
            check_topic(topic)?;
            let id = format!("delay-{}", s.next_delay_id);
            s.next_delay_id += 1;
            s.scheduled.push(Scheduled {
                id: id.clone(),
                topic: topic.to_owned(),
                at_ms,
                delay_ms,
                message,
            });
            Ok(id)
        })
    }

    pub(crate) fn cancel(id: &str) -> Result<bool, HostError> {
        with_state(|s| {
            check(s, Capability::Schedule)?;
            let before = s.scheduled.len();
            s.scheduled.retain(|d| d.id != id);
            Ok(s.scheduled.len() != before)
        })
    }

    pub(crate) fn kv_get(key: &str) -> Result<Option<Vec<u8>>, HostError> {
        with_state(|s| {
            check(s, Capability::Kv)?;
            Ok(s.kv.get(key).cloned())
        })
    }

    pub(crate) fn kv_set(key: &str, value: &[u8]) -> Result<(), HostError> {
        with_state(|s| {
            check(s, Capability::Kv)?;
            s.kv.insert(key.to_owned(), value.to_vec());
            Ok(())
        })
    }

    pub(crate) fn kv_delete(key: &str) -> Result<(), HostError> {
        with_state(|s| {
            check(s, Capability::Kv)?;
            s.kv.remove(key);
            Ok(())
        })
    }

    pub(crate) fn config_get(key: &str) -> Option<String> {
        with_state(|s| s.config.get(key).cloned())
    }

    pub(crate) fn config_all() -> Vec<(String, String)> {
        with_state(|s| {
            s.config
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
    }

    pub(crate) fn now_ms() -> u64 {
        with_state(|s| s.now_ms)
    }
}

/// Describes one input message for a test.
///
/// Defaults: topic `test`, partition 0, no group, the mock clock's time as
/// timestamp, no key, and a message id derived from timestamp and offset
/// (as a producer would set one). The offset defaults to 0 for
/// [`Self::build`], and to one more than the previous message's in the
/// `run_*` helpers (starting at 0).
///
/// ```
/// use sluice_guest::testing::MessageBuilder;
/// let input = MessageBuilder::new("v").key("k").tag("red").header("h", "1").offset(7).build();
/// let msg = input.message();
/// assert_eq!((msg.topic(), msg.partition(), msg.offset()), ("test", 0, 7));
/// assert!(msg.id().is_some());
/// ```
#[derive(Debug, Clone)]
pub struct MessageBuilder {
    topic: String,
    partition: u32,
    group: Option<String>,
    offset: Option<u64>,
    timestamp: Option<i64>,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    /// Headers after the id, in order; tags are `sluice.tag` entries.
    headers: Vec<(String, Vec<u8>)>,
    /// `None`: derive one; `Some(None)`: no id header.
    id: Option<Option<[u8; 16]>>,
}

impl MessageBuilder {
    /// A message with this value.
    ///
    /// ```
    /// let input = sluice_guest::testing::MessageBuilder::new("v").build();
    /// assert_eq!(input.message().value(), b"v");
    /// ```
    pub fn new(value: impl Into<Vec<u8>>) -> Self {
        MessageBuilder {
            topic: "test".to_owned(),
            partition: 0,
            group: None,
            offset: None,
            timestamp: None,
            key: None,
            value: Some(value.into()),
            headers: Vec::new(),
            id: None,
        }
    }

    /// A message with a null value (a tombstone).
    ///
    /// ```
    /// let input = sluice_guest::testing::MessageBuilder::tombstone().key("k").build();
    /// assert!(input.message().value().is_empty());
    /// ```
    pub fn tombstone() -> Self {
        MessageBuilder {
            value: None,
            ..Self::new(Vec::new())
        }
    }

    /// The topic it was read from.
    ///
    /// ```
    /// let input = sluice_guest::testing::MessageBuilder::new("v").topic("orders").build();
    /// assert_eq!(input.message().topic(), "orders");
    /// ```
    pub fn topic(mut self, topic: impl Into<String>) -> Self {
        self.topic = topic.into();
        self
    }

    /// The partition it was read from.
    ///
    /// ```
    /// let input = sluice_guest::testing::MessageBuilder::new("v").partition(2).build();
    /// assert_eq!(input.message().partition(), 2);
    /// ```
    pub fn partition(mut self, partition: u32) -> Self {
        self.partition = partition;
        self
    }

    /// The consumer group the function serves.
    ///
    /// ```
    /// let input = sluice_guest::testing::MessageBuilder::new("v").group("g").build();
    /// assert_eq!(input.message().group(), Some("g"));
    /// ```
    pub fn group(mut self, group: impl Into<String>) -> Self {
        self.group = Some(group.into());
        self
    }

    /// Its offset.
    ///
    /// ```
    /// let input = sluice_guest::testing::MessageBuilder::new("v").offset(9).build();
    /// assert_eq!(input.message().offset(), 9);
    /// ```
    pub fn offset(mut self, offset: u64) -> Self {
        self.offset = Some(offset);
        self
    }

    /// Its timestamp, in milliseconds since the Unix epoch.
    ///
    /// ```
    /// let input = sluice_guest::testing::MessageBuilder::new("v").timestamp(5).build();
    /// assert_eq!(input.message().timestamp(), 5);
    /// ```
    pub fn timestamp(mut self, ms: i64) -> Self {
        self.timestamp = Some(ms);
        self
    }

    /// Its key.
    ///
    /// ```
    /// let input = sluice_guest::testing::MessageBuilder::new("v").key("k").build();
    /// assert_eq!(input.message().key_str(), Some("k"));
    /// ```
    pub fn key(mut self, key: impl Into<Vec<u8>>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Adds a tag.
    ///
    /// ```
    /// let input = sluice_guest::testing::MessageBuilder::new("v").tag("a").build();
    /// assert!(input.message().has_tag("a"));
    /// ```
    pub fn tag(mut self, tag: impl Into<String>) -> Self {
        self.headers
            .push((headers::TAG.to_owned(), tag.into().into_bytes()));
        self
    }

    /// Adds a header. Any name is accepted, reserved `sluice.*` ones too,
    /// to test how a function copes with unusual input.
    ///
    /// ```
    /// let input = sluice_guest::testing::MessageBuilder::new("v").header("h", [1u8]).build();
    /// assert_eq!(input.message().header("h"), Some(&[1u8][..]));
    /// ```
    pub fn header(mut self, name: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Its message id (the `sluice.id` header).
    ///
    /// ```
    /// let input = sluice_guest::testing::MessageBuilder::new("v").id([1; 16]).build();
    /// assert_eq!(input.message().id().unwrap().as_bytes(), &[1; 16]);
    /// ```
    pub fn id(mut self, id: [u8; 16]) -> Self {
        self.id = Some(Some(id));
        self
    }

    /// No message id, like a record from a client that sets none.
    ///
    /// ```
    /// let input = sluice_guest::testing::MessageBuilder::new("v").no_id().build();
    /// assert_eq!(input.message().id(), None);
    /// ```
    pub fn no_id(mut self) -> Self {
        self.id = Some(None);
        self
    }

    /// Encodes the message as a one-record batch.
    ///
    /// ```
    /// let input = sluice_guest::testing::MessageBuilder::new("v").build();
    /// assert_eq!(input.message().offset(), 0);
    /// ```
    pub fn build(&self) -> TestMessage {
        let mut batch = Vec::new();
        let offset = self.offset.unwrap_or(0);
        encode_batch(&mut batch, offset, std::slice::from_ref(self));
        TestMessage {
            batch,
            topic: self.topic.clone(),
            partition: self.partition,
            group: self.group.clone(),
        }
    }

    fn timestamp_or_now(&self) -> i64 {
        self.timestamp
            .unwrap_or_else(|| i64::try_from(crate::clock::now_ms()).unwrap_or(i64::MAX))
    }

    fn id_for(&self, timestamp: i64, offset: u64) -> Option<[u8; 16]> {
        match self.id {
            Some(id) => id,
            None => {
                // UUIDv7 layout: 48 bits of milliseconds, version 7, the
                // variant bits, then the offset where the random bits go.
                let mut id = [0u8; 16];
                id[..6].copy_from_slice(&timestamp.to_be_bytes()[2..]);
                id[6] = 0x70;
                id[8] = 0x80;
                id[9..].copy_from_slice(&offset.to_be_bytes()[1..]);
                Some(id)
            }
        }
    }
}

/// An encoded input message; [`Self::message`] reads it as a function would.
#[derive(Debug, Clone)]
pub struct TestMessage {
    batch: Vec<u8>,
    topic: String,
    partition: u32,
    group: Option<String>,
}

impl TestMessage {
    /// The message, as the function's method receives it.
    ///
    /// ```
    /// let input = sluice_guest::testing::MessageBuilder::new("v").build();
    /// let msg: sluice_guest::Message<'_> = input.message();
    /// assert_eq!(msg.value(), b"v");
    /// ```
    pub fn message(&self) -> Message<'_> {
        let view = BatchView::parse(&self.batch).expect("the builder writes a valid batch");
        let record = view
            .records()
            .next()
            .expect("the builder writes one record")
            .expect("the builder writes a valid record");
        Message::new(
            Source {
                topic: &self.topic,
                partition: self.partition,
                group: self.group.as_deref(),
            },
            record,
        )
    }

    /// The record batch bytes, as the broker would pass them.
    ///
    /// ```
    /// let input = sluice_guest::testing::MessageBuilder::new("v").build();
    /// assert_eq!(input.batch_bytes()[16], 2, "magic");
    /// ```
    pub fn batch_bytes(&self) -> &[u8] {
        &self.batch
    }
}

/// Appends one record batch holding `msgs`, the first at `base_offset`.
fn encode_batch(out: &mut Vec<u8>, base_offset: u64, msgs: &[MessageBuilder]) {
    let first_ts = msgs.first().map_or(0, MessageBuilder::timestamp_or_now);
    let mut builder = BatchBuilder::new(first_ts);
    for (i, m) in msgs.iter().enumerate() {
        let ts = m.timestamp_or_now();
        let id = m.id_for(ts, base_offset + i as u64);
        let mut hs: Vec<(&str, Option<&[u8]>)> = Vec::with_capacity(m.headers.len() + 1);
        if let Some(id) = &id {
            hs.push((headers::MESSAGE_ID, Some(&id[..])));
        }
        hs.extend(
            m.headers
                .iter()
                .map(|(n, v)| (n.as_str(), Some(v.as_slice()))),
        );
        builder.push(ts, m.key.as_deref(), m.value.as_deref(), &hs);
    }
    let start = out.len();
    out.extend_from_slice(&builder.finish());
    set_base_offset(&mut out[start..], base_offset);
}

/// The context and batch bytes of one call: messages with consecutive
/// offsets share a record batch, a gap starts a new one.
struct Call {
    topic: String,
    partition: u32,
    group: Option<String>,
    batch: Vec<u8>,
}

impl Call {
    fn new(msgs: &[MessageBuilder]) -> Self {
        let (topic, partition, group) = msgs.first().map_or(("test".to_owned(), 0, None), |m| {
            (m.topic.clone(), m.partition, m.group.clone())
        });
        for m in msgs {
            assert!(
                m.topic == topic && m.partition == partition && m.group == group,
                "sluice_guest::testing: all messages of one call must share topic, partition and group \
                 (a call reads one partition for one group); got {}/{}/{:?} and {}/{}/{:?}",
                topic,
                partition,
                group,
                m.topic,
                m.partition,
                m.group
            );
        }
        let mut batch = Vec::new();
        let mut start = 0;
        let mut next = 0u64;
        let mut base = 0u64;
        for (i, m) in msgs.iter().enumerate() {
            let offset = m.offset.unwrap_or(next);
            if i > 0 && offset != next {
                encode_batch(&mut batch, base, &msgs[start..i]);
                start = i;
            }
            if i == start {
                base = offset;
            }
            next = offset + 1;
        }
        if start < msgs.len() {
            encode_batch(&mut batch, base, &msgs[start..]);
        }
        Call {
            topic,
            partition,
            group,
            batch,
        }
    }

    fn source(&self) -> Source<'_> {
        Source {
            topic: &self.topic,
            partition: self.partition,
            group: self.group.as_deref(),
        }
    }
}

/// Creates a `T` with [`Filter::init`] (panicking like the component would
/// if it fails) and runs `msgs` through it as one call; one `bool` per
/// message, `true` = keep.
///
/// ```
/// use sluice_guest::{testing::{run_filter, MessageBuilder}, Filter, Message};
/// struct Short;
/// impl Filter for Short {
///     fn init() -> Result<Self, String> { Ok(Short) }
///     fn filter(&mut self, msg: &Message<'_>) -> bool { msg.value().len() < 3 }
/// }
/// assert_eq!(run_filter::<Short>(&[MessageBuilder::new("ab"), MessageBuilder::new("abcd")]), [true, false]);
/// ```
pub fn run_filter<T: Filter>(msgs: &[MessageBuilder]) -> Vec<bool> {
    run_filter_on(&mut init_or_panic(T::init), msgs)
}

/// Like [`run_filter`] with an instance the test keeps across calls.
///
/// ```
/// use sluice_guest::{testing::{run_filter_on, MessageBuilder}, Filter, Message};
/// /// Keeps every second message.
/// struct Every2(u64);
/// impl Filter for Every2 {
///     fn init() -> Result<Self, String> { Ok(Every2(0)) }
///     fn filter(&mut self, _: &Message<'_>) -> bool { self.0 += 1; self.0 % 2 == 0 }
/// }
/// let mut f = Every2(0);
/// assert_eq!(run_filter_on(&mut f, &[MessageBuilder::new("a")]), [false]);
/// assert_eq!(run_filter_on(&mut f, &[MessageBuilder::new("b")]), [true]);
/// ```
pub fn run_filter_on<T: Filter>(instance: &mut T, msgs: &[MessageBuilder]) -> Vec<bool> {
    let call = Call::new(msgs);
    let answer = filter_batch(instance, call.source(), &call.batch);
    assert_eq!(answer.len(), msgs.len(), "one answer byte per message");
    answer.into_iter().map(|b| b == 1).collect()
}

/// Creates a `T` with [`Transform::init`] and runs `msgs` through it as one
/// call; for each message its outputs, or the reason it failed. The answer
/// goes through the transform output encoding and back.
///
/// ```
/// use sluice_guest::{testing::{run_transform, MessageBuilder}, Message, OutMessage, Outputs, Transform};
/// struct NonEmpty;
/// impl Transform for NonEmpty {
///     fn init() -> Result<Self, String> { Ok(NonEmpty) }
///     fn transform(&mut self, msg: &Message<'_>, out: &mut Outputs) -> Result<(), String> {
///         out.emit_to("copies", OutMessage::from_input(msg));
///         if msg.value().is_empty() { return Err("empty value".into()); }
///         Ok(())
///     }
/// }
/// let results = run_transform::<NonEmpty>(&[MessageBuilder::new("a"), MessageBuilder::new("")]);
/// assert_eq!(results[0].as_ref().unwrap()[0].topic.as_deref(), Some("copies"));
/// assert_eq!(results[1], Err("empty value".to_string()), "a failure discards the input's outputs");
/// ```
pub fn run_transform<T: Transform>(msgs: &[MessageBuilder]) -> Vec<Result<Vec<Output>, String>> {
    run_transform_on(&mut init_or_panic(T::init), msgs)
}

/// Like [`run_transform`] with an instance the test keeps across calls.
///
/// ```
/// use sluice_guest::{testing::{run_transform_on, MessageBuilder}, Message, OutMessage, Outputs, Transform};
/// struct Numbered(u64);
/// impl Transform for Numbered {
///     fn init() -> Result<Self, String> { Ok(Numbered(0)) }
///     fn transform(&mut self, msg: &Message<'_>, out: &mut Outputs) -> Result<(), String> {
///         self.0 += 1;
///         out.emit(OutMessage::new(self.0.to_string()));
///         Ok(())
///     }
/// }
/// let mut t = Numbered(0);
/// run_transform_on(&mut t, &[MessageBuilder::new("a")]);
/// let second = run_transform_on(&mut t, &[MessageBuilder::new("b")]);
/// assert_eq!(second[0].as_ref().unwrap()[0].message.value, b"2");
/// ```
pub fn run_transform_on<T: Transform>(
    instance: &mut T,
    msgs: &[MessageBuilder],
) -> Vec<Result<Vec<Output>, String>> {
    let call = Call::new(msgs);
    let answer = transform_batch(instance, call.source(), &call.batch);
    let mut results: Vec<Result<Vec<Output>, String>> = vec![Ok(Vec::new()); msgs.len()];
    for entry in OutputReader::new(&answer) {
        match entry.expect("the SDK writes a valid transform output buffer") {
            OutputEntry::Message {
                input,
                topic,
                key,
                value,
                headers,
            } => {
                let message = OutMessage {
                    key: key.map(<[u8]>::to_vec),
                    value: value.to_vec(),
                    headers: headers.map(|(n, v)| (n.to_owned(), v.to_vec())).collect(),
                };
                let output = Output {
                    topic: (!topic.is_empty()).then(|| topic.to_owned()),
                    message,
                };
                match &mut results[input as usize] {
                    Ok(outputs) => outputs.push(output),
                    Err(_) => panic!("input {input} has both outputs and a failure"),
                }
            }
            OutputEntry::Failure { input, reason } => {
                let slot = &mut results[input as usize];
                assert!(
                    matches!(slot, Ok(o) if o.is_empty()),
                    "input {input} has both outputs and a failure"
                );
                *slot = Err(reason.to_owned());
            }
        }
    }
    results
}

/// Creates a `T` with [`Handler::init`] and runs `msgs` through it as one
/// call; one [`Outcome`] per message.
///
/// ```
/// use sluice_guest::{testing::{run_handler, MessageBuilder}, Handler, Message, Outcome};
/// struct NeedsKey;
/// impl Handler for NeedsKey {
///     fn init() -> Result<Self, String> { Ok(NeedsKey) }
///     fn handle(&mut self, msg: &Message<'_>) -> Outcome {
///         if msg.key().is_some() { Outcome::Ack } else { Outcome::dead_letter("no key") }
///     }
/// }
/// let outcomes = run_handler::<NeedsKey>(&[MessageBuilder::new("a").key("k"), MessageBuilder::new("b")]);
/// assert_eq!(outcomes, [Outcome::Ack, Outcome::dead_letter("no key")]);
/// ```
pub fn run_handler<T: Handler>(msgs: &[MessageBuilder]) -> Vec<Outcome> {
    run_handler_on(&mut init_or_panic(T::init), msgs)
}

/// Like [`run_handler`] with an instance the test keeps across calls.
///
/// ```
/// use sluice_guest::{testing::{run_handler_on, MessageBuilder}, Handler, Message, Outcome};
/// struct FailFirst(bool);
/// impl Handler for FailFirst {
///     fn init() -> Result<Self, String> { Ok(FailFirst(false)) }
///     fn handle(&mut self, _: &Message<'_>) -> Outcome {
///         if std::mem::replace(&mut self.0, true) { Outcome::Ack } else { Outcome::retry() }
///     }
/// }
/// let mut h = FailFirst(false);
/// assert_eq!(run_handler_on(&mut h, &[MessageBuilder::new("a")]), [Outcome::retry()]);
/// assert_eq!(run_handler_on(&mut h, &[MessageBuilder::new("a")]), [Outcome::Ack]);
/// ```
pub fn run_handler_on<T: Handler>(instance: &mut T, msgs: &[MessageBuilder]) -> Vec<Outcome> {
    let call = Call::new(msgs);
    let answer = handler_batch(instance, call.source(), &call.batch);
    assert_eq!(answer.len(), msgs.len(), "one outcome per message");
    answer
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_group_consecutive_offsets_into_batches() {
        let msgs = [
            MessageBuilder::new("a"),
            MessageBuilder::new("b"),
            MessageBuilder::new("c").offset(10),
            MessageBuilder::new("d"),
            MessageBuilder::new("e").offset(3),
        ];
        let call = Call::new(&msgs);
        let batches: Vec<(u64, u32)> = sluice_protocol::batch::BatchIter::new(&call.batch)
            .map(|b| {
                let b = b.unwrap();
                b.validate().unwrap();
                (b.header().base_offset, b.header().record_count)
            })
            .collect();
        assert_eq!(batches, [(0, 2), (10, 2), (3, 1)]);
        let mut offsets = Vec::new();
        crate::run::for_each_message(call.source(), &call.batch, |m| {
            offsets.push((m.offset(), m.value_str().unwrap().to_owned()))
        });
        let want: Vec<(u64, String)> = [(0, "a"), (1, "b"), (10, "c"), (11, "d"), (3, "e")]
            .into_iter()
            .map(|(o, v)| (o, v.to_owned()))
            .collect();
        assert_eq!(offsets, want);
    }

    #[test]
    fn default_ids_are_distinct_uuid_v7s() {
        let a = MessageBuilder::new("a").offset(1).build();
        let b = MessageBuilder::new("a").offset(2).build();
        let (a, b) = (a.message().id().unwrap(), b.message().id().unwrap());
        assert_ne!(a, b);
        assert_eq!(&a.to_string()[14..15], "7", "version nibble");
    }

    #[test]
    fn tombstones_and_odd_headers_read_sensibly() {
        let input = MessageBuilder::tombstone()
            .header("sluice.custom", "x")
            .header("plain", "")
            .tag("t")
            .build();
        let msg = input.message();
        assert!(msg.value().is_empty());
        assert_eq!(msg.headers().collect::<Vec<_>>(), [("plain", &b""[..])]);
        assert_eq!(
            msg.header("sluice.custom"),
            None,
            "reserved names are not properties"
        );
        let copy = OutMessage::from_input(&msg);
        assert_eq!(
            copy.headers,
            [
                ("plain".to_owned(), Vec::new()),
                ("sluice.tag".to_owned(), b"t".to_vec())
            ],
            "from_input keeps properties and tags in order, drops other reserved headers and the id"
        );
    }

    #[test]
    #[should_panic(expected = "must share topic, partition and group")]
    fn one_call_reads_one_partition() {
        run_filter_on(
            &mut Keep,
            &[
                MessageBuilder::new("a"),
                MessageBuilder::new("b").partition(1),
            ],
        );
    }

    struct Keep;
    impl Filter for Keep {
        fn init() -> Result<Self, String> {
            Ok(Keep)
        }
        fn filter(&mut self, _: &Message<'_>) -> bool {
            true
        }
    }

    #[test]
    fn mock_state_is_per_thread() {
        set_config("k", "here");
        crate::kv::set("x", "1").unwrap();
        std::thread::spawn(|| {
            assert_eq!(crate::config::get("k"), None);
            assert!(kv_snapshot().is_empty());
        })
        .join()
        .unwrap();
        assert_eq!(crate::config::get("k").as_deref(), Some("here"));
    }

    #[test]
    fn mock_rejects_empty_topics_and_injected_failures() {
        assert!(matches!(
            crate::emit("", OutMessage::new("v")),
            Err(HostError::Invalid(_))
        ));
        fail(Capability::Emit, HostError::Denied("no".into()));
        assert_eq!(
            crate::emit("t", OutMessage::new("v")),
            Err(HostError::Denied("no".into()))
        );
        assert!(crate::schedule::after_ms("t", 1, OutMessage::new("v")).is_ok());
        assert!(emitted().is_empty());
    }
}
