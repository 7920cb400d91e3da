//! The primitive encoding of control payloads: big-endian integers, strings,
//! byte strings and arrays, each with an explicit length.
//!
//! | type | encoding |
//! |---|---|
//! | `u8 u16 u32 u64 i16 i32 i64` | fixed width, big-endian |
//! | `bool` | `u8`, 0 or 1 (anything else is malformed) |
//! | `string` | `u16` byte length, then that many bytes of UTF-8 |
//! | `bytes` | `u32` byte length, then the bytes |
//! | `array<T>` | `u32` element count, then the elements |
//! | `option<T>` | `bool`, then the value when true |
//!
//! Decoding never trusts a declared length: every read is checked against
//! what is left, and array counts are bounded by the bytes remaining, so a
//! hostile count cannot make the decoder allocate.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Why a payload could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The payload ends before a field does.
    #[error("payload ends early: needed {needed} more bytes for {what}")]
    Truncated {
        /// The field being read.
        what: &'static str,
        /// Bytes missing.
        needed: usize,
    },
    /// A `string` field holds bytes that are not UTF-8.
    #[error("string field is not valid UTF-8")]
    InvalidUtf8,
    /// A field holds a value outside its range (a bool that is not 0 or 1, an unknown enum tag).
    #[error("invalid value for {what}: {value}")]
    InvalidValue {
        /// The field being read.
        what: &'static str,
        /// The value found, widened to `i64`.
        value: i64,
    },
    /// Bytes are left after the whole payload was read (the count is in the variant).
    #[error("{0} bytes left over after the payload")]
    TrailingBytes(usize),
    /// A request frame's op is not in the op table.
    #[error("unknown op {0:#06x}")]
    UnknownOp(u16),
}

/// Reads primitives from a payload.
#[derive(Debug)]
pub struct Reader {
    buf: Bytes,
}

impl Reader {
    /// Reads from a whole payload (the frame's payload bytes).
    pub fn new(buf: Bytes) -> Self {
        Reader { buf }
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.buf.remaining()
    }

    fn need(&self, what: &'static str, n: usize) -> Result<(), DecodeError> {
        if self.buf.remaining() < n {
            return Err(DecodeError::Truncated {
                what,
                needed: n - self.buf.remaining(),
            });
        }
        Ok(())
    }

    /// Reads a `u8`; `what` names the field in a [`DecodeError`].
    pub fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        self.need(what, 1)?;
        Ok(self.buf.get_u8())
    }

    /// Reads a `bool` (`0` or `1`; anything else is [`DecodeError::InvalidValue`]).
    pub fn bool(&mut self, what: &'static str) -> Result<bool, DecodeError> {
        match self.u8(what)? {
            0 => Ok(false),
            1 => Ok(true),
            v => Err(DecodeError::InvalidValue {
                what,
                value: v as i64,
            }),
        }
    }

    /// Reads a big-endian `u16`.
    pub fn u16(&mut self, what: &'static str) -> Result<u16, DecodeError> {
        self.need(what, 2)?;
        Ok(self.buf.get_u16())
    }

    /// Reads a big-endian `i16`.
    pub fn i16(&mut self, what: &'static str) -> Result<i16, DecodeError> {
        self.need(what, 2)?;
        Ok(self.buf.get_i16())
    }

    /// Reads a big-endian `u32`.
    pub fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        self.need(what, 4)?;
        Ok(self.buf.get_u32())
    }

    /// Reads a big-endian `u64`.
    pub fn u64(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        self.need(what, 8)?;
        Ok(self.buf.get_u64())
    }

    /// Reads a big-endian `i64`.
    pub fn i64(&mut self, what: &'static str) -> Result<i64, DecodeError> {
        self.need(what, 8)?;
        Ok(self.buf.get_i64())
    }

    /// Reads a `string`: a `u16` byte length, then UTF-8 (invalid UTF-8 is [`DecodeError::InvalidUtf8`]).
    pub fn string(&mut self, what: &'static str) -> Result<String, DecodeError> {
        let len = self.u16(what)? as usize;
        self.need(what, len)?;
        let bytes = self.buf.split_to(len);
        String::from_utf8(bytes.to_vec()).map_err(|_| DecodeError::InvalidUtf8)
    }

    /// A length-prefixed byte string, sharing the payload's buffer.
    pub fn bytes(&mut self, what: &'static str) -> Result<Bytes, DecodeError> {
        let len = self.u32(what)? as usize;
        self.need(what, len)?;
        Ok(self.buf.split_to(len))
    }

    /// An array count, checked against the bytes left: each element takes
    /// at least `min_element_len` bytes.
    pub fn count(
        &mut self,
        what: &'static str,
        min_element_len: usize,
    ) -> Result<usize, DecodeError> {
        let n = self.u32(what)? as usize;
        let needed = n.saturating_mul(min_element_len.max(1));
        self.need(what, needed)?;
        Ok(n)
    }

    /// Reads an `array<T>`: a `u32` count checked with [`Self::count`], then `element` once per element.
    pub fn array<T>(
        &mut self,
        what: &'static str,
        min_element_len: usize,
        mut element: impl FnMut(&mut Reader) -> Result<T, DecodeError>,
    ) -> Result<Vec<T>, DecodeError> {
        let n = self.count(what, min_element_len)?;
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(element(self)?);
        }
        Ok(out)
    }

    /// Fails unless the whole payload was consumed.
    pub fn finish(self) -> Result<(), DecodeError> {
        match self.buf.remaining() {
            0 => Ok(()),
            n => Err(DecodeError::TrailingBytes(n)),
        }
    }
}

