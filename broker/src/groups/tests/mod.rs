//! Group behaviour on a real store and scheduler in a temp dir, driven by
//! hand: a manual clock, `tick()` called by the test. The networked tests
//! (real broker, real client) are in runtime/tests/groups/.

use std::collections::BTreeSet;
use std::sync::Arc;

use bytes::BytesMut;
use sluice_protocol::batch::{BatchBuilder, BatchIter};
use sluice_protocol::headers;
use sluice_protocol::ops::{
    AckRequest, AckResponse, GroupMode, GroupSettings, JoinGroupRequest, MemberRef, Nack,
    NackAction, OffsetRange, OffsetSpec, PartitionAcks, ResetGroupRequest, ResetTo,
};

use super::*;
use crate::clock::ManualClock;
use crate::log::{LogOptions, TopicConfig};
use crate::sched::SchedulerOptions;
use crate::store::Catalog;

mod coordinator;

const T0: i64 = 1_700_000_000_000;

struct Fixture {
    _dir: tempfile::TempDir,
    clock: ManualClock,
    store: Arc<Store>,
    sched: Arc<Scheduler>,
    groups: Arc<Groups>,
}

/// A delivered message as a test looks at it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Got {
    topic: String,
    partition: u32,
    offset: u64,
    attempt: u16,
    value: String,
    key: Option<String>,
    headers: Vec<(String, Vec<u8>)>,
}

impl Got {
    fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| &v[..])
    }
}

fn fixture(partitions: u32) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let store = Arc::new(
        Store::open(
            dir.path(),
            LogOptions::default(),
            Arc::new(clock.clone()),
            &crate::keyspaces(),
        )
        .unwrap(),
    );
    let cfg = TopicConfig {
        partitions,
        ..TopicConfig::default()
    };
    store.create_topic("t", cfg).unwrap();
    let sched = Arc::new(
        Scheduler::open(
            store.clone(),
            Arc::new(clock.clone()),
            SchedulerOptions::default(),
        )
        .unwrap(),
    );
    let groups = Arc::new(Groups::new(
        store.clone(),
        sched.clone(),
        Arc::new(clock.clone()),
        &TopicConfig::default(),
    ));
    Fixture {
        _dir: dir,
        clock,
        store,
        sched,
        groups,
    }
}

fn settings() -> GroupSettings {
    GroupSettings {
        topic: "t".into(),
        start: OffsetSpec::Earliest,
        ack_timeout_ms: 1000,
        max_attempts: 3,
        retry_ladder_ms: vec![100, 200],
        ..GroupSettings::default()
    }
}

impl Fixture {
    /// Produces `(key, value, tags)` to a partition.
    fn produce(&self, partition: u32, messages: &[(Option<&str>, &str, &[&str])]) {
        let mut b = BatchBuilder::new(self.clock.now_ms());
        for (key, value, tags) in messages {
            let hs: Vec<(&str, Option<&[u8]>)> = tags
                .iter()
                .map(|t| (headers::TAG, Some(t.as_bytes())))
                .collect();
            b.push(
                self.clock.now_ms(),
                key.map(str::as_bytes),
                Some(value.as_bytes()),
                &hs,
            );
        }
        let p = self.store.log().partition("t", partition).unwrap();
        p.append(BytesMut::from(&b.finish()[..])).unwrap();
    }

    fn produce_n(&self, partition: u32, prefix: &str, n: usize) {
        let values: Vec<String> = (0..n).map(|i| format!("{prefix}{i}")).collect();
        let msgs: Vec<(Option<&str>, &str, &[&str])> =
            values.iter().map(|v| (None, v.as_str(), &[][..])).collect();
        self.produce(partition, &msgs);
    }

    fn join_with(&self, group: &str, s: GroupSettings, instance: &str) -> MemberRef {
        let resp = self
            .groups
            .join(
                JoinGroupRequest {
                    group: group.into(),
                    member_id: String::new(),
                    instance_id: instance.into(),
                    session_timeout_ms: 10_000,
                    settings: s,
                },
                "test",
                1,
            )
            .unwrap();
        MemberRef {
            group: group.into(),
            member_id: resp.member_id,
        }
    }

    fn join(&self, group: &str) -> MemberRef {
        self.join_with(group, settings(), "")
    }

