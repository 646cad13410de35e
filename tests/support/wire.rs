//! A small blocking AMQP 0-9-1 connection built straight on `serena::proto`, for tests that
//! check the codec against the real broker byte for byte.
//!
//! [`WireConn`] owns a [`TcpStream`] with read and write timeouts ([`TIMEOUT`]), so a test that
//! waits for a frame the broker never sends fails instead of hanging. Sending encodes a method
//! (or a whole message, split at the negotiated `frame_max`) and writes it at once; receiving
//! reads into a buffer, splits frames off it with a [`FrameDecoder`], drops heartbeats, and
//! feeds each channel's frames to its own [`ContentAssembler`].
//!
//! ```text
//! socket -> read_buf -> FrameDecoder -> (heartbeats dropped) -> ContentAssembler per channel
//!        -> (channel, Assembled) -> recv / recv_on (frames of other channels wait in `pending`)
//! ```

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use bytes::BytesMut;
use serena::proto::connection::{Tuning, negotiate};
use serena::proto::method::{basic, channel, connection};
use serena::proto::{
    Assembled, BasicProperties, Content, ContentAssembler, DecodeError, EncodeError,
    FRAME_MIN_SIZE, FieldTable, Frame, FrameDecoder, LongString, Method, PROTOCOL_HEADER, content,
    frame,
};

/// How long any single read or write may block before the test fails.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// The user and password of the broker the tests use.
pub const GUEST: &str = "guest";

/// What can go wrong talking to the broker.
#[derive(Debug)]
pub enum WireError {
    /// The socket failed, or a read or write timed out.
    Io(io::Error),
    /// The broker's bytes did not decode.
    Decode(DecodeError),
    /// A value could not be encoded.
    Encode(EncodeError),
    /// The broker closed the socket.
    Eof,
    /// The broker sent `connection.close` while the test waited on another channel.
    ConnectionClosed(connection::Close),
    /// A method arrived where a message was expected, or the reverse.
    Unexpected {
        /// The channel it arrived on.
        channel: u16,
        /// What arrived.
        got: Box<Assembled>,
    },
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WireError::Io(e) => write!(f, "socket: {e}"),
            WireError::Decode(e) => write!(f, "decoding the broker's bytes: {e}"),
            WireError::Encode(e) => write!(f, "encoding: {e}"),
            WireError::Eof => f.write_str("the broker closed the socket"),
            WireError::ConnectionClosed(c) => write!(
                f,
                "the broker closed the connection: {} {} (method {}.{})",
                c.reply_code, c.reply_text, c.class_id, c.method_id
            ),
            WireError::Unexpected { channel, got } => {
                write!(f, "channel {channel}: unexpected {got:?}")
            }
        }
    }
}

impl std::error::Error for WireError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            WireError::Io(e) => Some(e),
            WireError::Decode(e) => Some(e),
            WireError::Encode(e) => Some(e),
            _ => None,
        }
    }
}

impl From<io::Error> for WireError {
    fn from(e: io::Error) -> Self {
        WireError::Io(e)
    }
}

impl From<DecodeError> for WireError {
    fn from(e: DecodeError) -> Self {
        WireError::Decode(e)
    }
}

impl From<EncodeError> for WireError {
    fn from(e: EncodeError) -> Self {
        WireError::Encode(e)
    }
}

/// The SASL mechanism and response a handshake logs in with.
#[derive(Debug, Clone)]
pub struct Login {
    /// Mechanism name, `PLAIN` or `AMQPLAIN`.
    pub mechanism: &'static str,
    /// The SASL response sent in `start-ok`.
    pub response: LongString,
}

impl Login {
    /// PLAIN: `\0user\0password`.
    pub fn plain(user: &str, password: &str) -> Login {
        Login {
            mechanism: "PLAIN",
            response: format!("\0{user}\0{password}").into_bytes().into(),
        }
    }
}

/// The capabilities the tests announce in `start-ok`.
pub fn client_capabilities() -> FieldTable {
    [
        "publisher_confirms",
        "consumer_cancel_notify",
        "basic.nack",
        "connection.blocked",
        "authentication_failure_close",
        "per_consumer_qos",
    ]
    .into_iter()
    .map(|name| (name, true))
    .collect()
}

/// The `client_properties` of `start-ok`, capabilities included.
pub fn client_properties(connection_name: &str) -> FieldTable {
    FieldTable::new()
        .with("product", "serena-tests")
        .with("platform", "Rust")
        .with("connection_name", connection_name)
        .with("capabilities", client_capabilities())
}

