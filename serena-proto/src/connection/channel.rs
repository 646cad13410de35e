//! One channel's protocol state: its phase, pending calls, unconfirmed publishes and the
//! returns waiting for their confirm, consumers, flow, and its content assembler. The diagram
//! and the rules are in the parent module's docs.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};

use bytes::{Bytes, BytesMut};

use super::outgoing::Outgoing;
use super::sinks::{Failure, Returned, ServerClose, Sinks};
use crate::content::{Assembled, Content, ContentAssembler, encode_publish, fingerprint};
use crate::frame::{FRAME_HEADER_SIZE, encode_method};
use crate::method::{Method, basic, channel};
use crate::properties::{PropertiesRef, encode_header_payload};
use crate::types::ShortString;

/// Where a channel is in its life (see the diagram in the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// `channel.open` sent, `open-ok` not yet received.
    Opening,
    Open,
    /// We sent `channel.close` and wait for `close-ok`.
    Closing,
}

/// What a pending call was, so that a reply nobody waits for any more can be undone.
/// (`basic.consume` and `basic.cancel` are not in the queue of calls: their replies carry
/// the consumer tag and are matched by it, since RabbitMQ may send a cancel-ok after the
/// replies to calls made behind it.)
enum CallKind {
    Get { no_ack: bool },
    Close,
    Plain,
}

struct PendingCall<S: Sinks> {
    kind: CallKind,
    waiter: Option<S::Call>,
}

/// The route of a mandatory publish, to match a `basic.return` to it.
#[derive(PartialEq, Eq)]
struct Route {
    exchange: ShortString,
    routing_key: ShortString,
    /// [`fingerprint`] of the message's content header and body.
    fingerprint: u64,
}

struct Unconfirmed<S: Sinks> {
    seq: u64,
    waiter: S::Confirm,
    mandatory: Option<Route>,
    returned: Option<Box<Returned>>,
}

/// A return not yet matched to its publish.
struct PendingReturn {
    route: Route,
    /// Publishes with the same content were pending when it came: only those can be it.
    by_content: bool,
    returned: Box<Returned>,
}

struct ConsumerSlot<S: Sinks> {
    sink: S::Consumer,
    no_ack: bool,
    /// Callers of `basic.consume` under this tag waiting for consume-ok (one, unless a tag
    /// was reused, which the server refuses by closing the channel).
    consume_waiters: VecDeque<S::Call>,
    /// We sent `basic.cancel` and wait for `cancel-ok`.
    cancelling: bool,
    /// Callers waiting for that cancel-ok.
    cancel_waiters: Vec<S::Call>,
}

impl<S: Sinks> ConsumerSlot<S> {
    /// Tells every caller waiting on this consumer `reason`.
    fn fail_waiters(&mut self, reason: &S::Error) {
        for w in self
            .consume_waiters
            .drain(..)
            .chain(self.cancel_waiters.drain(..))
        {
            S::reply(w, Err(reason.clone()));
        }
    }
}

/// What handling a frame did to the channel.
pub(crate) enum Step<E> {
    Continue,
    /// A frame that belongs to nothing any more (a delivery to a consumer that is gone, a
    /// reply nobody asked for, what arrives after our close): dropped.
    Dropped,
    /// The channel is over; its slot may be reused.
    Ended(E),
}

/// A frame the server should not have sent, with the reply code to close the connection with.
pub(crate) struct Violation {
    pub(crate) reply_code: u16,
    pub(crate) class_id: u16,
    pub(crate) method_id: u16,
    pub(crate) failure: Failure,
}

/// A message body to publish.
#[derive(Debug, Clone, Copy)]
pub enum Body<'a> {
    /// Copied into the write buffer.
    Borrowed(&'a [u8]),
    /// Shared with the caller: from [`SHARED_BODY_MIN`](crate::content::SHARED_BODY_MIN)
    /// bytes on it is queued for the socket by reference, not copied.
    Shared(&'a Bytes),
}

impl<'a> Body<'a> {
    /// The body's bytes.
    pub fn as_slice(&self) -> &'a [u8] {
        match *self {
            Body::Borrowed(b) => b,
            Body::Shared(b) => b,
        }
    }
}

