//! Sans-IO wire formats shared by the Sluice broker and its clients.
//!
//! Nothing here does I/O: bytes in, values out, so every decoder can be unit
//! tested, property tested and fuzzed on its own.
//!
//! - [`batch`]: record batches in the Kafka RecordBatch v2 layout — the unit
//!   the client builds, the wire carries and the log stores byte for byte;
//! - [`frame`]: `[u32 len][u16 op][u32 request-id][payload]` framing of
//!   requests and responses on a stream, with a size limit checked before
//!   any payload is buffered;
//! - [`codec`]: the primitive encoding of control payloads (big-endian
//!   integers, length-prefixed strings, bytes and arrays) and the [`codec::Wire`]
//!   trait payloads are built from, derived for plain structs by
//!   [`wire_struct!`];
//! - [`ops`]: the op table (from which the op codes, the request enum and
//!   its decoding come), the request and response payloads, and the
//!   protocol version;
//! - [`error`]: wire error codes and which of them are worth a retry;
//! - [`headers`]: the record headers that carry Sluice's message model
//!   (message id, tags) beside user properties;
//! - [`transform_output`]: the flat buffer a transform function returns
//!   (output messages and per-input failures), shared by the guest SDK and
//!   the engine.
//!
//! docs/protocol.md is the specification these modules implement.

#![warn(missing_docs)]

pub mod batch;
pub mod codec;
pub mod error;
pub mod frame;
pub mod headers;
pub mod ops;
pub mod transform_output;

pub use error::{ErrorCode, WireError};
