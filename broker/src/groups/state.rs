//! A group in memory: the state behind its lock (settings, members,
//! assignment, windows) and what of a member lives outside that lock
//! ([`MemberLive`]: liveness, push credit, its view of the assignment), so
//! heartbeats and credit grants never wait for a delivery.
//!
//! The lock is held only for bookkeeping: no log read, metadata read or
//! write, or filter call happens under it (see `take.rs` for how delivery
//! does its I/O between two short lock sections).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, Ordering};

use dashmap::DashMap;
use parking_lot::Mutex;
use sluice_protocol::ops::{GroupMode, GroupSettings, TopicPartition};
use tokio::sync::Notify;

use super::assign;
use super::tag_expr::TagExpr;
use super::window::{MemberSlot, Window};
use super::{GroupError, Result};
use crate::sched::RetryLadder;

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

/// A member's generation and partitions as of the last rebalance.
#[derive(Debug, Clone, Default)]
pub struct View {
    pub generation: u32,
    pub assignment: Vec<TopicPartition>,
}

/// What of a member is read and written without the group lock.
#[derive(Debug)]
pub struct MemberLive {
    pub(super) slot: MemberSlot,
    /// Last sign of life (join, heartbeat, poll, ack), in clock ms.
    last_seen: AtomicI64,
    /// Open push subscriptions: while one is open the member is alive (the
    /// connection carrying it is QUIC's to watch).
    subscriptions: AtomicU32,
    gone: AtomicBool,
    pub credit: Credit,
    view: Mutex<Arc<View>>,
}

impl MemberLive {
    fn new(slot: MemberSlot, now: i64) -> MemberLive {
        MemberLive {
            slot,
            last_seen: AtomicI64::new(now),
            subscriptions: AtomicU32::new(0),
            gone: AtomicBool::new(false),
            credit: Credit::default(),
            view: Mutex::new(Arc::default()),
        }
    }

    pub(super) fn touch(&self, now: i64) {
        self.last_seen.fetch_max(now, Ordering::AcqRel);
    }

    /// Whether the session ran out at `now`.
    fn silent(&self, now: i64, timeout_ms: i64) -> bool {
        self.subscriptions.load(Ordering::Acquire) == 0
            && now - self.last_seen.load(Ordering::Acquire) > timeout_ms
    }

    pub fn view(&self) -> Arc<View> {
        self.view.lock().clone()
    }

    /// Whether the member left the group (its subscription ends).
    pub fn is_gone(&self) -> bool {
        self.gone.load(Ordering::Acquire)
    }

    pub(super) fn subscribed(&self) {
        self.subscriptions.fetch_add(1, Ordering::AcqRel);
    }

    pub(super) fn unsubscribed(&self, now: i64) {
        // The session runs from the end of the subscription.
        self.touch(now);
        self.subscriptions.fetch_sub(1, Ordering::AcqRel);
    }
}

#[derive(Debug)]
pub(super) struct Member {
    pub id: String,
    pub instance: String,
    pub client_id: String,
    pub connection: u64,
    pub session_timeout_ms: i64,
    /// Where the next take starts among the member's partitions, so that
    /// one busy partition does not starve the others.
    pub rotate: usize,
    pub live: Arc<MemberLive>,
}

/// Key of a delivery window: the member instance ("" in clustering mode,
/// where the group shares one window per partition) and the partition.
pub(super) type WindowKey = (String, TopicPartition);

#[derive(Debug)]
pub(super) struct State {
    pub settings: GroupSettings,
    /// `None` when the filter lets everything through.
    pub filter: Option<Arc<TagExpr>>,
    pub ladder: RetryLadder,
    pub generation: u32,
    pub members: BTreeMap<MemberSlot, Member>,
    pub next_slot: MemberSlot,
    /// The topic's partitions and the retry topic's one.
    pub partitions: Vec<TopicPartition>,
    pub assignment: HashMap<TopicPartition, MemberSlot>,
    pub windows: HashMap<WindowKey, Window>,
}

impl State {
    pub fn broadcast(&self) -> bool {
        self.settings.mode == GroupMode::Broadcast
    }