impl<'a> From<&'a [u8]> for Body<'a> {
    fn from(bytes: &'a [u8]) -> Self {
        Body::Borrowed(bytes)
    }
}

/// The fields of a `basic.publish`.
pub struct Publish<'a> {
    /// Exchange to publish to ("" for the default exchange).
    pub exchange: &'a str,
    /// Routing key.
    pub routing_key: &'a str,
    /// Return the message when no queue takes it.
    pub mandatory: bool,
    /// Deprecated; RabbitMQ refuses it.
    pub immediate: bool,
    /// The message properties (a `&BasicProperties` converts with `into()`).
    pub properties: PropertiesRef<'a>,
    /// The body.
    pub body: Body<'a>,
}

/// FNV-1a for the consumer table: a delivery looks its consumer up by a tag of a dozen bytes,
/// where SipHash's setup costs more than the lookup. Tags are this client's own (it names
/// every consumer), so there is nobody to flood the table.
#[derive(Default)]
pub(crate) struct Fnv(u64);

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = h;
    }
}

/// The last ack this channel queued, while it is still in the open write buffer and nothing
/// else of the channel followed it: a later ack can be folded into it.
#[derive(Debug, Clone, Copy)]
struct LastAck {
    /// The write buffer's generation when it was queued: a newer one means it left.
    generation: u64,
    /// Where its frame starts in the open buffer.
    at: usize,
    /// The delivery tag it acks (with everything before it, once folded).
    delivery_tag: u64,
}

/// Where a `basic.ack` frame keeps its delivery tag and its `multiple` bit: after the frame
/// header, the class and the method id.
const ACK_TAG_AT: usize = FRAME_HEADER_SIZE + 4;
const ACK_BITS_AT: usize = ACK_TAG_AT + 8;

pub(crate) struct ChannelMachine<S: Sinks> {
    pub(crate) id: u16,
    pub(crate) epoch: u64,
    pub(crate) phase: Phase,
    sink: S::Channel,
    assembler: ContentAssembler,
    calls: VecDeque<PendingCall<S>>,
    confirms: VecDeque<Unconfirmed<S>>,
    next_seq: u64,
    /// Returns whose content matched no pending publish (the broker changed it): each is
    /// matched by route when the confirm covering its publish arrives (RabbitMQ sends a
    /// publish's return before its ack).
    returns: VecDeque<PendingReturn>,
    consumers: HashMap<ShortString, ConsumerSlot<S>, BuildHasherDefault<Fnv>>,
    pub(crate) flow_paused: bool,
    /// `confirm.select` was sent: every publish takes a sequence number and a waiter. A
    /// channel without it publishes fire-and-forget only.
    confirming: bool,
    /// Delivery tags handed to a consumer or a get and not yet settled (`no_ack` ones never
    /// are): at most the prefetch window, when there is one.
    /// In delivery order: the broker numbers deliveries upwards, so a push keeps it sorted
    /// and the usual ack (the oldest) is a pop.
    unsettled: VecDeque<u64>,
    last_ack: Option<LastAck>,
}

impl<S: Sinks> ChannelMachine<S> {
    pub(crate) fn new(id: u16, epoch: u64, sink: S::Channel) -> Self {
        ChannelMachine {
            id,
            epoch,
            phase: Phase::Opening,
            sink,
            assembler: ContentAssembler::new(id),
            calls: VecDeque::new(),
            confirms: VecDeque::new(),
            next_seq: 1,
            returns: VecDeque::new(),
            consumers: HashMap::default(),
            flow_paused: false,
            confirming: false,
            unsettled: VecDeque::new(),
            last_ack: None,
        }
    }

    /// Remembers a delivery the user will settle. RabbitMQ numbers them upwards; a server that
    /// does not still finds the list sorted (and a tag given twice kept once).
    fn track(&mut self, delivery_tag: u64) {
        match self.unsettled.back() {
            Some(&last) if last >= delivery_tag => {
                if let Err(at) = self.unsettled.binary_search(&delivery_tag) {
                    self.unsettled.insert(at, delivery_tag);
                }
            }
            _ => self.unsettled.push_back(delivery_tag),
        }
    }

