//! The admin side of groups: describe (members, assignment, lag), list,
//! reset and rewind, re-drive of dead letters, delete.

use sluice_protocol::batch::BatchIter;
use sluice_protocol::ops::{
    GroupDescription, GroupSummary, ListGroupsResponse, MemberDescription, PartitionLag,
    RedriveResponse, ResetGroupRequest, ResetGroupResponse, ResetTo, TopicPartition,
};

use super::state::{Group, State, WindowKey};
use super::upkeep::{Commit, collect_commits};
use super::{CF_GROUPS, GroupError, Groups, Result, copies, resolve_offset};
use crate::log::{LogError, Partition};
use crate::meta::{Batch, MetaError, WriteMode};
use crate::sched::Delivery;
use crate::store::Catalog;

impl Groups {
    /// The keys the group's progress is kept under: "" for a clustering
    /// group; for a broadcast group every instance live, in memory or with
    /// stored offsets.
    fn instances(&self, g: &Group, st: &State) -> Result<Vec<String>> {
        if !st.broadcast() {
            return Ok(vec![String::new()]);
        }
        let mut v: Vec<String> = st.members.values().map(|m| m.instance.clone()).collect();
        v.extend(st.windows.keys().map(|(i, _)| i.clone()));
        let prefix = format!("{}/", g.name);
        for owner in self.store.meta().list_groups()? {
            if let Some(i) = owner.strip_prefix(&prefix) {
                v.push(i.to_owned());
            }
        }
        v.sort();
        v.dedup();
        Ok(v)
    }

    pub fn describe(&self, name: &str) -> Result<GroupDescription> {
        let g = self.load(name)?;
        let st = g.state.lock();
        let instances = self.instances(&g, &st)?;
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
        let committed = self.store.meta().committed_offset(
            &g.offset_owner(&key.0),
            &key.1.topic,
            key.1.partition,
        )?;
        Ok(match committed {
            Some(c) => c.clamp(partition.log_start_offset(), partition.high_watermark()),
            None if key.1.topic == g.retry_topic => partition.log_start_offset(),
            None => resolve_offset(partition, st.settings.start)?,
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
        for item in meta.table(&CF_GROUPS)?.scan() {
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
                ResetTo::Spec(spec) => resolve_offset(partition, spec)?,
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
        {
            // Lock order: commits, then the group. Holding the commits lock
            // keeps an upkeep commit of the old position from landing after
            // the new one.
            let mut commits = self.commits.lock();
            let mut st = g.state.lock();
            let instances = self.instances(&g, &st)?;
            // Pending commits first, so the reset's come after them.
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
            let all = std::mem::take(&mut *commits);
            if let Err(e) = self.write_offsets(&all, WriteMode::Synced) {
                *commits = all;
                return Err(e);
            }
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
                        copies_out.push(copies::redriven_copy(copies::owned(&r)));
                        next = r.offset + 1;
                    }
                }
            }
            if copies_out.is_empty() {
                break;
            }
            // The copies and the moved cursor are one write: a crash
            // re-drives each dead letter once, never twice or not at all.
            let count = copies_out.len() as u64;
            let now = self.now();
            let deliveries = copies_out
                .into_iter()
                .map(|record| Delivery {
                    topic: g.retry_topic.clone(),
                    partition: 0,
                    due_at_ms: now,
                    repeat: None,
                    record,
                })
                .collect();
            let meta = self.store.meta();
            let mut cursor_moved = Batch::default();
            meta.stage_offsets(
                &mut cursor_moved,
                &g.name,
                &[(&g.dead_letter_topic, 0, next)],
            )?;
            self.scheduler.schedule_with(deliveries, cursor_moved)?;
            redriven += count;
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
        self.groups.remove(name);
        let meta = self.store.meta();
        let mut batch = Batch::default();
        batch.delete(&meta.table(&CF_GROUPS)?, name.as_bytes());
        meta.write(batch, WriteMode::Synced)?;
        let prefix = format!("{name}/");
        for owner in meta.list_groups()? {
            if owner == name || owner.starts_with(&prefix) {
                meta.delete_group(&owner)?;
            }
        }
        Ok(())
    }
}
