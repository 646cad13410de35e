//! A scripted AMQP 0-9-1 server for fault-injection tests: a tokio [`TcpListener`] on an
//! ephemeral port of 127.0.0.1 that speaks the server side through `serena::proto`, so a test
//! can make the server misbehave in exactly one way (a missing capability, a silence, garbage
//! bytes, a socket closed mid-frame) and check what the client makes of it.
//!
//! A test binds a [`FakeServer`], points the client at [`FakeServer::client_config`], and runs
//! its script on the accepted [`PeerConn`] concurrently with the client (`tokio::join!`), so
//! nothing outlives the test. Every read the peer does is bounded by [`PEER_TIMEOUT`]: a
//! script waiting for bytes the client never sends fails instead of hanging.
//!
//! ```text
//! client (serena)                         PeerConn (the script)
//!   | -- protocol header ---------------> |  expect_protocol_header
//!   | <------------------ connection.start |  send_start(offer)
//!   | -- start-ok ----------------------> |  \
//!   | <------------------- connection.tune |   | handshake(offer): returns start-ok,
//!   | -- tune-ok, open -----------------> |   | tune-ok and open as the client sent them
//!   | <---------------- connection.open-ok |  /
//!   |            ...                       |  serve (answer channel setup, ack publishes,
//!   |                                      |  close-ok), serve_setup (answer channel setup
//!   |                                      |  until something else comes), drain (read,
//!   |                                      |  never write), send_raw (broken frames too)
//! ```

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use serena::ConnectionConfig;
use serena::proto::method::{basic, channel, confirm, connection};
use serena::proto::{
    Assembled, ContentAssembler, DecodeError, EncodeError, FRAME_MIN_SIZE, FieldTable, Frame,
    FrameDecoder, Method, PROTOCOL_HEADER, frame,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The longest the peer waits for a connection or for bytes from the client.
pub const PEER_TIMEOUT: Duration = Duration::from_secs(10);

/// What went wrong on the peer's side of a script.
#[derive(Debug)]
pub enum PeerError {
    /// The socket failed.
    Io(io::Error),
    /// The client's bytes did not decode.
    Decode(DecodeError),
    /// The peer could not encode what it was told to send.
    Encode(EncodeError),
    /// Nothing arrived within [`PEER_TIMEOUT`]; says what the peer was waiting for.
    Timeout(&'static str),
    /// The client closed the socket.
    Eof,
    /// The client sent something the script did not expect.
    Unexpected(String),
}

impl fmt::Display for PeerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerError::Io(e) => write!(f, "socket: {e}"),
            PeerError::Decode(e) => write!(f, "decoding the client's bytes: {e}"),
            PeerError::Encode(e) => write!(f, "encoding: {e}"),
            PeerError::Timeout(what) => write!(f, "no {what} within {PEER_TIMEOUT:?}"),
            PeerError::Eof => f.write_str("the client closed the socket"),
            PeerError::Unexpected(what) => write!(f, "unexpected from the client: {what}"),
        }
    }
}

impl std::error::Error for PeerError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            PeerError::Io(e) => Some(e),
            PeerError::Decode(e) => Some(e),
            PeerError::Encode(e) => Some(e),
            _ => None,
        }
    }
}

impl From<io::Error> for PeerError {
    fn from(e: io::Error) -> Self {
        PeerError::Io(e)
    }
}

impl From<DecodeError> for PeerError {
    fn from(e: DecodeError) -> Self {
        PeerError::Decode(e)
    }
}

impl From<EncodeError> for PeerError {
    fn from(e: EncodeError) -> Self {
        PeerError::Encode(e)
    }
}

/// Result of a peer script step.
pub type PeerResult<T> = Result<T, PeerError>;

/// Server properties like RabbitMQ's, with the capabilities the client relies on.
pub fn server_properties() -> FieldTable {
    let capabilities: FieldTable = [
        "publisher_confirms",
        "exchange_exchange_bindings",
        "basic.nack",
        "consumer_cancel_notify",
        "connection.blocked",
        "authentication_failure_close",
        "per_consumer_qos",
    ]
    .into_iter()
    .map(|c| (c, true))
    .collect();
    FieldTable::new()
        .with("product", "fake-peer")
        .with("version", "0.0.0")
        .with("capabilities", capabilities)
}

/// What the fake server announces in `connection.start` and proposes in `connection.tune`.
#[derive(Debug, Clone)]
pub struct Offer {
    /// `connection.start` server properties (capabilities included).
    pub server_properties: FieldTable,
    /// Space-separated SASL mechanisms.
    pub mechanisms: String,
    /// The limits proposed in `connection.tune`.
    pub tune: connection::Tune,
}

