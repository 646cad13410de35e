//! State shared between the user-facing handles and the driver's reader and writer tasks.
//!
//! Lock order, everywhere: a channel's `state`, then the connection's `out`. Neither lock is
//! held across an `.await`.
//!
//! ```text
//!  handles --encode frames--> out (one BytesMut) --writer task--> socket
//!  socket --reader task--> FrameDecoder --> ContentAssembler[ch] --> ChannelShared[ch]
//!                                                                   | rpc replies (FIFO)
//!                                                                   | confirms (by tag)
//!                                                                   | deliveries (per consumer)
//! ```

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::BytesMut;
use tokio::sync::{Notify, mpsc, oneshot, watch};

use crate::error::{Error, Result, ReturnedMessage};
use crate::proto::connection::Tuning;
use crate::proto::{Content, EncodeError, FieldTable, Method, ShortString};

/// Above this many buffered outgoing bytes, publishers wait for the writer to drain.
pub(crate) const OUT_HIGH_WATER: usize = 4 * 1024 * 1024;

/// Locks a mutex, recovering the data if a panicking thread poisoned it: every critical
/// section here leaves the state consistent before anything that could panic.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The outgoing byte buffer and the conditions that gate writing to it.
#[derive(Default)]
pub(crate) struct Outbox {
    pub(crate) buf: BytesMut,
    /// Set once the connection is dead or closing: no more frames are accepted.
    pub(crate) error: Option<Error>,
    /// `connection.blocked` reason while the broker blocks publishing.
    pub(crate) blocked: Option<String>,
    /// The socket's write half, for callers that write small urgent frames themselves
    /// instead of waking the writer task (see [`ConnShared::flush_inline`]). Never set for
    /// TLS, where only the writer task writes.
    pub(crate) socket: Option<super::transport::InlineWriter>,
    /// The writer task is writing bytes it took from `buf`; nobody else may write meanwhile.
    pub(crate) writing: bool,
}

/// Counters a user can read to see heartbeats at work.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub(crate) heartbeats_sent: AtomicU64,
    pub(crate) heartbeats_received: AtomicU64,
    pub(crate) frames_received: AtomicU64,
    pub(crate) bytes_written: AtomicU64,
}

/// One connection's shared state.
pub(crate) struct ConnShared {
    pub(crate) out: Mutex<Outbox>,
    /// Wakes the writer when `out.buf` gains bytes.
    pub(crate) out_ready: Notify,
    /// Wakes producers waiting for the buffer to drain or the block to lift.
    pub(crate) out_drained: Notify,
    pub(crate) channels: Mutex<ChannelTable>,
    pub(crate) tuning: Tuning,
    pub(crate) server_properties: FieldTable,
    /// The reason the connection ended, once it has.
    pub(crate) closed: watch::Sender<Option<Error>>,
    pub(crate) stats: Stats,
    /// We sent `connection.close` and wait for `close-ok`.
    pub(crate) closing: std::sync::atomic::AtomicBool,
    /// Callers of `update_secret` waiting for `update-secret-ok`, in the order they sent.
    pub(crate) secret_updates: Mutex<VecDeque<oneshot::Sender<()>>>,
}

impl ConnShared {
    pub(crate) fn new(tuning: Tuning, server_properties: FieldTable) -> Self {
        ConnShared {
            out: Mutex::new(Outbox::default()),
            out_ready: Notify::new(),
            out_drained: Notify::new(),
            channels: Mutex::new(ChannelTable::new(tuning.channel_max)),
            tuning,
            server_properties,
            closed: watch::channel(None).0,
            stats: Stats::default(),
            closing: std::sync::atomic::AtomicBool::new(false),
            secret_updates: Mutex::new(VecDeque::new()),
        }
    }

    pub(crate) fn frame_max(&self) -> u32 {
        if self.tuning.frame_max == 0 {
            crate::driver::UNLIMITED_FRAME_MAX
        } else {
            self.tuning.frame_max
        }
    }

    /// Appends frames to the outgoing buffer with `write`, unless the connection is dead.
    pub(crate) fn send_with(
        &self,
        write: impl FnOnce(&mut BytesMut) -> Result<(), EncodeError>,
    ) -> Result<()> {
        let mut out = lock(&self.out);
        if let Some(e) = &out.error {
            return Err(e.clone());
        }
        write(&mut out.buf)?;
        drop(out);
        self.out_ready.notify_one();
        Ok(())
    }

