//! Functions end to end: the sample components deployed on a real broker
//! (in process, temp data dir) through the real client, and crash tests
//! that SIGKILL a broker child process.
//!
//! Nothing here sleeps to wait for a timeout: the reminder test moves a
//! `ManualClock`, every wait polls for a state with a generous deadline,
//! and guests that never return get a short per-call deadline. The one
//! bounded window is the reminder's "not before it is due" check, which
//! has to outlast a turn of the scheduler (at most a second).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use sluice_broker::clock::ManualClock;
use sluice_broker::functions::dead_letter_topic as fn_dead_letter_topic;
use sluice_client::{
    Client, ClientConfig, ClientError, ErrorCode, FunctionDescription, FunctionManifest,
    GroupConfig, GroupConsumer, GroupSettings, Message, OffsetSpec, Partitioning, ProducerConfig,
};
use sluice_protocol::batch::BatchIter;
use sluice_protocol::headers;
use sluice_protocol::ops::{FetchPartition, FetchRequest};
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
        self.raw_header(name)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }

    fn raw_header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_slice())
    }

    /// The origin of a dead letter or retry copy: topic, partition and
    /// offset (the integers big-endian, as the protocol defines them).
    fn origin(&self) -> (Option<String>, Option<u32>, Option<u64>) {
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
        let mut expected: Vec<String> = (0..200)
            .map(|i| format!("order {i} from [email]"))
            .collect();
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
        let mut expected: Vec<String> = (0..100)
            .filter(|i| i % 3 == 0)
            .map(|i| format!("red-{i}"))
            .collect();
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
        assert!(
            lines
                .iter()
                .any(|l| l.contains("ann") && l.contains("12.5")),
            "{lines:?}"
        );
    });
    broker.restart();
    broker.with_client(async |client| {
        produce(
            client,
            vec![Message::new("orders", r#"{"customer":"ann","amount":1}"#)],
        )
        .await;
        let lines = wait_log(client, "totals", "13.5").await;
        assert!(
            lines
                .iter()
                .any(|l| l.contains("ann") && l.contains("13.5")),
            "{lines:?}"
        );
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
        let d = match client.describe_group(group).await {
            Ok(d) => d,
            // A handler's members have not joined yet.
            Err(e) if e.code() == Some(ErrorCode::UnknownGroup) => return Err(e.to_string()),
            Err(e) => panic!("describing group {group}: {e}"),
        };
        let settled =
            !d.partitions.is_empty() && d.partitions.iter().all(|p| p.lag == 0 && p.in_flight == 0);
        if settled {
            Ok(())
        } else {
            Err(format!("{d:#?}"))
        }
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

/// The `id` of an [`order`].
fn order_id(value: &str) -> usize {
    let v: serde_json::Value = serde_json::from_str(value).unwrap();
    v["id"].as_u64().unwrap() as usize
}

// ------------------------------------------------------------------ router

#[test]
fn router_fans_out_each_order_exactly_once_and_dead_letters_unroutable_ones() {
    let broker = Broker::start();
    broker.with_client(async |client| {
        client.create_topic("orders", 2, &[]).await.unwrap();
        for t in [
            "orders-eu",
            "orders-us",
            "orders-other",
            "strict-eu",
            "strict-us",
        ] {
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

        let regions = [
            Some("eu"),
            Some("us"),
            Some("br"),
            Some("eu"),
            None,
            Some("us"),
        ];
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
            // Copies keep the input's key, and go to the partition of that
            // key (as a producer would put them).
            for r in &got {
                let key = format!("order-{}", order_id(&r.value));
                assert_eq!(r.key.as_deref(), Some(key.as_bytes()), "{r:?}");
                assert_eq!(r.partition, crc32c::crc32c(key.as_bytes()) % 2, "{r:?}");
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
                assert_eq!(
                    reason, "no route: the message has no field `region`",
                    "{r:?}"
                );
            }
            let id = order_id(&r.value);
            // Message i went to partition i % 2 at offset i / 2.
            assert_eq!(
                r.origin(),
                (
                    Some("orders".to_owned()),
                    Some((id % 2) as u32),
                    Some((id / 2) as u64)
                ),
                "{r:?}"
            );
            assert_eq!(r.key.as_deref(), Some(format!("order-{id}").as_bytes()));
        }
        let d = client.describe_function("strict").await.unwrap();
        assert_eq!(errors(&d).get("dead_letter"), Some(&(other.len() as u64)));
        let lines = wait_log(client, "strict", "dead-lettered").await;
        assert!(
            lines
                .iter()
                .any(|l| l.contains("dead-lettered to sluice.fn-dlq.strict")),
            "{lines:?}"
        );
    });
}

// ------------------------------------------------------------------ reminder

/// Outputs to a topic that does not exist or is the broker's own fail only
/// their input (dead-lettered whole), and the transform goes on.
#[test]
fn outputs_to_missing_or_reserved_topics_dead_letter_their_input_and_nothing_stalls() {
    let broker = Broker::start();
    broker.with_client(async |client| {
        client.create_topic("orders", 1, &[]).await.unwrap();
        client.create_topic("orders-eu", 1, &[]).await.unwrap();
        // Group g's retry topic exists: only its reserved name refuses it.
        let _member = client
            .group_consumer(GroupConfig::new("g", "orders"))
            .await
            .unwrap();
        let router = FunctionManifest::transform("loose", "orders", ["orders-eu"])
            .start(OffsetSpec::Earliest)
            .config("field", "region")
            .config("routes", "eu=orders-eu,us=orders-nowhere,xx=sluice.retry.g");
        client
            .deploy_function(router, components::bytes(components::ROUTER))
            .await
            .unwrap();
        let regions = ["eu", "us", "xx", "eu"];
        let msgs = (0..40)
            .map(|i| Message::new("orders", order(i, Some(regions[i % 4]))))
            .collect();
        produce(client, msgs).await;
        wait_caught_up(client, "loose", 1).await;
        let eu = read_topic(client, "orders-eu").await;
        let want_eu: Vec<String> = (0..40)
            .filter(|i| regions[i % 4] == "eu")
            .map(|i| order(i, Some("eu")))
            .collect();
        assert_eq!(sorted_values(&eu), sorted(want_eu));
        let dead = read_topic(client, &fn_dead_letter_topic("loose")).await;
        assert_eq!(dead.len(), 20, "{dead:?}");
        for r in &dead {
            let reason = r.header(headers::DEAD_REASON).unwrap();
            if r.value.contains(r#""us""#) {
                assert!(reason.contains("orders-nowhere"), "{reason}");
            } else {
                assert!(r.value.contains(r#""xx""#), "{r:?}");
                assert!(reason.contains("reserved"), "{reason}");
            }
        }
        assert_eq!(count(client, "sluice.retry.g").await, 0);
    });
}

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
        assert!(
            d.metrics.invocations >= 1 && d.metrics.messages >= 1,
            "{:?}",
            d.metrics
        );
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
        assert_eq!((r.offset, r.value.as_str()), (0, "water the plants"));
        assert_eq!(r.key.as_deref(), Some(&b"task-7"[..]));
        assert_eq!(r.header("reminder-of"), Some(id), "{r:?}");
        wait_for("the delay gone", async || {
            let delays = client.list_delays(Some("reminders")).await.unwrap();
            if delays.iter().all(|d| d.pending == 0) {
                Ok(())
            } else {
                Err(format!("{delays:?}"))
            }
        })
        .await;
        // Exactly one.
        assert_eq!(read_topic(client, "reminders").await.len(), 1);
    });
}

// ------------------------------------------------------------------ bad guests

#[test]
fn a_trapping_handler_dead_letters_its_poison_messages_while_a_transform_keeps_working() {
    let broker = Broker::start();
    broker.with_client(async |client| {
        client.create_topic("jobs", 2, &[]).await.unwrap();
        client.create_topic("raw", 2, &[]).await.unwrap();
        client.create_topic("clean", 1, &[]).await.unwrap();
        client
            .deploy_function(
                FunctionManifest::transform("pii", "raw", ["clean"]).start(OffsetSpec::Earliest),
                components::bytes(components::PII_REDACT),
            )
            .await
            .unwrap();
        let settings = GroupSettings {
            topic: "jobs".into(),
            start: OffsetSpec::Earliest,
            max_attempts: 3,
            retry_ladder_ms: vec![10],
            ..GroupSettings::default()
        };
        client
            .deploy_function(
                FunctionManifest::handler("trap", "bad", settings),
                components::bytes(components::TRAP),
            )
            .await
            .unwrap();
        let raw = |from: usize, to: usize| -> Vec<Message> {
            (from..to)
                .map(|i| {
                    Message::new("raw", format!("note {i} call +1 415 555 0{i:03}"))
                        .partition(Partitioning::Explicit((i % 2) as u32))
                })
                .collect()
        };
        produce(client, raw(0, 100)).await;
        let jobs: Vec<(String, &str)> = (0..40)
            .map(|i| {
                (
                    format!("job-{i}"),
                    if i % 10 == 3 { "boom" } else { "work" },
                )
            })
            .collect();
        produce(
            client,
            jobs.iter()
                .enumerate()
                .map(|(i, (k, v))| {
                    Message::new("jobs", *v)
                        .key(k.clone())
                        .partition(Partitioning::Explicit((i % 2) as u32))
                })
                .collect(),
        )
        .await;
        // While the handler traps, the transform goes on.
        wait_for("the handler trapping", async || {
            let d = client.describe_function("trap").await.unwrap();
            if errors(&d).contains_key("trap") {
                Ok(())
            } else {
                Err(format!("{:?}", d.metrics))
            }
        })
        .await;
        produce(client, raw(100, 200)).await;

        let dlq = sluice_client::group::dead_letter_topic("bad");
        assert_eq!(dlq, "sluice.dlq.bad");
        let booms: Vec<String> = sorted(
            jobs.iter()
                .filter(|(_, v)| *v == "boom")
                .map(|(k, _)| k.clone())
                .collect(),
        );
        wait_records(client, &dlq, booms.len()).await;
        wait_settled(client, "bad").await;
        let dead = read_topic(client, &dlq).await;
        let key_of =
            |r: &Record| String::from_utf8_lossy(r.key.as_deref().unwrap_or_default()).into_owned();
        let mut keys: Vec<String> = dead.iter().map(key_of).collect();
        keys.sort();
        assert_eq!(
            keys, booms,
            "exactly the poison messages, once each: {dead:#?}"
        );
        for r in &dead {
            assert_eq!(r.value, "boom");
            let id: usize = key_of(r)["job-".len()..].parse().unwrap();
            assert_eq!(
                r.origin(),
                (
                    Some("jobs".to_owned()),
                    Some((id % 2) as u32),
                    Some((id / 2) as u64)
                ),
                "{r:?}"
            );
            assert_eq!(
                r.raw_header(headers::ATTEMPT),
                Some(&3u32.to_be_bytes()[..]),
                "failed max_attempts times: {r:?}"
            );
            let reason = r.header(headers::DEAD_REASON).unwrap_or_default();
            assert!(
                reason.contains("boom: deliberate panic") && reason.contains("trap"),
                "dead reason {reason:?}"
            );
        }
        let d = client.describe_function("trap").await.unwrap();
        let traps = errors(&d).get("trap").copied().unwrap_or(0);
        // Each poison message failed on its own max_attempts times.
        assert!(traps >= 3 * booms.len() as u64, "{:?}", d.metrics);
        assert!(
            errors(&d).keys().all(|k| k == "trap" || k == "dead_letter"),
            "only traps: {:?}",
            d.metrics.errors
        );
        let g = client.describe_group("bad").await.unwrap();
        assert_eq!(g.dead_letters, booms.len() as u64, "{g:#?}");
        let lines = wait_log(client, "trap", "boom: deliberate panic").await;
        assert!(
            lines
                .iter()
                .any(|l| l.contains("call failed") && l.contains("boom: deliberate panic")),
            "{lines:#?}"
        );
        let listed = client.list_functions().await.unwrap();
        let trap = listed.iter().find(|f| f.name == "trap").unwrap();
        assert!(trap.errors >= traps, "{trap:?}");

        // The transform: every note redacted once, no error.
        wait_caught_up(client, "pii", 2).await;
        let clean = read_topic(client, "clean").await;
        let want = sorted((0..200).map(|i| format!("note {i} call [phone]")).collect());
        assert_eq!(sorted_values(&clean), want);
        let p = client.describe_function("pii").await.unwrap();
        assert!(errors(&p).is_empty(), "{:?}", p.metrics.errors);
    });
}

#[test]
fn a_filter_that_loops_or_exhausts_its_memory_lets_every_message_through() {
    let broker = Broker::start();
    broker.with_client(async |client| {
        client.create_topic("ticks", 2, &[]).await.unwrap();
        client
            .deploy_function(
                FunctionManifest::filter("spin", "spinners").timeout(Duration::from_millis(50)),
                components::bytes(components::ENDLESS_LOOP),
            )
            .await
            .unwrap();
        client
            .deploy_function(
                FunctionManifest::filter("bomb", "bombed").memory_bytes(16 << 20),
                components::bytes(components::MEMORY_BOMB),
            )
            .await
            .unwrap();
        let group = |g: &str| {
            GroupConfig::new(g, "ticks")
                .start(OffsetSpec::Earliest)
                .poll_max_wait(Duration::from_millis(100))
        };
        let spinners = client.group_consumer(group("spinners")).await.unwrap();
        let bombed = client.group_consumer(group("bombed")).await.unwrap();
        let n = 60;
        let msgs = (0..n)
            .map(|i| {
                Message::new("ticks", format!("tick-{i}")).partition(Partitioning::Explicit(i % 2))
            })
            .collect();
        produce(client, msgs).await;
        let want = sorted((0..n).map(|i| format!("tick-{i}")).collect());
        assert_eq!(consume(&spinners, want.len()).await, want);
        assert_eq!(consume(&bombed, want.len()).await, want);
        wait_settled(client, "spinners").await;
        wait_settled(client, "bombed").await;

        for (name, kind) in [("spin", "timeout"), ("bomb", "memory")] {
            let d = client.describe_function(name).await.unwrap();
            let e = errors(&d);
            assert!(
                e.get(kind).copied().unwrap_or(0) >= 1,
                "{name}: {:?}",
                d.metrics
            );
            assert_eq!(e.len(), 1, "{name}: only {kind} errors: {e:?}");
            let lines = wait_log(client, name, "delivering the batch unfiltered").await;
            assert!(
                lines
                    .iter()
                    .any(|l| l.contains("delivering the batch unfiltered") && l.contains(kind)),
                "{name}: {lines:#?}"
            );
        }
        spinners.leave().await.unwrap();
        bombed.leave().await.unwrap();
    });
}

// ------------------------------------------------------------------ admin

/// `(name, version)` of every deployed function.
async fn listed(client: &Client) -> Vec<(String, u32)> {
    client
        .list_functions()
        .await
        .unwrap()
        .into_iter()
        .map(|f| (f.name, f.version))
        .collect()
}

#[test]
fn refused_deploys_change_nothing_and_unknown_names_are_reported() {
    let broker = Broker::start();
    broker.with_client(async |client| {
        client.create_topic("raw", 1, &[]).await.unwrap();
        client.create_topic("clean", 1, &[]).await.unwrap();
        let keep = || FunctionManifest::transform("keep", "raw", ["clean"]);
        let v1 = client
            .deploy_function(keep(), components::bytes(components::PII_REDACT))
            .await
            .unwrap();
        assert_eq!((v1.version, v1.previous_version), (1, 0));
        let before = client.describe_function("keep").await.unwrap();
        client
            .deploy_function(
                FunctionManifest::filter("reds", "g").config("tags", "red"),
                components::bytes(components::TAG_FILTER),
            )
            .await
            .unwrap();
        let others = [("keep".to_owned(), 1), ("reds".to_owned(), 1)];

        let garbage = b"\0asm this is not a component at all".to_vec();
        let cases: Vec<(&str, FunctionManifest, Vec<u8>, ErrorCode, &str)> = vec![
            (
                "garbage",
                keep(),
                garbage.clone(),
                ErrorCode::InvalidFunction,
                "not a valid WebAssembly component",
            ),
            (
                "garbage, new name",
                FunctionManifest::transform("fresh", "raw", ["clean"]),
                garbage,
                ErrorCode::InvalidFunction,
                "not a valid WebAssembly component",
            ),
            (
                "wrong world",
                keep(),
                components::bytes(components::WRONG_WORLD),
                ErrorCode::InvalidFunction,
                "implements no Sluice world",
            ),
            (
                "wrong world, new name",
                FunctionManifest::filter("fresh", "g4"),
                components::bytes(components::WRONG_WORLD),
                ErrorCode::InvalidFunction,
                "implements no Sluice world",
            ),
            (
                "a filter as a transform",
                keep(),
                components::bytes(components::TAG_FILTER),
                ErrorCode::InvalidFunction,
                "implements the filter world, but the deployment asks for a transform",
            ),
            (
                "a filter as a transform, new name",
                FunctionManifest::transform("fresh", "raw", ["clean"]).config("tags", "red"),
                components::bytes(components::TAG_FILTER),
                ErrorCode::InvalidFunction,
                "implements the filter world, but the deployment asks for a transform",
            ),
            (
                "unknown input topic",
                FunctionManifest::transform("keep", "nope", ["clean"]),
                components::bytes(components::PII_REDACT),
                ErrorCode::UnknownTopic,
                "nope",
            ),
            (
                "unknown input topic, new name",
                FunctionManifest::transform("fresh", "nope", ["clean"]),
                components::bytes(components::PII_REDACT),
                ErrorCode::UnknownTopic,
                "nope",
            ),
            (
                "unknown output topic",
                FunctionManifest::transform("fresh", "raw", ["clean", "missing"]),
                components::bytes(components::PII_REDACT),
                ErrorCode::UnknownTopic,
                "missing",
            ),
            (
                "a handler of an unknown topic",
                FunctionManifest::handler(
                    "fresh",
                    "g2",
                    GroupSettings {
                        topic: "nope".into(),
                        ..GroupSettings::default()
                    },
                ),
                components::bytes(components::ORDER_TOTALS),
                ErrorCode::UnknownTopic,
                "nope",
            ),
            (
                "its own output",
                FunctionManifest::transform("fresh", "raw", ["clean", "raw"]),
                components::bytes(components::PII_REDACT),
                ErrorCode::InvalidFunction,
                "is its input",
            ),
            (
                "a bad name",
                FunctionManifest::transform("no spaces", "raw", ["clean"]),
                components::bytes(components::PII_REDACT),
                ErrorCode::InvalidFunction,
                "function name",
            ),
            (
                "too much memory",
                FunctionManifest::transform("fresh", "raw", ["clean"]).memory_bytes(1 << 40),
                components::bytes(components::PII_REDACT),
                ErrorCode::InvalidFunction,
                "memory limit",
            ),
            (
                "a second filter on a group",
                FunctionManifest::filter("fresh", "g").config("tags", "blue"),
                components::bytes(components::TAG_FILTER),
                ErrorCode::InvalidFunction,
                "already has a filter function, reds",
            ),
            (
                "a filter without its config",
                FunctionManifest::filter("fresh", "g3"),
                components::bytes(components::TAG_FILTER),
                ErrorCode::InvalidFunction,
                "init",
            ),
        ];
        for (what, manifest, bytes, code, needle) in cases {
            let message = refused(client.deploy_function(manifest, bytes).await, code);
            assert!(
                message.contains(needle),
                "{what}: {message:?} should mention {needle:?}"
            );
            assert_eq!(listed(client).await, others, "{what}");
            let now = client.describe_function("keep").await.unwrap();
            assert_eq!(
                (now.version, &now.digest, &now.versions, &now.manifest),
                (
                    before.version,
                    &before.digest,
                    &before.versions,
                    &before.manifest
                ),
                "{what}"
            );
            refused(
                client.describe_function("fresh").await,
                ErrorCode::UnknownFunction,
            );
        }
        // The refusals used no version number.
        let v2 = client
            .deploy_function(
                keep().config("note", "2"),
                components::bytes(components::PII_REDACT),
            )
            .await
            .unwrap();
        assert_eq!((v2.version, v2.previous_version), (2, 1));

        for name in ["ghost", "fresh", "no spaces"] {
            let m = refused(
                client.describe_function(name).await,
                ErrorCode::UnknownFunction,
            );
            assert!(m.contains(name), "{m}");
            refused(
                client.function_logs(name, 0, 10).await,
                ErrorCode::UnknownFunction,
            );
            refused(
                client.delete_function(name).await,
                ErrorCode::UnknownFunction,
            );
            refused(
                client.rollback_function(name, None).await,
                ErrorCode::UnknownFunction,
            );
            refused(
                client.rollback_function(name, Some(1)).await,
                ErrorCode::UnknownFunction,
            );
        }
        // Nothing of the refused deploys was kept under the new name either.
        let fresh = client
            .deploy_function(
                FunctionManifest::transform("fresh", "raw", ["clean"]),
                components::bytes(components::PII_REDACT),
            )
            .await
            .unwrap();
        assert_eq!((fresh.version, fresh.previous_version), (1, 0));
        assert_eq!(
            client
                .describe_function("fresh")
                .await
                .unwrap()
                .versions
                .len(),
            1
        );
        assert_eq!(
            listed(client).await,
            [
                ("fresh".to_owned(), 1),
                ("keep".to_owned(), 2),
                ("reds".to_owned(), 1)
            ]
        );
    });
}

#[test]
fn versions_roll_back_and_a_deleted_function_starts_over() {
    let mut broker = Broker::start();
    let pii = |note: &str| {
        FunctionManifest::transform("redact", "raw", ["clean"])
            .start(OffsetSpec::Earliest)
            .config("note", note)
    };
    let wasm = components::bytes(components::PII_REDACT);
    let batch = |from: usize, to: usize| -> Vec<Message> {
        (from..to)
            .map(|i| {
                Message::new("raw", format!("{i}: mail m{i}@example.org"))
                    .partition(Partitioning::Explicit((i % 2) as u32))
            })
            .collect()
    };
    let redacted = |to: usize| sorted((0..to).map(|i| format!("{i}: mail [email]")).collect());
    let totals = FunctionManifest::handler(
        "tally",
        "tally",
        GroupSettings {
            topic: "orders".into(),
            start: OffsetSpec::Earliest,
            ..GroupSettings::default()
        },
    );
    broker.with_client(async |client| {
        client.create_topic("raw", 2, &[]).await.unwrap();
        client.create_topic("clean", 1, &[]).await.unwrap();
        client.create_topic("orders", 1, &[]).await.unwrap();
        let v1 = client
            .deploy_function(pii("one"), wasm.clone())
            .await
            .unwrap();
        assert_eq!((v1.version, v1.previous_version), (1, 0));
        produce(client, batch(0, 50)).await;
        wait_records(client, "clean", 50).await;

        let v2 = client
            .deploy_function(pii("two"), wasm.clone())
            .await
            .unwrap();
        assert_eq!((v2.version, v2.previous_version), (2, 1));
        assert_eq!(v2.digest, v1.digest, "the same component");
        produce(client, batch(50, 100)).await;
        wait_records(client, "clean", 100).await;
        let d = client.describe_function("redact").await.unwrap();
        assert_eq!(d.version, 2);
        assert_eq!(d.manifest.config, [("note".to_owned(), "two".to_owned())]);
        assert_eq!(
            d.versions.iter().map(|v| v.version).collect::<Vec<_>>(),
            [1, 2]
        );
        assert!(
            d.versions
                .iter()
                .all(|v| v.digest == v1.digest && v.size == wasm.len() as u64)
        );

        // Back to the version before: its manifest too.
        let back = client.rollback_function("redact", None).await.unwrap();
        assert_eq!((back.version, back.previous_version), (1, 2));
        let d = client.describe_function("redact").await.unwrap();
        assert_eq!(d.version, 1);
        assert_eq!(d.manifest.config, [("note".to_owned(), "one".to_owned())]);
        assert_eq!(d.versions.len(), 2, "a rollback keeps every version");
        assert_eq!(listed(client).await, [("redact".to_owned(), 1)]);
        produce(client, batch(100, 150)).await;
        wait_caught_up(client, "redact", 2).await;
        assert_eq!(
            sorted_values(&read_topic(client, "clean").await),
            redacted(150)
        );
        let lines = wait_log(client, "redact", "version 1 active").await;
        assert!(lines.iter().any(|l| l == "version 2 active"), "{lines:?}");
    });

    // The rollback is stored: a restarted broker runs version 1, from the
    // stored positions.
    broker.restart();
    broker.with_client(async |client| {
        let d = client.describe_function("redact").await.unwrap();
        assert_eq!(d.version, 1);
        assert_eq!(d.manifest.config, [("note".to_owned(), "one".to_owned())]);
        assert_eq!(d.versions.len(), 2);
        produce(client, batch(150, 175)).await;
        wait_caught_up(client, "redact", 2).await;
        assert_eq!(
            sorted_values(&read_topic(client, "clean").await),
            redacted(175)
        );

        // Refused: nothing before version 1, no version 7, another kind.
        let m = refused(
            client.rollback_function("redact", None).await,
            ErrorCode::InvalidFunction,
        );
        assert!(m.contains("no version before 1"), "{m}");
        let m = refused(
            client.rollback_function("redact", Some(7)).await,
            ErrorCode::InvalidFunction,
        );
        assert!(m.contains("no version 7"), "{m}");
        let handler = FunctionManifest::handler(
            "redact",
            "g",
            GroupSettings {
                topic: "raw".into(),
                ..GroupSettings::default()
            },
        );
        let m = refused(
            client
                .deploy_function(handler, components::bytes(components::ORDER_TOTALS))
                .await,
            ErrorCode::InvalidFunction,
        );
        assert!(m.contains("transform") && m.contains("handler"), "{m}");
        let d = client.describe_function("redact").await.unwrap();
        assert_eq!((d.version, d.versions.len()), (1, 2));
        // Forward again to an explicit version, then a new one numbered
        // after every stored version.
        let fwd = client.rollback_function("redact", Some(2)).await.unwrap();
        assert_eq!((fwd.version, fwd.previous_version), (2, 1));
        let v3 = client
            .deploy_function(pii("three"), wasm.clone())
            .await
            .unwrap();
        assert_eq!((v3.version, v3.previous_version), (3, 2));
        produce(client, batch(175, 200)).await;
        wait_caught_up(client, "redact", 2).await;
        assert_eq!(
            sorted_values(&read_topic(client, "clean").await),
            redacted(200)
        );

        // Delete: gone from the list, and its kv with it.
        let t1 = client
            .deploy_function(totals.clone(), components::bytes(components::ORDER_TOTALS))
            .await
            .unwrap();
        assert_eq!(t1.version, 1);
        produce(
            client,
            vec![Message::new("orders", r#"{"customer":"ann","amount":10}"#)],
        )
        .await;
        let lines = wait_log(client, "tally", "customer ann total 10").await;
        assert!(
            lines.iter().any(|l| l == "customer ann total 10"),
            "{lines:?}"
        );
        wait_settled(client, "tally").await;
        client.delete_function("tally").await.unwrap();
        assert_eq!(listed(client).await, [("redact".to_owned(), 3)]);
        refused(
            client.describe_function("tally").await,
            ErrorCode::UnknownFunction,
        );
        refused(
            client.function_logs("tally", 0, 10).await,
            ErrorCode::UnknownFunction,
        );
        refused(
            client.delete_function("tally").await,
            ErrorCode::UnknownFunction,
        );
    });

    // Still gone after a restart; deployed again, it starts over.
    broker.restart();
    broker.with_client(async |client| {
        assert_eq!(listed(client).await, [("redact".to_owned(), 3)]);
        refused(
            client.describe_function("tally").await,
            ErrorCode::UnknownFunction,
        );
        let again = client
            .deploy_function(totals, components::bytes(components::ORDER_TOTALS))
            .await
            .unwrap();
        assert_eq!((again.version, again.previous_version), (1, 0));
        let d = client.describe_function("tally").await.unwrap();
        assert_eq!(d.versions.len(), 1);
        produce(
            client,
            vec![Message::new("orders", r#"{"customer":"ann","amount":5}"#)],
        )
        .await;
        let lines = wait_log(client, "tally", "customer ann total").await;
        assert!(
            lines.iter().any(|l| l == "customer ann total 5"),
            "the total starts again from 0 (and the group resumes after the first order): {lines:?}"
        );
        assert!(
            !lines
                .iter()
                .any(|l| l.contains("total 10") || l.contains("total 15")),
            "{lines:?}"
        );
    });
}

// ------------------------------------------------------------------ under load

/// `n` distinct inputs for the PII transform, and what it makes of them.
fn mails(n: usize) -> (Vec<String>, Vec<String>) {
    (0..n)
        .map(|i| {
            (
                format!("m{i:05} from u{i}@example.com"),
                format!("m{i:05} from [email]"),
            )
        })
        .unzip()
}

/// Sends `values` to `topic` (spread over `partitions`) in batches of 200
/// from a task; counts what was acked in `acked`.
fn produce_in_background(
    client: Client,
    topic: &'static str,
    partitions: u32,
    values: Vec<String>,
    acked: Arc<AtomicUsize>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let producer = client
            .producer(ProducerConfig {
                delivery_timeout: Duration::from_secs(5),
                ..ProducerConfig::default()
            })
            .await
            .unwrap();
        for (n, chunk) in values.chunks(200).enumerate() {
            let msgs: Vec<Message> = chunk
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    Message::new(topic, v.clone())
                        .partition(Partitioning::Explicit((n * 200 + i) as u32 % partitions))
                })
                .collect();
            for r in producer.send_batch(msgs).await {
                if r.is_err() {
                    return;
                }
                acked.fetch_add(1, Ordering::SeqCst);
            }
        }
    })
}

/// Asserts that `out` holds each of `want` exactly once.
fn assert_exactly_once(out: &[Record], want: &[String]) {
    let got = sorted_values(out);
    if got != sorted(want.to_vec()) {
        let mut seen = BTreeMap::<&str, usize>::new();
        for v in &got {
            *seen.entry(v).or_default() += 1;
        }
        let dups: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).take(10).collect();
        let want_set: BTreeSet<&str> = want.iter().map(String::as_str).collect();
        let missing: Vec<_> = want_set
            .iter()
            .filter(|v| !seen.contains_key(*v))
            .take(10)
            .collect();
        let extra: Vec<_> = seen
            .keys()
            .filter(|v| !want_set.contains(*v))
            .take(10)
            .collect();
        panic!(
            "{} outputs for {} inputs; duplicated (first 10): {dups:?}; missing: {missing:?}; unexpected: {extra:?}",
            got.len(),
            want.len()
        );
    }
}

/// A broker child process on `data`, SIGKILLed when dropped (so a failing
/// test leaves none behind).
struct Child(std::process::Child);

impl Child {
    /// Starts one and connects a client to it.
    async fn start(data: &Path) -> (Child, Client) {
        let exe = Path::new(env!("CARGO_BIN_EXE_sluice"));
        let (child, addr) = sluice_broker::node::spawn_dev_process(exe, data).unwrap();
        let child = Child(child);
        let config = ClientConfig::new(addr)
            .ca_cert(data.join("tls/cert.pem"))
            .client_id("functions-crash-test");
        (child, Client::connect(config).await.unwrap())
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// What the transform's runners said about outputs a crash left pending
/// (for the test's output: whether a kill fell between a commit and its
/// append is up to timing).
async fn recovery_notes(client: &Client) -> Vec<String> {
    let logs = client.function_logs("pii", 0, 1000).await.unwrap();
    logs.lines
        .into_iter()
        .map(|l| l.message)
        .filter(|m| m.contains("recovered"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transform_killed_mid_way_resumes_without_losing_or_repeating_outputs() {
    const TOTAL: usize = 20_000;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (inputs, outputs) = mails(TOTAL);
    // Kill when the output has at least this many records (and the
    // transform has not caught up), then restart; the last round runs to
    // the end.
    let kill_at = [2_000u64, 8_000, 14_000];
    for round in 0.. {
        let (broker, client) = Child::start(&data).await;
        if round == 0 {
            client.create_topic("in", 2, &[]).await.unwrap();
            client.create_topic("out", 2, &[]).await.unwrap();
            client
                .deploy_function(
                    FunctionManifest::transform("pii", "in", ["out"]).start(OffsetSpec::Earliest),
                    components::bytes(components::PII_REDACT),
                )
                .await
                .unwrap();
        }
        // What made it into the input before the last kill is there; send
        // the rest.
        let present: BTreeSet<String> = read_topic(&client, "in")
            .await
            .into_iter()
            .map(|r| r.value)
            .collect();
        let rest: Vec<String> = inputs
            .iter()
            .filter(|v| !present.contains(*v))
            .cloned()
            .collect();
        let acked = Arc::new(AtomicUsize::new(0));
        let producer = produce_in_background(client.clone(), "in", 2, rest.clone(), acked.clone());
        let Some(&at) = kill_at.get(round) else {
            producer.await.unwrap();
            assert_eq!(acked.load(Ordering::SeqCst), rest.len());
            assert_exactly_once(&read_topic(&client, "in").await, &inputs);
            let d = wait_caught_up(&client, "pii", 2).await;
            assert_eq!(
                d.positions.iter().map(|p| p.position).sum::<u64>(),
                TOTAL as u64
            );
            assert_exactly_once(&read_topic(&client, "out").await, &outputs);
            eprintln!("last round: {:?}", recovery_notes(&client).await);
            client.close().await;
            drop(broker);
            break;
        };
        let seen = wait_for(&format!("round {round}: {at} outputs"), async || {
            let n = count(&client, "out").await;
            if n >= at {
                Ok(n)
            } else {
                Err(format!("{n} outputs"))
            }
        })
        .await;
        let notes = recovery_notes(&client).await;
        drop(broker);
        producer.abort();
        let _ = producer.await;
        client.close().await;
        assert!(
            (seen as usize) < TOTAL,
            "round {round}: the transform had finished ({seen}) before the kill"
        );
        eprintln!(
            "round {round}: killed with {seen} outputs, {} of {} sends acked; {notes:?}",
            acked.load(Ordering::SeqCst),
            rest.len()
        );
    }
}

#[test]
fn upgrades_under_load_neither_lose_nor_repeat_a_message() {
    const TOTAL: usize = 20_000;
    let broker = Broker::start();
    broker.with_client(async |client| {
        client.create_topic("in", 2, &[]).await.unwrap();
        client.create_topic("out", 2, &[]).await.unwrap();
        client.create_topic("spare", 1, &[]).await.unwrap();
        // Version 3 also lists a second output: a new attachment, so its
        // runners restart; the others only swap the version in.
        let manifest = |rev: usize| {
            let outputs = if rev == 3 {
                vec!["out", "spare"]
            } else {
                vec!["out"]
            };
            FunctionManifest::transform("pii", "in", outputs)
                .start(OffsetSpec::Earliest)
                .config("rev", rev.to_string())
        };
        let wasm = components::bytes(components::PII_REDACT);
        client
            .deploy_function(manifest(1), wasm.clone())
            .await
            .unwrap();
        let (inputs, outputs) = mails(TOTAL);
        let acked = Arc::new(AtomicUsize::new(0));
        let producer = produce_in_background(client.clone(), "in", 2, inputs, acked.clone());
        for (rev, at) in [(2, 3_000u64), (3, 9_000), (4, 15_000)] {
            let seen = wait_for(&format!("{at} outputs"), async || {
                let n = count(client, "out").await;
                if n >= at {
                    Ok(n)
                } else {
                    Err(format!("{n} outputs"))
                }
            })
            .await;
            let deployed = client
                .deploy_function(manifest(rev), wasm.clone())
                .await
                .unwrap();
            assert_eq!(
                (deployed.version, deployed.previous_version),
                (rev as u32, rev as u32 - 1)
            );
            eprintln!("v{rev} deployed at {seen} outputs");
        }
        producer.await.unwrap();
        assert_eq!(acked.load(Ordering::SeqCst), TOTAL);
        let d = wait_caught_up(client, "pii", 2).await;
        assert_eq!(d.version, 4);
        assert_eq!(
            d.metrics.messages, TOTAL as u64,
            "each input transformed once"
        );
        assert!(errors(&d).is_empty(), "{:?}", d.metrics.errors);
        assert_exactly_once(&read_topic(client, "out").await, &outputs);
    });
}

#[test]
fn handler_upgrades_under_load_neither_lose_nor_repeat_an_order() {
    const CUSTOMERS: usize = 4;
    const ORDERS: usize = 1_000;
    let broker = Broker::start();
    broker.with_client(async |client| {
        client.create_topic("orders", 2, &[]).await.unwrap();
        let settings = GroupSettings {
            topic: "orders".into(),
            start: OffsetSpec::Earliest,
            ..GroupSettings::default()
        };
        // Version 3 runs one member instead of the default two: a new
        // attachment, so the members restart; the others swap in.
        let manifest = |rev: usize| {
            FunctionManifest::handler("totals", "totals", settings.clone())
                .config("rev", rev.to_string())
                .concurrency(if rev == 3 { 1 } else { 0 })
                .log_lines_per_sec(1_000_000)
        };
        let wasm = components::bytes(components::ORDER_TOTALS);
        client
            .deploy_function(manifest(1), wasm.clone())
            .await
            .unwrap();
        // Keyed by customer: one customer's orders are on one partition,
        // handled one batch at a time.
        let orders = move |amount: &str, n: usize| -> Vec<Message> {
            (0..n * CUSTOMERS)
                .map(|i| {
                    let c = format!("c{}", i % CUSTOMERS);
                    Message::new(
                        "orders",
                        format!(r#"{{"customer":"{c}","amount":{amount}}}"#),
                    )
                    .key(c)
                    .partition(Partitioning::ByKey)
                })
                .collect()
        };
        let producer = {
            let client = client.clone();
            tokio::spawn(async move {
                let producer = client.producer(ProducerConfig::default()).await.unwrap();
                for chunk in orders("1", ORDERS).chunks(100) {
                    for r in producer.send_batch(chunk.to_vec()).await {
                        r.unwrap();
                    }
                }
            })
        };
        for (rev, at) in [(2, 500u64), (3, 1_500), (4, 2_500)] {
            let seen = wait_for(&format!("{at} orders handled"), async || {
                let d = client.describe_function("totals").await.unwrap();
                if d.metrics.messages >= at {
                    Ok(d.metrics.messages)
                } else {
                    Err(format!("{:?}", d.metrics))
                }
            })
            .await;
            let deployed = client
                .deploy_function(manifest(rev), wasm.clone())
                .await
                .unwrap();
            assert_eq!(deployed.version, rev as u32);
            eprintln!("v{rev} deployed at {seen} orders handled");
        }
        producer.await.unwrap();
        wait_settled(client, "totals").await;
        // One more order each shows the total kept in kv.
        produce(client, orders("0.5", 1)).await;
        let want: Vec<String> = (0..CUSTOMERS)
            .map(|c| format!("customer c{c} total {ORDERS}.5"))
            .collect();
        wait_settled(client, "totals").await;
        let lines = client.function_logs("totals", 0, 1000).await.unwrap().lines;
        let last: Vec<String> = (0..CUSTOMERS)
            .map(|c| {
                let prefix = format!("customer c{c} total ");
                lines
                    .iter()
                    .rev()
                    .find(|l| l.message.starts_with(&prefix))
                    .map(|l| l.message.clone())
                    .unwrap_or_default()
            })
            .collect();
        assert_eq!(last, want, "the last total of each customer");
        let d = client.describe_function("totals").await.unwrap();
        assert_eq!(d.version, 4);
        assert_eq!(
            d.metrics.messages,
            ((ORDERS + 1) * CUSTOMERS) as u64,
            "each order handled once"
        );
        assert!(errors(&d).is_empty(), "{:?}", d.metrics.errors);
    });
}

/// Versions that change where a transform attaches (its outputs) restart
/// its runners: the old ones must finish their batch before the new ones
/// read the stored position, or both transform it. Here the versions also
/// alternate between one and two messages per call, so a second runner
/// would read a different extent from the same position: its outputs would
/// clash with the first's producer sequences.
#[test]
fn attach_changes_over_a_backlog_neither_lose_nor_repeat_a_message() {
    const TOTAL: usize = 2_000;
    let broker = Broker::start();
    broker.with_client(async |client| {
        client.create_topic("in", 2, &[]).await.unwrap();
        client.create_topic("out", 2, &[]).await.unwrap();
        client.create_topic("spare", 1, &[]).await.unwrap();
        let manifest = |rev: usize| {
            let outputs = if rev % 2 == 1 {
                vec!["out", "spare"]
            } else {
                vec!["out"]
            };
            FunctionManifest::transform("pii", "in", outputs)
                .start(OffsetSpec::Earliest)
                .max_batch_messages(1 + (rev % 2) as u32)
        };
        // One stored batch per message: a call takes one or two.
        let (inputs, outputs) = mails(TOTAL);
        let producer = client.producer(ProducerConfig::default()).await.unwrap();
        for (i, v) in inputs.iter().enumerate() {
            let m = Message::new("in", v.clone()).partition(Partitioning::Explicit(i as u32 % 2));
            producer.send(m).await.unwrap();
        }
        let wasm = components::bytes(components::PII_REDACT);
        client
            .deploy_function(manifest(0), wasm.clone())
            .await
            .unwrap();
        let mut rev = 1;
        while count(client, "out").await < TOTAL as u64 {
            client
                .deploy_function(manifest(rev), wasm.clone())
                .await
                .unwrap();
            rev += 1;
        }
        eprintln!("{rev} versions while the backlog was transformed");
        assert!(
            rev > 5,
            "only {rev} versions: the backlog went too fast to test anything"
        );
        let d = wait_caught_up(client, "pii", 2).await;
        assert_eq!(
            d.metrics.messages, TOTAL as u64,
            "each input transformed once: {:?}",
            d.metrics
        );
        assert!(errors(&d).is_empty(), "{:?}", d.metrics.errors);
        assert_exactly_once(&read_topic(client, "out").await, &outputs);
        assert!(read_topic(client, "spare").await.is_empty());
    });
}

/// A function whose component cannot be loaded at start (here: its file
/// is gone) is listed as failed, explains itself, and can be deleted or
/// replaced; the others start normally.
#[test]
fn a_function_that_fails_to_load_at_start_is_listed_and_can_be_replaced() {
    let mut broker = Broker::start();
    broker.with_client(async |client| {
        client.create_topic("raw", 1, &[]).await.unwrap();
        client.create_topic("clean", 1, &[]).await.unwrap();
        client
            .deploy_function(
                FunctionManifest::transform("pii", "raw", ["clean"]),
                components::bytes(components::PII_REDACT),
            )
            .await
            .unwrap();
        client
            .deploy_function(
                FunctionManifest::filter("other", "g").config("tags", "red"),
                components::bytes(components::TAG_FILTER),
            )
            .await
            .unwrap();
    });
    let pii_digest =
        broker.with_client(async |client| client.describe_function("pii").await.unwrap().digest);
    let components_dir = broker.dir.path().join("sluice-data/functions/components");
    std::fs::remove_file(components_dir.join(format!("{pii_digest}.wasm"))).unwrap();
    broker.restart();
    broker.with_client(async |client| {
        let listed = client.list_functions().await.unwrap();
        let pii = listed.iter().find(|f| f.name == "pii").unwrap();
        assert!(pii.status.starts_with("failed to load"), "{pii:?}");
        assert!(pii.status.contains(&pii_digest), "{pii:?}");
        let other = listed.iter().find(|f| f.name == "other").unwrap();
        assert_eq!(other.status, "running", "{other:?}");
        let why = refused(
            client.describe_function("pii").await,
            ErrorCode::InvalidFunction,
        );
        assert!(why.contains("failed to load"), "{why}");
        // A new version replaces it.
        let r = client
            .deploy_function(
                FunctionManifest::transform("pii", "raw", ["clean"]),
                components::bytes(components::PII_REDACT),
            )
            .await
            .unwrap();
        assert_eq!(r.version, 2);
        let d = client.describe_function("pii").await.unwrap();
        assert_eq!(d.status, "running");
        client.delete_function("other").await.unwrap();
    });
}
