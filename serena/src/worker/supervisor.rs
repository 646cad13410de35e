//! The supervisor: one connection, one channel per consumer, every handler in one task group,
//! and a restart of the whole tree when something breaks. The handlers' [`Publisher`] is a
//! [`ReliablePublisher`] on a second connection of its own, which lives as long as the
//! supervisor and reconnects by itself, apart from the tree's restarts.
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
//! What restarting cannot fix stops the supervisor with an error instead of looping: a
//! refused login or virtual host, a refused server certificate, configuration errors, and the
//! broker refusing the topology or a consumer at startup (403, 404, 406). An error of a
//! running tree restarts it with backoff. Errors are judged by the [`Phase`] they happened
//! in: the table is in [`is_permanent`](super::is_permanent)'s docs. A handler that takes
//! `State<T>` is refused before connecting when no `T` was registered
//! ([`SupervisorError::MissingState`]).
//!
//! An exclusive consumer (`exclusive = true`) whose queue another connection's consumer holds
//! stands by: the broker refuses its `basic.consume` with 403 "in exclusive use", and it tries
//! again every 2 to 4 s (logged at INFO when it starts waiting and when it takes over, each
//! try at DEBUG; not counted as a restart), while the other consumers of the tree run. Only that consumer's channel is retried: restarting the tree
//! every few seconds, for as long as a standby waits (for ever, in a hot-standby pair), would
//! cancel the other consumers each time and redeliver their prefetched messages.
//!
//! With several brokers in the configuration (`more_hosts`, a host list in the URI), each
//! restart starts at the broker after the one that failed or died, and goes on round the
//! list from there: a worker survives the loss of one node of a cluster.

use std::borrow::Cow;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tracing::Instrument;

use super::backoff::{Backoff, jitter_unit};
use super::failure::{Phase, TreeError, is_exclusive_use};
use super::handler::{ConsumerSpec, DeliveryContext, Handler, Outcome, Publisher, StateMap};
use super::metrics::{self, ConsumerMetrics, SAMPLE_EVERY, SupervisorMetrics, Tally};
use super::reply;
use super::retry::{self, LocalRetry};
use super::stats::{Counters, Event, Status, SupervisorHandle};
use crate::client::{
    Channel, Connection, ConsumeOptions, Consumer, Delivery, ReliablePublisher,
    ReliablePublisherOptions, StreamOffset, run_scope, shuffle,
};
use crate::config::{ConnectionConfig, Endpoint};
use crate::error::{Error, Result};
use crate::proto::FieldTable;
use crate::topology::{ConnectionSettingsExt, RetrySchedule, TopologyExt};

/// How long a tree must have been up (every consumer consuming or standing by) for its
/// failure to start the restart backoff over.
const UP_RESETS_BACKOFF: Duration = Duration::from_secs(1);

/// How often an exclusive consumer on standby asks for its queue again: this, times 2/3 to
/// 4/3 (2 to 4 s), so standbys of several workers do not ask in step.
const STANDBY_RETRY: Duration = Duration::from_secs(3);

/// A setup step run on every (re)connection before the consumers start, such as applying a
/// topology.
pub type SetupFn =
    Arc<dyn Fn(Connection) -> Pin<Box<dyn Future<Output = Result<()>> + Send>> + Send + Sync>;

