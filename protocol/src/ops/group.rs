//! Consumer groups: join, heartbeat and leave; pull (`PollGroup`) and push
//! (`Subscribe` + `GrantCredit`) delivery; per-message ack and nack; and the
//! admin side (describe, list, reset, re-drive dead letters, delete).
//!
//! The broker owns every group's delivery state: which messages are in
//! flight to whom, their attempts, and the committed offset (the first
//! offset not yet settled). Members only say what they finished.
//!
//! Deliveries carry whole record batches as the log stores them plus the
//! offset ranges of the records meant for this member, so the broker never
//! re-encodes records; the client skips the rest.

use bytes::Bytes;

use super::OffsetSpec;
use crate::codec::{DecodeError, Reader, Wire, Writer};
use crate::{wire_struct, wire_u8_enum};

/// Prefix of the topics the broker creates for groups; users cannot create
/// topics under it.
pub const INTERNAL_TOPIC_PREFIX: &str = "sluice.";

/// The topic a group's failed messages wait in between retries.
pub fn retry_topic(group: &str) -> String {
    format!("{INTERNAL_TOPIC_PREFIX}retry.{group}")
}

/// The topic a group's messages go to after their last failed attempt.
pub fn dead_letter_topic(group: &str) -> String {
    format!("{INTERNAL_TOPIC_PREFIX}dlq.{group}")
}

/// How a group shares messages among its members.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GroupMode {
    /// Each message goes to one member; partitions are spread over members.
    #[default]
    Clustering,
    /// Every member gets every message (each member instance keeps its own
    /// progress).
    Broadcast,
}

impl GroupMode {
    fn to_u8(self) -> u8 {
        match self {
            GroupMode::Clustering => 0,
            GroupMode::Broadcast => 1,
        }
    }
    fn from_u8(v: u8) -> Result<Self, DecodeError> {
        match v {
            0 => Ok(GroupMode::Clustering),
            1 => Ok(GroupMode::Broadcast),
            v => Err(DecodeError::InvalidValue {
                what: "group mode",
                value: v.into(),
            }),
        }
    }
}

impl std::fmt::Display for GroupMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            GroupMode::Clustering => "clustering",
            GroupMode::Broadcast => "broadcast",
        })
    }
}

/// What a group subscribes to and how it treats its messages. Set by the
/// first member to join; later members must ask for the same while any
/// member is live (a group with no live member takes the next join's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupSettings {
    /// The topic the group consumes; it must exist when the group is joined.
    pub topic: String,
    /// Whether members share the messages or each gets all of them.
    pub mode: GroupMode,
    /// Per-key order: no two messages with the same key in flight at once,
    /// and a failing message holds back only its own key.
    pub ordered: bool,
    /// Tag expression (`a AND (b OR NOT c)`); empty or `*` = everything.
    pub tag_filter: String,
    /// Where a group without a committed offset starts.
    pub start: OffsetSpec,
    /// A delivered message not acked within this is delivered again
    /// (counting an attempt).
    pub ack_timeout_ms: u32,
    /// Deliveries before a failing message goes to the dead-letter topic.
    pub max_attempts: u16,
    /// Delay before retry n (the last entry repeats); empty = the broker's
    /// default ladder.
    pub retry_ladder_ms: Vec<u32>,
    /// Messages per partition read ahead of the committed offset at most
    /// (delivered, waiting for their key, or retrying in place): bounds the
    /// broker's memory and how far a stuck message lets the others run ahead.
    pub max_in_flight: u32,
}

impl Default for GroupSettings {
    fn default() -> Self {
        GroupSettings {
            topic: String::new(),
            mode: GroupMode::Clustering,
            ordered: false,
            tag_filter: String::new(),
            start: OffsetSpec::Latest,
            ack_timeout_ms: 30_000,
            max_attempts: 16,
            retry_ladder_ms: Vec::new(),
            max_in_flight: 20_000,
        }
    }
}

impl GroupSettings {
    /// Writes the settings in their wire encoding (brokers before the
    /// versioned storage encoding also stored this).
    pub fn write(&self, w: &mut Writer) {
        self.encode_to(w);
    }

