//! Consumer groups: members share a topic's messages, the broker tracks
//! what each member has in flight, and members settle every message with
//! an ack (done) or a nack (retry later, or dead-letter).
//!
//! ```no_run
//! # async fn demo(client: sluice_client::Client) -> sluice_client::Result<()> {
//! use futures::StreamExt;
//! use sluice_client::GroupConfig;
//!
//! // Pull: long-poll for what is ready.
//! let consumer = client.group_consumer(GroupConfig::new("billing", "orders")).await?;
//! for m in consumer.poll().await? {
//!     if m.value.is_empty() {
//!         m.dead_letter("empty order");
//!     } else {
//!         m.ack();
//!     }
//! }
//!
//! // Push: the broker streams messages as long as the local buffer has room.
//! let mut messages = consumer.subscribe();
//! while let Some(m) = messages.next().await {
//!     let m = m?;
//!     println!("{}/{}@{} attempt {}", m.topic, m.partition, m.offset, m.attempt());
//!     m.ack();
//! }
//! # Ok(()) }
//! ```
//!
//! The broker owns the delivery state; the client only keeps membership
//! alive (join, heartbeat, rejoin when the broker forgot the member) and
//! says what it finished. Settling a message is cheap and synchronous:
//! acks and nacks are queued and sent in one request per
//! [`GroupConfig::ack_batch`] messages or per [`GroupConfig::ack_interval`],
//! whichever comes first, with consecutive offsets coalesced into ranges,
//! so acking each message costs no round trip. A message dropped without
//! being settled is delivered again once the group's ack timeout passes.
//!
//! Messages that failed before come back through the group's retry topic;
//! they show the topic, partition and offset they were first consumed
//! from, while their ack goes to where they were actually delivered from
//! ([`GroupMessage::delivered_from`]).
//!
//! The module by concern: [`config`](GroupConfig) (how to join),
//! `message` (what a member receives and how it is settled), `acks` (the
//! queue of settlements) and `settle` (sending them), `member` (join,
//! heartbeat, rejoin), `consumer` (joining and polling) and `push` (the
//! subscription and its [`GroupStream`]). The group admin calls
//! ([`Client::describe_group`](crate::Client::describe_group) and the rest)
//! are in [`crate::admin`].

mod acks;
mod config;
mod consumer;
mod member;
mod message;
mod push;
mod settle;

pub use acks::AckStats;
pub use config::GroupConfig;
pub use consumer::GroupConsumer;
pub use message::{AckHandle, GroupMessage};
pub use push::GroupStream;
pub use sluice_protocol::ops::group::{dead_letter_topic, retry_topic};
pub use sluice_protocol::ops::{
    GroupDescription, GroupMode, GroupSettings, GroupSummary, MemberDescription, PartitionLag,
    RedriveResponse, ResetTo, TopicPartition,
};

/// Builders the unit tests of several files of this module share.
#[cfg(test)]
mod test_support {
    use std::sync::Arc;

    use sluice_protocol::ops::{OffsetRange, TopicPartition};

    pub fn tp(topic: &str, partition: u32) -> Arc<TopicPartition> {
        Arc::new(TopicPartition {
            topic: topic.into(),
            partition,
        })
    }

    pub fn range(first_offset: u64, count: u32) -> OffsetRange {
        OffsetRange {
            first_offset,
            count,
        }
    }
}
