//! What the admin requests do and report: reset, describe and list,
//! refused bad input, offsets of a deleted topic.

use std::sync::Arc;
use std::time::Duration;

use sluice_broker::clock::ManualClock;
use sluice_client::group::retry_topic;
use sluice_client::{
    ErrorCode, GroupDescription, GroupMode, Message, OffsetSpec, Partitioning, ResetTo,
    TopicPartition,
};

use crate::common::client::T0;
use crate::common::groups::{
    all_settled, cfg, consume_all, consume_all_unsettled, set, spread, texts, values,
    wait_for_group,
};
use crate::common::{Broker, produce};

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
