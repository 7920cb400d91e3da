//! The QUIC listener: connections, streams, frames in and out.
//!
//! A thin shell around [`Broker`]: every bidirectional stream a client opens
//! carries pipelined request frames one way and response frames (matched by
//! request id, in any order) the other. Each stream has a reader, which cuts
//! frames and dispatches them, and a writer, which sends the responses as
//! they complete. Produce requests are written to the log by the reader in
//! arrival order; everything slow (durability waits, long polls, metadata
//! writes) runs in its own task so one stream carries many requests at once.
//!
//! A frame that cannot be cut (over the size limit, impossible length)
//! closes only its stream, after an error frame; a payload that does not
//! decode gets an error response and the stream goes on.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use sluice_protocol::codec::DecodeError;
use sluice_protocol::frame::{FrameDecoder, FrameError};
use sluice_protocol::ops::{ERROR_OP, Op, Payload, Request};
use sluice_protocol::{ErrorCode, WireError, frame};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::task::TaskTracker;

use super::tls::{Identity, TlsError};
use crate::broker::{Answer, Broker, Caller, Dispatched, Session};

/// QUIC application error codes used when closing connections and streams.
pub mod close_code {
    /// Normal close (shutdown).
    pub const OK: u32 = 0;
    /// The connection limit was reached.
    pub const TOO_MANY_CONNECTIONS: u32 = 1;
    /// A stream's framing broke; the stream is closed.
    pub const MALFORMED_FRAME: u32 = 2;
}

/// Limits the listener enforces.
#[derive(Debug, Clone)]
pub struct ServerLimits {
    pub max_connections: u32,
    pub max_streams_per_connection: u32,
    pub max_frame_bytes: u32,
    /// Requests being processed at once per connection; further frames wait.
    pub max_in_flight_per_connection: u32,
    pub idle_timeout: Duration,
    /// How long shutdown waits for in-flight requests before closing anyway.
    pub drain_timeout: Duration,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            max_connections: 1024,
            max_streams_per_connection: 256,
            max_frame_bytes: frame::DEFAULT_MAX_FRAME_BYTES as u32,
            max_in_flight_per_connection: 4096,
            idle_timeout: Duration::from_secs(30),
            drain_timeout: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// A bound listener; [`run`](Server::run) serves until the broker's
/// shutdown token is cancelled, then drains and closes.
#[derive(Debug)]
pub struct Server {
    endpoint: quinn::Endpoint,
    broker: Arc<Broker>,
    limits: ServerLimits,
}

/// The broker's transport settings: the windows shared with the client,
/// its stream limits and idle timeout.
pub fn transport_config(max_streams: u32, idle: Duration) -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    t.max_concurrent_bidi_streams(max_streams.into());
    t.max_concurrent_uni_streams(0u8.into());
    sluice_quic::set_windows(&mut t);
    t.max_idle_timeout(idle.try_into().ok());
    t.keep_alive_interval(Some(idle / 3));
    t
}

