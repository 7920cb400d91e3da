//! Producing, plain consuming and waiting, over the real client.

use std::time::{Duration, Instant};

use sluice_client::{
    Client, ConsumedMessage, ConsumerConfig, Delivery, Message, ProducerConfig, SeekTo,
};

/// Longest a test waits for a state it expects (a loaded 2-core machine
/// can be slow; a passing test does not wait this long).
pub const WAIT: Duration = Duration::from_secs(30);

/// Where manual clocks start.
pub const T0: i64 = 1_700_000_000_000;

/// Sends `msgs` in one batch on a new producer; every one must be acked.
pub async fn produce(client: &Client, msgs: Vec<Message>) -> Vec<Delivery> {
    let producer = client.producer(ProducerConfig::default()).await.unwrap();
    producer
        .send_batch(msgs)
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .collect()
}

/// Polls `check` until it returns `Ok` (or `WAIT` passed: then fails with
/// `what` and the last state `check` described).
pub async fn wait_for<T>(what: &str, mut check: impl AsyncFnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        match check().await {
            Ok(t) => return t,
            Err(state) => assert!(Instant::now() < deadline, "never {what}: {state}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Reads every partition of `topic` from the start with a plain consumer
/// until `expected` messages came or ten polls came back empty, then once
/// more: anything beyond `expected` would be a duplicate.
pub async fn consume_topic(client: &Client, topic: &str, expected: usize) -> Vec<ConsumedMessage> {
    let mut consumer = client.consumer(ConsumerConfig {
        max_wait: Duration::from_millis(200),
        ..ConsumerConfig::default()
    });
    consumer.assign(topic, &[], SeekTo::Earliest).await.unwrap();
    let mut out = Vec::new();
    let mut empty_polls = 0;
    while out.len() < expected && empty_polls < 10 {
        let batch = consumer.poll().await.unwrap();
        if batch.is_empty() {
            empty_polls += 1;
        }
        out.extend(batch);
    }
    out.extend(consumer.poll().await.unwrap());
    out
}

pub fn sorted<T: Ord>(mut v: Vec<T>) -> Vec<T> {
    v.sort();
    v
}

/// Reads every partition of `topic` from the start with a plain consumer
/// until a poll (of up to 200 ms) comes back empty: everything stored.
pub async fn read_until_empty(client: &Client, topic: &str) -> Vec<ConsumedMessage> {
    let mut consumer = client.consumer(ConsumerConfig {
        max_wait: Duration::from_millis(200),
        ..ConsumerConfig::default()
    });
    consumer.assign(topic, &[], SeekTo::Earliest).await.unwrap();
    let mut out = Vec::new();
    loop {
        let batch = consumer.poll().await.unwrap();
        if batch.is_empty() {
            return out;
        }
        out.extend(batch);
    }
}
