//! The scheduler: delayed, loop and retry delivery on RocksDB.
//!
//! A scheduled message waits in the `delays` column family of the metadata
//! store under a [`DueKey`] (due time, then a global sequence), so an
//! iterator returns messages in due order. A second family maps the delay
//! id to that key (for cancel), a third indexes keys by topic and a fourth
//! counts them (for listing).
//!
//! The map of the module:
//!
//! - [`keys`]: the byte layouts of the column families;
//! - [`wheel`]: the in-memory timing wheel of the keys due in the next few
//!   seconds;
//! - [`loops`]: loop-message validation and the next occurrence;
//! - [`retry`]: the retry ladder consumer groups schedule their retries with;
//! - `dispatch`: moving due messages into their topics exactly once.
//!
//! How a message travels:
//!
//! 1. [`Scheduler::schedule`] writes it (one synced `WriteBatch` for a whole
//!    request) and, if it is due within the stretch of time already loaded,
//!    puts its key into the wheel.
//! 2. The dispatcher ([`Scheduler::run`], or [`Scheduler::tick`] driven by
//!    hand with a test clock) loads the keys of the next few seconds into
//!    the wheel, drains the keys due *now* (never earlier), reads their
//!    messages and groups them into one record batch per partition.
//! 3. It records a dispatch *intent* (the batch's keys and the partition's
//!    log end) with a synced write, appends the batch, then deletes the
//!    messages — re-inserting the next occurrence of a loop message — and
//!    the intent in one synced `WriteBatch`.
//! 4. After a crash, each leftover intent is resolved before anything else:
//!    the log is searched from the recorded log end for the batch; if it is
//!    there it is not appended again, if it is not it is. Either way step 3
//!    then completes. Nothing is lost and nothing is delivered twice.

mod dispatch;
pub mod keys;
pub mod loops;
pub mod retry;
pub mod wheel;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::{Condvar, Mutex};
use rocksdb::{MergeOperands, Options, ReadOptions};
use sluice_meta::{Batch, Keyspace, Table, WriteMode};
use sluice_protocol::ops::{CancelOutcome, DelaySummary, DelayedRecord, LoopSpec};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::log::LogError;
use crate::meta::MetaError;
use crate::store::Store;

pub use keys::DueKey;
use keys::{Entry, IdState, Intent, StateKey};
pub use retry::RetryLadder;
use wheel::TimingWheel;

/// Due key → scheduled message.
pub const CF_DELAYS: Keyspace = Keyspace::tuned("delays", compact_tombstones);
/// Delay id → where it waits, or how it finished.
pub const CF_DELAY_IDS: Keyspace = Keyspace::tuned("delay_ids", expire_finished_ids);
/// Topic ++ due key → nothing: one topic's pending messages in due order.
pub const CF_DELAY_TOPICS: Keyspace = Keyspace::tuned("delay_topics", compact_tombstones);
/// Topic → pending count (merge operator adds deltas).
pub const CF_DELAY_COUNTS: Keyspace = Keyspace::tuned("delay_counts", sum_counts);
/// The scheduler's own state: sequence block, dispatch intents.
pub const CF_DELAY_STATE: Keyspace = Keyspace::plain("delay_state");

/// The scheduler's column families, for the metadata store to open.
pub const KEYSPACES: &[Keyspace] = &[
    CF_DELAYS,
    CF_DELAY_IDS,
    CF_DELAY_TOPICS,
    CF_DELAY_COUNTS,
    CF_DELAY_STATE,
];

/// How long a finished delay id is remembered, so cancelling it answers
/// "already delivered" rather than "unknown".
pub const FINISHED_ID_RETENTION_MS: i64 = 7 * 24 * 3600 * 1000;

/// Sequence numbers are reserved on disk in blocks of this many, so handing
/// one out costs no write.
const SEQ_BLOCK: u64 = 1 << 20;

/// Dispatched messages leave tombstones at the front of the due order;
/// compact files that fill up with them so scans stay fast.
fn compact_tombstones(opts: &mut Options) {
    opts.add_compact_on_deletion_collector_factory(10_000, 5_000, 0.5);
}

/// Pending counts are kept as deltas that RocksDB adds up.
fn sum_counts(opts: &mut Options) {
    opts.set_merge_operator_associative("sluice.add_i64", add_counts);
}

