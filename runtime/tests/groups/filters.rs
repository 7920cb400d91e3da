//! Tag filters on a group's deliveries.

use std::collections::BTreeSet;

use sluice_client::{Message, Partitioning};

use crate::common::groups::{all_settled, cfg, consume_all, set, text, texts, wait_for_group};
use crate::common::{Broker, produce};

#[test]
fn tag_filters_deliver_exactly_the_matching_messages() {
    let broker = Broker::start();
    broker.with_client(async |client| {
        client.create_topic("tagged", 2, &[]).await.unwrap();
        let combos: [&[&str]; 8] = [
            &[],
            &["a"],
            &["b"],
            &["a", "b"],
            &["a", "c"],
            &["c"],
            &["b", "c"],
            &["a", "b", "c"],
        ];
        let mut msgs = Vec::new();
        for round in 0..2 {
            for tags in combos {
                let i = msgs.len() as u32;
                let mut m = Message::new("tagged", format!("{round}:{}", tags.join("+")))
                    .partition(Partitioning::Explicit(i % 2));
                for t in tags {
                    m = m.tag(*t);
                }
                msgs.push(m);
            }
        }
        produce(client, msgs).await;
        let has = |tags: &[&str], t: &str| tags.contains(&t);
        let expect = |pred: &dyn Fn(&[&str]) -> bool| -> BTreeSet<String> {
            (0..2)
                .flat_map(|round| {
                    combos
                        .iter()
                        .filter(|tags| pred(tags))
                        .map(move |tags| format!("{round}:{}", tags.join("+")))
                })
                .collect()
        };

        for (group, filter, normalised, want) in [
            (
                "a-not-b",
                "a AND NOT b",
                "a AND NOT b",
                expect(&|t| has(t, "a") && !has(t, "b")),
            ),
            (
                "c-or-ab",
                "c || (a && b)",
                "c OR a AND b",
                expect(&|t| has(t, "c") || (has(t, "a") && has(t, "b"))),
            ),
            (
                "ab-not-c",
                "(a OR b) AND NOT c",
                "(a OR b) AND NOT c",
                expect(&|t| (has(t, "a") || has(t, "b")) && !has(t, "c")),
            ),
        ] {
            let c = client
                .group_consumer(cfg(group, "tagged").tag_filter(filter))
                .await
                .unwrap();
            let got = consume_all(&[&c], want.len()).await.remove(0);
            let vals = texts(&got);
            assert_eq!(vals.len(), want.len(), "{filter}: {vals:?}");
            assert_eq!(set(&vals), want, "{filter}");
            for m in &got {
                let tags: Vec<&str> = m.tags.iter().map(String::as_str).collect();
                assert_eq!(text(m).split_once(':').unwrap().1, tags.join("+"), "{m:#?}");
            }
            // Filtered-out messages count as settled: no lag once the
            // matching ones are acked.
            let d = wait_for_group(client, group, "settled", all_settled).await;
            assert_eq!(d.settings.tag_filter, normalised);
            for p in d.partitions.iter().filter(|p| p.topic == "tagged") {
                assert_eq!((p.committed, p.high_watermark), (8, 8), "{filter}: {p:?}");
            }
            c.leave().await.unwrap();
        }
    });
}
