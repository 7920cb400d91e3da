//! Idempotent producers under a broker that is SIGKILLed and restarted over
//! and over, as a new user runs them: eight clients, each with a default producer (idempotent, five
//! batches in flight per partition) with a few hundred sends outstanding
//! each, and a delivery timeout long enough that in-flight sends *retry
//! across the restart* instead of failing. Every acknowledged message must
//! be stored, and no message may be stored twice: the retry of a batch the
//! dead broker had already written must be recognised after the restart.

mod common;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use parking_lot::Mutex;
use sluice_client::{Client, ClientConfig, Message, MessageId, ProducerConfig};

use common::child::{self, impatient_config};
use common::client::read_until_empty;

const PRODUCERS: usize = 8;
const OUTSTANDING: usize = 300;
const KILLS: usize = 20;
/// Big enough that the producers' batches in flight per partition (8 × 300
/// × 5 KB over 2 partitions, about 6 MB) span more of the log than the
/// last few MiB: a broker that remembers producers only from the tail of
/// its log forgets some of them at each restart.
const VALUE_BYTES: usize = 5 * 1024;

fn config(addr: &str, data: &Path) -> ClientConfig {
    impatient_config(addr, data, "kill-loop", Duration::from_millis(500))
}

#[derive(Default)]
struct Outcomes {
    acked: HashSet<MessageId>,
    failed: usize,
}

/// Keeps `OUTSTANDING` sends in flight on one producer until `stop`.
async fn produce(config: ClientConfig, n: usize, stop: Arc<AtomicBool>, out: Arc<Mutex<Outcomes>>) {
    let client = Client::connect(config).await.unwrap();
    let producer = client
        .producer(ProducerConfig {
            // Long enough to ride out every restart: the retry is the path under test.
            delivery_timeout: Duration::from_secs(120),
            ..ProducerConfig::default()
        })
        .await
        .unwrap();
    let mut pending = FuturesUnordered::new();
    let mut i = 0u64;
    loop {
        while !stop.load(Ordering::Relaxed) && pending.len() < OUTSTANDING {
            let mut value = format!("p{n}-{i}-").into_bytes();
            value.resize(VALUE_BYTES, b'.');
            let msg = Message::new("t", value).key(format!("k{}", i % 16));
            i += 1;
            pending.push(producer.send_async(msg).await.unwrap());
        }
        match pending.next().await {
            Some(Ok(d)) => {
                out.lock().acked.insert(d.id);
            }
            Some(Err(e)) => {
                tracing::warn!(error = %e, "send failed");
                out.lock().failed += 1;
            }
            None => break,
        }
    }
    producer.flush().await;
    client.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_across_many_restarts_store_every_acked_message_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (mut broker, addr) = child::start_on(&data, "127.0.0.1:0");
    let client = Arc::new(Client::connect(config(&addr, &data)).await.unwrap());
    client
        .create_topic("t", 2, &[("durability", "sync")])
        .await
        .unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let outcomes = Arc::new(Mutex::new(Outcomes::default()));
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|n| {
            let config = config(&addr, &data);
            tokio::spawn(produce(config, n, stop.clone(), outcomes.clone()))
        })
        .collect();

    let mut rng_state = 0x9e37_79b9_u64;
    for _ in 0..KILLS {
        // Let the producers get well into their windows, at a varying point.
        rng_state ^= rng_state << 13;
        rng_state ^= rng_state >> 7;
        rng_state ^= rng_state << 17;
        let run = Duration::from_millis(250 + rng_state % 500);
        tokio::time::sleep(run).await;
        broker.kill().unwrap(); // SIGKILL
        broker.wait().unwrap();
        let (data, addr) = (data.clone(), addr.clone());
        broker = tokio::task::spawn_blocking(move || child::start_on(&data, &addr).0)
            .await
            .unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    for p in producers {
        p.await.unwrap();
    }

    // The first client's connection died with the first broker: read with
    // a fresh one.
    client.close().await;
    let client = Client::connect(config(&addr, &data)).await.unwrap();
    let mut copies: HashMap<MessageId, usize> = HashMap::new();
    for m in read_until_empty(&client, "t").await {
        *copies.entry(m.id.unwrap()).or_default() += 1;
    }
    let (acked, failed) = {
        let o = outcomes.lock();
        (o.acked.clone(), o.failed)
    };
    let twice = copies.values().filter(|&&n| n > 1).count();
    let lost = acked.iter().filter(|id| !copies.contains_key(id)).count();
    eprintln!(
        "{} acked, {} failed, {} stored, {twice} stored twice, {lost} lost",
        acked.len(),
        failed,
        copies.len()
    );
    assert_eq!(lost, 0, "{lost} acknowledged message(s) lost");
    assert_eq!(twice, 0, "{twice} message(s) stored more than once");
    assert_eq!(failed, 0, "sends failed instead of retrying");
    assert!(acked.len() > 5_000, "too little traffic to mean anything");
    client.close().await;
    broker.kill().unwrap();
    broker.wait().unwrap();
}
