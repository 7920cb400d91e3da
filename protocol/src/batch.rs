//! Record batches in the Kafka RecordBatch v2 layout.
//!
//! A batch is the unit everywhere in Sluice: the client builds it, the wire
//! carries it, the log stores it byte for byte and fetches serve it back. The
//! layout is Kafka's (magic 2), so any existing record-batch parser can read
//! Sluice data and a Kafka listener stays cheap later.
//!
//! ```text
//! offset  size  field
//!      0     8  base offset            (assigned by the broker; not under the CRC)
//!      8     4  batch length           (bytes after this field)
//!     12     4  partition leader epoch (not under the CRC)
//!     16     1  magic = 2
//!     17     4  CRC-32C of bytes 21..end
//!     21     2  attributes             (bits 0-2 compression, 3 timestamp type,
//!                                       4 transactional, 5 control)
//!     23     4  last offset delta
//!     27     8  base timestamp (ms)
//!     35     8  max timestamp (ms)
//!     43     8  producer id
//!     51     2  producer epoch
//!     53     4  base sequence
//!     57     4  record count
//!     61     …  records
//! ```
//!
//! Each record is `length varint, attributes i8, timestamp delta varlong,
//! offset delta varint, key length varint (-1 = null), key, value length
//! varint (-1 = null), value, header count varint, headers` and each header
//! is `key length varint, key (UTF-8), value length varint (-1 = null),
//! value`. All varints are zig-zag encoded, as in Kafka.
//!
//! [`BatchBuilder`] writes batches, [`BatchView`] reads and validates one
//! without copying, and [`BatchIter`] splits a buffer of consecutive batches.
//! The broker changes only what the layout keeps outside the CRC (base
//! offset) or recomputes the CRC over unchanged records ([`set_log_append_time`]):
//! records are never re-encoded.

use bytes::{BufMut, Bytes, BytesMut};

/// The only record-batch format version Sluice reads and writes.
pub const MAGIC: u8 = 2;
/// Bytes before the first record.
pub const HEADER_LEN: usize = 61;
/// Bytes before the batch length field ends: base offset + batch length.
pub const LOG_OVERHEAD: usize = 12;
/// Producer id of a batch from a producer without idempotence.
pub const NO_PRODUCER_ID: i64 = -1;
/// Producer epoch of a batch from a producer without idempotence.
pub const NO_PRODUCER_EPOCH: i16 = -1;
/// Base sequence of a batch from a producer without idempotence.
pub const NO_SEQUENCE: i32 = -1;

const BASE_OFFSET_AT: usize = 0;
const LENGTH_AT: usize = 8;
const MAGIC_AT: usize = 16;
const CRC_AT: usize = 17;
const ATTRIBUTES_AT: usize = 21;
const MAX_TIMESTAMP_AT: usize = 35;
const PRODUCER_EPOCH_AT: usize = 51;
const BASE_SEQUENCE_AT: usize = 53;

const COMPRESSION_MASK: u16 = 0x07;
const TIMESTAMP_TYPE_BIT: u16 = 0x08;
const TRANSACTIONAL_BIT: u16 = 0x10;
const CONTROL_BIT: u16 = 0x20;

/// Why bytes are not a valid record batch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    /// The buffer ends before the batch does.
    #[error("truncated batch: need {needed} bytes, have {available}")]
    Truncated {
        /// Bytes the batch says it takes (header included).
        needed: usize,
        /// Bytes the buffer actually holds.
        available: usize,
    },
    /// The magic byte is not 2.
    #[error("unknown record-batch magic {0} (only magic 2 is supported)")]
    UnknownMagic(u8),
    /// The stored CRC does not match the bytes.
    #[error("batch CRC mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    CrcMismatch {
        /// The CRC-32C written in the header.
        stored: u32,
        /// The CRC-32C of the bytes as received.
        computed: u32,
    },
    /// The batch length field is impossible.
    #[error("invalid batch length {0}")]
    InvalidLength(i64),
    /// The batch uses a compression codec this build does not support.
    #[error("unsupported compression codec {0} (Sluice stores uncompressed batches)")]
    UnsupportedCompression(u8),
    /// The records inside a batch with a good CRC are inconsistent.
    #[error("malformed batch: {0}")]
    Malformed(&'static str),
}

/// How a batch's timestamps were set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimestampType {
    /// Set by the producer when it created the record.
    CreateTime,
    /// Set by the broker when it appended the batch (all records share the
    /// batch's max timestamp).
    LogAppendTime,
}

