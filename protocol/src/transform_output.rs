//! The transform output buffer: what a transform function returns.
//!
//! A transform maps each input message to zero or more output messages, or
//! reports that the input failed. Its answer crosses the WebAssembly boundary
//! as one flat byte buffer (lowering a typed list costs about 80 times more
//! per message), written by the guest SDK and read by the engine without
//! copying. All integers are little-endian, the byte order of WebAssembly.
//!
//! ```text
//! buffer  := entry*
//! entry   := kind:u8 input:u32 body
//! kind 0  (message) body := topic-len:u16 topic
//!                           key-len:i32 key        (-1: no key)
//!                           value-len:u32 value
//!                           header-count:u16 (name-len:u16 name value-len:u32 value)*
//! kind 1  (failure) body := reason-len:u32 reason
//! ```
//!
//! `input` is the index of the input message in the batch (0-based);
//! entries come in input order. An empty `topic` means the deployment's
//! output topic. Strings are UTF-8.
//!
//! ```
//! use sluice_protocol::transform_output::{OutputEntry, OutputReader, OutputWriter};
//! let mut w = OutputWriter::default();
//! w.message(0, "", Some(b"k"), b"v", &[("sluice.tag", b"red")]);
//! w.failure(1, "not JSON");
//! let buf = w.finish();
//! let entries: Vec<_> = OutputReader::new(&buf).collect::<Result<_, _>>().unwrap();
//! assert!(matches!(entries[0], OutputEntry::Message { input: 0, value: b"v", .. }));
//! assert!(matches!(entries[1], OutputEntry::Failure { input: 1, reason: "not JSON" }));
//! ```

use thiserror::Error;

const KIND_MESSAGE: u8 = 0;
const KIND_FAILURE: u8 = 1;

/// Why a transform output buffer could not be read.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum OutputError {
    /// The buffer ends inside an entry starting at this byte.
    #[error("transform output ends inside an entry at byte {0}")]
    Truncated(usize),
    /// An entry's kind byte is neither message nor failure.
    #[error("transform output has unknown entry kind {kind} at byte {at}")]
    UnknownKind {
        /// The kind byte found (0 message and 1 failure are known).
        kind: u8,
        /// Its position in the buffer.
        at: usize,
    },
    /// A topic, header name or reason at this byte is not UTF-8.
    #[error("transform output has a string that is not UTF-8 at byte {0}")]
    NotUtf8(usize),
    /// A key length at this byte is negative but not -1 (null).
    #[error("transform output has a negative key length other than -1 at byte {0}")]
    BadKeyLength(usize),
}

/// One entry of the buffer, borrowing from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutputEntry<'a> {
    /// An output message produced for input `input`.
    Message {
        /// Index of the input message (in the batch handed to the call) this output came from.
        input: u32,
        /// Destination topic; empty means the deployment's output topic.
        topic: &'a str,
        /// The key, `None` for a null key.
        key: Option<&'a [u8]>,
        /// The value.
        value: &'a [u8],
        /// Headers to add to the message (read lazily from the buffer).
        headers: OutputHeaders<'a>,
    },
    /// Input `input` failed; `reason` says why.
    Failure {
        /// Index of the failed input message in the batch.
        input: u32,
        /// Why, as the function said; kept with the failure for the operator.
        reason: &'a str,
    },
}

/// Appends entries to an output buffer.
#[derive(Debug, Default, Clone)]
pub struct OutputWriter {
    buf: Vec<u8>,
}

impl OutputWriter {
    /// A writer whose buffer starts with room for `bytes`.
    pub fn with_capacity(bytes: usize) -> Self {
        Self {
            buf: Vec::with_capacity(bytes),
        }
    }

    /// Appends an output message for input `input`.
    ///
    /// # Panics
    /// If the topic, a header name or the number of headers exceeds
    /// `u16::MAX`, or the key or value exceeds 2 GiB.
    pub fn message(
        &mut self,
        input: u32,
        topic: &str,
        key: Option<&[u8]>,
        value: &[u8],
        headers: &[(&str, &[u8])],
    ) {
        self.buf.push(KIND_MESSAGE);
        self.buf.extend_from_slice(&input.to_le_bytes());
        self.str16(topic);
        match key {
            Some(key) => {
                let len = i32::try_from(key.len()).expect("key longer than 2 GiB");
                self.buf.extend_from_slice(&len.to_le_bytes());
                self.buf.extend_from_slice(key);
            }
            None => self.buf.extend_from_slice(&(-1i32).to_le_bytes()),
        }
        self.bytes32(value);
        let count = u16::try_from(headers.len()).expect("more than 65535 headers");
        self.buf.extend_from_slice(&count.to_le_bytes());
        for (name, value) in headers {
            self.str16(name);
            self.bytes32(value);
        }
    }

