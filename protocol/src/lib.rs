//! Sans-IO wire formats shared by the Sluice broker and its clients.
//!
//! Nothing here does I/O: bytes in, values out, so every decoder can be unit
//! tested, property tested and fuzzed on its own.
//!
//! - [`batch`]: record batches in the Kafka RecordBatch v2 layout — the unit
//!   the client builds, the wire carries and the log stores byte for byte;
//! - [`frame`]: `[u32 len][u16 op][u32 request-id][payload]` framing of
//!   requests and responses on a stream, with a size limit checked before
//!   any payload is buffered.

pub mod batch;
pub mod frame;
