//! The delivery matrix: every combination of how members take messages
//! (pull, push), the group's mode (clustering, broadcast), ordering
//! (unordered, ordered) and filter (none, a tag filter, a filter function),
//! 24 cases, each on a broker of its own and through the same checks.
//!
//! Each case: a topic of 2 partitions, a group with the case's settings,
//! two members (on connections of their own) joined before anything is
//! produced, then [`N`] keyed and tagged messages. The members take and
//! ack everything. Then:
//!
//! - exactly the messages the filter selects were delivered: in
//!   clustering each to one of the members, in broadcast each to both;
//!   every one on its first attempt;
//! - nothing more comes once the acks are in, and the group is settled
//!   (the filtered-out messages count as settled);
//! - in clustering, the members read disjoint partitions;
//! - ordered: each member received each key's messages in the order they
//!   were produced (in clustering, every key to one member). Unordered
//!   groups promise no order, and none is checked.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use sluice_client::{
    Client, FunctionManifest, GroupConsumer, GroupMessage, GroupMode, GroupStream, Message,
    Partitioning,
};
use sluice_sample_components as components;

use crate::common::groups::{all_settled, cfg, consume_all, text, wait_for_group};
use crate::common::{AsyncBroker, WAIT, produce};

/// Messages per case.
const N: usize = 40;
/// Keys `k0..k4`; key k goes to partition k % 2, so both partitions hold
/// several keys and every key alternates red and blue.
const KEYS: usize = 5;
const TOPIC: &str = "matrix";
const GROUP: &str = "matrix-group";
/// How long a member waits to see that nothing more is pushed.
const QUIET: Duration = Duration::from_millis(300);

