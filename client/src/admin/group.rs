//! Group admin: describe, list, reset, redrive dead letters, delete.

use sluice_protocol::ops::{
    DeleteGroupRequest, DescribeGroupRequest, GroupRef, ListGroupsRequest, RedriveRequest,
    ResetGroupRequest,
};

use crate::Client;
use crate::error::Result;
use crate::group::{GroupDescription, GroupSummary, RedriveResponse, ResetTo, TopicPartition};

impl Client {
    /// A group's settings, members, and progress per partition.
    pub async fn describe_group(&self, group: &str) -> Result<GroupDescription> {
        self.conn
            .request(&DescribeGroupRequest(GroupRef {
                group: group.to_owned(),
            }))
            .await
    }

    /// Every group the broker knows, with its topic, mode and member count.
    pub async fn list_groups(&self) -> Result<Vec<GroupSummary>> {
        Ok(self.conn.request(&ListGroupsRequest).await?.groups)
    }

    /// Moves a group's position on the given partitions of its topic (all
    /// of them when empty); messages in flight are forgotten. Returns the
    /// new positions.
    ///
    /// ```no_run
    /// # async fn demo(client: sluice_client::Client) -> sluice_client::Result<()> {
    /// use sluice_client::{OffsetSpec, ResetTo};
    /// client.reset_group("billing", &[], ResetTo::Spec(OffsetSpec::Earliest)).await?;
    /// # Ok(()) }
    /// ```
    pub async fn reset_group(
        &self,
        group: &str,
        partitions: &[u32],
        to: ResetTo,
    ) -> Result<Vec<(TopicPartition, u64)>> {
        Ok(self
            .conn
            .request(&ResetGroupRequest {
                group: group.to_owned(),
                partitions: partitions.to_vec(),
                to,
            })
            .await?
            .positions)
    }

    /// Sends up to `max` dead letters (0: all) back to the group through
    /// its retry topic, with their attempts reset.
    pub async fn redrive_dead_letters(&self, group: &str, max: u32) -> Result<RedriveResponse> {
        self.conn
            .request(&RedriveRequest {
                group: group.to_owned(),
                max,
            })
            .await
    }

    /// Forgets a group with no live members. Its retry and dead-letter
    /// topics stay until deleted like any topic.
    pub async fn delete_group(&self, group: &str) -> Result<()> {
        self.conn
            .request(&DeleteGroupRequest(GroupRef {
                group: group.to_owned(),
            }))
            .await?;
        Ok(())
    }
}