/// The fixed-size header of a batch, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    /// Offset of the first record; the broker overwrites it on append (a producer writes 0).
    pub base_offset: u64,
    /// Bytes after the length field (total size is `LOG_OVERHEAD + batch_length`).
    pub batch_length: u32,
    /// Ignored by Sluice (a producer writes -1); kept for Kafka compatibility.
    pub partition_leader_epoch: i32,
    /// Format version; only 2 parses.
    pub magic: u8,
    /// CRC-32C (Castagnoli) of the bytes from the attributes to the end of the batch.
    pub crc: u32,
    /// Raw attribute bits; read them through [`Self::compression`], [`Self::timestamp_type`], [`Self::is_transactional`] and [`Self::is_control`].
    pub attributes: u16,
    /// Record count - 1: the last record's offset is `base_offset + last_offset_delta`.
    pub last_offset_delta: u32,
    /// Timestamp of the first record, ms since the Unix epoch; record timestamps are deltas from it.
    pub base_timestamp: i64,
    /// Largest record timestamp in the batch (ms since the epoch); under log-append time the broker's append time.
    pub max_timestamp: i64,
    /// Idempotent producer id from the handshake, or -1 for a plain producer.
    pub producer_id: i64,
    /// Epoch of `producer_id`, or -1; an older epoch than one already written is fenced.
    pub producer_epoch: i16,
    /// Sequence number of the first record (per producer and partition), or -1.
    pub base_sequence: i32,
    /// Number of records, at least 1 in a valid batch.
    pub record_count: u32,
}

impl BatchHeader {
    /// Decodes the header at the start of `buf` and checks magic and length,
    /// but not the CRC (see [`BatchView::verify_crc`]).
    pub fn parse(buf: &[u8]) -> Result<Self, BatchError> {
        if buf.len() < HEADER_LEN {
            return Err(BatchError::Truncated {
                needed: HEADER_LEN,
                available: buf.len(),
            });
        }
        let magic = buf[MAGIC_AT];
        if magic != MAGIC {
            return Err(BatchError::UnknownMagic(magic));
        }
        let length = be_i32(buf, LENGTH_AT);
        if (length as i64) < (HEADER_LEN - LOG_OVERHEAD) as i64 {
            return Err(BatchError::InvalidLength(length as i64));
        }
        let last_offset_delta = be_i32(buf, 23);
        let record_count = be_i32(buf, 57);
        if last_offset_delta < 0 || record_count < 0 {
            return Err(BatchError::Malformed(
                "negative record count or offset delta",
            ));
        }
        Ok(BatchHeader {
            base_offset: be_i64(buf, BASE_OFFSET_AT) as u64,
            batch_length: length as u32,
            partition_leader_epoch: be_i32(buf, 12),
            magic,
            crc: be_u32(buf, CRC_AT),
            attributes: u16::from_be_bytes([buf[21], buf[22]]),
            last_offset_delta: last_offset_delta as u32,
            base_timestamp: be_i64(buf, 27),
            max_timestamp: be_i64(buf, MAX_TIMESTAMP_AT),
            producer_id: be_i64(buf, 43),
            producer_epoch: i16::from_be_bytes([buf[51], buf[52]]),
            base_sequence: be_i32(buf, 53),
            record_count: record_count as u32,
        })
    }

    /// Size of the whole batch in bytes, header included.
    pub fn total_len(&self) -> usize {
        LOG_OVERHEAD + self.batch_length as usize
    }

    /// Offset of the last record in the batch.
    pub fn last_offset(&self) -> u64 {
        self.base_offset + self.last_offset_delta as u64
    }

    /// The offset that follows this batch.
    pub fn next_offset(&self) -> u64 {
        self.last_offset() + 1
    }

    /// The compression codec (attribute bits 0-2); Sluice accepts only 0, uncompressed.
    pub fn compression(&self) -> u8 {
        (self.attributes & COMPRESSION_MASK) as u8
    }

    /// Whether record timestamps are the producer's or the broker's append time (attribute bit 3).
    pub fn timestamp_type(&self) -> TimestampType {
        if self.attributes & TIMESTAMP_TYPE_BIT != 0 {
            TimestampType::LogAppendTime
        } else {
            TimestampType::CreateTime
        }
    }

    /// Kafka's transactional bit (4); Sluice has no transactions and never sets it.
    pub fn is_transactional(&self) -> bool {
        self.attributes & TRANSACTIONAL_BIT != 0
    }

    /// Kafka's control-batch bit (5); Sluice writes no control batches.
    pub fn is_control(&self) -> bool {
        self.attributes & CONTROL_BIT != 0
    }
}

