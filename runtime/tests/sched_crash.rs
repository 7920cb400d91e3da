//! The broker as a child process, SIGKILLed in the middle of dispatching
//! delayed messages — after recording the dispatch and before appending,
//! and after appending and before deleting — then restarted: every
//! scheduled message is in its topic exactly once.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use sluice_client::{Client, ClientConfig};
use sluice_protocol::ops::{
    DelayedRecord, ListDelaysRequest, ScheduleEntry, ScheduleRequest, When,
};

use common::child::{self, impatient_config};
use common::client::read_until_empty;

fn config(addr: &str, data: &Path) -> ClientConfig {
    impatient_config(addr, data, "sched-crash-test", Duration::from_millis(300))
}

const MESSAGES: u64 = 600;

async fn crash_and_recover(point: &str) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (mut broker, addr, lines) = child::start_with_env(&data, &[("SLUICE_CRASH_POINT", point)]);
    let client = Client::connect(config(&addr, &data)).await.unwrap();
    client.create_topic("t", 2, &[]).await.unwrap();
    // Due in 300 ms, spread over 50 ms, on both partitions: the first
    // dispatch round takes some of them and stops at the crash point.
    let entries = (0..MESSAGES)
        .map(|i| ScheduleEntry {
            topic: "t".into(),
            partition: (i % 2) as u32,
            when: When::After(300 + i % 50),
            repeat: None,
            record: DelayedRecord::with_value(Bytes::from(format!("m{i}"))),
        })
        .collect();
    let response = client
        .connection()
        .request(&ScheduleRequest { entries })
        .await
        .unwrap();
    let ids: Vec<u64> = response
        .results
        .iter()
        .map(|r| {
            assert_eq!(r.error, sluice_protocol::ErrorCode::None, "{}", r.message);
            r.delay_id
        })
        .collect();

    // Wait for the broker to reach the crash point, then SIGKILL it there.
    let announced = tokio::task::spawn_blocking(move || {
        lines
            .iter()
            .find(|l| l.starts_with("CRASH POINT"))
            .is_some()
    });
    assert!(
        tokio::time::timeout(Duration::from_secs(30), announced)
            .await
            .expect("the broker never reached the crash point")
            .unwrap()
    );
    broker.kill().unwrap();
    broker.wait().unwrap();
    client.close().await;

    // Restart without the crash point; wait until nothing is pending.
    let (mut broker, addr) = child::start(&data);
    let client = Client::connect(config(&addr, &data)).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let pending = client
            .connection()
            .request(&ListDelaysRequest::default())
            .await
            .unwrap();
        if pending.topics.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "still pending: {pending:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut seen: HashMap<u64, usize> = HashMap::new();
    for m in read_until_empty(&client, "t").await {
        let id = m.delay_id.expect("delivered messages carry their delay id");
        *seen.entry(id).or_default() += 1;
    }
    let lost: Vec<_> = ids.iter().filter(|id| !seen.contains_key(id)).collect();
    assert!(lost.is_empty(), "{point}: {} lost: {lost:?}", lost.len());
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "{point}: delivered twice: {twice:?}");
    assert_eq!(seen.len() as u64, MESSAGES);
    client.close().await;
    broker.kill().unwrap();
    broker.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_after_recording_a_dispatch_loses_and_repeats_nothing() {
    crash_and_recover("sched.after_intent").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_after_appending_before_deleting_loses_and_repeats_nothing() {
    crash_and_recover("sched.after_append").await;
}
