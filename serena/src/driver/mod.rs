//! The tokio side: the transport (TCP, TLS, Unix socket), the handshake, then two tasks per
//! connection that own the socket halves.
//!
//! The reader task decodes frames and feeds them to the protocol state machine
//! ([`proto::connection::Connection`](crate::proto::connection::Connection)), which owns every
//! channel's state and completes the waiters. The writer task drains the machine's outgoing
//! bytes with
//! one `write_all` per batch, so many frames queued by many callers leave in one syscall, and
//! sends a heartbeat when the connection has been quiet for half the interval. The reader
//! declares the server dead after two intervals without any bytes.

mod handshake;
mod reader;
pub(crate) mod shared;
#[cfg(feature = "tls")]
mod tls;
pub(crate) mod transport;

use std::sync::Arc;

pub(crate) use handshake::handshake;
pub(crate) use reader::Reader;
use shared::{ConnShared, lock};
use transport::WriteHalf;

use crate::error::Result;

/// Now, for the state machine, which takes time as a plain `Instant`: tokio's clock, so that
/// tests with paused time drive the heartbeats too.
pub(crate) fn now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}

/// Drains the machine's outgoing bytes to the socket until the connection ends. Heartbeats
/// are the machine's to queue (the reader runs its timer); this only writes.
pub(crate) async fn write_loop(mut socket: impl WriteHalf, shared: Arc<ConnShared>) -> Result<()> {
    lock(&shared.state).socket = socket.inline_writer();
    loop {
        let ready = shared.out_ready.notified();
        let chunk = {
            let mut st = lock(&shared.state);
            if st.machine.transmit().is_empty() {
                if st.machine.error().is_some() {
                    break;
                }
                None
            } else {
                st.writing = true;
                Some(st.machine.transmit().take())
            }
        };
        match chunk {
            Some(pieces) => {
                let len: usize = pieces.iter().map(bytes::Bytes::len).sum();
                tracing::trace!(bytes = len, pieces = pieces.len(), "writing");
                socket.write_all(&pieces).await?;
                {
                    let mut st = lock(&shared.state);
                    st.writing = false;
                    st.machine.handle_sent(now());
                }
                shared
                    .stats
                    .bytes_written
                    .fetch_add(len as u64, std::sync::atomic::Ordering::Relaxed);
                shared.out_drained.notify_waiters();
            }
            None => ready.await,
        }
    }
    // No more inline writes: the write half is the writer's alone again.
    lock(&shared.state).socket = None;
    // Keep the write half open until the reader is done: a FIN sent before the server's
    // close-ok makes RabbitMQ treat our clean close as an abrupt disconnect.
    let mut closed = shared.closed.subscribe();
    let _ = closed.wait_for(Option::is_some).await;
    socket.shutdown().await;
    Ok(())
}
