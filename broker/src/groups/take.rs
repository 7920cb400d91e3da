//! Handing messages to a member: [`Groups::poll`] waits until there are
//! some; [`Groups::take`] hands out what there is now, in three steps so
//! that the group lock is never held across I/O or guest code:
//!
//! 1. *plan* (lock): pick the member's partitions, take its redeliveries
//!    in the windows' books, claim each window's read cursor;
//! 2. *read* (no lock): re-read redeliveries, read new messages, run the
//!    tag filter and the filter function (`deliver.rs`);
//! 3. *apply* (lock): push what was read into the windows that are still
//!    the ones planned against, release the claims.
//!
//! A window not yet in memory is opened first, its committed offset read
//! from the metadata store outside the lock.

use std::sync::Arc;
use std::time::Duration;

use sluice_protocol::ops::{GroupBatch, MemberRef, OffsetSpec, TopicPartition};
use tokio_util::sync::CancellationToken;

use super::deliver::{
    Budget, NewRead, NewReader, Redelivered, apply_new, apply_redelivered, read_redeliveries,
};
use super::state::{Group, WindowKey};
use super::tag_expr::TagExpr;
use super::window::{Delivered, MemberSlot, Window};
use super::{BatchFilter, GroupError, Groups, Result, resolve_offset};
use crate::log::Partition;
use crate::store::Catalog;

/// What a take does to one partition, fixed in the plan step.
struct PartPlan {
    key: WindowKey,
    partition: Arc<Partition>,
    epoch: u64,
    redo: Vec<Delivered>,
    /// `Some((from, room))` when this take holds the window's read claim.
    read: Option<(u64, usize)>,
    is_retry: bool,
}

/// A take planned under the lock, to carry out without it.
struct TakePlan {
    slot: MemberSlot,
    deadline: i64,
    generation: u32,
    filter: Option<Arc<TagExpr>>,
    function: Option<Arc<dyn BatchFilter>>,
    keyed: bool,
    parts: Vec<PartPlan>,
    budget: Budget,
}

/// The plan step's answer.
enum Planned {
    Take(TakePlan),
    /// These windows must be opened first.
    Open(Vec<(WindowKey, Arc<Partition>, OffsetSpec)>),
}

/// What the read step found for one partition.
struct PartRead {
    redelivered: Redelivered,
    new: Option<NewRead>,
}

