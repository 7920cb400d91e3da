//! Consumer-group members in tests: configurations, polling until a count
//! came, and waiting for a group's state as DescribeGroup reports it.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use sluice_client::{
    Client, ErrorCode, GroupConfig, GroupConsumer, GroupDescription, GroupMessage, Message,
    OffsetSpec, Partitioning,
};

use super::client::{WAIT, wait_for};

/// A group on `topic` starting at the earliest message, with short polls.
pub fn cfg(group: &str, topic: &str) -> GroupConfig {
    GroupConfig::new(group, topic)
        .start(OffsetSpec::Earliest)
        .poll_max_wait(Duration::from_millis(100))
}

pub fn text(m: &GroupMessage) -> String {
    String::from_utf8_lossy(&m.value).into_owned()
}

pub fn texts<'a>(ms: impl IntoIterator<Item = &'a GroupMessage>) -> Vec<String> {
    ms.into_iter().map(text).collect()
}

pub fn set<T: Ord + Clone>(items: &[T]) -> BTreeSet<T> {
    items.iter().cloned().collect()
}

/// `n` messages `<prefix><i>`, message i on partition `i % partitions`.
pub fn spread(topic: &str, prefix: &str, n: usize, partitions: u32) -> Vec<Message> {
    (0..n)
        .map(|i| {
            Message::new(topic, format!("{prefix}{i}"))
                .partition(Partitioning::Explicit(i as u32 % partitions))
        })
        .collect()
}

pub fn values(msgs: &[Message]) -> Vec<String> {
    msgs.iter()
        .map(|m| String::from_utf8_lossy(&m.value).into_owned())
        .collect()
}

/// Polls each consumer in turn, acking everything, until `n` messages came
/// in all (or `WAIT` passed), then once more each, to catch any beyond `n`.
/// Returns what each consumer received.
pub async fn consume_all(consumers: &[&GroupConsumer], n: usize) -> Vec<Vec<GroupMessage>> {
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

/// Polls `consumer` until it has `n` messages (acking them), then once
/// more to see that nothing more comes; their values, sorted.
pub async fn consume_sorted(consumer: &GroupConsumer, n: usize) -> Vec<String> {
    let mut got = Vec::new();
    let deadline = Instant::now() + WAIT;
    while got.len() < n && Instant::now() < deadline {
        for m in consumer.poll().await.unwrap() {
            got.push(text(&m));
            m.ack();
        }
    }
    for m in consumer.poll().await.unwrap() {
        got.push(text(&m));
        m.ack();
    }
    consumer.flush_acks().await.unwrap();
    got.sort();
    got
}

/// Polls until at least one message comes (or `WAIT` passes); settles nothing.
pub async fn poll_some(c: &GroupConsumer) -> Vec<GroupMessage> {
    let deadline = Instant::now() + WAIT;
    loop {
        let got = c.poll().await.unwrap();
        if !got.is_empty() || Instant::now() > deadline {
            return got;
        }
    }
}

/// Polls until `n` messages came (or `WAIT` passed), settling none.
pub async fn consume_all_unsettled(c: &GroupConsumer, n: usize) -> Vec<GroupMessage> {
    let mut got = Vec::new();
    let deadline = Instant::now() + WAIT;
    while got.len() < n && Instant::now() < deadline {
        got.extend(c.poll().await.unwrap());
    }
    assert_eq!(got.len(), n, "{got:#?}");
    got
}

/// Describes the group until `ok` holds; fails with the last description
/// after `WAIT`.
pub async fn wait_for_group(
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
pub fn all_settled(d: &GroupDescription) -> bool {
    d.partitions.iter().all(|p| p.lag == 0 && p.in_flight == 0)
}

/// Waits until the group exists with partitions and every one of them is
/// settled (no lag, nothing in flight), the group's retry topic included:
/// for groups whose members join by themselves (a handler's).
pub async fn wait_settled(client: &Client, group: &str) {
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

/// The partitions of the group's topic that `member` owns, per the broker.
pub fn owned_by(d: &GroupDescription, member: &str) -> BTreeSet<u32> {
    d.partitions
        .iter()
        .filter(|p| p.owner == member && p.topic == d.settings.topic)
        .map(|p| p.partition)
        .collect()
}
