//! The supervisor: one connection, one channel per consumer, every handler in one task group,
//! and a restart of the whole tree when something breaks.
//!
//! ```text
//!  run ─► connect ─► setup (topology) ─► per consumer: channel + QoS + basic.consume
//!   ▲                                          │ ready
//!   │                                          ▼
//!   │       consume loops (one task group) ── handlers (≤ concurrency each) ── ack/requeue/reject
//!   │                                          │
//!   │  unexpected close, socket error,         │ shutdown signal
//!   │  heartbeat loss, server cancel           ▼
//!   └── backoff + jitter ◄── (not permanent)   cancel consumers, finish in-flight handlers
//!                                              (bounded), requeue the rest, close cleanly
//! ```
//!
//! What restarting cannot fix stops the supervisor with an error instead of looping:
//! access refused (403), not allowed (530), a missing entity (404), a mismatched declaration
//! (406), a refused server certificate, and configuration errors.
//!
//! With several brokers in the configuration (`more_hosts`, a host list in the URI), each
//! restart starts at the broker after the one that failed or died, and goes on round the
//! list from there: a worker survives the loss of one node of a cluster.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tracing::Instrument;

use super::backoff::{Backoff, jitter_unit};
use super::handler::{DeliveryContext, Handler, Outcome, Publisher, StateMap};
use super::retry::{self, LocalRetry};
use super::stats::{Counters, SupervisorHandle};
use crate::client::{Channel, Connection, ConsumeOptions, Consumer, Delivery, run_scope, shuffle};
use crate::config::{ConnectionConfig, Endpoint};
use crate::error::{Error, Result, TlsError};
use crate::proto::FieldTable;
use crate::topology::RetrySchedule;

/// How long a tree must have been up (every consumer consuming) for its failure to start
/// the restart backoff over.
const UP_RESETS_BACKOFF: Duration = Duration::from_secs(1);

/// A setup step run on every (re)connection before the consumers start, such as applying a
/// topology.
pub type SetupFn =
    Arc<dyn Fn(Connection) -> Pin<Box<dyn Future<Output = Result<()>> + Send>> + Send + Sync>;

/// Why the supervisor stopped instead of restarting.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum SupervisorError {
    /// An error restarting cannot fix (403, 404, 406, 530, bad configuration).
    #[error("stopped on an error a restart cannot fix: {0}")]
    Permanent(#[source] Error),
    /// More restarts in a row than `Backoff::max_restarts` allows.
    #[error("gave up after {restarts} restarts in a row; last error: {last}")]
    TooManyRestarts {
        /// Restarts made.
        restarts: u32,
        /// The error that ended the last run.
        #[source]
        last: Error,
    },
    /// The supervisor was given no consumers.
    #[error("the supervisor has no consumers to run")]
    NoConsumers,
}

/// True for errors that a restart cannot fix.
pub fn is_permanent(error: &Error) -> bool {
    match error {
        Error::UnexpectedClose(c) => matches!(c.reply_code, 403 | 404 | 406 | 530),
        Error::ConfirmsNotSupported
        | Error::NoCommonMechanism { .. }
        | Error::Config(_)
        | Error::Encode(_) => true,
        Error::Tls(tls) => !matches!(tls, TlsError::AlertReceived(_) | TlsError::Handshake(_)),
        // Every broker of the list refused for good.
        Error::AllHostsFailed(attempts) => attempts.iter().all(|a| is_permanent(&a.error)),
        _ => false,
    }
}

/// Runs `#[consumer]` handlers, restarting the whole tree on failure.
///
/// ```no_run
/// use serena::worker::{Json, Supervisor};
/// use serena::{ConnectionConfig, consumer};
///
/// #[derive(serde::Deserialize)]
/// struct Order { id: u64 }
///
/// #[consumer(queue = "orders")]
/// async fn handle_order(Json(order): Json<Order>) -> Result<(), std::io::Error> {
///     println!("order {}", order.id);
///     Ok(())
/// }
///
/// # async fn run() -> Result<(), serena::worker::SupervisorError> {
/// Supervisor::new(ConnectionConfig::default())
///     .consumer(handle_order)
///     .run()
///     .await
/// # }
/// ```
pub struct Supervisor {
    config: ConnectionConfig,
    handlers: Vec<Arc<dyn Handler>>,
    state: StateMap,
    setup: Vec<SetupFn>,
    backoff: Backoff,
    shutdown_timeout: Duration,
    publisher_channels: usize,
    counters: Arc<Counters>,
    ready: watch::Sender<bool>,
    /// Retry schedules by work queue.
    schedules: HashMap<String, Arc<RetrySchedule>>,
    local_retry: LocalRetry,
}

