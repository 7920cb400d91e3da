//! The coordinator's locking and waking: guest code and I/O run without
//! the group lock, heartbeats and credit never take it, two takes never
//! read the same messages, and push subscriptions are woken, not polled.

use std::sync::Mutex as StdMutex;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::*;

/// A filter function that, while the take that called it is between its
/// lock sections, runs `during` (once) and keeps every message.
struct Probe {
    during: StdMutex<Option<Box<dyn FnOnce() + Send>>>,
}

impl std::fmt::Debug for Probe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Probe")
    }
}

impl BatchFilter for Probe {
    fn verdicts(&self, _: &str, _: &str, _: u32, batch: &[u8]) -> Option<Vec<bool>> {
        if let Some(during) = self.during.lock().unwrap().take() {
            during();
        }
        let n = BatchIter::new(batch)
            .next()
            .and_then(|b| b.ok())
            .map_or(0, |b| b.header().record_count as usize);
        Some(vec![true; n])
    }
}

fn probe(during: impl FnOnce() + Send + 'static) -> Arc<dyn BatchFilter> {
    Arc::new(Probe {
        during: StdMutex::new(Some(Box::new(during))),
    })
}

#[test]
fn the_filter_function_runs_without_the_group_lock() {
    let f = fixture(1);
    f.produce_n(0, "m", 5);
    let m = f.join("g");
    let (groups, member) = (f.groups.clone(), m.clone());
    let seen = Arc::new(StdMutex::new(None));
    let seen2 = seen.clone();
    f.groups.set_filter(
        "g",
        Some(probe(move || {
            let g = groups.live("g").unwrap();
            // Held by this very thread, a parking_lot mutex would refuse.
            let free = g.state.try_lock().is_some();
            let beat = groups.heartbeat(&member).is_ok();
            *seen2.lock().unwrap() = Some((free, beat));
        })),
    );
    assert_eq!(f.take(&m, 100).len(), 5);
    assert_eq!(*seen.lock().unwrap(), Some((true, true)));
}

#[test]
fn an_ack_during_a_take_is_applied_and_the_take_still_lands() {
    let f = fixture(1);
    f.produce_n(0, "a", 3);
    let m = f.join("g");
    let first = f.take(&m, 100);
    assert_eq!(first.len(), 3);
    f.produce_n(0, "b", 3);
    let (groups, member, acked) = (f.groups.clone(), m.clone(), first.clone());
    f.groups.set_filter(
        "g",
        Some(probe(move || {
            let acks = acked
                .iter()
                .map(|g| PartitionAcks {
                    topic: g.topic.clone(),
                    partition: g.partition,
                    ranges: vec![OffsetRange {
                        first_offset: g.offset,
                        count: 1,
                    }],
                })
                .collect();
            let resp = groups
                .ack(&AckRequest {
                    member,
                    acks,
                    nacks: vec![],
                })
                .unwrap();
            assert_eq!(resp.settled, 3);
        })),
    );
    let second = f.take(&m, 100);
    assert_eq!(values(&second), values_of(&["b0", "b1", "b2"]));
    f.groups.tick();
    assert_eq!(f.committed("g", 0), Some(3));
}

#[test]
fn two_takes_on_one_window_never_hand_out_the_same_message() {
    // Two members of one broadcast instance share its windows.
    let f = fixture(1);
    f.produce_n(0, "m", 10);
    let s = GroupSettings {
        mode: GroupMode::Broadcast,
        ..settings()
    };
    let a = f.join_with("g", s.clone(), "shared");
    let b = f.join_with("g", s, "shared");
    let (groups, b2) = (f.groups.clone(), b.clone());
    let during = Arc::new(StdMutex::new(Vec::new()));
    let during2 = during.clone();
    f.groups.set_filter(
        "g",
        Some(probe(move || {
            // `a`'s take holds the read claim: `b` gets nothing new now.
            let g = groups.live("g").unwrap();
            let batch = groups.take(&g, &b2, 100, 16 << 20).unwrap();
            during2.lock().unwrap().push(batch.message_count());
        })),
    );
    let got_a = f.take(&a, 4);
    assert_eq!(got_a.len(), 4);
    assert_eq!(*during.lock().unwrap(), vec![0]);
    let got_b = f.take(&b, 100);
    assert_eq!(got_b.len(), 6);
    let mut all = values(&got_a);
    all.extend(values(&got_b));
    assert_eq!(all.len(), 10, "no message handed out twice");
}

