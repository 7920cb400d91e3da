//! Ops and their payloads: what each request asks and each response says.
//!
//! A response frame carries the request's op with [`RESPONSE_BIT`] set, or
//! [`ERROR_OP`] when the whole request failed (payload: `u16 code, string
//! message`). Per-partition outcomes of produce, fetch and list-offsets are
//! reported inside their responses, so one bad partition does not fail the
//! rest. A payload's wire order is the field order of its `wire_struct!`
//! line (at the end of each file), not of its declaration; see `codec` for
//! the primitives and docs/protocol.md for the full specification.
//!
//! Adding an op: its request and response types with their `wire_struct!`
//! lines (hand-written `Wire` only for tagged layouts), one documented
//! line in `op_table!` below, one arm in the broker's `dispatch` (the
//! compiler asks for it), its row and section in docs/protocol.md (`tests/op_table.rs`
//! checks them), and a sample in `tests/wire_fixtures.rs`.

pub mod delay;
pub mod function;
pub mod group;

pub use delay::{
    CancelDelaysRequest, CancelDelaysResponse, CancelOutcome, CancelResult, DelaySummary,
    DelayedRecord, ListDelaysRequest, ListDelaysResponse, LoopBackoff, LoopSpec, ScheduleEntry,
    ScheduleRequest, ScheduleResponse, ScheduleResult, When,
};
pub use function::{
    Attach, DeleteFunctionRequest, DeployFunctionRequest, DeployFunctionResponse,
    DescribeFunctionRequest, FunctionDescription, FunctionKind, FunctionLimitsSpec,
    FunctionLogLine, FunctionLogsRequest, FunctionLogsResponse, FunctionManifest, FunctionMetrics,
    FunctionPosition, FunctionSummary, FunctionVersion, ListFunctionsRequest,
    ListFunctionsResponse, LogLevel, RollbackFunctionRequest, UnknownFunctionKind,
};
pub use group::{
    AckRequest, AckResponse, DeleteGroupRequest, DeliveredRange, DescribeGroupRequest,
    GrantCreditRequest, GroupBatch, GroupDelivery, GroupDescription, GroupMode, GroupRef,
    GroupSettings, GroupSummary, HeartbeatRequest, HeartbeatResponse, JoinGroupRequest,
    JoinGroupResponse, LeaveGroupRequest, ListGroupsRequest, ListGroupsResponse, MemberDescription,
    MemberRef, Nack, NackAction, OffsetRange, PartitionAcks, PartitionLag, PollGroupRequest,
    RedriveRequest, RedriveResponse, ResetGroupRequest, ResetGroupResponse, ResetTo,
    SubscribeRequest, TopicPartition,
};

use bytes::Bytes;

use crate::codec::{DecodeError, Reader, Wire, Writer};
use crate::error::{ErrorCode, WireError};
use crate::frame::Frame;
use crate::wire_struct;

/// The protocol version this build speaks (and the highest it accepts).
pub const PROTOCOL_VERSION: u16 = 1;
/// The oldest protocol version this build accepts.
pub const MIN_PROTOCOL_VERSION: u16 = 1;
/// QUIC ALPN identifier.
pub const ALPN: &[u8] = b"sluice/1";
/// Set in the op of every success response.
pub const RESPONSE_BIT: u16 = 0x8000;
/// The op of a response that fails a whole request.
pub const ERROR_OP: u16 = 0xFFFF;

