//! The broker core, sans-IO: bytes in ([`Core::handle_input`]), bytes out
//! ([`Core::poll_output`]), the wall clock passed in (for `x-death`'s `time`). No tokio here.
//!
//! A connection goes `Header -> StartOk -> TuneOk -> Open -> Open(ed) -> Closing -> Closed`:
//! the client's protocol header gets `connection.start`, its `start-ok` a `tune` (heartbeat 0),
//! its `open` an `open-ok`. A channel error sends `channel.close` and the channel then ignores
//! everything but `close`/`close-ok`, as RabbitMQ's channels do; a connection error sends
//! `connection.close` and the stream ends after the client's `close-ok`.

use std::collections::{BTreeMap, HashMap};

use bytes::{Bytes, BytesMut};
use serena_proto::method::{basic, channel, connection};
use serena_proto::{
    Assembled, BasicProperties, ContentAssembler, FieldTable, FrameDecoder, Method,
    PROTOCOL_HEADER, content::encode_content, frame::encode_method,
};

use crate::Stats;
use crate::queue::{Destination, Exchange, Message, Queue};
use crate::routing::Kind;

const FRAME_MAX: u32 = 131_072;
const CHANNEL_MAX: u16 = 2047;

/// Reply codes as RabbitMQ sends them.
mod code {
    pub(super) const NO_ROUTE: u16 = 312;
    pub(super) const ACCESS_REFUSED: u16 = 403;
    pub(super) const NOT_FOUND: u16 = 404;
    pub(super) const RESOURCE_LOCKED: u16 = 405;
    pub(super) const PRECONDITION_FAILED: u16 = 406;
    pub(super) const FRAME_ERROR: u16 = 501;
    pub(super) const COMMAND_INVALID: u16 = 503;
    pub(super) const CHANNEL_ERROR: u16 = 504;
    pub(super) const NOT_ALLOWED: u16 = 530;
    pub(super) const NOT_IMPLEMENTED: u16 = 540;
}

/// Why a method failed: the channel or the whole connection is closed with a code and a text.
enum Fail {
    Channel(u16, String),
    Connection(u16, String),
}

fn not_found(what: &str, name: &str) -> Fail {
    Fail::Channel(
        code::NOT_FOUND,
        format!("NOT_FOUND - no {what} '{name}' in vhost '/'"),
    )
}

fn precondition(text: String) -> Fail {
    Fail::Channel(
        code::PRECONDITION_FAILED,
        format!("PRECONDITION_FAILED - {text}"),
    )
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Header,
    StartOk,
    TuneOk,
    Open,
    Opened,
    /// The server sent `connection.close` and waits for `close-ok`.
    Closing,
    /// The stream ends once the output is read.
    Closed,
}

struct ChanConsumer {
    queue: String,
    no_ack: bool,
    prefetch: u16,
    inflight: u32,
}

struct Unacked {
    queue: String,
    consumer: Option<String>,
    message: Message,
}

struct Chan {
    assembler: ContentAssembler,
    closing: bool,
    prefetch: u16,
    global_prefetch: u16,
    consumers: HashMap<String, ChanConsumer>,
    unacked: BTreeMap<u64, Unacked>,
    next_tag: u64,
    confirm: bool,
    next_seq: u64,
}

impl Chan {
    fn new(id: u16) -> Chan {
        Chan {
            assembler: ContentAssembler::new(id),
            closing: false,
            prefetch: 0,
            global_prefetch: 0,
            consumers: HashMap::new(),
            unacked: BTreeMap::new(),
            next_tag: 1,
            confirm: false,
            next_seq: 1,
        }
    }
}

struct Conn {
    decoder: FrameDecoder,
    input: BytesMut,
    out: BytesMut,
    phase: Phase,
    frame_max: u32,
    channels: HashMap<u16, Chan>,
}

/// The time, passed in: a monotonic clock in milliseconds (tokio's, so that paused time moves
/// TTLs) and the wall clock in seconds since the Unix epoch (`x-death`'s `time`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Now {
    pub(crate) millis: u64,
    pub(crate) unix_secs: u64,
}

