//! The connection state machine: every channel's life, every protocol rule, no I/O.
//!
//! [`Connection`] owns what the protocol keeps per connection after the handshake
//! ([`handshake`](self#functions) has the pure pieces of that): the channel table and its ids,
//! both close handshakes of channels and of the connection, the calls waiting for replies
//! (in order, per channel), publish sequence numbers, confirms and returns, consumers, flow
//! and the broker's block. It is driven like quinn-proto's `Connection`:
//!
//! - inputs: [`handle_bytes`](Connection::handle_bytes) for what the socket gave (or
//!   [`handle_frame`](Connection::handle_frame) for each decoded frame),
//!   [`handle_decode_error`](Connection::handle_decode_error) for bytes that are not one,
//!   [`fail`](Connection::fail) for what only the driver sees (a socket error, a lost
//!   heartbeat), and the commands of the user-facing handles
//!   ([`open_channel`](Connection::open_channel), [`publish`](Connection::publish), ...);
//! - outputs: bytes to send ([`transmit`](Connection::transmit)), connection [`Event`]s,
//!   and the driver's waiters completed through [`Sinks`].
//!
//! - time: the driver says when bytes moved ([`handle_received`](Connection::handle_received),
//!   [`handle_sent`](Connection::handle_sent)) and calls
//!   [`handle_timeout`](Connection::handle_timeout) at [`poll_timeout`](Connection::poll_timeout):
//!   the machine decides when a heartbeat is due and when the server is dead.
//!
//! Nothing here blocks, sleeps, spawns or reads a clock (time is passed in); the tokio driver
//! moves the bytes, runs the timers and wakes the tasks.
//!
//! # A channel's life
//!
//! ```text
//!                 open_channel              open-ok
//!   Unused/Closed -----------> Opening ----------------> Open
//!        ^                       |  \ server close         |  \ server close: close-ok
//!        |                       |   `---------------------+---`-------------------.
//!        |                       | close_channel (ours)    | close_channel (ours)   |
//!        |                       v                         v                        v
//!        |                     Closing <-------------------'                   Closed
//!        |                       |  server close crossing ours: close-ok,      (late frames
//!        |                       |  stay Closing until our close-ok            dropped)
//!        |                       v close-ok                                         |
//!        `-------------------- Closed <--------------------------------------------'
//! ```
//!
//! Rules, each a unit test of this module:
//!
//! - **Late frames never hurt.** RabbitMQ keeps writing deliveries it had queued after its
//!   own `channel.close`; the frames for a `Closed` id, and anything but `open-ok`/`close` for
//!   an `Opening` one, are dropped and counted ([`Stats::late_frames`]), never a protocol
//!   error. Ids are handed out round-robin, so an id comes back only after every other one
//!   was used since, long after its late frames.
//! - **After our close** (`Closing`), replies and deliveries are discarded (the `close /
//!   stability` rules); confirms and returns are still applied, since they tell the truth
//!   about publishes made before it. Acks, nacks, rejects and cancels are never sent on a
//!   channel that is not `Open`: RabbitMQ closes the whole connection (504) for them.
//! - **Returns land on their publish.** A `basic.return` waits for the confirm that covers
//!   its publish (RabbitMQ sends a publish's return before its ack) and is matched there,
//!   among the publishes that confirm covers, by route and by a fingerprint of the content
//!   header and body: a headers exchange or CC/BCC, where the routing key does not decide,
//!   cannot fail the wrong publish.
//! - **Nothing is orphaned.** A consume whose caller is gone when consume-ok arrives is
//!   cancelled; a get whose caller is gone gives its message back; a delivery whose consumer
//!   is gone is rejected with requeue (unless it was `no_ack`: then there is nothing to give
//!   back) and the consumer cancelled.
//! - **The server's rule breaks close the connection** with the reply code of the rule:
//!   501 for bytes that are not a frame, 503 for a method a client never takes there, 504
//!   for a frame on a channel never opened or content on channel 0, 505 for content out of
//!   order, 540 for a method AMQP 0-9-1 does not define.

mod channel;
mod handshake;
mod outgoing;
mod sinks;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::BytesMut;

pub use channel::{Body, Publish};
use channel::{ChannelMachine, Phase, Step, Violation};
pub use handshake::*;
pub use outgoing::Outgoing;
pub use sinks::{Failure, Returned, ServerClose, Sinks};