/// Writes primitives into a payload.
#[derive(Debug, Default)]
pub struct Writer {
    buf: BytesMut,
}

impl Writer {
    /// An empty writer.
    pub fn new() -> Self {
        Writer::default()
    }

    /// An empty writer with room for `n` bytes, to avoid regrowing for payloads of known size.
    pub fn with_capacity(n: usize) -> Self {
        Writer {
            buf: BytesMut::with_capacity(n),
        }
    }

    /// Writes a `u8`.
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.buf.put_u8(v);
        self
    }

    /// Writes a `bool` as `0` or `1`.
    pub fn bool(&mut self, v: bool) -> &mut Self {
        self.u8(v as u8)
    }

    /// Writes a big-endian `u16`.
    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.buf.put_u16(v);
        self
    }

    /// Writes a big-endian `i16`.
    pub fn i16(&mut self, v: i16) -> &mut Self {
        self.buf.put_i16(v);
        self
    }

    /// Writes a big-endian `u32`.
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.buf.put_u32(v);
        self
    }

    /// Writes a big-endian `u64`.
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.buf.put_u64(v);
        self
    }

    /// Writes a big-endian `i64`.
    pub fn i64(&mut self, v: i64) -> &mut Self {
        self.buf.put_i64(v);
        self
    }

    /// Writes a string, cut to the 65,535 bytes its length field can say
    /// (at a character boundary). Names are validated long before this.
    pub fn string(&mut self, s: &str) -> &mut Self {
        let mut end = s.len().min(u16::MAX as usize);
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        self.buf.put_u16(end as u16);
        self.buf.put_slice(&s.as_bytes()[..end]);
        self
    }

    /// Writes a `bytes`: a `u32` length, then the bytes.
    pub fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.buf.put_u32(b.len() as u32);
        self.buf.put_slice(b);
        self
    }

    /// Writes an array's `u32` element count; the caller writes the elements after it.
    pub fn count(&mut self, n: usize) -> &mut Self {
        self.u32(n as u32)
    }

    /// The payload written so far, ready to put in a frame.
    pub fn finish(self) -> Bytes {
        self.buf.freeze()
    }
}

