//! Dispatch: what the broker does with each decoded request.
//!
//! This is the layer between the network shell (`net`) and storage
//! (`store`, `log`): it knows ops and payloads, sessions and limits, not
//! sockets. Every request goes through one exhaustive match,
//! [`Broker::dispatch`]. A produce goes net → dispatch →
//! [`Broker::produce_write`] (in stream order) → [`Broker::produce_complete`]
//! (waits for durability) → back to net.

mod delay;
mod dispatch;
pub mod errors;
mod function;
mod group;

pub use dispatch::{Answer, Caller, Dispatched};
pub use errors::ToWire;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use sluice_protocol::ops::{
    CreateTopicRequest, DeleteTopicRequest, DescribeTopicRequest, FetchRequest, FetchResponse,
    FetchResult, HandshakeRequest, HandshakeResponse, ListOffsetsRequest, ListOffsetsResponse,
    ListTopicsResponse, MIN_PROTOCOL_VERSION, OffsetResult, OffsetSpec, PROTOCOL_VERSION,
    PartitionDescription, ProduceRequest, ProduceResponse, ProduceResult, TopicDescription,
    TopicSummary,
};
use sluice_protocol::{ErrorCode, WireError};
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::config::BrokerConfig;
use crate::functions::Functions;
use crate::groups::Groups;
use crate::log::{DurabilityParseError, Partition, PendingAppend, TopicConfig};
use crate::sched::Scheduler;
use crate::store::{Store, StoreError};
use errors::to_wire;

/// What the broker enforces and announces, taken from the configuration.
#[derive(Debug, Clone)]
pub struct BrokerSettings {
    /// The configuration the settings came from (tokens live here).
    pub config: BrokerConfig,
    /// Settings a topic gets unless its creator says otherwise.
    pub topic_defaults: TopicConfig,
}

impl BrokerSettings {
    pub fn from_config(config: &BrokerConfig) -> Result<BrokerSettings, SettingsError> {
        let topic_defaults = TopicConfig {
            partitions: config.topic_defaults.partitions,
            durability: config
                .topic_defaults
                .durability
                .parse()
                .map_err(SettingsError::Durability)?,
            max_batch_bytes: config.limits.max_message_bytes,
            ..TopicConfig::default()
        };
        Ok(BrokerSettings {
            config: config.clone(),
            topic_defaults,
        })
    }

    /// Largest record batch the broker accepts.
    pub fn max_message_bytes(&self) -> u32 {
        self.config.limits.max_message_bytes
    }

    /// Whether `token` may connect (empty = anonymous).
    pub fn accepts_token(&self, token: &str) -> bool {
        self.config.accepts_token(token)
    }
}

/// Why [`BrokerSettings::from_config`] refused a configuration (one that
/// [`BrokerConfig::validate`] would have refused too).
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("topic_defaults.durability: {0}")]
    Durability(#[source] DurabilityParseError),
}

/// Who is on the other end of a connection, once its handshake succeeded.
#[derive(Debug, Clone)]
pub struct Session {
    pub client_id: String,
    pub version: u16,
}

/// The broker: storage plus the rules for using it.
#[derive(Debug)]
pub struct Broker {
    store: Arc<Store>,
    scheduler: Arc<Scheduler>,
    groups: Arc<Groups>,
    functions: Arc<Functions>,
    clock: Arc<dyn Clock>,
    settings: BrokerSettings,
    shutdown: CancellationToken,
    closed: AtomicBool,
}

/// One produce entry after its write: either written (waiting for
/// durability) or already answered.
#[derive(Debug)]
pub enum WrittenEntry {
    Pending {
        topic: String,
        partition: Arc<Partition>,
        pending: PendingAppend,
    },
    Done(ProduceResult),
}

