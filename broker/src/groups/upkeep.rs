//! Upkeep: expiring silent members and overdue messages, waking members
//! with redeliveries due, and committing offsets.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::settle::Settle;
use super::state::{Group, State};
use super::window::{Expired, SettleOutcome};
use super::{Groups, Result, TICK};
use crate::meta::WriteMode;
use crate::store::Catalog;

impl Groups {
    /// One round of upkeep: expire silent members and overdue messages,
    /// wake members with redeliveries due, commit offsets.
    pub fn tick(&self) {
        let now = self.now();
        for g in &self.all_live() {
            let mut jobs = Vec::new();
            let mut wake = false;
            {
                let mut st = g.state.lock();
                for s in st.silent(now) {
                    tracing::info!(group = %g.name, member = %st.members[&s].id, "member session expired");
                    g.remove(&mut st, s);
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
        for g in &self.all_live() {
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
    pub(super) fn write_offsets(&self, commits: &[Commit], mode: WriteMode) -> Result<()> {
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
pub(super) struct Commit {
    pub owner: String,
    pub topic: String,
    pub partition: u32,
    pub offset: u64,
}

pub(super) fn collect_commits(g: &Group, st: &mut State) -> Vec<Commit> {
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