/// One batch inside a borrowed buffer; cheap to create, reads records lazily.
#[derive(Debug, Clone, Copy)]
pub struct BatchView<'a> {
    bytes: &'a [u8],
    header: BatchHeader,
}

impl<'a> BatchView<'a> {
    /// Reads the batch at the start of `buf` (which may hold more after it).
    /// Checks magic and length only; call [`Self::validate`] for untrusted input.
    pub fn parse(buf: &'a [u8]) -> Result<Self, BatchError> {
        let header = BatchHeader::parse(buf)?;
        let total = header.total_len();
        if buf.len() < total {
            return Err(BatchError::Truncated {
                needed: total,
                available: buf.len(),
            });
        }
        Ok(BatchView {
            bytes: &buf[..total],
            header,
        })
    }

    /// The decoded fixed-size header.
    pub fn header(&self) -> &BatchHeader {
        &self.header
    }

    /// The whole batch, header included.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// Checks the CRC-32C over attributes..end.
    pub fn verify_crc(&self) -> Result<(), BatchError> {
        let computed = crc32c::crc32c(&self.bytes[ATTRIBUTES_AT..]);
        if computed != self.header.crc {
            return Err(BatchError::CrcMismatch {
                stored: self.header.crc,
                computed,
            });
        }
        Ok(())
    }

    /// Full validation for bytes from the network: CRC, no compression, and
    /// records that decode, with offset deltas 0..n and a count that matches.
    pub fn validate(&self) -> Result<(), BatchError> {
        self.verify_crc()?;
        let compression = self.header.compression();
        if compression != 0 {
            return Err(BatchError::UnsupportedCompression(compression));
        }
        if self.header.record_count == 0 {
            return Err(BatchError::Malformed("batch has no records"));
        }
        if self.header.last_offset_delta != self.header.record_count - 1 {
            return Err(BatchError::Malformed(
                "last offset delta does not match record count",
            ));
        }
        let mut seen = 0u32;
        for record in self.records() {
            let record = record?;
            if record.offset != self.header.base_offset + seen as u64 {
                return Err(BatchError::Malformed(
                    "record offset deltas are not sequential",
                ));
            }
            for header in record.headers() {
                header?;
            }
            seen += 1;
        }
        if seen != self.header.record_count {
            return Err(BatchError::Malformed("record count does not match records"));
        }
        Ok(())
    }

    /// The records, decoded lazily and without copying.
    pub fn records(&self) -> RecordIter<'a> {
        RecordIter {
            rest: &self.bytes[HEADER_LEN..],
            remaining: self.header.record_count,
            header: self.header,
        }
    }
}

/// Splits a buffer of consecutive batches (as a fetch returns them).
///
/// Stops with an error at the first batch that does not parse; a buffer that
/// ends in the middle of a batch yields [`BatchError::Truncated`] last.
#[derive(Debug, Clone)]
pub struct BatchIter<'a> {
    rest: &'a [u8],
}

impl<'a> BatchIter<'a> {
    /// Iterates the batches concatenated in `buf`, as a Fetch result or a
    /// group delivery carries them.
    pub fn new(buf: &'a [u8]) -> Self {
        BatchIter { rest: buf }
    }
}

impl<'a> Iterator for BatchIter<'a> {
    type Item = Result<BatchView<'a>, BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        match BatchView::parse(self.rest) {
            Ok(view) => {
                self.rest = &self.rest[view.as_bytes().len()..];
                Some(Ok(view))
            }
            Err(e) => {
                self.rest = &[];
                Some(Err(e))
            }
        }
    }
}

/// A record decoded from a batch; borrows key, value and headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    /// Absolute offset in the partition.
    pub offset: u64,
    /// Milliseconds since the Unix epoch (the batch's max timestamp under
    /// log-append time).
    pub timestamp: i64,
    /// The key, `None` for a null key (length -1).
    pub key: Option<&'a [u8]>,
    /// The value, `None` for a null value (length -1; a tombstone in Kafka terms).
    pub value: Option<&'a [u8]>,
    header_count: u32,
    header_bytes: &'a [u8],
}

impl<'a> Record<'a> {
    /// The record's headers, decoded lazily.
    pub fn headers(&self) -> HeaderIter<'a> {
        HeaderIter {
            rest: self.header_bytes,
            remaining: self.header_count,
        }
    }

    /// Value of the first header named `key`, if any.
    pub fn header(&self, key: &str) -> Option<&'a [u8]> {
        self.headers()
            .filter_map(Result::ok)
            .find(|(k, _)| *k == key)
            .and_then(|(_, v)| v)
    }
}