    /// Reads what [`GroupSettings::write`] wrote.
    pub fn read(r: &mut Reader) -> Result<Self, DecodeError> {
        Self::decode_from(r, "group settings")
    }
}

/// A (topic, partition) pair.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicPartition {
    /// Topic name.
    pub topic: String,
    /// Partition id.
    pub partition: u32,
}

// ---------------------------------------------------------------- membership

/// Joins (or rejoins) a group. The member lives while its connection is
/// open and it heartbeats within the session timeout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinGroupRequest {
    /// Group name: 1-200 bytes of ASCII letters, digits, `.`, `_`, `-`; a name never joined before creates the group.
    pub group: String,
    /// Empty on first join; the broker assigns one.
    pub member_id: String,
    /// A stable name for this consumer instance (broadcast progress is kept
    /// per instance); empty = the member id.
    pub instance_id: String,
    /// The member is removed when the broker hears nothing from it for longer than this; clamped to 100-3,600,000 ms.
    pub session_timeout_ms: u32,
    /// What the group consumes and how; must match the live members' settings (else `INCONSISTENT_GROUP`).
    pub settings: GroupSettings,
}

/// Answers a join.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinGroupResponse {
    /// The member's id, for every later request; opaque, made up by the broker.
    pub member_id: String,
    /// The group's generation after the join; it goes up whenever membership changes.
    pub generation: u32,
    /// How often to heartbeat: a third of the (clamped) session timeout.
    pub heartbeat_interval_ms: u32,
    /// The partitions this member receives (its topic's and the retry topic's partition 0).
    pub assignment: Vec<TopicPartition>,
}

/// Names a member of a group; the payload of heartbeat and leave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberRef {
    /// Group name.
    pub group: String,
    /// The id [`JoinGroupResponse::member_id`] gave.
    pub member_id: String,
}

/// Keeps a member alive; answers with its current assignment. An unknown
/// member (expired or never joined) gets `UNKNOWN_MEMBER` and should rejoin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeartbeatRequest(pub MemberRef);

/// Answers a heartbeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeartbeatResponse {
    /// The group's current generation; a change means the assignment may have moved.
    pub generation: u32,
    /// The member's partitions now.
    pub assignment: Vec<TopicPartition>,
}

/// Leaves a group at once: the member's unsettled messages go to others.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaveGroupRequest(pub MemberRef);

// ---------------------------------------------------------------- delivery

/// Records `first_offset .. first_offset + count` of a delivery, all on
/// their `attempt`-th delivery (1 = first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeliveredRange {
    /// Offset of the first delivered record.
    pub first_offset: u64,
    /// Number of consecutive offsets delivered from `first_offset`.
    pub count: u32,
    /// Which delivery this is for each record of the range: 1 = the first.
    pub attempt: u16,
}

/// Messages of one partition: whole batches as stored, and which of their
/// records are delivered (the others are skipped by the client).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDelivery {
    /// Where the records are stored: the group's topic or its retry topic (ack them there).
    pub topic: String,
    /// Partition id.
    pub partition: u32,
    /// One or more whole record batches, exactly as stored; may hold records outside `ranges`, which the client skips.
    pub records: Bytes,
    /// The records delivered to this member, in offset order, not overlapping.
    pub ranges: Vec<DeliveredRange>,
}

/// What a poll returns and what a subscription pushes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GroupBatch {
    /// The group's generation when the messages were taken.
    pub generation: u32,
    /// May be empty (a poll that found nothing); redeliveries come first.
    pub deliveries: Vec<GroupDelivery>,
}

impl GroupBatch {
    /// Messages delivered.
    pub fn message_count(&self) -> usize {
        self.deliveries
            .iter()
            .flat_map(|d| &d.ranges)
            .map(|r| r.count as usize)
            .sum()
    }
}

/// Pull: up to `max_messages` from the member's partitions, waiting up to
/// `max_wait_ms` for at least one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PollGroupRequest {
    /// Who is polling.
    pub member: MemberRef,
    /// Most messages to return; 0 behaves as 1.
    pub max_messages: u32,
    /// Byte budget of the records (soft: at least one batch comes); 0 behaves as 1.
    pub max_bytes: u32,
    /// Longest the broker waits for a first message; keep it below the session timeout.
    pub max_wait_ms: u32,
}

