//! `sluice group consume|list|describe|reset|redrive|delete`: the real
//! binary against a real broker started in process on its own runtime.

mod common;

use std::time::{Duration, Instant};

use sluice_client::{Client, GroupConfig, Message, OffsetSpec, Partitioning, ProducerConfig};

use common::groups::set;
use common::{Broker, WAIT, cells, fails, ok, run};

/// The line of a table whose first cells are `first`.
fn row<'a>(out: &'a str, first: &[&str]) -> Vec<&'a str> {
    out.lines()
        .map(cells)
        .find(|c| c.starts_with(first))
        .unwrap_or_else(|| panic!("no row {first:?} in:\n{out}"))
}

fn lines(out: &str) -> Vec<String> {
    out.lines().map(str::to_owned).collect()
}

/// Messages `v<i>` for i in `range`, on partition i % 2; `v3` is tagged `eu`.
/// Returns the lines `sluice group consume` prints for them.
async fn produce(client: &Client, range: std::ops::Range<u32>) -> Vec<String> {
    let producer = client.producer(ProducerConfig::default()).await.unwrap();
    let mut printed = Vec::new();
    for i in range {
        let mut m =
            Message::new("orders", format!("v{i}")).partition(Partitioning::Explicit(i % 2));
        if i == 3 {
            m = m.tag("eu");
        }
        let d = producer.send(m).await.unwrap();
        let tags = if i == 3 { "tags=eu " } else { "" };
        printed.push(format!("{}/{} {tags}v{i}", d.partition, d.offset));
    }
    printed
}

/// A group member that takes every message of `orders` (from the
/// earliest), settles each with `settle`, and leaves once it saw `n`.
async fn member_settles(
    client: &Client,
    config: GroupConfig,
    n: usize,
    settle: impl Fn(&sluice_client::GroupMessage),
) {
    let c = client.group_consumer(config).await.unwrap();
    let deadline = Instant::now() + WAIT;
    let mut seen = 0;
    while seen < n {
        assert!(Instant::now() < deadline, "only {seen} of {n} came");
        for m in c.poll().await.unwrap() {
            settle(&m);
            seen += 1;
        }
    }
    c.leave().await.unwrap();
}