/// Iterator over the records of one batch.
#[derive(Debug, Clone)]
pub struct RecordIter<'a> {
    rest: &'a [u8],
    remaining: u32,
    header: BatchHeader,
}

impl<'a> Iterator for RecordIter<'a> {
    type Item = Result<Record<'a>, BatchError>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        let result = self.decode_one();
        if result.is_err() {
            self.remaining = 0;
        }
        Some(result)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(self.remaining as usize))
    }
}

impl<'a> RecordIter<'a> {
    #[inline]
    fn decode_one(&mut self) -> Result<Record<'a>, BatchError> {
        let mut cur = Cursor { buf: self.rest };
        let length = cur.varint()?;
        if length < 0 {
            return Err(BatchError::Malformed("negative record length"));
        }
        let body = cur.take(length as usize)?;
        self.rest = cur.buf;
        let mut cur = Cursor { buf: body };
        let _attributes = cur.take(1)?;
        let timestamp_delta = cur.varlong()?;
        let offset_delta = cur.varint()?;
        if offset_delta < 0 {
            return Err(BatchError::Malformed("negative offset delta"));
        }
        let key = cur.nullable_bytes()?;
        let value = cur.nullable_bytes()?;
        let header_count = cur.varint()?;
        if header_count < 0 {
            return Err(BatchError::Malformed("negative header count"));
        }
        let timestamp = match self.header.timestamp_type() {
            TimestampType::LogAppendTime => self.header.max_timestamp,
            TimestampType::CreateTime => self.header.base_timestamp.wrapping_add(timestamp_delta),
        };
        Ok(Record {
            offset: self.header.base_offset + offset_delta as u64,
            timestamp,
            key,
            value,
            header_count: header_count as u32,
            header_bytes: cur.buf,
        })
    }
}

/// Iterator over a record's `(key, value)` headers.
#[derive(Debug, Clone)]
pub struct HeaderIter<'a> {
    rest: &'a [u8],
    remaining: u32,
}

impl<'a> Iterator for HeaderIter<'a> {
    type Item = Result<(&'a str, Option<&'a [u8]>), BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        let mut cur = Cursor { buf: self.rest };
        let result = (|| {
            let key = cur
                .nullable_bytes()?
                .ok_or(BatchError::Malformed("null header key"))?;
            let key = std::str::from_utf8(key)
                .map_err(|_| BatchError::Malformed("header key is not UTF-8"))?;
            let value = cur.nullable_bytes()?;
            Ok((key, value))
        })();
        self.rest = cur.buf;
        if result.is_err() {
            self.remaining = 0;
        }
        Some(result)
    }
}

/// Builds one batch; records are encoded as they are added.
///
/// ```
/// use sluice_protocol::batch::{BatchBuilder, BatchView};
/// let mut b = BatchBuilder::new(1_700_000_000_000);
/// b.push(1_700_000_000_000, Some(b"key"), Some(b"value"), &[("tag", Some(b"red"))]);
/// let bytes = b.finish();
/// let view = BatchView::parse(&bytes).unwrap();
/// view.validate().unwrap();
/// let rec = view.records().next().unwrap().unwrap();
/// assert_eq!(rec.value, Some(&b"value"[..]));
/// assert_eq!(rec.header("tag"), Some(&b"red"[..]));
/// ```
#[derive(Debug, Clone)]
pub struct BatchBuilder {
    buf: BytesMut,
    base_timestamp: i64,
    max_timestamp: i64,
    count: u32,
    attributes: u16,
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
}

impl BatchBuilder {
    /// A builder whose record timestamps are stored relative to `base_timestamp` (ms).
    pub fn new(base_timestamp: i64) -> Self {
        Self::with_capacity(base_timestamp, 1024)
    }

    /// Like [`Self::new`] with room for `capacity` bytes of records.
    pub fn with_capacity(base_timestamp: i64, capacity: usize) -> Self {
        let mut buf = BytesMut::with_capacity(HEADER_LEN + capacity);
        buf.put_bytes(0, HEADER_LEN);
        BatchBuilder {
            buf,
            base_timestamp,
            max_timestamp: base_timestamp,
            count: 0,
            attributes: 0,
            producer_id: NO_PRODUCER_ID,
            producer_epoch: NO_PRODUCER_EPOCH,
            base_sequence: NO_SEQUENCE,
        }
    }

    /// Marks the batch as coming from an idempotent producer.
    pub fn producer(mut self, id: i64, epoch: i16, base_sequence: i32) -> Self {
        self.producer_id = id;
        self.producer_epoch = epoch;
        self.base_sequence = base_sequence;
        self
    }

