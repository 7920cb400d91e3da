//! The consumer (without groups): assign partitions, seek, poll.
//!
//! A consumer keeps a position per assigned partition and fetches from all
//! of them in one long-poll request: the broker answers as soon as any has
//! data, or after `max_wait`. Messages come back in offset order per
//! partition.

use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use sluice_protocol::batch::BatchIter;
use sluice_protocol::ops::{
    DescribeTopicRequest, FetchPartition, FetchRequest, ListOffsetsRequest, OffsetQuery, OffsetSpec,
};
use sluice_protocol::{ErrorCode, WireError};

use crate::conn::{Connection, RequestStream};
use crate::error::{ClientError, Result};
use crate::message::ConsumedMessage;

/// Consumer settings.
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// Longest a poll waits for new messages.
    pub max_wait: Duration,
    /// Byte budget per partition per fetch.
    pub max_partition_bytes: u32,
    /// Byte budget per fetch.
    pub max_bytes: u32,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        ConsumerConfig {
            max_wait: Duration::from_millis(500),
            max_partition_bytes: 1 << 20,
            max_bytes: 8 << 20,
        }
    }
}

/// Where to start reading a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeekTo {
    /// The oldest message still kept.
    Earliest,
    /// Only messages appended from now on.
    Latest,
    /// This offset (clamped by the broker to what is kept).
    Offset(u64),
    /// The first message at or after this time (ms since the epoch).
    Timestamp(i64),
}

#[derive(Debug, Clone)]
struct Assignment {
    topic: String,
    partition: u32,
    position: u64,
}

/// Reads assigned partitions.
#[derive(Debug)]
pub struct Consumer {
    conn: Arc<Connection>,
    stream: Option<Arc<RequestStream>>,
    config: ConsumerConfig,
    assigned: Vec<Assignment>,
}

impl Consumer {
    pub(crate) fn new(conn: Arc<Connection>, config: ConsumerConfig) -> Consumer {
        Consumer {
            conn,
            stream: None,
            config,
            assigned: Vec::new(),
        }
    }

    /// Assigns partitions of `topic` (all of them when `partitions` is
    /// empty), each starting at `start`.
    pub async fn assign(&mut self, topic: &str, partitions: &[u32], start: SeekTo) -> Result<()> {
        let partitions = if partitions.is_empty() {
            let desc = self
                .conn
                .request(&DescribeTopicRequest {
                    name: topic.to_owned(),
                })
                .await?;
            desc.partitions.iter().map(|p| p.partition).collect()
        } else {
            partitions.to_vec()
        };
        for p in partitions {
            self.assigned
                .retain(|a| !(a.topic == topic && a.partition == p));
            self.assigned.push(Assignment {
                topic: topic.to_owned(),
                partition: p,
                position: 0,
            });
            self.seek(topic, p, start).await?;
        }
        Ok(())
    }

    /// The assigned (topic, partition, next offset) triples.
    pub fn positions(&self) -> Vec<(String, u32, u64)> {
        self.assigned
            .iter()
            .map(|a| (a.topic.clone(), a.partition, a.position))
            .collect()
    }

    /// Moves an assigned partition's position.
    pub async fn seek(&mut self, topic: &str, partition: u32, to: SeekTo) -> Result<()> {
        let position = match to {
            SeekTo::Offset(o) => o,
            SeekTo::Earliest => self.lookup(topic, partition, OffsetSpec::Earliest).await?,
            SeekTo::Latest => self.lookup(topic, partition, OffsetSpec::Latest).await?,
            SeekTo::Timestamp(t) => {
                self.lookup(topic, partition, OffsetSpec::Timestamp(t.max(0)))
                    .await?
            }
        };
        let a = self
            .assigned
            .iter_mut()
            .find(|a| a.topic == topic && a.partition == partition)
            .ok_or_else(|| ClientError::Config(format!("{topic}/{partition} is not assigned")))?;
        a.position = position;
        Ok(())
    }

    async fn lookup(&self, topic: &str, partition: u32, spec: OffsetSpec) -> Result<u64> {
        let resp = self
            .conn
            .request(&ListOffsetsRequest {
                queries: vec![OffsetQuery {
                    topic: topic.to_owned(),
                    partition,
                    spec,
                }],
            })
            .await?;
        let r = resp.results.into_iter().next().ok_or_else(|| {
            ClientError::Broker(WireError::new(
                ErrorCode::Internal,
                "empty list-offsets response",
            ))
        })?;
        if r.error != ErrorCode::None {
            return Err(ClientError::Broker(WireError::new(r.error, r.message)));
        }
        Ok(r.offset)
    }

    async fn stream(&mut self) -> Result<Arc<RequestStream>> {
        if let Some(s) = &self.stream
            && !s.is_closed()
        {
            return Ok(s.clone());
        }
        let s = self.conn.open_stream().await?;
        self.stream = Some(s.clone());
        Ok(s)
    }

    /// Fetches what is available, waiting up to `max_wait` for anything.
    /// An empty result means nothing arrived in time.
    pub async fn poll(&mut self) -> Result<Vec<ConsumedMessage>> {
        if self.assigned.is_empty() {
            return Err(ClientError::Config("no partitions assigned".into()));
        }
        let req = FetchRequest {
            max_wait_ms: self.config.max_wait.as_millis() as u32,
            min_bytes: 1,
            max_bytes: self.config.max_bytes,
            partitions: self
                .assigned
                .iter()
                .map(|a| FetchPartition {
                    topic: a.topic.clone(),
                    partition: a.partition,
                    offset: a.position,
                    max_bytes: self.config.max_partition_bytes,
                })
                .collect(),
        };
        let stream = self.stream().await?;
        let resp = match stream.request(&req, Some(self.config.max_wait)).await {
            Err(e @ ClientError::Disconnected(_)) => {
                self.stream = None;
                return Err(e);
            }
            other => other?,
        };
        let mut out = Vec::new();
        for r in resp.partitions {
            if r.error != ErrorCode::None {
                return Err(ClientError::Broker(WireError::new(
                    r.error,
                    format!("{}/{}: {}", r.topic, r.partition, r.message),
                )));
            }
            let Some(a) = self
                .assigned
                .iter_mut()
                .find(|a| a.topic == r.topic && a.partition == r.partition)
            else {
                continue;
            };
            for batch in BatchIter::new(&r.records) {
                let batch = batch.map_err(|e| ClientError::Corrupt(e.to_string()))?;
                for record in batch.records() {
                    let record = record.map_err(|e| ClientError::Corrupt(e.to_string()))?;
                    if record.offset < a.position {
                        continue;
                    }
                    out.push(ConsumedMessage::from_record(
                        &a.topic,
                        a.partition,
                        &r.records,
                        &record,
                    ));
                    a.position = record.offset + 1;
                }
                // Skip past batches whose records were all below the position.
                a.position = a.position.max(batch.header().next_offset());
            }
        }
        Ok(out)
    }

    /// Messages as a stream, polling as needed. Ends only on error.
    pub fn into_stream(self) -> impl Stream<Item = Result<ConsumedMessage>> {
        futures::stream::unfold(
            (self, std::collections::VecDeque::new()),
            |(mut consumer, mut buffered)| async move {
                loop {
                    if let Some(m) = buffered.pop_front() {
                        return Some((Ok(m), (consumer, buffered)));
                    }
                    match consumer.poll().await {
                        Ok(batch) => buffered.extend(batch),
                        Err(e) => return Some((Err(e), (consumer, buffered))),
                    }
                }
            },
        )
    }
}