impl Server {
    pub fn bind(
        addr: SocketAddr,
        identity: Identity,
        broker: Arc<Broker>,
        limits: ServerLimits,
    ) -> Result<Server, NetError> {
        let crypto = identity.quic_server_config()?;
        let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        config.transport_config(Arc::new(transport_config(
            limits.max_streams_per_connection,
            limits.idle_timeout,
        )));
        let endpoint = sluice_quic::udp_socket(addr)
            .and_then(|socket| {
                quinn::Endpoint::new(
                    quinn::EndpointConfig::default(),
                    Some(config),
                    socket,
                    Arc::new(quinn::TokioRuntime),
                )
            })
            .map_err(|source| NetError::Bind { addr, source })?;
        Ok(Server {
            endpoint,
            broker,
            limits,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.endpoint
            .local_addr()
            .expect("a bound UDP socket has a local address")
    }

    /// Serves until shutdown: then stops accepting, lets in-flight requests
    /// finish (up to the drain timeout), closes connections, and flushes
    /// and checkpoints the log.
    pub async fn run(self) -> Result<(), crate::store::StoreError> {
        let shutdown = self.broker.shutdown_token().clone();
        let tracker = TaskTracker::new();
        let connections = Arc::new(AtomicUsize::new(0));
        loop {
            let incoming = tokio::select! {
                incoming = self.endpoint.accept() => incoming,
                _ = shutdown.cancelled() => break,
            };
            let Some(incoming) = incoming else { break };
            let broker = self.broker.clone();
            let limits = self.limits.clone();
            let connections = connections.clone();
            tracker.spawn(async move {
                let conn = match incoming.await {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::debug!(error = %e, "handshake failed");
                        return;
                    }
                };
                if connections.fetch_add(1, Ordering::AcqRel) >= limits.max_connections as usize {
                    connections.fetch_sub(1, Ordering::AcqRel);
                    tracing::warn!(remote = %conn.remote_address(), "refusing connection: limit reached");
                    conn.close(
                        close_code::TOO_MANY_CONNECTIONS.into(),
                        b"LIMIT_EXCEEDED: too many connections",
                    );
                    return;
                }
                serve_connection(conn, broker, limits).await;
                connections.fetch_sub(1, Ordering::AcqRel);
            });
        }
        // Refuse new connections while the old ones drain.
        self.endpoint.set_server_config(None);
        tracker.close();
        if tokio::time::timeout(self.limits.drain_timeout, tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("in-flight requests did not finish in time; closing connections");
        }
        self.endpoint
            .close(close_code::OK.into(), b"SHUTTING_DOWN: broker stopped");
        let _ = tokio::time::timeout(Duration::from_secs(2), self.endpoint.wait_idle()).await;
        // Functions finish the batch in hand (and commit it) before the
        // store closes.
        self.broker.functions().stop().await;
        let broker = self.broker.clone();
        tokio::task::spawn_blocking(move || broker.close())
            .await
            .unwrap_or(Ok(()))
    }
}

/// Per-connection state shared by its streams.
struct ConnectionState {
    /// Unique per connection in this broker run; group members joined over
    /// it leave when it closes.
    id: u64,
    broker: Arc<Broker>,
    /// Set by the last successful handshake on any of the connection's streams.
    session: parking_lot::Mutex<Option<Session>>,
    in_flight: Arc<Semaphore>,
    max_frame_bytes: usize,
}

async fn serve_connection(conn: quinn::Connection, broker: Arc<Broker>, limits: ServerLimits) {
    let remote = conn.remote_address();
    tracing::debug!(%remote, "connection open");
    let shutdown = broker.shutdown_token().clone();
    static NEXT_CONNECTION: AtomicU64 = AtomicU64::new(1);
    let state = Arc::new(ConnectionState {
        id: NEXT_CONNECTION.fetch_add(1, Ordering::Relaxed),
        broker,
        session: parking_lot::Mutex::new(None),
        in_flight: Arc::new(Semaphore::new(limits.max_in_flight_per_connection as usize)),
        max_frame_bytes: limits.max_frame_bytes as usize,
    });
    let streams = TaskTracker::new();
    loop {
        let stream = tokio::select! {
            s = conn.accept_bi() => s,
            _ = shutdown.cancelled() => break,
        };
        match stream {
            Ok((send, recv)) => {
                streams.spawn(serve_stream(send, recv, state.clone()));
            }
            Err(e) => {
                tracing::debug!(%remote, reason = %e, "connection closed");
                break;
            }
        }
    }
    state.broker.connection_closed(state.id);
    streams.close();
    streams.wait().await;
    conn.close(close_code::OK.into(), b"SHUTTING_DOWN: broker stopped");
}

/// Reads frames off one stream and dispatches them; see the module docs.
async fn serve_stream(
    send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    state: Arc<ConnectionState>,
) {
    let (tx, rx) = mpsc::unbounded_channel::<Bytes>();
    let writer = tokio::spawn(write_responses(send, rx));
    let shutdown = state.broker.shutdown_token().clone();
    let mut decoder = FrameDecoder::new(state.max_frame_bytes);
    'read: loop {
        let chunk = tokio::select! {
            c = recv.read_chunk(usize::MAX, true) => c,
            _ = shutdown.cancelled() => break,
        };
        match chunk {
            Ok(Some(chunk)) => decoder.extend(&chunk.bytes),
            Ok(None) => break,
            Err(e) => {
                tracing::debug!(error = %e, "stream read ended");
                break;
            }
        }
        loop {
            match decoder.decode() {
                Ok(Some(f)) => dispatch(f.op, f.request_id, f.payload, &state, &tx).await,
                Ok(None) => break,
                Err(e) => {
                    malformed_frame(e, &tx);
                    let _ = recv.stop(close_code::MALFORMED_FRAME.into());
                    break 'read;
                }
            }
        }
    }
    drop(tx);
    let _ = writer.await;
}

