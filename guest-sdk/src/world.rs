//! The three kinds of function: one trait each, one method per message.
//!
//! Every trait has an `init` that builds the function's instance (parse
//! configuration, compile expressions, allocate buffers) and a per-message
//! method that may keep state in `&mut self`. The export macro creates the
//! instance on the first call of a WebAssembly instance and reuses it for
//! every later batch; the broker recycles WebAssembly instances (after a
//! trap, after a number of calls, above a memory threshold), so state in
//! `self` is a cache, never the source of truth: durable state goes in
//! [`kv`](crate::kv).

use std::time::Duration;

use crate::{Message, OutMessage};

/// Decides which messages a subscription receives.
///
/// Skipped messages count as consumed for the group the filter serves.
///
/// ```
/// use sluice_guest::{config, Filter, Message};
///
/// struct MinSize(usize);
///
/// impl Filter for MinSize {
///     fn init() -> Result<Self, String> {
///         Ok(MinSize(config::get_parsed("min_bytes")?.unwrap_or(1)))
///     }
///     fn filter(&mut self, msg: &Message<'_>) -> bool {
///         msg.value().len() >= self.0
///     }
/// }
/// sluice_guest::export_filter!(MinSize);
///
/// # use sluice_guest::testing::{self, run_filter, MessageBuilder};
/// testing::set_config("min_bytes", "3");
/// assert_eq!(run_filter::<MinSize>(&[MessageBuilder::new("ab"), MessageBuilder::new("abc")]), [false, true]);
/// ```
pub trait Filter: Sized + 'static {
    /// Builds the instance; an error stops the component with this reason.
    fn init() -> Result<Self, String>;

    /// `true` to deliver `msg` to the subscription, `false` to skip it.
    fn filter(&mut self, msg: &Message<'_>) -> bool;
}

/// Maps each message to zero or more messages.
///
/// Outputs pushed to [`Outputs`] are committed atomically with the input's
/// offset (exactly once); returning `Err(reason)` records a failure for the
/// input instead and discards whatever it had pushed.
///
/// ```
/// use sluice_guest::{Message, OutMessage, Outputs, Transform};
///
/// /// Splits a comma-separated value into one message per item.
/// struct Split;
///
/// impl Transform for Split {
///     fn init() -> Result<Self, String> {
///         Ok(Split)
///     }
///     fn transform(&mut self, msg: &Message<'_>, out: &mut Outputs) -> Result<(), String> {
///         let text = msg.value_str().ok_or("value is not UTF-8")?;
///         for item in text.split(',') {
///             out.emit(OutMessage::new(item.trim()));
///         }
///         Ok(())
///     }
/// }
/// sluice_guest::export_transform!(Split);
///
/// # use sluice_guest::testing::{run_transform, MessageBuilder};
/// let results = run_transform::<Split>(&[MessageBuilder::new("a, b")]);
/// let values: Vec<_> = results[0].as_ref().unwrap().iter().map(|o| o.message.value.clone()).collect();
/// assert_eq!(values, [b"a".to_vec(), b"b".to_vec()]);
/// ```
pub trait Transform: Sized + 'static {
    /// Builds the instance; an error stops the component with this reason.
    fn init() -> Result<Self, String>;

    /// Pushes the outputs for `msg` to `out`, or fails with a reason.
    fn transform(&mut self, msg: &Message<'_>, out: &mut Outputs) -> Result<(), String>;
}

/// A serverless consumer: answers what became of each message.
///
/// ```
/// use sluice_guest::{kv, Handler, Message, Outcome};
///
/// /// Counts messages per key.
/// struct Counter;
///
/// impl Handler for Counter {
///     fn init() -> Result<Self, String> {
///         Ok(Counter)
///     }
///     fn handle(&mut self, msg: &Message<'_>) -> Outcome {
///         let Some(key) = msg.key_str() else {
///             return Outcome::dead_letter("message has no key");
///         };
///         let slot = format!("count/{key}");
///         let count = match kv::get(&slot) {
///             Ok(v) => v.and_then(|v| String::from_utf8(v).ok()).and_then(|v| v.parse().ok()).unwrap_or(0u64),
///             Err(e) => return e.into(),
///         };
///         match kv::set(&slot, (count + 1).to_string()) {
///             Ok(()) => Outcome::Ack,
///             Err(e) => e.into(),
///         }
///     }
/// }
/// sluice_guest::export_handler!(Counter);
///
/// # use sluice_guest::testing::{self, run_handler, MessageBuilder};
/// let outcomes = run_handler::<Counter>(&[MessageBuilder::new("x").key("a"), MessageBuilder::new("y")]);
/// assert_eq!(outcomes, [Outcome::Ack, Outcome::dead_letter("message has no key")]);
/// assert_eq!(testing::kv_snapshot()["count/a"], b"1");
/// ```
pub trait Handler: Sized + 'static {
    /// Builds the instance; an error stops the component with this reason.
    fn init() -> Result<Self, String>;

    /// Handles one message and says what became of it.
    fn handle(&mut self, msg: &Message<'_>) -> Outcome;
}

/// What a handler answers for one message.
///
/// ```
/// use std::time::Duration;
/// use sluice_guest::Outcome;
/// assert_eq!(Outcome::retry_after(Duration::from_secs(1)), Outcome::Retry { after: Some(Duration::from_millis(1000)) });
/// assert_eq!(Outcome::dead_letter("bad input"), Outcome::DeadLetter("bad input".to_string()));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Done: the message counts as consumed.
    Ack,
    /// Deliver the message again, after `after` (whole milliseconds), or
    /// after the group's retry backoff when `None`.
    Retry {
        /// Delay before the next delivery (sent in whole milliseconds); `None` follows the group's retry ladder.
        after: Option<Duration>,
    },
    /// Give up: move the message to the group's dead-letter topic with this
    /// reason.
    DeadLetter(String),
}