    fn take(&self, m: &MemberRef, max: usize) -> Vec<Got> {
        let g = self.groups.live(&m.group).unwrap();
        let batch = self.groups.take(&g, m, max, 16 << 20).unwrap();
        let mut out = Vec::new();
        for d in batch.deliveries {
            out.extend(parse(&d.records, &d.topic, d.partition, |offset| {
                d.ranges
                    .iter()
                    .find(|x| offset >= x.first_offset && offset < x.first_offset + x.count as u64)
                    .map(|x| x.attempt)
            }));
        }
        out
    }

    fn ack(&self, m: &MemberRef, got: &[Got]) -> AckResponse {
        let acks = got
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
        self.groups
            .ack(&AckRequest {
                member: m.clone(),
                acks,
                nacks: vec![],
            })
            .unwrap()
    }

    fn nack(&self, m: &MemberRef, got: &Got, action: NackAction) -> AckResponse {
        self.groups
            .ack(&AckRequest {
                member: m.clone(),
                acks: vec![],
                nacks: vec![Nack {
                    topic: got.topic.clone(),
                    partition: got.partition,
                    offset: got.offset,
                    action,
                    reason: "handler failed".into(),
                }],
            })
            .unwrap()
    }

    /// Lets the scheduler dispatch what is due and the groups do upkeep.
    fn advance(&self, ms: i64) {
        self.clock.advance(ms);
        self.sched.tick().unwrap();
        self.groups.tick();
    }

    /// The group's dead letters, once the scheduler has appended those due
    /// (a dead letter is scheduled due now; the wheel may already be a
    /// millisecond ahead).
    fn dead_letters(&self, group: &str) -> Vec<Got> {
        self.advance(1);
        let topic = dead_letter_topic(group);
        let p = self.store.log().partition(&topic, 0).unwrap();
        let read = p.read(0, 1 << 20).unwrap();
        read.chunks
            .iter()
            .flat_map(|chunk| parse(chunk, &topic, 0, |_| Some(0)))
            .collect()
    }

    fn committed(&self, group: &str, partition: u32) -> Option<u64> {
        self.store
            .meta()
            .committed_offset(group, "t", partition)
            .unwrap()
    }
}

/// The records of `buf` that `attempt_of` says were delivered (and on
/// which attempt).
fn parse(
    buf: &[u8],
    topic: &str,
    partition: u32,
    attempt_of: impl Fn(u64) -> Option<u16>,
) -> Vec<Got> {
    let mut out = Vec::new();
    for b in BatchIter::new(buf) {
        for r in b.unwrap().records() {
            let r = r.unwrap();
            let Some(attempt) = attempt_of(r.offset) else {
                continue;
            };
            out.push(Got {
                topic: topic.to_owned(),
                partition,
                offset: r.offset,
                attempt,
                value: String::from_utf8(r.value.unwrap().to_vec()).unwrap(),
                key: r.key.map(|k| String::from_utf8(k.to_vec()).unwrap()),
                headers: r
                    .headers()
                    .map(|h| h.unwrap())
                    .map(|(k, v)| (k.to_owned(), v.unwrap_or_default().to_vec()))
                    .collect(),
            });
        }
    }
    out
}

fn values(got: &[Got]) -> BTreeSet<String> {
    got.iter().map(|g| g.value.clone()).collect()
}

#[test]
fn members_of_a_group_get_disjoint_sets_that_cover_everything() {
    let f = fixture(6);
    for p in 0..6 {
        f.produce_n(p, &format!("p{p}-"), 50);
    }
    let members = [f.join("g"), f.join("g"), f.join("g")];
    let mut seen = BTreeSet::new();
    let mut total = 0;
    for m in &members {
        let got = f.take(m, 10_000);
        assert_eq!(got.len(), 100, "3 members share 6 partitions evenly");
        total += got.len();
        seen.extend(values(&got));
        f.ack(m, &got);
    }
    assert_eq!(total, 300);
    assert_eq!(seen.len(), 300, "no message twice");
    f.groups.tick();
    for p in 0..6 {
        assert_eq!(f.committed("g", p), Some(50));
    }
}