impl Groups {
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
        self.wait_for_batch(member, max_messages, max_bytes, Some(deadline), shutdown)
            .await
    }

    /// Takes for the member until something comes, `deadline` passes or
    /// the broker stops; woken by the group (acks, redeliveries, the
    /// assignment) and by the high watermarks of the member's partitions.
    pub(super) async fn wait_for_batch(
        self: &Arc<Self>,
        member: &MemberRef,
        max_messages: u32,
        max_bytes: u32,
        deadline: Option<tokio::time::Instant>,
        shutdown: &CancellationToken,
    ) -> Result<GroupBatch> {
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
            let timed_out = deadline.is_some_and(|d| tokio::time::Instant::now() >= d);
            if !batch.deliveries.is_empty() || timed_out || shutdown.is_cancelled() {
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
            let until = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = notified => {}
                _ = changed => {}
                _ = until => {}
                _ = shutdown.cancelled() => {}
            }
        }
    }

    /// High-watermark watches of the member's partitions (its view: no
    /// group lock).
    fn watches(
        &self,
        g: &Group,
        member: &MemberRef,
    ) -> Result<Vec<tokio::sync::watch::Receiver<u64>>> {
        let view = g.live_member(&member.member_id)?.view();
        Ok(view
            .assignment
            .iter()
            .filter_map(|tp| self.store.log().partition(&tp.topic, tp.partition).ok())
            .map(|p| p.watch_high_watermark())
            .collect())
    }

    /// Takes what the member may have now: redeliveries first, then new
    /// messages, round-robin over its partitions.
    pub(super) fn take(
        &self,
        g: &Group,
        member: &MemberRef,
        max_messages: usize,
        max_bytes: usize,
    ) -> Result<GroupBatch> {
        // Opening windows can race a reassignment; a few rounds settle it.
        for _ in 0..4 {
            match self.plan(g, member, max_messages, max_bytes)? {
                Planned::Take(plan) => return Ok(self.carry_out(g, plan)),
                Planned::Open(windows) => self.open_windows(g, windows)?,
            }
        }
        Ok(GroupBatch {
            generation: g.state.lock().generation,
            deliveries: Vec::new(),
        })
    }

    /// Step 1, under the lock.
    fn plan(
        &self,
        g: &Group,
        member: &MemberRef,
        max_messages: usize,
        max_bytes: usize,
    ) -> Result<Planned> {
        let now = self.now();
        let function = self.filters.read().get(&g.name).cloned();
        let mut st = g.state.lock();
        let (slot, m) = g.member(&mut st, &member.member_id)?;
        m.live.touch(now);
        m.rotate = m.rotate.wrapping_add(1);
        let rotate = m.rotate;
        let instance = st.instance_key(slot);
        let mut parts = st.assigned(slot);
        if !parts.is_empty() {
            let n = rotate % parts.len();
            parts.rotate_left(n);
        }
        let mut missing = Vec::new();
        let mut handles = Vec::with_capacity(parts.len());
        for tp in parts {
            let Ok(partition) = self.store.log().partition(&tp.topic, tp.partition) else {
                continue; // deleted under us
            };
            let key = (instance.clone(), tp);
            if !st.windows.contains_key(&key) {
                let spec = if key.1.topic == g.retry_topic {
                    OffsetSpec::Earliest
                } else {
                    st.settings.start
                };
                missing.push((key, partition, spec));
            } else {
                handles.push((key, partition));
            }
        }
        if !missing.is_empty() {
            return Ok(Planned::Open(missing));
        }
        let deadline = now + i64::from(st.settings.ack_timeout_ms);
        let max_in_flight = st.settings.max_in_flight as usize;
        let mut budget = Budget {
            messages: max_messages.max(1),
            bytes: max_bytes.max(1),
        };
        let mut plans = Vec::with_capacity(handles.len());
        for (key, partition) in handles {
            let w = st.windows.get_mut(&key).expect("checked above");
            let mut redo = Vec::new();
            w.take_ready(slot, budget.messages, now, deadline, &mut redo);
            budget.messages -= redo.len();
            let wants_new = w.len() < max_in_flight && w.end() < partition.high_watermark();
            let read = (wants_new && w.claim_read()).then(|| (w.end(), max_in_flight - w.len()));
            plans.push(PartPlan {
                is_retry: key.1.topic == g.retry_topic,
                epoch: w.epoch(),
                key,
                partition,
                redo,
                read,
            });
        }
        Ok(Planned::Take(TakePlan {
            slot,
            deadline,
            generation: st.generation,
            filter: st.filter.clone(),
            function,
            keyed: st.settings.ordered,
            parts: plans,
            budget,
        }))
    }

    /// Steps 2 (no lock) and 3 (lock).
    fn carry_out(&self, g: &Group, plan: TakePlan) -> GroupBatch {
        let TakePlan {
            slot,
            deadline,
            generation,
            filter,
            function,
            keyed,
            parts,
            mut budget,
        } = plan;
        let reads: Vec<PartRead> = parts
            .iter()
            .map(|p| {
                let redelivered = read_redeliveries(&p.partition, &p.key.1, &p.redo, &mut budget);
                let new = p.read.map(|(from, room)| {
                    let reader = NewReader {
                        from,
                        room,
                        filter: filter.as_deref(),
                        // Retry copies passed the filter on their first delivery.
                        function: function.as_deref().filter(|_| !p.is_retry),
                        group: &g.name,
                        keyed,
                        is_retry: p.is_retry,
                    };
                    reader.read(&p.partition, &p.key.1, &mut budget)
                });
                PartRead { redelivered, new }
            })
            .collect();
        let mut out = GroupBatch {
            generation,
            deliveries: Vec::new(),
        };
        let mut wake = false;
        {
            let mut st = g.state.lock();
            for (p, read) in parts.iter().zip(reads) {
                let Some(w) = st.windows.get_mut(&p.key) else {
                    continue; // forgotten (topic deleted): the work is stale
                };
                if w.epoch() != p.epoch {
                    continue; // reset meanwhile: the work is stale
                }
                apply_redelivered(w, read.redelivered, &mut out);
                let Some(new) = read.new else { continue };
                match new.restart_at {
                    Some(start) => w.reset(start),
                    None if new.is_empty() => {}
                    None => apply_new(w, slot, deadline, new, &p.key.1, &mut out),
                }
                // Another take found the cursor claimed: let it look again.
                wake |= w.release_read();
            }
        }
        if wake {
            g.changed.notify_waiters();
        }
        out
    }

    /// Brings windows into memory: from the committed offset, else the
    /// group's start position (committed at once, so a `latest` start does
    /// not drift). The metadata read happens outside the lock.
    fn open_windows(
        &self,
        g: &Group,
        windows: Vec<(WindowKey, Arc<Partition>, OffsetSpec)>,
    ) -> Result<()> {
        let mut opened = Vec::with_capacity(windows.len());
        for (key, partition, spec) in windows {
            let (start, hw) = (partition.log_start_offset(), partition.high_watermark());
            let committed = self.store.meta().committed_offset(
                &g.offset_owner(&key.0),
                &key.1.topic,
                key.1.partition,
            )?;
            let base = match committed {
                Some(c) => {
                    if c < start {
                        tracing::warn!(group = %g.name, topic = %key.1.topic, partition = key.1.partition,
                            committed = c, log_start = start, "messages were deleted by retention before the group read them");
                    }
                    Ok(c.clamp(start, hw))
                }
                None => Err(resolve_offset(&partition, spec)?),
            };
            opened.push((key, base));
        }
        let mut st = g.state.lock();
        let ordered = st.settings.ordered;
        for (key, base) in opened {
            if st.windows.contains_key(&key) || !still_read(&st.partitions, &key.1) {
                continue;
            }
            let w = match base {
                Ok(committed) => Window::new(committed, ordered),
                Err(start) => {
                    let mut w = Window::new(0, ordered);
                    w.reset(start);
                    w
                }
            };
            st.windows.insert(key, w);
        }
        Ok(())
    }
}

fn still_read(partitions: &[TopicPartition], tp: &TopicPartition) -> bool {
    partitions.contains(tp)
}
