//! The public error types of the client.
//!
//! [`enum@Error`] is what every client call returns. A close initiated by the server is an
//! [`UnexpectedCloseError`] carrying the AMQP reply code, text and the class and method that
//! caused it, as data a caller can match on.

use std::{fmt, io, sync::Arc, time::Duration};

use thiserror::Error;

use crate::proto::{BasicProperties, DecodeError, EncodeError};

/// Result with serena's [`enum@Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What the server closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CloseScope {
    /// The whole connection (`connection.close`).
    Connection,
    /// One channel (`channel.close`), with its id.
    Channel(u16),
}

/// The server closed a connection or channel: the reply code and text it gave, and the method
/// that caused it (class and method id, or 0 and 0).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub struct UnexpectedCloseError {
    /// What was closed.
    pub scope: CloseScope,
    /// AMQP reply code: 320 connection-forced, 403 access-refused, 404 not-found,
    /// 406 precondition-failed, 530 not-allowed, 540 not-implemented, ...
    pub reply_code: u16,
    /// The server's reason.
    pub reply_text: String,
    /// Class of the method that caused the close, or 0.
    pub class_id: u16,
    /// Method that caused the close, or 0.
    pub method_id: u16,
}

impl fmt::Display for UnexpectedCloseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.scope {
            CloseScope::Connection => f.write_str("server closed the connection")?,
            CloseScope::Channel(id) => write!(f, "server closed channel {id}")?,
        }
        write!(f, ": {} {}", self.reply_code, self.reply_text)?;
        if self.class_id != 0 || self.method_id != 0 {
            write!(
                f,
                " (caused by method {}.{})",
                self.class_id, self.method_id
            )?;
        }
        Ok(())
    }
}

impl UnexpectedCloseError {
    /// AMQP reply code 404: a queue or exchange does not exist.
    pub const NOT_FOUND: u16 = 404;
    /// AMQP reply code 406: a declaration disagrees with what exists, or similar.
    pub const PRECONDITION_FAILED: u16 = 406;
    /// AMQP reply code 403: wrong credentials or missing permission.
    pub const ACCESS_REFUSED: u16 = 403;
    /// AMQP reply code 405: an exclusive queue of another connection.
    pub const RESOURCE_LOCKED: u16 = 405;
    /// AMQP reply code 320: an operator closed the connection.
    pub const CONNECTION_FORCED: u16 = 320;
    /// AMQP reply code 530: for example an unknown virtual host.
    pub const NOT_ALLOWED: u16 = 530;
    /// AMQP reply code 540: for example `immediate` publishing.
    pub const NOT_IMPLEMENTED: u16 = 540;
}

/// A message the broker handed back because no queue took it (`mandatory` publishing).
#[derive(Debug, Clone, PartialEq)]
pub struct ReturnedMessage {
    /// Why (312 no-route).
    pub reply_code: u16,
    /// The broker's reason.
    pub reply_text: String,
    /// Exchange it was published to.
    pub exchange: String,
    /// Its routing key.
    pub routing_key: String,
    /// Its properties.
    pub properties: BasicProperties,
    /// Its body.
    pub body: bytes::Bytes,
}

