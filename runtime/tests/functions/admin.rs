//! Deploying, refusing, listing, rolling back and deleting functions,
//! and one that fails to load at start.

use sluice_client::{
    Client, ErrorCode, FunctionManifest, GroupSettings, Message, OffsetSpec, Partitioning,
};
use sluice_sample_components as components;

use super::support::{refused, wait_caught_up, wait_log};
use crate::common::client::sorted;
use crate::common::groups::wait_settled;
use crate::common::records::{read_topic, sorted_values, wait_records};
use crate::common::{Broker, produce};

/// `(name, version)` of every deployed function.
async fn listed(client: &Client) -> Vec<(String, u32)> {
    client
        .list_functions()
        .await
        .unwrap()
        .into_iter()
        .map(|f| (f.name, f.version))
        .collect()
}

#[test]
fn refused_deploys_change_nothing_and_unknown_names_are_reported() {
    let broker = Broker::start();
    broker.with_client(async |client| {
        client.create_topic("raw", 1, &[]).await.unwrap();
        client.create_topic("clean", 1, &[]).await.unwrap();
        let keep = || FunctionManifest::transform("keep", "raw", ["clean"]);
        let v1 = client
            .deploy_function(keep(), components::bytes(components::PII_REDACT))
            .await
            .unwrap();
        assert_eq!((v1.version, v1.previous_version), (1, 0));
        let before = client.describe_function("keep").await.unwrap();
        client
            .deploy_function(
                FunctionManifest::filter("reds", "g").config("tags", "red"),
                components::bytes(components::TAG_FILTER),
            )
            .await
            .unwrap();
        let others = [("keep".to_owned(), 1), ("reds".to_owned(), 1)];

        let garbage = b"\0asm this is not a component at all".to_vec();
        let cases: Vec<(&str, FunctionManifest, Vec<u8>, ErrorCode, &str)> = vec![
            (
                "garbage",
                keep(),
                garbage.clone(),
                ErrorCode::InvalidFunction,
                "not a valid WebAssembly component",
            ),
            (
                "garbage, new name",
                FunctionManifest::transform("fresh", "raw", ["clean"]),
                garbage,
                ErrorCode::InvalidFunction,
                "not a valid WebAssembly component",
            ),
            (
                "wrong world",
                keep(),
                components::bytes(components::WRONG_WORLD),
                ErrorCode::InvalidFunction,
                "implements no Sluice world",
            ),
            (
                "wrong world, new name",
                FunctionManifest::filter("fresh", "g4"),
                components::bytes(components::WRONG_WORLD),
                ErrorCode::InvalidFunction,
                "implements no Sluice world",
            ),
            (
                "a filter as a transform",
                keep(),
                components::bytes(components::TAG_FILTER),
                ErrorCode::InvalidFunction,
                "implements the filter world, but the deployment asks for a transform",
            ),
            (
                "a filter as a transform, new name",
                FunctionManifest::transform("fresh", "raw", ["clean"]).config("tags", "red"),
                components::bytes(components::TAG_FILTER),
                ErrorCode::InvalidFunction,
                "implements the filter world, but the deployment asks for a transform",
            ),
            (
                "unknown input topic",
                FunctionManifest::transform("keep", "nope", ["clean"]),
                components::bytes(components::PII_REDACT),
                ErrorCode::UnknownTopic,
                "nope",
            ),
            (
                "unknown input topic, new name",
                FunctionManifest::transform("fresh", "nope", ["clean"]),
                components::bytes(components::PII_REDACT),
                ErrorCode::UnknownTopic,
                "nope",
            ),
            (
                "unknown output topic",
                FunctionManifest::transform("fresh", "raw", ["clean", "missing"]),
                components::bytes(components::PII_REDACT),
                ErrorCode::UnknownTopic,
                "missing",
            ),
            (
                "a handler of an unknown topic",
                FunctionManifest::handler(
                    "fresh",
                    "g2",
                    GroupSettings {
                        topic: "nope".into(),
                        ..GroupSettings::default()
                    },
                ),
                components::bytes(components::ORDER_TOTALS),
                ErrorCode::UnknownTopic,
                "nope",
            ),
            (
                "its own output",
                FunctionManifest::transform("fresh", "raw", ["clean", "raw"]),
                components::bytes(components::PII_REDACT),
                ErrorCode::InvalidFunction,
                "is its input",
            ),
            (
                "a bad name",
                FunctionManifest::transform("no spaces", "raw", ["clean"]),
                components::bytes(components::PII_REDACT),
                ErrorCode::InvalidFunction,
                "function name",
            ),
            (
                "too much memory",
                FunctionManifest::transform("fresh", "raw", ["clean"]).memory_bytes(1 << 40),
                components::bytes(components::PII_REDACT),
                ErrorCode::InvalidFunction,
                "memory limit",
            ),
            (
                "a second filter on a group",
                FunctionManifest::filter("fresh", "g").config("tags", "blue"),
                components::bytes(components::TAG_FILTER),
                ErrorCode::InvalidFunction,
                "already has a filter function, reds",
            ),
            (
                "a filter without its config",
                FunctionManifest::filter("fresh", "g3"),
                components::bytes(components::TAG_FILTER),
                ErrorCode::InvalidFunction,
                "init",
            ),
        ];
        for (what, manifest, bytes, code, needle) in cases {
            let message = refused(client.deploy_function(manifest, bytes).await, code);
            assert!(
                message.contains(needle),
                "{what}: {message:?} should mention {needle:?}"
            );
            assert_eq!(listed(client).await, others, "{what}");
            let now = client.describe_function("keep").await.unwrap();
            assert_eq!(
                (now.version, &now.digest, &now.versions, &now.manifest),
                (
                    before.version,
                    &before.digest,
                    &before.versions,
                    &before.manifest
                ),
                "{what}"
            );
            refused(
                client.describe_function("fresh").await,
                ErrorCode::UnknownFunction,
            );
        }
        // The refusals used no version number.
        let v2 = client
            .deploy_function(
                keep().config("note", "2"),
                components::bytes(components::PII_REDACT),
            )
            .await
            .unwrap();
        assert_eq!((v2.version, v2.previous_version), (2, 1));

        for name in ["ghost", "fresh", "no spaces"] {
            let m = refused(
                client.describe_function(name).await,
                ErrorCode::UnknownFunction,
            );
            assert!(m.contains(name), "{m}");
            refused(
                client.function_logs(name, 0, 10).await,
                ErrorCode::UnknownFunction,
            );
            refused(
                client.delete_function(name).await,
                ErrorCode::UnknownFunction,
            );
            refused(
                client.rollback_function(name, None).await,
                ErrorCode::UnknownFunction,
            );
            refused(
                client.rollback_function(name, Some(1)).await,
                ErrorCode::UnknownFunction,
            );
        }
        // Nothing of the refused deploys was kept under the new name either.
        let fresh = client
            .deploy_function(
                FunctionManifest::transform("fresh", "raw", ["clean"]),
                components::bytes(components::PII_REDACT),
            )
            .await
            .unwrap();
        assert_eq!((fresh.version, fresh.previous_version), (1, 0));
        assert_eq!(
            client
                .describe_function("fresh")
                .await
                .unwrap()
                .versions
                .len(),
            1
        );
        assert_eq!(
            listed(client).await,
            [
                ("fresh".to_owned(), 1),
                ("keep".to_owned(), 2),
                ("reds".to_owned(), 1)
            ]
        );
    });
}