/// The whole broker: one vhost (`/`), its exchanges and queues, and the open connections.
pub(crate) struct Core {
    exchanges: HashMap<String, Exchange>,
    queues: HashMap<String, Queue>,
    conns: HashMap<u64, Conn>,
    next_id: u64,
    /// The monotonic clock at the last input, in milliseconds.
    millis: u64,
    pub(crate) stats: Stats,
}

impl Core {
    pub(crate) fn new() -> Core {
        let mut exchanges = HashMap::new();
        for (name, kind) in [
            ("amq.direct", Kind::Direct),
            ("amq.fanout", Kind::Fanout),
            ("amq.topic", Kind::Topic),
            ("amq.headers", Kind::Headers),
            ("amq.match", Kind::Headers),
        ] {
            exchanges.insert(
                name.to_owned(),
                Exchange {
                    kind,
                    durable: true,
                    auto_delete: false,
                    internal: false,
                    arguments: FieldTable::new(),
                    bindings: Vec::new(),
                },
            );
        }
        Core {
            exchanges,
            queues: HashMap::new(),
            conns: HashMap::new(),
            next_id: 1,
            millis: 0,
            stats: Stats::default(),
        }
    }

    /// A new connection, waiting for the client's protocol header.
    pub(crate) fn handle_connect(&mut self) -> u64 {
        let id = self.fresh_id();
        self.conns.insert(
            id,
            Conn {
                decoder: FrameDecoder::new(FRAME_MAX),
                input: BytesMut::new(),
                out: BytesMut::new(),
                phase: Phase::Header,
                frame_max: FRAME_MAX,
                channels: HashMap::new(),
            },
        );
        id
    }

    fn fresh_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// The client's end of connection `id` went away: its channels end as if closed.
    pub(crate) fn handle_disconnect(&mut self, id: u64) {
        self.drop_connection(id);
        self.dispatch();
    }

    /// Bytes the client wrote on connection `id` at `now`.
    pub(crate) fn handle_input(&mut self, id: u64, bytes: &[u8], now: Now) {
        self.handle_timeout(now);
        let now = now.unix_secs;
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        if matches!(conn.phase, Phase::Closed) {
            return;
        }
        conn.input.extend_from_slice(bytes);
        if conn.phase == Phase::Header {
            if conn.input.len() < PROTOCOL_HEADER.len() {
                return;
            }
            let header = conn.input.split_to(PROTOCOL_HEADER.len());
            if header[..] != PROTOCOL_HEADER[..] {
                conn.out.extend_from_slice(&PROTOCOL_HEADER);
                conn.phase = Phase::Closed;
                return;
            }
            let capabilities = FieldTable::new()
                .with("publisher_confirms", true)
                .with("exchange_exchange_bindings", true)
                .with("basic.nack", true)
                .with("consumer_cancel_notify", true)
                .with("connection.blocked", true)
                .with("authentication_failure_close", true)
                .with("per_consumer_qos", true);
            let start = connection::Start {
                version_major: 0,
                version_minor: 9,
                server_properties: FieldTable::new()
                    .with("product", "serena-testing")
                    .with("capabilities", capabilities),
                mechanisms: Bytes::from_static(b"PLAIN AMQPLAIN").into(),
                locales: Bytes::from_static(b"en_US").into(),
            };
            send(conn, 0, start);
            conn.phase = Phase::StartOk;
        }
        loop {
            let Some(conn) = self.conns.get_mut(&id) else {
                return;
            };
            if conn.phase == Phase::Closed {
                return;
            }
            let frame = match conn.decoder.decode(&mut conn.input) {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(e) => {
                    self.close_connection(
                        id,
                        code::FRAME_ERROR,
                        &format!("FRAME_ERROR - {e}"),
                        0,
                        0,
                    );
                    break;
                }
            };
            self.handle_frame(id, frame, now);
            // Deliver after every frame, as RabbitMQ's queues act on each command in turn: an
            // ack followed by a cancel in one write frees the window before the cancel.
            self.dispatch();
        }
        self.dispatch();
    }

