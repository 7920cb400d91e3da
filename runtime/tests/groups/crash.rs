//! A group resuming after its broker, a child process, is SIGKILLed.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use sluice_client::Client;

use crate::common::child;
use crate::common::groups::{
    all_settled, cfg, consume_all, consume_all_unsettled, set, spread, text, texts, values,
    wait_for_group,
};
use crate::common::{WAIT, produce};

/// The offsets the child broker has stored for `group`, read from its
/// metadata store opened read-only beside it (the open replays the
/// write-ahead log, so this sees unsynced writes too). `None`: none stored.
fn stored_offsets(data: &Path, group: &str, topic: &str, partitions: u32) -> Vec<Option<u64>> {
    use sluice_broker::store::catalog::{CF_GROUP_OFFSETS, keys};
    let path = data.join("meta");
    let opts = rocksdb::Options::default();
    let cfs = rocksdb::DB::list_cf(&opts, &path).unwrap();
    let db = rocksdb::DB::open_cf_for_read_only(&opts, &path, cfs, false).unwrap();
    let cf = db.cf_handle(CF_GROUP_OFFSETS).unwrap();
    (0..partitions)
        .map(|p| {
            let key = keys::offset_key(group, topic, p).unwrap();
            db.get_cf(&cf, key)
                .unwrap()
                .map(|v| keys::decode_offset_value(&v).unwrap())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_resumes_after_a_broker_sigkill_without_losing_messages() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (mut broker, addr) = child::start(&data);
    let client = Client::connect(child::client_config(&addr, &data, "groups-crash-test"))
        .await
        .unwrap();
    client.create_topic("c", 3, &[]).await.unwrap();
    let msgs = spread("c", "m", 300, 3);
    let all = values(&msgs);
    let deliveries = produce(&client, msgs).await;
    // (partition, offset) -> value
    let at: BTreeMap<(u32, u64), String> = deliveries
        .iter()
        .zip(&all)
        .map(|(d, v)| ((d.partition, d.offset), v.clone()))
        .collect();

    // Half acked: offsets below 50 in each partition.
    let c = client.group_consumer(cfg("survivors", "c")).await.unwrap();
    let got = consume_all_unsettled(&c, 300).await;
    let mut acked_before = Vec::new();
    for m in &got {
        if m.offset < 50 {
            m.ack();
            acked_before.push(text(m));
        }
    }
    c.flush_acks().await.unwrap();
    assert_eq!(c.ack_stats().settled, 150);
    wait_for_group(&client, "survivors", "committed half", |d| {
        d.partitions
            .iter()
            .filter(|p| p.topic == "c")
            .all(|p| p.committed == 50)
    })
    .await;
    // The broker shows progress up to one upkeep period (50 ms) before it
    // stores it: wait until it is stored, so the kill tests that a stored
    // commit survives, not only that nothing is lost without one.
    let deadline = Instant::now() + WAIT;
    loop {
        let stored = stored_offsets(&data, "survivors", "c", 3);
        if stored == [Some(50); 3] {
            break;
        }
        assert!(Instant::now() < deadline, "never stored: {stored:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    broker.kill().unwrap();
    broker.wait().unwrap();
    drop(c);
    client.close().await;

    let (mut broker, addr) = child::start(&data);
    let client = Client::connect(child::client_config(&addr, &data, "groups-crash-test"))
        .await
        .unwrap();
    // What the broker stored before it died: the group resumes there.
    let d = client.describe_group("survivors").await.unwrap();
    let stored: BTreeMap<u32, u64> = d
        .partitions
        .iter()
        .filter(|p| p.topic == "c")
        .map(|p| (p.partition, p.committed))
        .collect();
    assert_eq!(
        stored,
        BTreeMap::from([(0, 50), (1, 50), (2, 50)]),
        "{d:#?}"
    );
    let want: Vec<String> = at
        .iter()
        .filter(|((p, o), _)| *o >= stored[p])
        .map(|(_, v)| v.clone())
        .collect();
    let c = client.group_consumer(cfg("survivors", "c")).await.unwrap();
    let after = consume_all(&[&c], want.len()).await.remove(0);
    let after_vals = texts(&after);
    assert_eq!(
        after_vals.len(),
        want.len(),
        "no duplicates after the restart: {after_vals:?}"
    );
    assert_eq!(
        set(&after_vals),
        set(&want),
        "resumed at the stored offsets {stored:?}"
    );
    let union: BTreeSet<String> = set(&acked_before)
        .union(&set(&after_vals))
        .cloned()
        .collect();
    assert_eq!(union, set(&all), "nothing lost");
    wait_for_group(&client, "survivors", "settled", all_settled).await;

    c.leave().await.unwrap();
    client.close().await;
    broker.kill().unwrap();
    broker.wait().unwrap();
}