#[test]
fn versions_roll_back_and_a_deleted_function_starts_over() {
    let mut broker = Broker::start();
    let pii = |note: &str| {
        FunctionManifest::transform("redact", "raw", ["clean"])
            .start(OffsetSpec::Earliest)
            .config("note", note)
    };
    let wasm = components::bytes(components::PII_REDACT);
    let batch = |from: usize, to: usize| -> Vec<Message> {
        (from..to)
            .map(|i| {
                Message::new("raw", format!("{i}: mail m{i}@example.org"))
                    .partition(Partitioning::Explicit((i % 2) as u32))
            })
            .collect()
    };
    let redacted = |to: usize| sorted((0..to).map(|i| format!("{i}: mail [email]")).collect());
    let totals = FunctionManifest::handler(
        "tally",
        "tally",
        GroupSettings {
            topic: "orders".into(),
            start: OffsetSpec::Earliest,
            ..GroupSettings::default()
        },
    );
    broker.with_client(async |client| {
        client.create_topic("raw", 2, &[]).await.unwrap();
        client.create_topic("clean", 1, &[]).await.unwrap();
        client.create_topic("orders", 1, &[]).await.unwrap();
        let v1 = client
            .deploy_function(pii("one"), wasm.clone())
            .await
            .unwrap();
        assert_eq!((v1.version, v1.previous_version), (1, 0));
        produce(client, batch(0, 50)).await;
        wait_records(client, "clean", 50).await;

        let v2 = client
            .deploy_function(pii("two"), wasm.clone())
            .await
            .unwrap();
        assert_eq!((v2.version, v2.previous_version), (2, 1));
        assert_eq!(v2.digest, v1.digest, "the same component");
        produce(client, batch(50, 100)).await;
        wait_records(client, "clean", 100).await;
        let d = client.describe_function("redact").await.unwrap();
        assert_eq!(d.version, 2);
        assert_eq!(d.manifest.config, [("note".to_owned(), "two".to_owned())]);
        assert_eq!(
            d.versions.iter().map(|v| v.version).collect::<Vec<_>>(),
            [1, 2]
        );
        assert!(
            d.versions
                .iter()
                .all(|v| v.digest == v1.digest && v.size == wasm.len() as u64)
        );

        // Back to the version before: its manifest too.
        let back = client.rollback_function("redact", None).await.unwrap();
        assert_eq!((back.version, back.previous_version), (1, 2));
        let d = client.describe_function("redact").await.unwrap();
        assert_eq!(d.version, 1);
        assert_eq!(d.manifest.config, [("note".to_owned(), "one".to_owned())]);
        assert_eq!(d.versions.len(), 2, "a rollback keeps every version");
        assert_eq!(listed(client).await, [("redact".to_owned(), 1)]);
        produce(client, batch(100, 150)).await;
        wait_caught_up(client, "redact", 2).await;
        assert_eq!(
            sorted_values(&read_topic(client, "clean").await),
            redacted(150)
        );
        let lines = wait_log(client, "redact", "version 1 active").await;
        assert!(lines.iter().any(|l| l == "version 2 active"), "{lines:?}");
    });

    // The rollback is stored: a restarted broker runs version 1, from the
    // stored positions.
    broker.restart();
    broker.with_client(async |client| {
        let d = client.describe_function("redact").await.unwrap();
        assert_eq!(d.version, 1);
        assert_eq!(d.manifest.config, [("note".to_owned(), "one".to_owned())]);
        assert_eq!(d.versions.len(), 2);
        produce(client, batch(150, 175)).await;
        wait_caught_up(client, "redact", 2).await;
        assert_eq!(
            sorted_values(&read_topic(client, "clean").await),
            redacted(175)
        );

        // Refused: nothing before version 1, no version 7, another kind.
        let m = refused(
            client.rollback_function("redact", None).await,
            ErrorCode::InvalidFunction,
        );
        assert!(m.contains("no version before 1"), "{m}");
        let m = refused(
            client.rollback_function("redact", Some(7)).await,
            ErrorCode::InvalidFunction,
        );
        assert!(m.contains("no version 7"), "{m}");
        let handler = FunctionManifest::handler(
            "redact",
            "g",
            GroupSettings {
                topic: "raw".into(),
                ..GroupSettings::default()
            },
        );
        let m = refused(
            client
                .deploy_function(handler, components::bytes(components::ORDER_TOTALS))
                .await,
            ErrorCode::InvalidFunction,
        );
        assert!(m.contains("transform") && m.contains("handler"), "{m}");
        let d = client.describe_function("redact").await.unwrap();
        assert_eq!((d.version, d.versions.len()), (1, 2));
        // Forward again to an explicit version, then a new one numbered
        // after every stored version.
        let fwd = client.rollback_function("redact", Some(2)).await.unwrap();
        assert_eq!((fwd.version, fwd.previous_version), (2, 1));
        let v3 = client
            .deploy_function(pii("three"), wasm.clone())
            .await
            .unwrap();
        assert_eq!((v3.version, v3.previous_version), (3, 2));
        produce(client, batch(175, 200)).await;
        wait_caught_up(client, "redact", 2).await;
        assert_eq!(
            sorted_values(&read_topic(client, "clean").await),
            redacted(200)
        );

        // Delete: gone from the list, and its kv with it.
        let t1 = client
            .deploy_function(totals.clone(), components::bytes(components::ORDER_TOTALS))
            .await
            .unwrap();
        assert_eq!(t1.version, 1);
        produce(
            client,
            vec![Message::new("orders", r#"{"customer":"ann","amount":10}"#)],
        )
        .await;
        let lines = wait_log(client, "tally", "customer ann total 10").await;
        assert!(
            lines.iter().any(|l| l == "customer ann total 10"),
            "{lines:?}"
        );
        wait_settled(client, "tally").await;
        client.delete_function("tally").await.unwrap();
        assert_eq!(listed(client).await, [("redact".to_owned(), 3)]);
        refused(
            client.describe_function("tally").await,
            ErrorCode::UnknownFunction,
        );
        refused(
            client.function_logs("tally", 0, 10).await,
            ErrorCode::UnknownFunction,
        );
        refused(
            client.delete_function("tally").await,
            ErrorCode::UnknownFunction,
        );
    });

    // Still gone after a restart; deployed again, it starts over.
    broker.restart();
    broker.with_client(async |client| {
        assert_eq!(listed(client).await, [("redact".to_owned(), 3)]);
        refused(
            client.describe_function("tally").await,
            ErrorCode::UnknownFunction,
        );
        let again = client
            .deploy_function(totals, components::bytes(components::ORDER_TOTALS))
            .await
            .unwrap();
        assert_eq!((again.version, again.previous_version), (1, 0));
        let d = client.describe_function("tally").await.unwrap();
        assert_eq!(d.versions.len(), 1);
        produce(
            client,
            vec![Message::new("orders", r#"{"customer":"ann","amount":5}"#)],
        )
        .await;
        let lines = wait_log(client, "tally", "customer ann total").await;
        assert!(
            lines.iter().any(|l| l == "customer ann total 5"),
            "the total starts again from 0 (and the group resumes after the first order): {lines:?}"
        );
        assert!(
            !lines
                .iter()
                .any(|l| l.contains("total 10") || l.contains("total 15")),
            "{lines:?}"
        );
    });
}

/// A function whose component cannot be loaded at start (here: its file
/// is gone) is listed as failed, explains itself, and can be deleted or
/// replaced; the others start normally.
#[test]
fn a_function_that_fails_to_load_at_start_is_listed_and_can_be_replaced() {
    let mut broker = Broker::start();
    broker.with_client(async |client| {
        client.create_topic("raw", 1, &[]).await.unwrap();
        client.create_topic("clean", 1, &[]).await.unwrap();
        client
            .deploy_function(
                FunctionManifest::transform("pii", "raw", ["clean"]),
                components::bytes(components::PII_REDACT),
            )
            .await
            .unwrap();
        client
            .deploy_function(
                FunctionManifest::filter("other", "g").config("tags", "red"),
                components::bytes(components::TAG_FILTER),
            )
            .await
            .unwrap();
    });
    let pii_digest =
        broker.with_client(async |client| client.describe_function("pii").await.unwrap().digest);
    let components_dir = broker.dir.path().join("sluice-data/functions/components");
    std::fs::remove_file(components_dir.join(format!("{pii_digest}.wasm"))).unwrap();
    broker.restart();
    broker.with_client(async |client| {
        let listed = client.list_functions().await.unwrap();
        let pii = listed.iter().find(|f| f.name == "pii").unwrap();
        assert!(pii.status.starts_with("failed to load"), "{pii:?}");
        assert!(pii.status.contains(&pii_digest), "{pii:?}");
        let other = listed.iter().find(|f| f.name == "other").unwrap();
        assert_eq!(other.status, "running", "{other:?}");
        let why = refused(
            client.describe_function("pii").await,
            ErrorCode::InvalidFunction,
        );
        assert!(why.contains("failed to load"), "{why}");
        // A new version replaces it.
        let r = client
            .deploy_function(
                FunctionManifest::transform("pii", "raw", ["clean"]),
                components::bytes(components::PII_REDACT),
            )
            .await
            .unwrap();
        assert_eq!(r.version, 2);
        let d = client.describe_function("pii").await.unwrap();
        assert_eq!(d.status, "running");
        client.delete_function("other").await.unwrap();
    });
}
