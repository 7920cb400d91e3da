//! The producer: batching, pipelining, retries and idempotence.
//!
//! Each partition a producer writes to has a *lane*: a task that gathers
//! messages into a record batch and keeps up to `max_in_flight` batches in
//! flight on the producer's stream. While batches are in flight new
//! messages accumulate, so batches grow with load on their own (`linger`
//! adds a deliberate wait on top).
//!
//! Idempotence: the producer gets a broker-unique id; each lane numbers its
//! records (the batch header's base sequence). The broker writes a batch
//! only if it follows the last one and answers a retry of a written batch
//! with the original offsets, so retries never duplicate. When a batch
//! fails for good (a non-retriable error, or its delivery timeout), the
//! lane moves to a new epoch and renumbers what is still queued from zero;
//! the broker accepts a new epoch starting at zero.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use futures::stream::FuturesOrdered;
use parking_lot::Mutex;
use sluice_protocol::batch::{BatchBuilder, set_producer_sequence};
use sluice_protocol::ops::{Acks, Op, Payload, ProduceEntry, ProduceRequest, ProduceResult};
use sluice_protocol::{ErrorCode, WireError};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio::time::Instant;

use crate::conn::{Connection, RequestStream};
use crate::error::{ClientError, Result};
use crate::message::{Message, MessageId};
use crate::partition::Partitioner;

/// Producer settings.
#[derive(Debug, Clone)]
pub struct ProducerConfig {
    /// Exactly-once writes per partition across retries and reconnects.
    pub idempotent: bool,
    /// Extra time an open batch waits for more messages (0: send as soon as
    /// a slot is free; batches still grow under load).
    pub linger: Duration,
    /// Largest batch the producer builds (capped by the broker's limit).
    pub max_batch_bytes: usize,
    /// Batches in flight per partition (at most 5 with idempotence: the
    /// broker remembers the last 5 batches per producer and partition).
    pub max_in_flight: usize,
    /// Bytes of messages buffered before `send` waits for room.
    pub buffer_bytes: usize,
    /// How long a message may take, retries included, before it fails.
    pub delivery_timeout: Duration,
    /// First retry waits this long, doubling up to `max_backoff`.
    pub retry_backoff: Duration,
    /// The longest pause between retries.
    pub max_backoff: Duration,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        ProducerConfig {
            idempotent: true,
            linger: Duration::ZERO,
            max_batch_bytes: 1 << 20,
            max_in_flight: 5,
            buffer_bytes: 64 << 20,
            delivery_timeout: Duration::from_secs(30),
            retry_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_secs(1),
        }
    }
}

/// Where a message landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    /// The partition it was appended to.
    pub partition: u32,
    /// Its offset in that partition.
    pub offset: u64,
    /// The message's id.
    pub id: MessageId,
}

/// The result of a [`Producer::send_async`], resolved when the broker
/// acknowledges (or the message fails for good).
#[derive(Debug)]
pub struct DeliveryFuture {
    rx: oneshot::Receiver<Result<Delivery>>,
}

impl Future for DeliveryFuture {
    type Output = Result<Delivery>;

    fn poll(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        Pin::new(&mut self.rx)
            .poll(cx)
            .map(|r| r.unwrap_or(Err(ClientError::Closed)))
    }
}

/// A message queued in a lane.
#[derive(Debug)]
struct Queued {
    msg: Message,
    done: oneshot::Sender<Result<Delivery>>,
    permit: OwnedSemaphorePermit,
}

#[derive(Debug)]
enum LaneMsg {
    Send(Queued),
    /// Messages sent together: never split, answered together.
    Group {
        msgs: Vec<Message>,
        done: oneshot::Sender<Result<Vec<Delivery>>>,
        permit: OwnedSemaphorePermit,
    },
    Flush(oneshot::Sender<()>),
}

/// Who waits for the messages of a batch, in order.
#[derive(Debug)]
enum Waiter {
    One(oneshot::Sender<Result<Delivery>>),
    Group(usize, oneshot::Sender<Result<Vec<Delivery>>>),
}

