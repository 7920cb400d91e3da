//! Consumer groups end to end: a real broker started in process (on a temp
//! data dir, some on a manual clock), the real client, and one crash test
//! with the broker as a child process SIGKILLed after acks.
//!
//! Nothing here sleeps to wait for a timeout: time-dependent tests move a
//! `ManualClock` (the broker's group upkeep runs every 50 ms of real time
//! and reads it), and every wait polls for a state with a generous deadline.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use sluice_broker::clock::ManualClock;
use sluice_client::group::{dead_letter_topic, retry_topic};
use sluice_client::{
    Client, ClientConfig, ConsumerConfig, Delivery, ErrorCode, GroupConfig, GroupConsumer,
    GroupDescription, GroupMessage, GroupMode, Message, OffsetSpec, Partitioning, ProducerConfig,
    ResetTo, SeekTo, TopicPartition,
};
use sluice_protocol::batch::BatchIter;
use sluice_protocol::headers;
use sluice_protocol::ops::{FetchPartition, FetchRequest};

use common::Broker;

/// Longest a test waits for a state it expects (a loaded 2-core machine
/// can be slow; a passing test does not wait this long).
const WAIT: Duration = Duration::from_secs(15);
/// Where manual clocks start.
const T0: i64 = 1_700_000_000_000;

// ------------------------------------------------------------------ helpers

/// A group on `topic` starting at the earliest message, with short polls.
fn cfg(group: &str, topic: &str) -> GroupConfig {
    GroupConfig::new(group, topic)
        .start(OffsetSpec::Earliest)
        .poll_max_wait(Duration::from_millis(100))
}

fn text(m: &GroupMessage) -> String {
    String::from_utf8_lossy(&m.value).into_owned()
}

fn texts<'a>(ms: impl IntoIterator<Item = &'a GroupMessage>) -> Vec<String> {
    ms.into_iter().map(text).collect()
}

fn set<T: Ord + Clone>(items: &[T]) -> BTreeSet<T> {
    items.iter().cloned().collect()
}

/// `n` messages `<prefix><i>`, message i on partition `i % partitions`.
fn spread(topic: &str, prefix: &str, n: usize, partitions: u32) -> Vec<Message> {
    (0..n)
        .map(|i| {
            Message::new(topic, format!("{prefix}{i}"))
                .partition(Partitioning::Explicit(i as u32 % partitions))
        })
        .collect()
}

fn values(msgs: &[Message]) -> Vec<String> {
    msgs.iter()
        .map(|m| String::from_utf8_lossy(&m.value).into_owned())
        .collect()
}

async fn produce(client: &Client, msgs: Vec<Message>) -> Vec<Delivery> {
    let producer = client.producer(ProducerConfig::default()).await.unwrap();
    producer
        .send_batch(msgs)
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .collect()
}

/// Polls each consumer in turn, acking everything, until `n` messages came
/// in all (or `WAIT` passed), then once more each, to catch any beyond `n`.
/// Returns what each consumer received.
async fn consume_all(consumers: &[&GroupConsumer], n: usize) -> Vec<Vec<GroupMessage>> {
    let mut got: Vec<Vec<GroupMessage>> = consumers.iter().map(|_| Vec::new()).collect();
    let deadline = Instant::now() + WAIT;
    let total = |got: &[Vec<GroupMessage>]| got.iter().map(Vec::len).sum::<usize>();
    let mut last_round = false;
    loop {
        for (c, out) in consumers.iter().zip(got.iter_mut()) {
            for m in c.poll().await.unwrap() {
                m.ack();
                out.push(m);
            }
        }
        if last_round {
            break;
        }
        last_round = total(&got) >= n || Instant::now() > deadline;
    }
    for c in consumers {
        c.flush_acks().await.unwrap();
    }
    got
}

/// Polls until at least one message comes (or `WAIT` passes); settles nothing.
async fn poll_some(c: &GroupConsumer) -> Vec<GroupMessage> {
    let deadline = Instant::now() + WAIT;
    loop {
        let got = c.poll().await.unwrap();
        if !got.is_empty() || Instant::now() > deadline {
            return got;
        }
    }
}

