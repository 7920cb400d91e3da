//! Consumer groups: members share a topic's messages, the broker tracks
//! what each member has in flight, and members settle every message with
//! an ack (done) or a nack (retry later, or dead-letter).
//!
//! ```no_run
//! # async fn demo(client: sluice_client::Client) -> sluice_client::Result<()> {
//! use futures::StreamExt;
//! use sluice_client::GroupConfig;
//!
//! // Pull: long-poll for what is ready.
//! let consumer = client.group_consumer(GroupConfig::new("billing", "orders")).await?;
//! for m in consumer.poll().await? {
//!     if m.value.is_empty() {
//!         m.dead_letter("empty order");
//!     } else {
//!         m.ack();
//!     }
//! }
//!
//! // Push: the broker streams messages as long as the local buffer has room.
//! let mut messages = consumer.subscribe();
//! while let Some(m) = messages.next().await {
//!     let m = m?;
//!     println!("{}/{}@{} attempt {}", m.topic, m.partition, m.offset, m.attempt());
//!     m.ack();
//! }
//! # Ok(()) }
//! ```
//!
//! The broker owns the delivery state; the client only keeps membership
//! alive (join, heartbeat, rejoin when the broker forgot the member) and
//! says what it finished. Settling a message is cheap and synchronous:
//! acks and nacks are queued and sent in one request per
//! [`GroupConfig::ack_batch`] messages or per [`GroupConfig::ack_interval`],
//! whichever comes first, with consecutive offsets coalesced into ranges,
//! so acking each message costs no round trip. A message dropped without
//! being settled is delivered again once the group's ack timeout passes.
//!
//! Messages that failed before come back through the group's retry topic;
//! they show the topic, partition and offset they were first consumed
//! from, while their ack goes to where they were actually delivered from
//! ([`GroupMessage::delivered_from`]).

use std::fmt;
use std::future::Future;
use std::ops::Deref;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::Stream;
use futures::stream::{FuturesUnordered, StreamExt};
use parking_lot::Mutex;
use sluice_protocol::batch::{BatchIter, Record};
use sluice_protocol::frame::{self, Frame, FrameDecoder};

pub use sluice_protocol::ops::group::{dead_letter_topic, retry_topic};
use sluice_protocol::ops::{
    AckRequest, AckResponse, DeleteGroupRequest, DeliveredRange, DescribeGroupRequest, ERROR_OP,
    GrantCreditRequest, GroupBatch, GroupDelivery, GroupRef, HeartbeatRequest, JoinGroupRequest,
    JoinGroupResponse, LeaveGroupRequest, ListGroupsRequest, MemberRef, Nack, NackAction,
    OffsetRange, OffsetSpec, Op, PartitionAcks, Payload, PollGroupRequest, RedriveRequest,
    ResetGroupRequest, SubscribeRequest, decode_response,
};
pub use sluice_protocol::ops::{
    GroupDescription, GroupMode, GroupSettings, GroupSummary, MemberDescription, PartitionLag,
    RedriveResponse, ResetTo, TopicPartition,
};
use sluice_protocol::{ErrorCode, WireError};
use tokio::sync::{Notify, Semaphore, mpsc, watch};
use tokio::task::JoinHandle;

use crate::Client;
use crate::conn::Connection;
use crate::error::{ClientError, Result};
use crate::message::ConsumedMessage;

/// Ack requests in flight at once per consumer: enough to keep acks
/// flowing while one waits for its answer, few enough that a stalled
/// broker makes acks queue up (and coalesce) locally.
const ACK_REQUESTS_IN_FLIGHT: usize = 4;
/// First and longest pause before a failed subscription is opened again.
const RESUBSCRIBE_BACKOFF_MIN: Duration = Duration::from_millis(20);
const RESUBSCRIBE_BACKOFF_MAX: Duration = Duration::from_secs(5);
/// The request id of a subscription on its own stream; credit grants use
/// the ids after it.
const SUBSCRIBE_REQUEST_ID: u32 = 1;

/// How a consumer joins its group and consumes.
///
/// `settings` are the group's: the first member to join sets them, later
/// members must ask for the same ([`ErrorCode::InconsistentGroup`]
/// otherwise). The rest is this consumer's own.
///
/// ```
/// use std::time::Duration;
/// use sluice_client::{GroupConfig, GroupMode, OffsetSpec};
///
/// let config = GroupConfig::new("billing", "orders")
///     .ordered(true)
///     .tag_filter("eu AND NOT test")
///     .start(OffsetSpec::Earliest)
///     .ack_timeout(Duration::from_secs(10))
///     .max_attempts(5)
///     .retry_ladder([Duration::from_secs(1), Duration::from_secs(10)])
///     .instance_id("billing-1");
/// assert_eq!(config.settings.mode, GroupMode::Clustering);
/// assert_eq!(config.settings.retry_ladder_ms, [1000, 10_000]);
/// ```
#[derive(Debug, Clone)]
pub struct GroupConfig {
    pub group: String,
    /// The group's settings (topic, mode, order, filter, start, ack
    /// timeout, attempts, retry ladder, in-flight limit).
    pub settings: GroupSettings,
    /// A stable name for this consumer instance; broadcast groups keep
    /// progress per instance, so a restarted instance resumes where it
    /// stopped. Empty: the member id of the first join, kept across
    /// rejoins (so a rejoin resumes the progress), but not across restarts.
    pub instance_id: String,
    /// The broker drops a member it has not heard from for this long.
    pub session_timeout: Duration,
    /// Ack every message as [`GroupConsumer::poll`] or the
    /// [`GroupStream`] hands it out, before the application processes it:
    /// a message whose processing fails or crashes is lost rather than
    /// retried (at most once). Nacks on such messages change nothing.
    pub auto_ack: bool,
    /// Most messages one poll returns.
    pub poll_max_messages: u32,
    /// Byte budget of one poll's answer or one pushed batch.
    pub max_bytes: u32,
    /// Longest a poll waits for a message.
    pub poll_max_wait: Duration,
    /// Messages a subscription may have pushed and not yet taken by the
    /// application: its credit window, and so the most it buffers locally.
    /// The broker stops pushing when it runs out, so the window must cover
    /// a round trip's worth of messages: 16384 (about 1.6 MB of 100 B
    /// messages) keeps a subscriber at 0.76× plain fetch throughput where
    /// 4096 gave 0.51× (`sluice bench group`).
    pub credit_window: u32,
    /// Acks and nacks queued before they are sent at once.
    pub ack_batch: usize,
    /// Longest a queued ack waits for others to share its request.
    pub ack_interval: Duration,
}

