//! The reader task: socket bytes -> frames -> whole messages -> the channel that owns them.
//!
//! A server that breaks AMQP 0-9-1 gets a `connection.close` naming the rule it broke before
//! the socket goes, and the user gets the error (`Reader::refuse`). The reply codes, each
//! with the rule of the spec (section numbers of the AMQP 0-9-1 specification) it follows:
//!
//! - 501 `FRAME_ERROR`: bytes that are not a frame: an unknown frame type or a wrong frame-end
//!   (§4.2.3), a frame over `frame_max` (§4.2.3: "MUST signal a connection exception with reply
//!   code 501"), a heartbeat on a channel or with a payload (§4.2.7; §4.2.3 would say 503 for
//!   the channel, §4.2.7 is the heartbeat's own rule), a payload that does not decode (501 is
//!   "a malformed frame that the recipient could not decode"), a content header of another
//!   class than its method (§4.2.6.1).
//! - 503 `COMMAND_INVALID`: a method a client never takes there: a connection method on a
//!   channel (§4.2.3), one out of sequence on channel 0, `basic.publish` content.
//! - 504 `CHANNEL_ERROR`: a frame for a channel that is not open (never opened, or closed and
//!   its close-ok received: 504 is "a channel that had not been correctly opened"), content on
//!   channel 0 (§4.2.6.1), a channel's method on channel 0.
//! - 505 `UNEXPECTED_FRAME`: content out of order: a header or body nothing announced, a method
//!   inside a message, a body longer than its header said (§4.2.6).
//! - 540 `NOT_IMPLEMENTED`: a class or method id AMQP 0-9-1 does not define (§4.2.4 leaves
//!   class ids from 0xF000 to extensions: the ids are readable, the method is not implemented).
//!
//! §4.2.3 asks a peer to close "without sending any further data" after an unknown frame type or
//! a wrong frame-end; like RabbitMQ, serena still sends its 501 `connection.close` first (the
//! last bytes it sends), so the server's log says why. Two rules keep legitimate traffic from
//! being taken for a violation: after our `channel.close`, everything on that channel but the
//! close handshake is discarded until `close-ok` (frames the server sent before it saw our
//! close), and after our `connection.close`, everything but `close`/`close-ok` is discarded
//! (the `close / stability` rules of both classes).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::AsyncReadExt;

use super::shared::{ChannelShared, ConnShared, ConsumerEvent, PendingConfirm, lock};
use super::transport::ReadHalf;
use crate::error::{CloseScope, Error, Result, ReturnedMessage, UnexpectedCloseError};
use crate::proto::method::{basic, channel, connection};
use crate::proto::{
    Assembled, Content, ContentAssembler, DecodeError, Frame, FrameDecoder, Method, ShortString,
};

/// Read buffer growth step.
const READ_CHUNK: usize = 64 * 1024;

/// Reply codes of the `connection.close` we send a server that broke the protocol.
const FRAME_ERROR: u16 = 501;
const COMMAND_INVALID: u16 = 503;
const CHANNEL_ERROR: u16 = 504;
const UNEXPECTED_FRAME: u16 = 505;
const NOT_IMPLEMENTED: u16 = 540;
/// Class id of `connection.*`: its methods belong on channel 0 only.
const CONNECTION_CLASS: u16 = 10;

/// State the reader keeps to itself.
pub(crate) struct Reader {
    shared: Arc<ConnShared>,
    decoder: FrameDecoder,
    assemblers: Vec<Option<ContentAssembler>>,
}

/// How the read loop ended without an error.
enum Flow {
    Continue,
    /// `connection.close-ok` arrived for our close.
    Closed,
}

impl Reader {
    pub(crate) fn new(shared: Arc<ConnShared>) -> Self {
        let decoder = FrameDecoder::new(shared.frame_max());
        Reader {
            shared,
            decoder,
            assemblers: Vec::new(),
        }
    }