impl std::fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Supervisor")
            .field("config", &self.config)
            .field(
                "consumers",
                &self
                    .handlers
                    .iter()
                    .map(|h| h.spec().name)
                    .collect::<Vec<_>>(),
            )
            .field("backoff", &self.backoff)
            .finish_non_exhaustive()
    }
}

impl Supervisor {
    /// A supervisor connecting with `config`.
    pub fn new(config: ConnectionConfig) -> Self {
        Supervisor {
            config,
            handlers: Vec::new(),
            state: StateMap::default(),
            setup: Vec::new(),
            backoff: Backoff::default(),
            shutdown_timeout: Duration::from_secs(30),
            publisher_channels: 4,
            counters: Arc::new(Counters::default()),
            ready: watch::channel(false).0,
            schedules: HashMap::new(),
            local_retry: LocalRetry::default(),
        }
    }

    /// Retries the failed messages of `schedule.queue` by `schedule`: each waits its delay in
    /// a delay queue, and is parked after the last attempt (see the [module docs](super#failures)).
    /// The queues must exist: [`topology`](Self::topology) declares those of a `retry` key, and
    /// registers its schedules itself.
    #[must_use]
    pub fn retry(mut self, schedule: RetrySchedule) -> Self {
        self.schedules
            .insert(schedule.queue.clone(), Arc::new(schedule));
        self
    }

    /// How queues without a retry schedule retry in the worker (default: 3 attempts, 1 s then
    /// 2 s apart, then the message is rejected).
    #[must_use]
    pub fn local_retry(mut self, retry: LocalRetry) -> Self {
        self.local_retry = retry;
        self
    }

    /// Adds a consumer (a `#[consumer]` function, or any [`Handler`]).
    #[must_use]
    pub fn consumer(mut self, handler: impl Handler) -> Self {
        self.handlers.push(Arc::new(handler));
        self
    }