/// Finished delay ids are forgotten by compaction once past their retention.
fn expire_finished_ids(opts: &mut Options) {
    opts.set_compaction_filter("sluice.finished_ids", |_, _, value: &[u8]| {
        let now = crate::clock::SystemClock.now_ms();
        match IdState::finished_at(value) {
            Some(at) if now.saturating_sub(at) > FINISHED_ID_RETENTION_MS => {
                rocksdb::CompactionDecision::Remove
            }
            _ => rocksdb::CompactionDecision::Keep,
        }
    });
}

fn add_counts(_key: &[u8], existing: Option<&[u8]>, operands: &MergeOperands) -> Option<Vec<u8>> {
    let mut total = existing.map_or(0, keys::decode_count);
    for op in operands {
        total += keys::decode_count(op);
    }
    Some(keys::count_delta(total).to_vec())
}

/// The scheduler's column families, looked up once per operation, and the
/// writes that keep them consistent with each other.
struct Families<'a> {
    delays: Table<'a>,
    ids: Table<'a>,
    topics: Table<'a>,
    counts: Table<'a>,
    state: Table<'a>,
}

impl Families<'_> {
    /// Adds to `batch` a pending message at `key`: the message, its topic
    /// index entry, its topic's count and its id's state.
    fn put_pending(&self, batch: &mut Batch, key: DueKey, entry: &Entry) {
        batch.put(&self.delays, key.encode(), entry.encode());
        batch.put(&self.topics, keys::topic_index_key(&entry.topic, key), b"");
        batch.merge(&self.counts, entry.topic.as_bytes(), keys::count_delta(1));
        self.set_id(batch, entry.delay_id, IdState::Pending(key));
    }

    /// Adds to `batch` the removal of a pending message at `key` (its id's
    /// new state is the caller's to set).
    fn remove_pending(&self, batch: &mut Batch, key: DueKey, topic: &str) {
        batch.delete(&self.delays, key.encode());
        batch.delete(&self.topics, keys::topic_index_key(topic, key));
        batch.merge(&self.counts, topic.as_bytes(), keys::count_delta(-1));
    }

    fn set_id(&self, batch: &mut Batch, delay_id: u64, state: IdState) {
        batch.put(&self.ids, keys::id_key(delay_id), state.encode());
    }
}

