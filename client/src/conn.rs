//! Connections and request streams.
//!
//! A [`Connection`] is one QUIC connection, re-established (with a fresh
//! handshake) when it drops. A [`RequestStream`] is one bidirectional stream
//! on it carrying pipelined requests: requests go out in the order they are
//! sent (which is the order the broker applies produces in) and responses
//! come back in any order, matched by request id. A `PushStream` is a
//! stream for one request that gets many responses (a group
//! subscription), plus one-way requests that steer it (credit grants).
//!
//! This is the only module that touches quinn: everything else speaks in
//! requests and responses.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use parking_lot::Mutex;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use sluice_protocol::frame::{self, Frame, FrameDecoder};
use sluice_protocol::ops::{
    ALPN, ERROR_OP, HandshakeRequest, HandshakeResponse, Op, PROTOCOL_VERSION, Payload,
    RequestPayload, decode_response,
};
use sluice_protocol::{ErrorCode, WireError};
use tokio::sync::{mpsc, oneshot};

use crate::error::{ClientError, Result};

/// How to reach and authenticate to a broker.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// `host:port` of the broker.
    pub addr: String,
    /// The name the broker's certificate must carry (`localhost` for `sluice dev`).
    pub server_name: String,
    /// PEM file of the CA (or self-signed certificate) to trust.
    pub ca_cert: Option<PathBuf>,
    /// Empty for anonymous access.
    pub token: String,
    /// How the broker names this client in its logs.
    pub client_id: String,
    /// How long a connect (QUIC and TLS handshake) may take.
    pub connect_timeout: Duration,
    /// How long a request may wait for its response (long polls add their wait).
    pub request_timeout: Duration,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            addr: "127.0.0.1:7420".into(),
            server_name: "localhost".into(),
            ca_cert: None,
            token: String::new(),
            client_id: format!("sluice-client-{}", std::process::id()),
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
        }
    }
}

impl ClientConfig {
    /// The defaults, for the broker at `addr` (`host:port`).
    pub fn new(addr: impl Into<String>) -> Self {
        ClientConfig {
            addr: addr.into(),
            ..ClientConfig::default()
        }
    }

    /// The PEM file of the CA to trust; required to connect.
    pub fn ca_cert(mut self, path: impl Into<PathBuf>) -> Self {
        self.ca_cert = Some(path.into());
        self
    }

    /// The token to authenticate with.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = token.into();
        self
    }

    /// See [`ClientConfig::client_id`].
    pub fn client_id(mut self, id: impl Into<String>) -> Self {
        self.client_id = id.into();
        self
    }

    /// See [`ClientConfig::server_name`].
    pub fn server_name(mut self, name: impl Into<String>) -> Self {
        self.server_name = name.into();
        self
    }
}