use crate::content::Assembled;
use crate::error::DecodeError;
use crate::frame::{Frame, FrameDecoder, encode_heartbeat, encode_method};
use crate::method::{Method, basic, channel as ch, connection as conn};
use crate::types::{LongString, ShortString};

/// Reply codes of the `connection.close` we send a server that broke the protocol.
pub(crate) const FRAME_ERROR: u16 = 501;
pub(crate) const COMMAND_INVALID: u16 = 503;
pub(crate) const CHANNEL_ERROR: u16 = 504;
pub(crate) const UNEXPECTED_FRAME: u16 = 505;
pub(crate) const NOT_IMPLEMENTED: u16 = 540;
/// Class id of `connection.*`: its methods belong on channel 0 only.
const CONNECTION_CLASS: u16 = 10;

/// The decoder's limit when both sides said "no limit": generous, but never unbounded.
pub const UNLIMITED_FRAME_MAX: u32 = 128 * 1024 * 1024;

/// One channel's identity: its id and which of the id's lives it is. A handle that outlives
/// its channel can never act on a later channel that reuses the id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChannelRef {
    /// The channel id on the wire.
    pub id: u16,
    epoch: u64,
}

/// What happened to the connection as a whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// `connection.blocked`: the broker stops reading publishes (a resource alarm).
    Blocked(String),
    /// `connection.unblocked`.
    Unblocked,
    /// Our `connection.close` was answered with `close-ok`: the connection is over, cleanly.
    Closed,
}

/// Counters of what the machine saw.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Frames handled.
    pub frames_received: u64,
    /// Heartbeats received.
    pub heartbeats_received: u64,
    /// Heartbeats queued because nothing else went out.
    pub heartbeats_sent: u64,
    /// Frames that belonged to nothing any more and were dropped: late frames of a closed
    /// channel, deliveries to a consumer that is gone, replies nobody waits for, what
    /// arrives after our close.
    pub late_frames: u64,
    /// Acks folded into the channel's previous ack still waiting to be sent: the broker
    /// got one `ack(multiple)` for them (see [`Connection::settle`]).
    pub acks_folded: u64,
}

enum Slot<S: Sinks> {
    /// Never opened, or its last life ended with our close's close-ok.
    Unused,
    /// The server closed its last life; late frames for it are dropped.
    Closed,
    Live(Box<ChannelMachine<S>>),
}

enum ConnPhase<E> {
    Open,
    /// We sent `connection.close`.
    Closing,
    Ended(E),
}

/// The state machine of one AMQP 0-9-1 connection after its handshake. See the module docs.
pub struct Connection<S: Sinks> {
    tuning: Tuning,
    decoder: FrameDecoder,
    out: Outgoing,
    slots: Vec<Slot<S>>,
    max_id: u16,
    /// Where the round-robin search for a free id starts.
    next_id: u16,
    live: usize,
    next_epoch: u64,
    next_consumer: u64,
    phase: ConnPhase<S::Error>,
    blocked: Option<String>,
    secret_updates: VecDeque<S::Call>,
    events: VecDeque<Event>,
    stats: Stats,
    heartbeat: Heartbeat,
}

/// Heartbeat bookkeeping: when bytes last moved each way, as the driver reported it.
#[derive(Debug, Clone, Copy)]
struct Heartbeat {
    /// The negotiated interval; `None` when heartbeats are off.
    interval: Option<Duration>,
    last_received: Option<Instant>,
    last_sent: Option<Instant>,
}

impl<S: Sinks> std::fmt::Debug for Connection<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("tuning", &self.tuning)
            .field("open_channels", &self.live)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

fn describe(frame: &Frame) -> String {
    match frame {
        Frame::Method { method, .. } => format!("method {}", method.name()),
        Frame::Header { .. } => "content header".into(),
        Frame::Body { .. } => "content body".into(),
        Frame::Heartbeat => "heartbeat".into(),
    }
}

