//! Choosing a message's partition, shared by the producer and scheduled
//! (delayed) messages so both land a key on the same partition.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};

use parking_lot::Mutex;
use sluice_protocol::ops::DescribeTopicRequest;

use crate::conn::Connection;
use crate::error::Result;
use crate::message::{Message, Partitioning};

/// Picks partitions as [`Partitioning`] says; caches each topic's partition
/// count (asked of the broker the first time a topic needs it).
#[derive(Debug)]
pub(crate) struct Partitioner {
    partition_counts: Mutex<HashMap<String, u32>>,
    round_robin: AtomicU32,
}

impl Default for Partitioner {
    fn default() -> Self {
        Partitioner {
            partition_counts: Mutex::default(),
            round_robin: AtomicU32::new(rand::random()),
        }
    }
}

impl Partitioner {
    async fn partition_count(&self, conn: &Connection, topic: &str) -> Result<u32> {
        if let Some(n) = self.partition_counts.lock().get(topic) {
            return Ok(*n);
        }
        let desc = conn
            .request(&DescribeTopicRequest {
                name: topic.to_owned(),
            })
            .await?;
        let n = desc.partitions.len() as u32;
        self.partition_counts.lock().insert(topic.to_owned(), n);
        Ok(n)
    }

    /// The partition `msg` goes to, by its `partitioning` and key.
    pub(crate) async fn partition_for(&self, conn: &Connection, msg: &Message) -> Result<u32> {
        let choice = match (msg.partitioning, &msg.key) {
            (Partitioning::Explicit(p), _) => return Ok(p),
            (Partitioning::Auto, Some(_)) | (Partitioning::ByKey, _) => Partitioning::ByKey,
            _ => Partitioning::RoundRobin,
        };
        let n = self.partition_count(conn, &msg.topic).await?.max(1);
        Ok(match (choice, &msg.key) {
            (Partitioning::ByKey, Some(key)) => crc32c::crc32c(key) % n,
            (Partitioning::ByKey, None) => 0,
            _ => self.round_robin.fetch_add(1, Ordering::Relaxed) % n,
        })
    }
}