impl GroupConfig {
    /// A group consuming `topic`, with the broker's default settings.
    pub fn new(group: impl Into<String>, topic: impl Into<String>) -> Self {
        GroupConfig {
            group: group.into(),
            settings: GroupSettings {
                topic: topic.into(),
                ..GroupSettings::default()
            },
            instance_id: String::new(),
            session_timeout: Duration::from_secs(10),
            auto_ack: false,
            poll_max_messages: 1024,
            max_bytes: 8 << 20,
            poll_max_wait: Duration::from_millis(500),
            credit_window: 16384,
            ack_batch: 1024,
            ack_interval: Duration::from_millis(2),
        }
    }

    pub fn mode(mut self, mode: GroupMode) -> Self {
        self.settings.mode = mode;
        self
    }

    /// Every member gets every message.
    pub fn broadcast(self) -> Self {
        self.mode(GroupMode::Broadcast)
    }

    /// Per-key order: no two messages with the same key in flight at once,
    /// and a failing message holds back only its own key.
    pub fn ordered(mut self, ordered: bool) -> Self {
        self.settings.ordered = ordered;
        self
    }

    /// Only messages whose tags match (`a AND (b OR NOT c)`); empty or `*`
    /// takes everything.
    pub fn tag_filter(mut self, expr: impl Into<String>) -> Self {
        self.settings.tag_filter = expr.into();
        self
    }

    /// Where the group starts when it has no committed position yet.
    pub fn start(mut self, start: OffsetSpec) -> Self {
        self.settings.start = start;
        self
    }

    /// A message not settled within this is delivered again (whole
    /// milliseconds).
    pub fn ack_timeout(mut self, timeout: Duration) -> Self {
        self.settings.ack_timeout_ms = millis_u32(timeout);
        self
    }

    /// Deliveries before a failing message goes to the dead-letter topic.
    pub fn max_attempts(mut self, attempts: u16) -> Self {
        self.settings.max_attempts = attempts;
        self
    }

    /// Delay before each retry (the last one repeats); empty takes the
    /// broker's default ladder.
    pub fn retry_ladder(mut self, delays: impl IntoIterator<Item = Duration>) -> Self {
        self.settings.retry_ladder_ms = delays.into_iter().map(millis_u32).collect();
        self
    }

    /// Messages delivered and not yet settled, per partition, at most.
    pub fn max_in_flight(mut self, messages: u32) -> Self {
        self.settings.max_in_flight = messages;
        self
    }

    pub fn instance_id(mut self, id: impl Into<String>) -> Self {
        self.instance_id = id.into();
        self
    }

    pub fn session_timeout(mut self, timeout: Duration) -> Self {
        self.session_timeout = timeout;
        self
    }

    /// See [`GroupConfig::auto_ack`].
    pub fn auto_ack(mut self, yes: bool) -> Self {
        self.auto_ack = yes;
        self
    }

    /// Most messages one poll returns.
    pub fn poll_batch(mut self, messages: u32) -> Self {
        self.poll_max_messages = messages;
        self
    }

    pub fn poll_max_wait(mut self, wait: Duration) -> Self {
        self.poll_max_wait = wait;
        self
    }

    /// See [`GroupConfig::credit_window`].
    pub fn credit_window(mut self, messages: u32) -> Self {
        self.credit_window = messages;
        self
    }

    /// Send queued acks once `batch` are queued or the oldest has waited
    /// `interval`.
    pub fn ack_flush(mut self, batch: usize, interval: Duration) -> Self {
        self.ack_batch = batch;
        self.ack_interval = interval;
        self
    }

    fn validate(&self) -> Result<()> {
        let bad = |what: &str| Err(ClientError::Config(format!("group consumer: {what}")));
        if self.group.is_empty() {
            return bad("the group name is empty");
        }
        if self.settings.topic.is_empty() {
            return bad("the topic is empty");
        }
        if self.credit_window == 0 {
            return bad("the credit window must be at least 1");
        }
        if self.poll_max_messages == 0 {
            return bad("the poll batch must be at least 1");
        }
        if self.ack_batch == 0 {
            return bad("the ack batch must be at least 1");
        }
        if self.session_timeout < Duration::from_millis(1) {
            return bad("the session timeout must be at least 1 ms");
        }
        Ok(())
    }
}

fn millis_u32(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
}

/// Acks settled by the broker so far, as its answers counted them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AckStats {
    /// Messages the broker settled (acked, or nacked into a retry or the
    /// dead-letter topic).
    pub settled: u64,
    /// Settlements of messages no longer in flight (already settled, or
    /// their ack timeout passed and someone else settled them).
    pub stale: u64,
    /// Settlements whose request failed (connection lost, member gone): the
    /// broker delivers those messages again.
    pub failed: u64,
}

