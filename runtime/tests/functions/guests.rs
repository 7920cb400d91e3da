//! Misbehaving guests: trapping handlers, filters that loop or run out of
//! memory.

use std::time::Duration;

use sluice_client::{
    FunctionManifest, GroupConfig, GroupSettings, Message, OffsetSpec, Partitioning,
};
use sluice_protocol::headers;
use sluice_sample_components as components;

use super::support::{errors, wait_caught_up, wait_log};
use crate::common::client::sorted;
use crate::common::groups::{consume_sorted, wait_settled};
use crate::common::records::{Record, read_topic, sorted_values, wait_records};
use crate::common::{Broker, produce, wait_for};

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
        assert_eq!(consume_sorted(&spinners, want.len()).await, want);
        assert_eq!(consume_sorted(&bombed, want.len()).await, want);
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
