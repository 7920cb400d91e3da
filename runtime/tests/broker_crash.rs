//! The broker as a child process, killed with SIGKILL after acknowledging
//! writes: after a restart every acknowledged message is consumed, once.

mod common;

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use sluice_client::{Client, ClientConfig, Message, ProducerConfig};

use common::child::{self, impatient_config};
use common::client::read_until_empty;

fn config(addr: &str, data: &Path) -> ClientConfig {
    // Reconnects to the killed broker give up fast.
    impatient_config(addr, data, "crash-test", Duration::from_millis(300))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_message_survives_sigkill_of_the_broker() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (mut broker, addr) = child::start(&data);
    let client = Client::connect(config(&addr, &data)).await.unwrap();
    client
        .create_topic("t", 3, &[("durability", "sync")])
        .await
        .unwrap();
    // Sends in flight at the kill fail after 2 s instead of retrying for 30.
    let producer = client
        .producer(ProducerConfig {
            delivery_timeout: Duration::from_secs(2),
            ..ProducerConfig::default()
        })
        .await
        .unwrap();

    // Acknowledged sends, then more in flight when the broker dies.
    let mut first = Vec::new();
    for i in 0..3000u32 {
        first.push(
            producer
                .send_async(Message::new("t", format!("m{i}")))
                .await
                .unwrap(),
        );
    }
    let mut acked = HashSet::new();
    for d in futures::future::join_all(first).await {
        acked.insert(d.unwrap().id);
    }
    let in_flight: Vec<_> = {
        let mut v = Vec::new();
        for i in 0..500u32 {
            v.push(
                producer
                    .send_async(Message::new("t", format!("late{i}")))
                    .await
                    .unwrap(),
            );
        }
        v
    };
    broker.kill().unwrap(); // SIGKILL
    broker.wait().unwrap();
    let late_acked: Vec<_> = futures::future::join_all(in_flight).await;
    for d in late_acked.into_iter().flatten() {
        acked.insert(d.id);
    }
    drop(producer);
    client.close().await;

    // Restart on the same data dir and read everything.
    let (mut broker, addr) = child::start(&data);
    let client = Client::connect(config(&addr, &data)).await.unwrap();
    let stored = read_until_empty(&client, "t").await;
    let total = stored.len();
    let seen: HashSet<_> = stored.into_iter().map(|m| m.id.unwrap()).collect();
    assert_eq!(total, seen.len(), "a message was stored twice");
    let missing = acked.difference(&seen).count();
    assert_eq!(
        missing,
        0,
        "{missing} acknowledged message(s) lost of {}",
        acked.len()
    );
    assert!(acked.len() >= 3000);
    client.close().await;
    broker.kill().unwrap();
    broker.wait().unwrap();
}