/// Sends messages; cheap to clone, all clones share lanes and stream.
#[derive(Debug, Clone)]
pub struct Producer {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    conn: Arc<Connection>,
    config: ProducerConfig,
    producer_id: i64,
    epoch: i16,
    max_message_bytes: usize,
    lanes: Mutex<HashMap<(String, u32), mpsc::UnboundedSender<LaneMsg>>>,
    partitioner: Partitioner,
    buffer: Arc<Semaphore>,
    stream: tokio::sync::Mutex<Option<Arc<RequestStream>>>,
    /// One-way sends went out since the last flush.
    oneway_sent: std::sync::atomic::AtomicBool,
}

impl Producer {
    pub(crate) async fn new(conn: Arc<Connection>, mut config: ProducerConfig) -> Result<Producer> {
        let info = conn.handshake_info().await?;
        let (producer_id, epoch) = if config.idempotent {
            config.max_in_flight = config.max_in_flight.clamp(1, 5);
            conn.allocate_producer_id().await?
        } else {
            (-1, -1)
        };
        let max_message_bytes = info.max_message_bytes as usize;
        config.max_batch_bytes = config.max_batch_bytes.min(max_message_bytes).max(1);
        config.max_in_flight = config.max_in_flight.max(1);
        Ok(Producer {
            inner: Arc::new(Inner {
                conn,
                buffer: Arc::new(Semaphore::new(config.buffer_bytes.max(1))),
                config,
                producer_id,
                epoch,
                max_message_bytes,
                lanes: Mutex::default(),
                partitioner: Partitioner::default(),
                stream: tokio::sync::Mutex::new(None),
                oneway_sent: std::sync::atomic::AtomicBool::new(false),
            }),
        })
    }

    /// The broker-assigned producer id (-1 when not idempotent).
    pub fn producer_id(&self) -> i64 {
        self.inner.producer_id
    }

    /// Sends and waits for the durable acknowledgement.
    pub async fn send(&self, msg: Message) -> Result<Delivery> {
        self.send_async(msg).await?.await
    }

    /// Queues the message and returns at once (waiting only if the buffer is
    /// full); the future resolves with the acknowledgement.
    pub async fn send_async(&self, msg: Message) -> Result<DeliveryFuture> {
        let size = msg.approx_size();
        if size > self.inner.max_message_bytes {
            return Err(ClientError::MessageTooLarge {
                size,
                max: self.inner.max_message_bytes,
            });
        }
        let partition = self.inner.partition_for(&msg).await?;
        let permit = self
            .inner
            .buffer
            .clone()
            .acquire_many_owned(size.min(self.inner.config.buffer_bytes) as u32)
            .await
            .map_err(|_| ClientError::Closed)?;
        let (done, rx) = oneshot::channel();
        let lane = self.inner.lane(&msg.topic, partition);
        lane.send(LaneMsg::Send(Queued { msg, done, permit }))
            .map_err(|_| ClientError::Closed)?;
        Ok(DeliveryFuture { rx })
    }

    /// Queues the message and calls `callback` with the outcome.
    pub async fn send_with_callback(
        &self,
        msg: Message,
        callback: impl FnOnce(Result<Delivery>) + Send + 'static,
    ) -> Result<()> {
        let fut = self.send_async(msg).await?;
        tokio::spawn(async move { callback(fut.await) });
        Ok(())
    }