impl Broker {
    pub fn new(
        store: Arc<Store>,
        scheduler: Arc<Scheduler>,
        clock: Arc<dyn Clock>,
        settings: BrokerSettings,
    ) -> Broker {
        let groups = Arc::new(Groups::new(
            store.clone(),
            scheduler.clone(),
            clock.clone(),
            &settings.topic_defaults,
        ));
        let shutdown = CancellationToken::new();
        let functions = Arc::new(Functions::new(
            store.clone(),
            groups.clone(),
            scheduler.clone(),
            clock.clone(),
            shutdown.clone(),
        ));
        Broker {
            store,
            scheduler,
            groups,
            functions,
            clock,
            settings,
            shutdown,
            closed: AtomicBool::new(false),
        }
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    pub fn scheduler(&self) -> &Arc<Scheduler> {
        &self.scheduler
    }

    pub fn settings(&self) -> &BrokerSettings {
        &self.settings
    }

    /// Cancelled when the broker starts shutting down: long polls return.
    pub fn shutdown_token(&self) -> &CancellationToken {
        &self.shutdown
    }

    /// Flushes and checkpoints the log once; later calls do nothing.
    pub fn close(&self) -> Result<(), StoreError> {
        self.shutdown.cancel();
        if self.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        if let Err(e) = self.groups.flush() {
            tracing::warn!(error = %e, "could not commit group offsets at shutdown");
        }
        self.store.close()
    }

    // ------------------------------------------------------------ handshake

    pub async fn handshake(
        &self,
        req: HandshakeRequest,
    ) -> Result<(Session, HandshakeResponse), WireError> {
        if req.version < MIN_PROTOCOL_VERSION {
            return Err(WireError::new(
                ErrorCode::UnsupportedVersion,
                format!(
                    "client speaks protocol {} but this broker needs {MIN_PROTOCOL_VERSION}..={PROTOCOL_VERSION}",
                    req.version
                ),
            ));
        }
        if !self.settings.accepts_token(&req.token) {
            let message = if req.token.is_empty() {
                "this broker requires a token (anonymous access is off)"
            } else {
                "the token was not accepted"
            };
            return Err(WireError::new(ErrorCode::AuthenticationFailed, message));
        }
        let producer_id = if req.want_producer_id {
            self.store
                .meta()
                .call(|m| m.allocate_producer_id())
                .await
                .map_err(to_wire)?
        } else {
            -1
        };
        let version = req.version.min(PROTOCOL_VERSION);
        let session = Session {
            client_id: req.client_id,
            version,
        };
        let response = HandshakeResponse {
            version,
            server: format!("sluice {}", env!("CARGO_PKG_VERSION")),
            producer_id,
            producer_epoch: if producer_id >= 0 { 0 } else { -1 },
            max_frame_bytes: self.settings.config.limits.max_frame_bytes,
            max_message_bytes: self.settings.max_message_bytes(),
        };
        Ok((session, response))
    }

    // ------------------------------------------------------------ topics

    pub async fn create_topic(&self, req: CreateTopicRequest) -> Result<(), WireError> {
        if req
            .name
            .starts_with(sluice_protocol::ops::group::INTERNAL_TOPIC_PREFIX)
        {
            return Err(WireError::new(
                ErrorCode::InvalidConfig,
                format!(
                    "topic names starting with {:?} are reserved for the broker's own topics",
                    sluice_protocol::ops::group::INTERNAL_TOPIC_PREFIX
                ),
            ));
        }
        let mut config = self.settings.topic_defaults.clone();
        if req.partitions > 0 {
            config.partitions = req.partitions;
        }
        for (k, v) in &req.config {
            config.set(k, v).map_err(to_wire)?;
        }
        config.max_batch_bytes = config
            .max_batch_bytes
            .min(self.settings.max_message_bytes());
        let store = self.store.clone();
        let name = req.name.clone();
        blocking(move || store.create_topic(&req.name, config).map(|_| ()))
            .await?
            .map_err(to_wire)?;
        self.groups.topic_changed(&name);
        Ok(())
    }

    pub async fn delete_topic(&self, req: DeleteTopicRequest) -> Result<(), WireError> {
        let store = self.store.clone();
        let groups = self.groups.clone();
        blocking(move || groups.deleting_topic(&req.name, || store.delete_topic(&req.name)))
            .await?
            .map_err(to_wire)
    }

    pub fn list_topics(&self) -> ListTopicsResponse {
        let mut topics: Vec<_> = self
            .store
            .log()
            .topics()
            .iter()
            .map(|t| TopicSummary {
                name: t.name().to_owned(),
                partitions: t.partitions().len() as u32,
            })
            .collect();
        topics.sort_by(|a, b| a.name.cmp(&b.name));
        ListTopicsResponse { topics }
    }

    pub fn describe_topic(&self, req: DescribeTopicRequest) -> Result<TopicDescription, WireError> {
        let topic = self.store.log().topic(&req.name).map_err(to_wire)?;
        Ok(TopicDescription {
            name: topic.name().to_owned(),
            config: topic.config().to_pairs(),
            partitions: topic
                .partitions()
                .iter()
                .map(|p| PartitionDescription {
                    partition: p.id(),
                    log_start_offset: p.log_start_offset(),
                    high_watermark: p.high_watermark(),
                    size_bytes: p.size_bytes(),
                    segments: p.segment_count() as u32,
                })
                .collect(),
        })
    }

    // ------------------------------------------------------------ produce

    /// Checks and writes every entry, in order, to the page cache. Called
    /// inline by the stream that received the request, so one stream's
    /// batches reach each partition in the order they were sent (which an
    /// idempotent producer's sequence numbers require).
    pub fn produce_write(&self, req: ProduceRequest) -> Vec<WrittenEntry> {
        req.entries
            .into_iter()
            .map(|e| {
                let partition = match self.store.log().partition(&e.topic, e.partition) {
                    Ok(p) => p,
                    Err(err) => {
                        return WrittenEntry::Done(failed(e.topic, e.partition, err.to_wire()));
                    }
                };
                if e.batch.len() > self.settings.max_message_bytes() as usize {
                    let err = WireError::new(
                        ErrorCode::MessageTooLarge,
                        format!(
                            "batch of {} bytes is over the broker's limit of {} bytes",
                            e.batch.len(),
                            self.settings.max_message_bytes()
                        ),
                    );
                    return WrittenEntry::Done(failed(e.topic, e.partition, err));
                }
                // The log patches offsets into the batch: it needs its own copy.
                match partition.write_batch(BytesMut::from(&e.batch[..])) {
                    Ok(pending) => WrittenEntry::Pending {
                        topic: e.topic,
                        partition,
                        pending,
                    },
                    Err(err) => WrittenEntry::Done(failed(e.topic, e.partition, err.to_wire())),
                }
            })
            .collect()
    }

    /// Waits until the written entries are durable and builds the response.
    pub async fn produce_complete(&self, written: Vec<WrittenEntry>) -> ProduceResponse {
        let needs_wait = written
            .iter()
            .any(|w| matches!(w, WrittenEntry::Pending { .. }));
        let results = if needs_wait {
            // Under `sync` this blocks on the group commit: off the async workers.
            blocking(move || written.into_iter().map(wait_durable).collect())
                .await
                .unwrap_or_else(|err| vec![failed(String::new(), 0, err)])
        } else {
            written.into_iter().map(wait_durable).collect()
        };
        ProduceResponse { results }
    }

    // ------------------------------------------------------------ fetch

    /// Reads every asked partition; when fewer than `min_bytes` are ready,
    /// waits for new data (any asked partition's high watermark moving) up
    /// to `max_wait_ms`, or until shutdown.
    pub async fn fetch(&self, req: FetchRequest) -> FetchResponse {
        let deadline = tokio::time::Instant::now() + Duration::from_millis(req.max_wait_ms as u64);
        let mut watches: Vec<_> = req
            .partitions
            .iter()
            .filter_map(|p| self.store.log().partition(&p.topic, p.partition).ok())
            .map(|p| p.watch_high_watermark())
            .collect();
        loop {
            for w in &mut watches {
                w.borrow_and_update();
            }
            let response = self.read_once(&req).await;
            let bytes: usize = response.partitions.iter().map(|p| p.records.len()).sum();
            let any_error = response
                .partitions
                .iter()
                .any(|p| p.error != ErrorCode::None);
            if bytes >= req.min_bytes as usize
                || any_error
                || watches.is_empty()
                || tokio::time::Instant::now() >= deadline
                || self.shutdown.is_cancelled()
            {
                return response;
            }
            let changed =
                futures::future::select_all(watches.iter_mut().map(|w| Box::pin(w.changed())));
            tokio::select! {
                _ = changed => {}
                _ = tokio::time::sleep_until(deadline) => {}
                _ = self.shutdown.cancelled() => {}
            }
        }
    }

    async fn read_once(&self, req: &FetchRequest) -> FetchResponse {
        let store = self.store.clone();
        let req = req.clone();
        let read = tokio::task::spawn_blocking(move || {
            let mut budget = req.max_bytes as usize;
            let mut out = Vec::with_capacity(req.partitions.len());
            for p in &req.partitions {
                // Once the response budget is spent, the rest get no records
                // (the first partition always gets at least one batch).
                let result = store
                    .log()
                    .partition(&p.topic, p.partition)
                    .and_then(|part| {
                        if budget == 0 {
                            part.read(part.high_watermark(), 1)
                        } else {
                            part.read(p.offset, (p.max_bytes as usize).min(budget))
                        }
                    });
                out.push(match result {
                    Ok(r) => {
                        let records: Bytes = if r.chunks.len() == 1 {
                            r.chunks.into_iter().next().unwrap_or_default()
                        } else {
                            r.chunks.concat().into()
                        };
                        budget = budget.saturating_sub(records.len());
                        FetchResult {
                            topic: p.topic.clone(),
                            partition: p.partition,
                            error: ErrorCode::None,
                            message: String::new(),
                            high_watermark: r.high_watermark,
                            log_start_offset: r.log_start_offset,
                            records,
                        }
                    }
                    Err(e) => {
                        let (hw, start) = store
                            .log()
                            .partition(&p.topic, p.partition)
                            .map_or((0, 0), |part| {
                                (part.high_watermark(), part.log_start_offset())
                            });
                        let err = e.to_wire();
                        FetchResult {
                            topic: p.topic.clone(),
                            partition: p.partition,
                            error: err.code,
                            message: err.message,
                            high_watermark: hw,
                            log_start_offset: start,
                            records: Bytes::new(),
                        }
                    }
                });
            }
            out
        })
        .await;
        FetchResponse {
            partitions: read.unwrap_or_default(),
        }
    }

    // ------------------------------------------------------------ offsets

    pub async fn list_offsets(&self, req: ListOffsetsRequest) -> ListOffsetsResponse {
        let store = self.store.clone();
        let results = tokio::task::spawn_blocking(move || {
            req.queries
                .into_iter()
                .map(|q| {
                    let offset = store.log().partition(&q.topic, q.partition).and_then(|p| {
                        Ok(match q.spec {
                            OffsetSpec::Earliest => p.log_start_offset(),
                            OffsetSpec::Latest => p.high_watermark(),
                            OffsetSpec::Timestamp(t) => p
                                .offset_for_timestamp(t)?
                                .unwrap_or_else(|| p.high_watermark()),
                        })
                    });
                    match offset {
                        Ok(offset) => OffsetResult {
                            topic: q.topic,
                            partition: q.partition,
                            error: ErrorCode::None,
                            message: String::new(),
                            offset,
                        },
                        Err(e) => {
                            let err = e.to_wire();
                            OffsetResult {
                                topic: q.topic,
                                partition: q.partition,
                                error: err.code,
                                message: err.message,
                                offset: 0,
                            }
                        }
                    }
                })
                .collect()
        })
        .await
        .unwrap_or_default();
        ListOffsetsResponse { results }
    }
}

fn wait_durable(w: WrittenEntry) -> ProduceResult {
    match w {
        WrittenEntry::Done(r) => r,
        WrittenEntry::Pending {
            topic,
            partition,
            pending,
        } => match partition.wait_durable(&pending) {
            Ok(()) => ProduceResult {
                topic,
                partition: partition.id(),
                error: ErrorCode::None,
                message: String::new(),
                base_offset: pending.info.base_offset,
                last_offset: pending.info.last_offset,
                log_append_time: pending.info.log_append_time.unwrap_or(-1),
                duplicate: pending.info.duplicate,
            },
            Err(e) => failed(topic, partition.id(), e.to_wire()),
        },
    }
}

fn failed(topic: String, partition: u32, err: WireError) -> ProduceResult {
    ProduceResult {
        topic,
        partition,
        error: err.code,
        message: err.message,
        base_offset: 0,
        last_offset: 0,
        log_append_time: -1,
        duplicate: false,
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, WireError> {
    tokio::task::spawn_blocking(f).await.map_err(to_wire)
}