/// Describes the group until `ok` holds; fails with the last description
/// after `WAIT`.
async fn wait_for_group(
    client: &Client,
    group: &str,
    what: &str,
    ok: impl Fn(&GroupDescription) -> bool,
) -> GroupDescription {
    let deadline = Instant::now() + WAIT;
    loop {
        let d = client.describe_group(group).await.unwrap();
        if ok(&d) {
            return d;
        }
        assert!(
            Instant::now() < deadline,
            "group {group} never {what}: {d:#?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every partition of the group settled: nothing in flight, no lag.
fn all_settled(d: &GroupDescription) -> bool {
    d.partitions.iter().all(|p| p.lag == 0 && p.in_flight == 0)
}

/// The partitions of the group's topic that `member` owns, per the broker.
fn owned_by(d: &GroupDescription, member: &str) -> BTreeSet<u32> {
    d.partitions
        .iter()
        .filter(|p| p.owner == member && p.topic == d.settings.topic)
        .map(|p| p.partition)
        .collect()
}

/// A record as stored, with every header (reserved ones included).
#[derive(Debug)]
struct RawRecord {
    offset: u64,
    key: Option<Vec<u8>>,
    value: Vec<u8>,
    headers: Vec<(String, Vec<u8>)>,
}

impl RawRecord {
    fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| &v[..])
    }
}

/// The records of partition 0 of `topic`, by a raw fetch: the client's
/// `ConsumedMessage` drops reserved (`sluice.*`) headers.
async fn raw_records(client: &Client, topic: &str) -> Vec<RawRecord> {
    let resp = client
        .connection()
        .request(&FetchRequest {
            max_wait_ms: 0,
            min_bytes: 0,
            max_bytes: 1 << 20,
            partitions: vec![FetchPartition {
                topic: topic.into(),
                partition: 0,
                offset: 0,
                max_bytes: 1 << 20,
            }],
        })
        .await
        .unwrap();
    let p = &resp.partitions[0];
    assert_eq!(p.error, ErrorCode::None, "{}", p.message);
    let mut out = Vec::new();
    for batch in BatchIter::new(&p.records) {
        let batch = batch.unwrap();
        for r in batch.records() {
            let r = r.unwrap();
            out.push(RawRecord {
                offset: r.offset,
                key: r.key.map(<[u8]>::to_vec),
                value: r.value.unwrap_or_default().to_vec(),
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
    out
}

/// Checks a clustering split: each member got something, only from the
/// partitions the broker gave it, no message twice, and together exactly
/// `expected`.
fn check_split(
    d: &GroupDescription,
    members: &[&GroupConsumer],
    got: &[Vec<GroupMessage>],
    expected: &[String],
) {
    let total: usize = got.iter().map(Vec::len).sum();
    let all: Vec<String> = got.iter().flat_map(texts).collect();
    assert_eq!(total, expected.len(), "count: {all:?}");
    assert_eq!(set(&all), set(expected), "union");
    for (i, (c, g)) in members.iter().zip(got).enumerate() {
        assert!(!g.is_empty(), "member {i} got nothing");
        let owned = owned_by(d, &c.member_id());
        let from: BTreeSet<u32> = g.iter().map(|m| m.partition).collect();
        assert!(
            from.is_subset(&owned),
            "member {i} got messages of partitions {from:?}, owns {owned:?}"
        );
        assert!(g.iter().all(|m| m.attempt() == 1), "member {i}: {g:#?}");
        for (j, other) in got.iter().enumerate().skip(i + 1) {
            let common: Vec<_> = set(&texts(g))
                .intersection(&set(&texts(other)))
                .cloned()
                .collect();
            assert!(common.is_empty(), "members {i} and {j} both got {common:?}");
        }
    }
}

// ------------------------------------------------------------------ sharing

#[test]
fn clustering_members_split_the_messages_without_overlap() {
    let broker = Broker::start();
    broker.with_client(async |client| {
        client.create_topic("orders", 6, &[]).await.unwrap();
        let (c1, c2, c3) = (
            broker.connect("m1").await,
            broker.connect("m2").await,
            broker.connect("m3").await,
        );
        let m1 = c1.group_consumer(cfg("billing", "orders")).await.unwrap();
        let m2 = c2.group_consumer(cfg("billing", "orders")).await.unwrap();

        let first = spread("orders", "a", 60, 6);
        let expected = values(&first);
        produce(client, first).await;
        let got = consume_all(&[&m1, &m2], 60).await;
        let d = client.describe_group("billing").await.unwrap();
        assert_eq!(d.members.len(), 2, "{d:#?}");
        check_split(&d, &[&m1, &m2], &got, &expected);
        let d = wait_for_group(client, "billing", "settled", all_settled).await;
        assert_eq!(d.total_lag(), 0);

        // A third member: the 6 partitions (and the retry topic's) spread
        // over three.
        let m3 = c3.group_consumer(cfg("billing", "orders")).await.unwrap();
        let second = spread("orders", "b", 60, 6);
        let expected = values(&second);
        produce(client, second).await;
        let got = consume_all(&[&m1, &m2, &m3], 60).await;
        let d = client.describe_group("billing").await.unwrap();
        assert_eq!(d.members.len(), 3, "{d:#?}");
        let counts: Vec<usize> = d.members.iter().map(|m| m.assignment.len()).collect();
        assert!(
            counts.iter().all(|&n| n == 2 || n == 3) && counts.iter().sum::<usize>() == 7,
            "balanced: {d:#?}"
        );
        check_split(&d, &[&m1, &m2, &m3], &got, &expected);
        wait_for_group(client, "billing", "settled", all_settled).await;

        for m in [m1, m2, m3] {
            m.leave().await.unwrap();
        }
        for c in [c1, c2, c3] {
            c.close().await;
        }
    });
}

#[test]
fn a_killed_members_unacked_messages_are_redelivered_to_the_survivor() {
    let broker = Broker::start();
    broker.with_client(async |client| {
        client.create_topic("jobs", 4, &[]).await.unwrap();
        let (ca, cb) = (
            broker.connect("doomed").await,
            broker.connect("survivor").await,
        );
        // Long sessions: the doomed member's heartbeat (every 20 s) must not
        // rejoin it on a new connection while the test runs.
        let config = || cfg("workers", "jobs").session_timeout(Duration::from_secs(60));
        let a = ca.group_consumer(config()).await.unwrap();
        let b = cb.group_consumer(config()).await.unwrap();
        let msgs = spread("jobs", "j", 40, 4);
        let all = values(&msgs);
        produce(client, msgs).await;

        // A takes the messages of its partitions and acks every other one.
        let held = poll_some(&a).await;
        assert!(!held.is_empty());
        let d = client.describe_group("workers").await.unwrap();
        let a_parts = owned_by(&d, &a.member_id());
        assert!(
            held.iter().all(|m| a_parts.contains(&m.partition)),
            "{held:#?}"
        );
        let mut a_acked = Vec::new();
        let mut a_unacked = Vec::new();
        for (i, m) in held.iter().enumerate() {
            if i % 2 == 0 {
                m.ack();
                a_acked.push(text(m));
            } else {
                a_unacked.push(text(m));
            }
        }
        a.flush_acks().await.unwrap();
        assert_eq!(a.ack_stats().settled, a_acked.len() as u64);

        // Its connection dies without a LeaveGroup.
        ca.connection().kill_connection().await;
        let b_id = b.member_id();
        let d = wait_for_group(client, "workers", "lost the killed member", |d| {
            d.members.len() == 1
                && d.members[0].member_id == b_id
                && d.partitions.iter().all(|p| p.owner == b_id)
        })
        .await;
        assert_eq!(d.members[0].assignment.len(), 5, "{d:#?}");
        drop(a);

        let want: Vec<String> = all
            .iter()
            .filter(|v| !a_acked.contains(v))
            .cloned()
            .collect();
        let got = consume_all(&[&b], want.len()).await.remove(0);
        let b_vals = texts(&got);
        assert_eq!(b_vals.len(), want.len(), "no duplicates: {b_vals:?}");
        assert_eq!(
            set(&b_vals),
            set(&want),
            "everything A did not ack, nothing it did"
        );
        let union: BTreeSet<String> = set(&a_acked).union(&set(&b_vals)).cloned().collect();
        assert_eq!(union, set(&all), "nothing lost");
        // An interrupted delivery is not a failure: same attempt.
        for m in got.iter().filter(|m| a_unacked.contains(&text(m))) {
            assert_eq!(m.attempt(), 1, "{m:#?}");
        }
        wait_for_group(client, "workers", "settled", all_settled).await;
        b.leave().await.unwrap();
        ca.close().await;
        cb.close().await;
    });
}

#[test]
fn broadcast_members_each_get_every_message() {
    let broker = Broker::start();
    broker.with_client(async |client| {
        client.create_topic("news", 3, &[]).await.unwrap();
        let (c1, c2) = (broker.connect("r1").await, broker.connect("r2").await);
        let config = |instance: &str| cfg("readers", "news").broadcast().instance_id(instance);
        let r1 = c1.group_consumer(config("i1")).await.unwrap();
        let r2 = c2.group_consumer(config("i2")).await.unwrap();
        assert_eq!(r1.instance_id(), "i1");
        let msgs = spread("news", "n", 30, 3);
        let all = values(&msgs);
        produce(client, msgs).await;

        for r in [&r1, &r2] {
            let got = consume_all(&[r], 30).await.remove(0);
            let vals = texts(&got);
            assert_eq!(vals.len(), 30, "{} got {vals:?}", r.instance_id());
            assert_eq!(set(&vals), set(&all), "{}", r.instance_id());
        }
        let d = wait_for_group(client, "readers", "settled", all_settled).await;
        assert_eq!(d.settings.mode, GroupMode::Broadcast);
        for r in [&r1, &r2] {
            let m = d
                .members
                .iter()
                .find(|m| m.member_id == r.member_id())
                .unwrap();
            assert_eq!(m.instance_id, r.instance_id());
            assert_eq!(m.assignment.len(), 4, "every partition: {d:#?}");
            // A row per partition (the retry topic's too) for this instance.
            let rows: Vec<_> = d
                .partitions
                .iter()
                .filter(|p| p.instance_id == r.instance_id())
                .collect();
            assert_eq!(rows.len(), 4, "{d:#?}");
            for p in rows {
                assert_eq!(p.owner, r.member_id());
                if p.topic == "news" {
                    assert_eq!((p.committed, p.high_watermark), (10, 10), "{p:?}");
                }
            }
        }
        r1.leave().await.unwrap();
        r2.leave().await.unwrap();
        c1.close().await;
        c2.close().await;
    });
}

// ------------------------------------------------------------------ order

#[test]
fn ordered_groups_keep_per_key_order_through_retries() {
    let broker = Broker::start();
    broker.with_client(async |client| {
        client.create_topic("ledger", 2, &[]).await.unwrap();
        // Keys k0..k4, sequence numbers interleaved: k0-0 k1-0 .. k4-0 k0-1 ..
        let mut msgs = Vec::new();
        for seq in 0..5 {
            for key in 0..5 {
                msgs.push(Message::new("ledger", format!("k{key}-{seq}")).key(format!("k{key}")));
            }
        }
        produce(client, msgs).await;
        // Fails once on its first attempt (retried in place after 5 ms).
        let flaky = |key: usize, seq: usize| (key + seq).is_multiple_of(3);

        let c = client
            .group_consumer(
                cfg("ordered", "ledger")
                    .ordered(true)
                    .retry_ladder([Duration::from_millis(10)]),
            )
            .await
            .unwrap();
        let mut received: BTreeMap<String, Vec<(String, u16)>> = BTreeMap::new();
        let mut acked: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let deadline = Instant::now() + WAIT;
        while acked.values().map(Vec::len).sum::<usize>() < 25 {
            assert!(Instant::now() < deadline, "acked only {acked:?}");
            let batch = c.poll().await.unwrap();
            // Every message handed out is settled before the next poll, so
            // the outstanding ones are this batch: one per key at most.
            let mut outstanding = HashSet::new();
            for m in &batch {
                let key = String::from_utf8(m.key.clone().unwrap().to_vec()).unwrap();
                assert!(
                    outstanding.insert(key.clone()),
                    "two messages of {key} outstanding at once: {:?}",
                    texts(&batch)
                );
            }
            for m in batch {
                let key = String::from_utf8(m.key.clone().unwrap().to_vec()).unwrap();
                let v = text(&m);
                received
                    .entry(key.clone())
                    .or_default()
                    .push((v.clone(), m.attempt()));
                let (k, s) = v[1..].split_once('-').unwrap();
                if m.attempt() == 1 && flaky(k.parse().unwrap(), s.parse().unwrap()) {
                    m.retry_after(Duration::from_millis(5), "not yet");
                } else {
                    m.ack();
                    acked.entry(key).or_default().push(v);
                }
            }
        }
        for key in 0..5 {
            let k = format!("k{key}");
            let order: Vec<String> = (0..5).map(|s| format!("k{key}-{s}")).collect();
            assert_eq!(acked[&k], order, "acked out of order");
            let mut deliveries = Vec::new();
            for s in 0..5 {
                deliveries.push((format!("k{key}-{s}"), 1));
                if flaky(key, s) {
                    deliveries.push((format!("k{key}-{s}"), 2));
                }
            }
            assert_eq!(received[&k], deliveries, "deliveries of {k}");
        }
        c.flush_acks().await.unwrap();
        wait_for_group(client, "ordered", "settled", all_settled).await;
        c.leave().await.unwrap();
    });
}

// ------------------------------------------------------------------ failures

#[test]
fn a_message_failing_every_attempt_is_dead_lettered_and_redriven() {
    let broker = Broker::start();
    broker.with_client(async |client| {
        client.create_topic("payments", 1, &[]).await.unwrap();
        let poison = Message::new("payments", "poison")
            .key("p1")
            .property("trace", "t-1");
        let id = poison.id;
        let fine = Message::new("payments", "fine");
        let d = produce(client, vec![poison, fine]).await;
        let origin = d[0].offset;

        let c = client
            .group_consumer(
                cfg("pay", "payments")
                    .max_attempts(3)
                    .retry_ladder([Duration::from_millis(10), Duration::from_millis(20)]),
            )
            .await
            .unwrap();
        let retry = retry_topic("pay");
        let dlq = dead_letter_topic("pay");
        let mut attempts = Vec::new();
        let mut fine_seen = 0;
        let deadline = Instant::now() + WAIT;
        while attempts.len() < 3 {
            assert!(Instant::now() < deadline, "attempts so far: {attempts:?}");
            for m in c.poll().await.unwrap() {
                if text(&m) == "fine" {
                    fine_seen += 1;
                    m.ack();
                    continue;
                }
                assert_eq!(text(&m), "poison");
                // Retries show where the message was first consumed.
                assert_eq!(
                    (m.topic.as_str(), m.partition, m.offset),
                    ("payments", 0, origin)
                );
                assert_eq!(m.id, Some(id));
                attempts.push((m.attempt(), m.delivered_from().0.to_owned()));
                m.nack("db down");
            }
        }
        c.flush_acks().await.unwrap();
        assert_eq!(fine_seen, 1);
        assert_eq!(
            attempts,
            [
                (1, "payments".to_owned()),
                (2, retry.clone()),
                (3, retry.clone())
            ]
        );
        let d = wait_for_group(client, "pay", "has its dead letter", |d| {
            d.dead_letters == 1
        })
        .await;
        assert!(all_settled(&d), "{d:#?}");
        let listed = client.list_groups().await.unwrap();
        let s = listed.iter().find(|g| g.group == "pay").unwrap();
        assert_eq!((s.dead_letters, s.lag), (1, 0), "{s:?}");

        // The dead letter keeps the message and says why and after how many.
        let dead = raw_records(client, &dlq).await;
        assert_eq!(dead.len(), 1, "{dead:#?}");
        let r = &dead[0];
        assert_eq!(r.offset, 0);
        assert_eq!(
            (r.key.as_deref(), &r.value[..]),
            (Some(&b"p1"[..]), &b"poison"[..])
        );
        assert_eq!(
            r.header(headers::DEAD_REASON),
            Some(&b"db down"[..]),
            "{r:#?}"
        );
        assert_eq!(
            r.header(headers::ATTEMPT),
            Some(&3u32.to_be_bytes()[..]),
            "{r:#?}"
        );
        assert_eq!(r.header(headers::ORIGIN_TOPIC), Some(&b"payments"[..]));
        assert_eq!(
            r.header(headers::ORIGIN_PARTITION),
            Some(&0u32.to_be_bytes()[..])
        );
        assert_eq!(
            r.header(headers::ORIGIN_OFFSET),
            Some(&origin.to_be_bytes()[..])
        );
        assert_eq!(r.header(headers::MESSAGE_ID), Some(&id.0[..]));
        assert_eq!(r.header("trace"), Some(&b"t-1"[..]));
        // A plain consumer sees the message, but not the reserved headers.
        let mut plain = client.consumer(ConsumerConfig::default());
        plain.assign(&dlq, &[], SeekTo::Earliest).await.unwrap();
        let seen = plain.poll().await.unwrap();
        assert_eq!(seen.len(), 1);
        assert_eq!((seen[0].id, &seen[0].value[..]), (Some(id), &b"poison"[..]));
        assert_eq!(seen[0].properties, [("trace".to_owned(), "t-1".into())]);

        // Dead: nothing more comes.
        for _ in 0..3 {
            assert!(c.poll().await.unwrap().is_empty());
        }

        let r = client.redrive_dead_letters("pay", 0).await.unwrap();
        assert_eq!((r.redriven, r.remaining), (1, 0));
        let d = client.describe_group("pay").await.unwrap();
        assert_eq!(d.dead_letters, 0, "{d:#?}");
        let back = poll_some(&c).await;
        assert_eq!(back.len(), 1, "{back:#?}");
        let m = &back[0];
        assert_eq!(text(m), "poison");
        assert_eq!(m.attempt(), 1, "a re-driven message starts over");
        assert_eq!(m.delivered_from().0, retry);
        assert_eq!(
            (m.topic.as_str(), m.offset, m.id),
            ("payments", origin, Some(id))
        );
        m.ack();
        c.flush_acks().await.unwrap();
        let d = wait_for_group(client, "pay", "settled", all_settled).await;
        assert_eq!(d.dead_letters, 0);
        let r = client.redrive_dead_letters("pay", 0).await.unwrap();
        assert_eq!(
            (r.redriven, r.remaining),
            (0, 0),
            "re-driving again repeats nothing"
        );
        c.leave().await.unwrap();
    });
}

#[test]
fn an_unacked_message_is_redelivered_after_its_ack_timeout_and_not_before() {
    let clock = ManualClock::new(T0);
    let broker = Broker::start_with_clock(Arc::new(clock.clone()));
    broker.with_client(async |client| {
        client.create_topic("slow", 1, &[]).await.unwrap();
        produce(client, vec![Message::new("slow", "m")]).await;
        let c = client
            .group_consumer(cfg("slowpokes", "slow").ack_timeout(Duration::from_secs(1)))
            .await
            .unwrap();
        let first = poll_some(&c).await;
        assert_eq!(first.len(), 1);
        assert_eq!((first[0].offset, first[0].attempt()), (0, 1));

        // 900 ms on: not due. Several upkeep rounds (50 ms each) pass
        // during these polls.
        clock.advance(900);
        for _ in 0..4 {
            let got = c.poll().await.unwrap();
            assert!(got.is_empty(), "redelivered early: {got:#?}");
        }
        let d = client.describe_group("slowpokes").await.unwrap();
        assert_eq!(
            (d.partitions[0].committed, d.partitions[0].in_flight),
            (0, 1)
        );

        // 1.1 s on: delivered again, one attempt more.
        clock.advance(200);
        let again = poll_some(&c).await;
        assert_eq!(again.len(), 1, "{again:#?}");
        assert_eq!(
            (text(&again[0]), again[0].offset, again[0].attempt()),
            ("m".into(), 0, 2)
        );
        again[0].ack();
        c.flush_acks().await.unwrap();
        wait_for_group(client, "slowpokes", "settled", all_settled).await;
        // The first delivery's late ack is stale now.
        first[0].ack();
        c.flush_acks().await.unwrap();
        assert_eq!(c.ack_stats().stale, 1);
        c.leave().await.unwrap();
    });
}

#[test]
fn reset_to_a_time_replays_exactly_what_came_after_it() {
    let clock = ManualClock::new(T0);
    let broker = Broker::start_with_clock(Arc::new(clock.clone()));
    broker.with_client(async |client| {
        // The broker stamps records with its (manual) clock.
        client
            .create_topic("events", 2, &[("timestamp", "log_append_time")])
            .await
            .unwrap();
        let first = spread("events", "old", 10, 2);
        produce(client, first).await;
        clock.advance(10_000);
        let second = spread("events", "new", 10, 2);
        let replay = values(&second);
        produce(client, second).await;

        let c = client
            .group_consumer(cfg("replay", "events"))
            .await
            .unwrap();
        let got = consume_all(&[&c], 20).await.remove(0);
        assert_eq!(got.len(), 20);
        wait_for_group(client, "replay", "settled", all_settled).await;

        let positions = client
            .reset_group(
                "replay",
                &[],
                ResetTo::Spec(OffsetSpec::Timestamp(T0 + 5_000)),
            )
            .await
            .unwrap();
        let tp = |p| TopicPartition {
            topic: "events".into(),
            partition: p,
        };
        assert_eq!(positions, [(tp(0), 5), (tp(1), 5)]);
        let d = client.describe_group("replay").await.unwrap();
        let committed: Vec<_> = d
            .partitions
            .iter()
            .map(|p| (p.partition, p.committed, p.lag))
            .collect();
        assert_eq!(committed, [(0, 5, 5), (1, 5, 5), (0, 0, 0)], "{d:#?}");

        // The live member goes on from there, without rejoining.
        let again = consume_all(&[&c], 10).await.remove(0);
        let vals = texts(&again);
        assert_eq!(vals.len(), 10, "{vals:?}");
        assert_eq!(set(&vals), set(&replay));
        for m in &again {
            assert!((5..10).contains(&m.offset), "{m:#?}");
            assert_eq!(m.timestamp, T0 + 10_000);
            assert_eq!(m.attempt(), 1);
        }
        for p in 0..2 {
            let offsets: Vec<u64> = again
                .iter()
                .filter(|m| m.partition == p)
                .map(|m| m.offset)
                .collect();
            assert_eq!(offsets, [5, 6, 7, 8, 9], "partition {p}");
        }
        wait_for_group(client, "replay", "settled", all_settled).await;
        c.leave().await.unwrap();
    });
}

// ------------------------------------------------------------------ filters and lag

#[test]
fn tag_filters_deliver_exactly_the_matching_messages() {
    let broker = Broker::start();
    broker.with_client(async |client| {
        client.create_topic("tagged", 2, &[]).await.unwrap();
        let combos: [&[&str]; 8] = [
            &[],
            &["a"],
            &["b"],
            &["a", "b"],
            &["a", "c"],
            &["c"],
            &["b", "c"],
            &["a", "b", "c"],
        ];
        let mut msgs = Vec::new();
        for round in 0..2 {
            for tags in combos {
                let i = msgs.len() as u32;
                let mut m = Message::new("tagged", format!("{round}:{}", tags.join("+")))
                    .partition(Partitioning::Explicit(i % 2));
                for t in tags {
                    m = m.tag(*t);
                }
                msgs.push(m);
            }
        }
        produce(client, msgs).await;
        let has = |tags: &[&str], t: &str| tags.contains(&t);
        let expect = |pred: &dyn Fn(&[&str]) -> bool| -> BTreeSet<String> {
            (0..2)
                .flat_map(|round| {
                    combos
                        .iter()
                        .filter(|tags| pred(tags))
                        .map(move |tags| format!("{round}:{}", tags.join("+")))
                })
                .collect()
        };

        for (group, filter, normalised, want) in [
            (
                "a-not-b",
                "a AND NOT b",
                "a AND NOT b",
                expect(&|t| has(t, "a") && !has(t, "b")),
            ),
            (
                "c-or-ab",
                "c || (a && b)",
                "c OR a AND b",
                expect(&|t| has(t, "c") || (has(t, "a") && has(t, "b"))),
            ),
            (
                "ab-not-c",
                "(a OR b) AND NOT c",
                "(a OR b) AND NOT c",
                expect(&|t| (has(t, "a") || has(t, "b")) && !has(t, "c")),
            ),
        ] {
            let c = client
                .group_consumer(cfg(group, "tagged").tag_filter(filter))
                .await
                .unwrap();
            let got = consume_all(&[&c], want.len()).await.remove(0);
            let vals = texts(&got);
            assert_eq!(vals.len(), want.len(), "{filter}: {vals:?}");
            assert_eq!(set(&vals), want, "{filter}");
            for m in &got {
                let tags: Vec<&str> = m.tags.iter().map(String::as_str).collect();
                assert_eq!(text(m).split_once(':').unwrap().1, tags.join("+"), "{m:#?}");
            }
            // Filtered-out messages count as settled: no lag once the
            // matching ones are acked.
            let d = wait_for_group(client, group, "settled", all_settled).await;
            assert_eq!(d.settings.tag_filter, normalised);
            for p in d.partitions.iter().filter(|p| p.topic == "tagged") {
                assert_eq!((p.committed, p.high_watermark), (8, 8), "{filter}: {p:?}");
            }
            c.leave().await.unwrap();
        }
    });
}

#[test]
fn describe_and_list_report_progress_and_lag() {
    let broker = Broker::start();
    broker.with_client(async |client| {
        client.create_topic("metrics", 3, &[]).await.unwrap();
        let mut msgs = Vec::new();
        for (p, n) in [(0u32, 5), (1, 7), (2, 9)] {
            for i in 0..n {
                msgs.push(
                    Message::new("metrics", format!("{p}-{i}"))
                        .partition(Partitioning::Explicit(p)),
                );
            }
        }
        produce(client, msgs).await;
        let c = client
            .group_consumer(cfg("lagging", "metrics"))
            .await
            .unwrap();
        let me = c.member_id();
        let rows = |d: &GroupDescription| -> Vec<(String, u32, u64, u64, u64, u64)> {
            d.partitions
                .iter()
                .map(|p| {
                    (
                        p.topic.clone(),
                        p.partition,
                        p.committed,
                        p.high_watermark,
                        p.lag,
                        p.in_flight,
                    )
                })
                .collect()
        };
        let retry = retry_topic("lagging");
        let m = |p: u32, committed, hw, in_flight| {
            (
                "metrics".to_owned(),
                p,
                committed,
                hw,
                hw - committed,
                in_flight,
            )
        };

        // Joined, nothing read: everything is lag.
        let d = client.describe_group("lagging").await.unwrap();
        assert_eq!(
            rows(&d),
            [
                m(0, 0, 5, 0),
                m(1, 0, 7, 0),
                m(2, 0, 9, 0),
                (retry.clone(), 0, 0, 0, 0, 0)
            ]
        );
        assert_eq!(d.total_lag(), 21);
        assert!(d.partitions.iter().all(|p| p.owner == me), "{d:#?}");
        assert_eq!(
            (d.members.len(), d.members[0].member_id.as_str()),
            (1, me.as_str())
        );
        assert_eq!(
            (d.retry_topic.as_str(), d.dead_letter_topic.as_str()),
            (retry.as_str(), "sluice.dlq.lagging")
        );
        let listed = client.list_groups().await.unwrap();
        let s = listed.iter().find(|g| g.group == "lagging").unwrap();
        assert_eq!(
            (s.topic.as_str(), s.mode, s.members, s.lag, s.dead_letters),
            ("metrics", GroupMode::Clustering, 1, 21, 0)
        );

        // All delivered; partition 1 acked, partition 0 up to offset 3, and
        // offset 4 of partition 2 (which cannot move the committed offset).
        let got = consume_all_unsettled(&c, 21).await;
        for msg in &got {
            if msg.partition == 1
                || (msg.partition == 0 && msg.offset < 3)
                || (msg.partition == 2 && msg.offset == 4)
            {
                msg.ack();
            }
        }
        c.flush_acks().await.unwrap();
        let d = client.describe_group("lagging").await.unwrap();
        assert_eq!(
            rows(&d),
            [
                m(0, 3, 5, 2),
                m(1, 7, 7, 0),
                m(2, 0, 9, 8),
                (retry.clone(), 0, 0, 0, 0, 0)
            ]
        );
        assert_eq!(d.total_lag(), 2 + 9);
        assert_eq!(d.members[0].in_flight, 10);
        let listed = client.list_groups().await.unwrap();
        let s = listed.iter().find(|g| g.group == "lagging").unwrap();
        assert_eq!((s.members, s.lag), (1, 11));

        for msg in &got {
            msg.ack();
        }
        c.flush_acks().await.unwrap();
        let d = client.describe_group("lagging").await.unwrap();
        assert_eq!(
            rows(&d),
            [
                m(0, 5, 5, 0),
                m(1, 7, 7, 0),
                m(2, 9, 9, 0),
                (retry, 0, 0, 0, 0, 0)
            ]
        );
        c.leave().await.unwrap();
        let listed = client.list_groups().await.unwrap();
        let s = listed.iter().find(|g| g.group == "lagging").unwrap();
        assert_eq!((s.members, s.lag), (0, 0));
    });
}

/// Polls until `n` messages came (or `WAIT` passed), settling none.
async fn consume_all_unsettled(c: &GroupConsumer, n: usize) -> Vec<GroupMessage> {
    let mut got = Vec::new();
    let deadline = Instant::now() + WAIT;
    while got.len() < n && Instant::now() < deadline {
        got.extend(c.poll().await.unwrap());
    }
    assert_eq!(got.len(), n, "{got:#?}");
    got
}

// ------------------------------------------------------------------ bad input

#[test]
fn bad_input_is_refused_clearly_and_loses_nothing() {
    let broker = Broker::start();
    broker.with_client(async |client| {
        client.create_topic("t", 2, &[]).await.unwrap();
        let code = |e: &sluice_client::ClientError| e.code();

        // A tag filter that does not parse: nothing is created.
        let err = client
            .group_consumer(cfg("filtered", "t").tag_filter("a AND (b"))
            .await
            .unwrap_err();
        assert_eq!(code(&err), Some(ErrorCode::InvalidArgument), "{err}");
        let msg = err.to_string();
        assert!(
            msg.contains(r#"tag filter "a AND (b""#) && msg.contains("column 9"),
            "{msg}"
        );
        let err = client.describe_group("filtered").await.unwrap_err();
        assert_eq!(code(&err), Some(ErrorCode::UnknownGroup), "{err}");
        let topics = client.list_topics().await.unwrap();
        assert!(
            !topics.iter().any(|t| t.name.ends_with(".filtered")),
            "a refused join created topics: {topics:?}"
        );
        // Other bad settings and names.
        for (what, config) in [
            ("max attempts 0", cfg("g", "t").max_attempts(0)),
            (
                "ack timeout 5 ms",
                cfg("g", "t").ack_timeout(Duration::from_millis(5)),
            ),
            ("max in flight 0", cfg("g", "t").max_in_flight(0)),
            ("a bad group name", cfg("no spaces!", "t")),
        ] {
            let err = client.group_consumer(config).await.unwrap_err();
            assert_eq!(
                code(&err),
                Some(ErrorCode::InvalidArgument),
                "{what}: {err}"
            );
        }
        let err = client.group_consumer(cfg("g", "nosuch")).await.unwrap_err();
        assert_eq!(code(&err), Some(ErrorCode::UnknownTopic), "{err}");

        // Other settings while a member is live.
        let live = client.group_consumer(cfg("shared", "t")).await.unwrap();
        let err = client
            .group_consumer(cfg("shared", "t").ordered(true))
            .await
            .unwrap_err();
        assert_eq!(code(&err), Some(ErrorCode::InconsistentGroup), "{err}");
        assert!(err.to_string().contains("ordered false vs true"), "{err}");
        let err = client
            .group_consumer(cfg("shared", "t").tag_filter("x"))
            .await
            .unwrap_err();
        assert_eq!(code(&err), Some(ErrorCode::InconsistentGroup), "{err}");
        // The same filter spelled differently is the same setting.
        let same = client
            .group_consumer(cfg("shared", "t").tag_filter("*"))
            .await
            .unwrap();
        same.leave().await.unwrap();

        // Unknown groups.
        for err in [
            client.describe_group("nosuch").await.unwrap_err(),
            client
                .reset_group("nosuch", &[], ResetTo::Offset(0))
                .await
                .unwrap_err(),
            client.redrive_dead_letters("nosuch", 0).await.unwrap_err(),
            client.delete_group("nosuch").await.unwrap_err(),
        ] {
            assert_eq!(code(&err), Some(ErrorCode::UnknownGroup), "{err}");
            assert!(err.to_string().contains(r#""nosuch""#), "{err}");
        }
        let err = client
            .reset_group("shared", &[7], ResetTo::Offset(0))
            .await
            .unwrap_err();
        assert_eq!(code(&err), Some(ErrorCode::UnknownPartition), "{err}");

        // Reserved topic names.
        let err = client.create_topic("sluice.x", 1, &[]).await.unwrap_err();
        assert_eq!(code(&err), Some(ErrorCode::InvalidConfig), "{err}");
        let topics = client.list_topics().await.unwrap();
        assert!(!topics.iter().any(|t| t.name == "sluice.x"), "{topics:?}");

        // Deleting a group with live members.
        let err = client.delete_group("shared").await.unwrap_err();
        assert_eq!(code(&err), Some(ErrorCode::InvalidArgument), "{err}");
        assert!(err.to_string().contains("live member"), "{err}");

        // The live member lost nothing through all of this.
        let msgs = spread("t", "v", 10, 2);
        let all = values(&msgs);
        produce(client, msgs).await;
        let got = consume_all(&[&live], 10).await.remove(0);
        assert_eq!(texts(&got).len(), 10);
        assert_eq!(set(&texts(&got)), set(&all));
        let d = wait_for_group(client, "shared", "settled", all_settled).await;
        assert!(
            !d.settings.ordered && d.settings.tag_filter.is_empty(),
            "{d:#?}"
        );
        assert_eq!(d.members.len(), 1);

        live.leave().await.unwrap();
        client.delete_group("shared").await.unwrap();
        let err = client.describe_group("shared").await.unwrap_err();
        assert_eq!(code(&err), Some(ErrorCode::UnknownGroup), "{err}");
        let listed = client.list_groups().await.unwrap();
        assert!(!listed.iter().any(|g| g.group == "shared"), "{listed:?}");
    });
}

// ------------------------------------------------------------------ push

#[test]
fn a_subscription_streams_everything_produced_after_it_starts() {
    let broker = Broker::start();
    broker.with_client(async |client| {
        client.create_topic("feed", 2, &[]).await.unwrap();
        produce(client, spread("feed", "before", 10, 2)).await;
        // Starts at the end (the default): an empty poll fixes the position
        // before anything else is produced.
        let c = client
            .group_consumer(
                GroupConfig::new("pushers", "feed")
                    .poll_max_wait(Duration::from_millis(100))
                    .credit_window(16),
            )
            .await
            .unwrap();
        assert!(c.poll().await.unwrap().is_empty());
        let mut stream = c.subscribe();
        let after = spread("feed", "after", 50, 2);
        let want = values(&after);
        produce(client, after).await;

        let mut got = Vec::new();
        while got.len() < 50 {
            let m = tokio::time::timeout(WAIT, stream.next())
                .await
                .unwrap_or_else(|_| panic!("only {} pushed", got.len()))
                .unwrap()
                .unwrap();
            m.ack();
            got.push(m);
        }
        let more = tokio::time::timeout(Duration::from_millis(300), stream.next()).await;
        assert!(more.is_err(), "pushed more: {more:?}");
        let vals = texts(&got);
        assert_eq!(set(&vals), set(&want));
        for p in 0..2 {
            let offsets: Vec<u64> = got
                .iter()
                .filter(|m| m.partition == p)
                .map(|m| m.offset)
                .collect();
            assert_eq!(
                offsets,
                (5..30).collect::<Vec<u64>>(),
                "partition {p} in order, once each"
            );
        }
        stream.consumer().flush_acks().await.unwrap();
        assert_eq!(stream.consumer().ack_stats().settled, 50);
        stream.leave().await.unwrap();
        let d = client.describe_group("pushers").await.unwrap();
        assert!(all_settled(&d) && d.members.is_empty(), "{d:#?}");
    });
}

#[test]
fn run_acks_what_succeeds_and_retries_what_fails() {
    let broker = Broker::start();
    broker.with_client(async |client| {
        client.create_topic("work", 2, &[]).await.unwrap();
        let msgs = spread("work", "w", 40, 2);
        let all = values(&msgs);
        produce(client, msgs).await;
        let flaky = |v: &str| v[1..].parse::<usize>().unwrap() % 5 == 0;

        let c = client
            .group_consumer(cfg("runners", "work").retry_ladder([Duration::from_millis(10)]))
            .await
            .unwrap();
        let seen: Arc<Mutex<Vec<(String, u16, bool)>>> = Arc::default();
        let done = Arc::new(tokio::sync::Notify::new());
        let (seen2, done2) = (seen.clone(), done.clone());
        let handler = move |m: GroupMessage| {
            let (seen, done) = (seen2.clone(), done2.clone());
            async move {
                let v = text(&m);
                let fail = m.attempt() == 1 && flaky(&v);
                let mut s = seen.lock().unwrap();
                s.push((v.clone(), m.attempt(), !fail));
                if s.iter().filter(|(_, _, ok)| *ok).count() == 40 {
                    done.notify_one();
                }
                drop(s);
                if fail {
                    Err(format!("{v} failed"))
                } else {
                    Ok(())
                }
            }
        };
        let shutdown = async move { done.notified().await };
        tokio::time::timeout(WAIT, c.run(4, shutdown, handler))
            .await
            .expect("run never finished")
            .unwrap();

        let seen = seen.lock().unwrap().clone();
        let ok: Vec<String> = seen.iter().filter(|s| s.2).map(|s| s.0.clone()).collect();
        assert_eq!(ok.len(), 40, "each succeeded once: {seen:?}");
        assert_eq!(set(&ok), set(&all));
        for v in &all {
            let runs: Vec<(u16, bool)> = seen
                .iter()
                .filter(|s| &s.0 == v)
                .map(|s| (s.1, s.2))
                .collect();
            let want = if flaky(v) {
                vec![(1, false), (2, true)]
            } else {
                vec![(1, true)]
            };
            assert_eq!(runs, want, "{v}");
        }
        let d = wait_for_group(client, "runners", "settled", all_settled).await;
        assert!(d.members.is_empty(), "run leaves the group: {d:#?}");
        assert_eq!(d.dead_letters, 0);
        let retried = d
            .partitions
            .iter()
            .find(|p| p.topic == retry_topic("runners"))
            .unwrap();
        assert_eq!(
            retried.high_watermark, 8,
            "the 8 failures went through the retry topic"
        );
    });
}

// ------------------------------------------------------------------ more edges

#[test]
fn retries_of_filtered_groups_keep_their_tags_and_come_back() {
    let broker = Broker::start();
    broker.with_client(async |client| {
        client.create_topic("tagged", 1, &[]).await.unwrap();
        let msgs = vec![
            Message::new("tagged", "a1").tag("a"),
            Message::new("tagged", "ab").tag("a").tag("b"),
            Message::new("tagged", "a2").tag("a").tag("c"),
        ];
        produce(client, msgs).await;
        let c = client
            .group_consumer(
                cfg("picky", "tagged")
                    .tag_filter("a AND NOT b")
                    .retry_ladder([Duration::from_millis(10)]),
            )
            .await
            .unwrap();
        let mut seen = Vec::new();
        let deadline = Instant::now() + WAIT;
        while seen.len() < 4 {
            assert!(Instant::now() < deadline, "seen {seen:?}");
            for m in c.poll().await.unwrap() {
                seen.push((text(&m), m.attempt(), m.tags.clone()));
                if m.attempt() == 1 {
                    m.nack("again");
                } else {
                    m.ack();
                }
            }
        }
        c.flush_acks().await.unwrap();
        seen.sort();
        let tags = |t: &[&str]| t.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            seen,
            [
                ("a1".to_owned(), 1, tags(&["a"])),
                ("a1".to_owned(), 2, tags(&["a"])),
                ("a2".to_owned(), 1, tags(&["a", "c"])),
                ("a2".to_owned(), 2, tags(&["a", "c"])),
            ]
        );
        let d = wait_for_group(client, "picky", "settled", all_settled).await;
        assert_eq!(d.dead_letters, 0);
        assert!(c.poll().await.unwrap().is_empty());
        c.leave().await.unwrap();
    });
}

#[test]
fn an_ack_timeout_on_the_last_attempt_dead_letters_the_message() {
    let clock = ManualClock::new(T0);
    let broker = Broker::start_with_clock(Arc::new(clock.clone()));
    broker.with_client(async |client| {
        client.create_topic("stuck", 1, &[]).await.unwrap();
        produce(client, vec![Message::new("stuck", "m")]).await;
        let c = client
            .group_consumer(
                cfg("stuckies", "stuck")
                    .ack_timeout(Duration::from_secs(1))
                    .max_attempts(2),
            )
            .await
            .unwrap();
        for attempt in 1..=2 {
            let got = poll_some(&c).await;
            assert_eq!(got.len(), 1, "{got:#?}");
            assert_eq!(got[0].attempt(), attempt);
            clock.advance(1_001);
        }
        let d = wait_for_group(client, "stuckies", "dead-lettered it", |d| {
            d.dead_letters == 1
        })
        .await;
        assert!(all_settled(&d), "{d:#?}");
        let dead = raw_records(client, &dead_letter_topic("stuckies")).await;
        assert_eq!(dead.len(), 1, "{dead:#?}");
        assert_eq!(
            dead[0].header(headers::DEAD_REASON),
            Some(&b"ack timeout"[..])
        );
        assert_eq!(
            dead[0].header(headers::ATTEMPT),
            Some(&2u32.to_be_bytes()[..])
        );
        assert!(c.poll().await.unwrap().is_empty());
        c.leave().await.unwrap();
    });
}

#[test]
fn max_in_flight_holds_back_new_messages_until_the_oldest_is_settled() {
    let broker = Broker::start();
    broker.with_client(async |client| {
        client.create_topic("narrow", 1, &[]).await.unwrap();
        produce(client, spread("narrow", "n", 10, 1)).await;
        let c = client
            .group_consumer(
                cfg("narrowed", "narrow")
                    .max_in_flight(4)
                    .poll_max_wait(Duration::from_millis(800)),
            )
            .await
            .unwrap();
        let first = consume_all_unsettled(&c, 4).await;
        assert_eq!(texts(&first), ["n0", "n1", "n2", "n3"]);
        // All but the oldest acked: the window is still full.
        for m in &first[1..] {
            m.ack();
        }
        c.flush_acks().await.unwrap();
        assert!(c.poll().await.unwrap().is_empty(), "read past the window");
        let d = client.describe_group("narrowed").await.unwrap();
        assert_eq!(
            (d.partitions[0].committed, d.partitions[0].in_flight),
            (0, 1)
        );
        // A poll waiting when the oldest is acked gets the next ones at once.
        let (got, ()) = tokio::join!(c.poll(), async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            first[0].ack();
            c.flush_acks().await.unwrap();
        });
        assert_eq!(texts(&got.unwrap()), ["n4", "n5", "n6", "n7"]);
        c.leave().await.unwrap();
    });
}

#[test]
fn an_ordered_key_stays_blocked_until_its_holder_is_gone() {
    let broker = Broker::start();
    broker.with_client(async |client| {
        client.create_topic("keys", 1, &[]).await.unwrap();
        produce(
            client,
            vec![
                Message::new("keys", "x0").key("x"),
                Message::new("keys", "y0").key("y"),
                Message::new("keys", "x1").key("x"),
            ],
        )
        .await;
        let (ca, cb) = (
            broker.connect("holder").await,
            broker.connect("other").await,
        );
        let config = || {
            cfg("seq", "keys")
                .ordered(true)
                .session_timeout(Duration::from_secs(60))
        };
        let a = ca.group_consumer(config()).await.unwrap();
        let held = poll_some(&a).await;
        assert_eq!(texts(&held), ["x0", "y0"], "x1 waits for x0");
        held[1].ack();
        a.flush_acks().await.unwrap();
        // A second member takes the partition (A has only the retry
        // topic's, or B does): x1 still waits for x0, held by A.
        let b = cb.group_consumer(config()).await.unwrap();
        for c in [&a, &b] {
            let got = c.poll().await.unwrap();
            assert!(got.is_empty(), "delivered while x0 is held: {got:#?}");
        }
        ca.connection().kill_connection().await;
        wait_for_group(client, "seq", "lost the holder", |d| d.members.len() == 1).await;
        drop(a);
        let got = consume_all(&[&b], 2).await.remove(0);
        assert_eq!(
            got.iter()
                .map(|m| (text(m), m.attempt()))
                .collect::<Vec<_>>(),
            [("x0".to_owned(), 1), ("x1".to_owned(), 1)]
        );
        b.leave().await.unwrap();
        ca.close().await;
        cb.close().await;
    });
}

/// Known broker bug, reproduced here (it is a race, so it loops): DeleteTopic
/// removes the groups' stored offsets on the topic (`Store::delete_topic`)
/// before the groups drop their windows on it (`Groups::topic_changed`,
/// called after), so an upkeep commit in between writes the old offsets
/// back. A topic created again under the name then starts the group at its
/// old offsets: here every message of the new topic is skipped.
#[test]
fn offsets_of_a_deleted_topic_do_not_come_back() {
    let broker = Broker::start();
    broker.with_client(async |client| {
        for i in 0..200 {
            client.create_topic("t", 8, &[]).await.unwrap();
            produce(client, spread("t", "a", 80, 8)).await;
            let group = format!("g{i}");
            let c = client.group_consumer(cfg(&group, "t")).await.unwrap();
            for m in consume_all_unsettled(&c, 80).await {
                m.ack();
            }
            // The acks moved every committed offset to 10; the next upkeep
            // round (within 50 ms) stores them.
            c.leave().await.unwrap();
            client.delete_topic("t").await.unwrap();
            client.create_topic("t", 8, &[]).await.unwrap();
            produce(client, spread("t", "b", 80, 8)).await;
            let d = client.describe_group(&group).await.unwrap();
            let committed: Vec<u64> = d
                .partitions
                .iter()
                .filter(|p| p.topic == "t")
                .map(|p| p.committed)
                .collect();
            assert_eq!(
                committed,
                [0; 8],
                "round {i}: the deleted topic's offsets came back; the group would skip the new topic's messages"
            );
            client.delete_topic("t").await.unwrap();
        }
    });
}

// ------------------------------------------------------------------ crash

fn crash_config(addr: &str, data: &Path) -> ClientConfig {
    ClientConfig::new(addr)
        .ca_cert(data.join("tls/cert.pem"))
        .client_id("groups-crash-test")
}

/// The offsets the child broker has stored for `group`, read from its
/// metadata store opened read-only beside it (the open replays the
/// write-ahead log, so this sees unsynced writes too). `None`: none stored.
fn stored_offsets(data: &Path, group: &str, topic: &str, partitions: u32) -> Vec<Option<u64>> {
    use sluice_broker::store::catalog::{CF_GROUP_OFFSETS, keys};
    let path = data.join("meta");
    let opts = rocksdb::Options::default();
    let cfs = rocksdb::DB::list_cf(&opts, &path).unwrap();
    let db = rocksdb::DB::open_cf_for_read_only(&opts, &path, cfs, false).unwrap();
    let cf = db.cf_handle(CF_GROUP_OFFSETS).unwrap();
    (0..partitions)
        .map(|p| {
            let key = keys::offset_key(group, topic, p).unwrap();
            db.get_cf(&cf, key)
                .unwrap()
                .map(|v| keys::decode_offset_value(&v).unwrap())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_resumes_after_a_broker_sigkill_without_losing_messages() {
    let exe = Path::new(env!("CARGO_BIN_EXE_sluice"));
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (mut broker, addr) = sluice_broker::node::spawn_dev_process(exe, &data).unwrap();
    let client = Client::connect(crash_config(&addr, &data)).await.unwrap();
    client.create_topic("c", 3, &[]).await.unwrap();
    let msgs = spread("c", "m", 300, 3);
    let all = values(&msgs);
    let deliveries = produce(&client, msgs).await;
    // (partition, offset) -> value
    let at: BTreeMap<(u32, u64), String> = deliveries
        .iter()
        .zip(&all)
        .map(|(d, v)| ((d.partition, d.offset), v.clone()))
        .collect();

    // Half acked: offsets below 50 in each partition.
    let c = client.group_consumer(cfg("survivors", "c")).await.unwrap();
    let got = consume_all_unsettled(&c, 300).await;
    let mut acked_before = Vec::new();
    for m in &got {
        if m.offset < 50 {
            m.ack();
            acked_before.push(text(m));
        }
    }
    c.flush_acks().await.unwrap();
    assert_eq!(c.ack_stats().settled, 150);
    wait_for_group(&client, "survivors", "committed half", |d| {
        d.partitions
            .iter()
            .filter(|p| p.topic == "c")
            .all(|p| p.committed == 50)
    })
    .await;
    // The broker shows progress up to one upkeep period (50 ms) before it
    // stores it: wait until it is stored, so the kill tests that a stored
    // commit survives, not only that nothing is lost without one.
    let deadline = Instant::now() + WAIT;
    loop {
        let stored = stored_offsets(&data, "survivors", "c", 3);
        if stored == [Some(50); 3] {
            break;
        }
        assert!(Instant::now() < deadline, "never stored: {stored:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    broker.kill().unwrap();
    broker.wait().unwrap();
    drop(c);
    client.close().await;

    let (mut broker, addr) = sluice_broker::node::spawn_dev_process(exe, &data).unwrap();
    let client = Client::connect(crash_config(&addr, &data)).await.unwrap();
    // What the broker stored before it died: the group resumes there.
    let d = client.describe_group("survivors").await.unwrap();
    let stored: BTreeMap<u32, u64> = d
        .partitions
        .iter()
        .filter(|p| p.topic == "c")
        .map(|p| (p.partition, p.committed))
        .collect();
    assert_eq!(
        stored,
        BTreeMap::from([(0, 50), (1, 50), (2, 50)]),
        "{d:#?}"
    );
    let want: Vec<String> = at
        .iter()
        .filter(|((p, o), _)| *o >= stored[p])
        .map(|(_, v)| v.clone())
        .collect();
    let c = client.group_consumer(cfg("survivors", "c")).await.unwrap();
    let after = consume_all(&[&c], want.len()).await.remove(0);
    let after_vals = texts(&after);
    assert_eq!(
        after_vals.len(),
        want.len(),
        "no duplicates after the restart: {after_vals:?}"
    );
    assert_eq!(
        set(&after_vals),
        set(&want),
        "resumed at the stored offsets {stored:?}"
    );
    let union: BTreeSet<String> = set(&acked_before)
        .union(&set(&after_vals))
        .cloned()
        .collect();
    assert_eq!(union, set(&all), "nothing lost");
    wait_for_group(&client, "survivors", "settled", all_settled).await;

    c.leave().await.unwrap();
    client.close().await;
    broker.kill().unwrap();
    broker.wait().unwrap();
}
