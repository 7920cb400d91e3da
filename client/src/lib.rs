//! Async Rust client for the Sluice broker over QUIC.
//!
//! ```no_run
//! # async fn demo() -> Result<(), sluice_client::ClientError> {
//! use sluice_client::{Client, ClientConfig, Message, SeekTo};
//! let client = Client::connect(
//!     ClientConfig::new("127.0.0.1:7420").ca_cert("sluice-data/tls/cert.pem"),
//! )
//! .await?;
//! client.create_topic("orders", 3, &[]).await?;
//! let producer = client.producer(Default::default()).await?;
//! let delivery = producer.send(Message::new("orders", "hello").key("customer-7")).await?;
//! let mut consumer = client.consumer(Default::default());
//! consumer.assign("orders", &[delivery.partition], SeekTo::Earliest).await?;
//! let messages = consumer.poll().await?;
//! # Ok(()) }
//! ```
//!
//! - [`conn`]: connections (TLS, handshake, reconnect) and pipelined request streams;
//! - [`producer`]: batching, pipelining, retries, idempotence;
//! - [`consumer`]: assign, seek, long-poll fetch, a `Stream` of messages;
//! - [`group`]: consumer groups ([`Client::group_consumer`]): pull, push
//!   with credit, batched per-message ack and nack, retries, dead letters,
//!   and the group admin calls;
//! - [`delay`]: delayed and loop delivery ([`Client::schedule`],
//!   [`Client::cancel_delay`], [`Client::list_delays`]);
//! - [`function`]: WebAssembly functions the broker runs
//!   ([`Client::deploy_function`], [`Client::list_functions`],
//!   [`Client::describe_function`], [`Client::function_logs`],
//!   [`Client::delete_function`], [`Client::rollback_function`]) and the
//!   manifest builders ([`FunctionManifest::filter`],
//!   [`FunctionManifest::transform`], [`FunctionManifest::handler`]);
//! - [`message`]: the message model (key, value, tags, properties, id);
//! - [`error`]: [`ClientError`], with which errors are worth a retry.

pub mod conn;
pub mod consumer;
pub mod delay;
pub mod error;
pub mod function;
pub mod group;
pub mod message;
mod partition;
pub mod producer;

use std::sync::Arc;

use sluice_protocol::ops::{
    CreateTopicRequest, DeleteTopicRequest, DescribeTopicRequest, ListOffsetsRequest,
    ListTopicsRequest, OffsetQuery, OffsetResult, TopicDescription, TopicSummary,
};

use crate::partition::Partitioner;

pub use conn::{ClientConfig, Connection};
pub use consumer::{Consumer, ConsumerConfig, SeekTo};
pub use delay::{
    CancelOutcome, CancelResult, DelaySummary, DelayedMessage, Loop, LoopBackoff, LoopSpec,
    Scheduled, When,
};
pub use error::{ClientError, Result};
pub use function::{
    Attach, DeployFunctionResponse, FunctionDescription, FunctionKind, FunctionLimitsSpec,
    FunctionLogLine, FunctionLogsResponse, FunctionManifest, FunctionMetrics, FunctionPosition,
    FunctionSummary, FunctionVersion, LogLevel,
};
pub use group::{
    AckHandle, AckStats, GroupConfig, GroupConsumer, GroupDescription, GroupMessage, GroupMode,
    GroupSettings, GroupStream, GroupSummary, MemberDescription, PartitionLag, RedriveResponse,
    ResetTo, TopicPartition,
};
pub use message::{ConsumedMessage, Message, MessageId, Origin, Partitioning};
pub use producer::{Delivery, DeliveryFuture, Producer, ProducerConfig};
pub use sluice_protocol::ops::OffsetSpec;
pub use sluice_protocol::{ErrorCode, WireError};

/// A connection to a broker, with admin calls; makes producers, consumers
/// and group consumers (see [`group`]) and schedules delayed messages (see
/// [`delay`]).
#[derive(Debug, Clone)]
pub struct Client {
    conn: Arc<Connection>,
    /// For scheduled messages; each producer has its own.
    partitioner: Arc<Partitioner>,
}

impl Client {
    pub async fn connect(config: ClientConfig) -> Result<Client> {
        Ok(Client {
            conn: Connection::connect(config).await?,
            partitioner: Arc::default(),
        })
    }

    pub fn connection(&self) -> &Arc<Connection> {
        &self.conn
    }

    pub async fn producer(&self, config: ProducerConfig) -> Result<Producer> {
        Producer::new(self.conn.clone(), config).await
    }

    pub fn consumer(&self, config: ConsumerConfig) -> Consumer {
        Consumer::new(self.conn.clone(), config)
    }

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

    pub async fn delete_topic(&self, name: &str) -> Result<()> {
        self.conn
            .request(&DeleteTopicRequest {
                name: name.to_owned(),
            })
            .await?;
        Ok(())
    }

    pub async fn list_topics(&self) -> Result<Vec<TopicSummary>> {
        Ok(self.conn.request(&ListTopicsRequest).await?.topics)
    }

    pub async fn describe_topic(&self, name: &str) -> Result<TopicDescription> {
        self.conn
            .request(&DescribeTopicRequest {
                name: name.to_owned(),
            })
            .await
    }

    pub async fn list_offsets(&self, queries: Vec<OffsetQuery>) -> Result<Vec<OffsetResult>> {
        Ok(self
            .conn
            .request(&ListOffsetsRequest { queries })
            .await?
            .results)
    }

    pub async fn close(&self) {
        self.conn.close().await;
    }
}