/// Failures of the scheduler.
#[derive(Debug, thiserror::Error)]
pub enum SchedError {
    /// The request is not acceptable (horizon, due time).
    #[error("{0}")]
    Invalid(String),
    /// The loop parameters are not acceptable.
    #[error(transparent)]
    Loop(#[from] loops::LoopError),
    /// The message is over a size limit (the broker's or its topic's).
    #[error("{0}")]
    TooLarge(String),
    /// Storing failed; the same request may succeed later.
    #[error("scheduler store unavailable: {0}")]
    Unavailable(String),
    #[error(transparent)]
    Log(#[from] LogError),
    #[error(transparent)]
    Meta(#[from] MetaError),
    #[error("scheduler store: {0}")]
    Rocks(#[from] rocksdb::Error),
    #[error("scheduler store: corrupt data: {0}")]
    Corrupt(String),
}

impl SchedError {
    pub(crate) fn corrupt(reason: impl Into<String>) -> Self {
        SchedError::Corrupt(reason.into())
    }
}

/// Settings of the scheduler.
#[derive(Debug, Clone)]
pub struct SchedulerOptions {
    /// How far ahead a message may be scheduled.
    pub max_horizon_ms: u64,
    /// Largest scheduled record (key, value and headers).
    pub max_message_bytes: usize,
    /// Milliseconds of time the wheel covers (one slot each).
    pub wheel_span_ms: usize,
    /// Most messages one dispatch round moves.
    pub round_max_messages: usize,
    /// Most keys read from disk into the wheel at a time.
    pub load_batch: usize,
    /// The loader stops filling the wheel at this many keys.
    pub max_wheel_keys: usize,
    /// Largest record batch the dispatcher appends.
    pub max_batch_bytes: usize,
}

impl Default for SchedulerOptions {
    fn default() -> Self {
        SchedulerOptions {
            max_horizon_ms: 2 * 365 * 24 * 3600 * 1000,
            max_message_bytes: 8 << 20,
            wheel_span_ms: 4096,
            round_max_messages: 8192,
            load_batch: 65_536,
            max_wheel_keys: 1 << 20,
            max_batch_bytes: 1 << 20,
        }
    }
}

/// A message to deliver later, as the scheduler takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub topic: String,
    pub partition: u32,
    /// When it is due (ms since the epoch); a time in the past is due now.
    pub due_at_ms: i64,
    pub repeat: Option<LoopSpec>,
    pub record: DelayedRecord,
}

/// A scheduled message's id and due time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scheduled {
    pub delay_id: u64,
    pub due_at_ms: i64,
}

/// What one [`Scheduler::tick`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TickReport {
    /// Messages appended to their topics.
    pub dispatched: u64,
    /// Messages dropped because their topic or partition is gone.
    pub dropped: u64,
    /// Intents left by a crash (or a failed append) that were resolved.
    pub intents_resolved: u64,
    /// Of those, batches found already in the log (not appended again).
    pub already_in_log: u64,
    /// When the next message is due, if one is in the wheel.
    pub next_due_ms: Option<u64>,
}

/// Counters for metrics and benchmarks.
#[derive(Debug, Default)]
pub struct SchedStats {
    pub scheduled: AtomicU64,
    pub dispatched: AtomicU64,
    pub cancelled: AtomicU64,
    pub dropped: AtomicU64,
    /// Dispatch lateness (append time − due time), in ms.
    pub lateness_ms: Mutex<Option<hdrhistogram::Histogram<u64>>>,
}

struct State {
    wheel: TimingWheel,
    /// Every pending key below this is in the wheel (or claimed).
    loaded_until: DueKey,
    /// A load in progress covers the keys below this.
    loading_to: Option<DueKey>,
    /// Keys of messages being dispatched (in an unresolved intent).
    claimed: HashSet<DueKey>,
    next_seq: u64,
    seq_limit: u64,
}

/// The scheduler. Shared as `Arc<Scheduler>`; every method except
/// [`run`](Self::run) blocks on disk and belongs on a blocking thread.
pub struct Scheduler {
    store: Arc<Store>,
    clock: Arc<dyn Clock>,
    options: SchedulerOptions,
    state: Mutex<State>,
    /// Signalled when claimed keys are released (cancel waits for it).
    released: Condvar,
    /// Held by the one dispatcher; holds intents still to resolve.
    dispatch: Mutex<Vec<Intent>>,
    /// The idempotent-producer id dispatched batches are stamped with.
    producer_id: i64,
    /// Woken when a message due before `planned_wake_ms` is scheduled.
    wake: Notify,
    planned_wake_ms: AtomicI64,
    stats: SchedStats,
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl Scheduler {
    /// Opens the scheduler on `store`'s metadata database. Cheap however
    /// many messages are pending: it reads the sequence block and the
    /// leftover intents; the wheel fills on the first tick.
    pub fn open(
        store: Arc<Store>,
        clock: Arc<dyn Clock>,
        options: SchedulerOptions,
    ) -> Result<Scheduler, SchedError> {
        let meta = store.meta().clone();
        let state_cf = meta.table(&CF_DELAY_STATE)?;
        let seq_start = match state_cf.get(StateKey::SEQ_LIMIT)? {
            Some(v) => u64::from_be_bytes(
                v[..]
                    .try_into()
                    .map_err(|_| SchedError::corrupt("seq_limit is not 8 bytes"))?,
            ),
            // 0 is never a delay id, so the protocol can use it for "none".
            None => 1,
        };
        let mut intents = Vec::new();
        for item in state_cf.scan_prefix(StateKey::INTENT_PREFIX) {
            let (k, v) = item?;
            let id = k[StateKey::INTENT_PREFIX.len()..]
                .try_into()
                .map(u64::from_be_bytes)
                .map_err(|_| SchedError::corrupt("intent key is not 8 bytes of id"))?;
            intents.push(Intent::decode(id, &v)?);
        }
        let producer_id = match state_cf.get(StateKey::PRODUCER_ID)? {
            Some(v) => i64::from_be_bytes(
                v[..]
                    .try_into()
                    .map_err(|_| SchedError::corrupt("producer_id is not 8 bytes"))?,
            ),
            None => {
                let id = meta.allocate_producer_id()?;
                let mut batch = Batch::default();
                batch.put(&state_cf, StateKey::PRODUCER_ID, id.to_be_bytes());
                meta.write(batch, WriteMode::Synced)?;
                id
            }
        };
        let claimed: HashSet<DueKey> = intents.iter().flat_map(|i| i.keys.clone()).collect();
        if !intents.is_empty() {
            tracing::info!(
                intents = intents.len(),
                messages = claimed.len(),
                "scheduler found dispatches interrupted by a crash; resolving them first"
            );
        }
        let now = clock.now_ms().max(0) as u64;
        let scheduler = Scheduler {
            state: Mutex::new(State {
                wheel: TimingWheel::new(options.wheel_span_ms, now),
                loaded_until: DueKey::start_of(0),
                loading_to: None,
                claimed,
                next_seq: seq_start,
                seq_limit: seq_start,
            }),
            store,
            clock,
            options,
            released: Condvar::new(),
            dispatch: Mutex::new(intents),
            producer_id,
            wake: Notify::new(),
            planned_wake_ms: AtomicI64::new(i64::MAX),
            stats: SchedStats::default(),
        };
        Ok(scheduler)
    }

    pub fn options(&self) -> &SchedulerOptions {
        &self.options
    }

    pub fn stats(&self) -> &SchedStats {
        &self.stats
    }

    fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    fn families(&self) -> Result<Families<'_>, SchedError> {
        let meta = self.store.meta();
        Ok(Families {
            delays: meta.table(&CF_DELAYS)?,
            ids: meta.table(&CF_DELAY_IDS)?,
            topics: meta.table(&CF_DELAY_TOPICS)?,
            counts: meta.table(&CF_DELAY_COUNTS)?,
            state: meta.table(&CF_DELAY_STATE)?,
        })
    }