/// A value with a wire encoding: the codec payload types are built from.
///
/// Primitives, strings, byte strings, arrays (`Vec<T>`), optional values
/// (`Option<T>`: a `bool`, then the value when true) and pairs implement it
/// here; plain structs derive it with [`wire_struct!`](crate::wire_struct),
/// field by field in the order listed; enums and other layouts write it by
/// hand. The methods are not named `encode`/`decode` so they never clash
/// with [`Payload`](crate::ops::Payload)'s, which every `Wire` type also has.
pub trait Wire: Sized {
    /// The fewest bytes any value takes: bounds an array's declared count
    /// by the bytes left before anything is allocated.
    const MIN_LEN: usize;
    /// Appends the value's encoding.
    fn encode_to(&self, w: &mut Writer);
    /// Reads a value; `what` names the field in errors.
    fn decode_from(r: &mut Reader, what: &'static str) -> Result<Self, DecodeError>;
}

/// `T::MIN_LEN` for the field a (never called) accessor names: lets
/// [`wire_struct!`](crate::wire_struct) sum its fields' sizes from their names alone.
pub const fn field_min_len<S, T: Wire>(_field: fn(&S) -> &T) -> usize {
    T::MIN_LEN
}

macro_rules! wire_primitive {
    ($($t:ty, $len:expr, $read:ident, $write:ident;)*) => {$(
        impl Wire for $t {
            const MIN_LEN: usize = $len;
            fn encode_to(&self, w: &mut Writer) {
                w.$write(*self);
            }
            fn decode_from(r: &mut Reader, what: &'static str) -> Result<Self, DecodeError> {
                r.$read(what)
            }
        }
    )*};
}

wire_primitive! {
    u8, 1, u8, u8;
    bool, 1, bool, bool;
    u16, 2, u16, u16;
    i16, 2, i16, i16;
    u32, 4, u32, u32;
    u64, 8, u64, u64;
    i64, 8, i64, i64;
}

impl Wire for String {
    const MIN_LEN: usize = 2;
    fn encode_to(&self, w: &mut Writer) {
        w.string(self);
    }
    fn decode_from(r: &mut Reader, what: &'static str) -> Result<Self, DecodeError> {
        r.string(what)
    }
}

impl Wire for Bytes {
    const MIN_LEN: usize = 4;
    fn encode_to(&self, w: &mut Writer) {
        w.bytes(self);
    }
    fn decode_from(r: &mut Reader, what: &'static str) -> Result<Self, DecodeError> {
        r.bytes(what)
    }
}

impl<T: Wire> Wire for Vec<T> {
    const MIN_LEN: usize = 4;
    fn encode_to(&self, w: &mut Writer) {
        w.count(self.len());
        for v in self {
            v.encode_to(w);
        }
    }
    fn decode_from(r: &mut Reader, what: &'static str) -> Result<Self, DecodeError> {
        r.array(what, T::MIN_LEN, |r| T::decode_from(r, what))
    }
}

impl<T: Wire> Wire for Option<T> {
    const MIN_LEN: usize = 1;
    fn encode_to(&self, w: &mut Writer) {
        match self {
            Some(v) => {
                w.bool(true);
                v.encode_to(w);
            }
            None => {
                w.bool(false);
            }
        }
    }
    fn decode_from(r: &mut Reader, what: &'static str) -> Result<Self, DecodeError> {
        if r.bool(what)? {
            T::decode_from(r, what).map(Some)
        } else {
            Ok(None)
        }
    }
}

impl<A: Wire, B: Wire> Wire for (A, B) {
    const MIN_LEN: usize = A::MIN_LEN + B::MIN_LEN;
    fn encode_to(&self, w: &mut Writer) {
        self.0.encode_to(w);
        self.1.encode_to(w);
    }
    fn decode_from(r: &mut Reader, what: &'static str) -> Result<Self, DecodeError> {
        Ok((A::decode_from(r, what)?, B::decode_from(r, what)?))
    }
}

/// Derives [`Wire`] for a plain struct: its fields in wire order
/// (`Name { a, b, c }`), a newtype (`Name(Inner)`) or a unit struct
/// (`Name`). The decoder builds the struct literal, so a field left out
/// does not compile; field names serve as the `what` of decode errors.
#[macro_export]
macro_rules! wire_struct {
    ($name:ident { $($field:ident),* $(,)? }) => {
        impl $crate::codec::Wire for $name {
            const MIN_LEN: usize = 0 $(+ $crate::codec::field_min_len(|s: &$name| &s.$field))*;
            fn encode_to(&self, w: &mut $crate::codec::Writer) {
                $($crate::codec::Wire::encode_to(&self.$field, w);)*
            }
            fn decode_from(
                r: &mut $crate::codec::Reader,
                _what: &'static str,
            ) -> Result<Self, $crate::codec::DecodeError> {
                // Struct literal fields are evaluated in the order written.
                Ok($name {
                    $($field: $crate::codec::Wire::decode_from(r, stringify!($field))?,)*
                })
            }
        }
    };
    ($name:ident($inner:ty)) => {
        impl $crate::codec::Wire for $name {
            const MIN_LEN: usize = <$inner as $crate::codec::Wire>::MIN_LEN;
            fn encode_to(&self, w: &mut $crate::codec::Writer) {
                $crate::codec::Wire::encode_to(&self.0, w);
            }
            fn decode_from(
                r: &mut $crate::codec::Reader,
                what: &'static str,
            ) -> Result<Self, $crate::codec::DecodeError> {
                <$inner as $crate::codec::Wire>::decode_from(r, what).map($name)
            }
        }
    };
    ($name:ident) => {
        impl $crate::codec::Wire for $name {
            const MIN_LEN: usize = 0;
            fn encode_to(&self, _: &mut $crate::codec::Writer) {}
            fn decode_from(
                _: &mut $crate::codec::Reader,
                _: &'static str,
            ) -> Result<Self, $crate::codec::DecodeError> {
                Ok($name)
            }
        }
    };
}

/// Derives [`Wire`] for an enum encoded as one `u8` through its own
/// `to_u8`/`from_u8` (which name the field in their errors).
#[macro_export]
macro_rules! wire_u8_enum {
    ($($name:ty),* $(,)?) => {$(
        impl $crate::codec::Wire for $name {
            const MIN_LEN: usize = 1;
            fn encode_to(&self, w: &mut $crate::codec::Writer) {
                w.u8(self.to_u8());
            }
            fn decode_from(
                r: &mut $crate::codec::Reader,
                what: &'static str,
            ) -> Result<Self, $crate::codec::DecodeError> {
                Self::from_u8(r.u8(what)?)
            }
        }
    )*};
}
