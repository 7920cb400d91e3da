//! Under load: a transform SIGKILLed mid-way (the broker a child
//! process), upgrades and attach changes while messages flow; nothing is
//! lost or repeated.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use sluice_client::{
    Client, FunctionManifest, GroupSettings, Message, OffsetSpec, Partitioning, ProducerConfig,
};
use sluice_sample_components as components;

use super::support::{count, errors, wait_caught_up};
use crate::common::child::KilledOnDrop;
use crate::common::client::sorted;
use crate::common::groups::wait_settled;
use crate::common::records::{Record, read_topic, sorted_values};
use crate::common::{Broker, produce, wait_for};

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
        let (broker, client) = KilledOnDrop::start(&data, "functions-crash-test").await;
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