/// Push: opens a subscription on this stream. The broker answers with a
/// `GroupBatch` frame (carrying this request's id) whenever it has messages
/// and credit, until the stream closes, the member leaves, or an error
/// frame ends it. Credit starts at `credit` messages (whatever an earlier
/// subscription of the member left is dropped) and grows by each
/// `GrantCredit`; every message pushed uses one; polls do not use credit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscribeRequest {
    /// Who is subscribing.
    pub member: MemberRef,
    /// Messages the broker may push before more credit comes; replaces the member's credit.
    pub credit: u32,
    /// Byte budget of each pushed frame (soft, as for a poll).
    pub max_bytes: u32,
}

/// Adds credit to a member's subscription. One-way: no response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantCreditRequest {
    /// Whose subscription gets the credit.
    pub member: MemberRef,
    /// Credit to add, in messages.
    pub messages: u32,
}

/// Offsets `first_offset .. first_offset + count` of one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffsetRange {
    /// First offset of the range.
    pub first_offset: u64,
    /// Number of consecutive offsets.
    pub count: u32,
}

/// Acked ranges of one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionAcks {
    /// The delivery's topic (the retry topic for a retried message).
    pub topic: String,
    /// The delivery's partition.
    pub partition: u32,
    /// Offsets done.
    pub ranges: Vec<OffsetRange>,
}

/// What to do with a message that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NackAction {
    /// Retry after the group's ladder delay for the attempt.
    Retry,
    /// Retry after this many milliseconds.
    RetryAfter(u32),
    /// Give up now: straight to the dead-letter topic.
    DeadLetter,
}

/// One failed message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nack {
    /// The delivery's topic.
    pub topic: String,
    /// The delivery's partition.
    pub partition: u32,
    /// The message's offset.
    pub offset: u64,
    /// Retry (after the ladder or a given delay) or dead-letter now.
    pub action: NackAction,
    /// Why it failed; kept in the dead-letter header.
    pub reason: String,
}

/// Settles delivered messages: acks (done) and nacks (failed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AckRequest {
    /// Who is settling; acks count from any member, nacks only from the one holding the message.
    pub member: MemberRef,
    /// Messages done; applied before the nacks.
    pub acks: Vec<PartitionAcks>,
    /// Messages that failed, one entry each.
    pub nacks: Vec<Nack>,
}

/// How many of the request's messages were settled. Acks for messages no
/// longer in flight (already settled, or their ack timed out and they went
/// to another member that settled them) count as stale and change nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AckResponse {
    /// Messages of the request that were in flight and are now settled.
    pub settled: u32,
    /// Messages of the request that were not in flight: nothing changed for them.
    pub stale: u32,
}

// ---------------------------------------------------------------- admin

/// Names a group; the payload of describe, delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupRef {
    /// Group name.
    pub group: String,
}

/// One live member of a [`GroupDescription`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberDescription {
    /// The id its join returned.
    pub member_id: String,
    /// Its instance id (the member id when it gave none).
    pub instance_id: String,
    /// The client id of its connection's handshake.
    pub client_id: String,
    /// Its partitions.
    pub assignment: Vec<TopicPartition>,
    /// Messages delivered to it and not yet settled.
    pub in_flight: u64,
}

/// A partition's progress for the group (for broadcast groups: for one
/// member instance, named in `instance_id`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionLag {
    /// The group's topic or its retry topic.
    pub topic: String,
    /// Partition id.
    pub partition: u32,
    /// Broadcast: the member instance this progress belongs to; empty in clustering mode.
    pub instance_id: String,
    /// The first offset not yet settled (what a restart resumes from).
    pub committed: u64,
    /// The partition's high watermark.
    pub high_watermark: u64,
    /// `high_watermark - committed`.
    pub lag: u64,
    /// Messages delivered and not yet settled.
    pub in_flight: u64,
    /// Member that owns it now; empty when none.
    pub owner: String,
}