    /// Sends many messages and waits for all; results are in input order.
    /// Messages for the same partition travel as one batch (split only at
    /// the batch size limit), the cheapest way to send many small messages.
    pub async fn send_batch(
        &self,
        msgs: impl IntoIterator<Item = Message>,
    ) -> Vec<Result<Delivery>> {
        let msgs: Vec<Message> = msgs.into_iter().collect();
        let n = msgs.len();
        let mut out: Vec<Option<Result<Delivery>>> = (0..n).map(|_| None).collect();
        // (topic, partition) -> indexes, in input order.
        let mut groups: Vec<((String, u32), Vec<usize>)> = Vec::new();
        let mut slots: Vec<Option<Message>> = msgs.into_iter().map(Some).collect();
        for (i, slot) in slots.iter().enumerate() {
            let m = slot.as_ref().expect("not taken yet");
            let size = m.approx_size();
            if size > self.inner.max_message_bytes {
                out[i] = Some(Err(ClientError::MessageTooLarge {
                    size,
                    max: self.inner.max_message_bytes,
                }));
                continue;
            }
            match self.inner.partition_for(m).await {
                Ok(p) => {
                    let key = (m.topic.clone(), p);
                    match groups.iter_mut().find(|(k, _)| *k == key) {
                        Some((_, idx)) => idx.push(i),
                        None => groups.push((key, vec![i])),
                    }
                }
                Err(e) => out[i] = Some(Err(e)),
            }
        }
        let mut pending = Vec::new();
        for ((topic, partition), idx) in groups {
            let lane = self.inner.lane(&topic, partition);
            let mut chunk: Vec<usize> = Vec::new();
            let mut bytes = 0;
            for (k, &i) in idx.iter().enumerate() {
                let size = slots[i].as_ref().map_or(0, Message::approx_size);
                chunk.push(i);
                bytes += size;
                let next = idx
                    .get(k + 1)
                    .and_then(|&j| slots[j].as_ref())
                    .map_or(0, Message::approx_size);
                if k + 1 == idx.len() || bytes + next > self.inner.config.max_batch_bytes {
                    let msgs: Vec<Message> =
                        chunk.iter().filter_map(|&i| slots[i].take()).collect();
                    let permit = match self
                        .inner
                        .buffer
                        .clone()
                        .acquire_many_owned(bytes.min(self.inner.config.buffer_bytes) as u32)
                        .await
                    {
                        Ok(p) => p,
                        Err(_) => break,
                    };
                    let (done, rx) = oneshot::channel();
                    if lane.send(LaneMsg::Group { msgs, done, permit }).is_ok() {
                        pending.push((std::mem::take(&mut chunk), rx));
                    }
                    chunk.clear();
                    bytes = 0;
                }
            }
        }
        for (idx, rx) in pending {
            match rx.await.unwrap_or(Err(ClientError::Closed)) {
                Ok(deliveries) => {
                    for (i, d) in idx.into_iter().zip(deliveries) {
                        out[i] = Some(Ok(d));
                    }
                }
                Err(e) => {
                    for i in idx {
                        out[i] = Some(Err(e.clone()));
                    }
                }
            }
        }
        out.into_iter()
            .map(|r| r.unwrap_or(Err(ClientError::Closed)))
            .collect()
    }

    /// Fire and forget: no batching, no acknowledgement, no retry. The
    /// cheapest send; a message can be lost without anyone knowing.
    pub async fn send_oneway(&self, msg: Message) -> Result<()> {
        let partition = self.inner.partition_for(&msg).await?;
        let batch = encode_batch(std::slice::from_ref(&msg), None);
        if batch.len() > self.inner.max_message_bytes {
            return Err(ClientError::MessageTooLarge {
                size: batch.len(),
                max: self.inner.max_message_bytes,
            });
        }
        let req = ProduceRequest {
            acks: Acks::None,
            entries: vec![ProduceEntry {
                topic: msg.topic,
                partition,
                batch,
            }],
        };
        let stream = self.inner.stream().await?;
        stream.send_unacknowledged(Op::Produce, &req.encode())?;
        self.inner.oneway_sent.store(true, Ordering::Release);
        Ok(())
    }

    /// Waits until every message queued so far is acknowledged or failed,
    /// and every one-way message sent so far has reached the broker.
    pub async fn flush(&self) {
        if self.inner.oneway_sent.swap(false, Ordering::AcqRel)
            && let Ok(stream) = self.inner.stream().await
        {
            // The broker writes a stream's produce requests in order, so the
            // answer to an empty acknowledged produce comes after every
            // one-way produce sent before it was written.
            let barrier = ProduceRequest {
                acks: Acks::Durable,
                entries: Vec::new(),
            };
            let _ = stream.request(&barrier, None).await;
        }
        let lanes: Vec<_> = self.inner.lanes.lock().values().cloned().collect();
        let mut waits = Vec::new();
        for lane in lanes {
            let (tx, rx) = oneshot::channel();
            if lane.send(LaneMsg::Flush(tx)).is_ok() {
                waits.push(rx);
            }
        }
        for w in waits {
            let _ = w.await;
        }
    }
}

impl Inner {
    async fn partition_for(&self, msg: &Message) -> Result<u32> {
        self.partitioner.partition_for(&self.conn, msg).await
    }

