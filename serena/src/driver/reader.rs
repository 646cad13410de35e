//! The reader task: socket bytes -> frames -> whole messages -> the channel that owns them.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::AsyncReadExt;

use super::shared::{ChannelShared, ConnShared, ConsumerEvent, PendingConfirm, lock};
use super::transport::ReadHalf;
use crate::error::{CloseScope, Error, Result, ReturnedMessage, UnexpectedCloseError};
use crate::proto::method::{basic, channel, connection};
use crate::proto::{Assembled, Content, ContentAssembler, Frame, FrameDecoder, Method};

/// Read buffer growth step.
const READ_CHUNK: usize = 64 * 1024;

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
            while let Some(frame) = self.decoder.decode(&mut buf)? {
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
        match frame {
            Frame::Heartbeat => {
                self.shared
                    .stats
                    .heartbeats_received
                    .fetch_add(1, Ordering::Relaxed);
                Ok(Flow::Continue)
            }
            Frame::Method { channel: 0, method } => self.handle_connection_method(method),
            frame if frame.channel() == 0 => {
                Err(Error::UnexpectedMethod("content frame on channel 0".into()))
            }
            frame => {
                let id = frame.channel();
                let slot = usize::from(id);
                if self.assemblers.len() <= slot {
                    self.assemblers.resize_with(slot + 1, || None);
                }
                let asm = self.assemblers[slot].get_or_insert_with(|| ContentAssembler::new(id));
                if let Some(assembled) = asm.handle_frame(frame)? {
                    self.handle_channel(id, assembled)?;
                }
                Ok(Flow::Continue)
            }
        }
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
            other => Err(Error::UnexpectedMethod(format!(
                "{} on channel 0",
                other.name()
            ))),
        }
    }

    fn reset_assembler(&mut self, id: u16) {
        if let Some(slot) = self.assemblers.get_mut(usize::from(id)) {
            *slot = None;
        }
    }

    fn handle_channel(&mut self, id: u16, assembled: Assembled) -> Result<()> {
        let Some(ch) = self.shared.channel(id) else {
            // A late frame for a channel we already released: nothing waits for it.
            tracing::debug!(channel = id, "frame for a closed channel dropped");
            return Ok(());
        };
        // After our channel.close, everything but the close handshake is discarded.
        if lock(&ch.state).closing {
            return match assembled {
                Assembled::Method(m @ (Method::ChannelClose(_) | Method::ChannelCloseOk(_))) => {
                    self.handle_channel_method(&ch, m)
                }
                _ => Ok(()),
            };
        }
        match assembled {
            Assembled::Content(content) => self.handle_content(&ch, content),
            Assembled::Method(method) => self.handle_channel_method(&ch, method),
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
            _ => Err(Error::UnexpectedMethod(format!(
                "{} with content from the server",
                content.method.name()
            ))),
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
                let closing = lock(&ch.state).closing;
                // Free the id before anyone waiting learns the channel is gone.
                lock(&self.shared.channels).release(ch.id);
                self.reset_assembler(ch.id);
                ch.fail(if closing {
                    Error::Closed("channel")
                } else {
                    err
                });
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