/// A group as DescribeGroup answers it, live members or not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDescription {
    /// Group name.
    pub group: String,
    /// The stored (normalised) settings.
    pub settings: GroupSettings,
    /// The current generation.
    pub generation: u32,
    /// Live members, in the order they joined.
    pub members: Vec<MemberDescription>,
    /// Progress per partition (per partition and instance in broadcast mode).
    pub partitions: Vec<PartitionLag>,
    /// `sluice.retry.<group>`.
    pub retry_topic: String,
    /// `sluice.dlq.<group>`.
    pub dead_letter_topic: String,
    /// Dead letters not yet re-driven.
    pub dead_letters: u64,
}

impl GroupDescription {
    /// Total lag over the partitions (the retry topic's included).
    pub fn total_lag(&self) -> u64 {
        self.partitions.iter().map(|p| p.lag).sum()
    }
}

/// Describes a group (`DescribeGroup`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescribeGroupRequest(pub GroupRef);

/// Lists every stored group (`ListGroups`); an empty payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ListGroupsRequest;

/// One group in a [`ListGroupsResponse`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupSummary {
    /// Group name.
    pub group: String,
    /// The topic it consumes.
    pub topic: String,
    /// Clustering or broadcast.
    pub mode: GroupMode,
    /// Live members.
    pub members: u32,
    /// Sum of the lag over all its progress entries (retry topic and every instance included).
    pub lag: u64,
    /// Dead letters not yet re-driven.
    pub dead_letters: u64,
}

/// Answers a list of groups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListGroupsResponse {
    /// Every stored group, sorted by name; a group whose topic or dead-letter topic is gone is left out.
    pub groups: Vec<GroupSummary>,
}

/// Where to move a group's position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetTo {
    /// An offset-spec position (earliest, latest, or a time).
    Spec(OffsetSpec),
    /// This exact offset (clamped to what the partition holds).
    Offset(u64),
}

/// Rewinds or skips a group: every named partition (all when empty) of its
/// topic moves to the position; messages in flight are forgotten (their
/// late acks count as stale).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResetGroupRequest {
    /// Group name.
    pub group: String,
    /// Partitions of the group's topic to move; empty = all of them.
    pub partitions: Vec<u32>,
    /// The new position.
    pub to: ResetTo,
}

/// The new positions, per partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResetGroupResponse {
    /// One per partition moved, with its new committed offset, in the order asked.
    pub positions: Vec<(TopicPartition, u64)>,
}

/// Sends up to `max` dead letters (0 = all) back to the group through its
/// retry topic, with their attempts reset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedriveRequest {
    /// Group name.
    pub group: String,
    /// Most dead letters to re-drive; 0 = all.
    pub max: u32,
}

/// Answers a re-drive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RedriveResponse {
    /// Dead letters copied to the retry topic.
    pub redriven: u64,
    /// Dead letters still waiting.
    pub remaining: u64,
}

/// Forgets a group with no live members: its settings and positions. Its
/// retry and dead-letter topics stay until deleted like any topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeleteGroupRequest(pub GroupRef);

/// `u8 kind` (0 retry, 1 retry after, 2 dead letter), then `u32` delay
/// (0 unless retry-after).
impl Wire for NackAction {
    const MIN_LEN: usize = 5;
    fn encode_to(&self, w: &mut Writer) {
        match *self {
            NackAction::Retry => w.u8(0).u32(0),
            NackAction::RetryAfter(ms) => w.u8(1).u32(ms),
            NackAction::DeadLetter => w.u8(2).u32(0),
        };
    }
    fn decode_from(r: &mut Reader, _: &'static str) -> Result<Self, DecodeError> {
        let kind = r.u8("nack action")?;
        let ms = r.u32("retry delay")?;
        match kind {
            0 => Ok(NackAction::Retry),
            1 => Ok(NackAction::RetryAfter(ms)),
            2 => Ok(NackAction::DeadLetter),
            v => Err(DecodeError::InvalidValue {
                what: "nack action",
                value: v.into(),
            }),
        }
    }
}