    /// Queues a method the machine sends on its own.
    fn send(&mut self, out: &mut Outgoing, method: impl Into<Method>) {
        let method = method.into();
        tracing::trace!(channel = self.id, ?method, "sending");
        // The methods the machine sends on its own have no field that can fail to encode.
        if let Err(e) = self.encode(out, &method) {
            tracing::error!(channel = self.id, ?e, "could not encode a protocol reply");
        }
    }

    /// Queues a method frame of this channel. Anything but a publish after an ack ends the
    /// ack's folding: a later ack moved to its place would pass this frame.
    fn encode(&mut self, out: &mut Outgoing, method: &Method) -> Result<(), Failure> {
        self.last_ack = None;
        encode_method(out.buf(), self.id, method)?;
        Ok(())
    }

    pub(crate) fn assembler(&mut self) -> &mut ContentAssembler {
        &mut self.assembler
    }

    /// Sends a synchronous method; its reply goes to `waiter`.
    pub(crate) fn call(
        &mut self,
        out: &mut Outgoing,
        method: &Method,
        waiter: Option<S::Call>,
    ) -> Result<(), Failure> {
        self.usable()?;
        let kind = match method {
            Method::BasicGet(g) => CallKind::Get { no_ack: g.no_ack },
            Method::BasicConsume(_) | Method::BasicCancel(_) => {
                return Err(Failure::UnexpectedMethod(format!(
                    "{} goes through consume() and cancel(), which match its reply by tag",
                    method.name()
                )));
            }
            _ => CallKind::Plain,
        };
        tracing::trace!(channel = self.id, ?method, "sending");
        self.encode(out, method)?;
        if matches!(method, Method::ConfirmSelect(_)) {
            // Confirm mode holds from the next publish on: the broker numbers publishes
            // from select-ok, and a channel's publishes follow its select on the wire.
            self.confirming = true;
        }
        self.calls.push_back(PendingCall { kind, waiter });
        Ok(())
    }

    fn usable(&self) -> Result<(), Failure> {
        match self.phase {
            Phase::Opening | Phase::Open => Ok(()),
            Phase::Closing => Err(Failure::Closed("channel")),
        }
    }

    /// Encodes `basic.publish` with its content; with `fingerprint`, returns the message's.
    /// A publish does not end an ack's folding: moving an ack before it changes nothing.
    fn encode_publish(
        &self,
        out: &mut Outgoing,
        frame_max: u32,
        p: &Publish<'_>,
        fingerprint: bool,
    ) -> Result<Option<u64>, Failure> {
        self.usable()?;
        Ok(encode_publish(out, self.id, p, frame_max, fingerprint)?)
    }

    /// A publish the broker will confirm: it takes the next sequence number and `waiter`
    /// gets the confirm (or the return, for a mandatory one no queue took).
    pub(crate) fn publish(
        &mut self,
        out: &mut Outgoing,
        frame_max: u32,
        p: &Publish<'_>,
        waiter: S::Confirm,
    ) -> Result<u64, Failure> {
        if !self.confirming {
            // No confirm would ever come: the waiter would wait forever.
            return Err(Failure::Misuse(
                "a confirmed publish on a channel without confirm mode (confirm.select)",
            ));
        }
        let fingerprint = self.encode_publish(out, frame_max, p, p.mandatory)?;
        let mandatory = fingerprint.map(|fingerprint| Route {
            exchange: p.exchange.into(),
            routing_key: p.routing_key.into(),
            fingerprint,
        });
        let seq = self.next_seq;
        self.next_seq += 1;
        self.confirms.push_back(Unconfirmed {
            seq,
            waiter,
            mandatory,
            returned: None,
        });
        Ok(seq)
    }