/// The limits the tests ask for in `tune-ok` (before taking the smaller of the broker's).
pub const CLIENT_TUNING: Tuning = Tuning {
    channel_max: 2047,
    frame_max: 131_072,
    heartbeat: 60,
};

/// One blocking AMQP connection to the test broker.
pub struct WireConn {
    stream: TcpStream,
    read_buf: BytesMut,
    write_buf: BytesMut,
    decoder: FrameDecoder,
    frame_max: u32,
    assemblers: HashMap<u16, ContentAssembler>,
    /// Received units of other channels, kept while `recv_on` waits for its own.
    pending: VecDeque<(u16, Assembled)>,
    heartbeats: u64,
    body_frames: u64,
}

impl fmt::Debug for WireConn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WireConn")
            .field("peer", &self.stream.peer_addr().ok())
            .field("frame_max", &self.frame_max)
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

impl WireConn {
    /// Opens a TCP connection to [`broker_addr`](crate::broker_addr) and sends the protocol
    /// header. The broker answers with `connection.start`.
    pub fn connect() -> Result<WireConn, WireError> {
        let stream = TcpStream::connect(crate::broker_addr())?;
        stream.set_read_timeout(Some(TIMEOUT))?;
        stream.set_write_timeout(Some(TIMEOUT))?;
        stream.set_nodelay(true)?;
        let mut conn = WireConn {
            stream,
            read_buf: BytesMut::with_capacity(64 * 1024),
            write_buf: BytesMut::with_capacity(64 * 1024),
            decoder: FrameDecoder::new(FRAME_MIN_SIZE),
            frame_max: FRAME_MIN_SIZE,
            assemblers: HashMap::new(),
            pending: VecDeque::new(),
            heartbeats: 0,
            body_frames: 0,
        };
        conn.stream.write_all(&PROTOCOL_HEADER)?;
        Ok(conn)
    }

    /// Connects and runs the whole handshake as guest on vhost `/`, with [`CLIENT_TUNING`].
    pub fn open(connection_name: &str) -> Result<WireConn, WireError> {
        let mut conn = WireConn::connect()?;
        conn.handshake(
            &Login::plain(GUEST, GUEST),
            connection_name,
            CLIENT_TUNING,
            "/",
        )?;
        Ok(conn)
    }

    /// Runs the handshake after [`connect`](Self::connect): start / start-ok, tune / tune-ok,
    /// open / open-ok. Returns the broker's `connection.start` and the tuning in force.
    pub fn handshake(
        &mut self,
        login: &Login,
        connection_name: &str,
        wanted: Tuning,
        vhost: &str,
    ) -> Result<(connection::Start, Tuning), WireError> {
        let start = self.start(login, connection_name)?;
        let tuning = self.recv_tune(wanted)?;
        self.open_vhost(vhost)?;
        Ok((start, tuning))
    }

    /// Waits for `connection.start` and answers with `start-ok`: [`client_properties`] and
    /// `login`.
    pub fn start(
        &mut self,
        login: &Login,
        connection_name: &str,
    ) -> Result<connection::Start, WireError> {
        let start = match self.recv_method(0)? {
            Method::ConnectionStart(start) => start,
            other => return Err(unexpected(0, Assembled::Method(other))),
        };
        self.send(
            0,
            connection::StartOk {
                client_properties: client_properties(connection_name),
                mechanism: login.mechanism.into(),
                response: login.response.clone(),
                locale: "en_US".into(),
            },
        )?;
        Ok(start)
    }

    /// Waits for `connection.tune` and settles it against `wanted` (see [`tune`](Self::tune)).
    pub fn recv_tune(&mut self, wanted: Tuning) -> Result<Tuning, WireError> {
        match self.recv_method(0)? {
            Method::ConnectionTune(tune) => self.tune(&tune, wanted),
            other => Err(unexpected(0, Assembled::Method(other))),
        }
    }

    /// Sends `connection.open` for `vhost` and waits for `open-ok`.
    pub fn open_vhost(&mut self, vhost: &str) -> Result<(), WireError> {
        let open = connection::Open {
            virtual_host: vhost.into(),
        };
        match self.rpc(0, open)? {
            Method::ConnectionOpenOk(_) => Ok(()),
            other => Err(unexpected(0, Assembled::Method(other))),
        }
    }