impl<S: Sinks> Connection<S> {
    /// The machine of a connection whose handshake settled `tuning`.
    pub fn new(tuning: Tuning) -> Self {
        let frame_max = if tuning.frame_max == 0 {
            UNLIMITED_FRAME_MAX
        } else {
            tuning.frame_max
        };
        Connection {
            tuning,
            decoder: FrameDecoder::new(frame_max),
            out: Outgoing::default(),
            slots: vec![Slot::Unused],
            max_id: if tuning.channel_max == 0 {
                u16::MAX
            } else {
                tuning.channel_max
            },
            next_id: 1,
            live: 0,
            next_epoch: 1,
            next_consumer: 1,
            phase: ConnPhase::Open,
            blocked: None,
            secret_updates: VecDeque::new(),
            events: VecDeque::new(),
            stats: Stats::default(),
            heartbeat: Heartbeat {
                interval: (tuning.heartbeat != 0)
                    .then(|| Duration::from_secs(u64::from(tuning.heartbeat))),
                last_received: None,
                last_sent: None,
            },
        }
    }

    /// The limits settled in the handshake.
    pub fn tuning(&self) -> Tuning {
        self.tuning
    }

    /// The largest frame either side may send (the negotiated `frame_max`, or
    /// [`UNLIMITED_FRAME_MAX`] when neither side set one).
    pub fn frame_max(&self) -> u32 {
        self.decoder.frame_max()
    }

    /// Counters of what the machine saw.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Why the connection ended, once it has.
    pub fn error(&self) -> Option<&S::Error> {
        match &self.phase {
            ConnPhase::Ended(e) => Some(e),
            _ => None,
        }
    }

    /// The broker's reason while it blocks publishing.
    pub fn blocked(&self) -> Option<&str> {
        self.blocked.as_deref()
    }

    /// Channels opening, open or closing.
    pub fn open_channels(&self) -> usize {
        self.live
    }

    /// The bytes waiting to be sent. The driver writes them and removes what it wrote
    /// ([`Outgoing::advance`], [`Outgoing::take`]).
    pub fn transmit(&mut self) -> &mut Outgoing {
        &mut self.out
    }

    /// The next connection event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// The socket gave bytes at `now` (any bytes count as a sign of life).
    pub fn handle_received(&mut self, now: Instant) {
        self.heartbeat.last_received = Some(now);
    }

    /// Bytes went out to the socket at `now`.
    pub fn handle_sent(&mut self, now: Instant) {
        self.heartbeat.last_sent = Some(now);
    }

