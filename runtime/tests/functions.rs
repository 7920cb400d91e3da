//! Functions end to end: the sample components deployed on a real broker
//! (in process, temp data dir) through the real client, and crash tests
//! that SIGKILL a broker child process.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use sluice_client::{
    Client, ClientConfig, ClientError, ErrorCode, FunctionDescription, FunctionManifest,
    GroupConfig, GroupConsumer, GroupSettings, Message, OffsetSpec, Partitioning, ProducerConfig,
};
use sluice_protocol::batch::BatchIter;
use sluice_protocol::headers;
use sluice_protocol::ops::{FetchPartition, FetchRequest};
use sluice_runtime::clock::ManualClock;
use sluice_runtime::functions::dead_letter_topic as fn_dead_letter_topic;
use sluice_sample_components as components;

use common::Broker;

const WAIT: Duration = Duration::from_secs(30);
/// Where manual clocks start.
const T0: i64 = 1_700_000_000_000;

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

// ------------------------------------------------------------------ helpers

/// Polls `check` until it returns `Ok` (or `WAIT` passed: then fails with
/// `what` and the last state `check` described).
async fn wait_for<T>(what: &str, mut check: impl AsyncFnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        match check().await {
            Ok(t) => return t,
            Err(state) => assert!(Instant::now() < deadline, "never {what}: {state}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The message of a request the broker refused with `code`.
fn refused<T: std::fmt::Debug>(result: sluice_client::Result<T>, code: ErrorCode) -> String {
    match result {
        Err(ClientError::Broker(e)) if e.code == code => e.message,
        other => panic!("expected a {code} refusal, got {other:?}"),
    }
}

/// Records in `topic` (the sum of its partitions' high watermarks).
async fn count(client: &Client, topic: &str) -> u64 {
    let d = client.describe_topic(topic).await.unwrap();
    d.partitions.iter().map(|p| p.high_watermark).sum()
}

fn sorted_values(records: &[Record]) -> Vec<String> {
    let mut v: Vec<String> = records.iter().map(|r| r.value.clone()).collect();
    v.sort();
    v
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

/// Waits until the transform `name` has a position on each of its input's
/// `partitions` and has caught up with all of them.
async fn wait_caught_up(client: &Client, name: &str, partitions: usize) -> FunctionDescription {
    wait_for(&format!("{name} caught up"), async || {
        let d = client.describe_function(name).await.unwrap();
        if d.positions.len() == partitions && d.total_lag() == 0 {
            Ok(d)
        } else {
            Err(format!("{:?}", d.positions))
        }
    })
    .await
}

/// Waits until every partition of `group` is settled (no lag, nothing in
/// flight), the group's retry topic included.
async fn wait_settled(client: &Client, group: &str) {
    wait_for(&format!("group {group} settled"), async || {
        let d = client.describe_group(group).await.unwrap();
        let settled = !d.partitions.is_empty()
            && d.partitions.iter().all(|p| p.lag == 0 && p.in_flight == 0);
        if settled { Ok(()) } else { Err(format!("{d:#?}")) }
    })
    .await
}

/// The errors of a function's metrics by kind.
fn errors(d: &FunctionDescription) -> BTreeMap<String, u64> {
    d.metrics.errors.iter().cloned().collect()
}

/// Polls `consumer` until it has `n` messages (acking them), then a little
/// longer to see that nothing more comes.
async fn consume(consumer: &GroupConsumer, n: usize) -> Vec<String> {
    let mut got = Vec::new();
    let deadline = Instant::now() + WAIT;
    while got.len() < n && Instant::now() < deadline {
        for m in consumer.poll().await.unwrap() {
            got.push(String::from_utf8_lossy(&m.value).into_owned());
            m.ack();
        }
    }
    for m in consumer.poll().await.unwrap() {
        got.push(String::from_utf8_lossy(&m.value).into_owned());
        m.ack();
    }
    consumer.flush_acks().await.unwrap();
    got.sort();
    got
}

/// A JSON order of `region` (`None`: no region field) with a unique id.
fn order(i: usize, region: Option<&str>) -> String {
    match region {
        Some(r) => format!(r#"{{"id":{i},"region":"{r}"}}"#),
        None => format!(r#"{{"id":{i}}}"#),
    }
}

// ------------------------------------------------------------------ router

#[test]
fn router_fans_out_each_order_exactly_once_and_dead_letters_unroutable_ones() {
    let broker = Broker::start();
    broker.with_client(async |client| {
        client.create_topic("orders", 2, &[]).await.unwrap();
        for t in ["orders-eu", "orders-us", "orders-other", "strict-eu", "strict-us"] {
            client.create_topic(t, 2, &[]).await.unwrap();
        }
        let router = FunctionManifest::transform(
            "router",
            "orders",
            ["orders-other", "orders-eu", "orders-us"],
        )
        .start(OffsetSpec::Earliest)
        .config("field", "region")
        .config("routes", "eu=orders-eu,us=orders-us")
        .config("default", "orders-other");
        client
            .deploy_function(router, components::bytes(components::ROUTER))
            .await
            .unwrap();
        // The same input through a second router without a default.
        let strict = FunctionManifest::transform("strict", "orders", ["strict-eu", "strict-us"])
            .start(OffsetSpec::Earliest)
            .config("field", "region")
            .config("routes", "eu=strict-eu,us=strict-us");
        client
            .deploy_function(strict, components::bytes(components::ROUTER))
            .await
            .unwrap();

        let regions = [Some("eu"), Some("us"), Some("br"), Some("eu"), None, Some("us")];
        let n = 120;
        let msgs = (0..n)
            .map(|i| {
                Message::new("orders", order(i, regions[i % regions.len()]))
                    .key(format!("order-{i}"))
                    .partition(Partitioning::Explicit((i % 2) as u32))
            })
            .collect();
        produce(client, msgs).await;
        let expect = |pred: &dyn Fn(Option<&str>) -> bool| -> Vec<String> {
            sorted(
                (0..n)
                    .filter(|i| pred(regions[i % regions.len()]))
                    .map(|i| order(i, regions[i % regions.len()]))
                    .collect(),
            )
        };
        let eu = expect(&|r| r == Some("eu"));
        let us = expect(&|r| r == Some("us"));
        let other = expect(&|r| r != Some("eu") && r != Some("us"));
        assert_eq!(eu.len() + us.len() + other.len(), n);

        wait_caught_up(client, "router", 2).await;
        wait_caught_up(client, "strict", 2).await;
        for (topic, want) in [
            ("orders-eu", &eu),
            ("orders-us", &us),
            ("orders-other", &other),
            ("strict-eu", &eu),
            ("strict-us", &us),
        ] {
            let got = read_topic(client, topic).await;
            assert_eq!(&sorted_values(&got), want, "{topic}");
            // Copies keep the input's key.
            for r in &got {
                let id: usize = r.value[6..].split(',').next().unwrap().trim_end_matches('}').parse().unwrap();
                assert_eq!(r.key.as_deref(), Some(format!("order-{id}").as_bytes()), "{r:?}");
            }
        }
        // Nothing failed for the router with a default.
        let d = client.describe_function("router").await.unwrap();
        assert_eq!(d.metrics.messages, n as u64);
        assert!(errors(&d).is_empty(), "{:?}", d.metrics.errors);
        assert!(
            client
                .list_topics()
                .await
                .unwrap()
                .iter()
                .all(|t| t.name != fn_dead_letter_topic("router")),
            "the router with a default dead-lettered something"
        );

        // Without a default, the unroutable ones are dead-lettered, once
        // each, with the reason and where they came from.
        let dlq = fn_dead_letter_topic("strict");
        assert_eq!(dlq, "sluice.fn-dlq.strict");
        let dead = read_topic(client, &dlq).await;
        assert_eq!(sorted_values(&dead), other, "{dead:#?}");
        for r in &dead {
            let reason = r.header(headers::DEAD_REASON).unwrap_or_default();
            if r.value.contains("region") {
                assert_eq!(reason, "no route for region=br", "{r:?}");
            } else {
                assert_eq!(reason, "no route: the message has no field `region`", "{r:?}");
            }
            assert_eq!(r.header(headers::ORIGIN_TOPIC).as_deref(), Some("orders"));
            let partition: u32 = r.header(headers::ORIGIN_PARTITION).unwrap().parse().unwrap();
            let offset: u64 = r.header(headers::ORIGIN_OFFSET).unwrap().parse().unwrap();
            let id: usize = r.value[6..].split(',').next().unwrap().trim_end_matches('}').parse().unwrap();
            // Message i went to partition i % 2 at offset i / 2.
            assert_eq!((partition, offset), ((id % 2) as u32, (id / 2) as u64), "{r:?}");
            assert_eq!(r.key.as_deref(), Some(format!("order-{id}").as_bytes()));
        }
        let d = client.describe_function("strict").await.unwrap();
        assert_eq!(errors(&d).get("dead_letter"), Some(&(other.len() as u64)));
        let lines = wait_log(client, "strict", "dead-lettered").await;
        assert!(
            lines.iter().any(|l| l.contains("dead-lettered to sluice.fn-dlq.strict")),
            "{lines:?}"
        );
    });
}

// ------------------------------------------------------------------ reminder

#[test]
fn reminder_follow_up_arrives_only_once_the_clock_passes_its_delay() {
    let clock = ManualClock::new(T0);
    let broker = Broker::start_with_clock(Arc::new(clock.clone()));
    broker.with_client(async |client| {
        client.create_topic("tasks", 1, &[]).await.unwrap();
        client.create_topic("reminders", 1, &[]).await.unwrap();
        let settings = GroupSettings {
            topic: "tasks".into(),
            start: OffsetSpec::Earliest,
            ..GroupSettings::default()
        };
        client
            .deploy_function(
                FunctionManifest::handler("remind", "remind", settings)
                    .config("topic", "reminders")
                    .config("delay_ms", "60000"),
                components::bytes(components::REMINDER),
            )
            .await
            .unwrap();
        let task = Message::new("tasks", "water the plants").key("task-7");
        let id = task.id.to_string();
        produce(client, vec![task]).await;

        // The handler took the task and acked it: the reminder is
        // scheduled, due 60 s after the broker's (manual) now, and not out.
        wait_settled(client, "remind").await;
        let d = client.describe_function("remind").await.unwrap();
        assert!(d.metrics.invocations >= 1 && d.metrics.messages >= 1, "{:?}", d.metrics);
        assert!(errors(&d).is_empty(), "{:?}", d.metrics.errors);
        let delays = client.list_delays(Some("reminders")).await.unwrap();
        assert_eq!(delays.len(), 1, "{delays:?}");
        assert_eq!((delays[0].pending, delays[0].next_due_ms), (1, T0 + 60_000));
        assert!(read_topic(client, "reminders").await.is_empty());

        // 1 ms before it is due: still nothing, through more than one turn
        // of the scheduler (it looks at least once a second).
        clock.advance(59_999);
        let until = Instant::now() + Duration::from_millis(1_300);
        while Instant::now() < until {
            let early = read_topic(client, "reminders").await;
            assert!(early.is_empty(), "the reminder came early: {early:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }

        clock.advance(1_001);
        let got = wait_records(client, "reminders", 1).await;
        assert_eq!(got.len(), 1, "{got:?}");
        let r = &got[0];
        assert_eq!(r.value, "water the plants");
        assert_eq!(r.key.as_deref(), Some(&b"task-7"[..]));
        assert_eq!(r.header("reminder-of"), Some(id), "{r:?}");
        wait_for("the delay gone", async || {
            let delays = client.list_delays(Some("reminders")).await.unwrap();
            if delays.iter().all(|d| d.pending == 0) { Ok(()) } else { Err(format!("{delays:?}")) }
        })
        .await;
        // Exactly one.
        assert_eq!(read_topic(client, "reminders").await.len(), 1);
    });
}
