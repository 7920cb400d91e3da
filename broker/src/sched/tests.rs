//! Scheduler logic under a manual clock, on a real store in a temp dir.

use std::sync::Arc;

use bytes::Bytes;
use sluice_protocol::batch::BatchIter;
use sluice_protocol::ops::{CancelOutcome, DelayedRecord, LoopBackoff, LoopSpec};

use super::*;
use crate::clock::ManualClock;
use crate::log::{LogOptions, TopicConfig};

const T0: i64 = 1_700_000_000_000;

struct Fixture {
    dir: tempfile::TempDir,
    clock: ManualClock,
    store: Arc<Store>,
    sched: Arc<Scheduler>,
}

fn open_at(dir: tempfile::TempDir, clock: ManualClock, create: bool) -> Fixture {
    let store = Arc::new(
        Store::open(
            dir.path(),
            LogOptions::default(),
            Arc::new(clock.clone()),
            &crate::keyspaces(),
        )
        .unwrap(),
    );
    if create {
        for (name, partitions) in [("t", 1), ("u", 2)] {
            let cfg = TopicConfig {
                partitions,
                ..TopicConfig::default()
            };
            store.create_topic(name, cfg).unwrap();
        }
    }
    let sched = Arc::new(
        Scheduler::open(
            store.clone(),
            Arc::new(clock.clone()),
            SchedulerOptions::default(),
        )
        .unwrap(),
    );
    Fixture {
        dir,
        clock,
        store,
        sched,
    }
}

fn fixture() -> Fixture {
    open_at(tempfile::tempdir().unwrap(), ManualClock::new(T0), true)
}

impl Fixture {
    fn reopen(self) -> Fixture {
        let Fixture {
            dir,
            clock,
            store,
            sched,
        } = self;
        drop(sched);
        store.close().unwrap();
        drop(store);
        open_at(dir, clock, false)
    }

    fn at(&self, topic: &str, due: i64, value: &str) -> Delivery {
        Delivery {
            topic: topic.into(),
            partition: 0,
            due_at_ms: due,
            repeat: None,
            record: DelayedRecord {
                key: None,
                value: Bytes::copy_from_slice(value.as_bytes()),
                headers: vec![("p".into(), Bytes::from_static(b"1"))],
                timestamp: -1,
            },
        }
    }

    fn schedule_one(&self, d: Delivery) -> Scheduled {
        self.sched.schedule(vec![d]).pop().unwrap().unwrap()
    }

    fn tick_at(&self, now: i64) -> TickReport {
        self.clock.set(now);
        self.sched.tick().unwrap()
    }

    /// (value, delay id, due-at, loop iteration) of every record in a partition.
    fn delivered(&self, topic: &str, partition: u32) -> Vec<(String, u64, i64, Option<u32>)> {
        let p = self.store.log().partition(topic, partition).unwrap();
        let read = p.read(0, usize::MAX >> 1).unwrap();
        let mut out = Vec::new();
        for chunk in &read.chunks {
            for batch in BatchIter::new(chunk) {
                for rec in batch.unwrap().records() {
                    let rec = rec.unwrap();
                    let be8 = |h: &str| rec.header(h).map(|v| <[u8; 8]>::try_from(v).unwrap());
                    out.push((
                        String::from_utf8(rec.value.unwrap().to_vec()).unwrap(),
                        u64::from_be_bytes(be8(DELAY_ID_HEADER).unwrap()),
                        i64::from_be_bytes(be8(DUE_AT_HEADER).unwrap()),
                        rec.header(LOOP_ITERATION_HEADER)
                            .map(|v| u32::from_be_bytes(v.try_into().unwrap())),
                    ));
                    assert_eq!(rec.header("p"), Some(&b"1"[..]), "user headers kept");
                }
            }
        }
        out
    }
}

