//! Where outputs go: the router's fan-out and dead letters, outputs to
//! missing or reserved topics, the reminder's delayed follow-up.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_broker::clock::ManualClock;
use sluice_broker::functions::dead_letter_topic as fn_dead_letter_topic;
use sluice_client::{
    FunctionManifest, GroupConfig, GroupSettings, Message, OffsetSpec, Partitioning,
};
use sluice_protocol::headers;
use sluice_sample_components as components;

use super::support::{count, errors, order, order_id, wait_caught_up, wait_log};
use crate::common::client::{T0, sorted};
use crate::common::groups::wait_settled;
use crate::common::records::{read_topic, sorted_values, wait_records};
use crate::common::{Broker, produce, wait_for};

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
