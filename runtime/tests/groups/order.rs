//! Ordered groups and flow control: per-key order through retries, a
//! key blocked by its holder, max-in-flight.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use sluice_client::Message;

use crate::common::groups::{
    all_settled, cfg, consume_all, consume_all_unsettled, poll_some, spread, text, texts,
    wait_for_group,
};
use crate::common::{Broker, WAIT, produce};

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