#[test]
fn sluice_group_consumes_describes_resets_and_deletes() {
    let broker = Broker::start();
    let sluice = |args: &[&str]| run(&mut broker.sluice(args));
    ok(sluice(&["topic", "create", "orders", "--partitions", "2"]));
    let first = broker.with_client(async |client| produce(client, 0..6).await);

    // Two members one after the other: the second gets exactly what the
    // first did not print (and so did not ack).
    let consume = |max: &str| {
        lines(&ok(sluice(&[
            "group", "consume", "billing", "orders", "--from", "earliest", "--max", max,
        ])))
    };
    let a = consume("4");
    assert_eq!(a.len(), 4, "{a:?}");
    let b = consume("2");
    assert_eq!(b.len(), 2, "{b:?}");
    assert!(set(&a).is_disjoint(&set(&b)), "{a:?} {b:?}");
    assert_eq!(&set(&a) | &set(&b), set(&first), "{a:?} {b:?}");

    let out = ok(sluice(&["group", "list"]));
    assert_eq!(
        cells(out.lines().next().unwrap()),
        [
            "group", "topic", "mode", "members", "lag", "dead", "letters"
        ],
        "{out}"
    );
    assert_eq!(
        row(&out, &["billing"]),
        ["billing", "orders", "clustering", "0", "0", "0"],
        "{out}"
    );

    let out = ok(sluice(&["group", "describe", "billing"]));
    assert!(
        out.starts_with("group billing  topic orders  mode clustering  generation "),
        "{out}"
    );
    assert!(
        out.contains("ack timeout 30000 ms, max attempts 16, max in flight 20000\n")
            && out.contains(
                "retry topic sluice.retry.billing, dead-letter topic sluice.dlq.billing (0 waiting)\n"
            ),
        "{out}"
    );
    assert_eq!(
        cells(out.lines().find(|l| l.starts_with("topic")).unwrap()),
        [
            "topic",
            "partition",
            "committed",
            "high",
            "watermark",
            "lag",
            "in",
            "flight",
            "owner"
        ],
        "{out}"
    );
    // No members: no owner.
    assert_eq!(
        row(&out, &["orders", "0"]),
        ["orders", "0", "3", "3", "0", "0"],
        "{out}"
    );
    assert_eq!(
        row(&out, &["orders", "1"]),
        ["orders", "1", "3", "3", "0", "0"],
        "{out}"
    );
    assert_eq!(
        row(&out, &["sluice.retry.billing"]),
        ["sluice.retry.billing", "0", "0", "0", "0", "0"],
        "{out}"
    );
    assert!(out.ends_with("total lag 0\n"), "{out}");

    // New messages are lag.
    let second = broker.with_client(async |client| produce(client, 6..9).await);
    let out = ok(sluice(&["group", "describe", "billing"]));
    assert_eq!(
        row(&out, &["orders", "0"]),
        ["orders", "0", "3", "5", "2", "0"],
        "{out}"
    );
    assert_eq!(
        row(&out, &["orders", "1"]),
        ["orders", "1", "3", "4", "1", "0"],
        "{out}"
    );
    assert!(out.ends_with("total lag 3\n"), "{out}");
    let out = ok(sluice(&["group", "list"]));
    assert_eq!(row(&out, &["billing"])[4], "3", "{out}");

    // Rewound: everything again.
    let out = ok(sluice(&["group", "reset", "billing", "--to", "earliest"]));
    assert_eq!(
        lines(&out).iter().map(|l| cells(l)).collect::<Vec<_>>(),
        [
            vec!["topic", "partition", "position"],
            vec!["orders", "0", "0"],
            vec!["orders", "1", "0"]
        ],
        "{out}"
    );
    let replay = consume("9");
    let everything: Vec<String> = first.iter().chain(&second).cloned().collect();
    assert_eq!(replay.len(), 9, "{replay:?}");
    assert_eq!(set(&replay), set(&everything));
    let out = ok(sluice(&["group", "describe", "billing"]));
    assert!(out.ends_with("total lag 0\n"), "{out}");

    // Deleted, and then unknown.
    assert_eq!(
        ok(sluice(&["group", "delete", "billing"])),
        "deleted group billing\n"
    );
    let out = ok(sluice(&["group", "list"]));
    assert!(!out.contains("billing"), "{out}");
    for args in [
        &["group", "describe", "billing"][..],
        &["group", "delete", "billing"],
        &["group", "reset", "billing", "--to", "latest"],
        &["group", "redrive", "billing"],
    ] {
        let err = fails(sluice(args));
        assert!(
            err.starts_with("error: broker error UNKNOWN_GROUP")
                && err.contains(r#"unknown consumer group "billing""#),
            "{args:?}: {err}"
        );
    }
}

#[test]
fn sluice_group_redrives_dead_letters_and_shows_retries() {
    let broker = Broker::start();
    let sluice = |args: &[&str]| run(&mut broker.sluice(args));
    ok(sluice(&["topic", "create", "orders", "--partitions", "2"]));
    let printed = broker.with_client(async |client| {
        let printed = produce(client, 0..6).await;
        // audit: v3 dead-lettered, the rest acked.
        let config = GroupConfig::new("audit", "orders").start(OffsetSpec::Earliest);
        member_settles(client, config, 6, |m| {
            if &m.value[..] == b"v3" {
                m.dead_letter("no such account");
            } else {
                m.ack();
            }
        })
        .await;
        // retrying: v0 failed once (retried in 10 ms), the rest acked.
        let config = GroupConfig::new("retrying", "orders")
            .start(OffsetSpec::Earliest)
            .retry_ladder([Duration::from_millis(10)]);
        member_settles(client, config, 6, |m| {
            if &m.value[..] == b"v0" {
                m.nack("later");
            } else {
                m.ack();
            }
        })
        .await;
        printed
    });

    let out = ok(sluice(&["group", "list"]));
    assert_eq!(
        row(&out, &["audit"]),
        ["audit", "orders", "clustering", "0", "0", "1"],
        "{out}"
    );
    let out = ok(sluice(&["group", "describe", "audit"]));
    assert!(
        out.contains("dead-letter topic sluice.dlq.audit (1 waiting)\n"),
        "{out}"
    );

    assert_eq!(
        ok(sluice(&["group", "redrive", "audit"])),
        "redriven 1, remaining 0\n"
    );
    assert_eq!(
        ok(sluice(&["group", "redrive", "audit", "--max", "5"])),
        "redriven 0, remaining 0\n"
    );
    // Back through the retry topic, shown where it was first consumed, at
    // attempt 1 again.
    let v3 = printed.iter().find(|l| l.ends_with(" v3")).unwrap();
    let out = ok(sluice(&[
        "group", "consume", "audit", "orders", "--from", "earliest", "--max", "1",
    ]));
    assert_eq!(out, format!("{v3}\n"));
    let out = ok(sluice(&["group", "describe", "audit"]));
    assert!(
        out.contains("(0 waiting)\n") && out.ends_with("total lag 0\n"),
        "{out}"
    );

    // A retry shows its attempt.
    let v0 = printed.iter().find(|l| l.ends_with(" v0")).unwrap();
    let out = ok(sluice(&[
        "group", "consume", "retrying", "orders", "--from", "earliest", "--max", "1",
    ]));
    assert_eq!(out, format!("{v0} (attempt 2)\n"));

    // A group with a live member cannot be deleted.
    broker.with_client(async |client| {
        let live = client
            .group_consumer(GroupConfig::new("audit", "orders").start(OffsetSpec::Earliest))
            .await
            .unwrap();
        let err = fails(sluice(&["group", "delete", "audit"]));
        assert!(
            err.starts_with("error: broker error INVALID_ARGUMENT") && err.contains("live member"),
            "{err}"
        );
        live.leave().await.unwrap();
    });
    assert_eq!(
        ok(sluice(&["group", "delete", "audit"])),
        "deleted group audit\n"
    );
    // Refused before connecting: a group cannot start at an offset.
    let err = fails(sluice(&[
        "group", "consume", "x", "orders", "--from", "offset:3",
    ]));
    assert!(err.contains("sluice group reset"), "{err}");
}

#[test]
fn sluice_group_consume_takes_its_options_and_reports_errors() {
    let broker = Broker::start();
    let sluice = |args: &[&str]| run(&mut broker.sluice(args));
    ok(sluice(&["topic", "create", "orders", "--partitions", "2"]));
    let printed = broker.with_client(async |client| produce(client, 0..6).await);
    let v3 = printed.iter().find(|l| l.ends_with(" v3")).unwrap();

    // A tag filter: only the tagged message; ordered shows in describe.
    let out = ok(sluice(&[
        "group",
        "consume",
        "eu-only",
        "orders",
        "--from",
        "earliest",
        "--tags",
        "eu && !test",
        "--ordered",
        "--max",
        "1",
    ]));
    assert_eq!(out, format!("{v3}\n"));
    let out = ok(sluice(&["group", "describe", "eu-only"]));
    assert!(
        out.starts_with("group eu-only  topic orders  mode clustering (ordered)  generation ")
            && out.contains("\ntag filter: eu AND NOT test\n")
            && out.ends_with("total lag 0\n"),
        "{out}"
    );

    // Broadcast: progress per instance.
    let out = ok(sluice(&[
        "group",
        "consume",
        "audit",
        "orders",
        "--from",
        "earliest",
        "--broadcast",
        "--instance",
        "host-1",
        "--max",
        "6",
    ]));
    assert_eq!(set(&lines(&out)), set(&printed), "{out}");
    let out = ok(sluice(&["group", "describe", "audit"]));
    assert!(out.contains("  mode broadcast  "), "{out}");
    assert_eq!(
        cells(out.lines().find(|l| l.starts_with("instance")).unwrap())[..2],
        ["instance", "topic"],
        "{out}"
    );
    assert_eq!(
        row(&out, &["host-1", "orders", "0"]),
        ["host-1", "orders", "0", "3", "3", "0", "0"],
        "{out}"
    );
    assert_eq!(
        row(&out, &["host-1", "orders", "1"]),
        ["host-1", "orders", "1", "3", "3", "0", "0"],
        "{out}"
    );
    let out = ok(sluice(&["group", "list"]));
    assert_eq!(
        row(&out, &["audit"]),
        ["audit", "orders", "broadcast", "0", "0", "0"],
        "{out}"
    );

    // Errors from the broker end the line; nothing is printed.
    let err = fails(sluice(&["group", "consume", "x", "nosuch", "--max", "1"]));
    assert!(
        err.starts_with("error: broker error UNKNOWN_TOPIC") && err.contains("nosuch"),
        "{err}"
    );
    let err = fails(sluice(&[
        "group", "consume", "x", "orders", "--tags", "a AND (", "--max", "1",
    ]));
    assert!(
        err.starts_with("error: broker error INVALID_ARGUMENT")
            && err.contains(r#"tag filter "a AND (""#),
        "{err}"
    );
    let out = ok(sluice(&["group", "list"]));
    assert!(!out.contains("\nx "), "a refused join made a group: {out}");
}