    /// Marks the batch as part of a transaction.
    pub fn transactional(mut self, yes: bool) -> Self {
        if yes {
            self.attributes |= TRANSACTIONAL_BIT;
        } else {
            self.attributes &= !TRANSACTIONAL_BIT;
        }
        self
    }

    /// Appends one record.
    pub fn push(
        &mut self,
        timestamp: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[(&str, Option<&[u8]>)],
    ) {
        let timestamp_delta = timestamp.wrapping_sub(self.base_timestamp);
        let offset_delta = self.count as i32;
        let mut body_len = 1
            + varlong_len(timestamp_delta)
            + varint_len(offset_delta)
            + nullable_len(key)
            + nullable_len(value)
            + varint_len(headers.len() as i32);
        for (k, v) in headers {
            body_len += nullable_len(Some(k.as_bytes())) + nullable_len(*v);
        }
        self.buf.reserve(body_len + 5);
        put_varint(&mut self.buf, body_len as i32);
        self.buf.put_u8(0);
        put_varlong(&mut self.buf, timestamp_delta);
        put_varint(&mut self.buf, offset_delta);
        put_nullable(&mut self.buf, key);
        put_nullable(&mut self.buf, value);
        put_varint(&mut self.buf, headers.len() as i32);
        for (k, v) in headers {
            put_nullable(&mut self.buf, Some(k.as_bytes()));
            put_nullable(&mut self.buf, *v);
        }
        self.max_timestamp = self.max_timestamp.max(timestamp);
        self.count += 1;
    }

    /// Number of records so far.
    pub fn len(&self) -> usize {
        self.count as usize
    }

    /// Whether no record has been added yet (an empty builder cannot be finished into a valid batch).
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Size the batch will have when finished.
    pub fn size_in_bytes(&self) -> usize {
        self.buf.len()
    }