impl Default for Offer {
    /// RabbitMQ's defaults: every capability, `PLAIN AMQPLAIN`, tune (2047, 131072, 60).
    fn default() -> Self {
        Offer {
            server_properties: server_properties(),
            mechanisms: "PLAIN AMQPLAIN".into(),
            tune: connection::Tune {
                channel_max: 2047,
                frame_max: 131_072,
                heartbeat: 60,
            },
        }
    }
}

/// What the client sent during a completed handshake.
#[derive(Debug, Clone)]
pub struct Handshake {
    /// The client's `start-ok` (properties, mechanism, response).
    pub start_ok: connection::StartOk,
    /// The limits the client settled on.
    pub tune_ok: connection::TuneOk,
    /// The virtual host the client opened.
    pub open: connection::Open,
}

/// What [`PeerConn::serve`] saw before the client went away.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Served {
    /// Channels the client opened.
    pub channels_opened: u32,
    /// Messages the client published (each one acked).
    pub publishes: u32,
    /// Body bytes of those messages.
    pub body_bytes: u64,
    /// The client closed the connection with `connection.close` (answered with `close-ok`).
    pub closed_cleanly: bool,
}

/// A listening fake server on 127.0.0.1 with an ephemeral port.
#[derive(Debug)]
pub struct FakeServer {
    listener: TcpListener,
    addr: SocketAddr,
}

impl FakeServer {
    /// Binds 127.0.0.1:0.
    pub async fn bind() -> io::Result<FakeServer> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        Ok(FakeServer { listener, addr })
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A client configuration pointing at this server, with a 5 s connect timeout.
    pub fn client_config(&self) -> ConnectionConfig {
        ConnectionConfig::default()
            .with_host(self.addr.ip().to_string())
            .with_port(self.addr.port())
            .with_connection_timeout(Duration::from_secs(5))
            .with_connection_name(Some("fake-peer-client".into()))
    }

    /// Accepts the next client, within [`PEER_TIMEOUT`].
    pub async fn accept(&self) -> PeerResult<PeerConn> {
        let (stream, _) = tokio::time::timeout(PEER_TIMEOUT, self.listener.accept())
            .await
            .map_err(|_| PeerError::Timeout("client connection"))??;
        stream.set_nodelay(true)?;
        Ok(PeerConn {
            stream,
            buf: BytesMut::with_capacity(64 * 1024),
            decoder: FrameDecoder::new(FRAME_MIN_SIZE),
            assemblers: HashMap::new(),
            heartbeats: 0,
            largest_frame: 0,
        })
    }
}

/// The server side of one accepted client connection.
#[derive(Debug)]
pub struct PeerConn {
    stream: TcpStream,
    buf: BytesMut,
    decoder: FrameDecoder,
    assemblers: HashMap<u16, ContentAssembler>,
    heartbeats: u64,
    largest_frame: usize,
}

impl PeerConn {
    /// Heartbeat frames received from the client so far.
    pub fn heartbeats(&self) -> u64 {
        self.heartbeats
    }

    /// The largest frame received so far, overhead included, in bytes.
    pub fn largest_frame(&self) -> usize {
        self.largest_frame
    }

    /// Reads more bytes into the buffer; `Eof` when the client has closed the socket.
    async fn fill(&mut self, waiting_for: &'static str) -> PeerResult<()> {
        self.buf.reserve(64 * 1024);
        let read = tokio::time::timeout(PEER_TIMEOUT, self.stream.read_buf(&mut self.buf))
            .await
            .map_err(|_| PeerError::Timeout(waiting_for))?;
        match read {
            Ok(0) => Err(PeerError::Eof),
            Ok(_) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => Err(PeerError::Eof),
            Err(e) => Err(e.into()),
        }
    }

    /// Reads the client's protocol header and checks it is AMQP 0-9-1.
    pub async fn expect_protocol_header(&mut self) -> PeerResult<()> {
        while self.buf.len() < PROTOCOL_HEADER.len() {
            self.fill("protocol header").await?;
        }
        let header = self.buf.split_to(PROTOCOL_HEADER.len());
        if header[..] != PROTOCOL_HEADER {
            return Err(PeerError::Unexpected(format!(
                "protocol header {:?}",
                &header[..]
            )));
        }
        Ok(())
    }

    /// Sends one method frame.
    pub async fn send(&mut self, channel: u16, method: impl Into<Method>) -> PeerResult<()> {
        let mut out = BytesMut::new();
        frame::encode_method(&mut out, channel, &method.into())?;
        self.send_raw(&out).await
    }