    /// A fire-and-forget publish on a channel without confirm mode: nothing waits for it.
    pub(crate) fn publish_unconfirmed(
        &mut self,
        out: &mut Outgoing,
        frame_max: u32,
        p: &Publish<'_>,
    ) -> Result<(), Failure> {
        if self.confirming {
            // The broker numbers every publish on a confirming channel: one without a
            // waiter would shift every later confirm onto the wrong publish.
            return Err(Failure::Misuse(
                "a fire-and-forget publish on a channel in confirm mode",
            ));
        }
        if p.mandatory {
            // A return is matched to its publish by the confirm that covers it; without
            // confirms nothing could tell the caller, and the return would be dropped.
            return Err(Failure::Misuse("a mandatory publish without confirm mode"));
        }
        self.encode_publish(out, frame_max, p, false).map(drop)
    }

    /// Publishes sent and not yet confirmed.
    pub(crate) fn unconfirmed(&self) -> usize {
        self.confirms.len()
    }

    pub(crate) fn consume(
        &mut self,
        out: &mut Outgoing,
        method: basic::Consume,
        sink: S::Consumer,
        waiter: S::Call,
    ) -> Result<(), Failure> {
        self.usable()?;
        let tag = method.consumer_tag.clone();
        let no_ack = method.no_ack;
        let method: Method = method.into();
        tracing::trace!(channel = self.id, ?method, "sending");
        self.encode(out, &method)?;
        // Registered before consume-ok, so a delivery can never outrun it. A tag already in
        // use keeps its first consumer; the server refuses the second (530).
        self.consumers
            .entry(tag)
            .or_insert_with(|| ConsumerSlot {
                sink,
                no_ack,
                consume_waiters: VecDeque::new(),
                cancelling: false,
                cancel_waiters: Vec::new(),
            })
            .consume_waiters
            .push_back(waiter);
        Ok(())
    }

    /// Cancels a consumer; `Ok(false)` when there is nothing to cancel (it already ended, or a
    /// cancel is under way and `waiter` is `None`).
    pub(crate) fn cancel(
        &mut self,
        out: &mut Outgoing,
        tag: &ShortString,
        waiter: Option<S::Call>,
    ) -> Result<bool, Failure> {
        if self.phase != Phase::Open {
            return Err(Failure::Closed("channel"));
        }
        let Some(slot) = self.consumers.get_mut(tag) else {
            return Ok(false);
        };
        let send_cancel = !slot.cancelling;
        if !send_cancel && waiter.is_none() {
            return Ok(false);
        }
        slot.cancelling = true;
        slot.cancel_waiters.extend(waiter);
        if send_cancel {
            self.send(
                out,
                basic::Cancel {
                    consumer_tag: tag.clone(),
                    nowait: false,
                },
            );
        }
        Ok(true)
    }

    /// Sends an ack, nack or reject: only while the channel is open, since after a close
    /// RabbitMQ takes such a frame for a channel error of the whole connection (504).
    ///
    /// An ack of the oldest unsettled delivery is folded into the channel's last ack when
    /// that is still waiting in the write buffer with nothing of the channel after it: the
    /// frame becomes `ack(this tag, multiple)`. That acks exactly what the two acks did,
    /// since every earlier delivery was settled by frames before it, and the broker handles
    /// one ack instead of many. (RabbitMQ refuses a multiple ack whose own tag is not
    /// outstanding, 406 "unknown delivery tag": the folded tag is always this ack's own, which
    /// is.)
    /// Returns whether the ack was folded.
    pub(crate) fn settle(&mut self, out: &mut Outgoing, method: &Method) -> Result<bool, Failure> {
        if self.phase != Phase::Open {
            return Err(Failure::Closed("channel"));
        }
        let (tag, multiple) = match method {
            Method::BasicAck(a) => (a.delivery_tag, a.multiple),
            Method::BasicNack(n) => (n.delivery_tag, n.multiple),
            Method::BasicReject(r) => (r.delivery_tag, false),
            _ => {
                return Err(Failure::Misuse(
                    "settle takes basic.ack, basic.nack or basic.reject",
                ));
            }
        };
        let oldest = self.unsettled.front() == Some(&tag);
        if multiple {
            // Everything up to the tag (tag 0: everything).
            let upto = match tag {
                0 => self.unsettled.len(),
                t => self.unsettled.partition_point(|&u| u <= t),
            };
            self.unsettled.drain(..upto);
        } else if oldest {
            self.unsettled.pop_front();
        } else if let Ok(at) = self.unsettled.binary_search(&tag) {
            self.unsettled.remove(at);
        }
        let foldable = matches!(method, Method::BasicAck(_)) && !multiple && oldest;
        if foldable
            && let Some(last) = self.last_ack
            && last.generation == out.generation()
            && last.delivery_tag < tag
        {
            let frame = &mut out.buf()[last.at..];
            frame[ACK_TAG_AT..ACK_TAG_AT + 8].copy_from_slice(&tag.to_be_bytes());
            frame[ACK_BITS_AT] = 1;
            self.last_ack = Some(LastAck {
                delivery_tag: tag,
                ..last
            });
            tracing::trace!(
                channel = self.id,
                delivery_tag = tag,
                "ack folded into the last one"
            );
            return Ok(true);
        }
        let at = out.buf().len();
        tracing::trace!(channel = self.id, ?method, "sending");
        self.encode(out, method)?;
        if matches!(method, Method::BasicAck(_)) {
            self.last_ack = Some(LastAck {
                generation: out.generation(),
                at,
                delivery_tag: tag,
            });
        }
        Ok(false)
    }