// ---------------------------------------------------------------- messages

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
    pub fn message(&self) -> &ConsumedMessage {
        &self.message
    }

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
    fn new(from: Arc<TopicPartition>, offset: u64, queue: Arc<AckQueue>) -> Self {
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

    pub fn partition(&self) -> u32 {
        self.0.from.partition
    }

    pub fn offset(&self) -> u64 {
        self.0.offset
    }

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
fn parse_batch(
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

// ---------------------------------------------------------------- acker

/// Settlements waiting to be sent; see the module docs.
#[derive(Debug)]
struct AckQueue {
    pending: Mutex<PendingSettlements>,
    /// The first settlement after a send was queued.
    queued: Notify,
    /// `max_batch` settlements are queued.
    full: Notify,
    max_batch: usize,
}

#[derive(Debug, Default)]
struct PendingSettlements {
    /// Acked offsets per partition delivered from.
    acks: Vec<(Arc<TopicPartition>, Vec<u64>)>,
    /// The index in `acks` used last: messages come in runs from one partition.
    last: usize,
    nacks: Vec<Nack>,
    count: usize,
}

impl PendingSettlements {
    fn push_ack(&mut self, from: &Arc<TopicPartition>, offset: u64) {
        let same = |tp: &Arc<TopicPartition>| Arc::ptr_eq(tp, from) || **tp == **from;
        let i = match self.acks.get(self.last) {
            Some((tp, _)) if same(tp) => self.last,
            _ => match self.acks.iter().position(|(tp, _)| same(tp)) {
                Some(i) => i,
                None => {
                    self.acks.push((from.clone(), Vec::new()));
                    self.acks.len() - 1
                }
            },
        };
        self.last = i;
        self.acks[i].1.push(offset);
        self.count += 1;
    }

    fn into_batch(self) -> SettleBatch {
        SettleBatch {
            acks: self
                .acks
                .into_iter()
                .map(|(tp, mut offsets)| PartitionAcks {
                    topic: tp.topic.clone(),
                    partition: tp.partition,
                    ranges: coalesce(&mut offsets),
                })
                .collect(),
            nacks: self.nacks,
            messages: self.count,
        }
    }
}

/// Offsets as ascending ranges of consecutive offsets (duplicates dropped).
fn coalesce(offsets: &mut [u64]) -> Vec<OffsetRange> {
    offsets.sort_unstable();
    let mut out: Vec<OffsetRange> = Vec::new();
    for &o in offsets.iter() {
        if let Some(last) = out.last_mut() {
            let end = last.first_offset.saturating_add(u64::from(last.count));
            if o < end {
                continue;
            }
            if o == end && last.count < u32::MAX {
                last.count += 1;
                continue;
            }
        }
        out.push(OffsetRange {
            first_offset: o,
            count: 1,
        });
    }
    out
}

/// What one ack request carries.
#[derive(Debug, Clone)]
struct SettleBatch {
    acks: Vec<PartitionAcks>,
    nacks: Vec<Nack>,
    /// Messages settled by it.
    messages: usize,
}

impl AckQueue {
    fn new(max_batch: usize) -> Self {
        AckQueue {
            pending: Mutex::default(),
            queued: Notify::new(),
            full: Notify::new(),
            max_batch: max_batch.max(1),
        }
    }

    fn ack(&self, from: &Arc<TopicPartition>, offset: u64) {
        let count = {
            let mut p = self.pending.lock();
            p.push_ack(from, offset);
            p.count
        };
        self.signal(count);
    }

    fn nack(&self, nack: Nack) {
        let count = {
            let mut p = self.pending.lock();
            p.nacks.push(nack);
            p.count += 1;
            p.count
        };
        self.signal(count);
    }

    fn signal(&self, count: usize) {
        if count == 1 {
            self.queued.notify_one();
        }
        if count == self.max_batch {
            self.full.notify_one();
        }
    }

    fn is_full(&self) -> bool {
        self.pending.lock().count >= self.max_batch
    }

    fn take(&self) -> Option<SettleBatch> {
        let mut p = self.pending.lock();
        if p.count == 0 {
            return None;
        }
        Some(std::mem::take(&mut *p).into_batch())
    }
}

// ---------------------------------------------------------------- membership

#[derive(Debug)]
struct Membership {
    member_id: String,
    generation: u32,
    heartbeat_interval: Duration,
    assignment: Vec<TopicPartition>,
}

/// What the consumer, its stream and its background tasks share.
#[derive(Debug)]
struct Shared {
    conn: Arc<Connection>,
    config: GroupConfig,
    retry_topic: String,
    /// The instance id joins ask for; see [`GroupConfig::instance_id`].
    instance_id: Mutex<String>,
    member: Mutex<Membership>,
    /// One rejoin at a time; see [`Shared::rejoin`].
    rejoin_lock: tokio::sync::Mutex<()>,
    /// Polls and acks; membership requests use the control stream.
    stream: Mutex<Option<Arc<crate::conn::RequestStream>>>,
    acks: Arc<AckQueue>,
    /// Permits for ack requests in flight; holding them all means none is.
    ack_slots: Arc<Semaphore>,
    settled: AtomicU64,
    stale: AtomicU64,
    failed: AtomicU64,
    /// True once the consumer is leaving: background work stops.
    shutdown: watch::Sender<bool>,
}

/// Errors after which the member must join again.
fn needs_rejoin(e: &ClientError) -> bool {
    matches!(
        e.code(),
        Some(ErrorCode::UnknownMember | ErrorCode::UnknownGroup)
    )
}

/// Errors that retrying will not cure: the configuration, the broker's
/// version, or the credentials are wrong.
fn is_fatal(e: &ClientError) -> bool {
    match e {
        ClientError::Broker(w) => matches!(
            w.code,
            ErrorCode::MalformedRequest
                | ErrorCode::MalformedFrame
                | ErrorCode::UnknownOp
                | ErrorCode::UnsupportedVersion
                | ErrorCode::AuthenticationFailed
                | ErrorCode::NotAuthenticated
                | ErrorCode::UnknownTopic
                | ErrorCode::InvalidConfig
                | ErrorCode::InvalidArgument
                | ErrorCode::InconsistentGroup
        ),
        ClientError::Auth(_)
        | ClientError::Tls { .. }
        | ClientError::CaCert { .. }
        | ClientError::Config(_)
        | ClientError::Closed
        | ClientError::Corrupt(_) => true,
        _ => false,
    }
}

async fn stopped(rx: &mut watch::Receiver<bool>) {
    // An error means the sender is gone: stop as well.
    let _ = rx.wait_for(|stop| *stop).await;
}

impl Shared {
    fn member_ref(&self) -> MemberRef {
        MemberRef {
            group: self.config.group.clone(),
            member_id: self.member.lock().member_id.clone(),
        }
    }

    fn is_shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    async fn join(&self) -> Result<JoinGroupResponse> {
        let req = JoinGroupRequest {
            group: self.config.group.clone(),
            member_id: String::new(),
            instance_id: self.instance_id.lock().clone(),
            session_timeout_ms: millis_u32(self.config.session_timeout),
            settings: self.config.settings.clone(),
        };
        self.conn.request(&req).await
    }

    fn install(&self, resp: JoinGroupResponse) {
        let heartbeat_interval = match resp.heartbeat_interval_ms {
            0 => self.config.session_timeout / 3,
            ms => Duration::from_millis(ms.into()),
        };
        {
            let mut instance = self.instance_id.lock();
            if instance.is_empty() {
                instance.clone_from(&resp.member_id);
            }
        }
        *self.member.lock() = Membership {
            member_id: resp.member_id,
            generation: resp.generation,
            heartbeat_interval: heartbeat_interval.max(Duration::from_millis(1)),
            assignment: resp.assignment,
        };
    }

    /// Joins again after the broker forgot `dead_member` (session expired,
    /// connection lost, broker restarted). Whoever sees the error first
    /// rejoins; the others find the member id changed and carry on.
    async fn rejoin(&self, dead_member: &str) -> Result<()> {
        let _one_at_a_time = self.rejoin_lock.lock().await;
        if self.member.lock().member_id != dead_member {
            return Ok(());
        }
        if self.is_shutting_down() {
            return Err(ClientError::Closed);
        }
        let resp = self.join().await?;
        tracing::info!(
            group = %self.config.group,
            old = dead_member,
            new = %resp.member_id,
            "rejoined consumer group"
        );
        self.install(resp);
        Ok(())
    }

    fn update_assignment(&self, member_id: &str, generation: u32, assignment: Vec<TopicPartition>) {
        let mut m = self.member.lock();
        if m.member_id == member_id {
            m.generation = generation;
            m.assignment = assignment;
        }
    }

    fn note_generation(&self, member_id: &str, generation: u32) {
        let mut m = self.member.lock();
        if m.member_id == member_id {
            m.generation = generation;
        }
    }

    async fn stream(&self) -> Result<Arc<crate::conn::RequestStream>> {
        if let Some(s) = self.stream.lock().as_ref()
            && !s.is_closed()
        {
            return Ok(s.clone());
        }
        let s = self.conn.open_stream().await?;
        *self.stream.lock() = Some(s.clone());
        Ok(s)
    }

    /// Sends one settlement request, rejoining once if the member is gone
    /// (the broker matches settlements by partition and offset, so the new
    /// member id still settles what is in flight).
    async fn settle(&self, batch: &SettleBatch) -> Result<AckResponse> {
        let mut req = AckRequest {
            member: self.member_ref(),
            acks: batch.acks.clone(),
            nacks: batch.nacks.clone(),
        };
        let mut rejoined = false;
        loop {
            let stream = self.stream().await?;
            match stream.request(&req, None).await {
                Ok(r) => return Ok(r),
                Err(e) if needs_rejoin(&e) && !rejoined => {
                    rejoined = true;
                    self.rejoin(&req.member.member_id).await?;
                    req.member = self.member_ref();
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn record(&self, batch: &SettleBatch, result: &Result<AckResponse>) {
        match result {
            Ok(r) => {
                self.settled.fetch_add(r.settled.into(), Ordering::Relaxed);
                self.stale.fetch_add(r.stale.into(), Ordering::Relaxed);
            }
            Err(e) => {
                self.failed
                    .fetch_add(batch.messages as u64, Ordering::Relaxed);
                tracing::warn!(
                    group = %self.config.group,
                    messages = batch.messages,
                    error = %e,
                    "settling messages failed; the broker will deliver them again"
                );
            }
        }
    }

    /// Sends everything queued and waits for every settlement request's answer.
    async fn flush_acks(&self) -> Result<()> {
        let _all = self
            .ack_slots
            .acquire_many(ACK_REQUESTS_IN_FLIGHT as u32)
            .await
            .map_err(|_| ClientError::Closed)?;
        let Some(batch) = self.acks.take() else {
            return Ok(());
        };
        let result = self.settle(&batch).await;
        self.record(&batch, &result);
        result.map(|_| ())
    }

    async fn leave_group(&self) -> Result<()> {
        match self
            .conn
            .request(&LeaveGroupRequest(self.member_ref()))
            .await
        {
            Err(e) if !needs_rejoin(&e) => Err(e),
            _ => Ok(()),
        }
    }

    fn parse(&self, batch: &GroupBatch) -> Result<Vec<GroupMessage>> {
        parse_batch(batch, &self.retry_topic, &self.acks)
    }
}

/// Keeps the member alive; rejoins when the broker forgot it.
async fn heartbeat_loop(shared: Arc<Shared>) {
    let mut shutdown = shared.shutdown.subscribe();
    loop {
        let interval = shared.member.lock().heartbeat_interval;
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stopped(&mut shutdown) => return,
        }
        let beat = async {
            let member = shared.member_ref();
            let resp = tokio::time::timeout(
                shared.config.session_timeout,
                shared.conn.request(&HeartbeatRequest(member.clone())),
            )
            .await
            .unwrap_or(Err(ClientError::Timeout(shared.config.session_timeout)));
            match resp {
                Ok(r) => shared.update_assignment(&member.member_id, r.generation, r.assignment),
                Err(e) if needs_rejoin(&e) => {
                    if let Err(e) = shared.rejoin(&member.member_id).await {
                        let group = &shared.config.group;
                        tracing::warn!(%group, error = %e, "rejoining failed");
                    }
                }
                Err(e) => {
                    tracing::warn!(group = %shared.config.group, error = %e, "heartbeat failed");
                }
            }
        };
        tokio::select! {
            _ = beat => {}
            _ = stopped(&mut shutdown) => return,
        }
    }
}

/// Sends queued settlements: at once when a batch is full, else after the
/// ack interval, several requests in flight at a time.
async fn ack_loop(shared: Arc<Shared>) {
    let mut shutdown = shared.shutdown.subscribe();
    let queue = shared.acks.clone();
    loop {
        tokio::select! {
            _ = queue.queued.notified() => {}
            _ = stopped(&mut shutdown) => return,
        }
        if !queue.is_full() {
            tokio::select! {
                _ = tokio::time::sleep(shared.config.ack_interval) => {}
                _ = queue.full.notified() => {}
                _ = stopped(&mut shutdown) => return,
            }
        }
        // The permit before the batch: whoever holds every permit knows no
        // batch is taken and not yet sent (see `Shared::flush_acks`).
        let permit = tokio::select! {
            p = shared.ack_slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
            _ = stopped(&mut shutdown) => return,
        };
        let Some(batch) = queue.take() else {
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let result = shared.settle(&batch).await;
            shared.record(&batch, &result);
            drop(permit);
        });
    }
}

// ---------------------------------------------------------------- consumer

/// A member of a consumer group; see the module docs.
///
/// Dropping it leaves the group in the background (queued acks are sent
/// first) when inside a Tokio runtime; [`GroupConsumer::leave`] does the
/// same and reports how it went.
#[derive(Debug)]
pub struct GroupConsumer {
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
    left: bool,
}

impl Client {
    /// Joins a consumer group and keeps the membership alive in the
    /// background. Fails when the group exists with other settings
    /// ([`ErrorCode::InconsistentGroup`]) or the topic does not.
    ///
    /// ```no_run
    /// # async fn demo(client: sluice_client::Client) -> sluice_client::Result<()> {
    /// use sluice_client::GroupConfig;
    /// let consumer = client.group_consumer(GroupConfig::new("billing", "orders")).await?;
    /// println!("member {} has {:?}", consumer.member_id(), consumer.assignment());
    /// consumer.leave().await?;
    /// # Ok(()) }
    /// ```
    pub async fn group_consumer(&self, config: GroupConfig) -> Result<GroupConsumer> {
        config.validate()?;
        let (shutdown, _) = watch::channel(false);
        let shared = Arc::new(Shared {
            conn: self.conn.clone(),
            retry_topic: retry_topic(&config.group),
            instance_id: Mutex::new(config.instance_id.clone()),
            acks: Arc::new(AckQueue::new(config.ack_batch)),
            config,
            member: Mutex::new(Membership {
                member_id: String::new(),
                generation: 0,
                heartbeat_interval: Duration::ZERO,
                assignment: Vec::new(),
            }),
            rejoin_lock: tokio::sync::Mutex::new(()),
            stream: Mutex::new(None),
            ack_slots: Arc::new(Semaphore::new(ACK_REQUESTS_IN_FLIGHT)),
            settled: AtomicU64::new(0),
            stale: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            shutdown,
        });
        let resp = shared.join().await?;
        shared.install(resp);
        let tasks = vec![
            tokio::spawn(heartbeat_loop(shared.clone())),
            tokio::spawn(ack_loop(shared.clone())),
        ];
        Ok(GroupConsumer {
            shared,
            tasks,
            left: false,
        })
    }

    /// A group's settings, members, and progress per partition.
    pub async fn describe_group(&self, group: &str) -> Result<GroupDescription> {
        self.conn
            .request(&DescribeGroupRequest(GroupRef {
                group: group.to_owned(),
            }))
            .await
    }

    pub async fn list_groups(&self) -> Result<Vec<GroupSummary>> {
        Ok(self.conn.request(&ListGroupsRequest).await?.groups)
    }

    /// Moves a group's position on the given partitions of its topic (all
    /// of them when empty); messages in flight are forgotten. Returns the
    /// new positions.
    ///
    /// ```no_run
    /// # async fn demo(client: sluice_client::Client) -> sluice_client::Result<()> {
    /// use sluice_client::{OffsetSpec, ResetTo};
    /// client.reset_group("billing", &[], ResetTo::Spec(OffsetSpec::Earliest)).await?;
    /// # Ok(()) }
    /// ```
    pub async fn reset_group(
        &self,
        group: &str,
        partitions: &[u32],
        to: ResetTo,
    ) -> Result<Vec<(TopicPartition, u64)>> {
        Ok(self
            .conn
            .request(&ResetGroupRequest {
                group: group.to_owned(),
                partitions: partitions.to_vec(),
                to,
            })
            .await?
            .positions)
    }

    /// Sends up to `max` dead letters (0: all) back to the group through
    /// its retry topic, with their attempts reset.
    pub async fn redrive_dead_letters(&self, group: &str, max: u32) -> Result<RedriveResponse> {
        self.conn
            .request(&RedriveRequest {
                group: group.to_owned(),
                max,
            })
            .await
    }

    /// Forgets a group with no live members. Its retry and dead-letter
    /// topics stay until deleted like any topic.
    pub async fn delete_group(&self, group: &str) -> Result<()> {
        self.conn
            .request(&DeleteGroupRequest(GroupRef {
                group: group.to_owned(),
            }))
            .await?;
        Ok(())
    }
}

impl GroupConsumer {
    pub fn group(&self) -> &str {
        &self.shared.config.group
    }

    pub fn config(&self) -> &GroupConfig {
        &self.shared.config
    }

    /// The current member id (it changes when the consumer rejoins).
    pub fn member_id(&self) -> String {
        self.shared.member.lock().member_id.clone()
    }

    /// The instance id this consumer joins as (see [`GroupConfig::instance_id`]).
    pub fn instance_id(&self) -> String {
        self.shared.instance_id.lock().clone()
    }

    /// The group generation last heard of.
    pub fn generation(&self) -> u32 {
        self.shared.member.lock().generation
    }

    /// The partitions assigned to this member, as last heard of (from the
    /// join or the latest heartbeat).
    pub fn assignment(&self) -> Vec<TopicPartition> {
        self.shared.member.lock().assignment.clone()
    }

    /// Settlement counts so far (see [`AckStats`]).
    pub fn ack_stats(&self) -> AckStats {
        AckStats {
            settled: self.shared.settled.load(Ordering::Relaxed),
            stale: self.shared.stale.load(Ordering::Relaxed),
            failed: self.shared.failed.load(Ordering::Relaxed),
        }
    }

    /// Long-polls for messages: returns as soon as any are ready, or empty
    /// after [`GroupConfig::poll_max_wait`]. Rejoins by itself when the
    /// broker forgot the member. Several tasks may poll at once.
    pub async fn poll(&self) -> Result<Vec<GroupMessage>> {
        let config = &self.shared.config;
        let mut req = PollGroupRequest {
            member: self.shared.member_ref(),
            max_messages: config.poll_max_messages,
            max_bytes: config.max_bytes,
            max_wait_ms: millis_u32(config.poll_max_wait),
        };
        let mut rejoins = 0;
        loop {
            let stream = self.shared.stream().await?;
            match stream.request(&req, Some(config.poll_max_wait)).await {
                Ok(batch) => {
                    self.shared
                        .note_generation(&req.member.member_id, batch.generation);
                    let messages = self.shared.parse(&batch)?;
                    if config.auto_ack {
                        messages.iter().for_each(|m| {
                            m.ack();
                        });
                    }
                    return Ok(messages);
                }
                Err(e) if needs_rejoin(&e) && rejoins < 3 => {
                    rejoins += 1;
                    self.shared.rejoin(&req.member.member_id).await?;
                    req.member = self.shared.member_ref();
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Sends every queued settlement now and waits for the broker's answers.
    pub async fn flush_acks(&self) -> Result<()> {
        self.shared.flush_acks().await
    }

    /// Turns the consumer into a stream of pushed messages; see [`GroupStream`].
    pub fn subscribe(self) -> GroupStream {
        let auto_ack = self.shared.config.auto_ack;
        self.subscribe_inner(auto_ack)
    }

    fn subscribe_inner(self, auto_ack: bool) -> GroupStream {
        let window = self.shared.config.credit_window.max(1);
        let flow = Arc::new(Flow {
            window,
            chunk: (window / 4).max(1),
            buffered: AtomicU64::new(0),
            taken: Notify::new(),
        });
        let (tx, rx) = mpsc::unbounded_channel();
        let driver = tokio::spawn(subscription_loop(self.shared.clone(), flow.clone(), tx));
        GroupStream {
            consumer: self,
            rx,
            current: Vec::new().into_iter(),
            flow,
            taken: 0,
            driver: Some(driver),
            auto_ack,
        }
    }

    /// Runs `handler` on every message, at most `concurrency` at once,
    /// until `shutdown` completes; then waits for the running handlers,
    /// sends the queued settlements and leaves the group.
    ///
    /// `Ok` acks the message, `Err` nacks it for a retry with the error's
    /// text as the reason. A handler may settle the message itself (say,
    /// [`GroupMessage::dead_letter`] for a message that can never succeed);
    /// its result then changes nothing. [`GroupConfig::auto_ack`] does not
    /// apply here. Handlers run concurrently on the calling task: spawn
    /// CPU-heavy work onto other threads.
    ///
    /// Returns an error that retrying will not cure (after leaving);
    /// transient ones (connection lost, broker restarting) are retried.
    ///
    /// ```no_run
    /// # async fn demo(client: sluice_client::Client) -> sluice_client::Result<()> {
    /// use sluice_client::{GroupConfig, GroupMessage};
    /// let consumer = client.group_consumer(GroupConfig::new("billing", "orders")).await?;
    /// consumer
    ///     .run(32, tokio::signal::ctrl_c(), |m: GroupMessage| async move {
    ///         let text = std::str::from_utf8(&m.value).map_err(|e| e.to_string())?;
    ///         println!("{text}");
    ///         Ok::<_, String>(())
    ///     })
    ///     .await
    /// # }
    /// ```
    pub async fn run<S, F, Fut, E>(
        self,
        concurrency: usize,
        shutdown: S,
        mut handler: F,
    ) -> Result<()>
    where
        S: Future,
        F: FnMut(GroupMessage) -> Fut,
        Fut: Future<Output = std::result::Result<(), E>>,
        E: fmt::Display,
    {
        let concurrency = concurrency.max(1);
        let mut messages = self.subscribe_inner(false);
        let mut running = FuturesUnordered::new();
        let mut outcome = Ok(());
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                biased;
                _ = &mut shutdown => break,
                Some(()) = running.next(), if !running.is_empty() => {}
                next = messages.next(), if running.len() < concurrency => match next {
                    Some(Ok(m)) => {
                        let handle = m.ack_handle();
                        let work = handler(m);
                        running.push(async move {
                            match work.await {
                                Ok(()) => handle.ack(),
                                Err(e) => handle.nack(format!("{e:#}")),
                            };
                        });
                    }
                    Some(Err(e)) => {
                        outcome = Err(e);
                        break;
                    }
                    None => break,
                },
            }
        }
        while running.next().await.is_some() {}
        let left = messages.leave().await;
        outcome.and(left)
    }

    /// Sends the queued settlements and leaves the group: the broker hands
    /// this member's unsettled messages to the others at once.
    pub async fn leave(mut self) -> Result<()> {
        self.left = true;
        self.shared.shutdown.send_replace(true);
        for task in self.tasks.drain(..) {
            let _ = task.await;
        }
        let flushed = self.shared.flush_acks().await;
        let left = self.shared.leave_group().await;
        flushed.and(left)
    }
}

impl Drop for GroupConsumer {
    fn drop(&mut self) {
        if self.left {
            return;
        }
        self.shared.shutdown.send_replace(true);
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let shared = self.shared.clone();
            rt.spawn(async move {
                let _ = shared.flush_acks().await;
                let _ = shared.leave_group().await;
            });
        }
    }
}

// ---------------------------------------------------------------- push

/// Credit flow control between a subscription and its [`GroupStream`].
#[derive(Debug)]
struct Flow {
    window: u32,
    /// Credit is granted in steps of at least this much.
    chunk: u32,
    /// Messages pushed and not yet handed to the application.
    buffered: AtomicU64,
    /// The application took messages out.
    taken: Notify,
}

impl Flow {
    fn buffered(&self) -> u64 {
        self.buffered.load(Ordering::Relaxed)
    }
}

/// Credit to grant now: the room left in the window beyond what is
/// buffered and what the broker may still push, once it is worth a frame.
fn credit_to_grant(window: u32, chunk: u32, buffered: u64, outstanding: u64) -> u32 {
    let room = u64::from(window).saturating_sub(buffered.saturating_add(outstanding));
    if room >= u64::from(chunk.max(1)) {
        room as u32
    } else {
        0
    }
}

type Pushed = Result<Vec<GroupMessage>>;

/// Keeps a subscription open: opens it, and after it ends, rejoins if the
/// member is gone, and opens it again (with a growing pause after
/// failures). Ends on shutdown, when the stream is dropped, or after
/// reporting an error that retrying will not cure.
async fn subscription_loop(
    shared: Arc<Shared>,
    flow: Arc<Flow>,
    tx: mpsc::UnboundedSender<Pushed>,
) {
    let mut shutdown = shared.shutdown.subscribe();
    let mut backoff = RESUBSCRIBE_BACKOFF_MIN;
    // Whether the member was replaced since messages last arrived.
    let mut rejoined = false;
    loop {
        let member = shared.member_ref();
        let mut progress = false;
        let err = tokio::select! {
            e = subscribe_once(&shared, &member, &flow, &tx, &mut progress) => e,
            _ = stopped(&mut shutdown) => return,
            _ = tx.closed() => return,
        };
        if progress {
            backoff = RESUBSCRIBE_BACKOFF_MIN;
            rejoined = false;
        }
        let err = if needs_rejoin(&err) {
            match shared.rejoin(&member.member_id).await {
                // A new member subscribes at once; a second one without
                // messages in between waits like any failure.
                Ok(()) if !rejoined => {
                    rejoined = true;
                    continue;
                }
                Ok(()) => err,
                Err(e) => e,
            }
        } else {
            err
        };
        let pause = backoff;
        backoff = (backoff * 2).min(RESUBSCRIBE_BACKOFF_MAX);
        if matches!(err, ClientError::Closed) || shared.is_shutting_down() {
            return;
        }
        if is_fatal(&err) {
            let _ = tx.send(Err(err));
            return;
        }
        tracing::warn!(
            group = %shared.config.group,
            error = %err,
            retry_in = ?pause,
            "group subscription interrupted"
        );
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = stopped(&mut shutdown) => return,
            _ = tx.closed() => return,
        }
    }
}

async fn write_frame(send: &mut quinn::SendStream, op: Op, id: u32, payload: &[u8]) -> Result<()> {
    let mut buf = BytesMut::with_capacity(frame::HEADER_LEN + payload.len());
    frame::encode(op as u16, id, payload, &mut buf);
    send.write_all(&buf)
        .await
        .map_err(|e| ClientError::Disconnected(e.to_string()))
}

/// The messages one frame of a subscription stream pushes (none for a
/// frame that is not for the subscription), or why the subscription ended.
fn pushed(shared: &Shared, member: &MemberRef, frame: Frame) -> Result<Vec<GroupMessage>> {
    if frame.request_id == 0 && frame.op == ERROR_OP {
        // A stream-level error: the broker closes the stream.
        return Err(ClientError::Broker(
            WireError::decode(frame.payload).unwrap_or_else(|e| {
                WireError::new(ErrorCode::Internal, format!("stream error: {e}"))
            }),
        ));
    }
    if frame.request_id != SUBSCRIBE_REQUEST_ID {
        // Credit grants get no answer; nothing else is expected.
        tracing::debug!(
            op = frame.op,
            id = frame.request_id,
            "unexpected frame on a subscription"
        );
        return Ok(Vec::new());
    }
    let batch = decode_response::<GroupBatch>(Op::Subscribe, frame).map_err(ClientError::Broker)?;
    shared.note_generation(&member.member_id, batch.generation);
    shared.parse(&batch)
}

/// One subscription on a stream of its own, until it fails; returns why.
/// Sets `progress` when messages arrive.
async fn subscribe_once(
    shared: &Shared,
    member: &MemberRef,
    flow: &Flow,
    tx: &mpsc::UnboundedSender<Pushed>,
    progress: &mut bool,
) -> ClientError {
    let (mut send, mut recv) = match shared.conn.open_bi().await {
        Ok(s) => s,
        Err(e) => return e,
    };
    let mut outstanding = u64::from(flow.window).saturating_sub(flow.buffered());
    let req = SubscribeRequest {
        member: member.clone(),
        credit: outstanding as u32,
        max_bytes: shared.config.max_bytes,
    };
    if let Err(e) = write_frame(
        &mut send,
        Op::Subscribe,
        SUBSCRIBE_REQUEST_ID,
        &req.encode(),
    )
    .await
    {
        return e;
    }
    let mut next_grant_id = SUBSCRIBE_REQUEST_ID;
    let mut decoder = FrameDecoder::new(usize::MAX >> 1);
    loop {
        tokio::select! {
            chunk = recv.read_chunk(usize::MAX, true) => {
                match chunk {
                    Ok(Some(c)) => decoder.extend(&c.bytes),
                    Ok(None) => {
                        let why = "the broker ended the subscription";
                        return ClientError::Disconnected(why.into());
                    }
                    Err(e) => return ClientError::Disconnected(e.to_string()),
                }
                loop {
                    let frame = match decoder.decode() {
                        Ok(Some(f)) => f,
                        Ok(None) => break,
                        Err(e) => return ClientError::Corrupt(e.to_string()),
                    };
                    let messages = match pushed(shared, member, frame) {
                        Ok(m) if m.is_empty() => continue,
                        Ok(m) => m,
                        Err(e) => return e,
                    };
                    let n = messages.len() as u64;
                    outstanding = outstanding.saturating_sub(n);
                    flow.buffered.fetch_add(n, Ordering::Relaxed);
                    *progress = true;
                    if tx.send(Ok(messages)).is_err() {
                        return ClientError::Closed;
                    }
                }
            }
            _ = flow.taken.notified() => {}
        }
        let grant = credit_to_grant(flow.window, flow.chunk, flow.buffered(), outstanding);
        if grant > 0 {
            next_grant_id = match next_grant_id.wrapping_add(1) {
                0 | SUBSCRIBE_REQUEST_ID => SUBSCRIBE_REQUEST_ID + 1,
                id => id,
            };
            let req = GrantCreditRequest {
                member: member.clone(),
                messages: grant,
            };
            if let Err(e) =
                write_frame(&mut send, Op::GrantCredit, next_grant_id, &req.encode()).await
            {
                return e;
            }
            outstanding += u64::from(grant);
        }
    }
}

/// Messages the broker pushes to this member, as a [`Stream`].
///
/// The broker pushes only as much as the credit window
/// ([`GroupConfig::credit_window`]) allows: credit is granted back as the
/// application takes messages out, so the local buffer never holds more
/// than the window. Connection losses and a forgotten member are repaired
/// in the background (rejoin, resubscribe) and only logged; an `Err` item
/// is an error that retrying will not cure, and the stream ends after it.
///
/// Dropping the stream leaves the group as dropping the consumer does;
/// buffered messages not handed out yet go back to the broker's care.
#[derive(Debug)]
pub struct GroupStream {
    consumer: GroupConsumer,
    rx: mpsc::UnboundedReceiver<Pushed>,
    current: std::vec::IntoIter<GroupMessage>,
    flow: Arc<Flow>,
    /// Messages taken out since the subscription was last told.
    taken: u32,
    driver: Option<JoinHandle<()>>,
    auto_ack: bool,
}

impl GroupStream {
    /// The consumer behind the stream (membership, stats, acks).
    pub fn consumer(&self) -> &GroupConsumer {
        &self.consumer
    }

    /// Ends the subscription, sends the queued settlements and leaves the
    /// group. Buffered messages not handed out are dropped unsettled (the
    /// broker hands them to other members).
    pub async fn leave(mut self) -> Result<()> {
        self.consumer.shared.shutdown.send_replace(true);
        if let Some(driver) = self.driver.take() {
            let _ = driver.await;
        }
        let GroupStream { consumer, .. } = self;
        consumer.leave().await
    }
}

impl Stream for GroupStream {
    type Item = Result<GroupMessage>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if let Some(m) = this.current.next() {
                this.flow.buffered.fetch_sub(1, Ordering::Relaxed);
                this.taken += 1;
                if this.taken >= this.flow.chunk || this.current.len() == 0 {
                    this.taken = 0;
                    this.flow.taken.notify_one();
                }
                if this.auto_ack {
                    m.ack();
                }
                return Poll::Ready(Some(Ok(m)));
            }
            match ready!(this.rx.poll_recv(cx)) {
                Some(Ok(batch)) => this.current = batch.into_iter(),
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                None => return Poll::Ready(None),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use sluice_protocol::batch::{BatchBuilder, set_base_offset};
    use sluice_protocol::headers;

    use super::*;

    fn queue() -> Arc<AckQueue> {
        Arc::new(AckQueue::new(1024))
    }

    fn tp(topic: &str, partition: u32) -> Arc<TopicPartition> {
        Arc::new(TopicPartition {
            topic: topic.into(),
            partition,
        })
    }

    fn range(first_offset: u64, count: u32) -> OffsetRange {
        OffsetRange {
            first_offset,
            count,
        }
    }

    #[test]
    fn acked_offsets_coalesce_into_ranges() {
        assert_eq!(coalesce(&mut []), []);
        assert_eq!(coalesce(&mut [7]), [range(7, 1)]);
        assert_eq!(
            coalesce(&mut [5, 3, 4, 9, 10, 4, 12, 0]),
            [range(0, 1), range(3, 3), range(9, 2), range(12, 1)],
            "sorted, duplicates dropped"
        );
        let mut many: Vec<u64> = (100..10_100).rev().collect();
        assert_eq!(coalesce(&mut many), [range(100, 10_000)]);
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

    #[test]
    fn the_queue_says_when_it_is_full() {
        let q = Arc::new(AckQueue::new(3));
        let a = tp("t", 0);
        q.ack(&a, 1);
        q.ack(&a, 2);
        assert!(!q.is_full());
        q.ack(&a, 3);
        assert!(q.is_full());
        q.take();
        assert!(!q.is_full());
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

    #[test]
    fn credit_is_granted_in_chunks_within_the_window() {
        // Everything pushed is still buffered: no room.
        assert_eq!(credit_to_grant(1024, 256, 1024, 0), 0);
        // The application took less than a chunk: not worth a frame yet.
        assert_eq!(credit_to_grant(1024, 256, 900, 0), 0);
        // A chunk's worth taken: grant all the room.
        assert_eq!(credit_to_grant(1024, 256, 700, 0), 324);
        // Credit the broker still holds counts against the window.
        assert_eq!(credit_to_grant(1024, 256, 0, 1024), 0);
        assert_eq!(credit_to_grant(1024, 256, 100, 500), 424);
        // Over-delivery never underflows.
        assert_eq!(credit_to_grant(10, 2, 50, 7), 0);
        assert_eq!(credit_to_grant(1, 0, 0, 0), 1);
    }

    #[test]
    fn config_defaults_match_the_group_settings() {
        let c = GroupConfig::new("g", "t");
        assert_eq!(
            c.settings,
            GroupSettings {
                topic: "t".into(),
                ..GroupSettings::default()
            }
        );
        assert!(c.validate().is_ok());
        assert!(GroupConfig::new("", "t").validate().is_err());
        assert!(GroupConfig::new("g", "").validate().is_err());
        assert!(
            GroupConfig::new("g", "t")
                .credit_window(0)
                .validate()
                .is_err()
        );
        let c = GroupConfig::new("g", "t")
            .broadcast()
            .ack_timeout(Duration::from_secs(u64::MAX))
            .retry_ladder([Duration::from_millis(5), Duration::from_micros(1500)]);
        assert_eq!(c.settings.mode, GroupMode::Broadcast);
        assert_eq!(c.settings.ack_timeout_ms, u32::MAX);
        assert_eq!(c.settings.retry_ladder_ms, [5, 1]);
    }

    #[test]
    fn errors_sort_into_rejoin_fatal_and_transient() {
        let broker = |code| ClientError::Broker(WireError::new(code, "x"));
        assert!(needs_rejoin(&broker(ErrorCode::UnknownMember)));
        assert!(!is_fatal(&broker(ErrorCode::UnknownMember)));
        assert!(is_fatal(&broker(ErrorCode::InconsistentGroup)));
        assert!(!is_fatal(&broker(ErrorCode::ShuttingDown)));
        assert!(!is_fatal(&ClientError::Disconnected("gone".into())));
    }
}