/// Declares the op table: one line per op, `code Name(Request) -> Response`.
/// From it come [`Op`] (codes, [`Op::from_u16`], [`Op::name`], [`Op::ALL`]),
/// [`Request`] (one variant per op, decoded by [`Request::decode`]) and each
/// request type's [`RequestPayload`] impl, so adding an op is one line here,
/// its payload types, and one arm in the broker's dispatch (which the
/// compiler then demands). A line's doc comments document both its [`Op`]
/// variant and its [`Request`] variant. A code given twice does not compile
/// (two equal discriminants); docs/protocol.md's table is checked against
/// this one by `tests/op_table.rs`.
macro_rules! op_table {
    ($($(#[$doc:meta])* $code:literal $name:ident($request:ty) -> $response:ty;)*) => {
        /// Request ops: the `u16` in a request frame's header.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(u16)]
        pub enum Op {
            $($(#[$doc])* $name = $code,)*
        }

        impl Op {
            /// Every op, in table (code) order.
            pub const ALL: &'static [Op] = &[$(Op::$name),*];

            /// The op for a request frame's `u16`, or `None` for a code not in the table (answered with `UNKNOWN_OP`).
            pub fn from_u16(op: u16) -> Option<Op> {
                match op {
                    $($code => Some(Op::$name),)*
                    _ => None,
                }
            }

            /// The op's name as docs/protocol.md spells it (`CreateTopic`).
            pub fn name(self) -> &'static str {
                match self {
                    $(Op::$name => stringify!($name),)*
                }
            }
        }

        $(impl RequestPayload for $request {
            const OP: Op = Op::$name;
            type Response = $response;
        })*

        /// Any request, as the broker decodes it: one variant per op.
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub enum Request {
            $($(#[$doc])* $name($request),)*
        }

        impl Request {
            /// Decodes a request frame's payload by its op.
            pub fn decode(op: u16, payload: Bytes) -> Result<Request, DecodeError> {
                match Op::from_u16(op).ok_or(DecodeError::UnknownOp(op))? {
                    $(Op::$name => Ok(Request::$name(Payload::decode(payload)?)),)*
                }
            }

            /// The op this request travels under.
            pub fn op(&self) -> Op {
                match self {
                    $(Request::$name(_) => Op::$name,)*
                }
            }
        }
    };
}

op_table! {
    /// Opens a connection: the first request on it.
    0x0001 Handshake(HandshakeRequest) -> HandshakeResponse;
    /// Creates a topic with a partition count and settings.
    0x0010 CreateTopic(CreateTopicRequest) -> Empty;
    /// Deletes a topic, its data and its stored group offsets.
    0x0011 DeleteTopic(DeleteTopicRequest) -> Empty;
    /// Lists every topic with its partition count.
    0x0012 ListTopics(ListTopicsRequest) -> ListTopicsResponse;
    /// A topic's settings and per-partition offsets and sizes.
    0x0013 DescribeTopic(DescribeTopicRequest) -> TopicDescription;
    /// Appends record batches; with acks 0 there is no response.
    0x0020 Produce(ProduceRequest) -> ProduceResponse;
    /// Reads record batches from partitions, long-polling up to `max_wait_ms` for `min_bytes`.
    0x0030 Fetch(FetchRequest) -> FetchResponse;
    /// Looks up the earliest, the latest, or the first offset at a timestamp.
    0x0040 ListOffsets(ListOffsetsRequest) -> ListOffsetsResponse;
    /// Hands the broker messages to append later, once or in a loop.
    0x0050 Schedule(ScheduleRequest) -> ScheduleResponse;
    /// Cancels scheduled messages by delay id.
    0x0051 CancelDelays(CancelDelaysRequest) -> CancelDelaysResponse;
    /// Per topic: how many scheduled messages are pending and when the next is due.
    0x0052 ListDelays(ListDelaysRequest) -> ListDelaysResponse;
    /// Joins (or creates) a consumer group; returns the member id and assignment.
    0x0060 JoinGroup(JoinGroupRequest) -> JoinGroupResponse;
    /// Keeps a member's session alive and returns its current assignment.
    0x0061 Heartbeat(HeartbeatRequest) -> HeartbeatResponse;
    /// Leaves a group at once; unsettled messages go to other members.
    0x0062 LeaveGroup(LeaveGroupRequest) -> Empty;
    /// Pulls deliveries for a member, long-polling up to `max_wait_ms`.
    0x0063 PollGroup(PollGroupRequest) -> GroupBatch;
    /// Opens a push subscription: many responses, one per pushed batch.
    0x0064 Subscribe(SubscribeRequest) -> GroupBatch;
    /// One-way: never answered (`Empty` is only its nominal response).
    0x0065 GrantCredit(GrantCreditRequest) -> Empty;
    /// Settles delivered messages: acks ranges, nacks single messages to retry or dead-letter.
    0x0066 Ack(AckRequest) -> AckResponse;
    /// A group's settings, members, per-partition progress, lag and dead letters.
    0x0067 DescribeGroup(DescribeGroupRequest) -> GroupDescription;
    /// Every stored group with its topic, mode, members, lag and dead letters.
    0x0068 ListGroups(ListGroupsRequest) -> ListGroupsResponse;
    /// Moves a group's committed position (rewind to replay, or skip ahead).
    0x0069 ResetGroup(ResetGroupRequest) -> ResetGroupResponse;
    /// Sends a group's dead letters back through its retry topic.
    0x006A Redrive(RedriveRequest) -> RedriveResponse;
    /// Forgets a group with no live members (its retry and dead-letter topics stay).
    0x006B DeleteGroup(DeleteGroupRequest) -> Empty;
    /// Deploys a new version of a function and makes it active.
    0x0070 DeployFunction(DeployFunctionRequest) -> DeployFunctionResponse;
    /// Every deployed function with its kind, version, status and counters.
    0x0071 ListFunctions(ListFunctionsRequest) -> ListFunctionsResponse;
    /// A function's manifest, stored versions, metrics and positions.
    0x0072 DescribeFunction(DescribeFunctionRequest) -> FunctionDescription;
    /// Reads a function's log lines after a sequence number.
    0x0073 FunctionLogs(FunctionLogsRequest) -> FunctionLogsResponse;
    /// Stops a function and forgets its versions, positions, kv state and log.
    0x0074 DeleteFunction(DeleteFunctionRequest) -> Empty;
    /// Makes a stored version of a function active again (component and manifest).
    0x0075 RollbackFunction(RollbackFunctionRequest) -> DeployFunctionResponse;
}

impl Op {
    /// The op of a success response to this request: the request op with [`RESPONSE_BIT`] set.
    pub fn response_op(self) -> u16 {
        self as u16 | RESPONSE_BIT
    }
}

/// A whole frame payload: every [`Wire`] type is one. `write`/`read` put
/// or take the value inside a larger encoding; `encode`/`decode` are the
/// whole payload (bytes left over are an error).
pub trait Payload: Sized {
    /// Appends the value's encoding (inside a larger payload).
    fn write(&self, w: &mut Writer);
    /// Reads a value from inside a larger payload.
    fn read(r: &mut Reader) -> Result<Self, DecodeError>;

    /// The value as a whole frame payload.
    fn encode(&self) -> Bytes {
        let mut w = Writer::new();
        self.write(&mut w);
        w.finish()
    }

    /// Decodes a whole payload: bytes left over are an error.
    fn decode(payload: Bytes) -> Result<Self, DecodeError> {
        let mut r = Reader::new(payload);
        let v = Self::read(&mut r)?;
        r.finish()?;
        Ok(v)
    }
}

impl<T: Wire> Payload for T {
    fn write(&self, w: &mut Writer) {
        self.encode_to(w);
    }
    fn read(r: &mut Reader) -> Result<Self, DecodeError> {
        T::decode_from(r, "payload")
    }
}

/// A request payload and the op it travels under.
pub trait RequestPayload: Payload {
    /// The op this request travels under.
    const OP: Op;
    /// What a success response to it carries.
    type Response: Payload;
}

/// An empty payload.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Empty;

/// Decodes a response frame into the expected payload or the error it carries.
pub fn decode_response<P: Payload>(op: Op, frame: Frame) -> Result<P, WireError> {
    let malformed = |e: DecodeError| {
        WireError::new(
            ErrorCode::MalformedRequest,
            format!("bad response payload: {e}"),
        )
    };
    if frame.op == ERROR_OP {
        return Err(WireError::decode(frame.payload).map_err(malformed)?);
    }
    if frame.op != op.response_op() {
        return Err(WireError::new(
            ErrorCode::Internal,
            format!("response op {:#06x} does not answer {:?}", frame.op, op),
        ));
    }
    P::decode(frame.payload).map_err(malformed)
}

// ---------------------------------------------------------------- handshake

/// Opens a connection: the first request on it, on any stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandshakeRequest {
    /// The highest protocol version the client speaks.
    pub version: u16,
    /// Free-form name of the client, for the broker's logs.
    pub client_id: String,
    /// Empty for anonymous access, where the broker allows it.
    pub token: String,
    /// Ask the broker for a fresh producer id (idempotent producers).
    pub want_producer_id: bool,
}

/// Answers a successful handshake: the negotiated version and the broker's limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandshakeResponse {
    /// The version both sides now speak.
    pub version: u16,
    /// The broker's name and version (`sluice 0.1.0`), for people.
    pub server: String,
    /// A broker-unique producer id, or -1 when not asked for.
    pub producer_id: i64,
    /// 0 with a fresh producer id, else -1.
    pub producer_epoch: i16,
    /// Largest frame the broker accepts (header included).
    pub max_frame_bytes: u32,
    /// Largest record batch the broker accepts.
    pub max_message_bytes: u32,
}

// ---------------------------------------------------------------- topics

/// Creates a topic (`CreateTopic`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateTopicRequest {
    /// Topic name: 1-249 bytes of ASCII letters, digits, `.`, `_`, `-`; names starting `sluice.` are reserved.
    pub name: String,
    /// Number of partitions (1-100,000); 0 takes the broker's default.
    pub partitions: u32,
    /// Topic settings as `key = value` strings (see docs/storage.md).
    pub config: Vec<(String, String)>,
}

/// Deletes a topic and its data (`DeleteTopic`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeleteTopicRequest {
    /// Topic name.
    pub name: String,
}

/// Lists every topic (`ListTopics`); an empty payload.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ListTopicsRequest;

/// One topic in a [`ListTopicsResponse`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSummary {
    /// Topic name.
    pub name: String,
    /// Number of partitions, ids 0 to n-1.
    pub partitions: u32,
}

