//! Pushed delivery: [`GroupConsumer::subscribe`] turns a consumer into a
//! [`GroupStream`] fed by a subscription (a [`PushStream`](crate::conn)
//! whose one request the broker answers with batch after batch), with
//! credit flow control so the local buffer never holds more than the
//! window; [`GroupConsumer::run`] drives handlers from it.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use futures::Stream;
use futures::stream::{FuturesUnordered, StreamExt};
use sluice_protocol::ops::{GrantCreditRequest, GroupBatch, MemberRef, SubscribeRequest};
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;

use super::consumer::GroupConsumer;
use super::member::{Shared, is_fatal, needs_rejoin, stopped};
use super::message::GroupMessage;
use crate::error::{ClientError, Result};

/// First and longest pause before a failed subscription is opened again.
const RESUBSCRIBE_BACKOFF_MIN: Duration = Duration::from_millis(20);
const RESUBSCRIBE_BACKOFF_MAX: Duration = Duration::from_secs(5);

impl GroupConsumer {
    /// Turns the consumer into a stream of pushed messages; see [`GroupStream`].
    pub fn subscribe(self) -> GroupStream {
        let auto_ack = self.shared.config.auto_ack;
        self.subscribe_inner(auto_ack)
    }

    fn subscribe_inner(self, auto_ack: bool) -> GroupStream {
        let window = self.shared.config.credit_window.max(1);
        let flow = Arc::new(Flow {
            window,
            chunk: (window / 4).max(1),
            buffered: AtomicU64::new(0),
            taken: Notify::new(),
        });
        let (tx, rx) = mpsc::unbounded_channel();
        let driver = tokio::spawn(subscription_loop(self.shared.clone(), flow.clone(), tx));
        GroupStream {
            consumer: self,
            rx,
            current: Vec::new().into_iter(),
            flow,
            taken: 0,
            driver: Some(driver),
            auto_ack,
        }
    }

    /// Runs `handler` on every message, at most `concurrency` at once,
    /// until `shutdown` completes; then waits for the running handlers,
    /// sends the queued settlements and leaves the group.
    ///
    /// `Ok` acks the message, `Err` nacks it for a retry with the error's
    /// text as the reason. A handler may settle the message itself (say,
    /// [`GroupMessage::dead_letter`] for a message that can never succeed);
    /// its result then changes nothing. [`GroupConfig::auto_ack`](crate::GroupConfig::auto_ack) does not
    /// apply here. Handlers run concurrently on the calling task: spawn
    /// CPU-heavy work onto other threads.
    ///
    /// Returns an error that retrying will not cure (after leaving);
    /// transient ones (connection lost, broker restarting) are retried.
    ///
    /// ```no_run
    /// # async fn demo(client: sluice_client::Client) -> sluice_client::Result<()> {
    /// use sluice_client::{GroupConfig, GroupMessage};
    /// let consumer = client.group_consumer(GroupConfig::new("billing", "orders")).await?;
    /// consumer
    ///     .run(32, tokio::signal::ctrl_c(), |m: GroupMessage| async move {
    ///         let text = std::str::from_utf8(&m.value).map_err(|e| e.to_string())?;
    ///         println!("{text}");
    ///         Ok::<_, String>(())
    ///     })
    ///     .await
    /// # }
    /// ```
    pub async fn run<S, F, Fut, E>(
        self,
        concurrency: usize,
        shutdown: S,
        mut handler: F,
    ) -> Result<()>
    where
        S: Future,
        F: FnMut(GroupMessage) -> Fut,
        Fut: Future<Output = std::result::Result<(), E>>,
        E: fmt::Display,
    {
        let concurrency = concurrency.max(1);
        let mut messages = self.subscribe_inner(false);
        let mut running = FuturesUnordered::new();
        let mut outcome = Ok(());
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                biased;
                _ = &mut shutdown => break,
                Some(()) = running.next(), if !running.is_empty() => {}
                next = messages.next(), if running.len() < concurrency => match next {
                    Some(Ok(m)) => {
                        let handle = m.ack_handle();
                        let work = handler(m);
                        running.push(async move {
                            match work.await {
                                Ok(()) => handle.ack(),
                                Err(e) => handle.nack(format!("{e:#}")),
                            };
                        });
                    }
                    Some(Err(e)) => {
                        outcome = Err(e);
                        break;
                    }
                    None => break,
                },
            }
        }
        while running.next().await.is_some() {}
        let left = messages.leave().await;
        outcome.and(left)
    }
}