#[derive(Debug, Clone, Copy, PartialEq)]
enum Take {
    Pull,
    Push,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    Clustering,
    Broadcast,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Order {
    Unordered,
    Ordered,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Filter {
    /// Every message.
    All,
    /// The tag filter `red`: the even messages.
    Tags,
    /// The JSON filter function with `pick == true`: messages 0, 1, 4, 5, ...
    Function,
}

#[derive(Debug, Clone, Copy)]
struct Case {
    take: Take,
    mode: Mode,
    order: Order,
    filter: Filter,
}

/// Message `i`: value `{"i":i,"pick":..}` with key `k<i % KEYS>` on that
/// key's partition, tagged `red` (even) or `blue` (odd).
fn message(i: usize) -> Message {
    let key = i % KEYS;
    let tag = if i.is_multiple_of(2) { "red" } else { "blue" };
    Message::new(TOPIC, format!(r#"{{"i":{i},"pick":{}}}"#, picked(i)))
        .key(format!("k{key}"))
        .tag(tag)
        .partition(Partitioning::Explicit(key as u32 % 2))
}

/// What the filter function selects.
fn picked(i: usize) -> bool {
    i % 4 < 2
}

fn selected(filter: Filter, i: usize) -> bool {
    match filter {
        Filter::All => true,
        Filter::Tags => i.is_multiple_of(2),
        Filter::Function => picked(i),
    }
}

/// The `i` of a delivered [`message`].
fn index(m: &GroupMessage) -> usize {
    let v: serde_json::Value = serde_json::from_slice(&m.value)
        .unwrap_or_else(|e| panic!("not a matrix message: {}: {e}", text(m)));
    v["i"].as_u64().unwrap() as usize
}

async fn join(client: &Client, case: Case, instance: &str) -> GroupConsumer {
    let mut config = cfg(GROUP, TOPIC).ordered(case.order == Order::Ordered);
    if case.mode == Mode::Broadcast {
        config = config.broadcast().instance_id(instance);
    }
    if case.filter == Filter::Tags {
        config = config.tag_filter("red");
    }
    client.group_consumer(config).await.unwrap()
}

async fn run(case: Case) {
    let broker = AsyncBroker::start().await;
    let client = broker.client().await;
    client.create_topic(TOPIC, 2, &[]).await.unwrap();
    if case.filter == Filter::Function {
        client
            .deploy_function(
                FunctionManifest::filter("picker", GROUP).config("predicate", "pick == true"),
                components::bytes(components::JSON_FILTER),
            )
            .await
            .unwrap();
    }
    let (c1, c2) = (broker.connect("m1").await, broker.connect("m2").await);
    let m1 = join(&c1, case, "i1").await;
    let m2 = join(&c2, case, "i2").await;
    wait_for_group(&client, GROUP, "had both members", |d| d.members.len() == 2).await;

    produce(&client, (0..N).map(message).collect()).await;
    let want: Vec<usize> = (0..N).filter(|&i| selected(case.filter, i)).collect();
    let copies = match case.mode {
        Mode::Clustering => 1,
        Mode::Broadcast => 2,
    };
    let total = want.len() * copies;

    let (got, mut members) = match case.take {
        Take::Pull => {
            let got = consume_all(&[&m1, &m2], total).await;
            (got, Members::Pulled(m1, m2))
        }
        Take::Push => {
            let (s1, s2) = (m1.subscribe(), m2.subscribe());
            push_all(s1, s2, total).await
        }
    };
    let d = wait_for_group(&client, GROUP, "settled", all_settled).await;
    assert_eq!(
        d.settings.mode,
        match case.mode {
            Mode::Clustering => GroupMode::Clustering,
            Mode::Broadcast => GroupMode::Broadcast,
        }
    );
    for p in d.partitions.iter().filter(|p| p.topic == TOPIC) {
        assert_eq!(p.committed, p.high_watermark, "{case:?}: {p:?}");
    }
    members.nothing_more(case).await;

    let indexes: Vec<Vec<usize>> = got.iter().map(|g| g.iter().map(index).collect()).collect();
    for (n, g) in got.iter().enumerate() {
        assert!(
            g.iter().all(|m| m.attempt() == 1),
            "{case:?}: member {n} got a redelivery: {g:#?}"
        );
    }
    match case.mode {
        Mode::Clustering => {
            let mut all: Vec<usize> = indexes.concat();
            all.sort_unstable();
            assert_eq!(
                all, want,
                "{case:?}: each selected message once: {indexes:?}"
            );
            let partitions = |g: &[GroupMessage]| -> Vec<u32> {
                let mut p: Vec<u32> = g.iter().map(|m| m.partition).collect();
                p.sort_unstable();
                p.dedup();
                p
            };
            let (p1, p2) = (partitions(&got[0]), partitions(&got[1]));
            assert!(
                p1.iter().all(|p| !p2.contains(p)),
                "{case:?}: both members read a partition: {p1:?} and {p2:?}"
            );
        }
        Mode::Broadcast => {
            for (n, g) in indexes.iter().enumerate() {
                let mut g = g.clone();
                g.sort_unstable();
                assert_eq!(
                    g, want,
                    "{case:?}: member {n} gets every selected message once"
                );
            }
        }
    }
    if case.order == Order::Ordered {
        check_key_order(case, &indexes, &want);
    }

    members.leave().await;
    c1.close().await;
    c2.close().await;
    client.close().await;
    broker.stop().await;
}

/// Each member got each key's messages in produce order; in clustering
/// every key went to one member, which got all of them.
fn check_key_order(case: Case, indexes: &[Vec<usize>], want: &[usize]) {
    let by_key = |is: &[usize]| -> BTreeMap<usize, Vec<usize>> {
        let mut m: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for &i in is {
            m.entry(i % KEYS).or_default().push(i);
        }
        m
    };
    let wanted = by_key(want);
    for (n, is) in indexes.iter().enumerate() {
        for (key, got) in by_key(is) {
            assert_eq!(
                &got, &wanted[&key],
                "{case:?}: member {n}: key k{key} out of order (or split between members)"
            );
        }
    }
}

/// The members once they took everything: still consumers (pull) or
/// subscriptions (push).
enum Members {
    Pulled(GroupConsumer, GroupConsumer),
    Pushed(GroupStream, GroupStream),
}

impl Members {
    /// Nothing more comes to either member.
    async fn nothing_more(&mut self, case: Case) {
        match self {
            Members::Pulled(m1, m2) => {
                for m in [m1, m2] {
                    let more = m.poll().await.unwrap();
                    assert!(more.is_empty(), "{case:?}: delivered again: {more:#?}");
                }
            }
            Members::Pushed(s1, s2) => {
                for s in [s1, s2] {
                    let more = tokio::time::timeout(QUIET, s.next()).await;
                    assert!(more.is_err(), "{case:?}: pushed again: {more:?}");
                }
            }
        }
    }

    async fn leave(self) {
        match self {
            Members::Pulled(m1, m2) => {
                m1.leave().await.unwrap();
                m2.leave().await.unwrap();
            }
            Members::Pushed(s1, s2) => {
                s1.leave().await.unwrap();
                s2.leave().await.unwrap();
            }
        }
    }
}

/// Takes pushed messages from both subscriptions, acking each, until
/// `total` came (failing after `WAIT`), then waits [`QUIET`] for more; sends
/// the acks. Returns what each member received.
async fn push_all(
    mut s1: GroupStream,
    mut s2: GroupStream,
    total: usize,
) -> (Vec<Vec<GroupMessage>>, Members) {
    let mut got: Vec<Vec<GroupMessage>> = vec![Vec::new(), Vec::new()];
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let count = got.iter().map(Vec::len).sum::<usize>();
        let wait = if count >= total {
            tokio::time::Instant::now() + QUIET
        } else {
            deadline
        };
        let next = tokio::time::timeout_at(wait, async {
            tokio::select! {
                m = s1.next() => (0, m),
                m = s2.next() => (1, m),
            }
        })
        .await;
        match next {
            Ok((n, Some(m))) => {
                let m = m.unwrap();
                m.ack();
                got[n].push(m);
            }
            Ok((n, None)) => panic!("member {n}'s subscription ended"),
            Err(_) if count >= total => break,
            Err(_) => panic!("only {count} of {total} pushed: {got:#?}"),
        }
    }
    s1.consumer().flush_acks().await.unwrap();
    s2.consumer().flush_acks().await.unwrap();
    (got, Members::Pushed(s1, s2))
}

macro_rules! cases {
    ($($name:ident: $take:ident $mode:ident $order:ident $filter:ident;)*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                run(Case {
                    take: Take::$take,
                    mode: Mode::$mode,
                    order: Order::$order,
                    filter: Filter::$filter,
                })
                .await;
            }
        )*
    };
}

cases! {
    pull_clustering_unordered_all: Pull Clustering Unordered All;
    pull_clustering_unordered_tags: Pull Clustering Unordered Tags;
    pull_clustering_unordered_function: Pull Clustering Unordered Function;
    pull_clustering_ordered_all: Pull Clustering Ordered All;
    pull_clustering_ordered_tags: Pull Clustering Ordered Tags;
    pull_clustering_ordered_function: Pull Clustering Ordered Function;
    pull_broadcast_unordered_all: Pull Broadcast Unordered All;
    pull_broadcast_unordered_tags: Pull Broadcast Unordered Tags;
    pull_broadcast_unordered_function: Pull Broadcast Unordered Function;
    pull_broadcast_ordered_all: Pull Broadcast Ordered All;
    pull_broadcast_ordered_tags: Pull Broadcast Ordered Tags;
    pull_broadcast_ordered_function: Pull Broadcast Ordered Function;
    push_clustering_unordered_all: Push Clustering Unordered All;
    push_clustering_unordered_tags: Push Clustering Unordered Tags;
    push_clustering_unordered_function: Push Clustering Unordered Function;
    push_clustering_ordered_all: Push Clustering Ordered All;
    push_clustering_ordered_tags: Push Clustering Ordered Tags;
    push_clustering_ordered_function: Push Clustering Ordered Function;
    push_broadcast_unordered_all: Push Broadcast Unordered All;
    push_broadcast_unordered_tags: Push Broadcast Unordered Tags;
    push_broadcast_unordered_function: Push Broadcast Unordered Function;
    push_broadcast_ordered_all: Push Broadcast Ordered All;
    push_broadcast_ordered_tags: Push Broadcast Ordered Tags;
    push_broadcast_ordered_function: Push Broadcast Ordered Function;
}
