//! Dispatch of consumer-group requests: membership, pull and push
//! delivery, acks, and the admin views. The work is in `groups`; this
//! layer moves it off the async workers; errors reach the wire through
//! [`ToWire`](super::ToWire).

use std::sync::Arc;
use std::time::Duration;

use sluice_protocol::WireError;
use sluice_protocol::ops::{
    AckRequest, AckResponse, GroupBatch, GroupDescription, HeartbeatResponse, JoinGroupRequest,
    JoinGroupResponse, ListGroupsResponse, MemberRef, PollGroupRequest, RedriveRequest,
    RedriveResponse, ResetGroupRequest, ResetGroupResponse, SubscribeRequest,
};

use super::errors::to_wire;
use super::{Broker, Session, blocking};
use crate::groups::{GroupError, Groups, MemberLive, Subscription};

impl Broker {
    pub fn groups(&self) -> &Arc<Groups> {
        &self.groups
    }

    async fn on_groups<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Groups) -> Result<T, GroupError> + Send + 'static,
    ) -> Result<T, WireError> {
        let groups = self.groups.clone();
        blocking(move || f(&groups)).await?.map_err(to_wire)
    }

    pub async fn join_group(
        &self,
        req: JoinGroupRequest,
        session: &Session,
        connection: u64,
    ) -> Result<JoinGroupResponse, WireError> {
        let client_id = session.client_id.clone();
        self.on_groups(move |g| g.join(req, &client_id, connection))
            .await
    }

    pub fn heartbeat(&self, m: &MemberRef) -> Result<HeartbeatResponse, WireError> {
        self.groups.heartbeat(m).map_err(to_wire)
    }

    pub fn leave_group(&self, m: &MemberRef) -> Result<(), WireError> {
        self.groups.leave(m).map_err(to_wire)
    }

    pub async fn poll_group(&self, req: PollGroupRequest) -> Result<GroupBatch, WireError> {
        self.groups
            .poll(
                &req.member,
                req.max_messages,
                req.max_bytes,
                Duration::from_millis(req.max_wait_ms.into()),
                &self.shutdown,
            )
            .await
            .map_err(to_wire)
    }

    /// The member's live part: push credit and liveness (no group lock).
    pub fn group_member(&self, m: &MemberRef) -> Result<Arc<MemberLive>, WireError> {
        self.groups.live_member(m).map_err(to_wire)
    }

    /// Opens a push subscription for the member.
    pub fn subscribe(&self, req: &SubscribeRequest) -> Result<Subscription, WireError> {
        self.groups
            .subscribe(&req.member, req.credit, req.max_bytes)
            .map_err(to_wire)
    }

    pub async fn ack(&self, req: AckRequest) -> Result<AckResponse, WireError> {
        self.on_groups(move |g| g.ack(&req)).await
    }

    pub async fn describe_group(&self, group: String) -> Result<GroupDescription, WireError> {
        self.on_groups(move |g| g.describe(&group)).await
    }

    pub async fn list_groups(&self) -> Result<ListGroupsResponse, WireError> {
        self.on_groups(|g| g.list()).await
    }

    pub async fn reset_group(
        &self,
        req: ResetGroupRequest,
    ) -> Result<ResetGroupResponse, WireError> {
        self.on_groups(move |g| g.reset(&req)).await
    }

    pub async fn redrive(&self, req: RedriveRequest) -> Result<RedriveResponse, WireError> {
        self.on_groups(move |g| g.redrive(&req.group, req.max))
            .await
    }

    pub async fn delete_group(&self, group: String) -> Result<(), WireError> {
        self.on_groups(move |g| g.delete(&group)).await
    }

    /// A connection ended: its group members leave at once.
    pub fn connection_closed(&self, connection: u64) {
        self.groups.connection_closed(connection);
    }
}