/// Credit flow control between a subscription and its [`GroupStream`].
#[derive(Debug)]
struct Flow {
    window: u32,
    /// Credit is granted in steps of at least this much.
    chunk: u32,
    /// Messages pushed and not yet handed to the application.
    buffered: AtomicU64,
    /// The application took messages out.
    taken: Notify,
}

impl Flow {
    fn buffered(&self) -> u64 {
        self.buffered.load(Ordering::Relaxed)
    }
}

/// Credit to grant now: the room left in the window beyond what is
/// buffered and what the broker may still push, once it is worth a frame.
fn credit_to_grant(window: u32, chunk: u32, buffered: u64, outstanding: u64) -> u32 {
    let room = u64::from(window).saturating_sub(buffered.saturating_add(outstanding));
    if room >= u64::from(chunk.max(1)) {
        room as u32
    } else {
        0
    }
}

type Pushed = Result<Vec<GroupMessage>>;

/// Keeps a subscription open: opens it, and after it ends, rejoins if the
/// member is gone, and opens it again (with a growing pause after
/// failures). Ends on shutdown, when the stream is dropped, or after
/// reporting an error that retrying will not cure.
async fn subscription_loop(
    shared: Arc<Shared>,
    flow: Arc<Flow>,
    tx: mpsc::UnboundedSender<Pushed>,
) {
    let mut shutdown = shared.shutdown.subscribe();
    let mut backoff = RESUBSCRIBE_BACKOFF_MIN;
    // Whether the member was replaced since messages last arrived.
    let mut rejoined = false;
    loop {
        let member = shared.member_ref();
        let mut progress = false;
        let err = tokio::select! {
            e = subscribe_once(&shared, &member, &flow, &tx, &mut progress) => e,
            _ = stopped(&mut shutdown) => return,
            _ = tx.closed() => return,
        };
        if progress {
            backoff = RESUBSCRIBE_BACKOFF_MIN;
            rejoined = false;
        }
        let err = if needs_rejoin(&err) {
            match shared.rejoin(&member.member_id).await {
                // A new member subscribes at once; a second one without
                // messages in between waits like any failure.
                Ok(()) if !rejoined => {
                    rejoined = true;
                    continue;
                }
                Ok(()) => err,
                Err(e) => e,
            }
        } else {
            err
        };
        let pause = backoff;
        backoff = (backoff * 2).min(RESUBSCRIBE_BACKOFF_MAX);
        if matches!(err, ClientError::Closed) || shared.is_shutting_down() {
            return;
        }
        if is_fatal(&err) {
            let _ = tx.send(Err(err));
            return;
        }
        tracing::warn!(
            group = %shared.config.group,
            error = %err,
            retry_in = ?pause,
            "group subscription interrupted"
        );
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = stopped(&mut shutdown) => return,
            _ = tx.closed() => return,
        }
    }
}

/// The messages one pushed batch carries.
fn pushed(shared: &Shared, member: &MemberRef, batch: &GroupBatch) -> Result<Vec<GroupMessage>> {
    shared.note_generation(&member.member_id, batch.generation);
    shared.parse(batch)
}

