//! The reader task: socket bytes -> the state machine (which decodes them into frames and
//! hands each result to whoever waits for it). Every protocol rule (what a late frame, a crossing close or a frame on
//! an unknown channel gets) lives in [`proto::connection`](crate::proto::connection); this
//! task only reads, feeds the machine and watches the heartbeat.

use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt};

use super::shared::{ConnShared, lock};
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

    /// Reads until the connection ends. `Ok` only after a clean close of ours. Also runs
    /// the connection's one timer, at the machine's [`poll_timeout`](crate::proto::connection::Connection::poll_timeout):
    /// this task never waits on a full socket, so a dead server is noticed on time. `buf`
    /// holds what the handshake read past its last frame.
    pub(crate) async fn run(
        mut self,
        mut socket: impl AsyncRead + Unpin,
        mut buf: BytesMut,
    ) -> Result<()> {
        let first = lock(&self.shared.state).machine.poll_timeout();
        // One timer for the connection's life, moved on only when it fires: cheaper than a
        // new timeout around every read.
        let mut timer = first.map(|at| Box::pin(tokio::time::sleep_until(at.into())));
        loop {
            if let Batch::Closed = self.handle_bytes(&mut buf)? {
                return Ok(());
            }
            buf.reserve(READ_CHUNK);
            let n = match &mut timer {
                Some(timer) => loop {
                    tokio::select! {
                        read = socket.read_buf(&mut buf) => break read?,
                        () = timer.as_mut() => {
                            let next = self.shared.with(false, |m| {
                                m.handle_timeout(super::now())?;
                                Ok(m.poll_timeout())
                            })?;
                            if let Some(at) = next {
                                timer.as_mut().reset(at.into());
                            }
                        }
                    }
                },
                None => socket.read_buf(&mut buf).await?,
            };
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
        st.machine.handle_received(super::now());
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