    /// Registers shared state that handlers take as `State<S>`.
    #[must_use]
    pub fn state<S: Clone + Send + Sync + 'static>(mut self, value: S) -> Self {
        self.state.insert(value);
        self
    }

    /// Adds a step run on every (re)connection before consumers start.
    #[must_use]
    pub fn setup<F, Fut>(mut self, step: F) -> Self
    where
        F: Fn(Connection) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<()>> + Send + 'static,
    {
        self.setup
            .push(Arc::new(move |conn: Connection| Box::pin(step(conn))));
        self
    }

    /// A supervisor for `topology`: connection settings from its `[connection]` block and the
    /// environment (`SERENA_URL` and friends), and the topology applied on every (re)start.
    pub fn from_topology(topology: crate::topology::Topology) -> Result<Self> {
        let config = topology.connection.resolve()?;
        Ok(Supervisor::new(config).topology(topology))
    }

    /// Applies `topology` on every (re)connection before the consumers start, and retries the
    /// failed messages of every queue with a `retry` key by its schedule. A declaration
    /// the broker refuses (406: the entity exists with other properties) or an expected-only
    /// entity that is missing stops the supervisor; a lost connection restarts it.
    #[must_use]
    pub fn topology(mut self, topology: crate::topology::Topology) -> Self {
        for schedule in topology.retry_schedules() {
            self = self.retry(schedule);
        }
        let topology = Arc::new(topology);
        self.setup(move |conn| {
            let topology = topology.clone();
            async move { apply_topology(&topology, &conn).await }
        })
    }

    /// Sets the restart backoff.
    #[must_use]
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// How long in-flight handlers may run on after a shutdown signal (30 s).
    #[must_use]
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// A handle for readiness and statistics, usable while [`run`](Self::run) runs.
    pub fn handle(&self) -> SupervisorHandle {
        SupervisorHandle {
            counters: self.counters.clone(),
            ready: self.ready.subscribe(),
        }
    }

    /// Runs until SIGINT or SIGTERM, then shuts down gracefully.
    pub async fn run(self) -> Result<(), SupervisorError> {
        self.run_until(shutdown_signal()).await
    }

    /// Runs until `shutdown` resolves, then shuts down gracefully.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), SupervisorError> {
        if self.handlers.is_empty() {
            return Err(SupervisorError::NoConsumers);
        }
        let (stop_tx, stop_rx) = watch::channel(false);
        let stop_tx = Arc::new(stop_tx);
        let signal = {
            let stop_tx = stop_tx.clone();
            async move {
                shutdown.await;
                let _ = stop_tx.send(true);
            }
        };
        tokio::pin!(signal);
        let run = self.supervise(stop_rx);
        tokio::pin!(run);
        loop {
            tokio::select! {
                result = &mut run => return result,
                () = &mut signal, if !*stop_tx.borrow() => {}
            }
        }
    }

    async fn supervise(&self, stop: watch::Receiver<bool>) -> Result<(), SupervisorError> {
        let mut attempt: u32 = 0;
        let mut endpoints = self.config.endpoints();
        if self.config.shuffle_hosts {
            shuffle(&mut endpoints);
        }
        // Where the next life of the tree starts in the list of brokers.
        let mut first = 0;
        loop {
            let started = Instant::now();
            let order: Vec<Endpoint> = endpoints[first..]
                .iter()
                .chain(&endpoints[..first])
                .cloned()
                .collect();
            let mut reached = None;
            let mut ready_at = None;
            let outcome = self
                .run_tree(&order, &mut reached, stop.clone(), &mut ready_at)
                .await;
            // Next time, start after the broker that died (or after the first one tried, when
            // none answered).
            first = (first + reached.unwrap_or(0) + 1) % endpoints.len();
            let _ = self.ready.send(false);
            let error = match outcome {
                Ok(()) => {
                    let s = self.counters.snapshot();
                    tracing::info!(?s, "worker stopped");
                    return Ok(());
                }
                Err(e) => e,
            };
            if *stop.borrow() {
                tracing::info!(error = %error, "worker stopped during shutdown");
                return Ok(());
            }
            if is_permanent(&error) {
                tracing::error!(error = %error, "worker stopped: a restart cannot fix this");
                return Err(SupervisorError::Permanent(error));
            }
            // The backoff grows over failures in a row. A tree that was up (every consumer
            // consuming) for a moment, or that ran for a while, starts it over: a close after
            // that is a new incident, not one more failure to get going.
            let was_up = ready_at.is_some_and(|at: Instant| at.elapsed() >= UP_RESETS_BACKOFF);
            if was_up || started.elapsed() > self.backoff.max.max(Duration::from_secs(10)) {
                attempt = 0;
            }
            if let Some(max) = self.backoff.max_restarts
                && attempt >= max
            {
                return Err(SupervisorError::TooManyRestarts {
                    restarts: attempt,
                    last: error,
                });
            }
            let delay = self.backoff.delay(attempt, jitter_unit());
            tracing::warn!(error = %error, ?delay, attempt, "worker tree failed; restarting");
            let mut stop_wait = stop.clone();
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = stopped(&mut stop_wait) => return Ok(()),
            }
            attempt = attempt.saturating_add(1);
            Counters::bump(&self.counters.restarts);
        }
    }

    /// One life of the tree: connect to the first broker of `order` that answers (its index
    /// goes to `reached`), set up, consume until an error or the stop signal. `ready_at` is
    /// set when every consumer is consuming.
    async fn run_tree(
        &self,
        order: &[Endpoint],
        reached: &mut Option<usize>,
        stop: watch::Receiver<bool>,
        ready_at: &mut Option<Instant>,
    ) -> Result<()> {
        let (conn, index) = Connection::open_first(&self.config, order).await?;
        *reached = Some(index);
        tracing::info!(endpoint = %conn.endpoint(), "connected");
        let outcome = run_scope(conn, async |conn| {
            for step in &self.setup {
                step(conn.clone()).await?;
            }
            let publisher = Publisher::new(conn.channel_pool(self.publisher_channels).await?);
            let state = Arc::new(self.state.clone());
            let mut loops = JoinSet::new();
            for handler in &self.handlers {
                let spec = handler.spec();
                let ch = conn.channel().await?;
                if let Some(prefetch) = spec.prefetch {
                    ch.basic_qos(prefetch, false).await?;
                }
                let mut arguments = FieldTable::new();
                if let Some(p) = spec.priority {
                    arguments.insert("x-priority", p);
                }
                let consumer = ch
                    .basic_consume(
                        spec.queue,
                        ConsumeOptions {
                            consumer_tag: spec.consumer_tag.unwrap_or_default().to_owned(),
                            exclusive: spec.exclusive,
                            arguments,
                            ..Default::default()
                        },
                    )
                    .await?;
                let run = ConsumeLoop {
                    schedule: self.schedules.get(spec.queue).cloned(),
                    local_retry: self.local_retry,
                    handler: handler.clone(),
                    channel: ch,
                    consumer,
                    state: state.clone(),
                    publisher: publisher.clone(),
                    counters: self.counters.clone(),
                    shutdown_timeout: self.shutdown_timeout,
                };
                loops.spawn(run.run(stop.clone()));
            }
            *ready_at = Some(Instant::now());
            let _ = self.ready.send(true);
            tracing::info!(consumers = self.handlers.len(), "worker ready");
            // The group ends when every loop has stopped; the first error ends it early.
            while let Some(joined) = loops.join_next().await {
                match joined {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => return Err(e),
                    Err(e) => {
                        return Err(Error::Config(format!("a consume loop failed: {e}")));
                    }
                }
            }
            Ok(())
        })
        .await;
        outcome?
    }
}

