//! Membership and sessions: join (creating the group on first use),
//! heartbeat, leave, a closed connection, push credit.
//!
//! Heartbeats and credit reach only a member's live part
//! ([`MemberLive`](super::state::MemberLive)), never the group lock.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use sluice_protocol::ops::group::{dead_letter_topic, retry_topic};
use sluice_protocol::ops::{HeartbeatResponse, JoinGroupRequest, JoinGroupResponse, MemberRef};

use super::settings::{normalise, settings_diff, validate_group_name, validate_instance_id};
use super::state::{Member, MemberLive, State};
use super::window::MemberSlot;
use super::{GroupError, Groups, Result};

impl Groups {
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
        if let Ok((slot, m)) = g.member(&mut st, &req.member_id) {
            // A rejoin of a live member: same id, same assignment.
            m.live.touch(now);
            m.connection = connection;
            return Ok(join_response(&st, slot));
        }
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
        let slot = g.add(&mut st, now, |live| Member {
            id,
            instance,
            client_id: client_id.to_owned(),
            connection,
            session_timeout_ms: i64::from(req.session_timeout_ms.clamp(100, 3_600_000)),
            rotate: 0,
            live,
        });
        st.rebalance();
        let resp = join_response(&st, slot);
        drop(st);
        g.changed.notify_waiters();
        tracing::debug!(group = %g.name, member = %resp.member_id, generation = resp.generation, "member joined");
        Ok(resp)
    }

    /// Keeps the member's session alive; answers its current view.
    pub fn heartbeat(&self, m: &MemberRef) -> Result<HeartbeatResponse> {
        let live = self.live_member(m)?;
        live.touch(self.now());
        let view = live.view();
        Ok(HeartbeatResponse {
            generation: view.generation,
            assignment: view.assignment.clone(),
        })
    }

    pub fn leave(&self, m: &MemberRef) -> Result<()> {
        let g = self.live_member_group(m)?;
        let mut st = g.state.lock();
        let (slot, _) = g.member(&mut st, &m.member_id)?;
        g.remove(&mut st, slot);
        drop(st);
        g.changed.notify_waiters();
        Ok(())
    }

    /// The member's live part: its push credit, liveness and view.
    pub fn live_member(&self, m: &MemberRef) -> Result<Arc<MemberLive>> {
        self.live_member_group(m)?.live_member(&m.member_id)
    }

    /// A connection closed: its members leave at once (no session wait).
    pub fn connection_closed(&self, connection: u64) {
        for g in self.all_live() {
            let mut st = g.state.lock();
            let gone: Vec<MemberSlot> = st
                .members
                .iter()
                .filter(|(_, m)| m.connection == connection)
                .map(|(s, _)| *s)
                .collect();
            if gone.is_empty() {
                continue;
            }
            for s in gone {
                g.remove(&mut st, s);
            }
            drop(st);
            g.changed.notify_waiters();
        }
    }
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
