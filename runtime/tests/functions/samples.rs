//! The sample functions at work: the PII transform, the tag filter on a
//! group, the order-totals handler keeping its kv across a restart.

use std::time::{Duration, Instant};

use sluice_client::{
    FunctionManifest, GroupConfig, GroupSettings, Message, OffsetSpec, Partitioning,
};
use sluice_sample_components as components;

use super::support::wait_log;
use crate::common::records::wait_records;
use crate::common::{Broker, WAIT, produce};

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