/// Everything that can go wrong in a client call.
#[derive(Debug, Clone, Error)]
#[non_exhaustive]
pub enum Error {
    /// The server closed the connection or the channel.
    #[error(transparent)]
    UnexpectedClose(#[from] UnexpectedCloseError),
    /// The socket failed.
    #[error("I/O error: {0}")]
    Io(#[source] Arc<io::Error>),
    /// Connecting (TCP and handshake) took longer than the configured timeout.
    #[error("connecting to {addr} timed out after {after:?}")]
    ConnectTimeout {
        /// Where we tried to connect.
        addr: String,
        /// The timeout.
        after: Duration,
    },
    /// The server sent nothing for two heartbeat intervals.
    #[error("no traffic from the server for {0:?}: heartbeat lost")]
    HeartbeatTimeout(Duration),
    /// The server sent bytes that are not valid AMQP 0-9-1.
    #[error("protocol error from the server: {0}")]
    Protocol(#[from] DecodeError),
    /// A value could not be encoded (a name over 255 bytes, say); nothing was sent.
    #[error(transparent)]
    Encode(#[from] EncodeError),
    /// The server sent a valid frame the protocol does not allow at that point.
    #[error("protocol violation by the server: {0}")]
    UnexpectedMethod(String),
    /// The server does not support publisher confirms, which serena always uses.
    #[error("the server does not support publisher confirms (capability publisher_confirms)")]
    ConfirmsNotSupported,
    /// The server does not offer the SASL mechanism the configuration asks for
    /// ([`AuthMechanism`](crate::AuthMechanism)).
    #[error("the server does not offer the configured SASL mechanism; it offers {offered:?}")]
    NoCommonMechanism {
        /// What the server offered.
        offered: String,
    },
    /// TLS failed: the server's certificate was refused, the server refused ours, or a
    /// certificate or key file could not be used.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// None of the brokers of a host list could be reached; each attempt, in order.
    #[error("{}", display_attempts(.0))]
    AllHostsFailed(Vec<ConnectAttempt>),
    /// Every channel id allowed by `channel_max` is in use.
    #[error("no free channel: all {max} channel ids are in use")]
    ChannelsExhausted {
        /// The negotiated channel maximum.
        max: u16,
    },
    /// The broker refused a publish (basic.nack under publisher confirms).
    #[error("the broker did not accept the message (basic.nack)")]
    Nacked,
    /// A mandatory publish could not be routed; the message comes back.
    #[error("message returned by the broker: {} {}", .0.reply_code, .0.reply_text)]
    Returned(Box<ReturnedMessage>),
    /// The connection or channel was closed by this side before the call finished.
    #[error("the {0} is closed")]
    Closed(&'static str),
    /// A consumer was cancelled by the server (its queue was deleted, for example).
    #[error("consumer {0} was cancelled by the server")]
    ConsumerCancelled(String),
    /// The configuration or URI is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A topology entity declared with `declare = false` (expected to exist) is not on the
    /// broker.
    #[error("{0} is declared with declare = false but does not exist on the broker")]
    MissingEntity(Box<crate::topology::Entity>),
    /// A task of the worker ended without returning: it panicked (a bug) or was cancelled.
    #[error("{task} {}", display_task_end(*.panicked, .message.as_deref()))]
    TaskFailed {
        /// Which task, such as `the consume loop of consumer "orders"`.
        task: String,
        /// True for a panic, false for a cancellation.
        panicked: bool,
        /// The panic's message, when it had one.
        message: Option<String>,
    },
    /// A value could not be encoded as JSON (a map with non-string keys, a `Serialize` impl
    /// that failed, ...; nothing was sent), or a reply's body is not the JSON the caller
    /// expects ([`RpcClient::call`](crate::RpcClient::call)).
    #[error("JSON encoding failed: {0}")]
    Json(#[source] Arc<serde_json::Error>),
    /// A call the channel's kind does not allow, refused before anything was sent (a
    /// confirmed publish on a channel without confirm mode, say). serena's handles rule
    /// these out by their types; this comes from using the protocol state machine directly.
    #[error("not allowed here: {0}")]
    Misuse(&'static str),
    /// A [`ReliablePublisher`](crate::ReliablePublisher) holds its cap of unconfirmed
    /// messages or bytes and is set to fail rather than wait
    /// ([`WhenFull::Fail`](crate::WhenFull)); nothing was published.
    #[error("the publisher is full: {messages} messages, {bytes} bytes await confirmation")]
    PublisherFull {
        /// Messages held when the publish was refused.
        messages: usize,
        /// Their body bytes.
        bytes: usize,
    },
    /// A message body larger than the publisher's whole byte cap
    /// ([`ReliablePublisherOptions::max_bytes`](crate::ReliablePublisherOptions)); nothing
    /// was published.
    #[error("a message of {size} bytes is over the publisher's cap of {max} bytes")]
    MessageTooLarge {
        /// The body's size.
        size: usize,
        /// The cap.
        max: usize,
    },
    /// The operation did not finish within the time the caller set.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// The message was already acknowledged or refused (through this `Delivery` or a clone);
    /// nothing was sent.
    #[error("delivery {delivery_tag} was already acknowledged or refused")]
    AlreadySettled {
        /// Its delivery tag.
        delivery_tag: u64,
    },
}

/// One failed attempt to reach a broker of a host list.
#[derive(Debug, Clone)]
pub struct ConnectAttempt {
    /// The broker tried (`host:port` or `unix:/path`).
    pub endpoint: String,
    /// Why it failed.
    pub error: Error,
}

fn display_attempts(attempts: &[ConnectAttempt]) -> String {
    let mut s = format!("could not connect to any of {} brokers", attempts.len());
    for a in attempts {
        s.push_str(&format!("; {}: {}", a.endpoint, a.error));
    }
    s
}

fn display_task_end(panicked: bool, message: Option<&str>) -> String {
    match (panicked, message) {
        (true, Some(m)) => format!("panicked: {m}"),
        (true, None) => "panicked".to_owned(),
        (false, _) => "was cancelled".to_owned(),
    }
}

/// What was wrong with the server's certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CertificateProblem {
    /// Signed by no CA we trust: the wrong CA file, or a self-signed certificate.
    UnknownIssuer,
    /// Valid, but not for the name we connected to (or the configured server name).
    NotValidForName,
    /// Past its end of validity.
    Expired,
    /// Before its start of validity.
    NotValidYet,
    /// Revoked by its issuer.
    Revoked,
    /// Anything else: a bad signature or encoding, a wrong purpose, ...
    Other,
}

/// Why a TLS connection could not be set up.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum TlsError {
    /// We refused the server's certificate. `detail` is the TLS library's reason, such as
    /// `UnknownIssuer` or `certificate not valid for name "x"; certificate is only valid for
    /// DnsName("localhost")`.
    #[error("invalid peer certificate: {detail}")]
    InvalidCertificate {
        /// The kind of problem, to match on.
        problem: CertificateProblem,
        /// The full reason.
        detail: String,
    },
    /// The server ended the TLS session with an alert, for example because it refused our
    /// client certificate (or wanted one and got none).
    #[error("the server sent the TLS alert {0}")]
    AlertReceived(String),
    /// A CA, certificate or key file could not be read or used.
    #[error("{}: {reason}", .path.display())]
    File {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The name to verify the server's certificate against is not a DNS name or IP address.
    #[error("{0:?} is not a valid server name for TLS")]
    InvalidServerName(String),
    /// No CA certificate to trust: the system has none and no CA file was given.
    #[error("no trusted CA certificates: {0}")]
    NoTrustedRoots(String),
    /// Any other failure of the TLS handshake.
    #[error("TLS handshake failed: {0}")]
    Handshake(String),
    /// This build of serena was made without its `tls` feature.
    #[error("TLS (amqps) is not available: serena was built without its `tls` feature")]
    NotCompiled,
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        Error::Io(Arc::new(e))
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error::Json(Arc::new(e))
    }
}

impl Error {
    /// The server's close, when this error is one.
    pub fn unexpected_close(&self) -> Option<&UnexpectedCloseError> {
        match self {
            Error::UnexpectedClose(e) => Some(e),
            _ => None,
        }
    }

    /// The AMQP reply code, when the server closed something.
    pub fn reply_code(&self) -> Option<u16> {
        self.unexpected_close().map(|e| e.reply_code)
    }
}

impl From<crate::proto::connection::Failure> for Error {
    fn from(f: crate::proto::connection::Failure) -> Self {
        use crate::proto::connection::Failure;
        match f {
            Failure::ServerClosed(c) => Error::UnexpectedClose(UnexpectedCloseError {
                scope: match c.channel {
                    Some(id) => CloseScope::Channel(id),
                    None => CloseScope::Connection,
                },
                reply_code: c.reply_code,
                reply_text: c.reply_text,
                class_id: c.class_id,
                method_id: c.method_id,
            }),
            Failure::Closed(what) => Error::Closed(what),
            Failure::Protocol(e) => Error::Protocol(e),
            Failure::UnexpectedMethod(m) => Error::UnexpectedMethod(m),
            Failure::Encode(e) => Error::Encode(e),
            Failure::ChannelsExhausted { max } => Error::ChannelsExhausted { max },
            Failure::Returned(r) => Error::Returned(Box::new(ReturnedMessage {
                reply_code: r.reply_code,
                reply_text: r.reply_text,
                exchange: r.exchange,
                routing_key: r.routing_key,
                properties: r.properties,
                body: r.body,
            })),
            Failure::Nacked => Error::Nacked,
            Failure::ConsumerCancelled(tag) => Error::ConsumerCancelled(tag),
            Failure::HeartbeatTimeout(after) => Error::HeartbeatTimeout(after),
            Failure::Misuse(what) => Error::Misuse(what),
        }
    }
}