    /// Starts our close, unless it is under way; `waiter` gets the close-ok.
    pub(crate) fn close(&mut self, out: &mut Outgoing, waiter: Option<S::Call>) {
        if self.phase != Phase::Closing {
            self.phase = Phase::Closing;
            self.send(
                out,
                channel::Close {
                    reply_code: 200,
                    reply_text: "bye".into(),
                    class_id: 0,
                    method_id: 0,
                },
            );
            // Replies to earlier calls are discarded from now on (channel.close / stability):
            // their callers learn now.
            let closed: S::Error = Failure::Closed("channel").into();
            for call in self.calls.drain(..) {
                if let Some(w) = call.waiter {
                    S::reply(w, Err(closed.clone()));
                }
            }
            for slot in self.consumers.values_mut() {
                slot.fail_waiters(&closed);
            }
        }
        self.calls.push_back(PendingCall {
            kind: CallKind::Close,
            waiter,
        });
    }

    /// Ends the channel: its watchers first, then every call, publish and consumer. With
    /// `close_ok`, our close completed and its callers get the close-ok.
    pub(crate) fn end(self, reason: S::Error, close_ok: bool) {
        S::channel_ended(&self.sink, &reason);
        for call in self.calls {
            if let Some(w) = call.waiter {
                let reply = match call.kind {
                    CallKind::Close if close_ok => {
                        Ok(Assembled::Method(channel::CloseOk {}.into()))
                    }
                    _ => Err(reason.clone()),
                };
                S::reply(w, reply);
            }
        }
        for p in self.confirms {
            S::confirm(p.waiter, Err(reason.clone()));
        }
        for (_, mut c) in self.consumers {
            c.fail_waiters(&reason);
            S::end_consumer(c.sink, reason.clone());
        }
    }

    /// Handles one method or message for this channel.
    pub(crate) fn handle(
        &mut self,
        out: &mut Outgoing,
        assembled: Assembled,
    ) -> Result<Step<Failure>, Violation> {
        match self.phase {
            Phase::Opening => Ok(self.handle_opening(out, assembled)),
            Phase::Closing => Ok(self.handle_closing(out, assembled)),
            Phase::Open => match assembled {
                Assembled::Content(content) => self.handle_content(out, content),
                Assembled::Method(method) => Ok(self.handle_method(out, method)),
            },
        }
    }

    fn handle_opening(&mut self, out: &mut Outgoing, assembled: Assembled) -> Step<Failure> {
        match assembled {
            Assembled::Method(m @ Method::ChannelOpenOk(_)) => {
                self.phase = Phase::Open;
                self.reply(Assembled::Method(m))
            }
            Assembled::Method(Method::ChannelClose(c)) => self.closed_by_server(out, c),
            // Frames of this id's previous life, sent before the server saw its close-ok.
            _ => Step::Dropped,
        }
    }