    /// Settles the limits of `tune` against `wanted`, sends `tune-ok` and applies the
    /// negotiated `frame_max` to both directions.
    pub fn tune(&mut self, tune: &connection::Tune, wanted: Tuning) -> Result<Tuning, WireError> {
        let server = Tuning {
            channel_max: tune.channel_max,
            frame_max: tune.frame_max,
            heartbeat: tune.heartbeat,
        };
        let tuning = negotiate(wanted, server);
        self.send(
            0,
            connection::TuneOk {
                channel_max: tuning.channel_max,
                frame_max: tuning.frame_max,
                heartbeat: tuning.heartbeat,
            },
        )?;
        self.set_frame_max(tuning.frame_max);
        Ok(tuning)
    }

    /// Sets the `frame_max` used to split outgoing bodies and to accept incoming frames.
    pub fn set_frame_max(&mut self, frame_max: u32) {
        self.frame_max = frame_max;
        self.decoder.set_frame_max(frame_max);
    }

    /// The `frame_max` in force.
    pub fn frame_max(&self) -> u32 {
        self.frame_max
    }

    /// Heartbeat frames received (and skipped) so far.
    pub fn heartbeats(&self) -> u64 {
        self.heartbeats
    }

    /// Body frames received so far, on every channel.
    pub fn body_frames(&self) -> u64 {
        self.body_frames
    }

    /// Sends one method frame.
    pub fn send(&mut self, channel: u16, method: impl Into<Method>) -> Result<(), WireError> {
        self.write_buf.clear();
        frame::encode_method(&mut self.write_buf, channel, &method.into())?;
        self.flush()
    }

    /// Sends a content-bearing method with its header and body, the body split into frames
    /// of at most the negotiated `frame_max`.
    pub fn send_content(
        &mut self,
        channel: u16,
        method: impl Into<Method>,
        properties: &BasicProperties,
        body: &[u8],
    ) -> Result<(), WireError> {
        self.write_buf.clear();
        content::encode_content(
            &mut self.write_buf,
            channel,
            &method.into(),
            properties,
            body,
            self.frame_max,
        )?;
        self.flush()
    }

    /// Publishes `body` with `properties` to `exchange` under `routing_key`.
    pub fn publish(
        &mut self,
        channel: u16,
        exchange: &str,
        routing_key: &str,
        properties: &BasicProperties,
        body: &[u8],
    ) -> Result<(), WireError> {
        let publish = basic::Publish {
            exchange: exchange.into(),
            routing_key: routing_key.into(),
            mandatory: false,
            immediate: false,
        };
        self.send_content(channel, publish, properties, body)
    }

    /// Sends a heartbeat frame.
    pub fn send_heartbeat(&mut self) -> Result<(), WireError> {
        self.write_buf.clear();
        frame::encode_heartbeat(&mut self.write_buf);
        self.flush()
    }

    fn flush(&mut self) -> Result<(), WireError> {
        self.stream.write_all(&self.write_buf)?;
        self.write_buf.clear();
        Ok(())
    }

