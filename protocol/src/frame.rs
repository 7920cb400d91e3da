//! Framing: how requests and responses are cut out of a byte stream.
//!
//! Every message on a Sluice stream is one frame, all integers big-endian:
//!
//! ```text
//! u32 length      bytes that follow this field: 6 + payload length
//! u16 op          what the frame asks for or answers
//! u32 request id  chosen by the client, echoed in the response
//! …   payload     length - 6 bytes
//! ```
//!
//! [`FrameDecoder`] is sans-IO: the I/O shell pushes whatever bytes arrived
//! and pops whole frames. It refuses a frame whose declared length is over
//! its limit as soon as the length field is in, before buffering any of the
//! payload, so a peer cannot make the broker allocate what it declares.
//! The meaning of ops and payloads is defined elsewhere; this layer only cuts.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Bytes of `length`, `op` and `request id`.
pub const HEADER_LEN: usize = 10;
/// Bytes of `op` and `request id`, which `length` counts.
const LENGTH_COVERED_HEADER: usize = 6;
/// Default largest frame (header included) a decoder accepts.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 16 << 20;

/// One frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The op: a request op, a response op (request op with [`crate::ops::RESPONSE_BIT`]) or [`crate::ops::ERROR_OP`].
    pub op: u16,
    /// Chosen by the client, echoed in the response; unique only among a stream's outstanding requests (0 is reserved for stream errors).
    pub request_id: u32,
    /// The op-specific payload (control payload or, for produce and fetch, record batches inside it).
    pub payload: Bytes,
}

impl Frame {
    /// Size of the frame on the wire.
    pub fn encoded_len(&self) -> usize {
        HEADER_LEN + self.payload.len()
    }

    /// Appends the frame to `out`.
    pub fn encode(&self, out: &mut BytesMut) {
        encode(self.op, self.request_id, &self.payload, out);
    }
}

/// Appends a frame with this op, request id and payload to `out`.
pub fn encode(op: u16, request_id: u32, payload: &[u8], out: &mut BytesMut) {
    out.reserve(HEADER_LEN + payload.len());
    out.put_u32((LENGTH_COVERED_HEADER + payload.len()) as u32);
    out.put_u16(op);
    out.put_u32(request_id);
    out.put_slice(payload);
}

/// Why bytes are not a valid frame. Either way the stream is unusable: the
/// decoder no longer knows where the next frame starts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The length field announces a frame over the limit; refused before the payload is buffered.
    #[error("frame of {size} bytes is over the limit of {max} bytes")]
    TooLarge {
        /// The frame's total size, header included.
        size: usize,
        /// The decoder's limit.
        max: usize,
    },
    /// The length field is below 6, the bytes of op and request id it must cover.
    #[error("frame length {0} is shorter than the 6 bytes of op and request id")]
    TooShort(u32),
}

/// Cuts frames out of a byte stream (see the module docs).
#[derive(Debug)]
pub struct FrameDecoder {
    buf: BytesMut,
    max_frame_bytes: usize,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        FrameDecoder::new(DEFAULT_MAX_FRAME_BYTES)
    }
}

impl FrameDecoder {
    /// A decoder that refuses frames larger than `max_frame_bytes` (header
    /// included).
    pub fn new(max_frame_bytes: usize) -> Self {
        FrameDecoder {
            buf: BytesMut::new(),
            max_frame_bytes,
        }
    }

    /// Adds bytes read from the stream.
    pub fn extend(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes received but not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next whole frame, `None` if more bytes are needed. The payload
    /// shares the decoder's buffer: no copy.
    pub fn decode(&mut self) -> Result<Option<Frame>, FrameError> {
        if self.buf.len() < 4 {
            return Ok(None);
        }
        let length = u32::from_be_bytes(self.buf[..4].try_into().expect("4 bytes"));
        let size = 4 + length as usize;
        if size > self.max_frame_bytes {
            return Err(FrameError::TooLarge {
                size,
                max: self.max_frame_bytes,
            });
        }
        if (length as usize) < LENGTH_COVERED_HEADER {
            return Err(FrameError::TooShort(length));
        }
        if self.buf.len() < size {
            self.buf.reserve(size - self.buf.len());
            return Ok(None);
        }
        let mut frame = self.buf.split_to(size);
        frame.advance(4);
        let op = frame.get_u16();
        let request_id = frame.get_u32();
        Ok(Some(Frame {
            op,
            request_id,
            payload: frame.freeze(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn frames() -> impl Strategy<Value = Vec<Frame>> {
        proptest::collection::vec(
            (
                any::<u16>(),
                any::<u32>(),
                proptest::collection::vec(any::<u8>(), 0..600),
            )
                .prop_map(|(op, request_id, payload)| Frame {
                    op,
                    request_id,
                    payload: Bytes::from(payload),
                }),
            0..20,
        )
    }

    proptest! {
        #[test]
        fn frames_survive_any_split_of_the_stream(frames in frames(), cuts in proptest::collection::vec(1usize..700, 0..40)) {
            let mut wire = BytesMut::new();
            for f in &frames {
                f.encode(&mut wire);
            }
            prop_assert_eq!(wire.len(), frames.iter().map(Frame::encoded_len).sum::<usize>());
            let mut decoder = FrameDecoder::default();
            let mut got = Vec::new();
            let mut rest = &wire[..];
            let mut cuts = cuts.into_iter();
            while !rest.is_empty() {
                let n = cuts.next().unwrap_or(rest.len()).min(rest.len());
                decoder.extend(&rest[..n]);
                rest = &rest[n..];
                while let Some(frame) = decoder.decode().unwrap() {
                    got.push(frame);
                }
            }
            prop_assert_eq!(got, frames);
            prop_assert_eq!(decoder.buffered(), 0);
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..100)) {
            let mut decoder = FrameDecoder::new(64);
            decoder.extend(&bytes);
            while let Ok(Some(_)) = decoder.decode() {}
        }
    }

    #[test]
    fn layout_is_length_op_request_id_payload() {
        let mut out = BytesMut::new();
        encode(0x0102, 0x0304_0506, b"xy", &mut out);
        assert_eq!(&out[..], &[0, 0, 0, 8, 1, 2, 3, 4, 5, 6, b'x', b'y']);
    }

    #[test]
    fn an_oversized_frame_is_refused_from_its_length_alone() {
        let mut decoder = FrameDecoder::new(100);
        decoder.extend(&1_000_000u32.to_be_bytes());
        assert_eq!(
            decoder.decode(),
            Err(FrameError::TooLarge {
                size: 1_000_004,
                max: 100
            })
        );
        assert!(
            decoder.buf.capacity() < 1000,
            "nothing of the payload was reserved"
        );
    }

    #[test]
    fn a_length_shorter_than_the_header_is_refused() {
        let mut decoder = FrameDecoder::default();
        decoder.extend(&[0, 0, 0, 5, 0, 0, 0, 0, 0]);
        assert_eq!(decoder.decode(), Err(FrameError::TooShort(5)));
    }

    #[test]
    fn partial_frames_wait_for_more_bytes() {
        let mut wire = BytesMut::new();
        encode(7, 9, b"hello", &mut wire);
        let mut decoder = FrameDecoder::default();
        decoder.extend(&wire[..HEADER_LEN + 2]);
        assert_eq!(decoder.decode(), Ok(None));
        decoder.extend(&wire[HEADER_LEN + 2..]);
        let frame = decoder.decode().unwrap().unwrap();
        assert_eq!(
            (frame.op, frame.request_id, &frame.payload[..]),
            (7, 9, &b"hello"[..])
        );
    }
}