    /// Hands out the next sequence number, reserving a new block on disk
    /// when the current one runs out.
    fn next_seq(&self, st: &mut State) -> Result<u64, SchedError> {
        if st.next_seq >= st.seq_limit {
            let limit = st.next_seq + SEQ_BLOCK;
            let meta = self.store.meta();
            let mut batch = Batch::default();
            batch.put(
                &self.families()?.state,
                StateKey::SEQ_LIMIT,
                limit.to_be_bytes(),
            );
            meta.write(batch, WriteMode::Synced)?;
            st.seq_limit = limit;
        }
        let seq = st.next_seq;
        st.next_seq += 1;
        Ok(seq)
    }

    /// Checks one delivery against the scheduler's limits and the topics.
    fn check(&self, d: &Delivery, now: i64) -> Result<(), SchedError> {
        let partition = self.store.log().partition(&d.topic, d.partition)?;
        let ahead = d.due_at_ms.saturating_sub(now);
        if ahead > 0 && ahead as u64 > self.options.max_horizon_ms {
            return Err(SchedError::Invalid(format!(
                "due {ahead} ms from now, beyond the scheduler's horizon of {} ms \
                 (scheduler.max_horizon_ms)",
                self.options.max_horizon_ms
            )));
        }
        // It must fit in a batch of its own when it is dispatched.
        let size = d.record.approx_size() + dispatch::RECORD_OVERHEAD + dispatch::BATCH_OVERHEAD;
        let limit = self
            .options
            .max_message_bytes
            .min(partition.config().max_batch_bytes as usize);
        if size > limit {
            return Err(SchedError::TooLarge(format!(
                "message of about {size} bytes is over the limit of {limit} bytes \
                 (the broker's max_message_bytes or the topic's max_batch_bytes)"
            )));
        }
        if let Some(spec) = &d.repeat {
            loops::validate(spec, d.due_at_ms.max(now), now, self.options.max_horizon_ms)?;
        }
        Ok(())
    }

