//! The byte streams a connection runs over: TCP, TLS over TCP, and Unix domain sockets.
//!
//! ```text
//!  connect(endpoint) -> Stream ---- handshake (generic AsyncRead + AsyncWrite) ----.
//!                                                                                   |
//!  Stream::into_split -> ReadHalf  --> reader task                                  v
//!                     -> WriteHalf --> writer task (write_all, heartbeats)
//!                          \-> InlineWriter (TCP, Unix) --> Outbox: callers' non-blocking try_write
//! ```
//!
//! TCP and Unix sockets split into owned halves, and the write half is shared: the writer task
//! and callers flushing small urgent frames inline both use `try_write` on it, which needs no
//! lock and no `&mut`. A TLS stream holds one encryption state for both directions, so it is
//! split with [`tokio::io::split`] and only the writer task writes to it: it has no
//! [`InlineWriter`], and callers leave their bytes to the writer.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::net::tcp;
#[cfg(unix)]
use tokio::net::{UnixStream, unix};

use crate::config::{ConnectionConfig, Endpoint};
use crate::error::{Error, Result};

#[cfg(feature = "tls")]
type TlsStream = tokio_rustls::client::TlsStream<TcpStream>;

/// A connected socket, before the handshake.
pub(crate) enum Stream {
    Tcp(TcpStream),
    #[cfg(unix)]
    Unix(UnixStream),
    #[cfg(feature = "tls")]
    Tls(Box<TlsStream>),
}

/// Opens the socket to `endpoint`: TCP (with `TCP_NODELAY`), TLS over TCP when the
/// configuration asks for it, or a Unix socket when the endpoint's host is a path.
pub(crate) async fn connect(endpoint: &Endpoint, config: &ConnectionConfig) -> Result<Stream> {
    if endpoint.is_unix_socket() {
        if config.tls.is_some() {
            return Err(Error::Config(format!(
                "{endpoint} is a Unix socket: TLS is not used over Unix sockets"
            )));
        }
        return connect_unix(&endpoint.host).await;
    }
    let tcp = TcpStream::connect((endpoint.host.as_str(), endpoint.port)).await?;
    tcp.set_nodelay(true)?;
    match &config.tls {
        None => Ok(Stream::Tcp(tcp)),
        #[cfg(feature = "tls")]
        Some(options) => {
            let tls = super::tls::connect(tcp, &endpoint.host, options).await?;
            Ok(Stream::Tls(Box::new(tls)))
        }
        #[cfg(not(feature = "tls"))]
        Some(_) => Err(crate::error::TlsError::NotCompiled.into()),
    }
}

#[cfg(unix)]
async fn connect_unix(path: &str) -> Result<Stream> {
    Ok(Stream::Unix(UnixStream::connect(path).await?))
}

#[cfg(not(unix))]
async fn connect_unix(path: &str) -> Result<Stream> {
    Err(Error::Config(format!(
        "{path} is a Unix socket path, and this platform has no Unix sockets"
    )))
}