    /// Reads until the connection ends. `Ok` only after a clean close of ours.
    pub(crate) async fn run(
        mut self,
        mut socket: ReadHalf,
        mut buf: BytesMut,
        heartbeat: Duration,
    ) -> Result<()> {
        let dead_after = (!heartbeat.is_zero()).then(|| heartbeat * 2);
        // One timer for the connection's life, moved on only when it fires: cheaper than a
        // new timeout around every read.
        let mut watchdog = dead_after.map(|limit| Box::pin(tokio::time::sleep(limit)));
        let mut last_read = tokio::time::Instant::now();
        loop {
            while let Some(frame) = self
                .decoder
                .decode(&mut buf)
                .map_err(|e| self.refuse_decode(e))?
            {
                self.shared
                    .stats
                    .frames_received
                    .fetch_add(1, Ordering::Relaxed);
                if let Flow::Closed = self.handle_frame(frame)? {
                    return Ok(());
                }
            }
            buf.reserve(READ_CHUNK);
            let n = match (&mut watchdog, dead_after) {
                (Some(timer), Some(limit)) => loop {
                    tokio::select! {
                        read = socket.read_buf(&mut buf) => break read?,
                        () = timer.as_mut() => {
                            if last_read.elapsed() >= limit {
                                return Err(Error::HeartbeatTimeout(limit));
                            }
                            timer.as_mut().reset(last_read + limit);
                        }
                    }
                },
                _ => socket.read_buf(&mut buf).await?,
            };
            last_read = tokio::time::Instant::now();
            if n == 0 {
                return Err(Error::Io(Arc::new(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the server closed the socket",
                ))));
            }
        }
    }

    fn handle_frame(&mut self, frame: Frame) -> Result<Flow> {
        tracing::trace!(?frame, "received");
        if self.shared.closing.load(Ordering::Acquire)
            && !matches!(
                &frame,
                Frame::Method {
                    channel: 0,
                    method: Method::ConnectionClose(_) | Method::ConnectionCloseOk(_)
                }
            )
        {
            // connection.close / stability: after our close, all but close and close-ok is
            // discarded (deliveries and replies the server sent before it saw our close).
            return Ok(Flow::Continue);
        }
        match frame {
            Frame::Heartbeat => {
                self.shared
                    .stats
                    .heartbeats_received
                    .fetch_add(1, Ordering::Relaxed);
                Ok(Flow::Continue)
            }
            Frame::Method { channel: 0, method } => self.handle_connection_method(method),
            // §4.2.6.1: content frames on channel 0 are a channel error.
            frame if frame.channel() == 0 => Err(self.refuse(
                CHANNEL_ERROR,
                (0, 0),
                Error::UnexpectedMethod(format!("{} on channel 0", describe(&frame))),
            )),
            // §4.2.3: connection methods on another channel are an invalid command.
            Frame::Method { channel, method } if method.class_id() == CONNECTION_CLASS => Err(self
                .refuse(
                    COMMAND_INVALID,
                    (method.class_id(), method.method_id()),
                    Error::UnexpectedMethod(format!(
                        "{} on channel {channel}: connection methods belong on channel 0",
                        method.name()
                    )),
                )),
            frame => {
                let id = frame.channel();
                // A channel is in the table from our channel.open until its close handshake
                // is over (see `handle_channel_method`); anything else is not open, and the
                // check comes before an assembler slot is made for it, so a hostile channel
                // number cannot make the reader grow its table.
                let Some(ch) = self.shared.channel(id) else {
                    let cause = match &frame {
                        Frame::Method { method, .. } => (method.class_id(), method.method_id()),
                        _ => (0, 0),
                    };
                    return Err(self.refuse(
                        CHANNEL_ERROR,
                        cause,
                        Error::UnexpectedMethod(format!(
                            "{} on channel {id}, which is not open",
                            describe(&frame)
                        )),
                    ));
                };
                let slot = usize::from(id);
                if self.assemblers.len() <= slot {
                    self.assemblers.resize_with(slot + 1, || None);
                }
                let asm = self.assemblers[slot].get_or_insert_with(|| ContentAssembler::new(id));
                let assembled = asm.handle_frame(frame);
                if let Some(assembled) = assembled.map_err(|e| self.refuse_decode(e))? {
                    self.handle_channel(&ch, assembled)?;
                }
                Ok(Flow::Continue)
            }
        }
    }

    /// Tells the server which rule it broke: `connection.close` with `reply_code` and the
    /// (class, method) that broke it, or (0, 0). Returns `error`, for the user. The close is
    /// the last frame we send; the writer flushes it before the socket closes, and nothing
    /// waits for a close-ok from a peer that has broken the protocol.
    fn refuse(&self, reply_code: u16, (class_id, method_id): (u16, u16), error: Error) -> Error {
        let mut reply_text = error.to_string();
        if reply_text.len() > ShortString::MAX_LEN {
            // Cut on a character boundary: the text quotes names the server chose.
            let mut end = ShortString::MAX_LEN;
            while !reply_text.is_char_boundary(end) {
                end -= 1;
            }
            reply_text.truncate(end);
        }
        tracing::warn!(reply_code, %error, "the server broke the protocol; closing the connection");
        let _ = self.shared.send_method(
            0,
            &connection::Close {
                reply_code,
                reply_text: reply_text.into(),
                class_id,
                method_id,
            }
            .into(),
        );
        error
    }

    /// [`refuse`](Self::refuse) for bytes the decoder or a content assembler rejected.
    fn refuse_decode(&self, e: DecodeError) -> Error {
        let (code, cause) = match e {
            // §4.2.4: class ids from 0xF000 are for extensions, so an unknown class or method
            // is a frame we can read the ids of but do not implement.
            DecodeError::UnknownMethod {
                class_id,
                method_id,
            } => (NOT_IMPLEMENTED, (class_id, method_id)),
            // §4.2.6: incomplete or badly-formatted content.
            DecodeError::UnexpectedFrame { .. } | DecodeError::BodyTooLong { .. } => {
                (UNEXPECTED_FRAME, (0, 0))
            }
            // §4.2.3, §4.2.6.1, §4.2.7 and the rest: a frame we cannot decode.
            _ => (FRAME_ERROR, (0, 0)),
        };
        self.refuse(code, cause, Error::Protocol(e))
    }

    fn handle_connection_method(&mut self, method: Method) -> Result<Flow> {
        match method {
            Method::ConnectionClose(c) => {
                let _ = self.shared.send_method(0, &connection::CloseOk {}.into());
                let err = Error::UnexpectedClose(UnexpectedCloseError {
                    scope: CloseScope::Connection,
                    reply_code: c.reply_code,
                    reply_text: c.reply_text.to_string(),
                    class_id: c.class_id,
                    method_id: c.method_id,
                });
                tracing::warn!(error = %err, "connection closed by the server");
                Err(err)
            }
            Method::ConnectionCloseOk(_) if self.shared.closing.load(Ordering::Acquire) => {
                Ok(Flow::Closed)
            }
            Method::ConnectionBlocked(b) => {
                tracing::warn!(reason = %b.reason, "connection blocked by the broker");
                lock(&self.shared.out).blocked = Some(b.reason.to_string());
                Ok(Flow::Continue)
            }
            Method::ConnectionUnblocked(_) => {
                tracing::info!("connection unblocked");
                lock(&self.shared.out).blocked = None;
                self.shared.out_drained.notify_waiters();
                Ok(Flow::Continue)
            }
            Method::ConnectionUpdateSecretOk(_) => {
                self.shared.handle_update_secret_ok();
                Ok(Flow::Continue)
            }
            // A channel's method on channel 0 uses a channel that is not open; a connection
            // method here is out of sequence (start, tune, open-ok after the handshake).
            other => {
                let code = if other.class_id() == CONNECTION_CLASS {
                    COMMAND_INVALID
                } else {
                    CHANNEL_ERROR
                };
                Err(self.refuse(
                    code,
                    (other.class_id(), other.method_id()),
                    Error::UnexpectedMethod(format!("{} on channel 0", other.name())),
                ))
            }
        }
    }

    fn reset_assembler(&mut self, id: u16) {
        if let Some(slot) = self.assemblers.get_mut(usize::from(id)) {
            *slot = None;
        }
    }

    fn handle_channel(&mut self, ch: &Arc<ChannelShared>, assembled: Assembled) -> Result<()> {
        // channel.close / stability: after our close, everything but the close handshake is
        // discarded: the server sent it before it saw our close.
        if lock(&ch.state).closing {
            return match assembled {
                Assembled::Method(m @ (Method::ChannelClose(_) | Method::ChannelCloseOk(_))) => {
                    self.handle_channel_method(ch, m)
                }
                _ => Ok(()),
            };
        }
        match assembled {
            Assembled::Content(content) => self.handle_content(ch, content),
            Assembled::Method(method) => self.handle_channel_method(ch, method),
        }
    }

    fn handle_content(&mut self, ch: &Arc<ChannelShared>, content: Content) -> Result<()> {
        match &content.method {
            Method::BasicDeliver(d) => {
                let (tag, delivery_tag) = (d.consumer_tag.clone(), d.delivery_tag);
                let st = lock(&ch.state);
                // The message moves to its consumer; handed back only if that consumer is gone.
                let undelivered = match st.consumers.get(&tag) {
                    Some(tx) => tx.send(ConsumerEvent::Delivery(content)).is_err(),
                    None => true,
                };
                drop(st);
                if undelivered {
                    let _ = ch.cast(
                        &basic::Reject {
                            delivery_tag,
                            requeue: true,
                        }
                        .into(),
                    );
                }
                Ok(())
            }
            Method::BasicGetOk(_) => {
                self.reply(ch, Assembled::Content(content));
                Ok(())
            }
            Method::BasicReturn(r) => {
                let mut st = lock(&ch.state);
                let route = (r.exchange.clone(), r.routing_key.clone());
                let returned = ReturnedMessage {
                    reply_code: r.reply_code,
                    reply_text: r.reply_text.to_string(),
                    exchange: r.exchange.to_string(),
                    routing_key: r.routing_key.to_string(),
                    properties: content.properties,
                    body: content.body,
                };
                // Returns come in publish order, before the publish's confirm: the first
                // unconfirmed mandatory publish to the same route is the one.
                if let Some(p) = st
                    .confirms
                    .iter_mut()
                    .find(|p| p.returned.is_none() && p.mandatory_route.as_ref() == Some(&route))
                {
                    p.returned = Some(returned);
                } else {
                    tracing::warn!(exchange = %route.0, routing_key = %route.1, "unmatched basic.return dropped");
                }
                Ok(())
            }
            // basic.publish: content a client never receives.
            other => Err(self.refuse(
                COMMAND_INVALID,
                (other.class_id(), other.method_id()),
                Error::UnexpectedMethod(format!("{} with content from the server", other.name())),
            )),
        }
    }

    fn reply(&self, ch: &ChannelShared, reply: Assembled) {
        let waiter = lock(&ch.state).rpc.pop_front();
        match waiter {
            Some(w) => {
                let _ = w.send(Ok(reply));
            }
            None => tracing::warn!(channel = ch.id, ?reply, "reply with no call waiting"),
        }
    }

    fn handle_channel_method(&mut self, ch: &Arc<ChannelShared>, method: Method) -> Result<()> {
        match method {
            Method::ChannelClose(c) => {
                let _ = self.shared.send_method(ch.id, &channel::CloseOk {}.into());
                let err = Error::UnexpectedClose(UnexpectedCloseError {
                    scope: CloseScope::Channel(ch.id),
                    reply_code: c.reply_code,
                    reply_text: c.reply_text.to_string(),
                    class_id: c.class_id,
                    method_id: c.method_id,
                });
                tracing::debug!(channel = ch.id, error = %err, "channel closed by the server");
                if lock(&ch.state).closing {
                    // Our close and the server's crossed. channel.close / stability: the
                    // server answers our close with close-ok too, so the id stays taken until
                    // that close-ok (below) frees it; freed now, the close-ok could reach a new
                    // channel under the same id.
                    ch.fail(Error::Closed("channel"));
                } else {
                    // Free the id before anyone waiting learns the channel is gone.
                    lock(&self.shared.channels).release(ch.id);
                    self.reset_assembler(ch.id);
                    ch.fail(err);
                }
            }
            Method::ChannelCloseOk(_) => {
                // Free the id first, then wake `close()` (its waiter gets `Closed`).
                lock(&self.shared.channels).release(ch.id);
                self.reset_assembler(ch.id);
                ch.fail(Error::Closed("channel"));
            }
            Method::BasicAck(a) => confirm(ch, a.delivery_tag, a.multiple, true),
            Method::BasicNack(n) => confirm(ch, n.delivery_tag, n.multiple, false),
            Method::BasicCancel(c) => {
                let tx = lock(&ch.state).consumers.remove(&c.consumer_tag);
                if let Some(tx) = tx {
                    let _ = tx.send(ConsumerEvent::End(Error::ConsumerCancelled(
                        c.consumer_tag.to_string(),
                    )));
                }
                if !c.nowait {
                    let _ = ch.cast(
                        &basic::CancelOk {
                            consumer_tag: c.consumer_tag,
                        }
                        .into(),
                    );
                }
            }
            Method::ChannelFlow(f) => {
                lock(&ch.state).flow_paused = !f.active;
                let _ = ch.cast(&channel::FlowOk { active: f.active }.into());
                ch.flow.notify_waiters();
            }
            Method::BasicCancelOk(ref c) => {
                lock(&ch.state).consumers.remove(&c.consumer_tag);
                self.reply(ch, Assembled::Method(method));
            }
            other => self.reply(ch, Assembled::Method(other)),
        }
        Ok(())
    }
}

/// "method basic.deliver", "content header", "content body": what a frame is, for messages.
fn describe(frame: &Frame) -> String {
    match frame {
        Frame::Method { method, .. } => format!("method {}", method.name()),
        Frame::Header { .. } => "content header".into(),
        Frame::Body { .. } => "content body".into(),
        Frame::Heartbeat => "heartbeat".into(),
    }
}

/// Settles publishes up to `tag` (or exactly `tag`) with the broker's ack or nack.
fn confirm(ch: &ChannelShared, tag: u64, multiple: bool, ack: bool) {
    let settled: Vec<PendingConfirm> = {
        let mut st = lock(&ch.state);
        if multiple {
            let n = st.confirms.iter().take_while(|p| p.seq <= tag).count();
            st.confirms.drain(..n).collect()
        } else {
            match st.confirms.iter().position(|p| p.seq == tag) {
                Some(i) => st.confirms.remove(i).into_iter().collect(),
                None => Vec::new(),
            }
        }
    };
    for p in settled {
        let result = match (ack, p.returned) {
            (true, None) => Ok(()),
            (true, Some(r)) => Err(Error::Returned(Box::new(r))),
            (false, _) => Err(Error::Nacked),
        };
        let _ = p.waiter.send(result);
    }
}