    /// Time passed: messages whose TTL ran out leave their queues (dead-lettered as
    /// `expired`), queues unused for their `x-expires` are deleted, and what is left is
    /// delivered.
    pub(crate) fn handle_timeout(&mut self, now: Now) {
        self.millis = self.millis.max(now.millis);
        self.expire(now.unix_secs);
        let unused: Vec<String> = self
            .queues
            .iter()
            .filter(|(_, q)| q.expires_at().is_some_and(|t| t <= self.millis))
            .map(|(n, _)| n.clone())
            .collect();
        for name in unused {
            self.delete_queue(&name);
        }
        self.dispatch();
    }

    /// When the next message or unused queue expires (monotonic milliseconds). Only a queue's
    /// head is looked at: as in RabbitMQ's classic queues, a message expires once it reaches
    /// the head.
    pub(crate) fn poll_timeout(&self) -> Option<u64> {
        self.queues
            .values()
            .flat_map(|q| {
                [
                    q.messages.front().and_then(|m| m.expires_at),
                    q.expires_at(),
                ]
            })
            .flatten()
            .min()
    }

    /// Takes up to `max` bytes the server has for connection `id`; `None` when the stream has
    /// ended (closed and everything read).
    pub(crate) fn poll_output(&mut self, id: u64, max: usize) -> Option<Bytes> {
        let conn = self.conns.get_mut(&id)?;
        if conn.out.is_empty() {
            return (conn.phase != Phase::Closed).then(Bytes::new);
        }
        let n = max.min(conn.out.len());
        Some(conn.out.split_to(n).freeze())
    }

    /// True when connection `id` has bytes to read.
    pub(crate) fn has_output(&self, id: u64) -> bool {
        self.conns
            .get(&id)
            .is_some_and(|c| !c.out.is_empty() || c.phase == Phase::Closed)
    }

    /// True when nothing is on its way: no output unread, no unacknowledged delivery, no
    /// message waiting in a queue that a consumer could take.
    pub(crate) fn is_idle(&self) -> bool {
        self.conns.values().all(|c| {
            c.out.is_empty()
                && c.input.is_empty()
                && c.channels.values().all(|ch| ch.unacked.is_empty())
        }) && self
            .queues
            .values()
            .all(|q| q.messages.is_empty() || q.consumers.is_empty())
    }

    fn handle_frame(&mut self, id: u64, frame: serena_proto::Frame, now: u64) {
        let ch = frame.channel();
        if matches!(frame, serena_proto::Frame::Heartbeat) {
            // Heartbeats are off (tune says 0), but a client configured with its own interval
            // still sends them: each is answered so that the client's read timeout never fires.
            if let Some(conn) = self.conns.get_mut(&id) {
                serena_proto::frame::encode_heartbeat(&mut conn.out);
            }
            return;
        }
        if ch == 0 {
            let serena_proto::Frame::Method { method, .. } = frame else {
                self.close_connection(
                    id,
                    code::COMMAND_INVALID,
                    "COMMAND_INVALID - content on channel 0",
                    0,
                    0,
                );
                return;
            };
            self.handle_connection_method(id, method);
            return;
        }
        let conn = self.conns.get_mut(&id).expect("connection");
        if conn.phase != Phase::Opened {
            return;
        }
        let Some(chan) = conn.channels.get_mut(&ch) else {
            match frame {
                serena_proto::Frame::Method {
                    method: Method::ChannelOpen(_),
                    ..
                } => {
                    conn.channels.insert(ch, Chan::new(ch));
                    send(conn, ch, channel::OpenOk::default());
                }
                _ => self.close_connection(
                    id,
                    code::CHANNEL_ERROR,
                    "CHANNEL_ERROR - expected 'channel.open'",
                    0,
                    0,
                ),
            }
            return;
        };
        if chan.closing {
            match frame {
                serena_proto::Frame::Method {
                    method: Method::ChannelCloseOk(_),
                    ..
                } => {
                    conn.channels.remove(&ch);
                }
                serena_proto::Frame::Method {
                    method: Method::ChannelClose(_),
                    ..
                } => send(conn, ch, channel::CloseOk::default()),
                _ => {}
            }
            return;
        }
        let assembled = match chan.assembler.handle_frame(frame) {
            Ok(Some(a)) => a,
            Ok(None) => return,
            Err(e) => {
                self.close_connection(
                    id,
                    code::FRAME_ERROR,
                    &format!("UNEXPECTED_FRAME - {e}"),
                    0,
                    0,
                );
                return;
            }
        };
        let (method, content) = match assembled {
            Assembled::Method(m) => (m, None),
            Assembled::Content(c) => (c.method, Some((*c.properties, c.body))),
        };
        let ids = (method.class_id(), method.method_id());
        match self.handle_method(id, ch, method, content, now) {
            Ok(()) => {}
            Err(Fail::Channel(code, text)) => {
                self.cleanup_channel(id, ch);
                let conn = self.conns.get_mut(&id).expect("connection");
                if let Some(chan) = conn.channels.get_mut(&ch) {
                    chan.closing = true;
                }
                send(
                    conn,
                    ch,
                    channel::Close {
                        reply_code: code,
                        reply_text: text.as_str().into(),
                        class_id: ids.0,
                        method_id: ids.1,
                    },
                );
            }
            Err(Fail::Connection(code, text)) => {
                self.close_connection(id, code, &text, ids.0, ids.1)
            }
        }
    }