    /// When [`handle_timeout`](Self::handle_timeout) has something to do next: a heartbeat to
    /// send after half an interval without sending, or the server to declare dead after two
    /// intervals without receiving. `None` when heartbeats are off, or before the driver
    /// reported its first bytes each way.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let interval = self.heartbeat.interval?;
        let dead = self.heartbeat.last_received? + interval * 2;
        let quiet = self.heartbeat.last_sent? + interval / 2;
        Some(dead.min(quiet))
    }

    /// The clock reached `now`: ends the connection with [`Failure::HeartbeatTimeout`] when
    /// nothing came for two intervals, and queues a heartbeat when nothing went out for half
    /// of one.
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), S::Error> {
        let Heartbeat {
            interval: Some(interval),
            last_received: Some(received),
            last_sent: Some(sent),
        } = self.heartbeat
        else {
            return Ok(());
        };
        if let ConnPhase::Ended(e) = &self.phase {
            return Err(e.clone());
        }
        if now.saturating_duration_since(received) >= interval * 2 {
            tracing::warn!(
                ?interval,
                "no traffic from the server for two heartbeat intervals"
            );
            return Err(self.fail(Failure::HeartbeatTimeout(interval * 2).into()));
        }
        if now.saturating_duration_since(sent) >= interval / 2 {
            if self.out.is_empty() {
                tracing::trace!("sending heartbeat");
                encode_heartbeat(self.out.buf());
                self.stats.heartbeats_sent += 1;
            }
            // Counted as sent: the next one is due half an interval from now, whether this
            // one or other bytes go out first.
            self.heartbeat.last_sent = Some(now);
        }
        Ok(())
    }

    fn check_open(&self) -> Result<(), S::Error> {
        match &self.phase {
            ConnPhase::Open => Ok(()),
            ConnPhase::Closing => Err(Failure::Closed("connection").into()),
            ConnPhase::Ended(e) => Err(e.clone()),
        }
    }

    fn live(&self, r: ChannelRef) -> Option<&ChannelMachine<S>> {
        match self.slots.get(usize::from(r.id)) {
            Some(Slot::Live(ch)) if ch.epoch == r.epoch => Some(ch),
            _ => None,
        }
    }

    /// Allocates a channel id and sends `channel.open`; `waiter` gets the open-ok. Calls may
    /// be pipelined behind it at once.
    pub fn open_channel(
        &mut self,
        sink: S::Channel,
        waiter: S::Call,
    ) -> Result<ChannelRef, S::Error> {
        self.check_open()?;
        let max = usize::from(self.max_id);
        let start = usize::from(self.next_id);
        let id = (0..max)
            .map(|i| (start - 1 + i) % max + 1)
            .find(|&id| !matches!(self.slots.get(id), Some(Slot::Live(_))))
            .ok_or(Failure::ChannelsExhausted { max: self.max_id })?;
        if self.slots.len() <= id {
            self.slots.resize_with(id + 1, || Slot::Unused);
        }
        let epoch = self.next_epoch;
        self.next_epoch += 1;
        self.next_id = if id == max { 1 } else { id as u16 + 1 };
        let mut machine = ChannelMachine::new(id as u16, epoch, sink);
        machine.call(&mut self.out, &ch::Open {}.into(), Some(waiter))?;
        self.slots[id] = Slot::Live(Box::new(machine));
        self.live += 1;
        Ok(ChannelRef {
            id: id as u16,
            epoch,
        })
    }

    /// Sends a synchronous method on a channel; `waiter` gets its reply, in order.
    pub fn call(
        &mut self,
        r: ChannelRef,
        method: &Method,
        waiter: S::Call,
    ) -> Result<(), S::Error> {
        self.with_channel(r, |ch, out| ch.call(out, method, Some(waiter)))
    }

    /// Runs `f` on the channel's live state, or fails as the channel or connection ended.
    fn with_channel<T>(
        &mut self,
        r: ChannelRef,
        f: impl FnOnce(&mut ChannelMachine<S>, &mut Outgoing) -> Result<T, Failure>,
    ) -> Result<T, S::Error> {
        if !matches!(self.phase, ConnPhase::Open) {
            return Err(self.channel_gone());
        }
        match self.slots.get_mut(usize::from(r.id)) {
            Some(Slot::Live(ch)) if ch.epoch == r.epoch => f(ch, &mut self.out).map_err(Into::into),
            _ => Err(Failure::Closed("channel").into()),
        }
    }

    fn channel_gone(&self) -> S::Error {
        match &self.phase {
            ConnPhase::Ended(e) => e.clone(),
            ConnPhase::Closing => Failure::Closed("connection").into(),
            ConnPhase::Open => Failure::Closed("channel").into(),
        }
    }

    /// True when publishing on the channel must wait: the server paused it (`channel.flow`)
    /// or the broker blocks the connection. An error when the channel cannot publish at all.
    pub fn publish_paused(&self, r: ChannelRef) -> Result<bool, S::Error> {
        self.check_open()?;
        match self.live(r) {
            Some(ch) if ch.phase != Phase::Closing => Ok(ch.flow_paused || self.blocked.is_some()),
            _ => Err(Failure::Closed("channel").into()),
        }
    }

    /// Publishes a message on a channel in confirm mode (`confirm.select` sent); `waiter`
    /// gets the broker's confirm. Returns its sequence number.
    pub fn publish(
        &mut self,
        r: ChannelRef,
        publish: &Publish<'_>,
        waiter: S::Confirm,
    ) -> Result<u64, S::Error> {
        let frame_max = self.frame_max();
        self.with_channel(r, |ch, out| ch.publish(out, frame_max, publish, waiter))
    }

    /// Publishes a message fire-and-forget, on a channel that never sent `confirm.select`:
    /// nothing waits for it and no return can come back (`mandatory` is refused). A channel
    /// in confirm mode refuses it, as [`publish`](Self::publish) refuses a channel without.
    pub fn publish_unconfirmed(
        &mut self,
        r: ChannelRef,
        publish: &Publish<'_>,
    ) -> Result<(), S::Error> {
        let frame_max = self.frame_max();
        self.with_channel(r, |ch, out| ch.publish_unconfirmed(out, frame_max, publish))
    }

    /// Publishes on the channel still waiting for their confirm.
    pub fn unconfirmed(&self, r: ChannelRef) -> usize {
        self.live(r).map_or(0, ChannelMachine::unconfirmed)
    }

    /// Starts a consumer: `basic.consume` with `method`'s fields (an empty tag gets one unique
    /// on this connection). Deliveries go to `sink`, consume-ok to `waiter`. Returns the tag.
    pub fn consume(
        &mut self,
        r: ChannelRef,
        mut method: basic::Consume,
        sink: S::Consumer,
        waiter: S::Call,
    ) -> Result<ShortString, S::Error> {
        if method.consumer_tag.is_empty() {
            method.consumer_tag = format!("serena.{}.{}", r.id, self.next_consumer).into();
            self.next_consumer += 1;
        }
        let tag = method.consumer_tag.clone();
        method.nowait = false;
        self.with_channel(r, |ch, out| ch.consume(out, method, sink, waiter))?;
        Ok(tag)
    }

    /// Cancels a consumer. With a `waiter`, it gets the cancel-ok; `Ok(false)` when there is
    /// nothing to cancel (the consumer already ended).
    pub fn cancel(
        &mut self,
        r: ChannelRef,
        tag: &ShortString,
        waiter: Option<S::Call>,
    ) -> Result<bool, S::Error> {
        self.with_channel(r, |ch, out| ch.cancel(out, tag, waiter))
    }

    /// Sends `basic.ack`, `basic.nack` or `basic.reject`, only on the channel's open life.
    ///
    /// Acks in delivery order fold together: while a channel's last ack still waits in the
    /// write buffer (the writer has not taken it) and nothing else of the channel was queued
    /// after it, an ack of the oldest delivery still unsettled rewrites that frame into
    /// `ack(this tag, multiple)` instead of adding one ([`Stats::acks_folded`]). The broker
    /// sees the same acks, sooner and in fewer frames.
    pub fn settle(&mut self, r: ChannelRef, method: &Method) -> Result<(), S::Error> {
        if self.with_channel(r, |ch, out| ch.settle(out, method))? {
            self.stats.acks_folded += 1;
        }
        Ok(())
    }

    /// Closes a channel (`channel.close`); `waiter` gets the close-ok. `Ok(false)` when the
    /// channel had already ended.
    pub fn close_channel(
        &mut self,
        r: ChannelRef,
        waiter: Option<S::Call>,
    ) -> Result<bool, S::Error> {
        match self.with_channel(r, |ch, out| {
            ch.close(out, waiter);
            Ok(())
        }) {
            Ok(()) => Ok(true),
            Err(_) if matches!(self.phase, ConnPhase::Open) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// True while the channel can be used (opening or open).
    pub fn channel_is_open(&self, r: ChannelRef) -> bool {
        matches!(self.phase, ConnPhase::Open)
            && self.live(r).is_some_and(|ch| ch.phase != Phase::Closing)
    }

    /// Sends RabbitMQ's `connection.update-secret`; `waiter` gets the update-secret-ok.
    pub fn update_secret(
        &mut self,
        new_secret: LongString,
        reason: &str,
        waiter: S::Call,
    ) -> Result<(), S::Error> {
        self.check_open()?;
        let method: Method = conn::UpdateSecret {
            new_secret,
            reason: reason.into(),
        }
        .into();
        encode_method(self.out.buf(), 0, &method).map_err(Failure::from)?;
        self.secret_updates.push_back(waiter);
        Ok(())
    }

    /// Starts our clean close (`connection.close`). From now on only the server's
    /// `close`/`close-ok` are read; [`Event::Closed`] follows the close-ok.
    pub fn close(&mut self, reply_code: u16, reply_text: &str) -> Result<(), S::Error> {
        self.check_open()?;
        let method: Method = conn::Close {
            reply_code,
            reply_text: reply_text.into(),
            class_id: 0,
            method_id: 0,
        }
        .into();
        encode_method(self.out.buf(), 0, &method).map_err(Failure::from)?;
        self.phase = ConnPhase::Closing;
        Ok(())
    }

    /// Ends the connection with `error` (the first reason wins, and is returned): every
    /// channel ends, every waiter is told. For what only the driver sees.
    pub fn fail(&mut self, error: S::Error) -> S::Error {
        if let ConnPhase::Ended(first) = &self.phase {
            return first.clone();
        }
        self.phase = ConnPhase::Ended(error.clone());
        for w in self.secret_updates.drain(..) {
            S::reply(w, Err(error.clone()));
        }
        for slot in &mut self.slots {
            if let Slot::Live(ch) = std::mem::replace(slot, Slot::Closed) {
                ch.end(error.clone(), false);
            }
        }
        self.live = 0;
        error
    }

    /// Tells the server which rule it broke (`connection.close` with the rule's reply code)
    /// and ends the connection; returns the error for the user.
    fn refuse(
        &mut self,
        reply_code: u16,
        (class_id, method_id): (u16, u16),
        failure: Failure,
    ) -> S::Error {
        let error: S::Error = failure.clone().into();
        let mut reply_text = match &failure {
            Failure::Protocol(e) => format!("protocol error from the server: {e}"),
            Failure::UnexpectedMethod(m) => format!("protocol violation by the server: {m}"),
            other => format!("{other:?}"),
        };
        if reply_text.len() > ShortString::MAX_LEN {
            // Cut on a character boundary: the text quotes names the server chose.
            let mut end = ShortString::MAX_LEN;
            while !reply_text.is_char_boundary(end) {
                end -= 1;
            }
            reply_text.truncate(end);
        }
        tracing::warn!(reply_code, %reply_text, "the server broke the protocol; closing the connection");
        if !matches!(self.phase, ConnPhase::Ended(_)) {
            let close: Method = conn::Close {
                reply_code,
                reply_text: reply_text.into(),
                class_id,
                method_id,
            }
            .into();
            let _ = encode_method(self.out.buf(), 0, &close);
        }
        self.fail(error)
    }

    /// Bytes the decoder (or a channel's content assembler) refused: closes the connection
    /// with 501, 505 or 540 as the rule says, and returns the error.
    pub fn handle_decode_error(&mut self, e: DecodeError) -> S::Error {
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
        self.refuse(code, cause, Failure::Protocol(e))
    }

    /// Handles every whole frame at the front of `buf` (bytes read from the socket), and
    /// leaves an incomplete one there for the next read. Bytes that are not a frame close the
    /// connection with the rule's reply code, as [`handle_decode_error`](Self::handle_decode_error).
    pub fn handle_bytes(&mut self, buf: &mut BytesMut) -> Result<(), S::Error> {
        loop {
            match self.decoder.decode(buf) {
                Ok(Some(frame)) => {
                    tracing::trace!(?frame, "received");
                    self.handle_frame(frame)?;
                }
                Ok(None) => return Ok(()),
                Err(e) => return Err(self.handle_decode_error(e)),
            }
        }
    }

    /// Handles one frame from the server. An error means the connection is over (the server
    /// closed it, or broke the protocol and was told so); every waiter has been told.
    pub fn handle_frame(&mut self, frame: Frame) -> Result<(), S::Error> {
        if let ConnPhase::Ended(e) = &self.phase {
            return Err(e.clone());
        }
        self.stats.frames_received += 1;
        // connection.close / stability: after our close, all but close and close-ok is
        // discarded (what the server sent before it saw our close).
        let close_handshake = matches!(
            &frame,
            Frame::Method {
                channel: 0,
                method: Method::ConnectionClose(_) | Method::ConnectionCloseOk(_)
            }
        );
        if matches!(self.phase, ConnPhase::Closing) && !close_handshake {
            self.stats.late_frames += 1;
            return Ok(());
        }
        match frame {
            Frame::Heartbeat => {
                self.stats.heartbeats_received += 1;
                Ok(())
            }
            Frame::Method { channel: 0, method } => self.handle_connection_method(method),
            // §4.2.6.1: content frames on channel 0 are a channel error.
            frame if frame.channel() == 0 => Err(self.refuse(
                CHANNEL_ERROR,
                (0, 0),
                Failure::UnexpectedMethod(format!("{} on channel 0", describe(&frame))),
            )),
            // §4.2.3: connection methods on another channel are an invalid command.
            Frame::Method { channel, method } if method.class_id() == CONNECTION_CLASS => Err(self
                .refuse(
                    COMMAND_INVALID,
                    (method.class_id(), method.method_id()),
                    Failure::UnexpectedMethod(format!(
                        "{} on channel {channel}: connection methods belong on channel 0",
                        method.name()
                    )),
                )),
            frame => self.handle_channel_frame(frame),
        }
    }

    fn handle_channel_frame(&mut self, frame: Frame) -> Result<(), S::Error> {
        let id = frame.channel();
        let ch = match self.slots.get_mut(usize::from(id)) {
            Some(Slot::Live(ch)) => ch,
            Some(Slot::Closed) => {
                tracing::trace!(channel = id, frame = %describe(&frame), "late frame of a closed channel dropped");
                self.stats.late_frames += 1;
                return Ok(());
            }
            // 504 is "a channel that had not been correctly opened". The check comes before
            // anything is stored for the id, so a hostile channel number costs nothing.
            _ => {
                let cause = match &frame {
                    Frame::Method { method, .. } => (method.class_id(), method.method_id()),
                    _ => (0, 0),
                };
                return Err(self.refuse(
                    CHANNEL_ERROR,
                    cause,
                    Failure::UnexpectedMethod(format!(
                        "{} on channel {id}, which is not open",
                        describe(&frame)
                    )),
                ));
            }
        };
        if ch.phase == Phase::Opening
            && !matches!(
                &frame,
                Frame::Method {
                    method: Method::ChannelOpenOk(_) | Method::ChannelClose(_),
                    ..
                }
            )
        {
            // Frames of the id's previous life, sent before the server saw its end.
            tracing::trace!(channel = id, frame = %describe(&frame), "late frame before open-ok dropped");
            self.stats.late_frames += 1;
            return Ok(());
        }
        let assembled = match ch.assembler().handle_frame(frame) {
            Ok(Some(a)) => a,
            Ok(None) => return Ok(()),
            Err(e) => return Err(self.handle_decode_error(e)),
        };
        match ch.handle(&mut self.out, assembled) {
            Ok(Step::Continue) => Ok(()),
            Ok(Step::Dropped) => {
                self.stats.late_frames += 1;
                Ok(())
            }
            Ok(Step::Ended(reason)) => {
                // After our close-ok the server may send nothing more there (close-ok is its
                // last word): the id is as good as never opened. After the server's close,
                // what it had queued may still come: late frames, dropped.
                let close_ok = matches!(reason, Failure::Closed(_));
                let after = if close_ok { Slot::Unused } else { Slot::Closed };
                if let Slot::Live(ch) = std::mem::replace(&mut self.slots[usize::from(id)], after) {
                    self.live -= 1;
                    ch.end(reason.into(), close_ok);
                }
                Ok(())
            }
            Err(Violation {
                reply_code,
                class_id,
                method_id,
                failure,
            }) => Err(self.refuse(reply_code, (class_id, method_id), failure)),
        }
    }

    fn handle_connection_method(&mut self, method: Method) -> Result<(), S::Error> {
        match method {
            Method::ConnectionClose(c) => {
                let _ = encode_method(self.out.buf(), 0, &conn::CloseOk {}.into());
                let close = ServerClose {
                    channel: None,
                    reply_code: c.reply_code,
                    reply_text: c.reply_text.to_string(),
                    class_id: c.class_id,
                    method_id: c.method_id,
                };
                tracing::warn!(?close, "connection closed by the server");
                Err(self.fail(Failure::ServerClosed(close).into()))
            }
            Method::ConnectionCloseOk(_) if matches!(self.phase, ConnPhase::Closing) => {
                self.fail(Failure::Closed("connection").into());
                self.events.push_back(Event::Closed);
                Ok(())
            }
            Method::ConnectionBlocked(b) => {
                tracing::warn!(reason = %b.reason, "connection blocked by the broker");
                self.blocked = Some(b.reason.to_string());
                self.events.push_back(Event::Blocked(b.reason.to_string()));
                Ok(())
            }
            Method::ConnectionUnblocked(_) => {
                tracing::info!("connection unblocked");
                self.blocked = None;
                self.events.push_back(Event::Unblocked);
                Ok(())
            }
            Method::ConnectionUpdateSecretOk(_) => {
                if let Some(w) = self.secret_updates.pop_front() {
                    S::reply(
                        w,
                        Ok(Assembled::Method(Method::ConnectionUpdateSecretOk(
                            conn::UpdateSecretOk {},
                        ))),
                    );
                } else {
                    self.stats.late_frames += 1;
                }
                Ok(())
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
                    Failure::UnexpectedMethod(format!("{} on channel 0", other.name())),
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests;
