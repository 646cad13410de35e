//! The reliable publisher's connection loop, raced with the scope's body in the scope's task.
//!
//! ```text
//!   run ── loop ─► open_first(hosts from `first`) ──err─► Reconnecting, backoff + jitter ─┐
//!             ▲        │ ok                                                            │
//!             │        ▼                                                               │
//!             │   run_scope(conn, life) ─ life: loop { channel ─► requeue all held     │
//!             │        │                          ─► send / settle until it ends }    │
//!             │        │ lost (cause traced)  ─► hosts.lost(cause): 320 = next broker  │
//!             └────────┴── backoff + jitter ◄──────────────────────────────────────────┘
//! ```
//!
//! A channel the broker closes with 403, 404 or 406 was closed by one of the messages in
//! flight on it, and the close does not say which. The next channel then sends those
//! messages one at a time, each awaiting its confirm; the one that closes the channel again
//! fails with that error and the others are confirmed. Newer messages go out at full speed
//! again after the last suspect.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::Poll;

use tokio::sync::watch;
use tokio::time::Instant;

use super::hosts::Hosts;
use super::{PublisherState, Shared};
use crate::client::body::HeldBody;
use crate::client::{Channel, Confirmation, Connection, PublishOptions, run_scope};
use crate::error::{CloseScope, Error, Result, UnexpectedCloseError};

/// How a connection's life ended without a failure.
enum LifeEnd {
    /// The scope ended.
    Stopped,
    /// The rebalance interval passed and everything in flight was confirmed.
    Rebalance,
}

/// Lets publishers send on a channel themselves while it lives: set when the channel's life
/// starts (unless suspects are being isolated), cleared when it ends, however it ends.
struct DirectGuard<'a> {
    shared: &'a Shared,
    /// This channel's generation.
    generation: u64,
}

impl<'a> DirectGuard<'a> {
    fn open(shared: &'a Shared, ch: &Channel, now: bool) -> Self {
        let mut out = shared.outbox();
        out.generation += 1;
        let generation = out.generation;
        out.direct = now.then(|| (ch.clone(), generation));
        DirectGuard { shared, generation }
    }

    /// Lets publishers send on `ch` themselves again (suspects were isolated).
    fn resume(&self, ch: &Channel) {
        self.shared.outbox().direct = Some((ch.clone(), self.generation));
    }
}

impl Drop for DirectGuard<'_> {
    fn drop(&mut self) {
        self.shared.outbox().direct = None;
    }
}

/// What [`Driver::send_next`] did.
enum Sent {
    /// Sent the message of this id; its confirm.
    One(u64, Confirmation),
    /// Nothing is queued.
    Nothing,
    /// The channel cannot take a publish now (write buffer full, connection blocked,
    /// channel paused): the message stays queued.
    NoRoom,
}

pub(super) struct Driver {
    shared: Arc<Shared>,
    stop: watch::Receiver<bool>,
    hosts: Hosts,
}

/// True when the broker closed a channel over something a message asked for: 403
/// access-refused (no write permission on the exchange), 404 not-found (no such exchange),
/// 406 precondition-failed (a message over `max_message_size`, say). Republishing the same
/// message gets the same close.
fn refused_message(error: &Error) -> bool {
    matches!(
        error.unexpected_close(),
        Some(UnexpectedCloseError {
            scope: CloseScope::Channel(_),
            reply_code: 403 | 404 | 406,
            ..
        })
    )
}

/// True when the broker refused the login (403), on every broker tried: no reconnect fixes
/// that, so the scope ends with it.
fn login_refused(error: &Error) -> bool {
    let refused = |e: &Error| e.reply_code() == Some(UnexpectedCloseError::ACCESS_REFUSED);
    match error {
        Error::AllHostsFailed(attempts) => attempts.iter().all(|a| refused(&a.error)),
        e => refused(e),
    }
}

impl Driver {
    pub(super) fn new(shared: Arc<Shared>, stop: watch::Receiver<bool>) -> Self {
        let mut endpoints = shared.config.endpoints();
        if shared.config.shuffle_hosts {
            crate::client::shuffle(&mut endpoints);
        }
        Driver {
            shared,
            stop,
            hosts: Hosts::new(endpoints),
        }
    }