impl Outcome {
    /// Retry after the group's backoff.
    ///
    /// ```
    /// assert_eq!(sluice_guest::Outcome::retry(), sluice_guest::Outcome::Retry { after: None });
    /// ```
    pub fn retry() -> Self {
        Outcome::Retry { after: None }
    }

    /// Retry after `delay` (whole milliseconds; shorter delays mean now).
    ///
    /// ```
    /// use std::time::Duration;
    /// let o = sluice_guest::Outcome::retry_after(Duration::from_secs(5));
    /// assert_eq!(o, sluice_guest::Outcome::retry_after_ms(5_000));
    /// ```
    pub fn retry_after(delay: Duration) -> Self {
        Outcome::Retry { after: Some(delay) }
    }

    /// Retry after `ms` milliseconds.
    ///
    /// ```
    /// let o = sluice_guest::Outcome::retry_after_ms(250);
    /// assert!(matches!(o, sluice_guest::Outcome::Retry { after: Some(d) } if d.as_millis() == 250));
    /// ```
    pub fn retry_after_ms(ms: u64) -> Self {
        Self::retry_after(Duration::from_millis(ms))
    }

    /// Dead-letter the message with `reason`.
    ///
    /// ```
    /// let o = sluice_guest::Outcome::dead_letter(format!("unknown currency {}", "XXX"));
    /// assert_eq!(o, sluice_guest::Outcome::DeadLetter("unknown currency XXX".into()));
    /// ```
    pub fn dead_letter(reason: impl Into<String>) -> Self {
        Outcome::DeadLetter(reason.into())
    }
}

/// Host errors as outcomes: [`HostError::Unavailable`](crate::HostError::Unavailable)
/// retries after the group's backoff, every other error dead-letters with
/// the error as reason.
impl From<crate::HostError> for Outcome {
    fn from(e: crate::HostError) -> Self {
        if e.is_retryable() {
            Outcome::retry()
        } else {
            Outcome::DeadLetter(e.to_string())
        }
    }
}

/// One output of a transform: a message and where it goes.
///
/// ```
/// use sluice_guest::{OutMessage, Outputs};
/// let mut out = Outputs::new();
/// out.emit_to("audit", OutMessage::new("x"));
/// let first = &out.as_slice()[0];
/// assert_eq!(first.topic.as_deref(), Some("audit"));
/// assert_eq!(first.message.value, b"x");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// The destination topic; `None` is the deployment's output topic.
    pub topic: Option<String>,
    /// The message to publish.
    pub message: OutMessage,
}

/// Where a [`Transform`] puts the outputs of one input message.
///
/// The SDK gives the method an empty `Outputs` for each message; after the
/// method returns `Ok` they become part of the call's answer.
///
/// ```
/// use sluice_guest::{OutMessage, Outputs};
/// let mut out = Outputs::new();
/// out.emit(OutMessage::new("to the output topic"));
/// out.emit_to("alerts", OutMessage::new("elsewhere"));
/// assert_eq!(out.len(), 2);
/// assert_eq!(out.as_slice()[0].topic, None);
/// ```
#[derive(Debug, Clone, Default)]
pub struct Outputs {
    pending: Vec<Output>,
}

impl Outputs {
    /// No outputs yet (to call a transform method directly in a test).
    ///
    /// ```
    /// assert!(sluice_guest::Outputs::new().is_empty());
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// Publishes `msg` to the deployment's output topic.
    ///
    /// ```
    /// let mut out = sluice_guest::Outputs::new();
    /// out.emit(sluice_guest::OutMessage::new("v"));
    /// assert_eq!(out.len(), 1);
    /// ```
    pub fn emit(&mut self, msg: OutMessage) {
        self.pending.push(Output {
            topic: None,
            message: msg,
        });
    }

    /// Publishes `msg` to `topic` (an empty name means the output topic).
    /// The deployment must allow `topic` as an output, or the broker fails
    /// the input.
    ///
    /// ```
    /// let mut out = sluice_guest::Outputs::new();
    /// out.emit_to("orders-eu", sluice_guest::OutMessage::new("v"));
    /// assert_eq!(out.as_slice()[0].topic.as_deref(), Some("orders-eu"));
    /// ```
    pub fn emit_to(&mut self, topic: impl Into<String>, msg: OutMessage) {
        let topic = topic.into();
        self.pending.push(Output {
            topic: (!topic.is_empty()).then_some(topic),
            message: msg,
        });
    }

    /// Number of outputs pushed so far.
    ///
    /// ```
    /// assert_eq!(sluice_guest::Outputs::new().len(), 0);
    /// ```
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    /// Whether nothing was pushed.
    ///
    /// ```
    /// assert!(sluice_guest::Outputs::new().is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// The outputs pushed so far, in order.
    ///
    /// ```
    /// let mut out = sluice_guest::Outputs::new();
    /// out.emit(sluice_guest::OutMessage::new("v"));
    /// assert_eq!(out.as_slice()[0].message.value, b"v");
    /// ```
    pub fn as_slice(&self) -> &[Output] {
        &self.pending
    }

    /// The outputs, in order.
    ///
    /// ```
    /// let mut out = sluice_guest::Outputs::new();
    /// out.emit(sluice_guest::OutMessage::new("v"));
    /// assert_eq!(out.into_vec().len(), 1);
    /// ```
    pub fn into_vec(self) -> Vec<Output> {
        self.pending
    }

    pub(crate) fn clear(&mut self) {
        self.pending.clear();
    }
}
