//! QUIC transport set-up shared by the broker and the client, so that both
//! ends of a connection are tuned the same way and the tuning is written once.
//!
//! - [`udp_socket`]: a UDP socket with buffers large enough for loopback
//!   and LAN rates;
//! - [`set_windows`]: flow-control windows large enough that one stream can
//!   fill the link.
//!
//! Everything else about a connection (TLS, ALPN, idle timeouts, stream
//! limits) differs between broker and client and stays with each.
#![warn(missing_docs)]

use std::net::SocketAddr;

/// UDP socket buffer the endpoints ask for. Linux's default (about 208 KiB)
/// overflows at a few hundred MB/s on loopback; every overflow is a lost
/// datagram that QUIC recovers only after a loss-detection timeout, which
/// showed up as 30 ms stalls in `sluice bench producer`. The kernel caps the
/// request at `net.core.rmem_max` / `wmem_max`.
pub const UDP_BUFFER_BYTES: usize = 8 << 20;

/// A UDP socket bound to `addr` with large send and receive buffers, for a
/// quinn endpoint (broker or client).
pub fn udp_socket(addr: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    // Best effort: a smaller buffer is slower, not wrong.
    let _ = socket.set_recv_buffer_size(UDP_BUFFER_BYTES);
    let _ = socket.set_send_buffer_size(UDP_BUFFER_BYTES);
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// Sets windows large enough that one stream can fill the link: quinn's
/// defaults cap a stream at about 1.25 MB in flight, which limits a single
/// producer to a few hundred MB/s on loopback.
pub fn set_windows(t: &mut quinn::TransportConfig) {
    t.stream_receive_window((16u32 << 20).into());
    t.receive_window((64u32 << 20).into());
    t.send_window(64 << 20);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binds_an_ephemeral_port() {
        let socket = udp_socket("127.0.0.1:0".parse().unwrap()).unwrap();
        assert_ne!(socket.local_addr().unwrap().port(), 0);
    }
}
