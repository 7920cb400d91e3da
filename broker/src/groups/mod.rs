//! Consumer groups: membership, assignment, delivery, acks, retries, dead
//! letters and lag.
//!
//! The broker owns every group's delivery state, so members only say what
//! they finished. Per subscribed partition (and, in broadcast mode, per
//! member instance) a [`window::Window`] keeps the messages between the
//! committed offset and the last one read: who holds each, its attempts,
//! its ack deadline. The committed offset moves only past contiguous
//! settled messages and is written to the metadata store every tick.
//!
//! - [`assign`]: sticky, balanced partition assignment (clustering mode);
//! - [`window`]: the per-partition books (sans-IO);
//! - [`copies`]: retry copies and dead letters;
//! - this module: the registry, membership and sessions, the delivery
//!   path (log → filter → window → batches), settling nacks and ack
//!   timeouts, offsets, and the admin views.
//!
//! Retries: in clustering mode a failed message is scheduled (through the
//! scheduler, so never early and crash-safe) into the group's retry topic,
//! which every member also consumes, and the original counts as settled —
//! one poison message does not hold the partition's offset back. Ordered
//! and broadcast groups retry in place instead: ordered because later
//! messages of the key must wait for it, broadcast because a retry topic
//! copy would go to every member. After `max_attempts` deliveries the
//! message goes to the group's dead-letter topic, with the reason and the
//! attempt count in headers.
//!
//! Locks: the registry lock is never held while a group's state lock is
//! taken. Metadata and log calls block: every entry point here is
//! synchronous and the broker calls them off the async workers, except
//! [`Groups::poll`], which waits asynchronously between synchronous takes.

mod admin;
mod assign;
mod copies;
mod deliver;
mod settings;
pub mod tag_expr;
mod window;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use sluice_protocol::codec::{Reader, Writer};
use sluice_protocol::ops::group::{dead_letter_topic, retry_topic};
use sluice_protocol::ops::{
    AckRequest, AckResponse, GroupBatch, GroupMode, GroupSettings, HeartbeatResponse,
    JoinGroupRequest, JoinGroupResponse, MemberRef, NackAction, OffsetSpec, TopicPartition,
};
use tag_expr::TagExpr;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::log::{LogError, Partition, TopicConfig};
use crate::meta::{Batch, Keyspace, MetaError, WriteMode};
use crate::sched::{Delivery, RetryLadder, SchedError, Scheduler};
use crate::store::{Catalog, Store, StoreError};

use copies::Origin;
use deliver::{Budget, NewReader, redeliver};
use settings::{
    compile_filter, ladder_of, normalise, settings_diff, validate_group_name, validate_instance_id,
};
use window::{Expired, MemberSlot, SettleOutcome, Window};

/// Group name → its settings (`GroupSettings` in wire encoding).
pub const CF_GROUPS: Keyspace = Keyspace::plain("groups");

/// The groups' column families, for the metadata store to open.
pub const KEYSPACES: &[Keyspace] = &[CF_GROUPS];

/// A server-side filter attached to a group (a filter function): asked
/// about every stored batch of new messages before they enter the group's
/// windows. Messages it rejects are settled for the group (acked), exactly
/// like messages a tag filter rejects. It runs on the delivery path, under
/// the group's lock, so it must answer within its own deadline.
pub trait BatchFilter: Send + Sync + std::fmt::Debug {
    /// One verdict per record of `batch` (one stored record batch), `true`
    /// to deliver. `None` when the filter could not decide (it failed):
    /// every message is delivered, so a broken filter never loses data.
    fn verdicts(&self, group: &str, topic: &str, partition: u32, batch: &[u8])
    -> Option<Vec<bool>>;
}

/// Fewest messages one push frame waits for before it is sent is 1; at
/// most this many go in one.
const MAX_PUSH_BATCH: u32 = 4096;
/// How often sessions, ack deadlines and in-place retries are checked and
/// offsets committed.
pub const TICK: Duration = Duration::from_millis(50);

