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
//! - [`conn`]: connections (TLS, handshake, reconnect), pipelined request
//!   streams, and push streams (one request, many responses); the only
//!   module that touches quinn;
//! - [`producer`]: batching, pipelining, retries, idempotence;
//! - [`consumer`]: assign, seek, long-poll fetch, a `Stream` of messages;
//! - [`group`]: consumer groups ([`Client::group_consumer`]): pull, push
//!   with credit, batched per-message ack and nack, retries, dead letters;
//! - [`delay`]: delayed and loop delivery ([`Client::schedule`]);
//! - [`function`]: WebAssembly functions the broker runs: the manifest
//!   builders ([`FunctionManifest::filter`], [`FunctionManifest::transform`],
//!   [`FunctionManifest::handler`]) and what the broker reports on them;
//! - [`admin`]: every admin call, one file per area: topics
//!   ([`Client::create_topic`], [`Client::list_offsets`], ...), groups
//!   ([`Client::describe_group`], [`Client::reset_group`],
//!   [`Client::redrive_dead_letters`], ...), delays
//!   ([`Client::cancel_delay`], [`Client::list_delays`]) and functions
//!   ([`Client::deploy_function`], [`Client::list_functions`],
//!   [`Client::describe_function`], [`Client::function_logs`],
//!   [`Client::delete_function`], [`Client::rollback_function`]);
//! - [`message`]: the message model (key, value, tags, properties, id);
//! - [`error`]: [`ClientError`], with which errors are worth a retry.

#![warn(missing_docs)]

pub mod admin;
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
    /// Connects and handshakes (see [`Connection::connect`]): fails fast
    /// when the broker is unreachable, untrusted, or refuses the token.
    pub async fn connect(config: ClientConfig) -> Result<Client> {
        Ok(Client {
            conn: Connection::connect(config).await?,
            partitioner: Arc::default(),
        })
    }

    /// The connection underneath, shared by everything this client makes;
    /// for raw requests and for tests that need to break it.
    pub fn connection(&self) -> &Arc<Connection> {
        &self.conn
    }

    /// A producer on a stream of its own, with a producer id of its own
    /// when it is idempotent.
    pub async fn producer(&self, config: ProducerConfig) -> Result<Producer> {
        Producer::new(self.conn.clone(), config).await
    }

    /// A consumer of explicitly assigned partitions (no group); it opens
    /// its stream on first use.
    pub fn consumer(&self, config: ConsumerConfig) -> Consumer {
        Consumer::new(self.conn.clone(), config)
    }

    /// Closes the connection gracefully; in-flight requests fail.
    pub async fn close(&self) {
        self.conn.close().await;
    }
}