    /// Writes the header and CRC; base offset 0 until the broker assigns one.
    pub fn finish(mut self) -> Bytes {
        let len = self.buf.len();
        let header = &mut self.buf[..HEADER_LEN];
        header[0..8].copy_from_slice(&0i64.to_be_bytes());
        header[8..12].copy_from_slice(&((len - LOG_OVERHEAD) as i32).to_be_bytes());
        header[12..16].copy_from_slice(&(-1i32).to_be_bytes());
        header[16] = MAGIC;
        header[21..23].copy_from_slice(&self.attributes.to_be_bytes());
        let last_delta = self.count.saturating_sub(1) as i32;
        header[23..27].copy_from_slice(&last_delta.to_be_bytes());
        header[27..35].copy_from_slice(&self.base_timestamp.to_be_bytes());
        header[35..43].copy_from_slice(&self.max_timestamp.to_be_bytes());
        header[43..51].copy_from_slice(&self.producer_id.to_be_bytes());
        header[51..53].copy_from_slice(&self.producer_epoch.to_be_bytes());
        header[53..57].copy_from_slice(&self.base_sequence.to_be_bytes());
        header[57..61].copy_from_slice(&(self.count as i32).to_be_bytes());
        let crc = crc32c::crc32c(&self.buf[ATTRIBUTES_AT..]);
        self.buf[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
        self.buf.freeze()
    }
}

/// Sets the base offset of the batch at the start of `buf` (outside the CRC).
pub fn set_base_offset(buf: &mut [u8], base_offset: u64) {
    buf[BASE_OFFSET_AT..BASE_OFFSET_AT + 8].copy_from_slice(&base_offset.to_be_bytes());
}

/// Stamps the batch with the broker's append time: sets the timestamp-type
/// attribute and the max timestamp, then recomputes the CRC over the
/// unchanged records (as Kafka does; nothing is re-encoded).
pub fn set_log_append_time(buf: &mut [u8], timestamp: i64) {
    let attributes = u16::from_be_bytes([buf[ATTRIBUTES_AT], buf[ATTRIBUTES_AT + 1]]);
    buf[ATTRIBUTES_AT..ATTRIBUTES_AT + 2]
        .copy_from_slice(&(attributes | TIMESTAMP_TYPE_BIT).to_be_bytes());
    buf[MAX_TIMESTAMP_AT..MAX_TIMESTAMP_AT + 8].copy_from_slice(&timestamp.to_be_bytes());
    let crc = crc32c::crc32c(&buf[ATTRIBUTES_AT..]);
    buf[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
}

/// Renumbers an idempotent producer's batch: sets its epoch and base
/// sequence and recomputes the CRC (the records are unchanged). A client
/// does this when it restarts a partition's sequence after a batch failed.
pub fn set_producer_sequence(buf: &mut [u8], epoch: i16, base_sequence: i32) {
    buf[PRODUCER_EPOCH_AT..PRODUCER_EPOCH_AT + 2].copy_from_slice(&epoch.to_be_bytes());
    buf[BASE_SEQUENCE_AT..BASE_SEQUENCE_AT + 4].copy_from_slice(&base_sequence.to_be_bytes());
    let crc = crc32c::crc32c(&buf[ATTRIBUTES_AT..]);
    buf[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
}

fn be_i32(buf: &[u8], at: usize) -> i32 {
    i32::from_be_bytes(buf[at..at + 4].try_into().expect("4 bytes"))
}

fn be_u32(buf: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(buf[at..at + 4].try_into().expect("4 bytes"))
}

fn be_i64(buf: &[u8], at: usize) -> i64 {
    i64::from_be_bytes(buf[at..at + 8].try_into().expect("8 bytes"))
}

struct Cursor<'a> {
    buf: &'a [u8],
}

impl<'a> Cursor<'a> {
    #[inline]
    fn take(&mut self, n: usize) -> Result<&'a [u8], BatchError> {
        if self.buf.len() < n {
            return Err(BatchError::Malformed(
                "record runs past the end of the batch",
            ));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    #[inline(always)]
    fn unsigned(&mut self, max_bytes: usize) -> Result<u64, BatchError> {
        // Nearly every varint in a record (deltas, lengths) fits in one or
        // two bytes: skip the loop for them. It matters most inside
        // WebAssembly guests, where every loop iteration also checks the
        // epoch deadline.
        match *self.buf {
            [b, ..] if b < 0x80 => {
                self.buf = &self.buf[1..];
                return Ok(u64::from(b));
            }
            // Two bytes covers record lengths up to 16 KiB.
            [b0, b1, ..] if b1 < 0x80 => {
                self.buf = &self.buf[2..];
                return Ok(u64::from(b0 & 0x7f) | (u64::from(b1) << 7));
            }
            _ => {}
        }
        self.unsigned_slow(max_bytes)
    }

    /// Varints of three bytes or more (and malformed ones): out of line,
    /// so the inlined fast path stays small and call-free (in a guest every
    /// call also checks the epoch deadline).
    #[cold]
    #[inline(never)]
    fn unsigned_slow(&mut self, max_bytes: usize) -> Result<u64, BatchError> {
        let mut value = 0u64;
        for i in 0..max_bytes {
            let Some((&b, rest)) = self.buf.split_first() else {
                return Err(BatchError::Malformed(
                    "varint runs past the end of the batch",
                ));
            };
            self.buf = rest;
            value |= ((b & 0x7f) as u64) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(BatchError::Malformed("varint too long"))
    }

    #[inline]
    fn varint(&mut self) -> Result<i32, BatchError> {
        let raw = self.unsigned(5)? as u32;
        Ok(((raw >> 1) as i32) ^ -((raw & 1) as i32))
    }

    #[inline]
    fn varlong(&mut self) -> Result<i64, BatchError> {
        let raw = self.unsigned(10)?;
        Ok(((raw >> 1) as i64) ^ -((raw & 1) as i64))
    }

    #[inline]
    fn nullable_bytes(&mut self) -> Result<Option<&'a [u8]>, BatchError> {
        match self.varint()? {
            -1 => Ok(None),
            n if n < 0 => Err(BatchError::Malformed("negative length")),
            n => self.take(n as usize).map(Some),
        }
    }
}

// Zig-zag varints as Kafka writes them. Kept here rather than pulled from a
// crate: they are a few lines on the hottest encode path.
fn put_unsigned(buf: &mut BytesMut, mut v: u64) {
    while v >= 0x80 {
        buf.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    buf.put_u8(v as u8);
}

fn put_varint(buf: &mut BytesMut, v: i32) {
    put_unsigned(buf, ((v << 1) ^ (v >> 31)) as u32 as u64);
}

fn put_varlong(buf: &mut BytesMut, v: i64) {
    put_unsigned(buf, ((v << 1) ^ (v >> 63)) as u64);
}

fn unsigned_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

fn varint_len(v: i32) -> usize {
    unsigned_len(((v << 1) ^ (v >> 31)) as u32 as u64)
}

fn varlong_len(v: i64) -> usize {
    unsigned_len(((v << 1) ^ (v >> 63)) as u64)
}

fn nullable_len(v: Option<&[u8]>) -> usize {
    match v {
        None => varint_len(-1),
        Some(b) => varint_len(b.len() as i32) + b.len(),
    }
}

fn put_nullable(buf: &mut BytesMut, v: Option<&[u8]>) {
    match v {
        None => put_varint(buf, -1),
        Some(b) => {
            put_varint(buf, b.len() as i32);
            buf.put_slice(b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    type OwnedRecord = (
        i64,
        Option<Vec<u8>>,
        Option<Vec<u8>>,
        Vec<(String, Option<Vec<u8>>)>,
    );

    fn build(base_ts: i64, records: &[OwnedRecord]) -> Bytes {
        let mut b = BatchBuilder::new(base_ts);
        for (ts, k, v, h) in records {
            let headers: Vec<(&str, Option<&[u8]>)> =
                h.iter().map(|(k, v)| (k.as_str(), v.as_deref())).collect();
            b.push(*ts, k.as_deref(), v.as_deref(), &headers);
        }
        b.finish()
    }

    fn record_strategy() -> impl Strategy<Value = OwnedRecord> {
        (
            -1_000_000i64..1_000_000,
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40)),
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..300)),
            proptest::collection::vec(
                (
                    "[a-z]{0,8}",
                    proptest::option::of(proptest::collection::vec(any::<u8>(), 0..20)),
                ),
                0..4,
            ),
        )
    }

    proptest! {
        #[test]
        fn round_trip(base in 0i64..2_000_000_000_000, base_offset in 0u64..1 << 50,
                      records in proptest::collection::vec(record_strategy(), 1..20)) {
            let records: Vec<OwnedRecord> = records.into_iter()
                .map(|(d, k, v, h)| (base + d, k, v, h)).collect();
            let mut bytes = build(base, &records).to_vec();
            set_base_offset(&mut bytes, base_offset);
            let view = BatchView::parse(&bytes).unwrap();
            view.validate().unwrap();
            prop_assert_eq!(view.header().record_count as usize, records.len());
            prop_assert_eq!(view.header().base_offset, base_offset);
            prop_assert_eq!(view.header().max_timestamp,
                records.iter().map(|r| r.0).max().unwrap().max(base));
            for (i, (rec, want)) in view.records().zip(&records).enumerate() {
                let rec = rec.unwrap();
                prop_assert_eq!(rec.offset, base_offset + i as u64);
                prop_assert_eq!(rec.timestamp, want.0);
                prop_assert_eq!(rec.key, want.1.as_deref());
                prop_assert_eq!(rec.value, want.2.as_deref());
                let headers: Vec<(String, Option<Vec<u8>>)> = rec.headers()
                    .map(|h| h.unwrap()).map(|(k, v)| (k.to_string(), v.map(<[u8]>::to_vec))).collect();
                prop_assert_eq!(&headers, &want.3);
            }
        }

        #[test]
        fn any_flipped_byte_under_the_crc_is_detected(
            records in proptest::collection::vec(record_strategy(), 1..5),
            pos in any::<prop::sample::Index>(), bit in 0u8..8) {
            let mut bytes = build(0, &records).to_vec();
            let at = ATTRIBUTES_AT + pos.index(bytes.len() - ATTRIBUTES_AT);
            bytes[at] ^= 1 << bit;
            let err = BatchView::parse(&bytes).and_then(|v| v.validate());
            prop_assert!(err.is_err());
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            for view in BatchIter::new(&bytes).flatten() {
                let _ = view.validate();
                for r in view.records().flatten() {
                    let _ = r.headers().count();
                }
            }
        }

        #[test]
        fn varints_round_trip(v in any::<i32>(), l in any::<i64>()) {
            let mut buf = BytesMut::new();
            put_varint(&mut buf, v);
            prop_assert_eq!(buf.len(), varint_len(v));
            put_varlong(&mut buf, l);
            prop_assert_eq!(buf.len() - varint_len(v), varlong_len(l));
            let mut cur = Cursor { buf: &buf };
            prop_assert_eq!(cur.varint().unwrap(), v);
            prop_assert_eq!(cur.varlong().unwrap(), l);
        }
    }

    #[test]
    fn kafka_reference_varints() {
        // Values from Kafka's ByteUtilsTest.
        let mut buf = BytesMut::new();
        put_varint(&mut buf, 0);
        put_varint(&mut buf, -1);
        put_varint(&mut buf, 1);
        put_varint(&mut buf, 63);
        put_varint(&mut buf, -64);
        put_varint(&mut buf, 64);
        assert_eq!(&buf[..], &[0x00, 0x01, 0x02, 0x7e, 0x7f, 0x80, 0x01]);
    }

    #[test]
    fn header_layout_matches_kafka() {
        let mut b = BatchBuilder::new(1000).producer(7, 3, 42);
        b.push(1005, None, Some(b"v"), &[]);
        b.push(1002, Some(b"k"), None, &[]);
        let bytes = b.finish();
        let h = BatchHeader::parse(&bytes).unwrap();
        assert_eq!(h.magic, 2);
        assert_eq!(h.total_len(), bytes.len());
        assert_eq!(h.record_count, 2);
        assert_eq!(h.last_offset_delta, 1);
        assert_eq!((h.base_timestamp, h.max_timestamp), (1000, 1005));
        assert_eq!(
            (h.producer_id, h.producer_epoch, h.base_sequence),
            (7, 3, 42)
        );
        assert_eq!(h.crc, crc32c::crc32c(&bytes[21..]));
        assert_eq!(h.timestamp_type(), TimestampType::CreateTime);
    }

    #[test]
    fn log_append_time_rewrites_header_only() {
        let mut b = BatchBuilder::new(1000);
        b.push(1000, None, Some(b"a"), &[]);
        b.push(1001, None, Some(b"b"), &[]);
        let mut bytes = b.finish().to_vec();
        let records_before = bytes[HEADER_LEN..].to_vec();
        set_log_append_time(&mut bytes, 9999);
        assert_eq!(&bytes[HEADER_LEN..], &records_before[..]);
        let view = BatchView::parse(&bytes).unwrap();
        view.validate().unwrap();
        assert_eq!(view.header().timestamp_type(), TimestampType::LogAppendTime);
        assert!(view.records().all(|r| r.unwrap().timestamp == 9999));
    }

    #[test]
    fn typed_errors() {
        let mut b = BatchBuilder::new(0);
        b.push(0, None, Some(b"x"), &[]);
        let good = b.finish().to_vec();

        let mut bad_magic = good.clone();
        bad_magic[MAGIC_AT] = 1;
        assert_eq!(
            BatchView::parse(&bad_magic).unwrap_err(),
            BatchError::UnknownMagic(1)
        );

        assert!(matches!(
            BatchView::parse(&good[..good.len() - 1]).unwrap_err(),
            BatchError::Truncated { .. }
        ));
        assert!(matches!(
            BatchView::parse(&good[..10]).unwrap_err(),
            BatchError::Truncated { .. }
        ));

        let mut bad_crc = good.clone();
        *bad_crc.last_mut().unwrap() ^= 0xff;
        assert!(matches!(
            BatchView::parse(&bad_crc).unwrap().validate().unwrap_err(),
            BatchError::CrcMismatch { .. }
        ));

        let mut compressed = good.clone();
        compressed[ATTRIBUTES_AT + 1] |= 1;
        let crc = crc32c::crc32c(&compressed[ATTRIBUTES_AT..]);
        compressed[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
        assert_eq!(
            BatchView::parse(&compressed)
                .unwrap()
                .validate()
                .unwrap_err(),
            BatchError::UnsupportedCompression(1)
        );

        let empty = BatchBuilder::new(0).finish();
        assert!(matches!(
            BatchView::parse(&empty).unwrap().validate().unwrap_err(),
            BatchError::Malformed(_)
        ));
    }

    #[test]
    fn batch_iter_splits_concatenated_batches() {
        let mut all = Vec::new();
        for i in 0..3u64 {
            let mut b = BatchBuilder::new(0);
            b.push(0, None, Some(&[i as u8]), &[]);
            let mut bytes = b.finish().to_vec();
            set_base_offset(&mut bytes, i);
            all.extend_from_slice(&bytes);
        }
        let offsets: Vec<u64> = BatchIter::new(&all)
            .map(|b| b.unwrap().header().base_offset)
            .collect();
        assert_eq!(offsets, vec![0, 1, 2]);
        let truncated: Vec<_> = BatchIter::new(&all[..all.len() - 3]).collect();
        assert!(truncated.last().unwrap().is_err());
    }
}

#[cfg(test)]
mod renumber_tests {
    use super::*;

    #[test]
    fn renumbering_keeps_the_batch_valid() {
        let mut b = BatchBuilder::new(5).producer(3, 0, 10);
        b.push(5, Some(b"k"), Some(b"v"), &[]);
        b.push(6, None, Some(b"w"), &[]);
        let mut buf = b.finish().to_vec();
        set_producer_sequence(&mut buf, 2, 0);
        let view = BatchView::parse(&buf).unwrap();
        view.validate().unwrap();
        let h = view.header();
        assert_eq!(
            (h.producer_id, h.producer_epoch, h.base_sequence),
            (3, 2, 0)
        );
    }
}