/// Applies the topology, turning the first failure into the error that decides between a
/// restart and a stop.
async fn apply_topology(topology: &crate::topology::Topology, conn: &Connection) -> Result<()> {
    use crate::topology::ApplyStatus;
    let report = topology.apply(conn).await;
    for entry in &report.entries {
        match &entry.status {
            ApplyStatus::Failed(f) => {
                tracing::error!(entity = %entry.entity, failure = %f, "topology not applied");
                return Err(f.error.clone());
            }
            ApplyStatus::Missing => {
                return Err(Error::Config(format!(
                    "{} is declared with declare = false but does not exist on the broker",
                    entry.entity
                )));
            }
            _ => {}
        }
    }
    tracing::info!(entities = report.entries.len(), "topology applied");
    Ok(())
}

/// One consumer's loop: takes deliveries while a permit is free and runs each handler in
/// its own task, so a panic is caught as that task's failure.
struct ConsumeLoop {
    schedule: Option<Arc<RetrySchedule>>,
    local_retry: LocalRetry,
    handler: Arc<dyn Handler>,
    channel: Channel,
    consumer: Consumer,
    state: Arc<StateMap>,
    publisher: Publisher,
    counters: Arc<Counters>,
    shutdown_timeout: Duration,
}

impl ConsumeLoop {
    async fn run(self, mut stop: watch::Receiver<bool>) -> Result<()> {
        let ConsumeLoop {
            schedule,
            local_retry,
            handler,
            channel,
            mut consumer,
            state,
            publisher,
            counters,
            shutdown_timeout,
        } = self;
        let spec = handler.spec();
        let permits = Arc::new(Semaphore::new(spec.concurrency.unwrap_or(1).max(1)));
        let mut in_flight: JoinSet<Outcome> = JoinSet::new();
        let after = Settle {
            handler: handler.clone(),
            counters: counters.clone(),
            schedule: schedule.clone(),
            publisher: publisher.clone(),
            queue: spec.queue,
        };
        let mut deliveries: HashMap<tokio::task::Id, Delivery> = HashMap::new();
        let result = loop {
            // A delivery is taken only when a handler slot is free; finished handlers are
            // settled meanwhile, so their acks free the broker's prefetch window.
            let next = async {
                let permit = permits
                    .clone()
                    .acquire_owned()
                    .await
                    .expect("the semaphore is never closed");
                (permit, consumer.next().await)
            };
            let (permit, delivery) = tokio::select! {
                () = stopped(&mut stop) => break Ok(()),
                Some(done) = in_flight.join_next_with_id() => {
                    after.settle(done, &mut deliveries).await;
                    continue;
                }
                (permit, d) = next => match d {
                    Some(Ok(d)) => (permit, d),
                    Some(Err(e)) => break Err(e),
                    None => break Err(Error::Closed("consumer")),
                },
            };
            Counters::bump(&counters.delivered);
            let span = tracing::info_span!(
                "delivery",
                queue = spec.queue,
                consumer = spec.name,
                delivery_tag = delivery.delivery_tag,
                message_id = delivery.properties.message_id.as_deref().unwrap_or(""),
                redelivered = delivery.redelivered,
            );
            let mut ctx = DeliveryContext {
                delivery: delivery.clone(),
                state: state.clone(),
                publisher: publisher.clone(),
                queue: spec.queue,
                schedule: schedule.clone(),
                retried_here: 0,
                first_failure: None,
                last_failure: None,
            };
            let task_handler = handler.clone();
            let handle = in_flight.spawn(
                async move {
                    let outcome = loop {
                        let outcome = task_handler.call(&ctx).await;
                        // Without a schedule, a failure is tried again here, after a pause.
                        let Outcome::Retry { reason } = &outcome else {
                            break outcome;
                        };
                        let done = ctx.retried_here + 1;
                        if ctx.schedule.is_some() || done >= local_retry.attempts {
                            break outcome;
                        }
                        let pause = local_retry.delay_after(done);
                        tracing::info!(attempt = done, %reason, ?pause, "handler failed; trying again in the worker");
                        ctx.first_failure.get_or_insert_with(|| reason.clone());
                        ctx.last_failure = Some(reason.clone());
                        ctx.retried_here = done;
                        tokio::time::sleep(pause).await;
                    };
                    drop(permit);
                    outcome
                }
                .instrument(span),
            );
            deliveries.insert(handle.id(), delivery);
        };
        if result.is_ok() {
            // Graceful: no new deliveries; what was prefetched but not started goes back
            // when the consumer is dropped below.
            let _ = consumer.cancel().await;
        }
        let deadline = tokio::time::Instant::now() + shutdown_timeout;
        while !in_flight.is_empty() {
            match tokio::time::timeout_at(deadline, in_flight.join_next_with_id()).await {
                Ok(Some(done)) => after.settle(done, &mut deliveries).await,
                Ok(None) => break,
                Err(_) => {
                    tracing::warn!(
                        handlers = in_flight.len(),
                        "handlers still running at the shutdown timeout; their messages return to the queue"
                    );
                    in_flight.abort_all();
                    break;
                }
            }
        }
        drop(consumer);
        if result.is_ok() {
            let _ = channel.close().await;
        }
        result
    }
}