    /// Schedules messages: each is checked on its own, the accepted ones
    /// are written in one synced batch, and the answers come back in order.
    /// A due time in the past is moved to now (it is delivered at once).
    pub fn schedule(&self, deliveries: Vec<Delivery>) -> Vec<Result<Scheduled, SchedError>> {
        let now = self.now_ms();
        let mut results: Vec<Result<Scheduled, SchedError>> = Vec::with_capacity(deliveries.len());
        let mut accepted: Vec<(DueKey, Delivery)> = Vec::with_capacity(deliveries.len());
        // Checked before taking the lock: only handing out sequence
        // numbers is serialised.
        let checked: Vec<_> = deliveries
            .into_iter()
            .map(|d| self.check(&d, now).map(|()| d))
            .collect();
        {
            let mut st = self.state.lock();
            for d in checked {
                let d = match d {
                    Ok(d) => d,
                    Err(e) => {
                        results.push(Err(e));
                        continue;
                    }
                };
                match self.next_seq(&mut st) {
                    Ok(seq) => {
                        let key = DueKey::new(d.due_at_ms.max(now).max(0) as u64, seq);
                        results.push(Ok(Scheduled {
                            delay_id: seq,
                            due_at_ms: key.due_ms as i64,
                        }));
                        accepted.push((key, d));
                    }
                    Err(e) => results.push(Err(e)),
                }
            }
        }
        if accepted.is_empty() {
            return results;
        }
        if let Err(e) = self.write_scheduled(&accepted, Batch::default()) {
            let reason = e.to_string();
            tracing::error!(error = %reason, "could not store scheduled messages");
            for r in results.iter_mut() {
                if r.is_ok() {
                    *r = Err(SchedError::Unavailable(reason.clone()));
                }
            }
            return results;
        }
        self.stats
            .scheduled
            .fetch_add(accepted.len() as u64, Ordering::Relaxed);
        let earliest = self.admit(accepted.iter().map(|(k, _)| *k));
        if earliest.is_some_and(|due| (due as i64) < self.planned_wake_ms.load(Ordering::Acquire)) {
            self.wake.notify_one();
        }
        results
    }

    /// Schedules all of `deliveries` and writes `also` in the same synced
    /// write, or nothing: for a caller whose own state must move exactly
    /// when the messages are scheduled (a re-drive's cursor). Each message
    /// is then appended exactly once, like every scheduled message.
    pub fn schedule_with(
        &self,
        deliveries: Vec<Delivery>,
        also: Batch,
    ) -> Result<Vec<Scheduled>, SchedError> {
        let now = self.now_ms();
        for d in &deliveries {
            self.check(d, now)?;
        }
        let mut accepted = Vec::with_capacity(deliveries.len());
        {
            let mut st = self.state.lock();
            for d in deliveries {
                let seq = self.next_seq(&mut st)?;
                let key = DueKey::new(d.due_at_ms.max(now).max(0) as u64, seq);
                accepted.push((key, d));
            }
        }
        self.write_scheduled(&accepted, also)?;
        self.stats
            .scheduled
            .fetch_add(accepted.len() as u64, Ordering::Relaxed);
        let earliest = self.admit(accepted.iter().map(|(k, _)| *k));
        if earliest.is_some_and(|due| (due as i64) < self.planned_wake_ms.load(Ordering::Acquire)) {
            self.wake.notify_one();
        }
        Ok(accepted
            .iter()
            .map(|(key, _)| Scheduled {
                delay_id: key.seq,
                due_at_ms: key.due_ms as i64,
            })
            .collect())
    }

    fn write_scheduled(
        &self,
        accepted: &[(DueKey, Delivery)],
        mut batch: Batch,
    ) -> Result<(), SchedError> {
        let cfs = self.families()?;
        for (key, d) in accepted {
            let mut record = d.record.clone();
            record
                .headers
                .retain(|(name, _)| !is_scheduler_header(name));
            let entry = Entry {
                delay_id: key.seq,
                topic: d.topic.clone(),
                partition: d.partition,
                iteration: 1,
                repeat: d.repeat,
                record,
            };
            cfs.put_pending(&mut batch, *key, &entry);
        }
        let meta = self.store.meta();
        meta.write(batch, WriteMode::Synced)?;
        Ok(())
    }

    /// Puts newly written keys into the wheel when they fall in the stretch
    /// already loaded (later ones the loader will find on disk). Returns the
    /// earliest due time admitted.
    fn admit(&self, keys: impl Iterator<Item = DueKey>) -> Option<u64> {
        let mut st = self.state.lock();
        let bound = st
            .loading_to
            .map_or(st.loaded_until, |l| l.max(st.loaded_until));
        let mut earliest = None;
        for key in keys {
            if key < bound && st.wheel.insert(key) {
                earliest = Some(earliest.map_or(key.due_ms, |e: u64| e.min(key.due_ms)));
            }
        }
        earliest
    }

