//! What the handles and the driver's tasks share: the protocol state machine behind one lock,
//! and the tokio pieces that wake whoever waits on it.
//!
//! ```text
//!  handles --commands--> State { machine: proto::connection::Connection<Driver> } --writer task--> socket
//!  socket --reader task--> FrameDecoder --frames--> machine --Sinks--> oneshot / mpsc / watch
//! ```
//!
//! The machine holds every piece of protocol state; this module only adds what tokio needs:
//! the waiters' types ([`Driver`], the machine's [`Sinks`]), the socket for inline writes, and
//! the notifications. The lock is never held across an `.await`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{Notify, mpsc, oneshot, watch};

use crate::error::{Error, Result};
use crate::proto::connection::{ChannelRef, Connection as Machine, Sinks, Tuning};
use crate::proto::{Assembled, Content, FieldTable};

/// Above this many buffered outgoing bytes, publishers wait for the writer to drain.
pub(crate) const OUT_HIGH_WATER: usize = 4 * 1024 * 1024;

/// Locks a mutex, recovering the data if a panicking thread poisoned it: every critical
/// section here leaves the state consistent before anything that could panic.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// What a consumer's stream receives.
pub(crate) enum ConsumerEvent {
    Delivery(Content),
    /// The consumer ended: cancelled by the server, or its channel died.
    End(Error),
}

/// A reply to a synchronous call: a method, or `basic.get-ok` with its content.
pub(crate) type RpcReply = Result<Assembled>;

/// Watches one channel: why it ended, and the server's `channel.flow`.
#[derive(Debug)]
pub(crate) struct ChannelWatch {
    pub(crate) closed: watch::Sender<Option<Error>>,
    pub(crate) flow: Notify,
}

impl ChannelWatch {
    fn new() -> Self {
        ChannelWatch {
            closed: watch::channel(None).0,
            flow: Notify::new(),
        }
    }

    /// Why the channel ended, once it has.
    pub(crate) fn error(&self) -> Option<Error> {
        self.closed.borrow().clone()
    }
}

/// The machine's waiters are tokio's: a oneshot per call and per publish, an unbounded
/// channel per consumer (bounded in practice by the prefetch window), a watch per channel.
pub(crate) struct Driver;

impl Sinks for Driver {
    type Error = Error;
    type Call = oneshot::Sender<RpcReply>;
    type Confirm = oneshot::Sender<Result<()>>;
    type Consumer = mpsc::UnboundedSender<ConsumerEvent>;
    type Channel = Arc<ChannelWatch>;

    fn reply(call: Self::Call, reply: RpcReply) -> bool {
        call.send(reply).is_ok()
    }

    fn confirm(confirm: Self::Confirm, outcome: Result<()>) {
        let _ = confirm.send(outcome);
    }

    fn deliver(consumer: &Self::Consumer, delivery: Content) -> bool {
        consumer.send(ConsumerEvent::Delivery(delivery)).is_ok()
    }

    fn end_consumer(consumer: Self::Consumer, reason: Error) {
        let _ = consumer.send(ConsumerEvent::End(reason));
    }

    fn channel_ended(channel: &Self::Channel, reason: &Error) {
        channel.closed.send_if_modified(|c| {
            if c.is_none() {
                *c = Some(reason.clone());
                true
            } else {
                false
            }
        });
        channel.flow.notify_waiters();
    }

    fn flow_changed(channel: &Self::Channel, _active: bool) {
        channel.flow.notify_waiters();
    }
}

/// The state behind the connection's lock.
pub(crate) struct State {
    pub(crate) machine: Machine<Driver>,
    /// The socket's write half, for callers that write small urgent frames themselves
    /// instead of waking the writer task (see [`ConnShared::flush_inline`]). Never set for
    /// TLS, where only the writer task writes.
    pub(crate) socket: Option<Arc<dyn super::transport::TryWrite>>,
    /// The writer task is writing bytes it took from the machine; nobody else may write.
    pub(crate) writing: bool,
}

/// Counters only the driver sees.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub(crate) bytes_written: AtomicU64,
}

/// One connection's shared state.
pub(crate) struct ConnShared {
    pub(crate) state: Mutex<State>,
    /// Wakes the writer when the machine has bytes to send.
    pub(crate) out_ready: Notify,
    /// Wakes publishers waiting for the buffer to drain or the block to lift.
    pub(crate) out_drained: Notify,
    pub(crate) tuning: Tuning,
    pub(crate) frame_max: u32,
    pub(crate) server_properties: FieldTable,
    /// The reason the connection ended, once it has.
    pub(crate) closed: watch::Sender<Option<Error>>,
    pub(crate) stats: Stats,
}

/// A channel as the handles see it: the connection, which life of which id, its watch.
#[derive(Debug)]
pub(crate) struct ChannelLink {
    pub(crate) conn: Arc<ConnShared>,
    pub(crate) id: ChannelRef,
    pub(crate) watch: Arc<ChannelWatch>,
}

impl ChannelLink {
    /// Runs `f` on the machine for this channel and wakes the writer for what it queued. A
    /// failure because the channel is gone becomes the reason it went.
    pub(crate) fn with<T>(
        &self,
        flush: bool,
        f: impl FnOnce(&mut Machine<Driver>, ChannelRef) -> Result<T>,
    ) -> Result<T> {
        let result = self.conn.with(flush, |m| f(m, self.id));
        result.map_err(|e| self.reason(e))
    }

