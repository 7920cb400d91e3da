//! The scheduler reopened, after an unclean stop, with a million messages
//! pending: it is ready at once (no scan of the backlog at open), nothing
//! is lost, and the first due messages go out on time and in order.

mod common;

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use sluice_broker::clock::ManualClock;
use sluice_broker::log::TopicConfig;
use sluice_broker::sched::{Delivery, Scheduler, SchedulerOptions};
use sluice_broker::store::Store;
use sluice_protocol::ops::{CancelOutcome, DelayedRecord};

use common::store::open_store;

const T0: i64 = 1_700_000_000_000;
const HOUR: i64 = 3_600_000;
const PENDING: u64 = 1_000_000;

fn open(dir: &std::path::Path, clock: &ManualClock) -> (Arc<Store>, Scheduler) {
    let store = Arc::new(open_store(dir, Arc::new(clock.clone())));
    let sched = Scheduler::open(
        store.clone(),
        Arc::new(clock.clone()),
        SchedulerOptions::default(),
    )
    .unwrap();
    (store, sched)
}

#[test]
fn restart_with_a_million_pending_is_ready_at_once_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let (store, sched) = open(dir.path(), &clock);
    store.create_topic("t", TopicConfig::default()).unwrap();
    let value = Bytes::from_static(&[b'x'; 100]);
    let mut ids = Vec::with_capacity(PENDING as usize);
    for chunk in 0..PENDING / 10_000 {
        let batch = (0..10_000)
            .map(|i| {
                let n = chunk * 10_000 + i;
                Delivery {
                    topic: "t".into(),
                    partition: 0,
                    // A thousand per millisecond, starting in an hour.
                    due_at_ms: T0 + HOUR + (n / 1000) as i64,
                    repeat: None,
                    record: DelayedRecord::with_value(value.clone()),
                }
            })
            .collect();
        ids.extend(
            sched
                .schedule(batch)
                .into_iter()
                .map(|r| r.unwrap().delay_id),
        );
    }
    // No close: like a kill, the memtables are not flushed and the open
    // replays the write-ahead log (bounded, see `MetaStore::open`).
    drop(sched);
    drop(store);

    let started = Instant::now();
    let (store, sched) = open(dir.path(), &clock);
    let listed = sched.list(None).unwrap();
    eprintln!("reopened with {PENDING} pending in {:?}", started.elapsed());
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].pending, PENDING);
    assert_eq!(listed[0].next_due_ms, T0 + HOUR);

    assert_eq!(sched.tick().unwrap().dispatched, 0, "nothing is due yet");
    clock.set(T0 + HOUR + 1);
    assert_eq!(
        sched.tick().unwrap().dispatched,
        2000,
        "the first two milliseconds"
    );
    let (outcome, _) = sched.cancel(ids[500_000]).unwrap();
    assert_eq!(outcome, CancelOutcome::Cancelled);
    assert_eq!(
        sched.cancel(ids[10]).unwrap().0,
        CancelOutcome::AlreadyDelivered
    );
    assert_eq!(sched.list(Some("t")).unwrap()[0].pending, PENDING - 2001);
    assert_eq!(
        store.log().partition("t", 0).unwrap().high_watermark(),
        2000
    );
}