    /// channel.close / stability: after our close everything but the close handshake is
    /// discarded, except the broker's confirms and returns, which still tell the truth about
    /// publishes made before the close.
    fn handle_closing(&mut self, out: &mut Outgoing, assembled: Assembled) -> Step<Failure> {
        match assembled {
            Assembled::Method(Method::ChannelCloseOk(_)) => Step::Ended(Failure::Closed("channel")),
            Assembled::Method(Method::ChannelClose(c)) => {
                // Our close and the server's crossed: the server answers ours with close-ok
                // too, and the id stays taken until then.
                tracing::debug!(
                    channel = self.id,
                    reply_code = c.reply_code,
                    "closes crossed"
                );
                self.send(out, channel::CloseOk {});
                Step::Continue
            }
            Assembled::Method(Method::BasicAck(a)) => {
                self.settle_confirms(a.delivery_tag, a.multiple, true);
                Step::Continue
            }
            Assembled::Method(Method::BasicNack(n)) => {
                self.settle_confirms(n.delivery_tag, n.multiple, false);
                Step::Continue
            }
            Assembled::Content(c) if matches!(c.method, Method::BasicReturn(_)) => {
                self.handle_return(c);
                Step::Continue
            }
            _ => Step::Dropped,
        }
    }

    fn closed_by_server(&mut self, out: &mut Outgoing, c: channel::Close) -> Step<Failure> {
        self.send(out, channel::CloseOk {});
        let close = ServerClose {
            channel: Some(self.id),
            reply_code: c.reply_code,
            reply_text: c.reply_text.to_string(),
            class_id: c.class_id,
            method_id: c.method_id,
        };
        tracing::debug!(channel = self.id, ?close, "channel closed by the server");
        Step::Ended(Failure::ServerClosed(close))
    }

    fn handle_content(
        &mut self,
        out: &mut Outgoing,
        content: Content,
    ) -> Result<Step<Failure>, Violation> {
        match &content.method {
            Method::BasicDeliver(d) => {
                let Some(slot) = self.consumers.get_mut(&d.consumer_tag) else {
                    // Not a consumer of this channel's life: never acknowledge it, the
                    // delivery tag means nothing here.
                    tracing::debug!(channel = self.id, tag = %d.consumer_tag, "delivery for an unknown consumer dropped");
                    return Ok(Step::Dropped);
                };
                let (tag, delivery_tag, no_ack) =
                    (d.consumer_tag.clone(), d.delivery_tag, slot.no_ack);
                match S::deliver(&slot.sink, content) {
                    true => {
                        if !no_ack {
                            self.track(delivery_tag);
                        }
                        Ok(Step::Continue)
                    }
                    false => {
                        // The consumer is gone (dropped, or its consume call was): give the
                        // message back and stop the flow.
                        if !no_ack {
                            self.give_back(out, delivery_tag);
                        }
                        let _ = self.cancel(out, &tag, None);
                        Ok(Step::Dropped)
                    }
                }
            }
            Method::BasicGetOk(ok) => {
                let (delivery_tag, no_ack) = (ok.delivery_tag, self.front_get_no_ack());
                let taken = self.reply_taken(Assembled::Content(content));
                match (taken, no_ack) {
                    (_, true) => {}
                    (true, false) => {
                        self.track(delivery_tag);
                    }
                    // The get was dropped before its get-ok: give the message back.
                    (false, false) => self.give_back(out, delivery_tag),
                }
                Ok(Step::Continue)
            }
            Method::BasicReturn(_) => {
                self.handle_return(content);
                Ok(Step::Continue)
            }
            other => Err(Violation {
                reply_code: super::COMMAND_INVALID,
                class_id: other.class_id(),
                method_id: other.method_id(),
                failure: Failure::UnexpectedMethod(format!(
                    "{} with content from the server",
                    other.name()
                )),
            }),
        }
    }

    /// Puts a message nobody will handle back in its queue (`basic.reject` with requeue).
    fn give_back(&mut self, out: &mut Outgoing, delivery_tag: u64) {
        self.send(
            out,
            basic::Reject {
                delivery_tag,
                requeue: true,
            },
        );
    }