#[test]
fn never_early_and_equal_due_times_keep_schedule_order() {
    let f = fixture();
    let due = T0 + 500;
    let mut ids = Vec::new();
    for chunk in 0..10 {
        let batch: Vec<_> = (0..100)
            .map(|i| f.at("t", due, &format!("m{}", chunk * 100 + i)))
            .collect();
        ids.extend(
            f.sched
                .schedule(batch)
                .into_iter()
                .map(|r| r.unwrap().delay_id),
        );
    }
    // One due earlier, scheduled last: still first.
    let early = f.schedule_one(f.at("t", due - 1, "early"));
    assert_eq!(f.tick_at(due - 2).dispatched, 0);
    assert!(f.delivered("t", 0).is_empty(), "nothing before its time");
    assert_eq!(f.tick_at(due - 1).dispatched, 1);
    let r = f.tick_at(due);
    assert_eq!(r.dispatched, 1000);
    let got = f.delivered("t", 0);
    assert_eq!(got[0].1, early.delay_id);
    let rest: Vec<u64> = got[1..].iter().map(|g| g.1).collect();
    assert_eq!(rest, ids, "equal due times in schedule order");
    assert!(got[1..].iter().all(|g| g.2 == due));
    assert_eq!(got[500].0, "m499");
    assert_eq!(f.tick_at(due + 10_000).dispatched, 0, "delivered once");
    assert!(f.sched.list(None).unwrap().is_empty());
}

#[test]
fn past_times_are_due_now_and_bad_requests_are_refused() {
    let f = fixture();
    let s = f.schedule_one(f.at("t", T0 - 60_000, "late"));
    assert_eq!(s.due_at_ms, T0, "a past time is due at once");
    assert_eq!(f.tick_at(T0).dispatched, 1);

    let horizon = f.sched.options().max_horizon_ms as i64;
    let mut bad = vec![
        f.at("t", T0 + horizon + 1, "too far"),
        f.at("nope", T0, "no topic"),
        Delivery {
            partition: 5,
            ..f.at("u", T0, "no partition")
        },
        Delivery {
            repeat: Some(LoopSpec {
                interval_ms: 100,
                times: 0,
                expire_at_ms: -1,
                backoff: LoopBackoff::Fixed,
            }),
            ..f.at("t", T0, "endless")
        },
    ];
    bad.push(f.at("t", T0 + horizon, "just inside"));
    let results = f.sched.schedule(bad);
    let msg = |i: usize| results[i].as_ref().unwrap_err().to_string();
    assert!(msg(0).contains("horizon"), "{}", msg(0));
    assert!(matches!(
        results[1],
        Err(SchedError::Log(LogError::UnknownTopic(_)))
    ));
    assert!(matches!(
        results[2],
        Err(SchedError::Log(LogError::UnknownPartition { .. }))
    ));
    assert!(msg(3).contains("needs a bound"), "{}", msg(3));
    assert!(results[4].is_ok(), "the others do not fail the batch");
}

#[test]
fn cancel_answers_for_every_state() {
    let f = fixture();
    let a = f.schedule_one(f.at("t", T0 + 1000, "a"));
    let b = f.schedule_one(f.at("t", T0 + 10, "b"));
    assert!(f.sched.is_pending(a.delay_id).unwrap());
    assert_eq!(
        f.sched.cancel(a.delay_id).unwrap().0,
        CancelOutcome::Cancelled
    );
    assert!(!f.sched.is_pending(a.delay_id).unwrap());
    assert!(!f.sched.is_pending(987_654_321).unwrap());
    assert_eq!(
        f.sched.cancel(a.delay_id).unwrap().0,
        CancelOutcome::AlreadyCancelled
    );
    assert_eq!(
        f.sched.cancel(987_654_321).unwrap().0,
        CancelOutcome::Unknown
    );
    assert!(f.sched.is_pending(b.delay_id).unwrap());
    assert_eq!(f.tick_at(T0 + 2000).dispatched, 1);
    assert!(!f.sched.is_pending(b.delay_id).unwrap());
    assert_eq!(
        f.sched.cancel(b.delay_id).unwrap().0,
        CancelOutcome::AlreadyDelivered
    );
    let got = f.delivered("t", 0);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0, "b");
}