    fn handle_connection_method(&mut self, id: u64, method: Method) {
        let conn = self.conns.get_mut(&id).expect("connection");
        match (conn.phase, method) {
            (Phase::StartOk, Method::ConnectionStartOk(_)) => {
                send(
                    conn,
                    0,
                    connection::Tune {
                        channel_max: CHANNEL_MAX,
                        frame_max: FRAME_MAX,
                        heartbeat: 0,
                    },
                );
                conn.phase = Phase::TuneOk;
            }
            (Phase::TuneOk, Method::ConnectionTuneOk(tune)) => {
                if tune.frame_max != 0 {
                    conn.frame_max = tune.frame_max.min(FRAME_MAX);
                    conn.decoder.set_frame_max(conn.frame_max);
                }
                conn.phase = Phase::Open;
            }
            (Phase::Open, Method::ConnectionOpen(open)) => {
                if open.virtual_host.as_str() != "/" {
                    let text = format!(
                        "NOT_ALLOWED - vhost {} not found",
                        open.virtual_host.as_str()
                    );
                    self.close_connection(id, code::NOT_ALLOWED, &text, 10, 40);
                    return;
                }
                send(conn, 0, connection::OpenOk::default());
                conn.phase = Phase::Opened;
            }
            (Phase::Closing, Method::ConnectionCloseOk(_)) => {
                conn.phase = Phase::Closed;
            }
            (Phase::Closing, _) => {}
            (_, Method::ConnectionClose(_)) => {
                self.drop_connection_state(id);
                let conn = self.conns.get_mut(&id).expect("connection");
                send(conn, 0, connection::CloseOk::default());
                conn.phase = Phase::Closed;
            }
            (_, Method::ConnectionUpdateSecret(_)) => {
                send(conn, 0, connection::UpdateSecretOk::default());
            }
            (_, m) => {
                let text = format!("COMMAND_INVALID - unexpected {} on channel 0", m.name());
                self.close_connection(
                    id,
                    code::COMMAND_INVALID,
                    &text,
                    m.class_id(),
                    m.method_id(),
                );
            }
        }
    }

    /// Sends `connection.close` and forgets the connection's channels and exclusive queues.
    fn close_connection(&mut self, id: u64, code: u16, text: &str, class_id: u16, method_id: u16) {
        self.drop_connection_state(id);
        let conn = self.conns.get_mut(&id).expect("connection");
        send(
            conn,
            0,
            connection::Close {
                reply_code: code,
                reply_text: text.into(),
                class_id,
                method_id,
            },
        );
        conn.phase = Phase::Closing;
    }

    fn drop_connection_state(&mut self, id: u64) {
        let channels: Vec<u16> = self
            .conns
            .get(&id)
            .map(|c| c.channels.keys().copied().collect())
            .unwrap_or_default();
        for ch in channels {
            self.cleanup_channel(id, ch);
        }
        if let Some(conn) = self.conns.get_mut(&id) {
            conn.channels.clear();
        }
        let exclusive: Vec<String> = self
            .queues
            .iter()
            .filter(|(_, q)| q.owner == Some(id))
            .map(|(n, _)| n.clone())
            .collect();
        for q in exclusive {
            self.delete_queue(&q);
        }
    }