#[test]
fn a_member_that_leaves_mid_batch_has_its_unacked_messages_redelivered() {
    let f = fixture(2);
    f.produce_n(0, "a", 10);
    f.produce_n(1, "b", 10);
    let m1 = f.join("g");
    let m2 = f.join("g");
    let got1 = f.take(&m1, 100);
    assert_eq!(got1.len(), 10);
    // m1 acks half, then dies.
    f.ack(&m1, &got1[..5]);
    f.groups.leave(&m1).unwrap();
    let got2 = f.take(&m2, 100);
    // m2 now owns both partitions: its own 10 plus m1's 5 unacked.
    assert_eq!(got2.len(), 15);
    let redelivered: Vec<_> = got2
        .iter()
        .filter(|g| g.partition == got1[0].partition)
        .collect();
    assert_eq!(
        redelivered.iter().map(|g| &g.value).collect::<Vec<_>>(),
        got1[5..].iter().map(|g| &g.value).collect::<Vec<_>>()
    );
    assert!(
        redelivered.iter().all(|g| g.attempt == 1),
        "a dead member's delivery is not the message's failure"
    );
}

#[test]
fn a_silent_member_expires_and_its_partitions_move() {
    let f = fixture(2);
    f.produce_n(0, "a", 3);
    f.produce_n(1, "b", 3);
    let m1 = f.join("g");
    let m2 = f.join("g");
    let got1 = f.take(&m1, 100);
    assert_eq!(got1.len(), 3);
    // m2 heartbeats, m1 does not.
    for _ in 0..11 {
        f.advance(1000);
        f.groups.heartbeat(&m2).unwrap();
    }
    assert!(matches!(
        f.groups.heartbeat(&m1),
        Err(GroupError::UnknownMember { .. })
    ));
    let got2 = f.take(&m2, 100);
    assert_eq!(got2.len(), 6);
}

#[test]
fn an_unacked_message_is_redelivered_after_the_ack_timeout_then_dead_lettered() {
    let f = fixture(1);
    f.produce_n(0, "m", 1);
    let m = f.join("g");
    assert_eq!(f.take(&m, 10)[0].attempt, 1);
    f.advance(999);
    assert!(f.take(&m, 10).is_empty(), "not before the timeout");
    f.advance(1);
    let again = f.take(&m, 10);
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].attempt, 2);
    f.advance(1000);
    assert_eq!(f.take(&m, 10)[0].attempt, 3);
    f.advance(1000);
    assert!(f.take(&m, 10).is_empty());
    let dead = f.dead_letters("g");
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].value, "m0");
    assert_eq!(
        dead[0].header(headers::DEAD_REASON),
        Some(&b"ack timeout"[..])
    );
    assert_eq!(
        dead[0].header(headers::ATTEMPT),
        Some(&3u32.to_be_bytes()[..])
    );
    assert_eq!(f.committed("g", 0), Some(1));
}

#[test]
fn nacks_retry_through_the_retry_topic_on_the_ladder_then_dead_letter() {
    let f = fixture(1);
    f.produce_n(0, "m", 2);
    let m = f.join("g");
    let got = f.take(&m, 10);
    assert_eq!(got.len(), 2);
    f.ack(&m, &got[1..]);
    f.nack(&m, &got[0], NackAction::Retry);
    f.groups.tick();
    assert_eq!(
        f.committed("g", 0),
        Some(2),
        "the original is settled once its retry copy is scheduled"
    );
    f.advance(99);
    assert!(f.take(&m, 10).is_empty(), "never early");
    f.advance(1);
    let retry = f.take(&m, 10);
    assert_eq!(retry.len(), 1);
    assert_eq!(retry[0].topic, retry_topic("g"));
    assert_eq!(retry[0].value, "m0");
    assert_eq!(retry[0].attempt, 2);
    assert_eq!(retry[0].header(headers::ORIGIN_TOPIC), Some(&b"t"[..]));
    assert_eq!(
        retry[0].header(headers::ORIGIN_OFFSET),
        Some(&0u64.to_be_bytes()[..])
    );
    f.nack(&m, &retry[0], NackAction::Retry);
    f.advance(199);
    assert!(f.take(&m, 10).is_empty());
    f.advance(1);
    let third = f.take(&m, 10);
    assert_eq!(third[0].attempt, 3);
    f.nack(&m, &third[0], NackAction::Retry);
    let dead = f.dead_letters("g");
    assert_eq!(dead.len(), 1);
    assert_eq!(
        dead[0].header(headers::DEAD_REASON),
        Some(&b"handler failed"[..])
    );
    assert_eq!(
        dead[0].header(headers::ATTEMPT),
        Some(&3u32.to_be_bytes()[..])
    );
    assert_eq!(dead[0].header(headers::ORIGIN_TOPIC), Some(&b"t"[..]));

    // Re-drive: back through the retry topic with a fresh attempt count.
    let r = f.groups.redrive("g", 0).unwrap();
    assert_eq!((r.redriven, r.remaining), (1, 0));
    f.advance(1); // the scheduler appends the re-driven copy
    let back = f.take(&m, 10);
    assert_eq!(back.len(), 1);
    assert_eq!(back[0].value, "m0");
    assert_eq!(back[0].attempt, 1);
    assert_eq!(f.groups.redrive("g", 0).unwrap().redriven, 0);
}

