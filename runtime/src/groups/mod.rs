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

mod assign;
mod copies;
mod window;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use sluice_protocol::batch::BatchIter;
use sluice_protocol::codec::{Reader, Writer};
use sluice_protocol::headers;
use sluice_protocol::ops::group::{dead_letter_topic, retry_topic};
use sluice_protocol::ops::{
    AckRequest, AckResponse, DeliveredRange, GroupBatch, GroupDelivery, GroupDescription,
    GroupMode, GroupSettings, GroupSummary, HeartbeatResponse, JoinGroupRequest,
    JoinGroupResponse, ListGroupsResponse, MemberDescription, MemberRef, NackAction, OffsetSpec,
    PartitionLag, RedriveResponse, ResetGroupRequest, ResetGroupResponse, ResetTo, TopicPartition,
};
use sluice_protocol::tag_expr::TagExpr;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::log::{LogError, Partition, TopicConfig, validate_topic_name};
use crate::meta::MetaError;
use crate::sched::{Delivery, RetryLadder, SchedError, Scheduler};
use crate::store::{Store, StoreError};

use copies::Origin;
use window::{Delivered, Expired, MemberSlot, NewMessage, SettleOutcome, Settled, Window};

/// Group name → its settings (`GroupSettings` in wire encoding).
pub const CF_GROUPS: &str = "groups";

