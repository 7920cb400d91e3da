//! Where a guest's stdout and stderr go: a small buffer the engine drains
//! after every call into the function's log (and a failed call's error).
//!
//! Writes never fail and never wait: past the per-call capacity bytes are
//! dropped and counted. (wasmtime-wasi's `MemoryOutputPipe` does not drain,
//! so an instance that printed its capacity once would trap on every later
//! `println!`.)

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};

/// One instance's stdout and stderr, shared with its WASI context.
#[derive(Clone, Debug)]
pub(crate) struct GuestOutput(Arc<Mutex<Buffer>>);

#[derive(Debug)]
struct Buffer {
    bytes: Vec<u8>,
    capacity: usize,
    dropped: usize,
}

impl GuestOutput {
    pub(crate) fn new(capacity: usize) -> Self {
        Self(Arc::new(Mutex::new(Buffer {
            bytes: Vec::new(),
            capacity,
            dropped: 0,
        })))
    }

    fn append(&self, data: &[u8]) {
        let mut b = self.0.lock();
        let room = b.capacity.saturating_sub(b.bytes.len());
        let kept = data.len().min(room);
        b.bytes.extend_from_slice(&data[..kept]);
        b.dropped += data.len() - kept;
    }

    /// Everything printed since the last call, as trimmed lossy UTF-8,
    /// without Rust's hint about `RUST_BACKTRACE` (meaningless in a
    /// component); empties the buffer.
    pub(crate) fn take(&self) -> String {
        let mut b = self.0.lock();
        let bytes = std::mem::take(&mut b.bytes);
        let dropped = std::mem::take(&mut b.dropped);
        drop(b);
        let text = String::from_utf8_lossy(&bytes);
        let mut out: String = text
            .lines()
            .filter(|l| !l.starts_with("note: run with `RUST_BACKTRACE=1`"))
            .collect::<Vec<_>>()
            .join("\n")
            .trim()
            .to_owned();
        if dropped > 0 {
            out.push_str(&format!(" [{dropped} more bytes dropped]"));
        }
        out
    }
}

impl IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl OutputStream for GuestOutput {
    fn write(&mut self, bytes: Bytes) -> Result<(), StreamError> {
        self.append(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StreamError> {
        Ok(())
    }

    fn check_write(&mut self) -> Result<usize, StreamError> {
        // Always ready, always room: overflow is dropped, not refused.
        Ok(64 * 1024)
    }
}

impl Pollable for GuestOutput {
    fn ready<'a, 'b>(&'a mut self) -> Pin<Box<dyn Future<Output = ()> + Send + 'b>>
    where
        'a: 'b,
        Self: 'b,
    {
        Box::pin(std::future::ready(()))
    }
}

impl AsyncWrite for GuestOutput {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.append(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drains_per_take_and_counts_what_overflowed() {
        let out = GuestOutput::new(8);
        out.append(b"hello ");
        out.append(b"world, long line");
        assert_eq!(out.take(), "hello wo [14 more bytes dropped]");
        assert_eq!(out.take(), "");
        out.append(b"again\nnote: run with `RUST_BACKTRACE=1` x\n");
        assert!(out.take().starts_with("again"));
    }
}