    fn front_get_no_ack(&self) -> bool {
        matches!(
            self.calls.front(),
            Some(PendingCall {
                kind: CallKind::Get { no_ack: true },
                ..
            })
        )
    }

    fn handle_method(&mut self, out: &mut Outgoing, method: Method) -> Step<Failure> {
        match method {
            Method::ChannelClose(c) => self.closed_by_server(out, c),
            Method::BasicAck(a) => {
                self.settle_confirms(a.delivery_tag, a.multiple, true);
                Step::Continue
            }
            Method::BasicNack(n) => {
                self.settle_confirms(n.delivery_tag, n.multiple, false);
                Step::Continue
            }
            Method::BasicCancel(c) => {
                if let Some(mut slot) = self.consumers.remove(&c.consumer_tag) {
                    let reason: S::Error =
                        Failure::ConsumerCancelled(c.consumer_tag.to_string()).into();
                    for w in slot.consume_waiters.drain(..) {
                        S::reply(w, Err(reason.clone()));
                    }
                    // A cancel of ours that crossed the server's: the consumer is gone.
                    let ok = Assembled::Method(
                        basic::CancelOk {
                            consumer_tag: c.consumer_tag.clone(),
                        }
                        .into(),
                    );
                    for w in slot.cancel_waiters.drain(..) {
                        S::reply(w, Ok(ok.clone()));
                    }
                    S::end_consumer(slot.sink, reason);
                }
                if !c.nowait {
                    self.send(
                        out,
                        basic::CancelOk {
                            consumer_tag: c.consumer_tag,
                        },
                    );
                }
                Step::Continue
            }
            Method::ChannelFlow(f) => {
                self.flow_paused = !f.active;
                self.send(out, channel::FlowOk { active: f.active });
                S::flow_changed(&self.sink, f.active);
                Step::Continue
            }
            Method::BasicCancelOk(c) => {
                // Dropping the sink ends the consumer's stream once it is drained.
                let Some(mut slot) = self.consumers.remove(&c.consumer_tag) else {
                    return Step::Dropped;
                };
                let ok = Assembled::Method(c.into());
                for w in slot.cancel_waiters.drain(..) {
                    S::reply(w, Ok(ok.clone()));
                }
                slot.fail_waiters(&Failure::Closed("channel").into());
                Step::Continue
            }
            Method::BasicConsumeOk(c) => {
                let tag = c.consumer_tag.clone();
                let Some(slot) = self.consumers.get_mut(&tag) else {
                    return Step::Dropped;
                };
                let taken = match slot.consume_waiters.pop_front() {
                    Some(w) => S::reply(w, Ok(Assembled::Method(c.into()))),
                    None => false,
                };
                if !taken {
                    // basic_consume was dropped after its request left: cancel on the broker.
                    let _ = self.cancel(out, &tag, None);
                }
                Step::Continue
            }
            other => self.reply(Assembled::Method(other)),
        }
    }

    /// Gives a reply to the oldest pending call.
    fn reply(&mut self, reply: Assembled) -> Step<Failure> {
        let Some(call) = self.calls.pop_front() else {
            tracing::warn!(channel = self.id, ?reply, "reply with no call waiting");
            return Step::Dropped;
        };
        if let Some(w) = call.waiter {
            S::reply(w, Ok(reply));
        }
        Step::Continue
    }

    /// [`reply`](Self::reply) for a message: `false` when nobody took it.
    fn reply_taken(&mut self, reply: Assembled) -> bool {
        match self.calls.pop_front() {
            Some(PendingCall {
                waiter: Some(w), ..
            }) => S::reply(w, Ok(reply)),
            Some(_) => false,
            None => {
                tracing::warn!(channel = self.id, "basic.get-ok with no call waiting");
                false
            }
        }
    }

