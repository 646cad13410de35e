//! The reader task: socket bytes -> the state machine (which decodes them into frames and
//! hands each result to whoever waits for it). Every protocol rule (what a late frame, a crossing close or a frame on
//! an unknown channel gets) lives in [`proto::connection`](crate::proto::connection); this
//! task only reads, feeds the machine and watches the heartbeat.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::AsyncReadExt;

use super::shared::{ConnShared, lock};
use super::transport::ReadHalf;
use crate::error::{Error, Result};
use crate::proto::connection::Event;

/// Read buffer growth step.
const READ_CHUNK: usize = 64 * 1024;

/// The reader task's own state.
pub(crate) struct Reader {
    shared: Arc<ConnShared>,
}

/// What one batch of frames did.
enum Batch {
    Continue,
    /// `connection.close-ok` arrived for our close.
    Closed,
}

impl Reader {
    pub(crate) fn new(shared: Arc<ConnShared>) -> Self {
        Reader { shared }
    }

    /// Reads until the connection ends. `Ok` only after a clean close of ours.
    pub(crate) async fn run(
        mut self,
        mut socket: ReadHalf,
        mut buf: BytesMut,
        heartbeat: Duration,
    ) -> Result<()> {
        let dead_after = (!heartbeat.is_zero()).then(|| heartbeat * 2);
        // One timer for the connection's life, moved on only when it fires: cheaper than a
        // new timeout around every read.
        let mut watchdog = dead_after.map(|limit| Box::pin(tokio::time::sleep(limit)));
        let mut last_read = tokio::time::Instant::now();
        loop {
            if let Batch::Closed = self.handle_bytes(&mut buf)? {
                return Ok(());
            }
            buf.reserve(READ_CHUNK);
            let n = match (&mut watchdog, dead_after) {
                (Some(timer), Some(limit)) => loop {
                    tokio::select! {
                        read = socket.read_buf(&mut buf) => break read?,
                        () = timer.as_mut() => {
                            if last_read.elapsed() >= limit {
                                return Err(Error::HeartbeatTimeout(limit));
                            }
                            timer.as_mut().reset(last_read + limit);
                        }
                    }
                },
                _ => socket.read_buf(&mut buf).await?,
            };
            last_read = tokio::time::Instant::now();
            if n == 0 {
                return Err(Error::Io(Arc::new(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the server closed the socket",
                ))));
            }
        }
    }

    /// Feeds every whole frame in `buf` to the machine under one lock.
    fn handle_bytes(&mut self, buf: &mut BytesMut) -> Result<Batch> {
        let shared = &self.shared;
        let mut st = lock(&shared.state);
        let mut result = st.machine.handle_bytes(buf).map(|()| Batch::Continue);
        let mut unblocked = false;
        while let Some(event) = st.machine.poll_event() {
            match event {
                Event::Closed => result = result.map(|_| Batch::Closed),
                Event::Unblocked => unblocked = true,
                Event::Blocked(_) => {}
            }
        }
        let pending = !st.machine.transmit().is_empty();
        drop(st);
        if pending {
            shared.out_ready.notify_one();
        }
        if unblocked {
            shared.out_drained.notify_waiters();
        }
        result
    }
}