/// What a consume loop needs to settle a finished handler's message.
struct Settle {
    handler: Arc<dyn Handler>,
    counters: Arc<Counters>,
    schedule: Option<Arc<RetrySchedule>>,
    publisher: Publisher,
    queue: &'static str,
}

impl Settle {
    /// Carries out a finished handler's outcome for its delivery, on the delivery's own
    /// channel (never another: its delivery tag means nothing elsewhere).
    async fn settle(
        &self,
        done: std::result::Result<(tokio::task::Id, Outcome), tokio::task::JoinError>,
        deliveries: &mut HashMap<tokio::task::Id, Delivery>,
    ) {
        let counters = &self.counters;
        let (id, outcome) = match done {
            Ok((id, outcome)) => (id, outcome),
            Err(e) => {
                if e.is_panic() {
                    Counters::bump(&counters.panicked);
                    tracing::error!(consumer = self.handler.spec().name, "handler panicked");
                }
                (
                    e.id(),
                    self.handler.spec().on_error.outcome("the handler panicked"),
                )
            }
        };
        let Some(delivery) = deliveries.remove(&id) else {
            return;
        };
        if delivery.is_settled() {
            // The handler acknowledged or refused it itself: settling again would be a 406.
            Counters::bump(&counters.settled_by_handler);
            return;
        }
        let (sent, counter) = match outcome {
            Outcome::Ack => (delivery.ack().await, &counters.acked),
            Outcome::Requeue => (delivery.nack(true).await, &counters.requeued),
            Outcome::Reject => (delivery.reject(false).await, &counters.rejected),
            Outcome::Retry { reason } => self.failed(&delivery, &reason, false).await,
            Outcome::Park { reason } => self.failed(&delivery, &reason, true).await,
        };
        match sent {
            Ok(()) => Counters::bump(counter),
            // Its channel died: the broker redelivers the message; never settle it elsewhere.
            Err(_) => Counters::bump(&counters.dropped),
        }
    }