#[test]
fn dead_letter_nacks_skip_the_retries() {
    let f = fixture(1);
    f.produce_n(0, "m", 1);
    let m = f.join("g");
    let got = f.take(&m, 10);
    f.nack(&m, &got[0], NackAction::DeadLetter);
    assert_eq!(f.dead_letters("g").len(), 1);
    assert_eq!(f.groups.describe("g").unwrap().dead_letters, 1);
}

#[test]
fn ordered_groups_keep_per_key_order_under_retries() {
    let f = fixture(1);
    let s = GroupSettings {
        ordered: true,
        max_attempts: 10,
        ..settings()
    };
    f.produce(
        0,
        &[
            (Some("a"), "a1", &[]),
            (Some("b"), "b1", &[]),
            (Some("a"), "a2", &[]),
            (Some("b"), "b2", &[]),
            (Some("a"), "a3", &[]),
        ],
    );
    let m = f.join_with("g", s, "");
    let first = f.take(&m, 100);
    assert_eq!(
        first.iter().map(|g| g.value.as_str()).collect::<Vec<_>>(),
        vec!["a1", "b1"],
        "one message per key in flight"
    );
    // a1 fails; b goes on, a waits.
    f.nack(&m, &first[0], NackAction::Retry);
    f.ack(&m, &first[1..]);
    let next = f.take(&m, 100);
    assert_eq!(
        next.iter().map(|g| g.value.as_str()).collect::<Vec<_>>(),
        vec!["b2"]
    );
    f.ack(&m, &next);
    f.advance(100);
    let retried = f.take(&m, 100);
    assert_eq!(
        retried
            .iter()
            .map(|g| (g.value.as_str(), g.attempt))
            .collect::<Vec<_>>(),
        vec![("a1", 2)]
    );
    f.ack(&m, &retried);
    let rest = f.take(&m, 100);
    assert_eq!(rest.len(), 1, "a3 waits for a2");
    assert_eq!(rest[0].value, "a2");
    f.ack(&m, &rest);
    let last = f.take(&m, 100);
    assert_eq!(last[0].value, "a3");
    f.ack(&m, &last);
    f.groups.tick();
    assert_eq!(f.committed("g", 0), Some(5));
}