/// Why the supervisor stopped instead of restarting.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum SupervisorError {
    /// An error a restart cannot fix, at startup: a refused login or virtual host, a refused
    /// certificate, a declaration or consumer the broker refuses (403, 404, 406), bad
    /// configuration. See [`is_permanent`](super::is_permanent).
    #[error("stopped on an error a restart cannot fix, {0}")]
    Permanent(#[source] TreeError),
    /// More restarts in a row than `Backoff::max_restarts` allows.
    #[error("gave up after {restarts} restarts in a row; last error {last}")]
    TooManyRestarts {
        /// Restarts made.
        restarts: u32,
        /// The error that ended the last run.
        #[source]
        last: TreeError,
    },
    /// The supervisor was given no consumers.
    #[error("the supervisor has no consumers to run")]
    NoConsumers,
    /// A handler takes `State<T>` and no `T` was registered with
    /// [`Supervisor::state`]: every delivery would be rejected. Found before connecting.
    #[error(
        "consumer {handler:?} takes State<{type_name}>, but no {type_name} was registered: \
         add .state(value) to the supervisor"
    )]
    MissingState {
        /// The handler's name.
        handler: Cow<'static, str>,
        /// The missing type.
        type_name: &'static str,
    },
    /// The HTTP endpoint could not start (feature `http`): a bad `SERENA_HTTP_ADDR`, an
    /// address in use, another `metrics` recorder. Found before connecting.
    #[cfg(feature = "http")]
    #[error("the HTTP endpoint could not start: {0}")]
    Http(#[source] super::HttpError),
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
    counters: Arc<Counters>,
    pub(super) status: Arc<watch::Sender<Status>>,
    /// Retry schedules by work queue.
    schedules: HashMap<String, Arc<RetrySchedule>>,
    local_retry: LocalRetry,
    /// Resolved when `run` starts, after the HTTP endpoint installed its recorder.
    metrics: Arc<SupervisorMetrics>,
    #[cfg(feature = "http")]
    pub(super) http: Option<std::net::SocketAddr>,
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
            counters: Arc::new(Counters::default()),
            status: Arc::new(watch::channel(Status::default()).0),
            schedules: HashMap::new(),
            local_retry: LocalRetry::default(),
            metrics: Arc::new(SupervisorMetrics::new(None)),
            #[cfg(feature = "http")]
            http: None,
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
            status: self.status.subscribe(),
        }
    }

    /// Runs until SIGINT or SIGTERM, then shuts down gracefully. Refuses to start without
    /// consumers, or when a handler's state is missing ([`SupervisorError::MissingState`]).
    pub async fn run(self) -> Result<(), SupervisorError> {
        self.run_until(shutdown_signal()).await
    }

    /// Runs until `shutdown` resolves, then shuts down gracefully.
    pub async fn run_until(
        mut self,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), SupervisorError> {
        self.check_before_start()?;
        #[cfg(feature = "http")]
        let http = match self.start_http() {
            Ok(http) => http,
            Err(e) => {
                tracing::error!(error = %e, "worker not started");
                self.status.send_modify(|s| s.stopped(None));
                return Err(e);
            }
        };
        self.metrics = Arc::new(SupervisorMetrics::new(
            self.config.connection_name.as_deref(),
        ));
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
        // The state gauge and the HTTP endpoint run beside the tree, in this future: they end
        // with it.
        let watch_state = self.watch_state();
        tokio::pin!(watch_state);
        #[cfg(feature = "http")]
        let serve = super::http::serve(http, self.handle());
        #[cfg(not(feature = "http"))]
        let serve = std::future::pending::<()>();
        tokio::pin!(serve);
        loop {
            tokio::select! {
                result = &mut run => {
                    // The watcher goes with this future: the last state is set here.
                    self.metrics.state(&self.status.borrow().readiness);
                    return result;
                }
                () = &mut signal, if !*stop_tx.borrow() => {}
                () = &mut watch_state => {}
                () = &mut serve => {}
            }
        }
    }

    /// Sets the state gauge on every change of readiness, until the supervisor returns.
    fn watch_state(&self) -> impl Future<Output = ()> + use<> {
        let (metrics, mut status) = (self.metrics.clone(), self.status.subscribe());
        async move {
            loop {
                metrics.state(&status.borrow_and_update().readiness);
                if status.changed().await.is_err() {
                    return std::future::pending().await;
                }
            }
        }
    }

    /// What can be refused before connecting: no consumers, a handler's missing state.
    fn check_before_start(&self) -> Result<(), SupervisorError> {
        let refused = if self.handlers.is_empty() {
            Some(SupervisorError::NoConsumers)
        } else {
            self.handlers.iter().find_map(|handler| {
                let missing = handler
                    .required_state()
                    .into_iter()
                    .find(|r| !r.is_met_by(&self.state))?;
                Some(SupervisorError::MissingState {
                    handler: handler.spec().name,
                    type_name: missing.type_name(),
                })
            })
        };
        match refused {
            Some(e) => {
                tracing::error!(error = %e, "worker not started");
                self.status.send_modify(|s| s.stopped(None));
                Err(e)
            }
            None => Ok(()),
        }
    }

    async fn supervise(&self, stop: watch::Receiver<bool>) -> Result<(), SupervisorError> {
        // The handlers' publisher: one per supervisor, on its own connection, for the
        // supervisor's whole life (across the tree's restarts).
        let mut config = self.config.clone();
        config.connection_name = config.connection_name.map(|n| format!("{n} (publisher)"));
        let published = ReliablePublisher::scope(
            &config,
            ReliablePublisherOptions::default().with_backoff(self.backoff),
            async |p| {
                let publisher =
                    Publisher::new(p.clone()).metrics_for(self.config.connection_name.as_deref());
                Ok::<_, Error>(self.restart_loop(stop, publisher).await)
            },
        )
        .await;
        // The publisher's scope ends early only on a refused login.
        let result = published.unwrap_or_else(|e| {
            tracing::error!(error = %e, "worker stopped: the publisher's login was refused");
            Err(SupervisorError::Permanent(TreeError::new(
                Phase::Connect,
                e,
            )))
        });
        let error = match &result {
            Err(SupervisorError::Permanent(e))
            | Err(SupervisorError::TooManyRestarts { last: e, .. }) => Some(e.clone()),
            _ => None,
        };
        self.status.send_modify(|s| s.stopped(error));
        result
    }

    async fn restart_loop(
        &self,
        stop: watch::Receiver<bool>,
        publisher: Publisher,
    ) -> Result<(), SupervisorError> {
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
                .run_tree(
                    &order,
                    &publisher,
                    &mut reached,
                    stop.clone(),
                    &mut ready_at,
                )
                .await;
            // Next time, start after the broker that died (or after the first one tried, when
            // none answered).
            first = (first + reached.unwrap_or(0) + 1) % endpoints.len();
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
            if error.is_permanent() {
                tracing::error!(
                    phase = %error.phase,
                    error = %error.error,
                    "worker stopped: a restart cannot fix this"
                );
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
                tracing::error!(
                    phase = %error.phase,
                    error = %error.error,
                    restarts = attempt,
                    "worker stopped: too many restarts in a row"
                );
                return Err(SupervisorError::TooManyRestarts {
                    restarts: attempt,
                    last: error,
                });
            }
            let delay = self.backoff.delay(attempt, jitter_unit());
            if error.phase == Phase::Connect {
                // With one broker, the error does not say which; with several, it lists each.
                tracing::warn!(
                    broker = %order[0],
                    error = %error.error,
                    retry_in = ?delay,
                    attempt,
                    "could not connect; retrying"
                );
            } else {
                tracing::warn!(
                    phase = %error.phase,
                    error = %error.error,
                    retry_in = ?delay,
                    attempt,
                    "worker tree failed; restarting"
                );
            }
            self.status
                .send_modify(|s| s.tree_failed(error, Instant::now() + delay));
            let mut stop_wait = stop.clone();
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = stopped(&mut stop_wait) => return Ok(()),
            }
            attempt = attempt.saturating_add(1);
            Counters::bump(&self.counters.restarts);
            self.metrics.restarted();
        }
    }

    /// One life of the tree: connect to the first broker of `order` that answers (its index
    /// goes to `reached`), set up, consume until an error or the stop signal. `ready_at` is
    /// set when the tree is up: every consumer consuming, or standing by for its exclusive
    /// turn. Errors carry the phase they happened in.
    async fn run_tree(
        &self,
        order: &[Endpoint],
        publisher: &Publisher,
        reached: &mut Option<usize>,
        stop: watch::Receiver<bool>,
        ready_at: &mut Option<Instant>,
    ) -> Result<(), TreeError> {
        let at = |phase| move |error| TreeError::new(phase, error);
        let (conn, index) = Connection::open_first(&self.config, order)
            .await
            .map_err(at(Phase::Connect))?;
        *reached = Some(index);
        self.metrics.connected();
        tracing::info!(endpoint = %conn.endpoint(), "connected");
        // The phase a close of the whole connection happened in: the scope reports it
        // instead of the step that was waiting.
        let mut phase = Phase::Setup;
        let outcome = run_scope(conn, async |conn| {
            for step in &self.setup {
                step(conn.clone()).await.map_err(at(Phase::Setup))?;
            }
            phase = Phase::StartConsumers;
            let state = Arc::new(self.state.clone());
            let mut loops = JoinSet::new();
            let mut names = HashMap::new();
            for handler in &self.handlers {
                let spec = handler.spec();
                let started = match start_consumer(conn, handler.as_ref()).await {
                    Ok(started) => Some(started),
                    Err(e) if spec.exclusive && is_exclusive_use(&e) => {
                        self.status
                            .send_modify(|s| s.standby(spec.name.clone(), true));
                        None
                    }
                    Err(e) => return Err(TreeError::new(Phase::StartConsumers, e)),
                };
                let consume = {
                    let (handler, state, publisher, counters) = (
                        handler.clone(),
                        state.clone(),
                        publisher.clone(),
                        self.counters.clone(),
                    );
                    let shutdown_timeout = self.shutdown_timeout;
                    let schedule = self.schedules.get(&*spec.queue).cloned();
                    let local_retry = self.local_retry;
                    move |channel, consumer| ConsumeLoop {
                        schedule,
                        local_retry,
                        handler,
                        channel,
                        consumer,
                        state,
                        publisher,
                        counters,
                        shutdown_timeout,
                    }
                };
                let task = consume_or_stand_by(
                    conn.clone(),
                    handler.clone(),
                    started,
                    consume,
                    stop.clone(),
                    self.status.clone(),
                );
                names.insert(loops.spawn(task).id(), spec.name);
            }
            phase = Phase::Running;
            *ready_at = Some(Instant::now());
            self.status.send_modify(Status::tree_up);
            tracing::info!(consumers = self.handlers.len(), "worker ready");
            // The group ends when every loop has stopped; the first error ends it early.
            let group = async {
                while let Some(joined) = loops.join_next_with_id().await {
                    let failed = match joined {
                        Ok((_, Ok(()))) => continue,
                        Ok((_, Err(e))) => e,
                        Err(e) => task_failed(&names, e),
                    };
                    return Err(TreeError::new(Phase::Running, failed));
                }
                Ok(())
            };
            // The connection's traffic is sampled for the metrics while the group runs.
            tokio::select! {
                result = group => result,
                () = self.metrics.sample_connection(conn, SAMPLE_EVERY) => Ok(()),
            }
        })
        .await;
        outcome.map_err(|e| TreeError::new(phase, e))?
    }
}