    /// Connects, publishes, reconnects, until the scope stops it (`Ok`) or the login is
    /// refused (`Err`).
    pub(super) async fn run(mut self) -> Result<()> {
        let backoff = self.shared.options.backoff;
        let mut attempt = 0u32;
        let mut connected_before = false;
        loop {
            let order = self.hosts.order();
            let mut stop = self.stop.clone();
            let opened = tokio::select! {
                r = Connection::open_first(&self.shared.config, &order) => r,
                _ = stop.wait_for(|s| *s) => return Ok(()),
            };
            let cause = match opened {
                Err(e) => {
                    if login_refused(&e) {
                        tracing::error!(error = %e, "reliable publisher: the broker refused the login");
                        return Err(e);
                    }
                    tracing::warn!(error = %e, attempt, "reliable publisher: could not connect; retrying");
                    e
                }
                Ok((conn, index)) => {
                    self.hosts.reached(index);
                    if connected_before {
                        self.shared
                            .counters
                            .reconnects
                            .fetch_add(1, Ordering::Relaxed);
                    }
                    connected_before = true;
                    attempt = 0;
                    let endpoint = conn.endpoint().clone();
                    let held = self.shared.outbox().entries.len();
                    tracing::info!(%endpoint, held, "reliable publisher: connected");
                    let ended = run_scope(conn, async |conn| self.life(conn).await).await;
                    let cause = match ended {
                        Ok(Ok(LifeEnd::Stopped)) => return Ok(()),
                        Ok(Ok(LifeEnd::Rebalance)) => {
                            self.hosts.rebalance();
                            tracing::info!(%endpoint, "reliable publisher: rebalancing over the host list");
                            continue;
                        }
                        Ok(Err(e)) | Err(e) => e,
                    };
                    if *self.stop.borrow() {
                        return Ok(());
                    }
                    self.hosts.lost(&cause);
                    let held = self.shared.outbox().entries.len();
                    tracing::warn!(
                        %endpoint,
                        cause = %cause,
                        republish = held,
                        next = %self.hosts.order()[0],
                        "reliable publisher: connection lost; reconnecting"
                    );
                    cause
                }
            };
            self.shared
                .state
                .send_replace(PublisherState::Reconnecting { cause });
            let delay = backoff.delay(attempt, fastrand::f64());
            attempt = attempt.saturating_add(1);
            let mut stop = self.stop.clone();
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                _ = stop.wait_for(|s| *s) => return Ok(()),
            }
        }
    }

    /// One connection: a confirmed channel after another (a channel the broker closed over a
    /// message is replaced), until the scope stops, the rebalance interval passes, or the
    /// connection fails.
    async fn life(&self, conn: &Connection) -> Result<LifeEnd> {
        let rebalance_at = self
            .shared
            .options
            .rebalance_interval
            .filter(|_| self.hosts.len() > 1)
            .map(|every| Instant::now() + every.mul_f64(0.8 + 0.4 * fastrand::f64()));
        let mut isolate_through: Option<u64> = None;
        let mut stop = self.stop.clone();
        loop {
            let ch = tokio::select! {
                ch = conn.channel() => ch?,
                _ = stop.wait_for(|s| *s) => return Ok(LifeEnd::Stopped),
            };
            self.shared.outbox().requeue_all();
            self.shared
                .state
                .send_replace(PublisherState::Connected(conn.endpoint().clone()));
            match self
                .channel_life(&ch, &mut isolate_through, rebalance_at)
                .await
            {
                Ok(end) => return Ok(end),
                Err(e) if refused_message(&e) => {
                    if isolate_through.is_none() {
                        isolate_through = self.shared.outbox().last_sent();
                    }
                    tracing::warn!(error = %e, "reliable publisher: the broker closed the channel over a message; sending the suspects one at a time");
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Sends what is queued on `ch` and settles confirms in order, until the scope stops,
    /// `rebalance_at` passes (then drains first), or the channel fails.
    async fn channel_life(
        &self,
        ch: &Channel,
        isolate_through: &mut Option<u64>,
        rebalance_at: Option<Instant>,
    ) -> Result<LifeEnd> {
        let shared = &*self.shared;
        let mut in_flight: VecDeque<(u64, Confirmation)> = VecDeque::new();
        let mut stop = self.stop.clone();
        let mut draining = false;
        // Publishers send on this channel themselves while nothing else is going on.
        let direct = DirectGuard::open(&self.shared, ch, isolate_through.is_none());
        let closed = ch.closed();
        tokio::pin!(closed);
        let rebalance = async {
            match rebalance_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(rebalance);
        loop {
            if *stop.borrow() {
                return Ok(LifeEnd::Stopped);
            }
            {
                // Confirms of direct sends on this channel nobody awaits: settled here, in
                // order with the rest. Those of an earlier channel are dropped: that channel
                // is gone and its messages were queued again when this one opened.
                let mut out = shared.outbox();
                for orphan in out.orphans.drain(..) {
                    if orphan.generation == direct.generation {
                        in_flight.push_back((orphan.id, orphan.confirmation));
                    }
                }
            }
            self.settle_ready(&mut in_flight, isolate_through.is_some())?;
            let one_at_a_time = isolate_through.is_some() && !in_flight.is_empty();
            let mut no_room = false;
            if !draining && !one_at_a_time {
                match self.send_next(ch, isolate_through, &direct)? {
                    Sent::One(id, confirmation) => {
                        in_flight.push_back((id, confirmation));
                        continue;
                    }
                    Sent::NoRoom => no_room = true,
                    Sent::Nothing => {}
                }
            }
            if draining && in_flight.is_empty() && !self.shared.outbox().sent_unconfirmed() {
                return Ok(LifeEnd::Rebalance);
            }
            let front = async {
                match in_flight.front_mut() {
                    Some((_, c)) => Pin::new(c).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                r = front => {
                    let (id, _) = in_flight.pop_front().expect("awaited the front");
                    self.settle_one(id, r, isolate_through.is_some())?;
                }
                () = shared.work.notified(), if !draining && !one_at_a_time && !no_room => {}
                // Waits while the broker blocks the connection (a memory alarm), settling
                // confirms meanwhile; the scope's end does not wait for the alarm to clear.
                r = ch.wait_publishable(), if no_room => r?,
                _ = stop.changed() => {}
                e = &mut closed => return Err(e),
                () = &mut rebalance, if !draining => {
                    draining = true;
                    shared.outbox().direct = None;
                }
                // While draining, direct sends still in flight settle without waking this
                // task: look again now and then.
                () = tokio::time::sleep(std::time::Duration::from_millis(10)), if draining => {}
            }
        }
    }

    /// Sends the next queued message still held on `ch`, from under the outbox's lock (the
    /// channel takes it without waiting, or not at all), marked as sent once more. The
    /// first message past the suspects ends their isolation.
    fn send_next(
        &self,
        ch: &Channel,
        isolate_through: &mut Option<u64>,
        direct: &DirectGuard<'_>,
    ) -> Result<Sent> {
        let shared = &*self.shared;
        let mut out = shared.outbox();
        while let Some(&id) = out.queue.front() {
            let Some(entry) = out.entries.get_mut(id) else {
                out.queue.pop_front();
                continue;
            };
            let m = &entry.message;
            let sent = ch.try_publish_ref(
                &m.exchange,
                &m.routing_key,
                HeldBody(&m.body),
                (&m.properties).into(),
                PublishOptions::default().with_mandatory(m.mandatory),
            );
            let confirmation = match sent {
                Ok(Some(confirmation)) => confirmation,
                Ok(None) => return Ok(Sent::NoRoom),
                // No channel can carry it (a header too large for the negotiated frame
                // size, say): it fails, the others go on.
                Err(e @ Error::Encode(_)) => {
                    out.queue.pop_front();
                    let tell = out.settle(id, Err(e), &shared.counters);
                    drop(out);
                    shared.freed_room();
                    if let Some((tx, outcome)) = tell {
                        let _ = tx.send(outcome);
                    }
                    out = shared.outbox();
                    continue;
                }
                Err(e) => return Err(e),
            };
            entry.sends += 1;
            entry.queued = false;
            if entry.sends > 1 {
                shared.counters.republished.fetch_add(1, Ordering::Relaxed);
            }
            shared.counters.sent.fetch_add(1, Ordering::Relaxed);
            out.queue.pop_front();
            if isolate_through.is_some_and(|last| id > last) {
                *isolate_through = None;
                drop(out);
                direct.resume(ch);
            }
            return Ok(Sent::One(id, confirmation));
        }
        Ok(Sent::Nothing)
    }

    /// Settles the confirms at the front of `in_flight` that have arrived, without waiting.
    fn settle_ready(
        &self,
        in_flight: &mut VecDeque<(u64, Confirmation)>,
        isolating: bool,
    ) -> Result<()> {
        let mut ready = Vec::new();
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        while let Some((_, c)) = in_flight.front_mut() {
            match Pin::new(c).poll(&mut cx) {
                Poll::Ready(r) => {
                    let (id, _) = in_flight.pop_front().expect("the front");
                    ready.push((id, r));
                }
                Poll::Pending => break,
            }
        }
        // Confirms and returns settle under one lock; anything else ends the channel's life
        // as `settle_one` says.
        let mut settled = Vec::with_capacity(ready.len());
        let mut failed = None;
        for (id, r) in ready {
            match r {
                Ok(()) => settled.push((id, Ok(()))),
                Err(e @ Error::Returned(_)) => settled.push((id, Err(e))),
                Err(e) => {
                    failed = Some((id, e));
                    break;
                }
            }
        }
        self.shared.settle_many(settled);
        match failed {
            Some((id, e)) => self.settle_one(id, Err(e), isolating),
            None => Ok(()),
        }
    }

    /// Books one publish's outcome. A confirm or a return settles it; a nack, a lost channel
    /// or connection leaves it held for the next channel (an `Err` here ends this one). While
    /// isolating suspects, a message the broker refuses fails with that refusal.
    fn settle_one(&self, id: u64, outcome: Result<()>, isolating: bool) -> Result<()> {
        match outcome {
            Ok(()) => {
                self.shared.settle(id, Ok(()));
                Ok(())
            }
            Err(e @ Error::Returned(_)) => {
                self.shared.settle(id, Err(e));
                Ok(())
            }
            // A nack: RabbitMQ 3.10 was seen nacking every publish on a channel that raced
            // a quorum queue's leader election, while a new connection publishes normally
            // (tests/cluster/node_loss.rs): reconnect and publish it again.
            Err(e) => {
                if isolating && refused_message(&e) {
                    self.shared.settle(id, Err(e.clone()));
                }
                Err(e)
            }
        }
    }
}