impl Stream {
    /// Splits the stream for the reader and writer tasks.
    pub(crate) fn into_split(self) -> (ReadHalf, WriteHalf) {
        match self {
            Stream::Tcp(s) => {
                let (r, w) = s.into_split();
                (ReadHalf::Tcp(r), WriteHalf::Tcp(Arc::new(w)))
            }
            #[cfg(unix)]
            Stream::Unix(s) => {
                let (r, w) = s.into_split();
                (ReadHalf::Unix(r), WriteHalf::Unix(Arc::new(w)))
            }
            #[cfg(feature = "tls")]
            Stream::Tls(s) => {
                let (r, w) = tokio::io::split(*s);
                (ReadHalf::Tls(r), WriteHalf::Tls(w))
            }
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            #[cfg(unix)]
            Stream::Unix(s) => Pin::new(s).poll_read(cx, buf),
            #[cfg(feature = "tls")]
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            #[cfg(unix)]
            Stream::Unix(s) => Pin::new(s).poll_write(cx, buf),
            #[cfg(feature = "tls")]
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_flush(cx),
            #[cfg(unix)]
            Stream::Unix(s) => Pin::new(s).poll_flush(cx),
            #[cfg(feature = "tls")]
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            #[cfg(unix)]
            Stream::Unix(s) => Pin::new(s).poll_shutdown(cx),
            #[cfg(feature = "tls")]
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// The reader task's half.
pub(crate) enum ReadHalf {
    Tcp(tcp::OwnedReadHalf),
    #[cfg(unix)]
    Unix(unix::OwnedReadHalf),
    #[cfg(feature = "tls")]
    Tls(tokio::io::ReadHalf<TlsStream>),
}

impl AsyncRead for ReadHalf {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ReadHalf::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            #[cfg(unix)]
            ReadHalf::Unix(s) => Pin::new(s).poll_read(cx, buf),
            #[cfg(feature = "tls")]
            ReadHalf::Tls(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

/// The writer task's half.
pub(crate) enum WriteHalf {
    Tcp(Arc<tcp::OwnedWriteHalf>),
    #[cfg(unix)]
    Unix(Arc<unix::OwnedWriteHalf>),
    #[cfg(feature = "tls")]
    Tls(tokio::io::WriteHalf<TlsStream>),
}

/// A shared handle on a socket's write half for non-blocking writes from any task.
#[derive(Clone)]
pub(crate) enum InlineWriter {
    Tcp(Arc<tcp::OwnedWriteHalf>),
    #[cfg(unix)]
    Unix(Arc<unix::OwnedWriteHalf>),
}

impl InlineWriter {
    /// Writes what fits now without waiting; `WouldBlock` when nothing does.
    pub(crate) fn try_write(&self, bytes: &[u8]) -> io::Result<usize> {
        match self {
            InlineWriter::Tcp(s) => s.try_write(bytes),
            #[cfg(unix)]
            InlineWriter::Unix(s) => s.try_write(bytes),
        }
    }
}

impl WriteHalf {
    /// A handle for callers' inline writes, for transports that allow them (not TLS).
    pub(crate) fn inline_writer(&self) -> Option<InlineWriter> {
        match self {
            WriteHalf::Tcp(s) => Some(InlineWriter::Tcp(s.clone())),
            #[cfg(unix)]
            WriteHalf::Unix(s) => Some(InlineWriter::Unix(s.clone())),
            #[cfg(feature = "tls")]
            WriteHalf::Tls(_) => None,
        }
    }

    /// Writes all of `bytes`. On a shared half: wait until writable, write what fits, again.
    pub(crate) async fn write_all(&mut self, bytes: &[u8]) -> Result<()> {
        match self {
            WriteHalf::Tcp(s) => write_all_shared(s.as_ref(), bytes).await,
            #[cfg(unix)]
            WriteHalf::Unix(s) => write_all_shared(s.as_ref(), bytes).await,
            #[cfg(feature = "tls")]
            WriteHalf::Tls(s) => {
                s.write_all(bytes).await?;
                s.flush().await?;
                Ok(())
            }
        }
    }

    /// Ends our direction of the stream (a TLS `close_notify`, then FIN), once no inline
    /// writer is left.
    pub(crate) async fn shutdown(self) {
        match self {
            WriteHalf::Tcp(s) => {
                if let Ok(mut s) = Arc::try_unwrap(s) {
                    let _ = s.shutdown().await;
                }
            }
            #[cfg(unix)]
            WriteHalf::Unix(s) => {
                if let Ok(mut s) = Arc::try_unwrap(s) {
                    let _ = s.shutdown().await;
                }
            }
            #[cfg(feature = "tls")]
            WriteHalf::Tls(mut s) => {
                let _ = s.shutdown().await;
            }
        }
    }
}

/// A socket half that many tasks may write to without `&mut`.
trait SharedWrite {
    async fn writable(&self) -> io::Result<()>;
    fn try_write(&self, bytes: &[u8]) -> io::Result<usize>;
}

impl SharedWrite for tcp::OwnedWriteHalf {
    async fn writable(&self) -> io::Result<()> {
        tcp::OwnedWriteHalf::writable(self).await
    }
    fn try_write(&self, bytes: &[u8]) -> io::Result<usize> {
        tcp::OwnedWriteHalf::try_write(self, bytes)
    }
}

#[cfg(unix)]
impl SharedWrite for unix::OwnedWriteHalf {
    async fn writable(&self) -> io::Result<()> {
        unix::OwnedWriteHalf::writable(self).await
    }
    fn try_write(&self, bytes: &[u8]) -> io::Result<usize> {
        unix::OwnedWriteHalf::try_write(self, bytes)
    }
}

/// The write loop over a half other tasks may also `try_write` to: wait until writable,
/// write what fits, again.
async fn write_all_shared(socket: &impl SharedWrite, mut bytes: &[u8]) -> Result<()> {
    while !bytes.is_empty() {
        socket.writable().await?;
        match socket.try_write(bytes) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "the socket accepted no bytes",
                )
                .into());
            }
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Turns an error met while connecting into the one a user should see: a TLS failure that
/// surfaced as an I/O error (an alert from the server during the AMQP handshake, say)
/// becomes [`Error::Tls`].
pub(crate) fn classify(error: Error) -> Error {
    #[cfg(feature = "tls")]
    if let Error::Io(io) = &error
        && let Some(tls) = super::tls::from_io(io)
    {
        return Error::Tls(tls);
    }
    error
}