/// One subscription on a stream of its own, until it fails; returns why.
/// Sets `progress` when messages arrive.
async fn subscribe_once(
    shared: &Shared,
    member: &MemberRef,
    flow: &Flow,
    tx: &mpsc::UnboundedSender<Pushed>,
    progress: &mut bool,
) -> ClientError {
    let mut outstanding = u64::from(flow.window).saturating_sub(flow.buffered());
    let req = SubscribeRequest {
        member: member.clone(),
        credit: outstanding as u32,
        max_bytes: shared.config.max_bytes,
    };
    let mut push = match shared.conn.open_push(&req).await {
        Ok(p) => p,
        Err(e) => return e,
    };
    loop {
        tokio::select! {
            batch = push.next() => {
                let messages = match batch.and_then(|b| pushed(shared, member, &b)) {
                    Ok(m) => m,
                    Err(e) => return e,
                };
                if !messages.is_empty() {
                    let n = messages.len() as u64;
                    outstanding = outstanding.saturating_sub(n);
                    flow.buffered.fetch_add(n, Ordering::Relaxed);
                    *progress = true;
                    if tx.send(Ok(messages)).is_err() {
                        return ClientError::Closed;
                    }
                }
            }
            _ = flow.taken.notified() => {}
        }
        let grant = credit_to_grant(flow.window, flow.chunk, flow.buffered(), outstanding);
        if grant > 0 {
            let req = GrantCreditRequest {
                member: member.clone(),
                messages: grant,
            };
            if let Err(e) = push.send(&req).await {
                return e;
            }
            outstanding += u64::from(grant);
        }
    }
}

/// Messages the broker pushes to this member, as a [`Stream`].
///
/// The broker pushes only as much as the credit window
/// ([`GroupConfig::credit_window`](crate::GroupConfig::credit_window)) allows: credit is granted back as the
/// application takes messages out, so the local buffer never holds more
/// than the window. Connection losses and a forgotten member are repaired
/// in the background (rejoin, resubscribe) and only logged; an `Err` item
/// is an error that retrying will not cure, and the stream ends after it.
///
/// Dropping the stream leaves the group as dropping the consumer does;
/// buffered messages not handed out yet go back to the broker's care.
#[derive(Debug)]
pub struct GroupStream {
    consumer: GroupConsumer,
    rx: mpsc::UnboundedReceiver<Pushed>,
    current: std::vec::IntoIter<GroupMessage>,
    flow: Arc<Flow>,
    /// Messages taken out since the subscription was last told.
    taken: u32,
    driver: Option<JoinHandle<()>>,
    auto_ack: bool,
}

impl GroupStream {
    /// The consumer behind the stream (membership, stats, acks).
    pub fn consumer(&self) -> &GroupConsumer {
        &self.consumer
    }

    /// Ends the subscription, sends the queued settlements and leaves the
    /// group. Buffered messages not handed out are dropped unsettled (the
    /// broker hands them to other members).
    pub async fn leave(mut self) -> Result<()> {
        self.consumer.shared.shutdown.send_replace(true);
        if let Some(driver) = self.driver.take() {
            let _ = driver.await;
        }
        let GroupStream { consumer, .. } = self;
        consumer.leave().await
    }
}

impl Stream for GroupStream {
    type Item = Result<GroupMessage>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if let Some(m) = this.current.next() {
                this.flow.buffered.fetch_sub(1, Ordering::Relaxed);
                this.taken += 1;
                if this.taken >= this.flow.chunk || this.current.len() == 0 {
                    this.taken = 0;
                    this.flow.taken.notify_one();
                }
                if this.auto_ack {
                    m.ack();
                }
                return Poll::Ready(Some(Ok(m)));
            }
            match ready!(this.rx.poll_recv(cx)) {
                Some(Ok(batch)) => this.current = batch.into_iter(),
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                None => return Poll::Ready(None),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credit_is_granted_in_chunks_within_the_window() {
        // Everything pushed is still buffered: no room.
        assert_eq!(credit_to_grant(1024, 256, 1024, 0), 0);
        // The application took less than a chunk: not worth a frame yet.
        assert_eq!(credit_to_grant(1024, 256, 900, 0), 0);
        // A chunk's worth taken: grant all the room.
        assert_eq!(credit_to_grant(1024, 256, 700, 0), 324);
        // Credit the broker still holds counts against the window.
        assert_eq!(credit_to_grant(1024, 256, 0, 1024), 0);
        assert_eq!(credit_to_grant(1024, 256, 100, 500), 424);
        // Over-delivery never underflows.
        assert_eq!(credit_to_grant(10, 2, 50, 7), 0);
        assert_eq!(credit_to_grant(1, 0, 0, 0), 1);
    }
}
