//! One dispatch: every decoded request to the broker call that answers it.
//!
//! The match in [`Broker::dispatch`] is exhaustive over [`Request`], which
//! the protocol's op table generates, so a new op does not compile until it
//! is handled here. What the network layer must do with each request
//! (answer now, run it in its own task, or run a push subscription) is the
//! [`Dispatched`] it gets back; it keeps the sockets, this keeps the rules.

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use futures::future::BoxFuture;
use sluice_protocol::ops::{
    Acks, Empty, Op, Payload, ProduceRequest, Request, RequestPayload, SubscribeRequest,
};
use sluice_protocol::{ErrorCode, WireError};

use super::{Broker, Session};

/// The connection a request came in on, as far as dispatch needs it.
#[derive(Debug, Clone, Copy)]
pub struct Caller<'a> {
    /// Set by the last successful handshake on any of the connection's
    /// streams; every other request needs it.
    pub session: &'a parking_lot::Mutex<Option<Session>>,
    /// Group members joined over the connection leave when it closes.
    pub connection: u64,
}

/// A request's answer: the response payload for `op`, or the error that
/// fails the whole request.
#[derive(Debug)]
pub struct Answer {
    pub op: Op,
    pub result: Result<Bytes, WireError>,
}

impl Answer {
    /// The answer to a request of type `R`: typed, so a handler cannot
    /// answer with another op's response.
    fn of<R: RequestPayload>(result: Result<R::Response, WireError>) -> Answer {
        Answer {
            op: R::OP,
            result: result.map(|p| p.encode()),
        }
    }
}

/// What the network layer does with a dispatched request.
pub enum Dispatched {
    /// Already handled, in stream order; `None` for a request that is never
    /// answered (a one-way `GrantCredit`).
    Done(Option<Answer>),
    /// Runs in its own task so the stream reads on; holds the request's
    /// in-flight permit until it completes. `None`: nothing to send (a
    /// produce with acks 0).
    Later(BoxFuture<'static, Option<Answer>>),
    /// A push subscription: runs for as long as it lasts, without an
    /// in-flight permit.
    Subscribe(SubscribeRequest),
}

impl std::fmt::Debug for Dispatched {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Dispatched::Done(a) => f.debug_tuple("Done").field(a).finish(),
            Dispatched::Later(_) => f.write_str("Later(..)"),
            Dispatched::Subscribe(r) => f.debug_tuple("Subscribe").field(r).finish(),
        }
    }
}

/// Runs `handle(request)` later, in its own task, answering with its result.
fn later<R, Fut>(request: R, handle: impl FnOnce(R) -> Fut) -> Dispatched
where
    R: RequestPayload,
    Fut: Future<Output = Result<R::Response, WireError>> + Send + 'static,
{
    let answer = handle(request);
    Dispatched::Later(Box::pin(async move { Some(Answer::of::<R>(answer.await)) }))
}