#[test]
fn broadcast_members_each_get_everything() {
    let f = fixture(2);
    f.produce_n(0, "a", 5);
    f.produce_n(1, "b", 5);
    let s = GroupSettings {
        mode: GroupMode::Broadcast,
        ..settings()
    };
    let m1 = f.join_with("g", s.clone(), "host-1");
    let m2 = f.join_with("g", s, "host-2");
    let got1 = f.take(&m1, 100);
    let got2 = f.take(&m2, 100);
    assert_eq!(values(&got1).len(), 10);
    assert_eq!(values(&got1), values(&got2));
    f.ack(&m1, &got1);
    f.groups.tick();
    let offsets = |owner: &str| {
        (0..2)
            .map(|p| f.store.meta().committed_offset(owner, "t", p).unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(offsets("g/host-1"), vec![Some(5), Some(5)]);
    assert_eq!(
        offsets("g/host-2"),
        vec![Some(0), Some(0)],
        "host-2 acked nothing"
    );
}

#[test]
fn a_tag_filter_delivers_exactly_the_matching_messages_and_settles_the_rest() {
    let f = fixture(1);
    f.produce(
        0,
        &[
            (None, "red-big", &["red", "big"]),
            (None, "red-small", &["red", "small"]),
            (None, "blue-big", &["blue", "big"]),
            (None, "none", &[]),
            (None, "red", &["red"]),
        ],
    );
    let s = GroupSettings {
        tag_filter: "red AND NOT small".into(),
        ..settings()
    };
    let m = f.join_with("g", s, "");
    let got = f.take(&m, 100);
    assert_eq!(
        got.iter().map(|g| g.value.as_str()).collect::<Vec<_>>(),
        vec!["red-big", "red"]
    );
    f.ack(&m, &got);
    f.groups.tick();
    assert_eq!(
        f.committed("g", 0),
        Some(5),
        "filtered messages count as acked"
    );
}

#[test]
fn a_bad_tag_filter_is_refused_with_the_reason() {
    let f = fixture(1);
    let err = f
        .groups
        .join(
            JoinGroupRequest {
                group: "g".into(),
                member_id: String::new(),
                instance_id: String::new(),
                session_timeout_ms: 10_000,
                settings: GroupSettings {
                    tag_filter: "a AND (b".into(),
                    ..settings()
                },
            },
            "c",
            1,
        )
        .unwrap_err();
    assert!(err.to_string().contains("tag filter"), "{err}");
}

#[test]
fn rewind_by_time_replays_from_the_first_message_at_that_time() {
    let f = fixture(1);
    f.produce_n(0, "early", 3);
    f.clock.advance(60_000);
    let middle = f.clock.now_ms();
    f.produce_n(0, "late", 2);
    let m = f.join("g");
    let got = f.take(&m, 100);
    assert_eq!(got.len(), 5);
    f.ack(&m, &got);
    let r = f
        .groups
        .reset(&ResetGroupRequest {
            group: "g".into(),
            partitions: vec![],
            to: ResetTo::Spec(OffsetSpec::Timestamp(middle)),
        })
        .unwrap();
    assert_eq!(r.positions[0].1, 3);
    assert_eq!(f.committed("g", 0), Some(3));
    let again = f.take(&m, 100);
    assert_eq!(
        again.iter().map(|g| g.value.as_str()).collect::<Vec<_>>(),
        vec!["late0", "late1"]
    );
    // Acks of the forgotten deliveries are stale.
    assert_eq!(f.ack(&m, &got[..1]).stale, 1);
}

#[test]
fn the_committed_offset_survives_a_restart_and_lag_is_reported() {
    let f = fixture(1);
    f.produce_n(0, "m", 10);
    let m = f.join("g");
    let got = f.take(&m, 4);
    f.ack(&m, &got);
    f.groups.flush().unwrap();
    let d = f.groups.describe("g").unwrap();
    let p = d.partitions.iter().find(|p| p.topic == "t").unwrap();
    assert_eq!((p.committed, p.high_watermark, p.lag), (4, 10, 6));
    // A fresh registry (a broker restart) resumes at the committed offset.
    let groups = Groups::new(
        f.store.clone(),
        f.sched.clone(),
        Arc::new(f.clock.clone()),
        &TopicConfig::default(),
    );
    let d = groups.describe("g").unwrap();
    assert_eq!(d.partitions[0].committed, 4);
    assert_eq!(groups.list().unwrap().groups[0].lag, 6);
}

#[test]
fn a_join_with_other_settings_is_refused_while_members_live() {
    let f = fixture(1);
    let m = f.join("g");
    let err = f
        .groups
        .join(
            JoinGroupRequest {
                group: "g".into(),
                member_id: String::new(),
                instance_id: String::new(),
                session_timeout_ms: 10_000,
                settings: GroupSettings {
                    ordered: true,
                    ..settings()
                },
            },
            "c",
            1,
        )
        .unwrap_err();
    assert!(matches!(err, GroupError::Inconsistent(_)), "{err}");
    assert!(err.to_string().contains("ordered"), "{err}");
    // Once nobody consumes, the group takes the new settings.
    f.groups.leave(&m).unwrap();
    f.join_with(
        "g",
        GroupSettings {
            ordered: true,
            ..settings()
        },
        "",
    );
    assert!(f.groups.describe("g").unwrap().settings.ordered);
}

#[test]
fn the_window_bounds_messages_in_flight() {
    let f = fixture(1);
    f.produce_n(0, "m", 10);
    let s = GroupSettings {
        max_in_flight: 4,
        ..settings()
    };
    let m = f.join_with("g", s, "");
    let got = f.take(&m, 100);
    assert_eq!(got.len(), 4);
    assert!(f.take(&m, 100).is_empty());
    f.ack(&m, &got[..2]);
    assert_eq!(f.take(&m, 100).len(), 2);
}
