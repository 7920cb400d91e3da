//! The network front ends.
//!
//! - [`server`]: the QUIC listener (quinn): connections, streams, frames, and
//!   graceful shutdown, dispatching to [`crate::broker::Broker`];
//! - [`tls`]: certificates — configured, or self-signed for `sluice dev`.

pub mod server;
pub mod tls;