#[test]
fn list_counts_pending_per_topic_with_the_next_due_time() {
    let f = fixture();
    for i in 0..5 {
        f.schedule_one(f.at("t", T0 + 100 + i, "x"));
    }
    f.schedule_one(Delivery {
        partition: 1,
        ..f.at("u", T0 + 50, "y")
    });
    let list = f.sched.list(None).unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(
        (list[0].topic.as_str(), list[0].pending, list[0].next_due_ms),
        ("t", 5, T0 + 100)
    );
    assert_eq!((list[1].pending, list[1].next_due_ms), (1, T0 + 50));
    f.tick_at(T0 + 101);
    let t = f.sched.list(Some("t")).unwrap();
    assert_eq!((t[0].pending, t[0].next_due_ms), (3, T0 + 102));
    assert!(f.sched.list(Some("none")).unwrap().is_empty());
}

#[test]
fn loops_deliver_every_interval_until_times_or_expiry() {
    let f = fixture();
    let times = f.schedule_one(Delivery {
        repeat: Some(LoopSpec {
            interval_ms: 100,
            times: 3,
            expire_at_ms: -1,
            backoff: LoopBackoff::Fixed,
        }),
        ..f.at("t", T0 + 100, "times")
    });
    let expiring = f.schedule_one(Delivery {
        partition: 1,
        repeat: Some(LoopSpec {
            interval_ms: 50,
            times: 0,
            expire_at_ms: T0 + 260,
            backoff: LoopBackoff::Exponential { max_interval_ms: 0 },
        }),
        ..f.at("u", T0 + 100, "expiring")
    });
    // Step the clock a millisecond at a time: each delivery exactly on time.
    for now in T0..T0 + 1000 {
        f.tick_at(now);
    }
    let got = f.delivered("t", 0);
    let dues: Vec<(i64, Option<u32>)> = got.iter().map(|g| (g.2, g.3)).collect();
    assert_eq!(
        dues,
        vec![
            (T0 + 100, Some(1)),
            (T0 + 200, Some(2)),
            (T0 + 300, Some(3))
        ]
    );
    assert!(got.iter().all(|g| g.1 == times.delay_id));
    // 100, +50 = 150, +100 = 250, +200 = 450 > expiry.
    let dues: Vec<i64> = f.delivered("u", 1).iter().map(|g| g.2).collect();
    assert_eq!(dues, vec![T0 + 100, T0 + 150, T0 + 250]);
    assert_eq!(
        f.sched.cancel(expiring.delay_id).unwrap().0,
        CancelOutcome::AlreadyDelivered
    );
}

#[test]
fn cancelling_a_loop_stops_its_next_deliveries() {
    let f = fixture();
    let s = f.schedule_one(Delivery {
        repeat: Some(LoopSpec {
            interval_ms: 100,
            times: 10,
            expire_at_ms: -1,
            backoff: LoopBackoff::Fixed,
        }),
        ..f.at("t", T0 + 100, "loop")
    });
    f.tick_at(T0 + 100);
    f.tick_at(T0 + 200);
    assert_eq!(
        f.sched.cancel(s.delay_id).unwrap().0,
        CancelOutcome::Cancelled
    );
    f.tick_at(T0 + 5000);
    assert_eq!(f.delivered("t", 0).len(), 2);
    assert!(f.sched.list(None).unwrap().is_empty());
}