    fn drop_connection(&mut self, id: u64) {
        self.drop_connection_state(id);
        self.conns.remove(&id);
    }

    /// Ends a channel's consumers and requeues what it had not settled.
    fn cleanup_channel(&mut self, id: u64, ch: u16) {
        let Some(chan) = self
            .conns
            .get_mut(&id)
            .and_then(|c| c.channels.get_mut(&ch))
        else {
            return;
        };
        let consumers: Vec<(String, String)> = chan
            .consumers
            .drain()
            .map(|(tag, c)| (tag, c.queue))
            .collect();
        let unacked = std::mem::take(&mut chan.unacked);
        for (tag, queue) in consumers {
            self.remove_consumer(&queue, id, ch, &tag);
        }
        for (_, u) in unacked.into_iter().rev() {
            self.requeue(&u.queue, u.message);
        }
    }

    fn remove_consumer(&mut self, queue: &str, id: u64, ch: u16, tag: &str) {
        let Some(q) = self.queues.get_mut(queue) else {
            return;
        };
        q.consumers
            .retain(|c| !(c.conn == id && c.channel == ch && c.tag == tag));
        q.last_used = self.millis;
        if q.auto_delete && q.consumers.is_empty() {
            self.delete_queue(queue);
        }
    }

    fn requeue(&mut self, queue: &str, mut message: Message) {
        let Some(q) = self.queues.get_mut(queue) else {
            return;
        };
        message.redelivered = true;
        // Back to its place in publish order, as a classic queue puts it.
        let at = q
            .messages
            .iter()
            .position(|m| m.seq > message.seq)
            .unwrap_or(q.messages.len());
        q.messages.insert(at, message);
    }

    /// Deletes a queue: its bindings go, its consumers get `basic.cancel`; returns the count
    /// of messages it held.
    fn delete_queue(&mut self, name: &str) -> u32 {
        let Some(q) = self.queues.remove(name) else {
            return 0;
        };
        for c in &q.consumers {
            if let Some(conn) = self.conns.get_mut(&c.conn) {
                if let Some(chan) = conn.channels.get_mut(&c.channel) {
                    chan.consumers.remove(&c.tag);
                }
                send(
                    conn,
                    c.channel,
                    basic::Cancel {
                        consumer_tag: c.tag.as_str().into(),
                        nowait: true,
                    },
                );
            }
        }
        let dest = Destination::Queue(name.to_owned());
        self.remove_bindings_to(&dest);
        u32::try_from(q.messages.len()).unwrap_or(u32::MAX)
    }

    fn remove_bindings_to(&mut self, dest: &Destination) {
        let mut emptied = Vec::new();
        for (name, x) in &mut self.exchanges {
            let before = x.bindings.len();
            x.bindings.retain(|b| b.destination != *dest);
            if x.auto_delete && before > 0 && x.bindings.is_empty() {
                emptied.push(name.clone());
            }
        }
        for name in emptied {
            self.delete_exchange(&name);
        }
    }

    fn delete_exchange(&mut self, name: &str) {
        if self.exchanges.remove(name).is_some() {
            self.remove_bindings_to(&Destination::Exchange(name.to_owned()));
        }
    }

    fn chan(&mut self, id: u64, ch: u16) -> &mut Chan {
        self.conns
            .get_mut(&id)
            .and_then(|c| c.channels.get_mut(&ch))
            .expect("open channel")
    }

    fn reply(&mut self, id: u64, ch: u16, nowait: bool, method: impl Into<Method>) {
        if !nowait {
            send(self.conns.get_mut(&id).expect("connection"), ch, method);
        }
    }
}

/// Appends one method frame for the client.
fn send(conn: &mut Conn, ch: u16, method: impl Into<Method>) {
    // Every method the broker sends is small and well formed: encoding cannot fail.
    let _ = encode_method(&mut conn.out, ch, &method.into());
}

/// Appends a method with content (deliver, get-ok, return).
fn send_content(
    conn: &mut Conn,
    ch: u16,
    method: Method,
    properties: &BasicProperties,
    body: &[u8],
) {
    let _ = encode_content(&mut conn.out, ch, &method, properties, body, conn.frame_max);
}

mod declare;
mod deliver;
mod methods;

#[cfg(test)]
mod tests;
