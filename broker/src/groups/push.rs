//! Push delivery: a subscription hands a member its messages as soon as it
//! has credit and something is deliverable, woken by the group (acks,
//! redeliveries, reassignment, a member leaving) and by the high
//! watermarks of its partitions, never by a timer. While a subscription is
//! open its member's session does not expire: the connection carrying it
//! is watched by QUIC, and a closed connection removes its members.

use std::sync::Arc;

use sluice_protocol::ops::{GroupBatch, MemberRef};
use tokio_util::sync::CancellationToken;

use super::state::MemberLive;
use super::{GroupError, Groups, Result};

/// Fewest messages one push frame waits for is 1; at most this many go in
/// one.
const MAX_PUSH_BATCH: u32 = 4096;

/// Largest batch one push frame carries.
pub fn push_batch_limit(credit: u32) -> u32 {
    credit.min(MAX_PUSH_BATCH)
}

/// An open push subscription of one member.
#[derive(Debug)]
pub struct Subscription {
    groups: Arc<Groups>,
    member: MemberRef,
    live: Arc<MemberLive>,
    max_bytes: u32,
}

impl Groups {
    /// Opens a push subscription for the member with `credit` messages of
    /// initial credit (what an earlier subscription left is forgotten).
    pub fn subscribe(
        self: &Arc<Self>,
        member: &MemberRef,
        credit: u32,
        max_bytes: u32,
    ) -> Result<Subscription> {
        let live = self.live_member(member)?;
        live.credit.reset(credit);
        live.subscribed();
        Ok(Subscription {
            groups: self.clone(),
            member: member.clone(),
            live,
            max_bytes,
        })
    }
}

impl Subscription {
    /// The next batch to push: waits for credit, then for messages.
    /// `None` when the broker stops; an error when the member is gone.
    pub async fn next(&mut self, shutdown: &CancellationToken) -> Result<Option<GroupBatch>> {
        loop {
            if shutdown.is_cancelled() {
                return Ok(None);
            }
            if self.live.is_gone() {
                return Err(GroupError::UnknownMember {
                    group: self.member.group.clone(),
                    member: self.member.member_id.clone(),
                });
            }
            let available = self.live.credit.available();
            if available == 0 {
                let changed = self.live.credit.changed.notified();
                tokio::pin!(changed);
                changed.as_mut().enable();
                if self.live.credit.available() == 0 && !self.live.is_gone() {
                    tokio::select! {
                        _ = changed => {}
                        _ = shutdown.cancelled() => return Ok(None),
                    }
                }
                continue;
            }
            let batch = self
                .groups
                .wait_for_batch(
                    &self.member,
                    push_batch_limit(available),
                    self.max_bytes,
                    None,
                    shutdown,
                )
                .await?;
            if batch.deliveries.is_empty() {
                continue; // shutdown: said at the top of the loop
            }
            self.live.credit.spend(batch.message_count());
            return Ok(Some(batch));
        }
    }

    /// The member's credit, for grants that arrive on other streams.
    pub fn live(&self) -> &Arc<MemberLive> {
        &self.live
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.live.unsubscribed(self.groups.now());
    }
}
