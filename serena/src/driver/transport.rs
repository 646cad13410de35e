//! The byte streams a connection runs over: TCP, TLS over TCP, and Unix domain sockets.
//!
//! ```text
//!  connect(endpoint) -> Socket::{Tcp, Unix, Tls}     the one match on the kind, then generic:
//!    S: Transport ---- handshake (S: AsyncRead + AsyncWrite) ----.
//!                                                                 v
//!    S::into_halves -> S::Read  --> reader task (R: AsyncRead)
//!                   -> S::Write --> writer task (W: WriteHalf: write_all, shutdown)
//!                        \-> inline_writer: Arc<dyn TryWrite> (TCP, Unix) --> callers' try_write
//! ```
//!
//! The reader and writer tasks are compiled once per kind of socket, so reads and writes
//! call the socket directly. TCP and Unix sockets split into owned halves, and the write half
//! is shared: the writer task and callers flushing small urgent frames inline both use
//! `try_write` on it, which needs no lock and no `&mut`. A TLS stream holds one encryption
//! state for both directions, so it is split with [`tokio::io::split`] and only the writer
//! task writes to it: it has no inline writer, and callers leave their bytes to the writer.

use std::io::{self, IoSlice};
use std::sync::Arc;

use bytes::Bytes;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
#[cfg(unix)]
use tokio::net::UnixStream;

use crate::config::{ByteStream, ConnectionConfig, Endpoint};
use crate::error::{Error, Result};

#[cfg(feature = "tls")]
type TlsStream = tokio_rustls::client::TlsStream<TcpStream>;

/// A connected socket, before the handshake: what [`connect`] opened, to be matched once and
/// handed on as a [`Transport`].
pub(crate) enum Socket {
    Tcp(TcpStream),
    /// What a configuration's [`Connector`](crate::Connector) opened.
    Custom(Box<dyn ByteStream>),
    #[cfg(unix)]
    Unix(UnixStream),
    #[cfg(feature = "tls")]
    Tls(Box<TlsStream>),
}

/// Opens the socket to `endpoint`: TCP (with `TCP_NODELAY`), TLS over TCP when the
/// configuration asks for it, or a Unix socket when the endpoint's host is a path.
pub(crate) async fn connect(endpoint: &Endpoint, config: &ConnectionConfig) -> Result<Socket> {
    if let Some(connector) = &config.connector {
        if config.tls.is_some() {
            return Err(Error::Config(
                "a configuration with a connector cannot also ask for TLS: the connector's \
                 stream is used as it is"
                    .into(),
            ));
        }
        return Ok(Socket::Custom(connector.connect(endpoint).await?));
    }
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
        None => Ok(Socket::Tcp(tcp)),
        #[cfg(feature = "tls")]
        Some(options) => {
            let tls = super::tls::connect(tcp, &endpoint.host, options).await?;
            Ok(Socket::Tls(Box::new(tls)))
        }
        #[cfg(not(feature = "tls"))]
        Some(_) => Err(crate::error::TlsError::NotCompiled.into()),
    }
}

#[cfg(unix)]
async fn connect_unix(path: &str) -> Result<Socket> {
    Ok(Socket::Unix(UnixStream::connect(path).await?))
}

#[cfg(not(unix))]
async fn connect_unix(path: &str) -> Result<Socket> {
    Err(Error::Config(format!(
        "{path} is a Unix socket path, and this platform has no Unix sockets"
    )))
}

/// One kind of connected socket: a stream for the handshake, then two halves for the reader
/// and writer tasks.
pub(crate) trait Transport: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// The reader task's half.
    type Read: AsyncRead + Unpin + Send + 'static;
    /// The writer task's half.
    type Write: WriteHalf;

    /// Splits the stream for the reader and writer tasks.
    fn into_halves(self) -> (Self::Read, Self::Write);
}

/// The writer task's half of a socket.
pub(crate) trait WriteHalf: Send + 'static {
    /// A handle for callers' inline writes, for transports that allow them (not TLS).
    fn inline_writer(&self) -> Option<Arc<dyn TryWrite>>;

    /// Writes all of `pieces`, in order.
    fn write_all(&mut self, pieces: &[Bytes]) -> impl Future<Output = Result<()>> + Send;

    /// Ends our direction of the stream (a TLS `close_notify`, then FIN), once no inline
    /// writer is left.
    fn shutdown(self) -> impl Future<Output = ()> + Send;
}