/// Every topic, sorted by name (byte order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListTopicsResponse {
    /// One entry per topic.
    pub topics: Vec<TopicSummary>,
}

/// Asks for one topic's settings and partitions (`DescribeTopic`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescribeTopicRequest {
    /// Topic name.
    pub name: String,
}

/// One partition of a [`TopicDescription`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionDescription {
    /// Partition id.
    pub partition: u32,
    /// First offset still stored (retention moves it up).
    pub log_start_offset: u64,
    /// End (exclusive) of what consumers can read.
    pub high_watermark: u64,
    /// Bytes on disk across the partition's segments.
    pub size_bytes: u64,
    /// Number of segment files.
    pub segments: u32,
}

/// A topic's settings and partitions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicDescription {
    /// Topic name.
    pub name: String,
    /// Every setting as `key = value`, in the syntax CreateTopic accepts; look them up by key.
    pub config: Vec<(String, String)>,
    /// One per partition, by partition id.
    pub partitions: Vec<PartitionDescription>,
}

// ---------------------------------------------------------------- produce

/// How much acknowledgement a produce asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acks {
    /// No response at all (one-way send).
    None,
    /// Respond once the batches are as durable as their topics promise.
    Durable,
}

/// One batch to append to one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProduceEntry {
    /// Topic name.
    pub topic: String,
    /// Partition id; the client picks it (see docs/protocol.md, partitioning).
    pub partition: u32,
    /// One record batch, Kafka v2 layout.
    pub batch: Bytes,
}