    /// Records that input `input` failed.
    pub fn failure(&mut self, input: u32, reason: &str) {
        self.buf.push(KIND_FAILURE);
        self.buf.extend_from_slice(&input.to_le_bytes());
        self.bytes32(reason.as_bytes());
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether nothing was written.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// The finished buffer.
    pub fn finish(self) -> Vec<u8> {
        self.buf
    }

    fn str16(&mut self, s: &str) {
        let len = u16::try_from(s.len()).expect("string longer than 65535 bytes");
        self.buf.extend_from_slice(&len.to_le_bytes());
        self.buf.extend_from_slice(s.as_bytes());
    }

    fn bytes32(&mut self, b: &[u8]) {
        let len = u32::try_from(b.len()).expect("bytes longer than 4 GiB");
        self.buf.extend_from_slice(&len.to_le_bytes());
        self.buf.extend_from_slice(b);
    }
}

/// Iterates over the entries of an output buffer; stops after the first
/// error.
#[derive(Debug, Clone)]
pub struct OutputReader<'a> {
    cur: Cursor<'a>,
    failed: bool,
}

impl<'a> OutputReader<'a> {
    /// Reads the entries of a buffer a transform returned.
    pub fn new(buf: &'a [u8]) -> Self {
        Self {
            cur: Cursor { buf, pos: 0 },
            failed: false,
        }
    }

    fn entry(&mut self) -> Result<OutputEntry<'a>, OutputError> {
        let at = self.cur.pos;
        let kind = self.cur.u8()?;
        let input = self.cur.u32()?;
        match kind {
            KIND_MESSAGE => {
                let topic = self.cur.str16()?;
                let key_at = self.cur.pos;
                let key = match self.cur.i32()? {
                    -1 => None,
                    len if len < 0 => return Err(OutputError::BadKeyLength(key_at)),
                    len => Some(self.cur.take(len as usize)?),
                };
                let value = self.cur.bytes32()?;
                let count = self.cur.u16()?;
                let start = self.cur.pos;
                for _ in 0..count {
                    self.cur.str16()?;
                    self.cur.bytes32()?;
                }
                let headers = OutputHeaders {
                    cur: Cursor {
                        buf: &self.cur.buf[..self.cur.pos],
                        pos: start,
                    },
                    remaining: count,
                };
                Ok(OutputEntry::Message {
                    input,
                    topic,
                    key,
                    value,
                    headers,
                })
            }
            KIND_FAILURE => {
                let reason_at = self.cur.pos + 4;
                let reason = std::str::from_utf8(self.cur.bytes32()?)
                    .map_err(|_| OutputError::NotUtf8(reason_at))?;
                Ok(OutputEntry::Failure { input, reason })
            }
            kind => Err(OutputError::UnknownKind { kind, at }),
        }
    }
}

impl<'a> Iterator for OutputReader<'a> {
    type Item = Result<OutputEntry<'a>, OutputError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.cur.pos == self.cur.buf.len() {
            return None;
        }
        let entry = self.entry();
        self.failed = entry.is_err();
        Some(entry)
    }
}

/// The headers of one output message, already validated by the reader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputHeaders<'a> {
    cur: Cursor<'a>,
    remaining: u16,
}

impl<'a> OutputHeaders<'a> {
    /// Number of headers.
    pub fn len(&self) -> usize {
        usize::from(self.remaining)
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.remaining == 0
    }
}