/// A socket half any task may write to without waiting and without `&mut`.
pub(crate) trait TryWrite: Send + Sync {
    /// Writes what fits now of `pieces`, in order, without waiting; `WouldBlock` when
    /// nothing does.
    fn try_write_vectored(&self, pieces: &[IoSlice<'_>]) -> io::Result<usize>;
}

/// The most pieces one vectored write takes (Linux takes up to 1024; a publish of a large
/// shared body is three per frame).
pub(crate) const MAX_PIECES: usize = 64;

/// An owned write half of a TCP or Unix socket, which the writer task shares with inline
/// writers.
trait SharedHalf: TryWrite + AsyncWrite + Unpin + 'static {
    /// Waits until the socket may take bytes.
    fn writable(&self) -> impl Future<Output = io::Result<()>> + Send;
}

/// TCP and Unix sockets split the same way, into owned halves of which the write half is
/// shared. `$module` is `tokio::net::tcp` or `tokio::net::unix`.
macro_rules! owned_halves {
    ($stream:ty, $module:ident) => {
        impl Transport for $stream {
            type Read = tokio::net::$module::OwnedReadHalf;
            type Write = Arc<tokio::net::$module::OwnedWriteHalf>;

            fn into_halves(self) -> (Self::Read, Self::Write) {
                let (read, write) = self.into_split();
                (read, Arc::new(write))
            }
        }

        impl TryWrite for tokio::net::$module::OwnedWriteHalf {
            fn try_write_vectored(&self, pieces: &[IoSlice<'_>]) -> io::Result<usize> {
                tokio::net::$module::OwnedWriteHalf::try_write_vectored(self, pieces)
            }
        }

        impl SharedHalf for tokio::net::$module::OwnedWriteHalf {
            fn writable(&self) -> impl Future<Output = io::Result<()>> + Send {
                tokio::net::$module::OwnedWriteHalf::writable(self)
            }
        }
    };
}

owned_halves!(TcpStream, tcp);
#[cfg(unix)]
owned_halves!(UnixStream, unix);

impl<S: SharedHalf> WriteHalf for Arc<S> {
    fn inline_writer(&self) -> Option<Arc<dyn TryWrite>> {
        Some(self.clone())
    }

    /// The write loop over a half other tasks may also `try_write` to: wait until writable,
    /// write what fits (vectored, up to [`MAX_PIECES`] pieces at a time), again.
    async fn write_all(&mut self, pieces: &[Bytes]) -> Result<()> {
        // The next piece to write, and how much of it is already written.
        let (mut next, mut done) = (0, 0);
        while next < pieces.len() {
            self.writable().await?;
            let written = {
                let mut slices = [IoSlice::new(&[]); MAX_PIECES];
                let rest = pieces[next..].iter().enumerate();
                let mut n = 0;
                for ((i, piece), slot) in rest.zip(slices.iter_mut()) {
                    *slot = IoSlice::new(if i == 0 { &piece[done..] } else { piece });
                    n += 1;
                }
                self.try_write_vectored(&slices[..n])
            };
            match written {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::WriteZero,
                        "the socket accepted no bytes",
                    )
                    .into());
                }
                Ok(mut n) => {
                    while n > 0 {
                        let left = pieces[next].len() - done;
                        if n < left {
                            done += n;
                            break;
                        }
                        n -= left;
                        next += 1;
                        done = 0;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// FIN only from the last owner: an inline writer still holding the half keeps it open.
    async fn shutdown(self) {
        if let Ok(mut half) = Arc::try_unwrap(self) {
            let _ = AsyncWriteExt::shutdown(&mut half).await;
        }
    }
}

/// A connector's stream: split like TLS, written by the writer task only.
impl Transport for Box<dyn ByteStream> {
    type Read = tokio::io::ReadHalf<Box<dyn ByteStream>>;
    type Write = tokio::io::WriteHalf<Box<dyn ByteStream>>;

    fn into_halves(self) -> (Self::Read, Self::Write) {
        tokio::io::split(self)
    }
}

/// Boxed for the handshake (a TLS session is over a kilobyte), unboxed into the halves.
#[cfg(feature = "tls")]
impl Transport for Box<TlsStream> {
    type Read = tokio::io::ReadHalf<TlsStream>;
    type Write = tokio::io::WriteHalf<TlsStream>;

    fn into_halves(self) -> (Self::Read, Self::Write) {
        tokio::io::split(*self)
    }
}

/// The half of a stream split with [`tokio::io::split`] (TLS, a connector's): the writer
/// task's alone.
impl<T: AsyncWrite + Send + 'static> WriteHalf for tokio::io::WriteHalf<T> {
    fn inline_writer(&self) -> Option<Arc<dyn TryWrite>> {
        None
    }

    /// The flush pushes the bytes out of a TLS session's buffer (which copies every byte
    /// anyway: vectored writes would buy nothing here).
    async fn write_all(&mut self, pieces: &[Bytes]) -> Result<()> {
        for piece in pieces {
            AsyncWriteExt::write_all(self, piece).await?;
        }
        self.flush().await?;
        Ok(())
    }

    async fn shutdown(mut self) {
        let _ = AsyncWriteExt::shutdown(&mut self).await;
    }
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