/// A consume loop's task that ended without returning, as an error naming its consumer.
fn task_failed(
    names: &HashMap<tokio::task::Id, Cow<'static, str>>,
    e: tokio::task::JoinError,
) -> Error {
    let task = format!(
        "the consume loop of consumer {:?}",
        names.get(&e.id()).map_or("?", |name| &**name)
    );
    if !e.is_panic() {
        return Error::TaskFailed {
            task,
            panicked: false,
            message: None,
        };
    }
    let payload = e.into_panic();
    let message = payload
        .downcast_ref::<&str>()
        .map(|m| (*m).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned());
    Error::TaskFailed {
        task,
        panicked: true,
        message,
    }
}

/// Opens `handler`'s channel, sets its QoS and starts its consumer.
async fn start_consumer(conn: &Connection, handler: &dyn Handler) -> Result<(Channel, Consumer)> {
    let spec = handler.spec();
    if let Some(offset) = &spec.stream_offset {
        stream_consumer_config(&spec, offset)?;
    }
    let ch = conn.channel().await?;
    if let Some(prefetch) = spec.prefetch {
        ch.basic_qos(prefetch, false).await?;
    }
    let mut arguments = FieldTable::new();
    if let Some(p) = spec.priority {
        arguments.insert("x-priority", p);
    }
    if let Some(offset) = &spec.stream_offset {
        arguments.insert(StreamOffset::ARGUMENT, offset.to_field_value());
    }
    let consumer = ch
        .basic_consume(
            &spec.queue,
            ConsumeOptions {
                consumer_tag: spec.consumer_tag.as_deref().unwrap_or_default().to_owned(),
                exclusive: spec.exclusive,
                arguments,
                ..Default::default()
            },
        )
        .await?;
    Ok((ch, consumer))
}