/// Appends record batches (`Produce`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProduceRequest {
    /// Whether the broker answers at all.
    pub acks: Acks,
    /// Batches to append, handled in this order.
    pub entries: Vec<ProduceEntry>,
}

/// The outcome of one produce entry, in request order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProduceResult {
    /// The entry's topic.
    pub topic: String,
    /// The entry's partition.
    pub partition: u32,
    /// [`ErrorCode::None`] on success; the other entries are unaffected by this one's error.
    pub error: ErrorCode,
    /// What went wrong; empty on success.
    pub message: String,
    /// Offset of the batch's first record (0 on error).
    pub base_offset: u64,
    /// Offset of the batch's last record (0 on error).
    pub last_offset: u64,
    /// The broker's timestamp when the topic uses log-append time, else -1.
    pub log_append_time: i64,
    /// The batch had already been written (a retry); the offsets are the original ones.
    pub duplicate: bool,
}

/// Answers a produce with acks [`Acks::Durable`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProduceResponse {
    /// One per entry, in request order.
    pub results: Vec<ProduceResult>,
}

// ---------------------------------------------------------------- fetch

/// One partition to read in a [`FetchRequest`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchPartition {
    /// Topic name.
    pub topic: String,
    /// Partition id.
    pub partition: u32,
    /// Offset to read from; the high watermark is valid and returns nothing.
    pub offset: u64,
    /// Byte budget for this partition (at least one whole batch is returned).
    pub max_bytes: u32,
}