    /// Writes what `out` holds straight to the socket from the caller's task, when the writer
    /// task is not mid-write: a request then leaves without a wake-up of the writer on another
    /// thread. Only a non-blocking `try_write`; whatever does not fit is left for the writer.
    pub(crate) fn flush_inline(&self, out: &mut Outbox) {
        if out.writing || out.buf.is_empty() {
            return;
        }
        let Some(socket) = &out.socket else {
            return;
        };
        // Errors (WouldBlock included) are left to the writer task, which meets them too.
        if let Ok(n) = socket.try_write(&out.buf) {
            bytes::Buf::advance(&mut out.buf, n);
            self.stats
                .bytes_written
                .fetch_add(n as u64, Ordering::Relaxed);
        }
    }

    /// Appends one method frame.
    pub(crate) fn send_method(&self, channel: u16, method: &Method) -> Result<()> {
        tracing::trace!(channel, ?method, "sending");
        self.send_with(|buf| crate::proto::frame::encode_method(buf, channel, method))
    }

    /// Waits until the outgoing buffer has room and, for publishes, the broker does not block
    /// the connection. Fails as soon as the connection is dead.
    pub(crate) async fn wait_writable(&self, publishing: bool) -> Result<()> {
        loop {
            let drained = self.out_drained.notified();
            tokio::pin!(drained);
            drained.as_mut().enable();
            {
                let out = lock(&self.out);
                if let Some(e) = &out.error {
                    return Err(e.clone());
                }
                let blocked = publishing && out.blocked.is_some();
                if !blocked && out.buf.len() < OUT_HIGH_WATER {
                    return Ok(());
                }
            }
            drained.await;
        }
    }

    /// Marks the connection dead with `error` (the first reason wins) and fails everything
    /// waiting on it: pending calls, confirms and consumers on every channel.
    pub(crate) fn fail(&self, error: Error) {
        {
            let mut out = lock(&self.out);
            if out.error.is_none() {
                out.error = Some(error.clone());
            }
        }
        self.closed.send_if_modified(|c| {
            if c.is_none() {
                *c = Some(error.clone());
                true
            } else {
                false
            }
        });
        // Their senders dropped, waiting `update_secret` calls return the connection's error.
        lock(&self.secret_updates).clear();
        let channels: Vec<_> = lock(&self.channels).slots.drain(..).flatten().collect();
        for ch in channels {
            ch.fail(error.clone());
        }
        self.out_ready.notify_one();
        self.out_drained.notify_waiters();
    }

    /// The broker accepted the oldest pending `update-secret`.
    pub(crate) fn handle_update_secret_ok(&self) {
        if let Some(waiter) = lock(&self.secret_updates).pop_front() {
            let _ = waiter.send(());
        }
    }

    pub(crate) fn channel(&self, id: u16) -> Option<Arc<ChannelShared>> {
        lock(&self.channels)
            .slots
            .get(usize::from(id))
            .and_then(|s| s.clone())
    }
}

/// Channel ids in use; index is the id, slot 0 is the connection.
pub(crate) struct ChannelTable {
    pub(crate) slots: Vec<Option<Arc<ChannelShared>>>,
    max: u16,
}

impl ChannelTable {
    fn new(channel_max: u16) -> Self {
        ChannelTable {
            slots: vec![None],
            max: if channel_max == 0 {
                u16::MAX
            } else {
                channel_max
            },
        }
    }

    /// Registers a new channel under the lowest free id.
    pub(crate) fn allocate(
        &mut self,
        make: impl FnOnce(u16) -> Arc<ChannelShared>,
    ) -> Result<Arc<ChannelShared>> {
        let free = self.slots.iter().skip(1).position(Option::is_none);
        let id = match free {
            Some(i) => i + 1,
            None if self.slots.len() <= usize::from(self.max) => {
                self.slots.push(None);
                self.slots.len() - 1
            }
            None => return Err(Error::ChannelsExhausted { max: self.max }),
        };
        let ch = make(id as u16);
        self.slots[id] = Some(ch.clone());
        Ok(ch)
    }

    /// Frees an id once its close handshake is over.
    pub(crate) fn release(&mut self, id: u16) {
        if let Some(slot) = self.slots.get_mut(usize::from(id)) {
            *slot = None;
        }
        while self.slots.len() > 1 && self.slots.last().is_some_and(Option::is_none) {
            self.slots.pop();
        }
    }

    /// Number of open channels.
    pub(crate) fn open_count(&self) -> usize {
        self.slots.iter().flatten().count()
    }
}

/// What a consumer's stream receives.
// Deliveries are the common case; boxing them would cost an allocation per message.
#[allow(clippy::large_enum_variant)]
pub(crate) enum ConsumerEvent {
    Delivery(Content),
    /// The consumer ended: cancelled by the server, or its channel died.
    End(Error),
}