#[test]
fn cancel_racing_dispatch_is_either_delivered_or_cancelled_never_both() {
    let f = fixture();
    let n = 2000;
    let batch: Vec<_> = (0..n)
        .map(|i| f.at("t", T0 + (i % 200) as i64, &format!("{i}")))
        .collect();
    let ids: Vec<u64> = f
        .sched
        .schedule(batch)
        .into_iter()
        .map(|r| r.unwrap().delay_id)
        .collect();
    let dispatcher = {
        let (sched, clock) = (f.sched.clone(), f.clock.clone());
        std::thread::spawn(move || {
            for now in T0..T0 + 210 {
                clock.set(now);
                sched.tick().unwrap();
            }
        })
    };
    let canceller = {
        let (sched, ids) = (f.sched.clone(), ids.clone());
        std::thread::spawn(move || {
            // Every other id, from the latest due down, meeting the dispatcher.
            ids.iter()
                .rev()
                .step_by(2)
                .map(|id| (*id, sched.cancel(*id).unwrap().0))
                .collect::<Vec<_>>()
        })
    };
    dispatcher.join().unwrap();
    let outcomes = canceller.join().unwrap();
    let delivered: std::collections::HashSet<u64> =
        f.delivered("t", 0).iter().map(|g| g.1).collect();
    let mut cancelled = 0;
    for (id, outcome) in &outcomes {
        match outcome {
            CancelOutcome::Cancelled => {
                cancelled += 1;
                assert!(!delivered.contains(id), "{id} cancelled and delivered");
            }
            CancelOutcome::AlreadyDelivered => assert!(delivered.contains(id)),
            other => panic!("{id}: unexpected {other:?}"),
        }
    }
    assert_eq!(delivered.len() + cancelled, n, "nothing lost");
    assert_eq!(f.delivered("t", 0).len(), delivered.len(), "no duplicates");
}

#[test]
fn pending_messages_and_loops_survive_a_restart() {
    let f = fixture();
    f.schedule_one(f.at("t", T0 + 100, "one"));
    f.schedule_one(Delivery {
        repeat: Some(LoopSpec {
            interval_ms: 100,
            times: 3,
            expire_at_ms: -1,
            backoff: LoopBackoff::Fixed,
        }),
        ..f.at("t", T0 + 50, "loop")
    });
    f.tick_at(T0 + 50);
    let f = f.reopen();
    let later = f.schedule_one(f.at("t", T0 + 120, "after restart"));
    for now in [T0 + 99, T0 + 100, T0 + 150, T0 + 250, T0 + 1000] {
        f.tick_at(now);
    }
    let got: Vec<String> = f.delivered("t", 0).into_iter().map(|g| g.0).collect();
    assert_eq!(
        got,
        vec!["loop", "one", "after restart", "loop", "loop"],
        "nothing lost or repeated across the restart"
    );
    assert!(later.delay_id > 0);
}

#[test]
fn messages_for_a_deleted_topic_are_dropped_and_reported() {
    let f = fixture();
    let s = f.schedule_one(f.at("u", T0 + 10, "gone"));
    f.store.delete_topic("u").unwrap();
    let r = f.tick_at(T0 + 10);
    assert_eq!((r.dispatched, r.dropped), (0, 1));
    let (outcome, message) = f.sched.cancel(s.delay_id).unwrap();
    assert_eq!(outcome, CancelOutcome::AlreadyCancelled);
    assert!(message.contains("no longer exists"), "{message}");
}

#[test]
fn retries_go_through_the_same_schedule() {
    let f = fixture();
    let ladder = RetryLadder::default();
    let d = ladder.retry("t", 0, f.at("t", 0, "retry me").record, 2, T0);
    let s = f.schedule_one(d);
    assert_eq!(s.due_at_ms, T0 + 5000);
    assert_eq!(f.tick_at(T0 + 4999).dispatched, 0);
    assert_eq!(f.tick_at(T0 + 5000).dispatched, 1);
}

#[test]
fn a_large_backlog_drains_in_due_order_across_wheel_turns() {
    let f = fixture();
    // Spread over 20 s: several turns of the 4 s wheel and several loads.
    let batch: Vec<_> = (0..20_000)
        .map(|i| f.at("t", T0 + 20_000 - i as i64, "x"))
        .collect();
    for r in f.sched.schedule(batch) {
        r.unwrap();
    }
    let mut dispatched = 0;
    for now in (T0..=T0 + 20_000).step_by(7) {
        dispatched += f.tick_at(now).dispatched;
    }
    dispatched += f.tick_at(T0 + 20_000).dispatched;
    assert_eq!(dispatched, 20_000);
    let dues: Vec<i64> = f.delivered("t", 0).iter().map(|g| g.2).collect();
    assert!(dues.windows(2).all(|w| w[0] <= w[1]), "due order");
    assert_eq!(dues.len(), 20_000);
}