/// Longest group name: its retry and dead-letter topics must still be
/// valid topic names.
const MAX_GROUP_NAME: usize = 200;
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
        self.available.load(Ordering::Acquire).clamp(0, u32::MAX.into()) as u32
    }
    fn spend(&self, n: usize) {
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
    /// Serialises offset commits so an older one never overwrites a newer.
    commits: Mutex<()>,
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
            commits: Mutex::new(()),
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
        self.live(&m.group).ok_or_else(|| GroupError::UnknownMember {
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
        let topic = self.store.log().topic(&settings.topic)?;
        let mut partitions: Vec<TopicPartition> = (0..topic.partitions().len() as u32)
            .map(|p| TopicPartition {
                topic: settings.topic.clone(),
                partition: p,
            })
            .collect();
        partitions.push(TopicPartition {
            topic: retry_topic(name),
            partition: 0,
        });
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

    fn stored_settings(&self, name: &str) -> Result<Option<GroupSettings>> {
        let meta = self.store.meta();
        let Some(raw) = meta
            .db()
            .get_cf(meta.cf(CF_GROUPS)?, name.as_bytes())
            .map_err(MetaError::from)?
        else {
            return Ok(None);
        };
        let mut r = Reader::new(raw.into());
        GroupSettings::read(&mut r)
            .map(Some)
            .map_err(|e| GroupError::Invalid(format!("stored settings of group {name:?}: {e}")))
    }

    fn store_settings(&self, name: &str, s: &GroupSettings) -> Result<()> {
        let meta = self.store.meta();
        let mut w = Writer::new();
        s.write(&mut w);
        meta.db().put_cf_opt(
            meta.cf(CF_GROUPS)?,
            name.as_bytes(),
            w.finish(),
            meta.sync_write_options(),
        )
        .map_err(MetaError::from)?;
        Ok(())
    }

    fn ensure_topic(&self, name: &str) -> Result<()> {
        if self.store.log().topic(name).is_ok() {
            return Ok(());
        }
        match self.store.create_topic(name, self.internal_topic.clone()) {
            Ok(_) | Err(StoreError::Log(LogError::TopicExists(_))) => Ok(()),
            Err(e) => Err(e.into()),
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
        let settings = normalise(req.settings)?;
        self.store.log().topic(&settings.topic)?;
        let g = match self.load(&req.group) {
            Ok(g) => g,
            Err(GroupError::UnknownGroup(_)) => {
                self.ensure_topic(&retry_topic(&req.group))?;
                self.ensure_topic(&dead_letter_topic(&req.group))?;
                self.store_settings(&req.group, &settings)?;
                self.install(&req.group, settings.clone())?
            }
            Err(e) => return Err(e),
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
            let commits = collect_commits(&g, &mut st);
            drop(st);
            self.write_commits(commits)?;
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
            .map_err(|e| GroupError::Invalid(format!("delivery task failed: {e}")))??;
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
                keyed: settings.ordered,
                is_retry,
            };
            reader.read(&partition, &key.1, w, &mut out, &mut budget);
        }
        let n = out.message_count();
        if n > 0
            && let Ok((_, m)) = st.member(&g.name, &member.member_id)
        {
            m.credit.spend(n);
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
        let committed =
            self.store
                .meta()
                .committed_offset(&g.offset_owner(&key.0), &key.1.topic, key.1.partition)?;
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
                w.reset(resolve(partition, spec)?);
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
            for pa in &req.acks {
                let key = (
                    instance.clone(),
                    TopicPartition {
                        topic: pa.topic.clone(),
                        partition: pa.partition,
                    },
                );
                let w = st.windows.get_mut(&key);
                let total: u64 = pa.ranges.iter().map(|r| u64::from(r.count)).sum();
                let Some(w) = w else {
                    resp.stale += total as u32;
                    continue;
                };
                for r in &pa.ranges {
                    for off in r.first_offset..r.first_offset.saturating_add(r.count.into()) {
                        match w.ack(off) {
                            Settled::Yes => resp.settled += 1,
                            Settled::Stale => resp.stale += 1,
                        }
                    }
                }
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
        self.settle(&g, jobs);
        g.changed.notify_waiters();
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
        let mut commits = Vec::new();
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
            commits.extend(collect_commits(g, &mut g.state.lock()));
            if wake {
                g.changed.notify_waiters();
            }
        }
        if let Err(e) = self.write_commits(commits) {
            tracing::warn!(error = %e, "could not commit group offsets; will retry");
        }
    }

    /// Commits every moved offset now (shutdown, reset).
    pub fn flush(&self) -> Result<()> {
        let groups: Vec<_> = self.groups.lock().values().cloned().collect();
        let mut commits = Vec::new();
        for g in &groups {
            commits.extend(collect_commits(g, &mut g.state.lock()));
        }
        self.write_commits(commits)
    }

    fn write_commits(&self, commits: Vec<Commit>) -> Result<()> {
        let _order = self.commits.lock();
        let mut by_owner: BTreeMap<String, Vec<(String, u32, u64)>> = BTreeMap::new();
        for c in commits {
            by_owner
                .entry(c.owner)
                .or_default()
                .push((c.topic, c.partition, c.offset));
        }
        for (owner, offsets) in by_owner {
            let refs: Vec<(&str, u32, u64)> =
                offsets.iter().map(|(t, p, o)| (t.as_str(), *p, *o)).collect();
            self.store.meta().commit_offsets(&owner, &refs)?;
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

    // ------------------------------------------------------------ admin

    pub fn describe(&self, name: &str) -> Result<GroupDescription> {
        let g = self.load(name)?;
        let st = g.state.lock();
        let mut instances: Vec<String> = if st.broadcast() {
            let mut v: Vec<String> = st.members.values().map(|m| m.instance.clone()).collect();
            let prefix = format!("{name}/");
            for owner in self.store.meta().list_groups()? {
                if let Some(i) = owner.strip_prefix(&prefix) {
                    v.push(i.to_owned());
                }
            }
            v.extend(st.windows.keys().map(|(i, _)| i.clone()));
            v
        } else {
            vec![String::new()]
        };
        instances.sort();
        instances.dedup();
        let mut partitions = Vec::new();
        for instance in &instances {
            for tp in st.partitions.clone() {
                let Ok(partition) = self.store.log().partition(&tp.topic, tp.partition) else {
                    continue;
                };
                let key = (instance.clone(), tp.clone());
                let (committed, in_flight) = match st.windows.get(&key) {
                    Some(w) => (w.committed(), w.in_flight() as u64),
                    None => (self.position(&g, &st, &key, &partition)?, 0),
                };
                let hw = partition.high_watermark();
                let owner = if st.broadcast() {
                    st.members
                        .values()
                        .find(|m| m.instance == *instance)
                        .map(|m| m.id.clone())
                } else {
                    st.assignment
                        .get(&tp)
                        .and_then(|s| st.members.get(s))
                        .map(|m| m.id.clone())
                };
                partitions.push(PartitionLag {
                    topic: tp.topic,
                    partition: tp.partition,
                    instance_id: instance.clone(),
                    committed,
                    high_watermark: hw,
                    lag: hw.saturating_sub(committed),
                    in_flight,
                    owner: owner.unwrap_or_default(),
                });
            }
        }
        let members = st
            .members
            .iter()
            .map(|(slot, m)| {
                let in_flight = partitions
                    .iter()
                    .filter(|p| p.owner == m.id)
                    .map(|p| p.in_flight)
                    .sum();
                MemberDescription {
                    member_id: m.id.clone(),
                    instance_id: m.instance.clone(),
                    client_id: m.client_id.clone(),
                    assignment: st.assigned(*slot),
                    in_flight,
                }
            })
            .collect();
        let dead_letters = self.dead_letters_waiting(&g)?;
        Ok(GroupDescription {
            group: g.name.clone(),
            settings: st.settings.clone(),
            generation: st.generation,
            members,
            partitions,
            retry_topic: g.retry_topic.clone(),
            dead_letter_topic: g.dead_letter_topic.clone(),
            dead_letters,
        })
    }

    /// Where a window not in memory would start.
    fn position(
        &self,
        g: &Group,
        st: &State,
        key: &WindowKey,
        partition: &Partition,
    ) -> Result<u64> {
        let committed =
            self.store
                .meta()
                .committed_offset(&g.offset_owner(&key.0), &key.1.topic, key.1.partition)?;
        Ok(match committed {
            Some(c) => c.clamp(partition.log_start_offset(), partition.high_watermark()),
            None if key.1.topic == g.retry_topic => partition.log_start_offset(),
            None => resolve(partition, st.settings.start)?,
        })
    }

    /// Dead letters after the re-drive cursor (stored as the group's own
    /// offset on its dead-letter topic, which it never consumes).
    fn dead_letters_waiting(&self, g: &Group) -> Result<u64> {
        let dlq = self.store.log().partition(&g.dead_letter_topic, 0)?;
        let cursor = self.redrive_cursor(g, &dlq)?;
        Ok(dlq.high_watermark().saturating_sub(cursor))
    }

    fn redrive_cursor(&self, g: &Group, dlq: &Partition) -> Result<u64> {
        Ok(self
            .store
            .meta()
            .committed_offset(&g.name, &g.dead_letter_topic, 0)?
            .unwrap_or(0)
            .max(dlq.log_start_offset()))
    }

    pub fn list(&self) -> Result<ListGroupsResponse> {
        let meta = self.store.meta();
        let mut names = Vec::new();
        for item in meta
            .db()
            .iterator_cf(meta.cf(CF_GROUPS)?, rocksdb::IteratorMode::Start)
        {
            let (k, _) = item.map_err(MetaError::from)?;
            names.push(String::from_utf8_lossy(&k).into_owned());
        }
        let mut groups = Vec::with_capacity(names.len());
        for name in names {
            let d = match self.describe(&name) {
                Ok(d) => d,
                // A group whose topic was deleted: list it without lag.
                Err(GroupError::Log(LogError::UnknownTopic(_))) => continue,
                Err(e) => return Err(e),
            };
            groups.push(GroupSummary {
                group: d.group.clone(),
                topic: d.settings.topic.clone(),
                mode: d.settings.mode,
                members: d.members.len() as u32,
                lag: d.total_lag(),
                dead_letters: d.dead_letters,
            });
        }
        Ok(ListGroupsResponse { groups })
    }

    /// Moves the group's position on its topic (every instance's, for a
    /// broadcast group) and commits it at once.
    pub fn reset(&self, req: &ResetGroupRequest) -> Result<ResetGroupResponse> {
        let g = self.load(&req.group)?;
        let topic = g.state.lock().settings.topic.clone();
        let t = self.store.log().topic(&topic)?;
        let wanted: Vec<u32> = if req.partitions.is_empty() {
            (0..t.partitions().len() as u32).collect()
        } else {
            req.partitions.clone()
        };
        let mut targets = Vec::new();
        for p in wanted {
            let partition = t.partition(p)?;
            let offset = match req.to {
                ResetTo::Spec(spec) => resolve(partition, spec)?,
                ResetTo::Offset(o) => {
                    o.clamp(partition.log_start_offset(), partition.high_watermark())
                }
            };
            targets.push((
                TopicPartition {
                    topic: topic.clone(),
                    partition: p,
                },
                offset,
            ));
        }
        let mut commits = Vec::new();
        {
            let mut st = g.state.lock();
            let mut instances: Vec<String> = vec![String::new()];
            if st.broadcast() {
                instances = st.members.values().map(|m| m.instance.clone()).collect();
                let prefix = format!("{}/", g.name);
                for owner in self.store.meta().list_groups()? {
                    if let Some(i) = owner.strip_prefix(&prefix) {
                        instances.push(i.to_owned());
                    }
                }
                instances.sort();
                instances.dedup();
            }
            // Pending commits first, so they cannot land after the reset.
            commits.extend(collect_commits(&g, &mut st));
            for instance in &instances {
                for (tp, offset) in &targets {
                    let key = (instance.clone(), tp.clone());
                    if let Some(w) = st.windows.get_mut(&key) {
                        w.reset(*offset);
                        let _ = w.take_commit();
                    }
                    commits.push(Commit {
                        owner: g.offset_owner(instance),
                        topic: tp.topic.clone(),
                        partition: tp.partition,
                        offset: *offset,
                    });
                }
            }
            self.write_commits(commits)?;
        }
        g.changed.notify_waiters();
        tracing::info!(group = %g.name, to = ?req.to, "group position reset");
        Ok(ResetGroupResponse { positions: targets })
    }

    /// Copies up to `max` dead letters (0 = all) into the retry topic with
    /// their attempts reset, then moves the re-drive cursor past them.
    pub fn redrive(&self, group: &str, max: u32) -> Result<RedriveResponse> {
        let g = self.load(group)?;
        let _one_at_a_time = g.redrive.lock();
        let dlq = self.store.log().partition(&g.dead_letter_topic, 0)?;
        let retry = self.store.log().partition(&g.retry_topic, 0)?;
        let mut cursor = self.redrive_cursor(&g, &dlq)?;
        let end = dlq.high_watermark();
        let limit = if max == 0 { u64::MAX } else { u64::from(max) };
        let mut redriven = 0u64;
        while cursor < end && redriven < limit {
            let read = dlq.read(cursor, 1 << 20)?;
            let mut copies_out = Vec::new();
            let mut next = cursor;
            'chunks: for chunk in &read.chunks {
                for batch in BatchIter::new(chunk) {
                    let batch = batch.map_err(|e| {
                        GroupError::Invalid(format!("dead-letter topic batch: {e}"))
                    })?;
                    for r in batch.records().flatten() {
                        if r.offset < cursor {
                            continue;
                        }
                        if redriven + copies_out.len() as u64 >= limit {
                            break 'chunks;
                        }
                        copies_out.push(copies::redriven_copy(
                            sluice_protocol::ops::DelayedRecord {
                                key: r.key.map(bytes::Bytes::copy_from_slice),
                                value: bytes::Bytes::copy_from_slice(r.value.unwrap_or_default()),
                                headers: r
                                    .headers()
                                    .flatten()
                                    .map(|(k, v)| {
                                        (
                                            k.to_owned(),
                                            bytes::Bytes::copy_from_slice(v.unwrap_or_default()),
                                        )
                                    })
                                    .collect(),
                                timestamp: r.timestamp,
                            },
                        ));
                        next = r.offset + 1;
                    }
                }
            }
            if copies_out.is_empty() {
                break;
            }
            retry.append(copies::batch_of(&copies_out, self.now()))?;
            self.store
                .meta()
                .commit_offsets(&g.name, &[(&g.dead_letter_topic, 0, next)])?;
            redriven += copies_out.len() as u64;
            cursor = next;
        }
        g.changed.notify_waiters();
        Ok(RedriveResponse {
            redriven,
            remaining: end.saturating_sub(cursor),
        })
    }

    /// Forgets a group without live members: settings and positions.
    pub fn delete(&self, name: &str) -> Result<()> {
        let g = self.load(name)?;
        {
            let st = g.state.lock();
            if !st.members.is_empty() {
                return Err(GroupError::Invalid(format!(
                    "group {name:?} has {} live member(s); stop them first",
                    st.members.len()
                )));
            }
        }
        self.groups.lock().remove(name);
        let meta = self.store.meta();
        meta.db()
            .delete_cf_opt(meta.cf(CF_GROUPS)?, name.as_bytes(), meta.sync_write_options())
            .map_err(MetaError::from)?;
        let prefix = format!("{name}/");
        for owner in meta.list_groups()? {
            if owner == name || owner.starts_with(&prefix) {
                meta.delete_group(&owner)?;
            }
        }
        Ok(())
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

/// Messages and bytes a take may still hand out.
#[derive(Debug)]
struct Budget {
    messages: usize,
    bytes: usize,
}

impl Budget {
    fn spent(&self) -> bool {
        self.messages == 0 || self.bytes == 0
    }
}

/// Appends `item` to `ranges`, merging it into the last range when it
/// continues it.
fn push_range(ranges: &mut Vec<DeliveredRange>, d: Delivered) {
    if let Some(last) = ranges.last_mut()
        && last.attempt == d.attempt
        && last.first_offset + u64::from(last.count) == d.offset
    {
        last.count += 1;
        return;
    }
    ranges.push(DeliveredRange {
        first_offset: d.offset,
        count: 1,
        attempt: d.attempt,
    });
}

/// Adds the batches holding redelivered messages to `out`, one log read per
/// batch. A message retention deleted meanwhile is settled (it is gone).
fn redeliver(
    partition: &Partition,
    tp: &TopicPartition,
    w: &mut Window,
    redo: &[Delivered],
    out: &mut GroupBatch,
    budget: &mut Budget,
) {
    let mut i = 0;
    while i < redo.len() {
        let read = match partition.read(redo[i].offset, 1) {
            Ok(r) => r,
            Err(_) => {
                w.ack(redo[i].offset);
                i += 1;
                continue;
            }
        };
        let Some(chunk) = read.chunks.into_iter().next() else {
            w.ack(redo[i].offset);
            i += 1;
            continue;
        };
        let Some(Ok(batch)) = BatchIter::new(&chunk).next() else {
            w.ack(redo[i].offset);
            i += 1;
            continue;
        };
        let (first, next) = (batch.header().base_offset, batch.header().next_offset());
        let len = batch.as_bytes().len();
        let mut ranges = Vec::new();
        while i < redo.len() && redo[i].offset >= first && redo[i].offset < next {
            push_range(&mut ranges, redo[i]);
            i += 1;
        }
        if ranges.is_empty() {
            // The read started past it: the message is gone.
            w.ack(redo[i].offset);
            i += 1;
            continue;
        }
        budget.bytes = budget.bytes.saturating_sub(len);
        out.deliveries.push(GroupDelivery {
            topic: tp.topic.clone(),
            partition: tp.partition,
            records: chunk.slice(..len),
            ranges,
        });
    }
}

/// Reads new messages of one partition into its window.
struct NewReader<'a> {
    slot: MemberSlot,
    deadline: i64,
    max_in_flight: usize,
    filter: Option<&'a TagExpr>,
    keyed: bool,
    is_retry: bool,
}

impl NewReader<'_> {
    fn room(&self, w: &Window, budget: &Budget) -> bool {
        !budget.spent() && w.len() < self.max_in_flight
    }

    fn read(
        &self,
        partition: &Partition,
        tp: &TopicPartition,
        w: &mut Window,
        out: &mut GroupBatch,
        budget: &mut Budget,
    ) {
        if !self.room(w, budget) || w.end() >= partition.high_watermark() {
            return;
        }
        let read = match partition.read(w.end(), budget.bytes) {
            Ok(r) => r,
            Err(LogError::OffsetOutOfRange { start, .. }) if w.end() < start => {
                tracing::warn!(topic = %tp.topic, partition = tp.partition, from = w.end(), to = start,
                    "messages were deleted by retention before the group read them");
                w.reset(start);
                return;
            }
            Err(e) => {
                tracing::warn!(topic = %tp.topic, partition = tp.partition, error = %e, "group read failed");
                return;
            }
        };
        let parse = self.filter.is_some() || self.keyed || self.is_retry;
        for chunk in &read.chunks {
            let mut span: Option<(usize, usize)> = None;
            let mut ranges = Vec::new();
            for batch in BatchIter::new(chunk) {
                let Ok(batch) = batch else { break };
                let h = *batch.header();
                if h.next_offset() <= w.end() {
                    continue;
                }
                if !self.room(w, budget) {
                    break;
                }
                let pos = batch.as_bytes().as_ptr() as usize - chunk.as_ptr() as usize;
                let len = batch.as_bytes().len();
                let before = ranges.len();
                let touched_before = ranges.iter().map(|r: &DeliveredRange| r.count).sum::<u32>();
                if h.is_control() {
                    while w.end() < h.next_offset() {
                        w.push(self.slot, None, self.deadline);
                    }
                    continue;
                }
                if parse {
                    for r in batch.records().flatten() {
                        if r.offset < w.end() {
                            continue;
                        }
                        if !self.room(w, budget) {
                            break;
                        }
                        while w.end() < r.offset {
                            w.push(self.slot, None, self.deadline); // a gap: nothing there
                        }
                        let matched = self.filter.is_none_or(|f| {
                            f.matches(
                                r.headers()
                                    .flatten()
                                    .filter(|(k, _)| *k == headers::TAG)
                                    .filter_map(|(_, v)| v),
                            )
                        });
                        let message = matched.then(|| NewMessage {
                            key: if self.keyed { key_hash(r.key) } else { 0 },
                            attempts_before: if self.is_retry {
                                copies::attempts_of(r.header(headers::ATTEMPT))
                            } else {
                                0
                            },
                        });
                        if let Some(d) = w.push(self.slot, message, self.deadline) {
                            push_range(&mut ranges, d);
                            budget.messages -= 1;
                        }
                    }
                } else {
                    while w.end() < h.next_offset() && self.room(w, budget) {
                        let message = NewMessage {
                            key: 0,
                            attempts_before: 0,
                        };
                        if let Some(d) = w.push(self.slot, Some(message), self.deadline) {
                            push_range(&mut ranges, d);
                            budget.messages -= 1;
                        }
                    }
                }
                let touched = ranges.len() > before
                    || ranges.iter().map(|r| r.count).sum::<u32>() > touched_before;
                if touched {
                    let (start, _) = *span.get_or_insert((pos, pos + len));
                    span = Some((start, pos + len));
                    budget.bytes = budget.bytes.saturating_sub(len);
                }
            }
            if let Some((start, end)) = span {
                out.deliveries.push(GroupDelivery {
                    topic: tp.topic.clone(),
                    partition: tp.partition,
                    records: chunk.slice(start..end),
                    ranges,
                });
            }
            if !self.room(w, budget) {
                break;
            }
        }
    }
}

/// A key's hash for per-key ordering; never 0 (0 = no key). Collisions only
/// serialise two keys, they never break an order.
fn key_hash(key: Option<&[u8]>) -> u64 {
    use std::hash::{BuildHasher, BuildHasherDefault};
    let Some(k) = key else { return 0 };
    let h = BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default().hash_one(k);
    h.max(1)
}

/// The offset an offset spec names in `partition`.
fn resolve(partition: &Partition, spec: OffsetSpec) -> Result<u64> {
    Ok(match spec {
        OffsetSpec::Earliest => partition.log_start_offset(),
        OffsetSpec::Latest => partition.high_watermark(),
        OffsetSpec::Timestamp(t) => partition
            .offset_for_timestamp(t)?
            .unwrap_or_else(|| partition.high_watermark()),
    })
}

fn validate_group_name(name: &str) -> Result<()> {
    if name.len() > MAX_GROUP_NAME {
        return Err(GroupError::Invalid(format!(
            "group name is {} characters long; the limit is {MAX_GROUP_NAME}",
            name.len()
        )));
    }
    validate_topic_name(name).map_err(|_| {
        GroupError::Invalid(format!(
            "invalid group name {name:?}: use 1 to {MAX_GROUP_NAME} ASCII letters, digits, '.', '_' and '-'"
        ))
    })
}

fn compile_filter(src: &str) -> Result<Option<TagExpr>> {
    let e = TagExpr::parse(src)
        .map_err(|e| GroupError::Invalid(format!("tag filter {src:?}: {e}")))?;
    Ok((!e.matches_all()).then_some(e))
}

fn ladder_of(s: &GroupSettings) -> RetryLadder {
    RetryLadder::new(
        s.retry_ladder_ms
            .iter()
            .map(|ms| Duration::from_millis((*ms).into()))
            .collect(),
    )
    .unwrap_or_default()
}

/// Checks a join's settings and puts them in the form they are compared
/// and stored in (the filter's normalised text).
fn normalise(mut s: GroupSettings) -> Result<GroupSettings> {
    let invalid = |m: String| Err(GroupError::Invalid(m));
    if s.max_attempts == 0 {
        return invalid("max_attempts must be at least 1".into());
    }
    if s.ack_timeout_ms < 10 {
        return invalid(format!(
            "ack timeout of {} ms is too short; at least 10 ms",
            s.ack_timeout_ms
        ));
    }
    if s.max_in_flight == 0 || s.max_in_flight > 1_000_000 {
        return invalid(format!(
            "max_in_flight must be 1 to 1000000, not {}",
            s.max_in_flight
        ));
    }
    if s.retry_ladder_ms.len() > 64 {
        return invalid("a retry ladder has at most 64 steps".into());
    }
    s.tag_filter = match TagExpr::parse(&s.tag_filter) {
        Ok(e) if e.matches_all() => String::new(),
        Ok(e) => e.source().to_owned(),
        Err(e) => return invalid(format!("tag filter {:?}: {e}", s.tag_filter)),
    };
    Ok(s)
}

fn settings_diff(a: &GroupSettings, b: &GroupSettings) -> String {
    let mut d = Vec::new();
    if a.topic != b.topic {
        d.push(format!("topic {:?} vs {:?}", a.topic, b.topic));
    }
    if a.mode != b.mode {
        d.push(format!("mode {} vs {}", a.mode, b.mode));
    }
    if a.ordered != b.ordered {
        d.push(format!("ordered {} vs {}", a.ordered, b.ordered));
    }
    if a.tag_filter != b.tag_filter {
        d.push(format!("tag filter {:?} vs {:?}", a.tag_filter, b.tag_filter));
    }
    if a.start != b.start {
        d.push(format!("start {:?} vs {:?}", a.start, b.start));
    }
    if a.ack_timeout_ms != b.ack_timeout_ms {
        d.push(format!(
            "ack timeout {} vs {} ms",
            a.ack_timeout_ms, b.ack_timeout_ms
        ));
    }
    if a.max_attempts != b.max_attempts {
        d.push(format!(
            "max attempts {} vs {}",
            a.max_attempts, b.max_attempts
        ));
    }
    if a.retry_ladder_ms != b.retry_ladder_ms {
        d.push(format!(
            "retry ladder {:?} vs {:?}",
            a.retry_ladder_ms, b.retry_ladder_ms
        ));
    }
    if a.max_in_flight != b.max_in_flight {
        d.push(format!(
            "max in flight {} vs {}",
            a.max_in_flight, b.max_in_flight
        ));
    }
    format!("live: {}", d.join(", "))
}

/// Largest batch one push frame carries.
pub fn push_batch_limit(credit: u32) -> u32 {
    credit.min(MAX_PUSH_BATCH)
}

#[cfg(test)]
mod tests;