    fn lane(self: &Arc<Self>, topic: &str, partition: u32) -> mpsc::UnboundedSender<LaneMsg> {
        let mut lanes = self.lanes.lock();
        if let Some(tx) = lanes.get(&(topic.to_owned(), partition)) {
            return tx.clone();
        }
        let (tx, rx) = mpsc::unbounded_channel();
        lanes.insert((topic.to_owned(), partition), tx.clone());
        let lane = Lane {
            inner: Arc::downgrade(self),
            topic: topic.to_owned(),
            partition,
            epoch: self.epoch,
            next_sequence: 0,
            sealed: 0,
            config: self.config.clone(),
            producer_id: self.producer_id,
        };
        tokio::spawn(lane.run(rx));
        tx
    }

    /// The producer's stream, reopened (reconnecting if needed) when it failed.
    async fn stream(&self) -> Result<Arc<RequestStream>> {
        let mut s = self.stream.lock().await;
        if let Some(stream) = s.as_ref()
            && !stream.is_closed()
        {
            return Ok(stream.clone());
        }
        let stream = self.conn.open_stream().await?;
        *s = Some(stream.clone());
        Ok(stream)
    }
}

/// Builds one record batch from messages (idempotence fields are set by the lane).
fn encode_batch(msgs: &[Message], producer: Option<(i64, i16)>) -> Bytes {
    let now = now_ms();
    let base_ts = msgs.first().and_then(|m| m.timestamp).unwrap_or(now);
    let capacity = msgs.iter().map(Message::approx_size).sum::<usize>() + 64;
    let mut b = BatchBuilder::with_capacity(base_ts, capacity);
    if let Some((id, epoch)) = producer {
        b = b.producer(id, epoch, 0);
    }
    for m in msgs {
        let headers = m.headers();
        b.push(
            m.timestamp.unwrap_or(now),
            m.key.as_deref(),
            Some(&m.value),
            &headers,
        );
    }
    b.finish()
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// A batch ready to send (or resend).
#[derive(Debug)]
struct Sealed {
    bytes: Bytes,
    records: i32,
    ids: Vec<MessageId>,
    waiters: Vec<Waiter>,
    _permits: Vec<OwnedSemaphorePermit>,
    deadline: Instant,
    attempts: u32,
    /// Order of sealing: retries go out in this order (sequence order).
    ordinal: u64,
}

impl Sealed {
    fn complete(self, partition: u32, result: &Result<ProduceResult>) {
        let delivery = |i: usize, id: MessageId| -> Result<Delivery> {
            match result {
                Ok(r) => Ok(Delivery {
                    partition,
                    offset: r.base_offset + i as u64,
                    id,
                }),
                Err(e) => Err(e.clone()),
            }
        };
        let mut i = 0;
        for waiter in self.waiters {
            match waiter {
                Waiter::One(tx) => {
                    let _ = tx.send(delivery(i, self.ids[i]));
                    i += 1;
                }
                Waiter::Group(n, tx) => {
                    let r = (i..i + n).map(|k| delivery(k, self.ids[k])).collect();
                    let _ = tx.send(r);
                    i += n;
                }
            }
        }
    }
}

type InFlight = Pin<Box<dyn Future<Output = (Sealed, Result<ProduceResult>)> + Send>>;

/// One partition's sender (see the module docs).
struct Lane {
    inner: std::sync::Weak<Inner>,
    topic: String,
    partition: u32,
    producer_id: i64,
    epoch: i16,
    next_sequence: i32,
    /// Batches sealed so far (each batch's ordinal).
    sealed: u64,
    config: ProducerConfig,
}

/// Messages gathered for the next batch.
#[derive(Default)]
struct Open {
    msgs: Vec<Message>,
    waiters: Vec<Waiter>,
    permits: Vec<OwnedSemaphorePermit>,
    bytes: usize,
    since: Option<Instant>,
}

impl Lane {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<LaneMsg>) {
        let mut open = Open::default();
        let mut ready: VecDeque<Sealed> = VecDeque::new();
        let mut in_flight: FuturesOrdered<InFlight> = FuturesOrdered::new();
        let mut flushers: Vec<oneshot::Sender<()>> = Vec::new();
        let mut backoff_until: Option<Instant> = None;
        let mut receiving = true;
        loop {
            // Without linger a batch goes as soon as a slot is free (so it
            // grows while earlier batches are in flight); with linger it
            // waits that long for company.
            let due = if self.config.linger.is_zero() {
                ready.is_empty() && in_flight.len() < self.config.max_in_flight
            } else {
                open.since
                    .is_some_and(|t| t + self.config.linger <= Instant::now())
            };
            if !open.msgs.is_empty() && (!receiving || due) {
                ready.push_back(self.seal(&mut open));
            }
            if backoff_until.is_none_or(|t| t <= Instant::now()) {
                backoff_until = None;
                while in_flight.len() < self.config.max_in_flight
                    && let Some(batch) = ready.pop_front()
                {
                    match self.launch(batch).await {
                        Ok(f) => in_flight.push_back(f),
                        Err((batch, e)) => {
                            ready.push_front(batch);
                            self.on_failure(e, &mut ready, &mut in_flight, &mut backoff_until)
                                .await;
                            break;
                        }
                    }
                }
            }
            if open.msgs.is_empty() && ready.is_empty() && in_flight.is_empty() {
                for f in flushers.drain(..) {
                    let _ = f.send(());
                }
                if !receiving {
                    return;
                }
            }
            let linger_at = open.since.map(|t| t + self.config.linger);
            tokio::select! {
                m = rx.recv(), if receiving => {
                    match m {
                        Some(m) => {
                            self.accept(m, &mut open, &mut ready, &mut flushers);
                            while let Ok(m) = rx.try_recv() {
                                self.accept(m, &mut open, &mut ready, &mut flushers);
                            }
                        }
                        None => receiving = false,
                    }
                }
                Some((batch, result)) = in_flight.next(), if !in_flight.is_empty() => {
                    match result {
                        Ok(r) => batch.complete(self.partition, &Ok(r)),
                        Err(e) => {
                            ready.push_front(batch);
                            self.on_failure(e, &mut ready, &mut in_flight, &mut backoff_until).await;
                        }
                    }
                }
                _ = sleep_until_opt(linger_at), if linger_at.is_some() && !self.config.linger.is_zero() => {}
                _ = sleep_until_opt(backoff_until), if backoff_until.is_some() => {}
            }
        }
    }

    fn accept(
        &mut self,
        m: LaneMsg,
        open: &mut Open,
        ready: &mut VecDeque<Sealed>,
        flushers: &mut Vec<oneshot::Sender<()>>,
    ) {
        match m {
            LaneMsg::Send(q) => {
                let size = q.msg.approx_size();
                if !open.msgs.is_empty() && open.bytes + size > self.config.max_batch_bytes {
                    ready.push_back(self.seal(open));
                }
                open.since.get_or_insert_with(Instant::now);
                open.bytes += size;
                open.msgs.push(q.msg);
                open.waiters.push(Waiter::One(q.done));
                open.permits.push(q.permit);
            }
            LaneMsg::Group { msgs, done, permit } => {
                let size: usize = msgs.iter().map(Message::approx_size).sum();
                if !open.msgs.is_empty() && open.bytes + size > self.config.max_batch_bytes {
                    ready.push_back(self.seal(open));
                }
                open.since.get_or_insert_with(Instant::now);
                open.bytes += size;
                open.waiters.push(Waiter::Group(msgs.len(), done));
                open.msgs.extend(msgs);
                open.permits.push(permit);
            }
            LaneMsg::Flush(tx) => {
                if !open.msgs.is_empty() {
                    ready.push_back(self.seal(open));
                }
                flushers.push(tx);
            }
        }
    }

    fn seal(&mut self, open: &mut Open) -> Sealed {
        let open = std::mem::take(open);
        let producer = (self.producer_id >= 0).then_some((self.producer_id, self.epoch));
        let mut bytes = encode_batch(&open.msgs, producer);
        let records = open.msgs.len() as i32;
        if producer.is_some() {
            bytes = renumbered(bytes, self.epoch, self.next_sequence);
            self.next_sequence = self.next_sequence.wrapping_add(records) & i32::MAX;
        }
        Sealed {
            bytes,
            records,
            ids: open.msgs.iter().map(|m| m.id).collect(),
            waiters: open.waiters,
            _permits: open.permits,
            deadline: open.since.unwrap_or_else(Instant::now) + self.config.delivery_timeout,
            attempts: 0,
            ordinal: {
                self.sealed += 1;
                self.sealed
            },
        }
    }

    /// Sends a batch; the future resolves with the broker's answer.
    async fn launch(
        &self,
        mut batch: Sealed,
    ) -> std::result::Result<InFlight, (Sealed, ClientError)> {
        let Some(inner) = self.inner.upgrade() else {
            return Err((batch, ClientError::Closed));
        };
        let stream = match inner.stream().await {
            Ok(s) => s,
            Err(e) => return Err((batch, e)),
        };
        batch.attempts += 1;
        let req = ProduceRequest {
            acks: Acks::Durable,
            entries: vec![ProduceEntry {
                topic: self.topic.clone(),
                partition: self.partition,
                batch: batch.bytes.clone(),
            }],
        };
        let pending = match stream.send(&req) {
            Ok(p) => p,
            Err(e) => return Err((batch, e)),
        };
        Ok(Box::pin(async move {
            // Never wait past the batch's delivery deadline.
            let limit = batch
                .deadline
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(1));
            let result = stream
                .response_within::<ProduceRequest>(pending, limit)
                .await
                .and_then(|resp| {
                    let r = resp.results.into_iter().next().ok_or_else(|| {
                        ClientError::Broker(WireError::new(
                            ErrorCode::Internal,
                            "empty produce response",
                        ))
                    })?;
                    if r.error == ErrorCode::None {
                        Ok(r)
                    } else {
                        Err(ClientError::Broker(WireError::new(
                            r.error,
                            r.message.clone(),
                        )))
                    }
                });
            (batch, result)
        }))
    }

    /// The oldest batch failed (it is at the front of `ready`). Collects
    /// the outcome of everything in flight behind it, then retries in order
    /// after a backoff, or fails the batch and renumbers the rest.
    async fn on_failure(
        &mut self,
        error: ClientError,
        ready: &mut VecDeque<Sealed>,
        in_flight: &mut FuturesOrdered<InFlight>,
        backoff_until: &mut Option<Instant>,
    ) {
        let Some(front) = ready.pop_front() else {
            return;
        };
        // Later batches cannot have been written past a gap; those that
        // were (the front had been written too) answer as duplicates on resend.
        let mut behind = Vec::new();
        while let Some((batch, result)) = in_flight.next().await {
            match result {
                Ok(r) => batch.complete(self.partition, &Ok(r)),
                Err(_) => behind.push(batch),
            }
        }
        for b in behind.into_iter().rev() {
            ready.push_front(b);
        }
        let retriable = error.is_retriable() && Instant::now() < front.deadline;
        if matches!(error, ClientError::Disconnected(_))
            && let Some(inner) = self.inner.upgrade()
        {
            inner.stream.lock().await.take();
        }
        if retriable {
            let exp = front.attempts.min(10);
            let wait = (self.config.retry_backoff * 2u32.pow(exp.saturating_sub(1)))
                .min(self.config.max_backoff);
            tracing::debug!(topic = %self.topic, partition = self.partition, error = %error, ?wait, "retrying batch");
            *backoff_until = Some(Instant::now() + wait);
            // Back in sealing order: when the failure was a launch, the
            // batches that were in flight are older than `front`, and
            // resending it first would gap the sequence (refused, then
            // renumbered under a new epoch: a written batch sent again).
            let at = ready
                .iter()
                .position(|b| b.ordinal > front.ordinal)
                .unwrap_or(ready.len());
            ready.insert(at, front);
            return;
        }
        let error = if error.is_retriable() {
            ClientError::Timeout(self.config.delivery_timeout)
        } else {
            error
        };
        tracing::debug!(topic = %self.topic, partition = self.partition, error = %error, "batch failed");
        front.complete(self.partition, &Err(error));
        if self.producer_id >= 0 {
            // Whether the failed batch was written is unknown: start a new
            // epoch so what follows cannot be mistaken for it or gap on it.
            self.epoch = self.epoch.wrapping_add(1).max(0);
            self.next_sequence = 0;
            for b in ready.iter_mut() {
                b.bytes = renumbered(b.bytes.clone(), self.epoch, self.next_sequence);
                self.next_sequence = self.next_sequence.wrapping_add(b.records) & i32::MAX;
            }
        }
    }
}

fn renumbered(bytes: Bytes, epoch: i16, sequence: i32) -> Bytes {
    let mut buf = bytes
        .try_into_mut()
        .unwrap_or_else(|b| BytesMut::from(&b[..]));
    set_producer_sequence(&mut buf, epoch, sequence);
    buf.freeze()
}

async fn sleep_until_opt(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => futures::future::pending().await,
    }
}