#[test]
fn a_reset_during_a_take_makes_its_read_stale() {
    let f = fixture(1);
    f.produce_n(0, "m", 5);
    let m = f.join("g");
    let groups = f.groups.clone();
    f.groups.set_filter(
        "g",
        Some(probe(move || {
            groups
                .reset(&ResetGroupRequest {
                    group: "g".into(),
                    partitions: vec![],
                    to: ResetTo::Offset(3),
                })
                .unwrap();
        })),
    );
    // What was read from offset 0 no longer applies: nothing is handed
    // out, and the next take starts at the reset position.
    assert!(f.take(&m, 100).is_empty());
    assert_eq!(values(&f.take(&m, 100)), values_of(&["m3", "m4"]));
}

#[tokio::test]
async fn a_push_subscription_wakes_on_credit_and_on_new_messages() {
    let f = fixture(1);
    let m = f.join("g");
    let mut sub = f.groups.subscribe(&m, 0, 16 << 20).unwrap();
    let shutdown = CancellationToken::new();
    let wait = Duration::from_secs(10);
    f.produce_n(0, "m", 3);
    // No credit: nothing is pushed, however long it waits.
    let pending = tokio::time::timeout(Duration::from_millis(50), sub.next(&shutdown)).await;
    assert!(pending.is_err());
    f.groups.live_member(&m).unwrap().credit.add(2);
    let batch = tokio::time::timeout(wait, sub.next(&shutdown))
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(batch.message_count(), 2);
    f.groups.live_member(&m).unwrap().credit.add(10);
    let batch = tokio::time::timeout(wait, sub.next(&shutdown))
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(batch.message_count(), 1);
    // Waiting with credit and nothing to send: a produce wakes it.
    let groups_store = f.store.clone();
    let producer = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let mut b = BatchBuilder::new(T0);
        b.push(T0, None, Some(b"late"), &[]);
        let p = groups_store.log().partition("t", 0).unwrap();
        p.append(BytesMut::from(&b.finish()[..])).unwrap();
    });
    let batch = tokio::time::timeout(wait, sub.next(&shutdown))
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(batch.message_count(), 1);
    producer.await.unwrap();
}

#[tokio::test]
async fn a_subscription_keeps_its_member_alive_and_ends_when_it_leaves() {
    let f = fixture(1);
    let m = f.join("g");
    let mut sub = f.groups.subscribe(&m, 10, 16 << 20).unwrap();
    // Far past the 10 s session timeout without a heartbeat.
    f.clock.advance(60_000);
    f.groups.tick();
    assert!(
        f.groups.heartbeat(&m).is_ok(),
        "subscribed members do not expire"
    );
    let groups = f.groups.clone();
    let m2 = m.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(20)).await;
        groups.leave(&m2).unwrap();
    });
    let shutdown = CancellationToken::new();
    let end = tokio::time::timeout(Duration::from_secs(10), sub.next(&shutdown))
        .await
        .expect("woken by the leave");
    assert!(matches!(end, Err(GroupError::UnknownMember { .. })));
    drop(sub);
    // Without a subscription the session runs again.
    let m = f.join("g");
    f.clock.advance(60_000);
    f.groups.tick();
    assert!(f.groups.heartbeat(&m).is_err());
}

#[test]
fn heartbeats_report_the_view_without_the_group_lock() {
    let f = fixture(2);
    let a = f.join("g");
    let g = f.groups.live("g").unwrap();
    let held = g.state.lock();
    let (tx, rx) = std::sync::mpsc::channel();
    let (groups, a2) = (f.groups.clone(), a.clone());
    std::thread::spawn(move || tx.send(groups.heartbeat(&a2)));
    let beat = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("a heartbeat must not wait for the group lock")
        .unwrap();
    drop(held);
    assert_eq!(
        beat.assignment.len(),
        3,
        "both partitions and the retry topic's"
    );
    let b = f.join("g");
    let beat_a = f.groups.heartbeat(&a).unwrap();
    let beat_b = f.groups.heartbeat(&b).unwrap();
    assert_eq!(beat_a.generation, beat_b.generation);
    assert_eq!(beat_a.assignment.len() + beat_b.assignment.len(), 3);
}

fn values_of(v: &[&str]) -> BTreeSet<String> {
    v.iter().map(|s| s.to_string()).collect()
}
