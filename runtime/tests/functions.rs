//! Functions end to end: the sample components deployed on a real broker
//! (in process, temp data dir) through the real client, and crash tests
//! that SIGKILL a broker child process.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use sluice_client::{
    Client, ErrorCode, FunctionManifest, GroupConfig, GroupSettings, Message, OffsetSpec,
    Partitioning, ProducerConfig,
};
use sluice_protocol::batch::BatchIter;
use sluice_protocol::ops::{FetchPartition, FetchRequest};
use sluice_sample_components as components;

use common::Broker;

const WAIT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
struct Record {
    partition: u32,
    offset: u64,
    key: Option<Vec<u8>>,
    value: String,
    headers: Vec<(String, Vec<u8>)>,
}

impl Record {
    fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    }
}

/// Every record of every partition of `topic` (a raw fetch, so reserved
/// headers are kept).
async fn read_topic(client: &Client, topic: &str) -> Vec<Record> {
    let partitions = client.describe_topic(topic).await.unwrap().partitions.len() as u32;
    let mut out = Vec::new();
    for partition in 0..partitions {
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
                break;
            }
        }
    }
    out
}

/// Reads `topic` until it holds at least `n` records (or `WAIT` passed).
async fn wait_records(client: &Client, topic: &str, n: usize) -> Vec<Record> {
    let deadline = Instant::now() + WAIT;
    loop {
        let got = read_topic(client, topic).await;
        if got.len() >= n || Instant::now() > deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn produce(client: &Client, msgs: Vec<Message>) {
    let producer = client.producer(ProducerConfig::default()).await.unwrap();
    for r in producer.send_batch(msgs).await {
        r.unwrap();
    }
}

/// The function's log lines until one contains `needle` (or `WAIT` passed).
async fn wait_log(client: &Client, name: &str, needle: &str) -> Vec<String> {
    let deadline = Instant::now() + WAIT;
    loop {
        let lines: Vec<String> = client
            .function_logs(name, 0, 1000)
            .await
            .unwrap()
            .lines
            .into_iter()
            .map(|l| l.message)
            .collect();
        if lines.iter().any(|l| l.contains(needle)) || Instant::now() > deadline {
            return lines;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[test]
fn pii_transform_redacts_every_input_into_its_output_topic() {
    let broker = Broker::start();
    broker.with_client(async |client| {
        client.create_topic("raw", 2, &[]).await.unwrap();
        client.create_topic("clean", 3, &[]).await.unwrap();
        let manifest =
            FunctionManifest::transform("pii", "raw", ["clean"]).start(OffsetSpec::Earliest);
        let deployed = client
            .deploy_function(manifest, components::bytes(components::PII_REDACT))
            .await
            .unwrap();
        assert_eq!(deployed.version, 1);
        let msgs = (0..200)
            .map(|i| {
                Message::new("raw", format!("order {i} from user{i}@example.com"))
                    .partition(Partitioning::Explicit(i % 2))
            })
            .collect();
        produce(client, msgs).await;
        let out = wait_records(client, "clean", 200).await;
        assert_eq!(out.len(), 200);
        let mut values: Vec<String> = out.iter().map(|r| r.value.clone()).collect();
        values.sort();
        let mut expected: Vec<String> = (0..200).map(|i| format!("order {i} from [email]")).collect();
        expected.sort();
        assert_eq!(values, expected);
        let d = client.describe_function("pii").await.unwrap();
        assert!(d.metrics.invocations > 0);
        assert_eq!(d.metrics.messages, 200);
        assert!(d.metrics.fuel > 0);
        assert_eq!(d.positions.iter().map(|p| p.position).sum::<u64>(), 200);
    });
}

#[test]
fn tag_filter_on_a_group_delivers_only_matching_messages() {
    let broker = Broker::start();
    broker.with_client(async |client| {
        client.create_topic("events", 2, &[]).await.unwrap();
        client
            .deploy_function(
                FunctionManifest::filter("only-red", "reds").config("tags", "red"),
                components::bytes(components::TAG_FILTER),
            )
            .await
            .unwrap();
        let consumer = client
            .group_consumer(
                GroupConfig::new("reds", "events")
                    .start(OffsetSpec::Earliest)
                    .poll_max_wait(Duration::from_millis(100)),
            )
            .await
            .unwrap();
        let msgs = (0..100)
            .map(|i| {
                let tag = if i % 3 == 0 { "red" } else { "blue" };
                Message::new("events", format!("{tag}-{i}"))
                    .tag(tag)
                    .partition(Partitioning::Explicit(i % 2))
            })
            .collect();
        produce(client, msgs).await;
        let mut got = Vec::new();
        let deadline = Instant::now() + WAIT;
        while got.len() < 34 && Instant::now() < deadline {
            for m in consumer.poll().await.unwrap() {
                got.push(String::from_utf8_lossy(&m.value).into_owned());
                m.ack();
            }
        }
        consumer.flush_acks().await.unwrap();
        got.sort();
        let mut expected: Vec<String> = (0..100).filter(|i| i % 3 == 0).map(|i| format!("red-{i}")).collect();
        expected.sort();
        assert_eq!(got, expected);
        // The blue ones are settled for the group: nothing is left.
        let deadline = Instant::now() + WAIT;
        loop {
            let d = client.describe_group("reds").await.unwrap();
            let lag: u64 = d.partitions.iter().map(|p| p.lag).sum();
            if lag == 0 || Instant::now() > deadline {
                assert_eq!(lag, 0, "{d:?}");
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let f = client.describe_function("only-red").await.unwrap();
        assert_eq!(f.metrics.messages, 100);
    });
}

#[test]
fn order_totals_handler_keeps_totals_in_kv_across_a_restart() {
    let mut broker = Broker::start();
    let settings = GroupSettings {
        topic: "orders".into(),
        start: OffsetSpec::Earliest,
        ..GroupSettings::default()
    };
    broker.with_client(async |client| {
        client.create_topic("orders", 1, &[]).await.unwrap();
        client
            .deploy_function(
                FunctionManifest::handler("totals", "totals", settings.clone()),
                components::bytes(components::ORDER_TOTALS),
            )
            .await
            .unwrap();
        let msgs = [("ann", 10.0), ("bob", 5.0), ("ann", 2.5)]
            .iter()
            .map(|(c, a)| Message::new("orders", format!(r#"{{"customer":"{c}","amount":{a}}}"#)))
            .collect();
        produce(client, msgs).await;
        let lines = wait_log(client, "totals", "12.5").await;
        assert!(lines.iter().any(|l| l.contains("ann") && l.contains("12.5")), "{lines:?}");
    });
    broker.restart();
    broker.with_client(async |client| {
        produce(client, vec![Message::new("orders", r#"{"customer":"ann","amount":1}"#)]).await;
        let lines = wait_log(client, "totals", "13.5").await;
        assert!(lines.iter().any(|l| l.contains("ann") && l.contains("13.5")), "{lines:?}");
    });
}