fn load_roots(path: &Path) -> Result<rustls::RootCertStore> {
    let err = |reason: String| ClientError::CaCert {
        path: path.to_path_buf(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| err(e.to_string()))?;
    if certs.is_empty() {
        return Err(err("no certificate in the file".into()));
    }
    let mut roots = rustls::RootCertStore::empty();
    for c in certs {
        roots.add(c).map_err(|e| err(e.to_string()))?;
    }
    Ok(roots)
}

/// Builds the QUIC client endpoint configuration.
fn quic_client_config(config: &ClientConfig) -> Result<quinn::ClientConfig> {
    let path = config.ca_cert.as_deref().ok_or_else(|| {
        ClientError::Config("no CA certificate given: pass the broker's certificate (sluice dev writes <data-dir>/tls/cert.pem)".into())
    })?;
    let roots = load_roots(path)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| ClientError::Config(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
        .map_err(|e| ClientError::Config(e.to_string()))?;
    let mut c = quinn::ClientConfig::new(Arc::new(crypto));
    let mut t = quinn::TransportConfig::default();
    sluice_quic::set_windows(&mut t);
    // A broker that vanished (killed, network gone) is noticed after 10 s
    // of silence; keep-alives keep a quiet but healthy connection open.
    t.max_idle_timeout(Duration::from_secs(10).try_into().ok());
    t.keep_alive_interval(Some(Duration::from_secs(2)));
    c.transport_config(Arc::new(t));
    Ok(c)
}

/// A live QUIC connection after a successful handshake.
#[derive(Debug)]
struct Live {
    conn: quinn::Connection,
    handshake: HandshakeResponse,
    /// The stream for control requests (admin, offsets).
    control: Arc<RequestStream>,
}

/// A connection to a broker that reconnects when it drops.
#[derive(Debug)]
pub struct Connection {
    config: ClientConfig,
    endpoint: quinn::Endpoint,
    live: tokio::sync::Mutex<Option<Arc<Live>>>,
}

impl Connection {
    /// Connects and handshakes; fails fast with a clear error when the
    /// broker is unreachable, untrusted, or refuses the token.
    pub async fn connect(config: ClientConfig) -> Result<Arc<Connection>> {
        let client_config = quic_client_config(&config)?;
        let bind: SocketAddr = "0.0.0.0:0".parse().expect("valid address");
        let mut endpoint = udp_socket(bind)
            .and_then(|socket| {
                quinn::Endpoint::new(
                    quinn::EndpointConfig::default(),
                    None,
                    socket,
                    Arc::new(quinn::TokioRuntime),
                )
            })
            .map_err(|e| ClientError::Unreachable {
                addr: config.addr.clone(),
                reason: format!("cannot open a UDP socket: {e}"),
            })?;
        endpoint.set_default_client_config(client_config);
        let conn = Arc::new(Connection {
            config,
            endpoint,
            live: tokio::sync::Mutex::new(None),
        });
        conn.live().await?;
        Ok(conn)
    }

    /// The configuration it connects with.
    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// The current connection, reconnecting first if it dropped.
    async fn live(&self) -> Result<Arc<Live>> {
        let mut guard = self.live.lock().await;
        if let Some(live) = guard.as_ref()
            && live.conn.close_reason().is_none()
        {
            return Ok(live.clone());
        }
        let live = Arc::new(self.establish().await?);
        *guard = Some(live.clone());
        Ok(live)
    }

    async fn establish(&self) -> Result<Live> {
        let addr = resolve(&self.config.addr).await?;
        let connecting = self
            .endpoint
            .connect(addr, &self.config.server_name)
            .map_err(|e| ClientError::Config(format!("cannot connect to {addr}: {e}")))?;
        let conn = match tokio::time::timeout(self.config.connect_timeout, connecting).await {
            Err(_) => {
                return Err(ClientError::Unreachable {
                    addr: self.config.addr.clone(),
                    reason: format!(
                        "no answer within {:?} (is the broker running?)",
                        self.config.connect_timeout
                    ),
                });
            }
            Ok(Err(e)) => return Err(connect_error(addr, &self.config.addr, e)),
            Ok(Ok(c)) => c,
        };
        let control = Arc::new(RequestStream::open(&conn, self.config.request_timeout).await?);
        let handshake = handshake(&control, &self.config, false).await?;
        Ok(Live {
            conn,
            handshake,
            control,
        })
    }

    /// The broker's handshake answer (limits, version) on the current connection.
    pub async fn handshake_info(&self) -> Result<HandshakeResponse> {
        Ok(self.live().await?.handshake.clone())
    }

    /// Sends a control request on the shared control stream.
    pub async fn request<R: RequestPayload>(&self, req: &R) -> Result<R::Response> {
        let live = self.live().await?;
        live.control.request(req, None).await
    }

    /// Opens a new stream (for a producer or consumer of its own).
    pub async fn open_stream(&self) -> Result<Arc<RequestStream>> {
        let live = self.live().await?;
        match RequestStream::open(&live.conn, self.config.request_timeout).await {
            Ok(s) => Ok(Arc::new(s)),
            Err(e) => {
                // The connection may have died between the check and the open.
                drop(live);
                let live = self.live().await?;
                RequestStream::open(&live.conn, self.config.request_timeout)
                    .await
                    .map(Arc::new)
                    .map_err(|_| e)
            }
        }
    }

    /// Asks for a fresh producer id (a repeated handshake on this connection).
    pub async fn allocate_producer_id(&self) -> Result<(i64, i16)> {
        let live = self.live().await?;
        let resp = handshake(&live.control, &self.config, true).await?;
        Ok((resp.producer_id, resp.producer_epoch))
    }

    /// Opens a raw bidirectional stream, bypassing framing. For tests of the
    /// broker's handling of malformed input.
    #[doc(hidden)]
    pub async fn open_raw_stream(&self) -> Result<(quinn::SendStream, quinn::RecvStream)> {
        self.open_bi().await
    }

    /// Opens a stream of its own for `req`, a request that gets many
    /// response frames (a group subscription); see [`PushStream`].
    pub(crate) async fn open_push<R: RequestPayload>(&self, req: &R) -> Result<PushStream<R>> {
        let (send, recv) = self.open_bi().await?;
        let mut push = PushStream {
            send,
            recv,
            decoder: FrameDecoder::new(usize::MAX >> 1),
            last_id: PUSH_REQUEST_ID,
            request: PhantomData,
        };
        push.write(R::OP, PUSH_REQUEST_ID, &req.encode()).await?;
        Ok(push)
    }

    async fn open_bi(&self) -> Result<(quinn::SendStream, quinn::RecvStream)> {
        let live = self.live().await?;
        live.conn
            .open_bi()
            .await
            .map_err(|e| ClientError::Disconnected(e.to_string()))
    }

    /// Closes the connection now (in-flight requests fail). For tests that
    /// need a connection to drop mid-request.
    #[doc(hidden)]
    pub async fn kill_connection(&self) {
        if let Some(live) = self.live.lock().await.as_ref() {
            live.conn.close(0u32.into(), b"killed by the client");
        }
    }

    /// Closes the connection gracefully.
    pub async fn close(&self) {
        if let Some(live) = self.live.lock().await.take() {
            live.conn.close(0u32.into(), b"client closed");
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), self.endpoint.wait_idle()).await;
    }
}

pub use sluice_quic::{UDP_BUFFER_BYTES, udp_socket};

async fn resolve(addr: &str) -> Result<SocketAddr> {
    let mut addrs = tokio::net::lookup_host(addr)
        .await
        .map_err(|e| ClientError::Unreachable {
            addr: addr.to_owned(),
            reason: format!("cannot resolve: {e}"),
        })?;
    addrs.next().ok_or_else(|| ClientError::Unreachable {
        addr: addr.to_owned(),
        reason: "the name resolves to no address".into(),
    })
}

fn connect_error(addr: SocketAddr, name: &str, e: quinn::ConnectionError) -> ClientError {
    match e {
        quinn::ConnectionError::TransportError(t)
            if t.code.to_string().contains("crypto") || t.reason.contains("certificate") =>
        {
            ClientError::Tls {
                addr,
                reason: t.to_string(),
            }
        }
        quinn::ConnectionError::TimedOut => ClientError::Unreachable {
            addr: name.to_owned(),
            reason: "connection timed out (is the broker running?)".into(),
        },
        quinn::ConnectionError::ConnectionClosed(c)
            if c.error_code.to_string().contains("crypto") =>
        {
            ClientError::Tls {
                addr,
                reason: c.to_string(),
            }
        }
        other => ClientError::Unreachable {
            addr: name.to_owned(),
            reason: other.to_string(),
        },
    }
}

async fn handshake(
    stream: &RequestStream,
    config: &ClientConfig,
    want_producer_id: bool,
) -> Result<HandshakeResponse> {
    let req = HandshakeRequest {
        version: PROTOCOL_VERSION,
        client_id: config.client_id.clone(),
        token: config.token.clone(),
        want_producer_id,
    };
    match stream.request(&req, None).await {
        Err(ClientError::Broker(e)) if e.code == ErrorCode::AuthenticationFailed => {
            Err(ClientError::Auth(e))
        }
        other => other,
    }
}

type Waiter = oneshot::Sender<Result<Frame>>;

/// One pipelined request/response stream (see the module docs).
#[derive(Debug)]
pub struct RequestStream {
    out: mpsc::UnboundedSender<Bytes>,
    pending: Arc<Mutex<HashMap<u32, Waiter>>>,
    next_id: AtomicU32,
    closed: Arc<AtomicBool>,
    timeout: Duration,
}

impl RequestStream {
    async fn open(conn: &quinn::Connection, timeout: Duration) -> Result<RequestStream> {
        let (send, recv) = conn
            .open_bi()
            .await
            .map_err(|e| ClientError::Disconnected(e.to_string()))?;
        let (out, rx) = mpsc::unbounded_channel();
        let pending: Arc<Mutex<HashMap<u32, Waiter>>> = Arc::default();
        let closed = Arc::new(AtomicBool::new(false));
        tokio::spawn(write_frames(send, rx, closed.clone()));
        tokio::spawn(read_frames(recv, pending.clone(), closed.clone()));
        Ok(RequestStream {
            out,
            pending,
            next_id: AtomicU32::new(1),
            closed,
            timeout,
        })
    }

    /// Whether the stream has failed; a new one must be opened.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// The next request id, never 0.
    fn next_request_id(&self) -> u32 {
        loop {
            let id = self.next_id.fetch_add(1, Ordering::Relaxed);
            if id != 0 {
                return id;
            }
        }
    }

    /// Queues a request frame and returns the receiver for its response.
    /// Frames leave in the order this is called.
    fn submit(&self, op: Op, payload: &[u8]) -> Result<(u32, oneshot::Receiver<Result<Frame>>)> {
        if self.is_closed() {
            return Err(ClientError::Disconnected("stream closed".into()));
        }
        let id = self.next_request_id();
        let (tx, rx) = oneshot::channel();
        self.pending.lock().insert(id, tx);
        // The reader marks the stream closed before failing every waiter:
        // checking again after inserting means no waiter is left behind.
        if self.is_closed() {
            self.pending.lock().remove(&id);
            return Err(ClientError::Disconnected("stream closed".into()));
        }
        let mut buf = BytesMut::with_capacity(frame::HEADER_LEN + payload.len());
        frame::encode(op as u16, id, payload, &mut buf);
        if self.out.send(buf.freeze()).is_err() {
            self.pending.lock().remove(&id);
            return Err(ClientError::Disconnected("stream closed".into()));
        }
        Ok((id, rx))
    }

    /// Sends a request and waits for its response (`extra_wait` is added to
    /// the timeout, for long polls).
    pub async fn request<R: RequestPayload>(
        &self,
        req: &R,
        extra_wait: Option<Duration>,
    ) -> Result<R::Response> {
        let rx = self.send(req)?;
        self.response::<R>(rx, extra_wait).await
    }

    /// Queues a request; the returned handle resolves to its response.
    pub fn send<R: RequestPayload>(&self, req: &R) -> Result<PendingResponse> {
        let (id, rx) = self.submit(R::OP, &req.encode())?;
        Ok(PendingResponse {
            id,
            rx,
            pending: self.pending.clone(),
        })
    }

    /// Waits for a queued request's response.
    pub async fn response<R: RequestPayload>(
        &self,
        pending: PendingResponse,
        extra_wait: Option<Duration>,
    ) -> Result<R::Response> {
        self.response_within::<R>(pending, self.timeout + extra_wait.unwrap_or_default())
            .await
    }

    /// Waits for a queued request's response for at most `limit`.
    pub async fn response_within<R: RequestPayload>(
        &self,
        pending: PendingResponse,
        limit: Duration,
    ) -> Result<R::Response> {
        let PendingResponse { id, rx, pending } = pending;
        let frame = match tokio::time::timeout(limit, rx).await {
            Err(_) => {
                pending.lock().remove(&id);
                return Err(ClientError::Timeout(limit));
            }
            Ok(Err(_)) => return Err(ClientError::Disconnected("stream closed".into())),
            Ok(Ok(frame)) => frame?,
        };
        decode_response::<R::Response>(R::OP, frame).map_err(ClientError::Broker)
    }

    /// Sends a request that gets no response (produce with acks none). It
    /// still gets a request id of its own: id 0 is reserved for the
    /// broker's stream-level errors.
    pub fn send_unacknowledged(&self, op: Op, payload: &[u8]) -> Result<()> {
        if self.is_closed() {
            return Err(ClientError::Disconnected("stream closed".into()));
        }
        let id = self.next_request_id();
        let mut buf = BytesMut::with_capacity(frame::HEADER_LEN + payload.len());
        frame::encode(op as u16, id, payload, &mut buf);
        self.out
            .send(buf.freeze())
            .map_err(|_| ClientError::Disconnected("stream closed".into()))
    }
}

/// A request on its way; see [`RequestStream::send`].
#[derive(Debug)]
pub struct PendingResponse {
    id: u32,
    rx: oneshot::Receiver<Result<Frame>>,
    pending: Arc<Mutex<HashMap<u32, Waiter>>>,
}

async fn write_frames(
    mut send: quinn::SendStream,
    mut rx: mpsc::UnboundedReceiver<Bytes>,
    closed: Arc<AtomicBool>,
) {
    let mut batch = Vec::with_capacity(64);
    while rx.recv_many(&mut batch, 64).await > 0 {
        if send.write_all_chunks(&mut batch).await.is_err() {
            closed.store(true, Ordering::Release);
            return;
        }
        batch.clear();
    }
    let _ = send.finish();
}

async fn read_frames(
    mut recv: quinn::RecvStream,
    pending: Arc<Mutex<HashMap<u32, Waiter>>>,
    closed: Arc<AtomicBool>,
) {
    let mut decoder = FrameDecoder::new(usize::MAX >> 1);
    let reason = loop {
        match recv.read_chunk(usize::MAX, true).await {
            Ok(Some(chunk)) => decoder.extend(&chunk.bytes),
            Ok(None) => break "the broker closed the stream".to_owned(),
            Err(e) => break e.to_string(),
        }
        let mut fatal = None;
        while let Ok(Some(frame)) = decoder.decode() {
            if frame.request_id == 0 && frame.op == ERROR_OP {
                // A stream-level error (malformed frame): the broker closes the stream.
                fatal = Some(
                    WireError::decode(frame.payload.clone())
                        .map(|e| e.to_string())
                        .unwrap_or_else(|_| "stream error".into()),
                );
                continue;
            }
            if let Some(waiter) = pending.lock().remove(&frame.request_id) {
                let _ = waiter.send(Ok(frame));
            }
        }
        if let Some(reason) = fatal {
            break reason;
        }
    };
    closed.store(true, Ordering::Release);
    for (_, waiter) in pending.lock().drain() {
        let _ = waiter.send(Err(ClientError::Disconnected(reason.clone())));
    }
}

/// The request id of a push stream's request; its one-way requests use
/// the ids after it.
const PUSH_REQUEST_ID: u32 = 1;

/// One request that gets many response frames, on a stream of its own: a
/// group subscription, whose one request the broker answers with a pushed
/// batch whenever it has messages and credit. A [`RequestStream`] (one
/// response per request) cannot carry that, so this frames the stream
/// itself. One-way requests on the same stream ([`PushStream::send`],
/// credit grants) get no answer.
#[derive(Debug)]
pub(crate) struct PushStream<R> {
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    decoder: FrameDecoder,
    /// The id of the last frame sent.
    last_id: u32,
    request: PhantomData<fn(R)>,
}

impl<R: RequestPayload> PushStream<R> {
    /// The next response to the request. Frames answering anything else
    /// are skipped (nothing else is expected); a stream-level error from
    /// the broker, which closes the stream, is [`ClientError::Broker`].
    /// Cancel-safe: a frame half read stays buffered for the next call.
    pub(crate) async fn next(&mut self) -> Result<R::Response> {
        loop {
            while let Some(frame) = self
                .decoder
                .decode()
                .map_err(|e| ClientError::Corrupt(e.to_string()))?
            {
                if frame.request_id == 0 && frame.op == ERROR_OP {
                    return Err(ClientError::Broker(
                        WireError::decode(frame.payload).unwrap_or_else(|e| {
                            WireError::new(ErrorCode::Internal, format!("stream error: {e}"))
                        }),
                    ));
                }
                if frame.request_id != PUSH_REQUEST_ID {
                    tracing::debug!(
                        op = frame.op,
                        id = frame.request_id,
                        "unexpected frame on a push stream"
                    );
                    continue;
                }
                return decode_response::<R::Response>(R::OP, frame).map_err(ClientError::Broker);
            }
            match self.recv.read_chunk(usize::MAX, true).await {
                Ok(Some(c)) => self.decoder.extend(&c.bytes),
                Ok(None) => {
                    let why = "the broker ended the subscription";
                    return Err(ClientError::Disconnected(why.into()));
                }
                Err(e) => return Err(ClientError::Disconnected(e.to_string())),
            }
        }
    }

    /// Sends a one-way request on the stream, under an id of its own
    /// (never 0, reserved for stream-level errors, nor the push request's).
    pub(crate) async fn send<Q: RequestPayload>(&mut self, req: &Q) -> Result<()> {
        self.last_id = match self.last_id.wrapping_add(1) {
            0 | PUSH_REQUEST_ID => PUSH_REQUEST_ID + 1,
            id => id,
        };
        self.write(Q::OP, self.last_id, &req.encode()).await
    }

    async fn write(&mut self, op: Op, id: u32, payload: &[u8]) -> Result<()> {
        let mut buf = BytesMut::with_capacity(frame::HEADER_LEN + payload.len());
        frame::encode(op as u16, id, payload, &mut buf);
        self.send
            .write_all(&buf)
            .await
            .map_err(|e| ClientError::Disconnected(e.to_string()))
    }
}