    /// Whether `delay_id` is scheduled and neither delivered, cancelled
    /// nor dropped yet. One metadata read.
    pub fn is_pending(&self, delay_id: u64) -> Result<bool, SchedError> {
        let cfs = self.families()?;
        Ok(match cfs.ids.get(keys::id_key(delay_id))? {
            Some(v) => matches!(IdState::decode(&v)?, IdState::Pending(_)),
            None => false,
        })
    }

    /// Cancels a scheduled message. A loop message stops looping. If the
    /// message is being dispatched right now, waits for that to finish and
    /// answers for what is left.
    pub fn cancel(&self, delay_id: u64) -> Result<(CancelOutcome, String), SchedError> {
        let meta = self.store.meta();
        let cfs = self.families()?;
        let mut st = self.state.lock();
        loop {
            let state = match cfs.ids.get(keys::id_key(delay_id))? {
                Some(v) => IdState::decode(&v)?,
                None => {
                    return Ok((
                        CancelOutcome::Unknown,
                        format!(
                            "no delayed message {delay_id} (never scheduled, or finished more \
                             than {} days ago)",
                            FINISHED_ID_RETENTION_MS / 86_400_000
                        ),
                    ));
                }
            };
            let key = match state {
                IdState::Pending(key) => key,
                IdState::Delivered { at_ms } => {
                    return Ok((
                        CancelOutcome::AlreadyDelivered,
                        format!("delivered at {at_ms} ms"),
                    ));
                }
                IdState::Cancelled { at_ms } => {
                    return Ok((
                        CancelOutcome::AlreadyCancelled,
                        format!("cancelled at {at_ms} ms"),
                    ));
                }
                IdState::Dropped { at_ms } => {
                    return Ok((
                        CancelOutcome::AlreadyCancelled,
                        format!(
                            "dropped at {at_ms} ms: its topic or partition no longer exists, \
                             or the topic refused it"
                        ),
                    ));
                }
            };
            if st.claimed.contains(&key) {
                // Being dispatched: wait for the outcome, then look again (a
                // loop message will be pending at its next key).
                self.released.wait(&mut st);
                continue;
            }
            let Some(value) = cfs.delays.get(key.encode())? else {
                return Err(SchedError::corrupt(format!(
                    "delay {delay_id} points at a missing message"
                )));
            };
            let entry = Entry::decode(&value)?;
            let now = self.now_ms();
            let mut batch = Batch::default();
            cfs.remove_pending(&mut batch, key, &entry.topic);
            cfs.set_id(&mut batch, delay_id, IdState::Cancelled { at_ms: now });
            // Written while holding the state lock, so no dispatch round can
            // claim the key between our check and the delete.
            meta.write(batch, WriteMode::Synced)?;
            drop(st);
            self.stats.cancelled.fetch_add(1, Ordering::Relaxed);
            return Ok((
                CancelOutcome::Cancelled,
                format!(
                    "cancelled; it was due at {} ms (delivery {})",
                    key.due_ms, entry.iteration
                ),
            ));
        }
    }

    /// Pending messages per topic (all topics, or one), with the earliest
    /// due time. Reads one counter and one key per topic.
    pub fn list(&self, topic: Option<&str>) -> Result<Vec<DelaySummary>, SchedError> {
        let meta = self.store.meta();
        let counts = meta.table(&CF_DELAY_COUNTS)?;
        let mut pending: Vec<(String, i64)> = Vec::new();
        match topic {
            Some(t) => {
                if let Some(v) = counts.get(t.as_bytes())? {
                    pending.push((t.to_owned(), keys::decode_count(&v)));
                }
            }
            None => {
                for item in counts.scan() {
                    let (k, v) = item?;
                    pending.push((
                        String::from_utf8_lossy(&k).into_owned(),
                        keys::decode_count(&v),
                    ));
                }
            }
        }
        let index = meta.table(&CF_DELAY_TOPICS)?;
        let mut out = Vec::new();
        for (topic, count) in pending.into_iter().filter(|(_, c)| *c > 0) {
            let prefix = keys::topic_prefix(&topic);
            let next_due_ms = match index.scan_prefix(&prefix).next() {
                Some(item) => keys::due_key_of_topic_index(&item?.0)?.due_ms as i64,
                None => -1,
            };
            out.push(DelaySummary {
                topic,
                pending: count as u64,
                next_due_ms,
            });
        }
        Ok(out)
    }

