//! Ops and their payloads: what each request asks and each response says.
//!
//! A response frame carries the request's op with [`RESPONSE_BIT`] set, or
//! [`ERROR_OP`] when the whole request failed (payload: `u16 code, string
//! message`). Per-partition outcomes of produce, fetch and list-offsets are
//! reported inside their responses, so one bad partition does not fail the
//! rest. Field order below is wire order; see `codec` for the primitives
//! and docs/protocol.md for the full specification.

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

use crate::codec::{DecodeError, Reader, Writer};
use crate::error::{ErrorCode, WireError};
use crate::frame::Frame;

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
/// compiler then demands). A code given twice does not compile (two equal
/// discriminants); docs/protocol.md's table is checked against this one by
/// `tests/op_table.rs`.
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
            $($name($request),)*
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
    0x0010 CreateTopic(CreateTopicRequest) -> Empty;
    0x0011 DeleteTopic(DeleteTopicRequest) -> Empty;
    0x0012 ListTopics(ListTopicsRequest) -> ListTopicsResponse;
    0x0013 DescribeTopic(DescribeTopicRequest) -> TopicDescription;
    /// Appends record batches; with acks 0 there is no response.
    0x0020 Produce(ProduceRequest) -> ProduceResponse;
    0x0030 Fetch(FetchRequest) -> FetchResponse;
    0x0040 ListOffsets(ListOffsetsRequest) -> ListOffsetsResponse;
    0x0050 Schedule(ScheduleRequest) -> ScheduleResponse;
    0x0051 CancelDelays(CancelDelaysRequest) -> CancelDelaysResponse;
    0x0052 ListDelays(ListDelaysRequest) -> ListDelaysResponse;
    0x0060 JoinGroup(JoinGroupRequest) -> JoinGroupResponse;
    0x0061 Heartbeat(HeartbeatRequest) -> HeartbeatResponse;
    0x0062 LeaveGroup(LeaveGroupRequest) -> Empty;
    0x0063 PollGroup(PollGroupRequest) -> GroupBatch;
    /// Opens a push subscription: many responses, one per pushed batch.
    0x0064 Subscribe(SubscribeRequest) -> GroupBatch;
    /// One-way: never answered (`Empty` is only its nominal response).
    0x0065 GrantCredit(GrantCreditRequest) -> Empty;
    0x0066 Ack(AckRequest) -> AckResponse;
    0x0067 DescribeGroup(DescribeGroupRequest) -> GroupDescription;
    0x0068 ListGroups(ListGroupsRequest) -> ListGroupsResponse;
    0x0069 ResetGroup(ResetGroupRequest) -> ResetGroupResponse;
    0x006A Redrive(RedriveRequest) -> RedriveResponse;
    0x006B DeleteGroup(DeleteGroupRequest) -> Empty;
    0x0070 DeployFunction(DeployFunctionRequest) -> DeployFunctionResponse;
    0x0071 ListFunctions(ListFunctionsRequest) -> ListFunctionsResponse;
    0x0072 DescribeFunction(DescribeFunctionRequest) -> FunctionDescription;
    0x0073 FunctionLogs(FunctionLogsRequest) -> FunctionLogsResponse;
    0x0074 DeleteFunction(DeleteFunctionRequest) -> Empty;
    0x0075 RollbackFunction(RollbackFunctionRequest) -> DeployFunctionResponse;
}

impl Op {
    pub fn response_op(self) -> u16 {
        self as u16 | RESPONSE_BIT
    }
}