    /// Reads until one whole frame is buffered, and splits it off.
    fn read_frame(&mut self) -> Result<Frame, WireError> {
        let mut chunk = [0u8; 64 * 1024];
        loop {
            if let Some(frame) = self.decoder.decode(&mut self.read_buf)? {
                return Ok(frame);
            }
            let n = self.stream.read(&mut chunk)?;
            if n == 0 {
                return Err(WireError::Eof);
            }
            self.read_buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Reads frames until one channel has a method or a whole message, skipping heartbeats.
    fn read_assembled(&mut self) -> Result<(u16, Assembled), WireError> {
        loop {
            let frame = self.read_frame()?;
            match frame {
                Frame::Heartbeat => {
                    self.heartbeats += 1;
                    continue;
                }
                Frame::Body { .. } => self.body_frames += 1,
                Frame::Method { .. } | Frame::Header { .. } => {}
            }
            let channel = frame.channel();
            let assembler = self
                .assemblers
                .entry(channel)
                .or_insert_with(|| ContentAssembler::new(channel));
            if let Some(assembled) = assembler.handle_frame(frame)? {
                return Ok((channel, assembled));
            }
        }
    }

    /// The next method or message on any channel, with its channel.
    pub fn recv(&mut self) -> Result<(u16, Assembled), WireError> {
        match self.pending.pop_front() {
            Some(received) => Ok(received),
            None => self.read_assembled(),
        }
    }

    /// The next method or message on `channel`. What arrives on other channels meanwhile is
    /// kept for later; a `connection.close` while waiting on another channel is an error.
    pub fn recv_on(&mut self, channel: u16) -> Result<Assembled, WireError> {
        if let Some(at) = self.pending.iter().position(|(c, _)| *c == channel) {
            let (_, assembled) = self.pending.remove(at).expect("position is in range");
            return Ok(assembled);
        }
        loop {
            let (c, assembled) = self.read_assembled()?;
            if c == channel {
                return Ok(assembled);
            }
            if let Assembled::Method(Method::ConnectionClose(close)) = &assembled {
                return Err(WireError::ConnectionClosed(close.clone()));
            }
            self.pending.push_back((c, assembled));
        }
    }

    /// The next unit on `channel`, which must be a method.
    pub fn recv_method(&mut self, channel: u16) -> Result<Method, WireError> {
        match self.recv_on(channel)? {
            Assembled::Method(method) => Ok(method),
            other => Err(unexpected(channel, other)),
        }
    }

    /// The next unit on `channel`, which must be a whole message.
    pub fn recv_content(&mut self, channel: u16) -> Result<Content, WireError> {
        match self.recv_on(channel)? {
            Assembled::Content(content) => Ok(content),
            other => Err(unexpected(channel, other)),
        }
    }

    /// Sends `method` and returns the next method on the same channel (its reply, or a close).
    pub fn rpc(&mut self, channel: u16, method: impl Into<Method>) -> Result<Method, WireError> {
        self.send(channel, method)?;
        self.recv_method(channel)
    }

    /// Opens `channel` and waits for `open-ok`.
    pub fn open_channel(&mut self, channel: u16) -> Result<(), WireError> {
        match self.rpc(channel, channel::Open {})? {
            Method::ChannelOpenOk(_) => Ok(()),
            other => Err(unexpected(channel, Assembled::Method(other))),
        }
    }

    /// Closes `channel` normally (200) and waits for `close-ok`.
    pub fn close_channel(&mut self, channel: u16) -> Result<(), WireError> {
        let close = channel::Close {
            reply_code: 200,
            reply_text: "bye".into(),
            class_id: 0,
            method_id: 0,
        };
        match self.rpc(channel, close)? {
            Method::ChannelCloseOk(_) => {
                self.assemblers.remove(&channel);
                Ok(())
            }
            other => Err(unexpected(channel, Assembled::Method(other))),
        }
    }

    /// Answers a `channel.close` from the broker with `close-ok`, freeing the channel id.
    pub fn ack_channel_close(&mut self, channel: u16) -> Result<(), WireError> {
        self.assemblers.remove(&channel);
        self.send(channel, channel::CloseOk {})
    }

    /// Answers a `connection.close` from the broker with `close-ok`; the broker then closes
    /// the socket, which this waits for.
    pub fn ack_connection_close(mut self) -> Result<(), WireError> {
        self.send(0, connection::CloseOk {})?;
        self.expect_eof()
    }

    /// Closes the connection normally (200) and waits for `close-ok`. The client closes the
    /// socket after a close it started (RabbitMQ waits for that), so this shuts down the write
    /// half and then checks that the broker, seeing it, closes its side with nothing more sent.
    pub fn close(mut self) -> Result<(), WireError> {
        let close = connection::Close {
            reply_code: 200,
            reply_text: "bye".into(),
            class_id: 0,
            method_id: 0,
        };
        match self.rpc(0, close)? {
            Method::ConnectionCloseOk(_) => {
                self.stream.shutdown(std::net::Shutdown::Write)?;
                self.expect_eof()
            }
            other => Err(unexpected(0, Assembled::Method(other))),
        }
    }

    /// Waits for the broker to close the socket, failing if any frame other than a heartbeat
    /// arrives first.
    pub fn expect_eof(&mut self) -> Result<(), WireError> {
        match self.read_assembled() {
            Err(WireError::Eof) if self.read_buf.is_empty() => Ok(()),
            // A reset after close-ok is as good as an orderly shutdown.
            Err(WireError::Io(e)) if e.kind() == io::ErrorKind::ConnectionReset => Ok(()),
            Ok((channel, got)) => Err(unexpected(channel, got)),
            Err(e) => Err(e),
        }
    }
}

fn unexpected(channel: u16, got: Assembled) -> WireError {
    WireError::Unexpected {
        channel,
        got: Box::new(got),
    }
}