    /// Fills the wheel from disk: the keys from where the last load ended
    /// up to the wheel's horizon, at most `load_batch` at a time, while the
    /// wheel has room. Returns whether it loaded everything up to the
    /// horizon.
    fn load(&self) -> Result<bool, SchedError> {
        loop {
            let (from, to) = {
                let mut st = self.state.lock();
                st.wheel.skip_idle(self.now_ms().max(0) as u64);
                let to = DueKey::start_of(st.wheel.horizon_ms());
                if st.loaded_until >= to {
                    return Ok(true);
                }
                if st.wheel.len() >= self.options.max_wheel_keys {
                    return Ok(false);
                }
                st.loading_to = Some(to);
                (st.loaded_until, to)
            };
            // Scanned without the lock: schedules admitted meanwhile below
            // `to` go into the wheel themselves (duplicates are harmless:
            // a drained key is dispatched once, see `dispatch`).
            let meta = self.store.meta();
            let mut read = ReadOptions::default();
            read.set_iterate_lower_bound(from.encode().to_vec());
            read.set_iterate_upper_bound(to.encode().to_vec());
            let mut found = Vec::new();
            let delays = meta.table(&CF_DELAYS)?;
            let mut it = delays.cursor(read);
            it.seek_to_first();
            while let Some(k) = it.key() {
                found.push(DueKey::decode(k)?);
                if found.len() >= self.options.load_batch {
                    break;
                }
                it.next();
            }
            it.status()?;
            drop(it);
            let complete = found.len() < self.options.load_batch;
            let mut st = self.state.lock();
            st.loaded_until = match (complete, found.last()) {
                (false, Some(last)) => last.successor(),
                _ => to,
            };
            st.loading_to = None;
            for key in found {
                if !st.claimed.contains(&key) {
                    st.wheel.insert(key);
                }
            }
            if !complete {
                return Ok(false);
            }
        }
    }

    /// One turn of the dispatcher: resolves leftover intents, loads the
    /// wheel, then dispatches everything due by the clock's now. Tests call
    /// it directly after moving a manual clock.
    pub fn tick(&self) -> Result<TickReport, SchedError> {
        let mut intents = self.dispatch.lock();
        let mut report = TickReport::default();
        self.resolve_leftovers(&mut intents, &mut report)?;
        loop {
            self.load()?;
            let moved = self.dispatch_round(&mut intents, &mut report)?;
            if moved == 0 {
                break;
            }
        }
        report.next_due_ms = self.state.lock().wheel.next_due_ms();
        Ok(report)
    }

    /// Runs the dispatcher until `shutdown`: ticks, then sleeps until the
    /// next due time, a newly scheduled earlier message, or at most a
    /// second (the loader's cadence). Failures are logged and retried.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut failures = 0u32;
        loop {
            let this = self.clone();
            let next = match tokio::task::spawn_blocking(move || this.tick()).await {
                Ok(Ok(report)) => {
                    failures = 0;
                    report.next_due_ms.map(|d| d as i64)
                }
                Ok(Err(e)) => {
                    failures += 1;
                    tracing::error!(error = %e, failures, "scheduler dispatch failed; retrying");
                    Some(self.now_ms() + 100 * i64::from(failures.min(50)))
                }
                Err(e) => {
                    tracing::error!(error = %e, "scheduler dispatch task failed");
                    Some(self.now_ms() + 1000)
                }
            };
            let now = self.now_ms();
            let wake = next.unwrap_or(i64::MAX).min(now + 1000);
            self.planned_wake_ms.store(wake, Ordering::Release);
            let sleep = Duration::from_millis((wake - now).max(0) as u64);
            tokio::select! {
                _ = tokio::time::sleep(sleep) => {}
                _ = self.wake.notified() => {}
                _ = shutdown.cancelled() => return,
            }
        }
    }
}

/// Headers the scheduler sets on delivery; a client's own copies are dropped.
fn is_scheduler_header(name: &str) -> bool {
    matches!(
        name,
        DELAY_ID_HEADER | LOOP_ITERATION_HEADER | DUE_AT_HEADER
    )
}

pub use sluice_protocol::headers::{
    DELAY_ID as DELAY_ID_HEADER, DUE_AT as DUE_AT_HEADER, LOOP_ITERATION as LOOP_ITERATION_HEADER,
};

#[cfg(test)]
mod tests;