/// Refuses what RabbitMQ would refuse of a stream consumer, before anything is sent: a prefetch
/// of 0 (no limit; the channel's default prefetch is never 0) and an interval that does not
/// read.
fn stream_consumer_config(spec: &ConsumerSpec, offset: &StreamOffset) -> Result<()> {
    if spec.prefetch == Some(0) {
        return Err(Error::Config(format!(
            "consumer {:?} reads a stream ({offset}) with prefetch 0: RabbitMQ needs a \
             prefetch limit for stream consumers; set one above 0 or leave it to the default",
            spec.name
        )));
    }
    if !offset.is_valid() {
        return Err(Error::Config(format!(
            "consumer {:?}: stream offset {offset:?} is not an interval RabbitMQ reads: digits \
             and one of Y, M, D, h, m, s, e.g. \"1h\"",
            spec.name
        )));
    }
    Ok(())
}

/// One consumer's task: its consume loop, after standing by for its turn when it started
/// without (`started` is `None`: the queue was in exclusive use).
async fn consume_or_stand_by(
    conn: Connection,
    handler: Arc<dyn Handler>,
    started: Option<(Channel, Consumer)>,
    consume: impl FnOnce(Channel, Consumer) -> ConsumeLoop,
    stop: watch::Receiver<bool>,
    status: Arc<watch::Sender<Status>>,
) -> Result<()> {
    let (channel, consumer) = match started {
        Some(started) => started,
        None => {
            let took_over = stand_by(&conn, handler.as_ref(), stop.clone()).await;
            status.send_modify(|s| s.standby(handler.spec().name, false));
            match took_over? {
                Some(started) => started,
                // Stopped while waiting.
                None => return Ok(()),
            }
        }
    };
    consume(channel, consumer).run(stop).await
}

