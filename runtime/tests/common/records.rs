//! Records as stored, read by raw fetches: the client's `ConsumedMessage`
//! drops reserved (`sluice.*`) headers, and dead letters, retry copies and
//! function outputs are checked by them.

use std::time::{Duration, Instant};

use sluice_client::{Client, ErrorCode};
use sluice_protocol::batch::BatchIter;
use sluice_protocol::headers;
use sluice_protocol::ops::{FetchPartition, FetchRequest};

use super::client::WAIT;

/// A record as stored, with every header (reserved ones included).
#[derive(Debug, Clone)]
pub struct Record {
    pub partition: u32,
    pub offset: u64,
    pub key: Option<Vec<u8>>,
    /// The value, as text (lossily).
    pub value: String,
    pub headers: Vec<(String, Vec<u8>)>,
}

impl Record {
    /// A header's value as text (lossily).
    pub fn header(&self, name: &str) -> Option<String> {
        self.raw_header(name)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }

    pub fn raw_header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_slice())
    }

    /// The origin of a dead letter or retry copy: topic, partition and
    /// offset (the integers big-endian, as the protocol defines them).
    pub fn origin(&self) -> (Option<String>, Option<u32>, Option<u64>) {
        (
            self.header(headers::ORIGIN_TOPIC),
            self.raw_header(headers::ORIGIN_PARTITION)
                .and_then(|v| v.try_into().ok())
                .map(u32::from_be_bytes),
            self.raw_header(headers::ORIGIN_OFFSET)
                .and_then(|v| v.try_into().ok())
                .map(u64::from_be_bytes),
        )
    }
}

/// Every record of one partition of `topic`, from offset 0 to its high
/// watermark.
pub async fn read_partition(client: &Client, topic: &str, partition: u32) -> Vec<Record> {
    let mut out = Vec::new();
    let mut offset = 0;
    loop {
        let resp = client
            .connection()
            .request(&FetchRequest {
                max_wait_ms: 0,
                min_bytes: 0,
                max_bytes: 8 << 20,
                partitions: vec![FetchPartition {
                    topic: topic.into(),
                    partition,
                    offset,
                    max_bytes: 8 << 20,
                }],
            })
            .await
            .unwrap();
        let p = &resp.partitions[0];
        assert_eq!(p.error, ErrorCode::None, "{}", p.message);
        let before = offset;
        for batch in BatchIter::new(&p.records) {
            for r in batch.unwrap().records() {
                let r = r.unwrap();
                if r.offset < offset {
                    continue;
                }
                offset = r.offset + 1;
                out.push(Record {
                    partition,
                    offset: r.offset,
                    key: r.key.map(<[u8]>::to_vec),
                    value: String::from_utf8_lossy(r.value.unwrap_or_default()).into_owned(),
                    headers: r
                        .headers()
                        .map(|h| {
                            let (k, v) = h.unwrap();
                            (k.to_owned(), v.unwrap_or_default().to_vec())
                        })
                        .collect(),
                });
            }
        }
        if offset == before || offset >= p.high_watermark {
            return out;
        }
    }
}

/// Every record of every partition of `topic`.
pub async fn read_topic(client: &Client, topic: &str) -> Vec<Record> {
    let partitions = client.describe_topic(topic).await.unwrap().partitions.len() as u32;
    let mut out = Vec::new();
    for partition in 0..partitions {
        out.extend(read_partition(client, topic, partition).await);
    }
    out
}

/// Reads `topic` until it holds at least `n` records (or `WAIT` passed).
pub async fn wait_records(client: &Client, topic: &str, n: usize) -> Vec<Record> {
    let deadline = Instant::now() + WAIT;
    loop {
        let got = read_topic(client, topic).await;
        if got.len() >= n || Instant::now() > deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The records' values, sorted.
pub fn sorted_values(records: &[Record]) -> Vec<String> {
    let mut v: Vec<String> = records.iter().map(|r| r.value.clone()).collect();
    v.sort();
    v
}