    fn handle_return(&mut self, content: Content) {
        let Method::BasicReturn(r) = content.method else {
            return;
        };
        let mut header = BytesMut::new();
        let fingerprint = match encode_header_payload(
            &mut header,
            basic::Publish::CLASS_ID,
            content.body.len() as u64,
            &*content.properties,
        ) {
            Ok(()) => fingerprint(&header, &content.body),
            Err(_) => 0,
        };
        let route = Route {
            exchange: r.exchange.clone(),
            routing_key: r.routing_key.clone(),
            fingerprint,
        };
        if !self.confirms.iter().any(|p| route_matches(p, &route)) {
            tracing::warn!(channel = self.id, exchange = %r.exchange, routing_key = %r.routing_key, "basic.return for no pending mandatory publish dropped");
            return;
        }
        let returned = Box::new(Returned {
            reply_code: r.reply_code,
            reply_text: r.reply_text.to_string(),
            exchange: r.exchange.to_string(),
            routing_key: r.routing_key.to_string(),
            properties: *content.properties,
            body: content.body,
        });
        // Its publish is still unconfirmed (RabbitMQ sends a return before the publish's
        // ack). The one publish with the same route and content is it. Among several alike,
        // or when the broker changed the content on its way back (none alike), the return
        // waits for the confirm that covers its publish and is matched among what it covers.
        let alike = |p: &Unconfirmed<S>| {
            p.returned.is_none()
                && route_matches(p, &route)
                && p.mandatory
                    .as_ref()
                    .is_some_and(|m| m.fingerprint == route.fingerprint)
        };
        let mut matches = self.confirms.iter().enumerate().filter(|(_, p)| alike(p));
        match (matches.next(), matches.next()) {
            (Some((i, _)), None) => self.confirms[i].returned = Some(returned),
            (Some(_), Some(_)) => self.returns.push_back(PendingReturn {
                route,
                by_content: true,
                returned,
            }),
            (None, _) => self.returns.push_back(PendingReturn {
                route,
                by_content: false,
                returned,
            }),
        }
    }

    /// Settles publishes up to `tag` (or exactly `tag`) with the broker's ack or nack. The
    /// returns received before it are matched first, each to a publish this confirm covers.
    fn settle_confirms(&mut self, tag: u64, multiple: bool, ack: bool) {
        let covered = if multiple {
            0..self.confirms.iter().take_while(|p| p.seq <= tag).count()
        } else {
            match self.confirms.iter().position(|p| p.seq == tag) {
                Some(i) => i..i + 1,
                None => 0..0,
            }
        };
        if covered.is_empty() {
            return;
        }
        self.match_returns(covered.clone());
        let settled: Vec<_> = if covered.start == 0 {
            self.confirms.drain(covered).collect()
        } else {
            self.confirms.remove(covered.start).into_iter().collect()
        };
        for p in settled {
            let outcome = match (ack, p.returned) {
                (true, None) => Ok(()),
                (true, Some(r)) => Err(Failure::Returned(r).into()),
                (false, _) => Err(Failure::Nacked.into()),
            };
            S::confirm(p.waiter, outcome);
        }
        // A return whose publish is no longer pending can never be matched.
        let confirms = &self.confirms;
        self.returns
            .retain(|r| confirms.iter().any(|p| route_matches(p, &r.route)));
    }

    /// Gives each return still waiting to the oldest publish among `covered` with its route
    /// (and its content, when that was known to match).
    fn match_returns(&mut self, covered: std::ops::Range<usize>) {
        let mut i = 0;
        while i < self.returns.len() {
            let pending = &self.returns[i];
            let found = covered.clone().find(|&j| {
                let p = &self.confirms[j];
                p.returned.is_none()
                    && route_matches(p, &pending.route)
                    && (!pending.by_content
                        || p.mandatory
                            .as_ref()
                            .is_some_and(|m| m.fingerprint == pending.route.fingerprint))
            });
            match found {
                Some(j) => {
                    let pending = self.returns.remove(i).expect("index in range");
                    self.confirms[j].returned = Some(pending.returned);
                }
                None => i += 1,
            }
        }
    }
}

fn route_matches<S: Sinks>(p: &Unconfirmed<S>, route: &Route) -> bool {
    p.mandatory
        .as_ref()
        .is_some_and(|m| m.exchange == route.exchange && m.routing_key == route.routing_key)
}
