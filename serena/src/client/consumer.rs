//! Consumers, deliveries and fetched messages, with their acknowledgements.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::driver::shared::{ChannelLink, ConsumerEvent};
use crate::error::{Error, Result};
use crate::proto::method::basic;
use crate::proto::{BasicProperties, Method, ShortString};

/// A message delivered to a consumer. Acknowledge it with [`ack`](Self::ack), or give it back
/// with [`nack`](Self::nack) / [`reject`](Self::reject).
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The consumer it was delivered to.
    pub consumer_tag: ShortString,
    /// Tag to acknowledge it with, unique on its channel.
    pub delivery_tag: u64,
    /// It was delivered before (and not acknowledged).
    pub redelivered: bool,
    /// Exchange it was published to.
    pub exchange: ShortString,
    /// Its routing key.
    pub routing_key: ShortString,
    /// Its properties, boxed as they were decoded: a delivery moves from the socket to the
    /// handler without copying them.
    pub properties: Box<BasicProperties>,
    /// Its body.
    pub body: Bytes,
    /// The channel it came on; `None` for a [`detached`](Self::detached) delivery.
    channel: Option<Arc<ChannelLink>>,
    /// Set by the first ack, nack or reject of any clone: a message is settled once.
    settled: Arc<AtomicBool>,
}

/// Sends an ack, nack or reject, once per message and only on the life of the channel the
/// message came on: a second settle fails with [`Error::AlreadySettled`] (RabbitMQ would close
/// the channel with 406 for it), and after that channel ended it fails with the reason and
/// nothing is sent (RabbitMQ would close the whole connection for it).
fn settle(d: &Delivery, method: Method) -> Result<()> {
    if d.settled.swap(true, Ordering::AcqRel) {
        return Err(Error::AlreadySettled {
            delivery_tag: d.delivery_tag,
        });
    }
    match &d.channel {
        Some(link) => link.with(false, |m, ch| m.settle(ch, &method)),
        None => Err(Error::Closed("channel")),
    }
}

impl Delivery {
    /// A delivery that belongs to no channel, for unit tests of handlers: it carries the
    /// message, and acknowledging it fails with [`Error::Closed`].
    pub fn detached(
        exchange: &str,
        routing_key: &str,
        properties: BasicProperties,
        body: impl Into<Bytes>,
    ) -> Delivery {
        Delivery {
            consumer_tag: ShortString::new(),
            delivery_tag: 0,
            redelivered: false,
            exchange: exchange.into(),
            routing_key: routing_key.into(),
            properties: Box::new(properties),
            body: body.into(),
            channel: None,
            settled: Arc::default(),
        }
    }

    /// True once this message (through any clone) was acknowledged or refused.
    pub fn is_settled(&self) -> bool {
        self.settled.load(Ordering::Acquire)
    }

    /// Acknowledges the message: the broker forgets it.
    pub fn ack(&self) -> Result<()> {
        settle(
            self,
            basic::Ack {
                delivery_tag: self.delivery_tag,
                multiple: false,
            }
            .into(),
        )
    }

    /// Refuses the message; with `requeue` it goes back to the queue, otherwise it is dropped
    /// or dead-lettered.
    pub fn nack(&self, requeue: bool) -> Result<()> {
        settle(
            self,
            basic::Nack {
                delivery_tag: self.delivery_tag,
                multiple: false,
                requeue,
            }
            .into(),
        )
    }

    /// Refuses the message (`basic.reject`); with `requeue` it goes back to the queue.
    pub fn reject(&self, requeue: bool) -> Result<()> {
        settle(
            self,
            basic::Reject {
                delivery_tag: self.delivery_tag,
                requeue,
            }
            .into(),
        )
    }
}

/// A message fetched with [`Channel::basic_get`](super::Channel::basic_get).
#[derive(Debug, Clone)]
pub struct GetMessage {
    /// The message, acknowledged like a delivery (unless fetched with `no_ack`).
    pub delivery: Delivery,
    /// Messages still ready in the queue.
    pub message_count: u32,
}

impl GetMessage {
    pub(crate) fn new(
        ok: basic::GetOk,
        properties: Box<BasicProperties>,
        body: Bytes,
        channel: Arc<ChannelLink>,
    ) -> Self {
        GetMessage {
            delivery: Delivery {
                consumer_tag: ShortString::new(),
                delivery_tag: ok.delivery_tag,
                redelivered: ok.redelivered,
                exchange: ok.exchange,
                routing_key: ok.routing_key,
                properties,
                body,
                channel: Some(channel),
                settled: Arc::default(),
            },
            message_count: ok.message_count,
        }
    }
}