/// Reads record batches (`Fetch`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchRequest {
    /// Longest the broker holds the request while fewer than `min_bytes` are ready.
    pub max_wait_ms: u32,
    /// Answer as soon as this many bytes of batches are ready (0 behaves as 1).
    pub min_bytes: u32,
    /// Byte budget for the whole response.
    pub max_bytes: u32,
    /// Partitions to read, answered in this order; each takes its budget from the request's.
    pub partitions: Vec<FetchPartition>,
}

/// One partition's answer in a [`FetchResponse`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchResult {
    /// The requested topic.
    pub topic: String,
    /// The requested partition.
    pub partition: u32,
    /// [`ErrorCode::None`] on success; `OFFSET_OUT_OF_RANGE` when the offset is outside the log (the watermarks below let the client reset).
    pub error: ErrorCode,
    /// What went wrong; empty on success.
    pub message: String,
    /// The partition's high watermark (0 if it does not exist).
    pub high_watermark: u64,
    /// The partition's first stored offset (0 if it does not exist).
    pub log_start_offset: u64,
    /// Whole record batches, concatenated. The first may start before the
    /// requested offset: skip records below it.
    pub records: Bytes,
}

/// Answers a fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchResponse {
    /// One per requested partition, in request order.
    pub partitions: Vec<FetchResult>,
}

// ---------------------------------------------------------------- list offsets

/// Which offset to look up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetSpec {
    /// The log start: the first offset still stored (`-2` on the wire).
    Earliest,
    /// The high watermark: where the next message will land (`-1`).
    Latest,
    /// The first offset whose timestamp is at or after this (ms since the epoch, `>= 0`).
    Timestamp(i64),
}

impl OffsetSpec {
    /// The wire value: -2 earliest, -1 latest, else the timestamp.
    pub fn to_i64(self) -> i64 {
        match self {
            OffsetSpec::Earliest => -2,
            OffsetSpec::Latest => -1,
            OffsetSpec::Timestamp(t) => t,
        }
    }

    /// Reads the wire value; below -2 is [`DecodeError::InvalidValue`].
    pub fn from_i64(v: i64) -> Result<Self, DecodeError> {
        match v {
            -2 => Ok(OffsetSpec::Earliest),
            -1 => Ok(OffsetSpec::Latest),
            t if t >= 0 => Ok(OffsetSpec::Timestamp(t)),
            value => Err(DecodeError::InvalidValue {
                what: "offset spec",
                value,
            }),
        }
    }
}