    /// `error`, or the reason the channel ended when `error` only says it is closed.
    pub(crate) fn reason(&self, error: Error) -> Error {
        match error {
            Error::Closed("channel") => self.watch.error().unwrap_or(error),
            e => e,
        }
    }
}

impl std::fmt::Debug for ConnShared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnShared")
            .field("tuning", &self.tuning)
            .finish_non_exhaustive()
    }
}

impl ConnShared {
    pub(crate) fn new(tuning: Tuning, server_properties: FieldTable) -> Self {
        let mut machine = Machine::new(tuning);
        // The handshake just moved bytes both ways: the heartbeat clocks start now.
        let now = super::now();
        machine.handle_received(now);
        machine.handle_sent(now);
        ConnShared {
            frame_max: machine.frame_max(),
            state: Mutex::new(State {
                machine,
                socket: None,
                writing: false,
            }),
            out_ready: Notify::new(),
            out_drained: Notify::new(),
            tuning,
            server_properties,
            closed: watch::channel(None).0,
            stats: Stats::default(),
        }
    }

    /// A fresh channel watch.
    pub(crate) fn channel_watch() -> Arc<ChannelWatch> {
        Arc::new(ChannelWatch::new())
    }

    /// Runs `f` on the machine; then, with `flush`, sends what it queued from this task (see
    /// [`flush_inline`](Self::flush_inline)), and wakes the writer for whatever is left.
    pub(crate) fn with<T>(
        &self,
        flush: bool,
        f: impl FnOnce(&mut Machine<Driver>) -> Result<T>,
    ) -> Result<T> {
        let mut st = lock(&self.state);
        let result = f(&mut st.machine);
        if flush {
            self.flush_inline(&mut st);
        }
        self.release(st);
        result
    }

    /// Unlocks the state after a handle queued something, waking the writer when bytes are
    /// left to send.
    pub(crate) fn release(&self, mut st: MutexGuard<'_, State>) {
        let pending = !st.machine.transmit().is_empty();
        drop(st);
        if pending {
            self.out_ready.notify_one();
        }
    }

    /// Writes what the machine queued straight to the socket from the caller's task, when the
    /// writer task is not mid-write: a request then leaves without a wake-up of the writer on
    /// another thread. Only a non-blocking `try_write`; whatever does not fit is left for the
    /// writer.
    pub(crate) fn flush_inline(&self, st: &mut State) {
        if st.writing {
            return;
        }
        let Some(socket) = &st.socket else {
            return;
        };
        let out = st.machine.transmit();
        if out.is_empty() {
            return;
        }
        let written = {
            let mut slices = [std::io::IoSlice::new(&[]); super::transport::MAX_PIECES];
            let n = out.chunks(&mut slices);
            socket.try_write_vectored(&slices[..n])
        };
        // Errors (WouldBlock included) are left to the writer task, which meets them too.
        if let Ok(n) = written {
            out.advance(n);
            st.machine.handle_sent(super::now());
            self.stats
                .bytes_written
                .fetch_add(n as u64, Ordering::Relaxed);
        }
    }

    /// Marks the connection dead with `error` (the first reason wins) and fails everything
    /// waiting on it: pending calls, confirms and consumers on every channel.
    pub(crate) fn fail(&self, error: Error) {
        let first = {
            let mut st = lock(&self.state);
            // Nobody writes inline any more: the writer (if it runs) has the socket to itself,
            // and once it is gone the socket closes even while handles live on.
            st.socket = None;
            st.machine.fail(error)
        };
        self.closed.send_if_modified(|c| {
            if c.is_none() {
                *c = Some(first.clone());
                true
            } else {
                false
            }
        });
        self.out_ready.notify_one();
        self.out_drained.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The race the reader's failure and the scope's cleanup run: the first reason is already
    /// recorded when a second failure comes. Everything waiting must be told the first reason,
    /// not the cleanup's `Closed`.
    #[test]
    fn a_second_failure_tells_waiters_the_first_reason() {
        let conn = ConnShared::new(
            Tuning {
                channel_max: 0,
                frame_max: 4096,
                heartbeat: 0,
            },
            FieldTable::new(),
        );
        let watch = ConnShared::channel_watch();
        let (open, _open_rx) = oneshot::channel();
        let (confirm, mut confirmed) = oneshot::channel();
        {
            let mut st = lock(&conn.state);
            let ch = st.machine.open_channel(watch.clone(), open).expect("an id");
            let (select, _select_rx) = oneshot::channel();
            let confirm_mode = crate::proto::method::confirm::Select { nowait: false };
            st.machine
                .call(ch, &confirm_mode.into(), select)
                .expect("confirm.select");
            st.machine
                .publish(
                    ch,
                    &crate::proto::connection::Publish {
                        exchange: "",
                        routing_key: "q",
                        mandatory: false,
                        immediate: false,
                        properties: (&crate::proto::BasicProperties::default()).into(),
                        body: crate::proto::connection::Body::Borrowed(b"x"),
                    },
                    confirm,
                )
                .expect("published");
        }
        conn.fail(Error::HeartbeatTimeout(std::time::Duration::from_secs(2)));
        conn.fail(Error::Closed("connection"));
        let told = confirmed.try_recv().expect("the confirm was failed");
        assert!(
            matches!(told, Err(Error::HeartbeatTimeout(_))),
            "the waiter was told {told:?}"
        );
        assert!(matches!(watch.error(), Some(Error::HeartbeatTimeout(_))));
        assert!(matches!(
            conn.closed.borrow().clone(),
            Some(Error::HeartbeatTimeout(_))
        ));
    }
}