#[derive(Debug, thiserror::Error)]
pub enum GroupError {
    #[error("unknown consumer group {0:?}")]
    UnknownGroup(String),
    #[error(
        "member {member:?} is not in group {group:?} (its session expired, it left, or the broker restarted); join again"
    )]
    UnknownMember { group: String, member: String },
    #[error("{0}")]
    Inconsistent(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Internal(String),
    #[error(transparent)]
    Log(#[from] LogError),
    #[error(transparent)]
    Meta(#[from] MetaError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Sched(#[from] SchedError),
}

type Result<T> = std::result::Result<T, GroupError>;

/// Push credit of a member: messages it may still be sent.
#[derive(Debug, Default)]
pub struct Credit {
    available: AtomicI64,
    /// Woken on new credit and when the member goes away.
    pub changed: Notify,
}

impl Credit {
    pub fn add(&self, n: u32) {
        self.available.fetch_add(i64::from(n), Ordering::AcqRel);
        self.changed.notify_waiters();
    }
    pub fn available(&self) -> u32 {
        self.available
            .load(Ordering::Acquire)
            .clamp(0, u32::MAX.into()) as u32
    }
    /// A new subscription starts from its own initial credit, not from
    /// what an earlier one left.
    pub fn reset(&self, n: u32) {
        self.available.store(i64::from(n), Ordering::Release);
        self.changed.notify_waiters();
    }
    pub fn spend(&self, n: usize) {
        self.available.fetch_sub(n as i64, Ordering::AcqRel);
    }
}

#[derive(Debug)]
struct Member {
    id: String,
    instance: String,
    client_id: String,
    connection: u64,
    session_timeout_ms: i64,
    last_seen: i64,
    credit: Arc<Credit>,
    /// Where the next take starts among the member's partitions, so that
    /// one busy partition does not starve the others.
    rotate: usize,
}

/// Key of a delivery window: the member instance ("" in clustering mode,
/// where the group shares one window per partition) and the partition.
type WindowKey = (String, TopicPartition);

#[derive(Debug)]
struct State {
    settings: GroupSettings,
    /// `None` when the filter lets everything through.
    filter: Option<TagExpr>,
    ladder: RetryLadder,
    generation: u32,
    members: BTreeMap<MemberSlot, Member>,
    ids: HashMap<String, MemberSlot>,
    next_slot: MemberSlot,
    /// The topic's partitions and the retry topic's one.
    partitions: Vec<TopicPartition>,
    assignment: HashMap<TopicPartition, MemberSlot>,
    windows: HashMap<WindowKey, Window>,
}

impl State {
    fn broadcast(&self) -> bool {
        self.settings.mode == GroupMode::Broadcast
    }

    /// Ordered and broadcast groups retry in place (see the module docs).
    fn retries_in_place(&self) -> bool {
        self.settings.ordered || self.broadcast()
    }

    fn member(&mut self, group: &str, id: &str) -> Result<(MemberSlot, &mut Member)> {
        let unknown = || GroupError::UnknownMember {
            group: group.to_owned(),
            member: id.to_owned(),
        };
        let slot = *self.ids.get(id).ok_or_else(unknown)?;
        let m = self.members.get_mut(&slot).ok_or_else(unknown)?;
        Ok((slot, m))
    }

    fn instance_key(&self, slot: MemberSlot) -> String {
        match self.members.get(&slot) {
            Some(m) if self.broadcast() => m.instance.clone(),
            _ => String::new(),
        }
    }

    fn assigned(&self, slot: MemberSlot) -> Vec<TopicPartition> {
        if self.broadcast() {
            return self.partitions.clone();
        }
        let mut ps: Vec<_> = self
            .assignment
            .iter()
            .filter(|(_, m)| **m == slot)
            .map(|(tp, _)| tp.clone())
            .collect();
        ps.sort();
        ps
    }

    fn rebalance(&mut self) {
        if !self.broadcast() {
            let members: Vec<_> = self.members.keys().copied().collect();
            self.assignment = assign::assign(&self.partitions, &members, &self.assignment);
        }
        self.generation = self.generation.wrapping_add(1);
    }

    /// Removes a member: what it held goes back to the others (not counted
    /// as an attempt) and its partitions are reassigned.
    fn remove(&mut self, slot: MemberSlot) {
        let Some(m) = self.members.remove(&slot) else {
            return;
        };
        self.ids.remove(&m.id);
        for ((instance, _), w) in self.windows.iter_mut() {
            if !self.settings.mode.eq(&GroupMode::Broadcast) || *instance == m.instance {
                w.release(slot);
            }
        }
        m.credit.changed.notify_waiters();
        self.rebalance();
    }
}

#[derive(Debug)]
struct Group {
    name: String,
    retry_topic: String,
    dead_letter_topic: String,
    state: Mutex<State>,
    /// Woken when members may have new work: acks freed room, messages
    /// became ready again, the assignment changed.
    changed: Notify,
    /// Serialises re-drives of the dead letters.
    redrive: Mutex<()>,
}

impl Group {
    /// Name under which a window's committed offset is stored.
    fn offset_owner(&self, instance: &str) -> String {
        if instance.is_empty() {
            self.name.clone()
        } else {
            format!("{}/{instance}", self.name)
        }
    }
}

/// A nack or timeout whose retry copy or dead letter must be written.
#[derive(Debug)]
struct Settle {
    key: WindowKey,
    offset: u64,
    attempt: u16,
    /// `None` = retry through the retry topic at this time; `Some` = dead
    /// letter with this reason.
    dead: Option<String>,
    due_at_ms: i64,
}

/// Every consumer group of the broker.
#[derive(Debug)]
pub struct Groups {
    store: Arc<Store>,
    scheduler: Arc<Scheduler>,
    clock: Arc<dyn Clock>,
    /// Settings of the retry and dead-letter topics the broker creates.
    internal_topic: TopicConfig,
    groups: Mutex<HashMap<String, Arc<Group>>>,
    member_seq: AtomicU64,
    /// Tells member ids of this broker run from those of earlier runs.
    run_id: i64,
    /// Held while offsets are collected and written, so an older commit
    /// never lands after a newer one (a reset). Taken before any group's
    /// state lock.
    commits: Mutex<Vec<Commit>>,
    /// Serialises the creation of groups.
    creating: Mutex<()>,
    /// Filter functions by group name (a group may not exist yet).
    filters: parking_lot::RwLock<HashMap<String, Arc<dyn BatchFilter>>>,
}

impl Groups {
    pub fn new(
        store: Arc<Store>,
        scheduler: Arc<Scheduler>,
        clock: Arc<dyn Clock>,
        topic_defaults: &TopicConfig,
    ) -> Groups {
        let run_id = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        Groups {
            store,
            scheduler,
            clock,
            internal_topic: TopicConfig {
                partitions: 1,
                ..topic_defaults.clone()
            },
            groups: Mutex::new(HashMap::new()),
            member_seq: AtomicU64::new(1),
            run_id,
            commits: Mutex::new(Vec::new()),
            creating: Mutex::new(()),
            filters: parking_lot::RwLock::new(HashMap::new()),
        }
    }

    fn now(&self) -> i64 {
        self.clock.now_ms()
    }

    // ------------------------------------------------------------ registry

    /// A group in memory (members exist only there).
    fn live(&self, name: &str) -> Option<Arc<Group>> {
        self.groups.lock().get(name).cloned()
    }

    fn live_member_group(&self, m: &MemberRef) -> Result<Arc<Group>> {
        self.live(&m.group)
            .ok_or_else(|| GroupError::UnknownMember {
                group: m.group.clone(),
                member: m.member_id.clone(),
            })
    }

    /// The group, loaded from the metadata store if needed.
    fn load(&self, name: &str) -> Result<Arc<Group>> {
        if let Some(g) = self.live(name) {
            return Ok(g);
        }
        let settings = self
            .stored_settings(name)?
            .ok_or_else(|| GroupError::UnknownGroup(name.to_owned()))?;
        self.install(name, settings)
    }

    fn install(&self, name: &str, settings: GroupSettings) -> Result<Arc<Group>> {
        let state = self.fresh_state(name, settings)?;
        let mut map = self.groups.lock();
        let g = map.entry(name.to_owned()).or_insert_with(|| {
            Arc::new(Group {
                name: name.to_owned(),
                retry_topic: retry_topic(name),
                dead_letter_topic: dead_letter_topic(name),
                state: Mutex::new(state),
                changed: Notify::new(),
                redrive: Mutex::new(()),
            })
        });
        Ok(g.clone())
    }

    fn fresh_state(&self, name: &str, settings: GroupSettings) -> Result<State> {
        let filter = compile_filter(&settings.tag_filter)?;
        let ladder = ladder_of(&settings);
        let partitions = self.subscribed(name, &settings.topic);
        Ok(State {
            settings,
            filter,
            ladder,
            generation: 0,
            members: BTreeMap::new(),
            ids: HashMap::new(),
            next_slot: 1,
            partitions,
            assignment: HashMap::new(),
            windows: HashMap::new(),
        })
    }

    /// The topic's partitions (none while it does not exist) and the retry
    /// topic's one.
    fn subscribed(&self, group: &str, topic: &str) -> Vec<TopicPartition> {
        let count = self
            .store
            .log()
            .topic(topic)
            .map_or(0, |t| t.partitions().len() as u32);
        let mut partitions: Vec<TopicPartition> = (0..count)
            .map(|p| TopicPartition {
                topic: topic.to_owned(),
                partition: p,
            })
            .collect();
        partitions.push(TopicPartition {
            topic: retry_topic(group),
            partition: 0,
        });
        partitions
    }

    /// Runs `delete` (which deletes `topic` and every stored offset for it)
    /// with the offset commits held off, after forgetting every window and
    /// pending commit on the topic: otherwise an upkeep commit racing the
    /// delete could store the old offsets again, and a topic re-created
    /// under the name would start there.
    pub fn deleting_topic<T>(&self, topic: &str, delete: impl FnOnce() -> T) -> T {
        let mut pending = self.commits.lock();
        let groups: Vec<_> = self.groups.lock().values().cloned().collect();
        for g in &groups {
            g.state
                .lock()
                .windows
                .retain(|(_, tp), _| tp.topic != topic);
        }
        pending.retain(|c| c.topic != topic);
        let result = delete();
        drop(pending);
        self.topic_changed(topic);
        result
    }

    /// A topic was created or deleted: groups reading it forget their
    /// windows on it (a deleted topic's offsets are gone with it) and
    /// reassign.
    pub fn topic_changed(&self, topic: &str) {
        let groups: Vec<_> = self.groups.lock().values().cloned().collect();
        for g in groups {
            let mut st = g.state.lock();
            let reads = st.settings.topic == topic || g.retry_topic == topic;
            if !reads {
                continue;
            }
            st.windows.retain(|(_, tp), _| tp.topic != topic);
            st.partitions = self.subscribed(&g.name, &st.settings.topic);
            st.assignment.retain(|tp, _| tp.topic != topic);
            st.rebalance();
            drop(st);
            g.changed.notify_waiters();
        }
    }

    fn stored_settings(&self, name: &str) -> Result<Option<GroupSettings>> {
        let meta = self.store.meta();
        let Some(raw) = meta.table(&CF_GROUPS)?.get(name.as_bytes())? else {
            return Ok(None);
        };
        let mut r = Reader::new(raw.to_vec().into());
        GroupSettings::read(&mut r)
            .map(Some)
            .map_err(|e| GroupError::Invalid(format!("stored settings of group {name:?}: {e}")))
    }

    fn store_settings(&self, name: &str, s: &GroupSettings) -> Result<()> {
        let meta = self.store.meta();
        let mut w = Writer::new();
        s.write(&mut w);
        let mut batch = Batch::default();
        batch.put(&meta.table(&CF_GROUPS)?, name.as_bytes(), w.finish());
        meta.write(batch, WriteMode::Synced)?;
        Ok(())
    }

    /// Creates one of the broker's internal topics (retry, dead letters —
    /// groups' and functions') with one partition, if it is missing.
    pub fn ensure_topic(&self, name: &str) -> Result<()> {
        if self.store.log().topic(name).is_ok() {
            return Ok(());
        }
        match self.store.create_topic(name, self.internal_topic.clone()) {
            Ok(_) | Err(StoreError::Log(LogError::TopicExists(_))) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Attaches (or with `None` detaches) the filter function of `group`.
    /// Takes effect from the next batch read, so each stored batch is
    /// judged by exactly one version of a filter.
    pub fn set_filter(&self, group: &str, filter: Option<Arc<dyn BatchFilter>>) {
        match filter {
            Some(f) => self.filters.write().insert(group.to_owned(), f),
            None => self.filters.write().remove(group),
        };
        if let Some(g) = self.live(group) {
            g.changed.notify_waiters();
        }
    }

    // ------------------------------------------------------------ membership

    /// Joins `req.group`, creating it (with its retry and dead-letter
    /// topics) on first use.
    pub fn join(
        &self,
        req: JoinGroupRequest,
        client_id: &str,
        connection: u64,
    ) -> Result<JoinGroupResponse> {
        validate_group_name(&req.group)?;
        validate_instance_id(&req.instance_id)?;
        let settings = normalise(req.settings)?;
        self.store.log().topic(&settings.topic)?;
        // (Re)created here rather than only with the group: an operator may
        // have deleted them.
        self.ensure_topic(&retry_topic(&req.group))?;
        self.ensure_topic(&dead_letter_topic(&req.group))?;
        let g = {
            // Two first joins at once must not both store their settings.
            let _creating = self.creating.lock();
            match self.load(&req.group) {
                Ok(g) => g,
                Err(GroupError::UnknownGroup(_)) => {
                    self.store_settings(&req.group, &settings)?;
                    self.install(&req.group, settings.clone())?
                }
                Err(e) => return Err(e),
            }
        };
        let now = self.now();
        let mut st = g.state.lock();
        if st.settings != settings {
            if !st.members.is_empty() {
                return Err(GroupError::Inconsistent(format!(
                    "group {:?} has {} live member(s) with other settings: {}",
                    g.name,
                    st.members.len(),
                    settings_diff(&st.settings, &settings)
                )));
            }
            // Nobody is consuming: the group takes the new settings. Commit
            // what the old windows settled before they go.
            drop(st);
            self.flush()?;
            self.store_settings(&g.name, &settings)?;
            let fresh = self.fresh_state(&g.name, settings)?;
            st = g.state.lock();
            let generation = st.generation;
            *st = fresh;
            st.generation = generation;
        }
        if let Some(&slot) = st.ids.get(&req.member_id) {
            // A rejoin of a live member: same id, same assignment.
            let m = st.members.get_mut(&slot).expect("indexed member");
            m.last_seen = now;
            m.connection = connection;
            return Ok(join_response(&st, slot));
        }
        let slot = st.next_slot;
        st.next_slot += 1;
        let prefix = if client_id.is_empty() {
            "member"
        } else {
            client_id
        };
        let id = format!(
            "{prefix}-{:x}-{}",
            self.run_id,
            self.member_seq.fetch_add(1, Ordering::Relaxed)
        );
        let instance = if req.instance_id.is_empty() {
            id.clone()
        } else {
            req.instance_id
        };
        st.ids.insert(id.clone(), slot);
        st.members.insert(
            slot,
            Member {
                id,
                instance,
                client_id: client_id.to_owned(),
                connection,
                session_timeout_ms: i64::from(req.session_timeout_ms.clamp(100, 3_600_000)),
                last_seen: now,
                credit: Arc::new(Credit::default()),
                rotate: 0,
            },
        );
        st.rebalance();
        let resp = join_response(&st, slot);
        drop(st);
        g.changed.notify_waiters();
        tracing::debug!(group = %g.name, member = %resp.member_id, generation = resp.generation, "member joined");
        Ok(resp)
    }

    pub fn heartbeat(&self, m: &MemberRef) -> Result<HeartbeatResponse> {
        let g = self.live_member_group(m)?;
        let now = self.now();
        let mut st = g.state.lock();
        let (slot, member) = st.member(&g.name, &m.member_id)?;
        member.last_seen = now;
        Ok(HeartbeatResponse {
            generation: st.generation,
            assignment: st.assigned(slot),
        })
    }

    pub fn leave(&self, m: &MemberRef) -> Result<()> {
        let g = self.live_member_group(m)?;
        let mut st = g.state.lock();
        let (slot, _) = st.member(&g.name, &m.member_id)?;
        st.remove(slot);
        drop(st);
        g.changed.notify_waiters();
        Ok(())
    }

    /// The member's push credit.
    pub fn credit(&self, m: &MemberRef) -> Result<Arc<Credit>> {
        let g = self.live_member_group(m)?;
        let mut st = g.state.lock();
        let (_, member) = st.member(&g.name, &m.member_id)?;
        Ok(member.credit.clone())
    }

    /// A connection closed: its members leave at once (no session wait).
    pub fn connection_closed(&self, connection: u64) {
        let groups: Vec<_> = self.groups.lock().values().cloned().collect();
        for g in groups {
            let mut st = g.state.lock();
            let gone: Vec<_> = st
                .members
                .iter()
                .filter(|(_, m)| m.connection == connection)
                .map(|(s, _)| *s)
                .collect();
            if gone.is_empty() {
                continue;
            }
            for s in gone {
                st.remove(s);
            }
            drop(st);
            g.changed.notify_waiters();
        }
    }

    // ------------------------------------------------------------ delivery

    /// Waits up to `max_wait` for messages for the member, then returns
    /// what it got (possibly nothing).
    pub async fn poll(
        self: &Arc<Self>,
        member: &MemberRef,
        max_messages: u32,
        max_bytes: u32,
        max_wait: Duration,
        shutdown: &CancellationToken,
    ) -> Result<GroupBatch> {
        let deadline = tokio::time::Instant::now() + max_wait;
        let g = self.live_member_group(member)?;
        loop {
            let notified = g.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let mut watches = self.watches(&g, member)?;
            for w in &mut watches {
                w.borrow_and_update();
            }
            let this = self.clone();
            let (g2, m2) = (g.clone(), member.clone());
            let batch = tokio::task::spawn_blocking(move || {
                this.take(&g2, &m2, max_messages as usize, max_bytes as usize)
            })
            .await
            .map_err(|e| GroupError::Internal(format!("delivery task failed: {e}")))??;
            if !batch.deliveries.is_empty()
                || tokio::time::Instant::now() >= deadline
                || shutdown.is_cancelled()
            {
                return Ok(batch);
            }
            let changed = async {
                if watches.is_empty() {
                    std::future::pending::<()>().await
                } else {
                    let _ = futures::future::select_all(
                        watches.iter_mut().map(|w| Box::pin(w.changed())),
                    )
                    .await;
                }
            };
            tokio::select! {
                _ = notified => {}
                _ = changed => {}
                _ = tokio::time::sleep_until(deadline) => {}
                _ = shutdown.cancelled() => {}
            }
        }
    }

    fn watches(
        &self,
        g: &Group,
        member: &MemberRef,
    ) -> Result<Vec<tokio::sync::watch::Receiver<u64>>> {
        let parts = {
            let mut st = g.state.lock();
            let (slot, _) = st.member(&g.name, &member.member_id)?;
            st.assigned(slot)
        };
        Ok(parts
            .iter()
            .filter_map(|tp| self.store.log().partition(&tp.topic, tp.partition).ok())
            .map(|p| p.watch_high_watermark())
            .collect())
    }

    /// Takes what the member may have now: redeliveries first, then new
    /// messages, round-robin over its partitions.
    fn take(
        &self,
        g: &Group,
        member: &MemberRef,
        max_messages: usize,
        max_bytes: usize,
    ) -> Result<GroupBatch> {
        let now = self.now();
        let mut st = g.state.lock();
        let (slot, m) = st.member(&g.name, &member.member_id)?;
        m.last_seen = now;
        m.rotate = m.rotate.wrapping_add(1);
        let rotate = m.rotate;
        let instance = st.instance_key(slot);
        let mut parts = st.assigned(slot);
        if !parts.is_empty() {
            let n = rotate % parts.len();
            parts.rotate_left(n);
        }
        let deadline = now + i64::from(st.settings.ack_timeout_ms);
        let mut budget = Budget {
            messages: max_messages.max(1),
            bytes: max_bytes.max(1),
        };
        let mut out = GroupBatch {
            generation: st.generation,
            deliveries: Vec::new(),
        };
        let function = self.filters.read().get(&g.name).cloned();
        for tp in parts {
            if budget.spent() {
                break;
            }
            let Ok(partition) = self.store.log().partition(&tp.topic, tp.partition) else {
                continue; // deleted under us
            };
            let key = (instance.clone(), tp);
            self.open_window(g, &mut st, &key, &partition)?;
            let is_retry = key.1.topic == g.retry_topic;
            let State {
                windows,
                settings,
                filter,
                ..
            } = &mut *st;
            let w = windows.get_mut(&key).expect("opened");
            let mut redo = Vec::new();
            w.take_ready(slot, budget.messages, now, deadline, &mut redo);
            if !redo.is_empty() {
                budget.messages -= redo.len();
                redeliver(&partition, &key.1, w, &redo, &mut out, &mut budget);
            }
            let reader = NewReader {
                slot,
                deadline,
                max_in_flight: settings.max_in_flight as usize,
                filter: filter.as_ref(),
                // Retry copies passed the filter on their first delivery.
                function: function.as_deref().filter(|_| !is_retry),
                group: &g.name,
                keyed: settings.ordered,
                is_retry,
            };
            reader.read(&partition, &key.1, w, &mut out, &mut budget);
        }
        Ok(out)
    }

    /// Makes sure the window for `key` is in memory: from the committed
    /// offset, else the group's start position (committed at once, so a
    /// `latest` start does not drift).
    fn open_window(
        &self,
        g: &Group,
        st: &mut State,
        key: &WindowKey,
        partition: &Partition,
    ) -> Result<()> {
        if st.windows.contains_key(key) {
            return Ok(());
        }
        let (start, hw) = (partition.log_start_offset(), partition.high_watermark());
        let committed = self.store.meta().committed_offset(
            &g.offset_owner(&key.0),
            &key.1.topic,
            key.1.partition,
        )?;
        let mut w;
        match committed {
            Some(c) => {
                w = Window::new(c.clamp(start, hw), st.settings.ordered);
                if c < start {
                    tracing::warn!(group = %g.name, topic = %key.1.topic, partition = key.1.partition,
                        committed = c, log_start = start, "messages were deleted by retention before the group read them");
                }
            }
            None => {
                let spec = if key.1.topic == g.retry_topic {
                    OffsetSpec::Earliest
                } else {
                    st.settings.start
                };
                w = Window::new(0, st.settings.ordered);
                w.reset(resolve_offset(partition, spec)?);
            }
        }
        st.windows.insert(key.clone(), w);
        Ok(())
    }

    /// Settles acks and nacks.
    pub fn ack(&self, req: &AckRequest) -> Result<AckResponse> {
        let g = self.live_member_group(&req.member)?;
        let now = self.now();
        let mut resp = AckResponse::default();
        let mut jobs = Vec::new();
        let mut wake = false;
        {
            let mut st = g.state.lock();
            let broadcast = st.broadcast();
            let slot = match st.member(&g.name, &req.member.member_id) {
                Ok((slot, m)) => {
                    m.last_seen = now;
                    Some(slot)
                }
                // Acks of a member that is gone still count (they save
                // redeliveries); its nacks do not.
                Err(_) if !broadcast => None,
                Err(e) => return Err(e),
            };
            let instance = slot.map(|s| st.instance_key(s)).unwrap_or_default();
            let max_in_flight = st.settings.max_in_flight as usize;
            for pa in &req.acks {
                let key = (
                    instance.clone(),
                    TopicPartition {
                        topic: pa.topic.clone(),
                        partition: pa.partition,
                    },
                );
                let w = st.windows.get_mut(&key);
                let Some(w) = w else {
                    let total: u64 = pa.ranges.iter().map(|r| u64::from(r.count)).sum();
                    resp.stale = resp.stale.saturating_add(total.min(u32::MAX.into()) as u32);
                    continue;
                };
                let was_full = w.len() >= max_in_flight;
                for r in &pa.ranges {
                    let (settled, stale) = w.ack_range(r.first_offset, r.count);
                    resp.settled = resp.settled.saturating_add(settled as u32);
                    resp.stale = resp.stale.saturating_add(stale as u32);
                }
                // Wake waiting members only when the ack made something
                // deliverable: room in a full window, or a key unblocked.
                wake |= (was_full && w.len() < max_in_flight) || w.has_ready(now);
            }
            let in_place = st.retries_in_place();
            let max_attempts = st.settings.max_attempts;
            for n in &req.nacks {
                let key = (
                    instance.clone(),
                    TopicPartition {
                        topic: n.topic.clone(),
                        partition: n.partition,
                    },
                );
                let begun = match (slot, st.windows.get_mut(&key)) {
                    (Some(slot), Some(w)) => w.begin_settle(n.offset, Some(slot)),
                    _ => None,
                };
                let Some(attempt) = begun else {
                    resp.stale += 1;
                    continue;
                };
                resp.settled += 1;
                let delay = match n.action {
                    NackAction::RetryAfter(ms) => i64::from(ms),
                    _ => st.ladder.delay(attempt.into()).as_millis() as i64,
                };
                let dead = n.action == NackAction::DeadLetter || attempt >= max_attempts;
                if dead {
                    let reason = if n.reason.is_empty() {
                        "failed".to_owned()
                    } else {
                        n.reason.clone()
                    };
                    jobs.push(Settle {
                        key,
                        offset: n.offset,
                        attempt,
                        dead: Some(reason),
                        due_at_ms: now,
                    });
                } else if in_place {
                    let w = st.windows.get_mut(&key).expect("settling");
                    w.finish_settle(n.offset, SettleOutcome::RetryAt(now + delay));
                } else {
                    jobs.push(Settle {
                        key,
                        offset: n.offset,
                        attempt,
                        dead: None,
                        due_at_ms: now + delay,
                    });
                }
            }
        }
        wake |= !jobs.is_empty() || !req.nacks.is_empty();
        self.settle(&g, jobs);
        if wake {
            g.changed.notify_waiters();
        }
        Ok(resp)
    }

    /// Writes retry copies and dead letters, then settles their windows:
    /// done when written, redelivered when writing failed.
    fn settle(&self, g: &Group, jobs: Vec<Settle>) {
        if jobs.is_empty() {
            return;
        }
        let outcomes: Vec<SettleOutcome> = jobs
            .iter()
            .map(|job| match self.write_copy(g, job) {
                Ok(()) => SettleOutcome::Done,
                Err(e) => {
                    tracing::warn!(group = %g.name, topic = %job.key.1.topic, partition = job.key.1.partition,
                        offset = job.offset, error = %e, "could not write a retry or dead letter; delivering it again");
                    SettleOutcome::Redeliver
                }
            })
            .collect();
        let mut st = g.state.lock();
        for (job, outcome) in jobs.iter().zip(outcomes) {
            if let Some(w) = st.windows.get_mut(&job.key) {
                w.finish_settle(job.offset, outcome);
            }
        }
    }

    fn write_copy(&self, g: &Group, job: &Settle) -> Result<()> {
        let tp = &job.key.1;
        let partition = self.store.log().partition(&tp.topic, tp.partition)?;
        let source = match copies::read_record(&partition, job.offset) {
            Ok(r) => r,
            Err(LogError::OffsetOutOfRange { .. }) => {
                tracing::warn!(group = %g.name, topic = %tp.topic, partition = tp.partition, offset = job.offset,
                    "a failed message was deleted by retention before it could be retried");
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        };
        let origin = Origin {
            topic: tp.topic.clone(),
            partition: tp.partition,
            offset: job.offset,
        };
        let copy = copies::failed_copy(source, &origin, job.attempt, job.dead.as_deref());
        match &job.dead {
            Some(reason) => {
                self.ensure_topic(&g.dead_letter_topic)?;
                let dlq = self.store.log().partition(&g.dead_letter_topic, 0)?;
                dlq.append(copies::batch_of(&[copy], self.now()))?;
                tracing::info!(group = %g.name, topic = %tp.topic, partition = tp.partition, offset = job.offset,
                    attempts = job.attempt, reason = %reason, "message dead-lettered");
            }
            None => {
                let delivery = Delivery {
                    topic: g.retry_topic.clone(),
                    partition: 0,
                    due_at_ms: job.due_at_ms,
                    repeat: None,
                    record: copy,
                };
                self.scheduler
                    .schedule(vec![delivery])
                    .pop()
                    .expect("one result per delivery")?;
            }
        }
        Ok(())
    }

    // ------------------------------------------------------------ upkeep

    /// One round of upkeep: expire silent members and overdue messages,
    /// wake members with redeliveries due, commit offsets.
    pub fn tick(&self) {
        let now = self.now();
        let groups: Vec<_> = self.groups.lock().values().cloned().collect();
        for g in &groups {
            let mut jobs = Vec::new();
            let mut wake = false;
            {
                let mut st = g.state.lock();
                let silent: Vec<_> = st
                    .members
                    .iter()
                    .filter(|(_, m)| now - m.last_seen > m.session_timeout_ms)
                    .map(|(s, _)| *s)
                    .collect();
                for s in silent {
                    tracing::info!(group = %g.name, member = %st.members[&s].id, "member session expired");
                    st.remove(s);
                    wake = true;
                }
                let max_attempts = st.settings.max_attempts;
                let mut expired = Vec::new();
                for (key, w) in st.windows.iter_mut() {
                    expired.clear();
                    w.expired(now, &mut expired);
                    for &Expired { offset, attempt } in &expired {
                        w.begin_settle(offset, None);
                        if attempt >= max_attempts {
                            jobs.push(Settle {
                                key: key.clone(),
                                offset,
                                attempt,
                                dead: Some("ack timeout".to_owned()),
                                due_at_ms: now,
                            });
                        } else {
                            w.finish_settle(offset, SettleOutcome::Redeliver);
                        }
                    }
                    wake |= w.has_ready(now);
                }
            }
            if !jobs.is_empty() {
                self.settle(g, jobs);
                wake = true;
            }
            if wake {
                g.changed.notify_waiters();
            }
        }
        // Unsynced: see `MetaStore::commit_offsets_with`. Shutdown and
        // resets commit synced.
        if let Err(e) = self.commit(WriteMode::Unsynced) {
            tracing::warn!(error = %e, "could not commit group offsets; will retry");
        }
    }

    /// Commits every moved offset now and waits for the fsync (shutdown,
    /// settings change). What fails to be written is kept and written with
    /// the next commit.
    pub fn flush(&self) -> Result<()> {
        self.commit(WriteMode::Synced)
    }

    /// Collects every moved offset and writes them.
    fn commit(&self, mode: WriteMode) -> Result<()> {
        let mut pending = self.commits.lock();
        let groups: Vec<_> = self.groups.lock().values().cloned().collect();
        for g in &groups {
            pending.extend(collect_commits(g, &mut g.state.lock()));
        }
        let all = std::mem::take(&mut *pending);
        if let Err(e) = self.write_offsets(&all, mode) {
            *pending = all;
            return Err(e);
        }
        Ok(())
    }

    /// Writes offsets, one atomic write per owner; a later entry for the
    /// same partition wins. Callers hold the `commits` lock.
    fn write_offsets(&self, commits: &[Commit], mode: WriteMode) -> Result<()> {
        let mut by_owner: BTreeMap<&str, Vec<(&str, u32, u64)>> = BTreeMap::new();
        for c in commits {
            by_owner
                .entry(&c.owner)
                .or_default()
                .push((&c.topic, c.partition, c.offset));
        }
        for (owner, offsets) in by_owner {
            self.store
                .meta()
                .commit_offsets_with(owner, &offsets, mode)?;
        }
        Ok(())
    }

    /// Runs [`tick`](Groups::tick) every [`TICK`] until shutdown, then
    /// commits a last time.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut interval = tokio::time::interval(TICK);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = interval.tick() => {}
                _ = shutdown.cancelled() => break,
            }
            let this = self.clone();
            let _ = tokio::task::spawn_blocking(move || this.tick()).await;
        }
        let this = self.clone();
        let _ = tokio::task::spawn_blocking(move || this.flush()).await;
    }
}

/// A committed offset to write.
#[derive(Debug)]
struct Commit {
    owner: String,
    topic: String,
    partition: u32,
    offset: u64,
}

fn collect_commits(g: &Group, st: &mut State) -> Vec<Commit> {
    st.windows
        .iter_mut()
        .filter_map(|((instance, tp), w)| {
            w.take_commit().map(|offset| Commit {
                owner: g.offset_owner(instance),
                topic: tp.topic.clone(),
                partition: tp.partition,
                offset,
            })
        })
        .collect()
}

fn join_response(st: &State, slot: MemberSlot) -> JoinGroupResponse {
    let m = &st.members[&slot];
    JoinGroupResponse {
        member_id: m.id.clone(),
        generation: st.generation,
        heartbeat_interval_ms: (m.session_timeout_ms / 3).max(1) as u32,
        assignment: st.assigned(slot),
    }
}

/// The offset an offset spec names in `partition`.
pub fn resolve_offset(partition: &Partition, spec: OffsetSpec) -> Result<u64> {
    Ok(match spec {
        OffsetSpec::Earliest => partition.log_start_offset(),
        OffsetSpec::Latest => partition.high_watermark(),
        OffsetSpec::Timestamp(t) => partition
            .offset_for_timestamp(t)?
            .unwrap_or_else(|| partition.high_watermark()),
    })
}

/// Largest batch one push frame carries.
pub fn push_batch_limit(credit: u32) -> u32 {
    credit.min(MAX_PUSH_BATCH)
}

#[cfg(test)]
mod tests;