impl<'a> Iterator for OutputHeaders<'a> {
    type Item = (&'a str, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        // The reader checked every header before handing these out.
        let name = self.cur.str16().ok()?;
        let value = self.cur.bytes32().ok()?;
        Some((name, value))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], OutputError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|end| *end <= self.buf.len())
            .ok_or(OutputError::Truncated(self.pos))?;
        let out = &self.buf[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], OutputError> {
        Ok(self.take(N)?.try_into().expect("took N bytes"))
    }

    fn u8(&mut self) -> Result<u8, OutputError> {
        Ok(self.array::<1>()?[0])
    }

    fn u16(&mut self) -> Result<u16, OutputError> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, OutputError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn i32(&mut self) -> Result<i32, OutputError> {
        Ok(i32::from_le_bytes(self.array()?))
    }

    fn str16(&mut self) -> Result<&'a str, OutputError> {
        let len = self.u16()?;
        let at = self.pos;
        std::str::from_utf8(self.take(usize::from(len))?).map_err(|_| OutputError::NotUtf8(at))
    }

    fn bytes32(&mut self) -> Result<&'a [u8], OutputError> {
        let len = self.u32()?;
        self.take(len as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Entry {
        Message {
            topic: String,
            key: Option<Vec<u8>>,
            value: Vec<u8>,
            headers: Vec<(String, Vec<u8>)>,
        },
        Failure(String),
    }

    fn entry() -> impl Strategy<Value = Entry> {
        prop_oneof![
            (
                "[a-z.]{0,12}",
                proptest::option::of(proptest::collection::vec(any::<u8>(), 0..20)),
                proptest::collection::vec(any::<u8>(), 0..50),
                proptest::collection::vec(
                    ("[a-z]{1,8}", proptest::collection::vec(any::<u8>(), 0..8)),
                    0..4
                ),
            )
                .prop_map(|(topic, key, value, headers)| Entry::Message {
                    topic,
                    key,
                    value,
                    headers
                }),
            "\\PC{0,20}".prop_map(Entry::Failure),
        ]
    }

    proptest! {
        #[test]
        fn round_trips(entries in proptest::collection::vec(entry(), 0..20)) {
            let mut w = OutputWriter::default();
            for (i, e) in entries.iter().enumerate() {
                match e {
                    Entry::Message { topic, key, value, headers } => {
                        let hs: Vec<(&str, &[u8])> = headers.iter().map(|(n, v)| (n.as_str(), v.as_slice())).collect();
                        w.message(i as u32, topic, key.as_deref(), value, &hs);
                    }
                    Entry::Failure(reason) => w.failure(i as u32, reason),
                }
            }
            let buf = w.finish();
            let read: Vec<_> = OutputReader::new(&buf).collect::<Result<_, _>>().unwrap();
            prop_assert_eq!(read.len(), entries.len());
            for (i, (got, want)) in read.iter().zip(&entries).enumerate() {
                match (got, want) {
                    (OutputEntry::Message { input, topic, key, value, headers }, Entry::Message { topic: t, key: k, value: v, headers: h }) => {
                        prop_assert_eq!(*input as usize, i);
                        prop_assert_eq!(*topic, t.as_str());
                        prop_assert_eq!(*key, k.as_deref());
                        prop_assert_eq!(*value, v.as_slice());
                        let got_headers: Vec<(String, Vec<u8>)> = headers.clone().map(|(n, v)| (n.to_owned(), v.to_vec())).collect();
                        prop_assert_eq!(&got_headers, h);
                    }
                    (OutputEntry::Failure { input, reason }, Entry::Failure(r)) => {
                        prop_assert_eq!(*input as usize, i);
                        prop_assert_eq!(*reason, r.as_str());
                    }
                    _ => prop_assert!(false, "kind mismatch"),
                }
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(buf in proptest::collection::vec(any::<u8>(), 0..200)) {
            for entry in OutputReader::new(&buf) {
                if let Ok(OutputEntry::Message { headers, .. }) = entry {
                    headers.for_each(drop);
                }
            }
        }
    }

    #[test]
    fn truncated_and_bad_input_are_clear_errors() {
        let mut w = OutputWriter::default();
        w.message(0, "t", None, b"value", &[]);
        let buf = w.finish();
        let err = OutputReader::new(&buf[..buf.len() - 1])
            .next()
            .unwrap()
            .unwrap_err();
        assert!(matches!(err, OutputError::Truncated(_)), "{err}");
        let err = OutputReader::new(&[9, 0, 0, 0, 0])
            .next()
            .unwrap()
            .unwrap_err();
        assert_eq!(err, OutputError::UnknownKind { kind: 9, at: 0 });
        let mut bad_key = vec![0, 0, 0, 0, 0, 0, 0];
        bad_key.extend_from_slice(&(-2i32).to_le_bytes());
        let err = OutputReader::new(&bad_key).next().unwrap().unwrap_err();
        assert_eq!(err, OutputError::BadKeyLength(7));
        let mut reader = OutputReader::new(&[1, 0, 0, 0, 0, 2, 0, 0, 0, 0xff, 0xfe]);
        assert_eq!(reader.next(), Some(Err(OutputError::NotUtf8(9))));
        assert_eq!(reader.next(), None, "the reader stops after an error");
    }
}
