//! Pushed messages: a subscription's stream and `run`'s handler.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use sluice_client::group::retry_topic;
use sluice_client::{GroupConfig, GroupMessage};

use crate::common::groups::{all_settled, cfg, set, spread, text, texts, values, wait_for_group};
use crate::common::{Broker, WAIT, produce};

#[test]
fn a_subscription_streams_everything_produced_after_it_starts() {
    let broker = Broker::start();
    broker.with_client(async |client| {
        client.create_topic("feed", 2, &[]).await.unwrap();
        produce(client, spread("feed", "before", 10, 2)).await;
        // Starts at the end (the default): an empty poll fixes the position
        // before anything else is produced.
        let c = client
            .group_consumer(
                GroupConfig::new("pushers", "feed")
                    .poll_max_wait(Duration::from_millis(100))
                    .credit_window(16),
            )
            .await
            .unwrap();
        assert!(c.poll().await.unwrap().is_empty());
        let mut stream = c.subscribe();
        let after = spread("feed", "after", 50, 2);
        let want = values(&after);
        produce(client, after).await;

        let mut got = Vec::new();
        while got.len() < 50 {
            let m = tokio::time::timeout(WAIT, stream.next())
                .await
                .unwrap_or_else(|_| panic!("only {} pushed", got.len()))
                .unwrap()
                .unwrap();
            m.ack();
            got.push(m);
        }
        let more = tokio::time::timeout(Duration::from_millis(300), stream.next()).await;
        assert!(more.is_err(), "pushed more: {more:?}");
        let vals = texts(&got);
        assert_eq!(set(&vals), set(&want));
        for p in 0..2 {
            let offsets: Vec<u64> = got
                .iter()
                .filter(|m| m.partition == p)
                .map(|m| m.offset)
                .collect();
            assert_eq!(
                offsets,
                (5..30).collect::<Vec<u64>>(),
                "partition {p} in order, once each"
            );
        }
        stream.consumer().flush_acks().await.unwrap();
        assert_eq!(stream.consumer().ack_stats().settled, 50);
        stream.leave().await.unwrap();
        let d = client.describe_group("pushers").await.unwrap();
        assert!(all_settled(&d) && d.members.is_empty(), "{d:#?}");
    });
}

#[test]
fn run_acks_what_succeeds_and_retries_what_fails() {
    let broker = Broker::start();
    broker.with_client(async |client| {
        client.create_topic("work", 2, &[]).await.unwrap();
        let msgs = spread("work", "w", 40, 2);
        let all = values(&msgs);
        produce(client, msgs).await;
        let flaky = |v: &str| v[1..].parse::<usize>().unwrap() % 5 == 0;

        let c = client
            .group_consumer(cfg("runners", "work").retry_ladder([Duration::from_millis(10)]))
            .await
            .unwrap();
        let seen: Arc<Mutex<Vec<(String, u16, bool)>>> = Arc::default();
        let done = Arc::new(tokio::sync::Notify::new());
        let (seen2, done2) = (seen.clone(), done.clone());
        let handler = move |m: GroupMessage| {
            let (seen, done) = (seen2.clone(), done2.clone());
            async move {
                let v = text(&m);
                let fail = m.attempt() == 1 && flaky(&v);
                let mut s = seen.lock().unwrap();
                s.push((v.clone(), m.attempt(), !fail));
                if s.iter().filter(|(_, _, ok)| *ok).count() == 40 {
                    done.notify_one();
                }
                drop(s);
                if fail {
                    Err(format!("{v} failed"))
                } else {
                    Ok(())
                }
            }
        };
        let shutdown = async move { done.notified().await };
        tokio::time::timeout(WAIT, c.run(4, shutdown, handler))
            .await
            .expect("run never finished")
            .unwrap();

        let seen = seen.lock().unwrap().clone();
        let ok: Vec<String> = seen.iter().filter(|s| s.2).map(|s| s.0.clone()).collect();
        assert_eq!(ok.len(), 40, "each succeeded once: {seen:?}");
        assert_eq!(set(&ok), set(&all));
        for v in &all {
            let runs: Vec<(u16, bool)> = seen
                .iter()
                .filter(|s| &s.0 == v)
                .map(|s| (s.1, s.2))
                .collect();
            let want = if flaky(v) {
                vec![(1, false), (2, true)]
            } else {
                vec![(1, true)]
            };
            assert_eq!(runs, want, "{v}");
        }
        let d = wait_for_group(client, "runners", "settled", all_settled).await;
        assert!(d.members.is_empty(), "run leaves the group: {d:#?}");
        assert_eq!(d.dead_letters, 0);
        let retried = d
            .partitions
            .iter()
            .find(|p| p.topic == retry_topic("runners"))
            .unwrap();
        assert_eq!(
            retried.high_watermark, 8,
            "the 8 failures went through the retry topic"
        );
    });
}
