//! Topic admin: create, delete, list, describe, and look up offsets.

use sluice_protocol::ops::{
    CreateTopicRequest, DeleteTopicRequest, DescribeTopicRequest, ListOffsetsRequest,
    ListTopicsRequest, OffsetQuery, OffsetResult, TopicDescription, TopicSummary,
};

use crate::Client;
use crate::error::Result;

impl Client {
    /// Creates a topic; `partitions` 0 takes the broker's default. Settings
    /// are `(key, value)` strings (see docs/storage.md).
    pub async fn create_topic(
        &self,
        name: &str,
        partitions: u32,
        config: &[(&str, &str)],
    ) -> Result<()> {
        self.conn
            .request(&CreateTopicRequest {
                name: name.to_owned(),
                partitions,
                config: config
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            })
            .await?;
        Ok(())
    }

    /// Deletes a topic and its data.
    pub async fn delete_topic(&self, name: &str) -> Result<()> {
        self.conn
            .request(&DeleteTopicRequest {
                name: name.to_owned(),
            })
            .await?;
        Ok(())
    }

    /// Every topic, with its partition count.
    pub async fn list_topics(&self) -> Result<Vec<TopicSummary>> {
        Ok(self.conn.request(&ListTopicsRequest).await?.topics)
    }

    /// One topic's partitions, their offsets and its settings.
    pub async fn describe_topic(&self, name: &str) -> Result<TopicDescription> {
        self.conn
            .request(&DescribeTopicRequest {
                name: name.to_owned(),
            })
            .await
    }

    /// Offsets by query (earliest, latest, by timestamp) per partition,
    /// to seek or to measure lag.
    pub async fn list_offsets(&self, queries: Vec<OffsetQuery>) -> Result<Vec<OffsetResult>> {
        Ok(self
            .conn
            .request(&ListOffsetsRequest { queries })
            .await?
            .results)
    }
}