impl Broker {
    /// Handles one request. Handshakes and produce writes happen here,
    /// before the next frame of the stream is read (so pipelined requests
    /// see the session, and one stream's batches reach each partition in
    /// the order sent); the rest is handed back to run concurrently.
    pub async fn dispatch(self: &Arc<Self>, request: Request, caller: Caller<'_>) -> Dispatched {
        let session = caller.session.lock().clone();
        let b = self.clone();
        match (request, session) {
            (Request::Handshake(r), _) => {
                let result = self.handshake(r).await.map(|(session, response)| {
                    tracing::debug!(client = %session.client_id, "handshake");
                    *caller.session.lock() = Some(session);
                    response
                });
                Dispatched::Done(Some(Answer::of::<sluice_protocol::ops::HandshakeRequest>(
                    result,
                )))
            }
            (request, None) => Dispatched::Done(Some(Answer {
                op: request.op(),
                result: Err(WireError::new(
                    ErrorCode::NotAuthenticated,
                    "send a handshake (with a valid token) before other requests",
                )),
            })),
            (Request::Produce(r), Some(_)) => {
                let acks = r.acks;
                // Written here, in stream order; durability is awaited later.
                let written = self.produce_write(r);
                Dispatched::Later(Box::pin(async move {
                    let response = b.produce_complete(written).await;
                    (acks == Acks::Durable).then(|| Answer::of::<ProduceRequest>(Ok(response)))
                }))
            }
            (Request::GrantCredit(r), Some(_)) => {
                // One-way: no response, even on error (the subscription
                // itself reports an unknown member).
                if let Ok(member) = self.group_member(&r.member) {
                    member.credit.add(r.messages);
                }
                Dispatched::Done(None)
            }
            (Request::Subscribe(r), Some(_)) => Dispatched::Subscribe(r),
            (Request::JoinGroup(r), Some(session)) => {
                let connection = caller.connection;
                later(r, move |r| async move {
                    b.join_group(r, &session, connection).await
                })
            }
            (Request::CreateTopic(r), Some(_)) => later(r, move |r| async move {
                b.create_topic(r).await.map(|()| Empty)
            }),
            (Request::DeleteTopic(r), Some(_)) => later(r, move |r| async move {
                b.delete_topic(r).await.map(|()| Empty)
            }),
            (Request::ListTopics(r), Some(_)) => {
                later(r, move |_| async move { Ok(b.list_topics()) })
            }
            (Request::DescribeTopic(r), Some(_)) => {
                later(r, move |r| async move { b.describe_topic(r) })
            }
            (Request::Fetch(r), Some(_)) => later(r, move |r| async move { Ok(b.fetch(r).await) }),
            (Request::ListOffsets(r), Some(_)) => {
                later(r, move |r| async move { Ok(b.list_offsets(r).await) })
            }
            (Request::Schedule(r), Some(_)) => {
                later(r, move |r| async move { b.schedule(r).await })
            }
            (Request::CancelDelays(r), Some(_)) => {
                later(r, move |r| async move { b.cancel_delays(r).await })
            }
            (Request::ListDelays(r), Some(_)) => {
                later(r, move |r| async move { b.list_delays(r).await })
            }
            (Request::Heartbeat(r), Some(_)) => later(r, move |r| async move { b.heartbeat(&r.0) }),
            (Request::LeaveGroup(r), Some(_)) => {
                later(
                    r,
                    move |r| async move { b.leave_group(&r.0).map(|()| Empty) },
                )
            }
            (Request::PollGroup(r), Some(_)) => {
                later(r, move |r| async move { b.poll_group(r).await })
            }
            (Request::Ack(r), Some(_)) => later(r, move |r| async move { b.ack(r).await }),
            (Request::DescribeGroup(r), Some(_)) => {
                later(r, move |r| async move { b.describe_group(r.0.group).await })
            }
            (Request::ListGroups(r), Some(_)) => {
                later(r, move |_| async move { b.list_groups().await })
            }
            (Request::ResetGroup(r), Some(_)) => {
                later(r, move |r| async move { b.reset_group(r).await })
            }
            (Request::Redrive(r), Some(_)) => later(r, move |r| async move { b.redrive(r).await }),
            (Request::DeleteGroup(r), Some(_)) => later(r, move |r| async move {
                b.delete_group(r.0.group).await.map(|()| Empty)
            }),
            (Request::DeployFunction(r), Some(_)) => {
                later(r, move |r| async move { b.deploy_function(r).await })
            }
            (Request::ListFunctions(r), Some(_)) => {
                later(r, move |_| async move { Ok(b.list_functions()) })
            }
            (Request::DescribeFunction(r), Some(_)) => {
                later(
                    r,
                    move |r| async move { b.describe_function(&r.name).await },
                )
            }
            (Request::FunctionLogs(r), Some(_)) => {
                later(r, move |r| async move { b.function_logs(&r) })
            }
            (Request::DeleteFunction(r), Some(_)) => later(r, move |r| async move {
                b.delete_function(&r.name).await.map(|()| Empty)
            }),
            (Request::RollbackFunction(r), Some(_)) => {
                later(r, move |r| async move { b.rollback_function(r).await })
            }
        }
    }
}
