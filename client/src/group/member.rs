//! Membership: join, heartbeat, and rejoin when the broker forgot the
//! member, plus the state ([`Shared`]) that the consumer, its push stream
//! and its background tasks share.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use parking_lot::Mutex;
use sluice_protocol::ErrorCode;
use sluice_protocol::ops::group::retry_topic;
use sluice_protocol::ops::{
    GroupBatch, HeartbeatRequest, JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest,
    MemberRef, TopicPartition,
};
use tokio::sync::{Semaphore, watch};

use super::acks::{ACK_REQUESTS_IN_FLIGHT, AckQueue};
use super::config::{GroupConfig, millis_u32};
use super::message::{GroupMessage, parse_batch};
use crate::conn::{Connection, RequestStream};
use crate::error::{ClientError, Result};

/// Who this consumer is in the group right now; replaced on every (re)join.
#[derive(Debug)]
pub(super) struct Membership {
    pub(super) member_id: String,
    pub(super) generation: u32,
    pub(super) heartbeat_interval: Duration,
    pub(super) assignment: Vec<TopicPartition>,
}

/// What the consumer, its stream and its background tasks share.
#[derive(Debug)]
pub(super) struct Shared {
    pub(super) conn: Arc<Connection>,
    pub(super) config: GroupConfig,
    retry_topic: String,
    /// The instance id joins ask for; see [`GroupConfig::instance_id`].
    pub(super) instance_id: Mutex<String>,
    pub(super) member: Mutex<Membership>,
    /// One rejoin at a time; see [`Shared::rejoin`].
    rejoin_lock: tokio::sync::Mutex<()>,
    /// Polls and acks; membership requests use the control stream.
    stream: Mutex<Option<Arc<RequestStream>>>,
    pub(super) acks: Arc<AckQueue>,
    /// Permits for ack requests in flight; holding them all means none is.
    pub(super) ack_slots: Arc<Semaphore>,
    pub(super) settled: AtomicU64,
    pub(super) stale: AtomicU64,
    pub(super) failed: AtomicU64,
    /// True once the consumer is leaving: background work stops.
    pub(super) shutdown: watch::Sender<bool>,
}

/// Errors after which the member must join again.
pub(super) fn needs_rejoin(e: &ClientError) -> bool {
    matches!(
        e.code(),
        Some(ErrorCode::UnknownMember | ErrorCode::UnknownGroup)
    )
}

/// Errors that retrying will not cure: the configuration, the broker's
/// version, or the credentials are wrong.
pub(super) fn is_fatal(e: &ClientError) -> bool {
    match e {
        ClientError::Broker(w) => matches!(
            w.code,
            ErrorCode::MalformedRequest
                | ErrorCode::MalformedFrame
                | ErrorCode::UnknownOp
                | ErrorCode::UnsupportedVersion
                | ErrorCode::AuthenticationFailed
                | ErrorCode::NotAuthenticated
                | ErrorCode::UnknownTopic
                | ErrorCode::InvalidConfig
                | ErrorCode::InvalidArgument
                | ErrorCode::InconsistentGroup
        ),
        ClientError::Auth(_)
        | ClientError::Tls { .. }
        | ClientError::CaCert { .. }
        | ClientError::Config(_)
        | ClientError::Closed
        | ClientError::Corrupt(_) => true,
        _ => false,
    }
}

/// Resolves once the consumer is shutting down.
pub(super) async fn stopped(rx: &mut watch::Receiver<bool>) {
    // An error means the sender is gone: stop as well.
    let _ = rx.wait_for(|stop| *stop).await;
}

impl Shared {
    /// The state of a consumer that has not joined yet.
    pub(super) fn new(conn: Arc<Connection>, config: GroupConfig) -> Shared {
        let (shutdown, _) = watch::channel(false);
        Shared {
            conn,
            retry_topic: retry_topic(&config.group),
            instance_id: Mutex::new(config.instance_id.clone()),
            acks: Arc::new(AckQueue::new(config.ack_batch)),
            config,
            member: Mutex::new(Membership {
                member_id: String::new(),
                generation: 0,
                heartbeat_interval: Duration::ZERO,
                assignment: Vec::new(),
            }),
            rejoin_lock: tokio::sync::Mutex::new(()),
            stream: Mutex::new(None),
            ack_slots: Arc::new(Semaphore::new(ACK_REQUESTS_IN_FLIGHT)),
            settled: AtomicU64::new(0),
            stale: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            shutdown,
        }
    }

    pub(super) fn member_ref(&self) -> MemberRef {
        MemberRef {
            group: self.config.group.clone(),
            member_id: self.member.lock().member_id.clone(),
        }
    }

