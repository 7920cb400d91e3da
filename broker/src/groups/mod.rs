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
//! - this module: the registry of groups (loading and storing settings,
//!   topics appearing and going, filter functions);
//! - [`state`]: a group in memory — the state behind its lock and each
//!   member's live part outside it (liveness, credit, its view);
//! - [`membership`]: join, heartbeat, leave, closed connections;
//! - [`take`]: pull delivery — plan under the lock, read and filter
//!   without it, apply under it; [`deliver`] is the read and apply of one
//!   partition;
//! - [`push`]: push subscriptions, woken by the group and the log;
//! - [`settle`]: acks, nacks, retry copies and dead letters ([`copies`]);
//! - [`upkeep`]: sessions, ack timeouts, offset commits;
//! - [`admin`]: describe, list, reset, re-drive, delete;
//! - [`assign`]: sticky, balanced partition assignment (clustering mode);
//! - [`window`]: the per-partition books (sans-IO);
//! - [`settings`], [`tag_expr`]: checking settings, tag filters;
//! - [`stored`]: the settings' versioned storage encoding.
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
//! Locks: a group's state lock is held only for bookkeeping, never across
//! a log read, a metadata read or write, or a filter call. Heartbeats and
//! credit grants take no group lock at all. Metadata and log calls block:
//! the entry points that make them are synchronous and the broker calls
//! them off the async workers; [`Groups::poll`] and push subscriptions
//! wait asynchronously between synchronous takes.

mod admin;
mod assign;
mod copies;
mod deliver;
mod membership;
mod push;
mod settings;
mod settle;
mod state;
mod stored;
pub mod tag_expr;
mod take;
mod upkeep;
mod window;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use dashmap::DashMap;
use parking_lot::Mutex;
use sluice_protocol::ops::group::{dead_letter_topic, retry_topic};
use sluice_protocol::ops::{GroupSettings, MemberRef, OffsetSpec, TopicPartition};
use tokio::sync::Notify;

use crate::clock::Clock;
use crate::log::{LogError, Partition, TopicConfig};
use crate::meta::{Batch, Keyspace, WriteMode};
use crate::sched::{SchedError, Scheduler};
use crate::store::{Store, StoreError};

use settings::{compile_filter, ladder_of};
use state::{Group, State};
use upkeep::Commit;

pub use push::{Subscription, push_batch_limit};
pub use state::{Credit, MemberLive, View};

/// Group name → its settings (in their stored encoding, `stored.rs`).
pub const CF_GROUPS: Keyspace = Keyspace::plain("groups");

/// The groups' column families, for the metadata store to open.
pub const KEYSPACES: &[Keyspace] = &[CF_GROUPS];

/// A server-side filter attached to a group (a filter function): asked
/// about every stored batch of new messages before they enter the group's
/// windows. Messages it rejects are settled for the group (acked), exactly
/// like messages a tag filter rejects. It runs on the delivery path, under
/// no group lock, but a take waits for it, so it must answer within its
/// own deadline.
pub trait BatchFilter: Send + Sync + std::fmt::Debug {
    /// One verdict per record of `batch` (one stored record batch), `true`
    /// to deliver. `None` when the filter could not decide (it failed):
    /// every message is delivered, so a broken filter never loses data.
    fn verdicts(&self, group: &str, topic: &str, partition: u32, batch: &[u8])
    -> Option<Vec<bool>>;
}

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
    Meta(#[from] crate::meta::MetaError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Sched(#[from] SchedError),
}

type Result<T> = std::result::Result<T, GroupError>;

/// Every consumer group of the broker.
#[derive(Debug)]
pub struct Groups {
    store: Arc<Store>,
    scheduler: Arc<Scheduler>,
    clock: Arc<dyn Clock>,
    /// Settings of the retry and dead-letter topics the broker creates.
    internal_topic: TopicConfig,
    groups: DashMap<String, Arc<Group>>,
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
            groups: DashMap::new(),
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

    /// Every group in memory (a snapshot: the registry is not held).
    fn all_live(&self) -> Vec<Arc<Group>> {
        self.groups.iter().map(|g| g.value().clone()).collect()
    }

    /// A group in memory (members exist only there).
    fn live(&self, name: &str) -> Option<Arc<Group>> {
        self.groups.get(name).map(|g| g.value().clone())
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
        let g = self.groups.entry(name.to_owned()).or_insert_with(|| {
            Arc::new(Group {
                name: name.to_owned(),
                retry_topic: retry_topic(name),
                dead_letter_topic: dead_letter_topic(name),
                state: Mutex::new(state),
                members: DashMap::new(),
                changed: Notify::new(),
                redrive: Mutex::new(()),
            })
        });
        Ok(g.value().clone())
    }

    fn fresh_state(&self, name: &str, settings: GroupSettings) -> Result<State> {
        let filter = compile_filter(&settings.tag_filter)?;
        let ladder = ladder_of(&settings);
        let partitions = self.subscribed(name, &settings.topic);
        Ok(State {
            settings,
            filter: filter.map(Arc::new),
            ladder,
            generation: 0,
            members: BTreeMap::new(),
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
        let groups = self.all_live();
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
        let groups = self.all_live();
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
        stored::decode(&raw)
            .map(Some)
            .map_err(|e| GroupError::Invalid(format!("group {name:?}: {e}")))
    }

    fn store_settings(&self, name: &str, s: &GroupSettings) -> Result<()> {
        let meta = self.store.meta();
        let mut batch = Batch::default();
        batch.put(&meta.table(&CF_GROUPS)?, name.as_bytes(), stored::encode(s));
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

#[cfg(test)]
mod tests;