/// `u8 kind` (0 offset spec, 1 exact offset), then `i64` position.
impl Wire for ResetTo {
    const MIN_LEN: usize = 9;
    fn encode_to(&self, w: &mut Writer) {
        match *self {
            ResetTo::Spec(s) => w.u8(0).i64(s.to_i64()),
            ResetTo::Offset(o) => w.u8(1).i64(o as i64),
        };
    }
    fn decode_from(r: &mut Reader, _: &'static str) -> Result<Self, DecodeError> {
        let kind = r.u8("reset kind")?;
        let value = r.i64("reset position")?;
        match kind {
            0 => Ok(ResetTo::Spec(OffsetSpec::from_i64(value)?)),
            1 if value >= 0 => Ok(ResetTo::Offset(value as u64)),
            _ => Err(DecodeError::InvalidValue {
                what: "reset position",
                value,
            }),
        }
    }
}

wire_u8_enum!(GroupMode);
wire_struct!(GroupSettings {
    topic,
    mode,
    ordered,
    tag_filter,
    start,
    ack_timeout_ms,
    max_attempts,
    retry_ladder_ms,
    max_in_flight
});
wire_struct!(TopicPartition { topic, partition });
wire_struct!(JoinGroupRequest {
    group,
    member_id,
    instance_id,
    session_timeout_ms,
    settings
});
wire_struct!(JoinGroupResponse {
    member_id,
    generation,
    heartbeat_interval_ms,
    assignment
});
wire_struct!(MemberRef { group, member_id });
wire_struct!(HeartbeatRequest(MemberRef));
wire_struct!(HeartbeatResponse {
    generation,
    assignment
});
wire_struct!(LeaveGroupRequest(MemberRef));
wire_struct!(DeliveredRange {
    first_offset,
    count,
    attempt
});
wire_struct!(GroupDelivery {
    topic,
    partition,
    records,
    ranges
});
wire_struct!(GroupBatch {
    generation,
    deliveries
});
wire_struct!(PollGroupRequest {
    member,
    max_messages,
    max_bytes,
    max_wait_ms
});
wire_struct!(SubscribeRequest {
    member,
    credit,
    max_bytes
});
wire_struct!(GrantCreditRequest { member, messages });
wire_struct!(OffsetRange {
    first_offset,
    count
});
wire_struct!(PartitionAcks {
    topic,
    partition,
    ranges
});
wire_struct!(Nack {
    topic,
    partition,
    offset,
    action,
    reason
});
wire_struct!(AckRequest {
    member,
    acks,
    nacks
});
wire_struct!(AckResponse { settled, stale });
wire_struct!(GroupRef { group });
wire_struct!(MemberDescription {
    member_id,
    instance_id,
    client_id,
    assignment,
    in_flight
});
wire_struct!(PartitionLag {
    topic,
    partition,
    instance_id,
    committed,
    high_watermark,
    lag,
    in_flight,
    owner
});
wire_struct!(GroupDescription {
    group,
    settings,
    generation,
    members,
    partitions,
    retry_topic,
    dead_letter_topic,
    dead_letters
});
wire_struct!(DescribeGroupRequest(GroupRef));
wire_struct!(ListGroupsRequest);
wire_struct!(GroupSummary {
    group,
    topic,
    mode,
    members,
    lag,
    dead_letters
});
wire_struct!(ListGroupsResponse { groups });
wire_struct!(ResetGroupRequest {
    group,
    partitions,
    to
});
wire_struct!(ResetGroupResponse { positions });
wire_struct!(RedriveRequest { group, max });
wire_struct!(RedriveResponse {
    redriven,
    remaining
});
wire_struct!(DeleteGroupRequest(GroupRef));

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::Payload;

    fn round_trip<P: Payload + PartialEq + std::fmt::Debug>(p: P) {
        assert_eq!(P::decode(p.encode()).unwrap(), p);
    }

    fn member() -> MemberRef {
        MemberRef {
            group: "g".into(),
            member_id: "m-1".into(),
        }
    }

    #[test]
    fn group_payloads_round_trip() {
        let settings = GroupSettings {
            topic: "orders".into(),
            mode: GroupMode::Broadcast,
            ordered: true,
            tag_filter: "a AND NOT b".into(),
            start: OffsetSpec::Timestamp(1_700_000_000_000),
            ack_timeout_ms: 5000,
            max_attempts: 3,
            retry_ladder_ms: vec![10, 20],
            max_in_flight: 100,
        };
        round_trip(JoinGroupRequest {
            group: "g".into(),
            member_id: String::new(),
            instance_id: "host-1".into(),
            session_timeout_ms: 10_000,
            settings: settings.clone(),
        });
        let tp = TopicPartition {
            topic: "orders".into(),
            partition: 2,
        };
        round_trip(JoinGroupResponse {
            member_id: "m-1".into(),
            generation: 4,
            heartbeat_interval_ms: 3000,
            assignment: vec![tp.clone()],
        });
        round_trip(HeartbeatRequest(member()));
        round_trip(LeaveGroupRequest(member()));
        round_trip(PollGroupRequest {
            member: member(),
            max_messages: 10,
            max_bytes: 1 << 20,
            max_wait_ms: 100,
        });
        round_trip(SubscribeRequest {
            member: member(),
            credit: 64,
            max_bytes: 1 << 20,
        });
        round_trip(GrantCreditRequest {
            member: member(),
            messages: 8,
        });
        round_trip(GroupBatch {
            generation: 2,
            deliveries: vec![GroupDelivery {
                topic: "orders".into(),
                partition: 1,
                records: Bytes::from_static(b"batch"),
                ranges: vec![DeliveredRange {
                    first_offset: 5,
                    count: 2,
                    attempt: 1,
                }],
            }],
        });
        round_trip(AckRequest {
            member: member(),
            acks: vec![PartitionAcks {
                topic: "orders".into(),
                partition: 0,
                ranges: vec![OffsetRange {
                    first_offset: 1,
                    count: 3,
                }],
            }],
            nacks: vec![
                Nack {
                    topic: "orders".into(),
                    partition: 0,
                    offset: 9,
                    action: NackAction::RetryAfter(250),
                    reason: "db down".into(),
                },
                Nack {
                    topic: "orders".into(),
                    partition: 0,
                    offset: 10,
                    action: NackAction::DeadLetter,
                    reason: "bad".into(),
                },
            ],
        });
        round_trip(AckResponse {
            settled: 3,
            stale: 1,
        });
        round_trip(GroupDescription {
            group: "g".into(),
            settings,
            generation: 3,
            members: vec![MemberDescription {
                member_id: "m-1".into(),
                instance_id: "i".into(),
                client_id: "c".into(),
                assignment: vec![tp.clone()],
                in_flight: 7,
            }],
            partitions: vec![PartitionLag {
                topic: "orders".into(),
                partition: 2,
                instance_id: String::new(),
                committed: 10,
                high_watermark: 15,
                lag: 5,
                in_flight: 2,
                owner: "m-1".into(),
            }],
            retry_topic: "sluice.retry.g".into(),
            dead_letter_topic: "sluice.dlq.g".into(),
            dead_letters: 1,
        });
        round_trip(ListGroupsResponse {
            groups: vec![GroupSummary {
                group: "g".into(),
                topic: "orders".into(),
                mode: GroupMode::Clustering,
                members: 2,
                lag: 5,
                dead_letters: 0,
            }],
        });
        round_trip(ResetGroupRequest {
            group: "g".into(),
            partitions: vec![0, 1],
            to: ResetTo::Offset(42),
        });
        round_trip(ResetGroupRequest {
            group: "g".into(),
            partitions: vec![],
            to: ResetTo::Spec(OffsetSpec::Timestamp(5)),
        });
        round_trip(ResetGroupResponse {
            positions: vec![(tp, 3)],
        });
        round_trip(RedriveRequest {
            group: "g".into(),
            max: 0,
        });
        round_trip(RedriveResponse {
            redriven: 4,
            remaining: 0,
        });
        round_trip(DeleteGroupRequest(GroupRef { group: "g".into() }));
    }

    #[test]
    fn bad_enums_are_refused() {
        let mut w = Writer::new();
        member().write(&mut w);
        w.count(0)
            .count(1)
            .string("t")
            .u32(0)
            .u64(1)
            .u8(9)
            .u32(0)
            .string("");
        assert!(matches!(
            AckRequest::decode(w.finish()),
            Err(DecodeError::InvalidValue {
                what: "nack action",
                ..
            })
        ));
    }
}