    /// Ordered and broadcast groups retry in place (see the module docs).
    pub fn retries_in_place(&self) -> bool {
        self.settings.ordered || self.broadcast()
    }

    pub fn instance_key(&self, slot: MemberSlot) -> String {
        match self.members.get(&slot) {
            Some(m) if self.broadcast() => m.instance.clone(),
            _ => String::new(),
        }
    }

    pub fn assigned(&self, slot: MemberSlot) -> Vec<TopicPartition> {
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

    /// Reassigns the partitions, starts a new generation and tells every
    /// member its new view.
    pub fn rebalance(&mut self) {
        if !self.broadcast() {
            let members: Vec<_> = self.members.keys().copied().collect();
            self.assignment = assign::assign(&self.partitions, &members, &self.assignment);
        }
        self.generation = self.generation.wrapping_add(1);
        for (slot, m) in &self.members {
            let view = View {
                generation: self.generation,
                assignment: self.assigned(*slot),
            };
            *m.live.view.lock() = Arc::new(view);
        }
    }

    /// Members whose session ran out at `now`.
    pub fn silent(&self, now: i64) -> Vec<MemberSlot> {
        self.members
            .iter()
            .filter(|(_, m)| m.live.silent(now, m.session_timeout_ms))
            .map(|(s, _)| *s)
            .collect()
    }
}

/// A consumer group in memory.
#[derive(Debug)]
pub(super) struct Group {
    pub name: String,
    pub retry_topic: String,
    pub dead_letter_topic: String,
    pub state: Mutex<State>,
    /// Live members by id, for the calls that need no more than liveness
    /// and credit (heartbeat, credit grants, subscriptions). Changed only
    /// under the state lock, together with `State::members`.
    pub members: DashMap<String, Arc<MemberLive>>,
    /// Woken when members may have new work: acks freed room, messages
    /// became ready again, the assignment changed, a read was cut short.
    pub changed: Notify,
    /// Serialises re-drives of the dead letters.
    pub redrive: Mutex<()>,
}

impl Group {
    /// Name under which a window's committed offset is stored.
    pub fn offset_owner(&self, instance: &str) -> String {
        if instance.is_empty() {
            self.name.clone()
        } else {
            format!("{}/{instance}", self.name)
        }
    }

    fn unknown_member(&self, id: &str) -> GroupError {
        GroupError::UnknownMember {
            group: self.name.clone(),
            member: id.to_owned(),
        }
    }

    /// The live part of member `id`, without the group lock.
    pub fn live_member(&self, id: &str) -> Result<Arc<MemberLive>> {
        self.members
            .get(id)
            .map(|m| m.value().clone())
            .ok_or_else(|| self.unknown_member(id))
    }

    /// Member `id` in the locked state.
    pub fn member<'s>(&self, st: &'s mut State, id: &str) -> Result<(MemberSlot, &'s mut Member)> {
        let slot = self.live_member(id)?.slot;
        let m = st
            .members
            .get_mut(&slot)
            .ok_or_else(|| self.unknown_member(id))?;
        Ok((slot, m))
    }

    /// Adds the member `make` builds around its live part (the caller
    /// rebalances).
    pub fn add(
        &self,
        st: &mut State,
        now: i64,
        make: impl FnOnce(Arc<MemberLive>) -> Member,
    ) -> MemberSlot {
        let slot = st.next_slot;
        st.next_slot += 1;
        let member = make(Arc::new(MemberLive::new(slot, now)));
        self.members.insert(member.id.clone(), member.live.clone());
        st.members.insert(slot, member);
        slot
    }

    /// Removes a member: what it held goes back to the others (not counted
    /// as an attempt) and its partitions are reassigned.
    pub fn remove(&self, st: &mut State, slot: MemberSlot) {
        let Some(m) = st.members.remove(&slot) else {
            return;
        };
        self.members.remove(&m.id);
        let broadcast = st.broadcast();
        for ((instance, _), w) in st.windows.iter_mut() {
            if !broadcast || *instance == m.instance {
                w.release(slot);
            }
        }
        m.live.gone.store(true, Ordering::Release);
        m.live.credit.changed.notify_waiters();
        st.rebalance();
    }
}