/// A payload that encodes to and decodes from the wire.
pub trait Payload: Sized {
    fn write(&self, w: &mut Writer);
    fn read(r: &mut Reader) -> Result<Self, DecodeError>;

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

/// A request payload and the op it travels under.
pub trait RequestPayload: Payload {
    const OP: Op;
    type Response: Payload;
}

/// An empty payload.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Empty;

impl Payload for Empty {
    fn write(&self, _: &mut Writer) {}
    fn read(_: &mut Reader) -> Result<Self, DecodeError> {
        Ok(Empty)
    }
}

impl Payload for WireError {
    fn write(&self, w: &mut Writer) {
        w.u16(self.code.to_u16()).string(&self.message);
    }
    fn read(r: &mut Reader) -> Result<Self, DecodeError> {
        Ok(WireError {
            code: ErrorCode::from_u16(r.u16("error code")?),
            message: r.string("error message")?,
        })
    }
}

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

pub(crate) fn error_code(r: &mut Reader) -> Result<ErrorCode, DecodeError> {
    Ok(ErrorCode::from_u16(r.u16("error code")?))
}

fn config_pairs(r: &mut Reader) -> Result<Vec<(String, String)>, DecodeError> {
    r.array("config", 4, |r| {
        Ok((r.string("config key")?, r.string("config value")?))
    })
}

fn write_config_pairs(w: &mut Writer, pairs: &[(String, String)]) {
    w.count(pairs.len());
    for (k, v) in pairs {
        w.string(k).string(v);
    }
}

// ---------------------------------------------------------------- handshake

/// Opens a connection: the first request on it, on any stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandshakeRequest {
    /// The highest protocol version the client speaks.
    pub version: u16,
    pub client_id: String,
    /// Empty for anonymous access, where the broker allows it.
    pub token: String,
    /// Ask the broker for a fresh producer id (idempotent producers).
    pub want_producer_id: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandshakeResponse {
    /// The version both sides now speak.
    pub version: u16,
    pub server: String,
    /// A broker-unique producer id, or -1 when not asked for.
    pub producer_id: i64,
    pub producer_epoch: i16,
    /// Largest frame the broker accepts (header included).
    pub max_frame_bytes: u32,
    /// Largest record batch the broker accepts.
    pub max_message_bytes: u32,
}

impl Payload for HandshakeRequest {
    fn write(&self, w: &mut Writer) {
        w.u16(self.version)
            .string(&self.client_id)
            .string(&self.token)
            .bool(self.want_producer_id);
    }
    fn read(r: &mut Reader) -> Result<Self, DecodeError> {
        Ok(HandshakeRequest {
            version: r.u16("version")?,
            client_id: r.string("client id")?,
            token: r.string("token")?,
            want_producer_id: r.bool("want producer id")?,
        })
    }
}

impl Payload for HandshakeResponse {
    fn write(&self, w: &mut Writer) {
        w.u16(self.version)
            .string(&self.server)
            .i64(self.producer_id)
            .i16(self.producer_epoch)
            .u32(self.max_frame_bytes)
            .u32(self.max_message_bytes);
    }
    fn read(r: &mut Reader) -> Result<Self, DecodeError> {
        Ok(HandshakeResponse {
            version: r.u16("version")?,
            server: r.string("server")?,
            producer_id: r.i64("producer id")?,
            producer_epoch: r.i16("producer epoch")?,
            max_frame_bytes: r.u32("max frame bytes")?,
            max_message_bytes: r.u32("max message bytes")?,
        })
    }
}

// ---------------------------------------------------------------- topics

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateTopicRequest {
    pub name: String,
    pub partitions: u32,
    /// Topic settings as `key = value` strings (see docs/storage.md).
    pub config: Vec<(String, String)>,
}

impl Payload for CreateTopicRequest {
    fn write(&self, w: &mut Writer) {
        w.string(&self.name).u32(self.partitions);
        write_config_pairs(w, &self.config);
    }
    fn read(r: &mut Reader) -> Result<Self, DecodeError> {
        Ok(CreateTopicRequest {
            name: r.string("topic")?,
            partitions: r.u32("partitions")?,
            config: config_pairs(r)?,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeleteTopicRequest {
    pub name: String,
}

impl Payload for DeleteTopicRequest {
    fn write(&self, w: &mut Writer) {
        w.string(&self.name);
    }
    fn read(r: &mut Reader) -> Result<Self, DecodeError> {
        Ok(DeleteTopicRequest {
            name: r.string("topic")?,
        })
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ListTopicsRequest;

impl Payload for ListTopicsRequest {
    fn write(&self, _: &mut Writer) {}
    fn read(_: &mut Reader) -> Result<Self, DecodeError> {
        Ok(ListTopicsRequest)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSummary {
    pub name: String,
    pub partitions: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListTopicsResponse {
    pub topics: Vec<TopicSummary>,
}

impl Payload for ListTopicsResponse {
    fn write(&self, w: &mut Writer) {
        w.count(self.topics.len());
        for t in &self.topics {
            w.string(&t.name).u32(t.partitions);
        }
    }
    fn read(r: &mut Reader) -> Result<Self, DecodeError> {
        Ok(ListTopicsResponse {
            topics: r.array("topics", 6, |r| {
                Ok(TopicSummary {
                    name: r.string("topic")?,
                    partitions: r.u32("partitions")?,
                })
            })?,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescribeTopicRequest {
    pub name: String,
}

impl Payload for DescribeTopicRequest {
    fn write(&self, w: &mut Writer) {
        w.string(&self.name);
    }
    fn read(r: &mut Reader) -> Result<Self, DecodeError> {
        Ok(DescribeTopicRequest {
            name: r.string("topic")?,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionDescription {
    pub partition: u32,
    pub log_start_offset: u64,
    pub high_watermark: u64,
    pub size_bytes: u64,
    pub segments: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicDescription {
    pub name: String,
    pub config: Vec<(String, String)>,
    pub partitions: Vec<PartitionDescription>,
}

impl Payload for TopicDescription {
    fn write(&self, w: &mut Writer) {
        w.string(&self.name);
        write_config_pairs(w, &self.config);
        w.count(self.partitions.len());
        for p in &self.partitions {
            w.u32(p.partition)
                .u64(p.log_start_offset)
                .u64(p.high_watermark)
                .u64(p.size_bytes)
                .u32(p.segments);
        }
    }
    fn read(r: &mut Reader) -> Result<Self, DecodeError> {
        Ok(TopicDescription {
            name: r.string("topic")?,
            config: config_pairs(r)?,
            partitions: r.array("partitions", 32, |r| {
                Ok(PartitionDescription {
                    partition: r.u32("partition")?,
                    log_start_offset: r.u64("log start offset")?,
                    high_watermark: r.u64("high watermark")?,
                    size_bytes: r.u64("size bytes")?,
                    segments: r.u32("segments")?,
                })
            })?,
        })
    }
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

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProduceEntry {
    pub topic: String,
    pub partition: u32,
    /// One record batch, Kafka v2 layout.
    pub batch: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProduceRequest {
    pub acks: Acks,
    pub entries: Vec<ProduceEntry>,
}

impl Payload for ProduceRequest {
    fn write(&self, w: &mut Writer) {
        w.u8(match self.acks {
            Acks::None => 0,
            Acks::Durable => 1,
        });
        w.count(self.entries.len());
        for e in &self.entries {
            w.string(&e.topic).u32(e.partition).bytes(&e.batch);
        }
    }
    fn read(r: &mut Reader) -> Result<Self, DecodeError> {
        let acks = match r.u8("acks")? {
            0 => Acks::None,
            1 => Acks::Durable,
            v => {
                return Err(DecodeError::InvalidValue {
                    what: "acks",
                    value: v as i64,
                });
            }
        };
        Ok(ProduceRequest {
            acks,
            entries: r.array("entries", 10, |r| {
                Ok(ProduceEntry {
                    topic: r.string("topic")?,
                    partition: r.u32("partition")?,
                    batch: r.bytes("batch")?,
                })
            })?,
        })
    }
}

/// The outcome of one produce entry, in request order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProduceResult {
    pub topic: String,
    pub partition: u32,
    pub error: ErrorCode,
    pub message: String,
    pub base_offset: u64,
    pub last_offset: u64,
    /// The broker's timestamp when the topic uses log-append time, else -1.
    pub log_append_time: i64,
    /// The batch had already been written (a retry); the offsets are the original ones.
    pub duplicate: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProduceResponse {
    pub results: Vec<ProduceResult>,
}

impl Payload for ProduceResponse {
    fn write(&self, w: &mut Writer) {
        w.count(self.results.len());
        for p in &self.results {
            w.string(&p.topic)
                .u32(p.partition)
                .u16(p.error.to_u16())
                .string(&p.message)
                .u64(p.base_offset)
                .u64(p.last_offset)
                .i64(p.log_append_time)
                .bool(p.duplicate);
        }
    }
    fn read(r: &mut Reader) -> Result<Self, DecodeError> {
        Ok(ProduceResponse {
            results: r.array("results", 35, |r| {
                Ok(ProduceResult {
                    topic: r.string("topic")?,
                    partition: r.u32("partition")?,
                    error: error_code(r)?,
                    message: r.string("message")?,
                    base_offset: r.u64("base offset")?,
                    last_offset: r.u64("last offset")?,
                    log_append_time: r.i64("log append time")?,
                    duplicate: r.bool("duplicate")?,
                })
            })?,
        })
    }
}

// ---------------------------------------------------------------- fetch

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchPartition {
    pub topic: String,
    pub partition: u32,
    pub offset: u64,
    /// Byte budget for this partition (at least one whole batch is returned).
    pub max_bytes: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchRequest {
    /// Longest the broker holds the request while fewer than `min_bytes` are ready.
    pub max_wait_ms: u32,
    pub min_bytes: u32,
    /// Byte budget for the whole response.
    pub max_bytes: u32,
    pub partitions: Vec<FetchPartition>,
}

impl Payload for FetchRequest {
    fn write(&self, w: &mut Writer) {
        w.u32(self.max_wait_ms)
            .u32(self.min_bytes)
            .u32(self.max_bytes);
        w.count(self.partitions.len());
        for p in &self.partitions {
            w.string(&p.topic)
                .u32(p.partition)
                .u64(p.offset)
                .u32(p.max_bytes);
        }
    }
    fn read(r: &mut Reader) -> Result<Self, DecodeError> {
        Ok(FetchRequest {
            max_wait_ms: r.u32("max wait")?,
            min_bytes: r.u32("min bytes")?,
            max_bytes: r.u32("max bytes")?,
            partitions: r.array("partitions", 18, |r| {
                Ok(FetchPartition {
                    topic: r.string("topic")?,
                    partition: r.u32("partition")?,
                    offset: r.u64("offset")?,
                    max_bytes: r.u32("max bytes")?,
                })
            })?,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchResult {
    pub topic: String,
    pub partition: u32,
    pub error: ErrorCode,
    pub message: String,
    pub high_watermark: u64,
    pub log_start_offset: u64,
    /// Whole record batches, concatenated. The first may start before the
    /// requested offset: skip records below it.
    pub records: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchResponse {
    pub partitions: Vec<FetchResult>,
}

impl Payload for FetchResponse {
    fn write(&self, w: &mut Writer) {
        w.count(self.partitions.len());
        for p in &self.partitions {
            w.string(&p.topic)
                .u32(p.partition)
                .u16(p.error.to_u16())
                .string(&p.message)
                .u64(p.high_watermark)
                .u64(p.log_start_offset)
                .bytes(&p.records);
        }
    }
    fn read(r: &mut Reader) -> Result<Self, DecodeError> {
        Ok(FetchResponse {
            partitions: r.array("partitions", 30, |r| {
                Ok(FetchResult {
                    topic: r.string("topic")?,
                    partition: r.u32("partition")?,
                    error: error_code(r)?,
                    message: r.string("message")?,
                    high_watermark: r.u64("high watermark")?,
                    log_start_offset: r.u64("log start offset")?,
                    records: r.bytes("records")?,
                })
            })?,
        })
    }
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
    pub fn to_i64(self) -> i64 {
        match self {
            OffsetSpec::Earliest => -2,
            OffsetSpec::Latest => -1,
            OffsetSpec::Timestamp(t) => t,
        }
    }

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

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetQuery {
    pub topic: String,
    pub partition: u32,
    pub spec: OffsetSpec,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListOffsetsRequest {
    pub queries: Vec<OffsetQuery>,
}

impl Payload for ListOffsetsRequest {
    fn write(&self, w: &mut Writer) {
        w.count(self.queries.len());
        for q in &self.queries {
            w.string(&q.topic).u32(q.partition).i64(q.spec.to_i64());
        }
    }
    fn read(r: &mut Reader) -> Result<Self, DecodeError> {
        Ok(ListOffsetsRequest {
            queries: r.array("queries", 14, |r| {
                Ok(OffsetQuery {
                    topic: r.string("topic")?,
                    partition: r.u32("partition")?,
                    spec: OffsetSpec::from_i64(r.i64("offset spec")?)?,
                })
            })?,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetResult {
    pub topic: String,
    pub partition: u32,
    pub error: ErrorCode,
    pub message: String,
    /// For a timestamp past every message: the high watermark.
    pub offset: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListOffsetsResponse {
    pub results: Vec<OffsetResult>,
}

impl Payload for ListOffsetsResponse {
    fn write(&self, w: &mut Writer) {
        w.count(self.results.len());
        for o in &self.results {
            w.string(&o.topic)
                .u32(o.partition)
                .u16(o.error.to_u16())
                .string(&o.message)
                .u64(o.offset);
        }
    }
    fn read(r: &mut Reader) -> Result<Self, DecodeError> {
        Ok(ListOffsetsResponse {
            results: r.array("results", 18, |r| {
                Ok(OffsetResult {
                    topic: r.string("topic")?,
                    partition: r.u32("partition")?,
                    error: error_code(r)?,
                    message: r.string("message")?,
                    offset: r.u64("offset")?,
                })
            })?,
        })
    }
}

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
