//! Byte streams of your own in place of TCP, TLS or a Unix socket: an in-process broker for
//! tests, a tunnel, a proxy that needs a handshake of its own.

use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};

use super::Endpoint;

/// A connected byte stream a [`Connector`] hands over: anything that reads and writes.
pub trait ByteStream: AsyncRead + AsyncWrite + Send + Unpin + 'static {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> ByteStream for T {}

/// What [`Connector::connect`] returns.
pub type ConnectFuture<'a> =
    Pin<Box<dyn Future<Output = io::Result<Box<dyn ByteStream>>> + Send + 'a>>;

/// Opens the byte stream to a broker, in place of the TCP, TLS or Unix socket the
/// configuration's endpoints would get. Set one with
/// [`ConnectionConfig::with_connector`](super::ConnectionConfig::with_connector); every
/// endpoint of the configuration is then opened through it (the endpoint tells it which broker
/// is meant), the AMQP handshake follows on the stream, and the connection behaves as any other:
/// `connection_timeout` bounds the connect and the handshake, a failure of one endpoint moves
/// on to the next.
///
/// ```
/// use std::sync::Arc;
/// use serena::{ConnectionConfig, ConnectFuture, Connector, Endpoint};
///
/// /// Reaches every broker through one local port (a tunnel, say).
/// struct Tunnel;
///
/// impl Connector for Tunnel {
///     fn connect<'a>(&'a self, _endpoint: &'a Endpoint) -> ConnectFuture<'a> {
///         Box::pin(async {
///             let tcp = tokio::net::TcpStream::connect("127.0.0.1:5672").await?;
///             Ok(Box::new(tcp) as Box<dyn serena::ByteStream>)
///         })
///     }
/// }
///
/// let config = ConnectionConfig::default().with_connector(Tunnel);
/// # let _ = config;
/// ```
pub trait Connector: Send + Sync + 'static {
    /// Opens a stream to `endpoint`.
    fn connect<'a>(&'a self, endpoint: &'a Endpoint) -> ConnectFuture<'a>;
}

/// A configuration's [`Connector`], shared by its clones. Two are equal when they are the same
/// connector.
#[derive(Clone)]
pub struct SharedConnector(pub(crate) Arc<dyn Connector>);

impl SharedConnector {
    /// Shares `connector`.
    pub fn new(connector: impl Connector) -> Self {
        SharedConnector(Arc::new(connector))
    }

    pub(crate) fn connect<'a>(&'a self, endpoint: &'a Endpoint) -> ConnectFuture<'a> {
        self.0.connect(endpoint)
    }
}

impl PartialEq for SharedConnector {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for SharedConnector {}

impl fmt::Debug for SharedConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SharedConnector(..)")
    }
}