/// Waits for an exclusive consumer's turn: asks for the queue again every 2 to 4 s until the
/// broker grants it (`Some`) or the stop signal (`None`). Each try is a new channel, since the
/// refusal closed the last one. Not a restart: no backoff growth, not counted.
async fn stand_by(
    conn: &Connection,
    handler: &dyn Handler,
    mut stop: watch::Receiver<bool>,
) -> Result<Option<(Channel, Consumer)>> {
    let spec = handler.spec();
    tracing::info!(
        consumer = &*spec.name,
        queue = &*spec.queue,
        "queue in exclusive use by another consumer; standing by"
    );
    let mut tries: u64 = 0;
    loop {
        let delay = STANDBY_RETRY.mul_f64(2.0 / 3.0 + 2.0 / 3.0 * jitter_unit());
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = stopped(&mut stop) => return Ok(None),
        }
        tries += 1;
        match start_consumer(conn, handler).await {
            Ok(started) => {
                tracing::info!(
                    consumer = &*spec.name,
                    queue = &*spec.queue,
                    tries,
                    "took over the queue from the other consumer"
                );
                return Ok(Some(started));
            }
            Err(e) if is_exclusive_use(&e) => {
                tracing::debug!(
                    consumer = &*spec.name,
                    tries,
                    "queue still in exclusive use"
                );
            }
            Err(e) => return Err(e),
        }
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
                return Err(Error::MissingEntity(Box::new(entry.entity.clone())));
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
        let queue: Arc<str> = Arc::from(&*spec.queue);
        let mut in_flight: JoinSet<Outcome> = JoinSet::new();
        let tally = Tally {
            counters,
            metrics: ConsumerMetrics::new(&spec.queue),
        };
        let after = Settle {
            handler: handler.clone(),
            tally: tally.clone(),
            schedule: schedule.clone(),
            publisher: publisher.clone(),
            queue: queue.clone(),
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
            tally.count(Event::Delivered);
            let span = tracing::info_span!(
                "delivery",
                queue = &*spec.queue,
                consumer = &*spec.name,
                delivery_tag = delivery.delivery_tag,
                message_id = delivery.properties.message_id.as_deref().unwrap_or(""),
                redelivered = delivery.redelivered,
            );
            // The span continues the trace the message carries (feature `otel`).
            #[cfg(feature = "otel")]
            crate::otel::continue_trace(&span, &delivery.properties);
            let mut ctx = DeliveryContext {
                delivery: delivery.clone(),
                state: state.clone(),
                publisher: publisher.clone(),
                queue: queue.clone(),
                schedule: schedule.clone(),
                retried_here: 0,
                first_failure: None,
                last_failure: None,
            };
            let task_handler = handler.clone();
            let meter = tally.metrics.clone();
            let meter_replied = tally.clone();
            let handle = in_flight.spawn(
                async move {
                    let _in_flight = meter.handler_started();
                    let outcome = loop {
                        let began = metrics::now();
                        let outcome = task_handler.call(&ctx).await;
                        let failed = matches!(outcome, Outcome::Retry { .. } | Outcome::Park { .. });
                        meter.handler_called(began, failed);
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
                    // A reply is sent (and confirmed) here, in the handler's task, so replies
                    // of concurrent handlers go out in parallel; the request is acknowledged
                    // after it, by the loop.
                    let outcome = match outcome {
                        Outcome::Reply { body } => {
                            let answered = reply::answer(&ctx.publisher, &ctx.delivery, body).await;
                            if let reply::Answered::Sent = answered {
                                meter_replied.count(Event::Replied);
                            }
                            answered.outcome()
                        }
                        other => other,
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
    tally: Tally,
    schedule: Option<Arc<RetrySchedule>>,
    publisher: Publisher,
    queue: Arc<str>,
}

impl Settle {
    /// Carries out a finished handler's outcome for its delivery, on the delivery's own
    /// channel (never another: its delivery tag means nothing elsewhere).
    async fn settle(
        &self,
        done: std::result::Result<(tokio::task::Id, Outcome), tokio::task::JoinError>,
        deliveries: &mut HashMap<tokio::task::Id, Delivery>,
    ) {
        let tally = &self.tally;
        let (id, outcome) = match done {
            Ok((id, outcome)) => (id, outcome),
            Err(e) => {
                if e.is_panic() {
                    tally.count(Event::Panicked);
                    tracing::error!(consumer = &*self.handler.spec().name, "handler panicked");
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
            tally.count(Event::SettledByHandler);
            return;
        }
        let (sent, event) = match outcome {
            Outcome::Ack => (delivery.ack(), Event::Acked),
            Outcome::Requeue => (delivery.nack(true), Event::Requeued),
            Outcome::Reject => (delivery.reject(false), Event::Rejected),
            Outcome::Retry { reason } => self.failed(&delivery, &reason, false).await,
            Outcome::Park { reason } => self.failed(&delivery, &reason, true).await,
            // The consume loop's tasks send their reply before they finish; an outcome that
            // arrives here unsent is sent the same way.
            Outcome::Reply { body } => {
                let answered = reply::answer(&self.publisher, &delivery, body).await;
                if let reply::Answered::Sent = answered {
                    tally.count(Event::Replied);
                }
                match answered.outcome() {
                    Outcome::Ack => (delivery.ack(), Event::Acked),
                    _ => (delivery.nack(true), Event::Requeued),
                }
            }
        };
        match sent {
            Ok(()) => tally.count(event),
            // Its channel died: the broker redelivers the message; never settle it elsewhere.
            Err(_) => tally.count(Event::Dropped),
        }
    }

    /// A message whose handler failed for `reason` (or is to be parked now): moved by the
    /// retry schedule and then acknowledged, or, without a schedule, rejected.
    async fn failed(&self, delivery: &Delivery, reason: &str, park: bool) -> (Result<()>, Event) {
        let attempt = retry::attempt_of(delivery);
        let Some(schedule) = &self.schedule else {
            tracing::error!(
                queue = &*self.queue,
                attempt,
                %reason,
                "message rejected: its queue has no retry schedule; its dead-letter exchange takes it, if it has one"
            );
            return (delivery.reject(false), Event::Rejected);
        };
        match retry::move_failed(&self.publisher, schedule, delivery, attempt, reason, park).await {
            Ok(moved) => {
                let event = match &moved {
                    retry::Moved::Retried { queue, delay } => {
                        tracing::info!(queue = &*self.queue, attempt, %reason, retry_queue = %queue, ?delay, "message to retry later");
                        Event::Retried
                    }
                    retry::Moved::Parked { queue } => {
                        tracing::warn!(queue = &*self.queue, attempt, %reason, park_queue = %queue, "message parked");
                        Event::Parked
                    }
                };
                (delivery.ack(), event)
            }
            Err(e) => {
                // Not moved: it stays the broker's, back in its queue, and nothing is lost.
                tracing::error!(queue = &*self.queue, attempt, error = %e, "could not move a failed message; requeued");
                (delivery.nack(true), Event::Requeued)
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