/// A reply to a synchronous call: a method, or `basic.get-ok` with its content.
pub(crate) type RpcReply = Result<crate::proto::Assembled>;

/// A pending publish awaiting its confirm.
pub(crate) struct PendingConfirm {
    pub(crate) seq: u64,
    pub(crate) mandatory_route: Option<(ShortString, ShortString)>,
    pub(crate) waiter: oneshot::Sender<Result<()>>,
    pub(crate) returned: Option<ReturnedMessage>,
}

/// Mutable state of one channel.
#[derive(Default)]
pub(crate) struct ChannelState {
    /// Waiters for synchronous replies, in the order the requests were sent.
    pub(crate) rpc: VecDeque<oneshot::Sender<RpcReply>>,
    /// Publishes awaiting confirms, in sequence order.
    pub(crate) confirms: VecDeque<PendingConfirm>,
    /// Sequence number of the next publish (confirm mode numbers from 1).
    pub(crate) next_seq: u64,
    pub(crate) consumers: HashMap<ShortString, mpsc::UnboundedSender<ConsumerEvent>>,
    /// Why the channel is unusable, once it is.
    pub(crate) error: Option<Error>,
    /// We sent `channel.close` and wait for `close-ok`.
    pub(crate) closing: bool,
    /// `channel.flow` from the server: false while it asks us to stop publishing.
    pub(crate) flow_paused: bool,
}

/// One channel's shared state.
pub(crate) struct ChannelShared {
    pub(crate) id: u16,
    pub(crate) conn: Arc<ConnShared>,
    pub(crate) state: Mutex<ChannelState>,
    /// The reason the channel ended, once it has.
    pub(crate) closed: watch::Sender<Option<Error>>,
    /// Wakes publishers waiting for `channel.flow` to resume.
    pub(crate) flow: Notify,
    pub(crate) consumer_seq: AtomicU64,
}

impl std::fmt::Debug for ChannelShared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChannelShared")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl ChannelShared {
    pub(crate) fn new(id: u16, conn: Arc<ConnShared>) -> Self {
        ChannelShared {
            id,
            conn,
            state: Mutex::new(ChannelState {
                next_seq: 1,
                ..Default::default()
            }),
            closed: watch::channel(None).0,
            flow: Notify::new(),
            consumer_seq: AtomicU64::new(1),
        }
    }

    /// Fails everything waiting on this channel with `error` and marks it unusable.
    pub(crate) fn fail(&self, error: Error) {
        let (rpc, confirms, consumers) = {
            let mut st = lock(&self.state);
            if st.error.is_none() {
                st.error = Some(error.clone());
            }
            (
                std::mem::take(&mut st.rpc),
                std::mem::take(&mut st.confirms),
                std::mem::take(&mut st.consumers),
            )
        };
        for w in rpc {
            let _ = w.send(Err(error.clone()));
        }
        for c in confirms {
            let _ = c.waiter.send(Err(error.clone()));
        }
        for (_, tx) in consumers {
            let _ = tx.send(ConsumerEvent::End(error.clone()));
        }
        self.closed.send_if_modified(|c| {
            if c.is_none() {
                *c = Some(error.clone());
                true
            } else {
                false
            }
        });
        self.flow.notify_waiters();
    }

    /// Sends a request and returns the receiver of its reply. The waiter is queued under the
    /// channel lock together with the write, so replies pair with requests in order.
    pub(crate) fn call(&self, method: &Method) -> Result<oneshot::Receiver<RpcReply>> {
        let mut st = lock(&self.state);
        if let Some(e) = &st.error {
            return Err(e.clone());
        }
        let (tx, rx) = oneshot::channel();
        {
            let mut out = lock(&self.conn.out);
            if let Some(e) = &out.error {
                return Err(e.clone());
            }
            tracing::trace!(channel = self.id, ?method, "sending");
            crate::proto::frame::encode_method(&mut out.buf, self.id, method)?;
            // A call waits for its reply: send it now rather than after a writer wake-up.
            self.conn.flush_inline(&mut out);
            if !out.buf.is_empty() {
                self.conn.out_ready.notify_one();
            }
        }
        st.rpc.push_back(tx);
        Ok(rx)
    }

    /// Sends a method that has no reply (ack, nack, reject, nowait calls).
    pub(crate) fn cast(&self, method: &Method) -> Result<()> {
        let st = lock(&self.state);
        if let Some(e) = &st.error {
            return Err(e.clone());
        }
        self.conn.send_method(self.id, method)
    }

    pub(crate) fn next_consumer_tag(&self) -> ShortString {
        let n = self.consumer_seq.fetch_add(1, Ordering::Relaxed);
        format!("serena.{}.{}", self.id, n).into()
    }
}