/// One lookup in a [`ListOffsetsRequest`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetQuery {
    /// Topic name.
    pub topic: String,
    /// Partition id.
    pub partition: u32,
    /// Which offset to find.
    pub spec: OffsetSpec,
}

/// Looks up offsets (`ListOffsets`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListOffsetsRequest {
    /// Answered in this order.
    pub queries: Vec<OffsetQuery>,
}

/// One lookup's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetResult {
    /// The query's topic.
    pub topic: String,
    /// The query's partition.
    pub partition: u32,
    /// [`ErrorCode::None`] on success.
    pub error: ErrorCode,
    /// What went wrong; empty on success.
    pub message: String,
    /// For a timestamp past every message: the high watermark.
    pub offset: u64,
}

/// Answers a list-offsets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListOffsetsResponse {
    /// One per query, in request order.
    pub results: Vec<OffsetResult>,
}

impl Wire for ErrorCode {
    const MIN_LEN: usize = 2;
    fn encode_to(&self, w: &mut Writer) {
        w.u16(self.to_u16());
    }
    fn decode_from(r: &mut Reader, what: &'static str) -> Result<Self, DecodeError> {
        Ok(ErrorCode::from_u16(r.u16(what)?))
    }
}

/// Acks travel as a `u8`: 0 none, 1 durable.
impl Wire for Acks {
    const MIN_LEN: usize = 1;
    fn encode_to(&self, w: &mut Writer) {
        w.u8(match self {
            Acks::None => 0,
            Acks::Durable => 1,
        });
    }
    fn decode_from(r: &mut Reader, what: &'static str) -> Result<Self, DecodeError> {
        match r.u8(what)? {
            0 => Ok(Acks::None),
            1 => Ok(Acks::Durable),
            v => Err(DecodeError::InvalidValue {
                what: "acks",
                value: v as i64,
            }),
        }
    }
}

/// An offset spec travels as its `i64` (see [`OffsetSpec::to_i64`]).
impl Wire for OffsetSpec {
    const MIN_LEN: usize = 8;
    fn encode_to(&self, w: &mut Writer) {
        w.i64(self.to_i64());
    }
    fn decode_from(r: &mut Reader, what: &'static str) -> Result<Self, DecodeError> {
        OffsetSpec::from_i64(r.i64(what)?)
    }
}