fn malformed_frame(e: FrameError, tx: &mpsc::UnboundedSender<Bytes>) {
    tracing::debug!(error = %e, "malformed frame; closing the stream");
    let err = WireError::new(
        ErrorCode::MalformedFrame,
        format!("{e}; this stream is closed"),
    );
    let _ = tx.send(encode(ERROR_OP, 0, &err.encode()));
}

fn encode(op: u16, request_id: u32, payload: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(frame::HEADER_LEN + payload.len());
    frame::encode(op, request_id, payload, &mut out);
    out.freeze()
}

fn error_frame(request_id: u32, err: &WireError) -> Bytes {
    encode(ERROR_OP, request_id, &err.encode())
}

/// Writes response frames as they come, coalescing whatever is queued into
/// one write; finishes the stream once every sender is gone.
async fn write_responses(mut send: quinn::SendStream, mut rx: mpsc::UnboundedReceiver<Bytes>) {
    let mut batch = Vec::with_capacity(64);
    while rx.recv_many(&mut batch, 64).await > 0 {
        if let Err(e) = send.write_all_chunks(&mut batch).await {
            tracing::debug!(error = %e, "stream write failed");
            return;
        }
        batch.clear();
    }
    let _ = send.finish();
    // Wait for the peer to receive everything before the connection may close.
    // (Bounded: a peer that vanished without closing never acknowledges.)
    let _ = tokio::time::timeout(Duration::from_secs(1), send.stopped()).await;
}

async fn dispatch(
    op: u16,
    request_id: u32,
    payload: Bytes,
    state: &Arc<ConnectionState>,
    tx: &mpsc::UnboundedSender<Bytes>,
) {
    let request = match Request::decode(op, payload) {
        Ok(r) => r,
        Err(e) => {
            let code = match e {
                DecodeError::UnknownOp(_) => ErrorCode::UnknownOp,
                _ => ErrorCode::MalformedRequest,
            };
            let _ = tx.send(error_frame(
                request_id,
                &WireError::new(code, e.to_string()),
            ));
            return;
        }
    };
    // Bound the work in flight per connection: past the limit, stop reading.
    let Ok(permit) = state.in_flight.clone().acquire_owned().await else {
        return;
    };
    let caller = Caller {
        session: &state.session,
        connection: state.id,
    };
    match state.broker.dispatch(request, caller).await {
        Dispatched::Done(answer) => {
            if let Some(answer) = answer {
                let _ = tx.send(answer_frame(request_id, answer));
            }
            drop(permit);
        }
        Dispatched::Later(answer) => {
            let tx = tx.clone();
            tokio::spawn(async move {
                if let Some(answer) = answer.await {
                    let _ = tx.send(answer_frame(request_id, answer));
                }
                drop(permit);
            });
        }
        Dispatched::Subscribe(req) => {
            // Runs for as long as the subscription; it does not hold an
            // in-flight permit.
            drop(permit);
            tokio::spawn(push(state.broker.clone(), request_id, req, tx.clone()));
        }
    }
}

fn answer_frame(request_id: u32, answer: Answer) -> Bytes {
    match answer.result {
        Ok(payload) => encode(answer.op.response_op(), request_id, &payload),
        Err(e) => error_frame(request_id, &e),
    }
}

/// A push subscription: sends a `GroupBatch` frame whenever the member has
/// messages and credit (the groups wake it; see `groups::push`), until the
/// stream closes, the member is gone (an error frame says why) or the
/// broker stops.
async fn push(
    broker: Arc<Broker>,
    request_id: u32,
    req: sluice_protocol::ops::SubscribeRequest,
    tx: mpsc::UnboundedSender<Bytes>,
) {
    let mut subscription = match broker.subscribe(&req) {
        Ok(s) => s,
        Err(e) => {
            let _ = tx.send(error_frame(request_id, &e));
            return;
        }
    };
    let shutdown = broker.shutdown_token().clone();
    loop {
        let next = tokio::select! {
            next = subscription.next(&shutdown) => next,
            _ = tx.closed() => return,
        };
        match next {
            Ok(Some(batch)) => {
                let frame = encode(Op::Subscribe.response_op(), request_id, &batch.encode());
                if tx.send(frame).is_err() {
                    return;
                }
            }
            Ok(None) => return,
            Err(e) => {
                let _ = tx.send(error_frame(request_id, &crate::broker::errors::to_wire(e)));
                return;
            }
        }
    }
}