    /// A message whose handler failed for `reason` (or is to be parked now): moved by the
    /// retry schedule and then acknowledged, or, without a schedule, rejected.
    async fn failed(
        &self,
        delivery: &Delivery,
        reason: &str,
        park: bool,
    ) -> (Result<()>, &AtomicU64) {
        let counters = &self.counters;
        let attempt = retry::attempt_of(delivery);
        let Some(schedule) = &self.schedule else {
            tracing::error!(
                queue = self.queue,
                attempt,
                %reason,
                "message rejected: its queue has no retry schedule; its dead-letter exchange takes it, if it has one"
            );
            return (delivery.reject(false).await, &counters.rejected);
        };
        match retry::move_failed(&self.publisher, schedule, delivery, attempt, reason, park).await {
            Ok(moved) => {
                let counter = match &moved {
                    retry::Moved::Retried { queue, delay } => {
                        tracing::info!(queue = self.queue, attempt, %reason, retry_queue = %queue, ?delay, "message to retry later");
                        &counters.retried
                    }
                    retry::Moved::Parked { queue } => {
                        tracing::warn!(queue = self.queue, attempt, %reason, park_queue = %queue, "message parked");
                        &counters.parked
                    }
                };
                (delivery.ack().await, counter)
            }
            Err(e) => {
                // Not moved: it stays the broker's, back in its queue, and nothing is lost.
                tracing::error!(queue = self.queue, attempt, error = %e, "could not move a failed message; requeued");
                (delivery.nack(true).await, &counters.requeued)
            }
        }
    }
}

/// Resolves once the stop flag is set (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Resolves on SIGINT or (on Unix) SIGTERM.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{CertificateProblem, ConnectAttempt, UnexpectedCloseError};

    fn refused() -> Error {
        Error::UnexpectedClose(UnexpectedCloseError {
            scope: crate::CloseScope::Connection,
            reply_code: 403,
            reply_text: "ACCESS_REFUSED".into(),
            class_id: 0,
            method_id: 0,
        })
    }

    fn attempt(error: Error) -> ConnectAttempt {
        ConnectAttempt {
            endpoint: "h:5672".into(),
            error,
        }
    }

    #[test]
    fn a_host_list_is_given_up_only_when_every_broker_refused_for_good() {
        let unreachable = Error::from(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert!(is_permanent(&Error::AllHostsFailed(vec![
            attempt(refused()),
            attempt(refused()),
        ])));
        assert!(!is_permanent(&Error::AllHostsFailed(vec![
            attempt(refused()),
            attempt(unreachable),
        ])));
    }

    #[test]
    fn a_refused_certificate_is_permanent_and_an_alert_is_not() {
        assert!(is_permanent(&Error::Tls(TlsError::InvalidCertificate {
            problem: CertificateProblem::UnknownIssuer,
            detail: "UnknownIssuer".into(),
        })));
        assert!(is_permanent(&Error::Tls(TlsError::NotCompiled)));
        assert!(!is_permanent(&Error::Tls(TlsError::AlertReceived(
            "InternalError".into()
        ))));
    }
}