wire_struct!(Empty);
wire_struct!(WireError { code, message });
wire_struct!(HandshakeRequest {
    version,
    client_id,
    token,
    want_producer_id
});
wire_struct!(HandshakeResponse {
    version,
    server,
    producer_id,
    producer_epoch,
    max_frame_bytes,
    max_message_bytes
});
wire_struct!(CreateTopicRequest {
    name,
    partitions,
    config
});
wire_struct!(DeleteTopicRequest { name });
wire_struct!(ListTopicsRequest);
wire_struct!(TopicSummary { name, partitions });
wire_struct!(ListTopicsResponse { topics });
wire_struct!(DescribeTopicRequest { name });
wire_struct!(PartitionDescription {
    partition,
    log_start_offset,
    high_watermark,
    size_bytes,
    segments
});
wire_struct!(TopicDescription {
    name,
    config,
    partitions
});
wire_struct!(ProduceEntry {
    topic,
    partition,
    batch
});
wire_struct!(ProduceRequest { acks, entries });
wire_struct!(ProduceResult {
    topic,
    partition,
    error,
    message,
    base_offset,
    last_offset,
    log_append_time,
    duplicate
});
wire_struct!(ProduceResponse { results });
wire_struct!(FetchPartition {
    topic,
    partition,
    offset,
    max_bytes
});
wire_struct!(FetchRequest {
    max_wait_ms,
    min_bytes,
    max_bytes,
    partitions
});
wire_struct!(FetchResult {
    topic,
    partition,
    error,
    message,
    high_watermark,
    log_start_offset,
    records
});
wire_struct!(FetchResponse { partitions });
wire_struct!(OffsetQuery {
    topic,
    partition,
    spec
});
wire_struct!(ListOffsetsRequest { queries });
wire_struct!(OffsetResult {
    topic,
    partition,
    error,
    message,
    offset
});
wire_struct!(ListOffsetsResponse { results });

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn round_trip<P: RequestPayload + std::fmt::Debug + PartialEq>(p: P) {
        let bytes = p.encode();
        let back = P::decode(bytes.clone()).unwrap();
        assert_eq!(back, p);
        // Every strict prefix is refused, never panics.
        for cut in 0..bytes.len() {
            assert!(P::decode(bytes.slice(..cut)).is_err() || cut == bytes.len());
        }
    }

    #[test]
    fn requests_round_trip() {
        round_trip(HandshakeRequest {
            version: 1,
            client_id: "c".into(),
            token: "t".into(),
            want_producer_id: true,
        });
        round_trip(CreateTopicRequest {
            name: "orders".into(),
            partitions: 3,
            config: vec![("durability".into(), "sync".into())],
        });
        round_trip(ProduceRequest {
            acks: Acks::Durable,
            entries: vec![ProduceEntry {
                topic: "t".into(),
                partition: 2,
                batch: Bytes::from_static(b"abc"),
            }],
        });
        round_trip(FetchRequest {
            max_wait_ms: 500,
            min_bytes: 1,
            max_bytes: 1 << 20,
            partitions: vec![FetchPartition {
                topic: "t".into(),
                partition: 0,
                offset: 42,
                max_bytes: 1024,
            }],
        });
        round_trip(ListOffsetsRequest {
            queries: vec![
                OffsetQuery {
                    topic: "t".into(),
                    partition: 0,
                    spec: OffsetSpec::Earliest,
                },
                OffsetQuery {
                    topic: "t".into(),
                    partition: 1,
                    spec: OffsetSpec::Timestamp(1_700_000_000_000),
                },
            ],
        });
    }

    #[test]
    fn responses_round_trip() {
        let r = ProduceResponse {
            results: vec![ProduceResult {
                topic: "t".into(),
                partition: 1,
                error: ErrorCode::OutOfOrderSequence,
                message: "gap".into(),
                base_offset: 7,
                last_offset: 9,
                log_append_time: -1,
                duplicate: false,
            }],
        };
        assert_eq!(ProduceResponse::decode(r.encode()).unwrap(), r);
        let f = FetchResponse {
            partitions: vec![FetchResult {
                topic: "t".into(),
                partition: 0,
                error: ErrorCode::None,
                message: String::new(),
                high_watermark: 10,
                log_start_offset: 0,
                records: Bytes::from_static(b"xyz"),
            }],
        };
        assert_eq!(FetchResponse::decode(f.encode()).unwrap(), f);
        let e = WireError::new(ErrorCode::AuthenticationFailed, "bad token");
        let frame = Frame {
            op: ERROR_OP,
            request_id: 1,
            payload: e.encode(),
        };
        assert_eq!(decode_response::<Empty>(Op::CreateTopic, frame), Err(e));
    }

    #[test]
    fn hostile_counts_do_not_allocate() {
        // Claims 4 billion entries in a 5-byte payload.
        let payload = Bytes::from_static(&[1, 0xff, 0xff, 0xff, 0xff]);
        assert!(matches!(
            ProduceRequest::decode(payload),
            Err(DecodeError::Truncated { .. })
        ));
    }

    proptest! {
        #[test]
        fn garbage_never_panics(op in 0u16..0x80, bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = Request::decode(op, Bytes::from(bytes));
        }
    }
}