    /// Sends bytes as they are (broken frames the codec would never produce).
    pub async fn send_raw(&mut self, bytes: &[u8]) -> PeerResult<()> {
        self.stream.write_all(bytes).await?;
        Ok(())
    }

    /// The next frame from the client, heartbeats included.
    pub async fn recv_frame(&mut self) -> PeerResult<Frame> {
        loop {
            if let Some(len) = self.decoder.check(&self.buf)? {
                self.largest_frame = self.largest_frame.max(len);
                let frame = self.decoder.decode(&mut self.buf)?;
                return frame
                    .ok_or_else(|| PeerError::Unexpected("a checked frame vanished".into()));
            }
            self.fill("frame").await?;
        }
    }

    /// The next method or whole message from the client, with its channel; heartbeats are
    /// counted and skipped.
    pub async fn recv(&mut self) -> PeerResult<(u16, Assembled)> {
        loop {
            let frame = self.recv_frame().await?;
            if frame == Frame::Heartbeat {
                self.heartbeats += 1;
                continue;
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

    /// The next unit from the client, which must be a method on channel 0.
    pub async fn recv_connection_method(&mut self) -> PeerResult<Method> {
        match self.recv().await? {
            (0, Assembled::Method(m)) => Ok(m),
            (channel, other) => Err(PeerError::Unexpected(format!(
                "{other:?} on channel {channel}, expected a connection method"
            ))),
        }
    }

    /// Sends `connection.start` with the offer's properties and mechanisms.
    pub async fn send_start(&mut self, offer: &Offer) -> PeerResult<()> {
        self.send(
            0,
            connection::Start {
                version_major: 0,
                version_minor: 9,
                server_properties: offer.server_properties.clone(),
                mechanisms: offer.mechanisms.as_str().into(),
                locales: "en_US".into(),
            },
        )
        .await
    }

    /// Protocol header, `start`, and the client's `start-ok`.
    pub async fn start(&mut self, offer: &Offer) -> PeerResult<connection::StartOk> {
        self.expect_protocol_header().await?;
        self.send_start(offer).await?;
        match self.recv_connection_method().await? {
            Method::ConnectionStartOk(ok) => Ok(ok),
            other => Err(PeerError::Unexpected(format!(
                "{other:?}, expected start-ok"
            ))),
        }
    }

    /// The whole handshake up to and including `open-ok`. The negotiated `frame_max` is
    /// applied to what the peer accepts from then on.
    pub async fn handshake(&mut self, offer: &Offer) -> PeerResult<Handshake> {
        let start_ok = self.start(offer).await?;
        self.send(0, offer.tune.clone()).await?;
        let tune_ok = match self.recv_connection_method().await? {
            Method::ConnectionTuneOk(ok) => ok,
            other => {
                return Err(PeerError::Unexpected(format!(
                    "{other:?}, expected tune-ok"
                )));
            }
        };
        if tune_ok.frame_max != 0 {
            self.decoder.set_frame_max(tune_ok.frame_max);
        }
        let open = match self.recv_connection_method().await? {
            Method::ConnectionOpen(open) => open,
            other => return Err(PeerError::Unexpected(format!("{other:?}, expected open"))),
        };
        self.send(0, connection::OpenOk::default()).await?;
        Ok(Handshake {
            start_ok,
            tune_ok,
            open,
        })
    }

    /// Plays a minimal, well-behaved broker until the client goes: answers channel open,
    /// `confirm.select`, `basic.qos` and channel close, acks every publish, and answers
    /// `connection.close` with `close-ok`, then waits for the socket to close. Anything else
    /// is an error.
    pub async fn serve(&mut self) -> PeerResult<Served> {
        let mut served = Served::default();
        let mut next_tag: HashMap<u16, u64> = HashMap::new();
        loop {
            let (ch, unit) = match self.recv().await {
                Ok(received) => received,
                Err(PeerError::Eof) => return Ok(served),
                Err(e) => return Err(e),
            };
            match unit {
                Assembled::Method(Method::ChannelOpen(_)) => {
                    served.channels_opened += 1;
                    self.send(ch, channel::OpenOk::default()).await?;
                }
                Assembled::Method(Method::ConfirmSelect(_)) => {
                    next_tag.insert(ch, 1);
                    self.send(ch, confirm::SelectOk {}).await?;
                }
                Assembled::Method(Method::BasicQos(_)) => self.send(ch, basic::QosOk {}).await?,
                Assembled::Method(Method::ChannelClose(_)) => {
                    self.assemblers.remove(&ch);
                    self.send(ch, channel::CloseOk {}).await?;
                }
                Assembled::Content(c) if matches!(c.method, Method::BasicPublish(_)) => {
                    served.publishes += 1;
                    served.body_bytes += c.body.len() as u64;
                    if let Some(tag) = next_tag.get_mut(&ch) {
                        let ack = basic::Ack {
                            delivery_tag: *tag,
                            multiple: false,
                        };
                        *tag += 1;
                        self.send(ch, ack).await?;
                    }
                }
                Assembled::Method(Method::ConnectionClose(_)) if ch == 0 => {
                    self.send(0, connection::CloseOk {}).await?;
                    served.closed_cleanly = true;
                    self.expect_eof().await?;
                    return Ok(served);
                }
                other => {
                    return Err(PeerError::Unexpected(format!(
                        "{other:?} on channel {ch} while serving"
                    )));
                }
            }
        }
    }

    /// Answers the client's channel setup like a broker (`channel.open`, `confirm.select` and
    /// `basic.qos`, which the client pipelines for every channel) and returns the first other
    /// unit the client sends, with its channel.
    pub async fn serve_setup(&mut self) -> PeerResult<(u16, Assembled)> {
        loop {
            let (ch, unit) = self.recv().await?;
            match unit {
                Assembled::Method(Method::ChannelOpen(_)) => {
                    self.send(ch, channel::OpenOk::default()).await?;
                }
                Assembled::Method(Method::ConfirmSelect(_)) => {
                    self.send(ch, confirm::SelectOk {}).await?;
                }
                Assembled::Method(Method::BasicQos(_)) => self.send(ch, basic::QosOk {}).await?,
                other => return Ok((ch, other)),
            }
        }
    }

    /// Like [`serve_setup`](Self::serve_setup), then checks the unit is `expected` (compared
    /// by name, e.g. `"queue.declare"`) on `channel`, and returns the method.
    pub async fn serve_setup_until(&mut self, channel: u16, expected: &str) -> PeerResult<Method> {
        match self.serve_setup().await? {
            (ch, Assembled::Method(m)) if ch == channel && m.name() == expected => Ok(m),
            (ch, other) => Err(PeerError::Unexpected(format!(
                "{other:?} on channel {ch}, expected {expected} on channel {channel}"
            ))),
        }
    }

    /// The client's next unit, which must be `connection.close` (heartbeats are skipped).
    pub async fn expect_connection_close(&mut self) -> PeerResult<connection::Close> {
        match self.recv_connection_method().await? {
            Method::ConnectionClose(close) => Ok(close),
            other => Err(PeerError::Unexpected(format!(
                "{other:?}, expected connection.close"
            ))),
        }
    }

    /// Reads (and discards) whatever the client sends, never writing, until it closes the
    /// socket. Returns the heartbeats received meanwhile.
    pub async fn drain(&mut self) -> PeerResult<u64> {
        loop {
            match self.recv_frame().await {
                Ok(Frame::Heartbeat) => self.heartbeats += 1,
                Ok(_) => {}
                Err(PeerError::Eof) => return Ok(self.heartbeats),
                Err(e) => return Err(e),
            }
        }
    }

    /// Watches the socket for `wait`: true if the client closed (or half-closed) it meanwhile,
    /// false if it stayed open. Heartbeats are counted; any other frame is an error.
    pub async fn eof_within(&mut self, wait: Duration) -> PeerResult<bool> {
        match tokio::time::timeout(wait, self.expect_eof()).await {
            Ok(Ok(())) => Ok(true),
            Ok(Err(e)) => Err(e),
            Err(_) => Ok(false),
        }
    }

    /// True once the client has closed its socket completely (not just shut down its
    /// writing side): heartbeats are written every 50 ms until a write fails, which happens
    /// once the client's end answers with a reset; false if writes still succeed after
    /// `within`.
    pub async fn write_fails_within(&mut self, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        let mut heartbeat = BytesMut::new();
        frame::encode_heartbeat(&mut heartbeat);
        while tokio::time::Instant::now() < deadline {
            if self.stream.write_all(&heartbeat).await.is_err() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    /// Waits for the client to close the socket; any frame but a heartbeat first is an
    /// error.
    pub async fn expect_eof(&mut self) -> PeerResult<()> {
        loop {
            match self.recv_frame().await {
                Ok(Frame::Heartbeat) => self.heartbeats += 1,
                Ok(other) => {
                    return Err(PeerError::Unexpected(format!(
                        "{other:?} while waiting for the socket to close"
                    )));
                }
                Err(PeerError::Eof) => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    }
}
