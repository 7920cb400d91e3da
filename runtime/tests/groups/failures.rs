//! Failed deliveries: retries, dead letters and their redrive, ack
//! timeouts.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_broker::clock::ManualClock;
use sluice_client::group::{dead_letter_topic, retry_topic};
use sluice_client::{ConsumerConfig, Message, SeekTo};
use sluice_protocol::headers;

use crate::common::client::T0;
use crate::common::groups::{all_settled, cfg, poll_some, text, wait_for_group};
use crate::common::records::read_partition;
use crate::common::{Broker, WAIT, produce};

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
        let dead = read_partition(client, &dlq, 0).await;
        assert_eq!(dead.len(), 1, "{dead:#?}");
        let r = &dead[0];
        assert_eq!(r.offset, 0);
        assert_eq!(
            (r.key.as_deref(), r.value.as_bytes()),
            (Some(&b"p1"[..]), &b"poison"[..])
        );
        assert_eq!(
            r.raw_header(headers::DEAD_REASON),
            Some(&b"db down"[..]),
            "{r:#?}"
        );
        assert_eq!(
            r.raw_header(headers::ATTEMPT),
            Some(&3u32.to_be_bytes()[..]),
            "{r:#?}"
        );
        assert_eq!(r.raw_header(headers::ORIGIN_TOPIC), Some(&b"payments"[..]));
        assert_eq!(
            r.raw_header(headers::ORIGIN_PARTITION),
            Some(&0u32.to_be_bytes()[..])
        );
        assert_eq!(
            r.raw_header(headers::ORIGIN_OFFSET),
            Some(&origin.to_be_bytes()[..])
        );
        assert_eq!(r.raw_header(headers::MESSAGE_ID), Some(&id.0[..]));
        assert_eq!(r.raw_header("trace"), Some(&b"t-1"[..]));
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
        let dead = read_partition(client, &dead_letter_topic("stuckies"), 0).await;
        assert_eq!(dead.len(), 1, "{dead:#?}");
        assert_eq!(
            dead[0].raw_header(headers::DEAD_REASON),
            Some(&b"ack timeout"[..])
        );
        assert_eq!(
            dead[0].raw_header(headers::ATTEMPT),
            Some(&2u32.to_be_bytes()[..])
        );
        assert!(c.poll().await.unwrap().is_empty());
        c.leave().await.unwrap();
    });
}
