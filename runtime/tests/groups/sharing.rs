//! Sharing a topic: clustering members split it, a killed member's
//! messages go to the survivor, broadcast members each get all of it.

use std::collections::BTreeSet;
use std::time::Duration;

use sluice_client::{GroupConsumer, GroupDescription, GroupMessage, GroupMode};

use crate::common::groups::{
    all_settled, cfg, consume_all, owned_by, poll_some, set, spread, text, texts, values,
    wait_for_group,
};
use crate::common::{Broker, produce};

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