    pub(super) fn is_shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    pub(super) async fn join(&self) -> Result<JoinGroupResponse> {
        let req = JoinGroupRequest {
            group: self.config.group.clone(),
            member_id: String::new(),
            instance_id: self.instance_id.lock().clone(),
            session_timeout_ms: millis_u32(self.config.session_timeout),
            settings: self.config.settings.clone(),
        };
        self.conn.request(&req).await
    }

    pub(super) fn install(&self, resp: JoinGroupResponse) {
        let heartbeat_interval = match resp.heartbeat_interval_ms {
            0 => self.config.session_timeout / 3,
            ms => Duration::from_millis(ms.into()),
        };
        {
            let mut instance = self.instance_id.lock();
            if instance.is_empty() {
                instance.clone_from(&resp.member_id);
            }
        }
        *self.member.lock() = Membership {
            member_id: resp.member_id,
            generation: resp.generation,
            heartbeat_interval: heartbeat_interval.max(Duration::from_millis(1)),
            assignment: resp.assignment,
        };
    }

    /// Joins again after the broker forgot `dead_member` (session expired,
    /// connection lost, broker restarted). Whoever sees the error first
    /// rejoins; the others find the member id changed and carry on.
    pub(super) async fn rejoin(&self, dead_member: &str) -> Result<()> {
        let _one_at_a_time = self.rejoin_lock.lock().await;
        if self.member.lock().member_id != dead_member {
            return Ok(());
        }
        if self.is_shutting_down() {
            return Err(ClientError::Closed);
        }
        let resp = self.join().await?;
        tracing::info!(
            group = %self.config.group,
            old = dead_member,
            new = %resp.member_id,
            "rejoined consumer group"
        );
        self.install(resp);
        Ok(())
    }

    fn update_assignment(&self, member_id: &str, generation: u32, assignment: Vec<TopicPartition>) {
        let mut m = self.member.lock();
        if m.member_id == member_id {
            m.generation = generation;
            m.assignment = assignment;
        }
    }

    pub(super) fn note_generation(&self, member_id: &str, generation: u32) {
        let mut m = self.member.lock();
        if m.member_id == member_id {
            m.generation = generation;
        }
    }

    pub(super) async fn stream(&self) -> Result<Arc<RequestStream>> {
        if let Some(s) = self.stream.lock().as_ref()
            && !s.is_closed()
        {
            return Ok(s.clone());
        }
        let s = self.conn.open_stream().await?;
        *self.stream.lock() = Some(s.clone());
        Ok(s)
    }

    pub(super) async fn leave_group(&self) -> Result<()> {
        match self
            .conn
            .request(&LeaveGroupRequest(self.member_ref()))
            .await
        {
            Err(e) if !needs_rejoin(&e) => Err(e),
            _ => Ok(()),
        }
    }

    pub(super) fn parse(&self, batch: &GroupBatch) -> Result<Vec<GroupMessage>> {
        parse_batch(batch, &self.retry_topic, &self.acks)
    }
}

/// Keeps the member alive; rejoins when the broker forgot it.
pub(super) async fn heartbeat_loop(shared: Arc<Shared>) {
    let mut shutdown = shared.shutdown.subscribe();
    loop {
        let interval = shared.member.lock().heartbeat_interval;
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stopped(&mut shutdown) => return,
        }
        let beat = async {
            let member = shared.member_ref();
            let resp = tokio::time::timeout(
                shared.config.session_timeout,
                shared.conn.request(&HeartbeatRequest(member.clone())),
            )
            .await
            .unwrap_or(Err(ClientError::Timeout(shared.config.session_timeout)));
            match resp {
                Ok(r) => shared.update_assignment(&member.member_id, r.generation, r.assignment),
                Err(e) if needs_rejoin(&e) => {
                    if let Err(e) = shared.rejoin(&member.member_id).await {
                        let group = &shared.config.group;
                        tracing::warn!(%group, error = %e, "rejoining failed");
                    }
                }
                Err(e) => {
                    tracing::warn!(group = %shared.config.group, error = %e, "heartbeat failed");
                }
            }
        };
        tokio::select! {
            _ = beat => {}
            _ = stopped(&mut shutdown) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use sluice_protocol::WireError;

    use super::*;

    #[test]
    fn errors_sort_into_rejoin_fatal_and_transient() {
        let broker = |code| ClientError::Broker(WireError::new(code, "x"));
        assert!(needs_rejoin(&broker(ErrorCode::UnknownMember)));
        assert!(!is_fatal(&broker(ErrorCode::UnknownMember)));
        assert!(is_fatal(&broker(ErrorCode::InconsistentGroup)));
        assert!(!is_fatal(&broker(ErrorCode::ShuttingDown)));
        assert!(!is_fatal(&ClientError::Disconnected("gone".into())));
    }
}