impl std::ops::Deref for GetMessage {
    type Target = Delivery;
    fn deref(&self) -> &Delivery {
        &self.delivery
    }
}

/// A stream of deliveries from one consumer.
///
/// It yields `Ok(delivery)` for each message and ends with one `Err`: the reason the
/// consumer stopped ([`Error::ConsumerCancelled`] when the server cancelled it, for example
/// because its queue was deleted; an [`UnexpectedCloseError`](crate::UnexpectedCloseError)
/// when its channel or connection was closed). Dropping it cancels the consumer on the broker
/// and requeues the messages it had buffered but not handed out.
pub struct Consumer {
    tag: ShortString,
    rx: mpsc::UnboundedReceiver<ConsumerEvent>,
    channel: Arc<ChannelLink>,
    no_ack: bool,
    ended: bool,
    /// Cancelled by us: the stream ends with `None` once drained.
    cancelled: bool,
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("tag", &self.tag)
            .field("channel", &self.channel.id.id)
            .finish_non_exhaustive()
    }
}

impl Consumer {
    pub(crate) fn new(
        tag: ShortString,
        rx: mpsc::UnboundedReceiver<ConsumerEvent>,
        channel: Arc<ChannelLink>,
        no_ack: bool,
    ) -> Self {
        Consumer {
            tag,
            rx,
            channel,
            no_ack,
            ended: false,
            cancelled: false,
        }
    }

    /// The consumer tag.
    pub fn tag(&self) -> &str {
        &self.tag
    }

    fn to_delivery(&self, content: crate::proto::Content) -> Result<Delivery> {
        let Method::BasicDeliver(d) = content.method else {
            return Err(Error::UnexpectedMethod(format!(
                "expected basic.deliver, got {}",
                content.method.name()
            )));
        };
        Ok(Delivery {
            consumer_tag: d.consumer_tag,
            delivery_tag: d.delivery_tag,
            redelivered: d.redelivered,
            exchange: d.exchange,
            routing_key: d.routing_key,
            properties: content.properties,
            body: content.body,
            channel: Some(self.channel.clone()),
            settled: Arc::default(),
        })
    }

    /// The next delivery; `None` after the consumer has ended and its reason was returned.
    pub async fn next(&mut self) -> Option<Result<Delivery>> {
        std::future::poll_fn(|cx| self.poll_next_delivery(cx)).await
    }

    fn poll_next_delivery(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Delivery>>> {
        if self.ended {
            return Poll::Ready(None);
        }
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(ConsumerEvent::Delivery(c))) => Poll::Ready(Some(self.to_delivery(c))),
            Poll::Ready(Some(ConsumerEvent::End(e))) => {
                self.ended = true;
                Poll::Ready(Some(Err(e)))
            }
            // The machine drops a consumer's sender without an `End` only at the cancel-ok of
            // our own cancel (a channel's end and the server's cancel both send one), even
            // when the `cancel` call that asked for it was dropped before its reply.
            Poll::Ready(None) => {
                self.ended = true;
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }

    /// Cancels the consumer on the broker and waits for its `cancel-ok`. Deliveries already
    /// buffered can still be read afterwards; then the stream ends with `None`.
    pub async fn cancel(&mut self) -> Result<()> {
        if self.ended || self.cancelled {
            return Ok(());
        }
        let link = &self.channel;
        let (tx, rx) = tokio::sync::oneshot::channel();
        let waiting = link.with(true, |m, ch| m.cancel(ch, &self.tag, Some(tx)))?;
        if waiting {
            super::channel::wait(link, rx).await?;
        }
        self.cancelled = true;
        Ok(())
    }
}

impl futures_core::Stream for Consumer {
    type Item = Result<Delivery>;
    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().poll_next_delivery(cx)
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        if self.ended {
            return;
        }
        // Buffered deliveries go back to the queue (unless no_ack: then there is nothing to
        // give back), and the consumer is cancelled on the broker; deliveries still on their
        // way are rejected by the machine when they find the stream closed. On a channel
        // that is no longer open nothing is sent: the broker requeues them itself.
        self.rx.close();
        let mut buffered = Vec::new();
        while let Ok(event) = self.rx.try_recv() {
            if let ConsumerEvent::Delivery(c) = event
                && let Method::BasicDeliver(d) = c.method
            {
                buffered.push(d.delivery_tag);
            }
        }
        let (tag, no_ack) = (&self.tag, self.no_ack);
        let _ = self.channel.with(false, |m, ch| {
            if !no_ack {
                for delivery_tag in buffered {
                    m.settle(
                        ch,
                        &basic::Reject {
                            delivery_tag,
                            requeue: true,
                        }
                        .into(),
                    )?;
                }
            }
            m.cancel(ch, tag, None).map(drop)
        });
    }
}
