//! A no-loss soak: confirmed publishers and supervised workers run against the local RabbitMQ
//! while faults hit them at random moments; at the end every confirmed message must have been
//! consumed.
//!
//! ```text
//! cargo run --release -p serena-soak -- --seconds 100 [--seed S] [--publishers 3]
//!                                        [--workers 2] [--rate 1000]
//! ```
//!
//! ```text
//!  publishers: one connection each             workers: one Supervisor (one connection) each
//!  body = (publisher, seq) + check bytes  ──►  2 durable queues  ──►  Recorder handler: books
//!  persistent, confirmed, 128 in flight;      (unique per run,       the id (a repeat is a
//!  a ReliablePublisher: reconnects and        x-expires 10 min)      duplicate); acked after
//!  republishes every unconfirmed id itself           ▲
//!            ▲                                       │
//!            └─────────── faults (seeded RNG) ───────┘
//!   rabbitmqctl close_connection of a publisher or a worker; stop_app + start_app (once, or
//!   twice from 80 s on); the memory alarm (watermark 0 for 1-2 s, then the value read first)
//! ```
//!
//! The run publishes for `--seconds` (the broker must take the rate: 3,000 persistent
//! messages/s by default), then stops the faults and the publishers (which first get every
//! id they owe confirmed), waits up to 30 s until every confirmed id has been consumed, shuts
//! the workers down, deletes its queues and prints as its last line
//!
//! ```text
//! soak: published P, confirmed C, consumed U, lost L, duplicates D, faults F, rss_growth_kb R
//! ```
//!
//! P counts publishes handed to a connection (republishes included), C distinct confirmed ids,
//! U distinct consumed ids, L confirmed ids never consumed, D deliveries of an id already
//! consumed, F faults injected, R the process's `VmRSS` at the end of the drain minus its
//! `VmRSS` after a warm-up of a tenth of the run, in KiB. Progress goes to stderr before it.
//!
//! It exits with 1 when a confirmed message was lost, when R is over [`RSS_MARGIN_KB`], when
//! the broker could not be put back as the soak found it (app running, memory watermark as read
//! at the start), when a publisher hung, when a fault's victim was not back at work in time
//! (5 s after a closed connection or an alarm, 30 s after stop_app), when a delivery was
//! damaged or when a task failed; with 130 when it was interrupted.
//! A first Ctrl-C or SIGTERM ends the run early (the fault under way finishes and restores the
//! broker) and still reports; a second one restores the broker and exits at once.
//!
//! The RSS margin is 8 MiB. What the soak itself keeps grows by two bits per id (about 70 KiB
//! for a 100 s run); everything else is bounded by configuration: 128 publishes in flight per
//! publisher, a prefetch of 50 per consumer, the connections' buffers. Measured on the
//! development machine: 0.4 to 1.1 MiB in 100 s runs, 1.0 MiB in a 300 s run with 90 faults
//! (flat between faults, a few tens of KiB at some of them, levelling off), 0.3 MiB in 120 s
//! without faults; 3,000 connections opened and closed, or 2,000 supervisor restarts, grow
//! it by under 1 MiB. The rest of the margin is room for the allocator (a new thread of the
//! blocking pool, which runs `rabbitmqctl`, may get its own arena). A leak of 32 bytes per
//! message, at the default 3,000 messages/s for the 90 s after the warm-up of a 100 s run,
//! would cross it.

use std::collections::VecDeque;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serena::worker::{Supervisor, SupervisorError, SupervisorHandle, shutdown_signal};
use serena::{Connection, ConnectionConfig, Error, open_connection};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::{sleep, timeout};

mod broker;
mod faults;
mod ledger;
mod publisher;

use broker::{BrokerGuard, Ctl, RestoreOnDrop, blocking, watermark_is_zero};
use faults::{FaultReport, Faults, Rng};
use ledger::{Ledger, Recorder};
use publisher::{PublisherTask, declare_queues};

/// Largest allowed growth of `VmRSS` after the warm-up, in KiB (see the docs above).
const RSS_MARGIN_KB: i64 = 8 * 1024;
/// Queues the publishers spread their messages over.
const QUEUES: usize = 2;
/// How long the end of the run waits for the publishers to finish and for every confirmed
/// id to be consumed.
const DRAIN_LIMIT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
struct Options {
    seconds: u64,
    seed: u64,
    publishers: u32,
    workers: u32,
    /// Messages per second per publisher.
    rate: u32,
}

fn parse_args() -> Result<Options, String> {
    let mut opts = Options {
        seconds: 60,
        seed: fresh_seed(),
        publishers: 3,
        workers: 2,
        rate: 1000,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut number = || -> Result<u64, String> {
            args.next()
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| format!("{flag} takes a number"))
        };
        match flag.as_str() {
            "--seconds" => opts.seconds = number()?,
            "--seed" => opts.seed = number()?,
            "--publishers" => opts.publishers = number()?.try_into().map_err(|_| "too many")?,
            "--workers" => opts.workers = number()?.try_into().map_err(|_| "too many")?,
            "--rate" => opts.rate = number()?.try_into().map_err(|_| "too high")?,
            _ => {
                return Err(format!(
                    "unknown argument {flag:?}; usage: soak --seconds N [--seed S] \
                     [--publishers N] [--workers N] [--rate MESSAGES_PER_S_PER_PUBLISHER]"
                ));
            }
        }
    }
    if opts.seconds < 10 || opts.publishers == 0 || opts.workers == 0 || opts.rate == 0 {
        return Err(
            "--seconds must be at least 10; publishers, workers and rate at least 1".into(),
        );
    }
    Ok(opts)
}

fn fresh_seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    Rng(nanos ^ (u64::from(std::process::id()) << 32)).next_u64() % 1_000_000_000
}

fn rss_kb() -> Option<i64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// What the run measured, for the last line and the verdict.
#[derive(Debug, Default)]
struct Summary {
    published: u64,
    confirmed: u64,
    consumed: u64,
    lost: u64,
    duplicates: u64,
    faults: u64,
    rss_growth_kb: i64,
    failures: Vec<String>,
    interrupted: bool,
}

impl Summary {
    /// A run that could not start.
    fn failed(why: String) -> Self {
        Summary {
            failures: vec![why],
            ..Default::default()
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    // Log to stderr, filtered by RUST_LOG (without it: errors only: the faults it injects make warnings expected).
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::builder()
                .with_default_directive(tracing_subscriber::filter::LevelFilter::ERROR.into())
                .from_env_lossy(),
        )
        .with_writer(std::io::stderr)
        .init();
    let opts = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("soak: {e}");
            return ExitCode::from(2);
        }
    };
    // The broker must be as a healthy run expects it: rabbitmqctl answers, no memory alarm.
    let ctl = Ctl::new();
    let watermark = match blocking({
        let ctl = ctl.clone();
        move || ctl.watermark()
    })
    .await
    {
        Ok(w) if !watermark_is_zero(&w) => w,
        Ok(w) => {
            return verdict(Summary::failed(format!(
                "the memory watermark is {w} already; restore it first \
                 (rabbitmqctl set_vm_memory_high_watermark 0.4)"
            )));
        }
        Err(e) => return verdict(Summary::failed(format!("rabbitmqctl does not answer: {e}"))),
    };
    let guard = Arc::new(BrokerGuard::new(ctl, watermark));
    let restore_on_drop = RestoreOnDrop(guard.clone());

    // The first signal ends the run early; a second one restores the broker and exits.
    let (interrupt_tx, interrupt) = watch::channel(false);
    let signals = tokio::spawn({
        let guard = guard.clone();
        async move {
            shutdown_signal().await;
            eprintln!("soak: interrupted; ending the run (once more to exit at once)");
            let _ = interrupt_tx.send(true);
            shutdown_signal().await;
            eprintln!("soak: interrupted again; restoring the broker and exiting");
            if let Err(e) = blocking(move || guard.restore()).await {
                eprintln!("soak: COULD NOT RESTORE THE BROKER: {e}");
            }
            std::process::exit(130);
        }
    });

    let mut summary = soak(&opts, &guard, interrupt).await;
    signals.abort();
    // Normally a no-op: each fault restores what it disturbed.
    if let Err(e) = blocking({
        let guard = guard.clone();
        move || guard.restore()
    })
    .await
    {
        summary
            .failures
            .push(format!("the broker could not be restored: {e}"));
    }
    drop(restore_on_drop);
    let ctl = guard.ctl.clone();
    match blocking(move || ctl.watermark()).await {
        Ok(w) if w == guard.watermark() => {}
        other => summary.failures.push(format!(
            "the memory watermark is {other:?} at the end, {} at the start",
            guard.watermark()
        )),
    }
    verdict(summary)
}

/// Prints the failures and the last line; the exit status.
fn verdict(mut summary: Summary) -> ExitCode {
    if summary.lost > 0 {
        summary.failures.push(format!(
            "{} confirmed messages were never consumed",
            summary.lost
        ));
    }
    if summary.rss_growth_kb > RSS_MARGIN_KB {
        summary.failures.push(format!(
            "RSS grew by {} KiB after the warm-up, over the {RSS_MARGIN_KB} KiB margin",
            summary.rss_growth_kb
        ));
    }
    for f in &summary.failures {
        eprintln!("soak: FAILED: {f}");
    }
    if summary.interrupted {
        eprintln!("soak: interrupted before the planned end");
    }
    println!(
        "soak: published {}, confirmed {}, consumed {}, lost {}, duplicates {}, faults {}, rss_growth_kb {}",
        summary.published,
        summary.confirmed,
        summary.consumed,
        summary.lost,
        summary.duplicates,
        summary.faults,
        summary.rss_growth_kb
    );
    if !summary.failures.is_empty() {
        ExitCode::FAILURE
    } else if summary.interrupted {
        ExitCode::from(130)
    } else {
        ExitCode::SUCCESS
    }
}

/// The running parts of a soak.
struct Run {
    started: Instant,
    ledger: Arc<Ledger>,
    workers: Vec<(String, SupervisorHandle)>,
}

impl Run {
    fn progress(&self, phase: &str) {
        let b = self.ledger.books();
        let restarts: u64 = self.workers.iter().map(|(_, h)| h.stats().restarts).sum();
        eprintln!(
            "[{:5.1} s] {phase}: published {}, confirmed {}, consumed {}, outstanding {}, \
             duplicates {}, publisher reconnects {}, worker restarts {restarts}, rss {} kB",
            self.started.elapsed().as_secs_f64(),
            self.ledger.published.load(Ordering::Relaxed),
            b.confirmed_count,
            b.consumed_count,
            b.outstanding,
            b.duplicates,
            self.ledger.reconnects.load(Ordering::Relaxed),
            rss_kb().unwrap_or(0),
        );
    }
}

/// Runs the soak; whatever goes wrong ends up in the summary's `failures`.
async fn soak(
    opts: &Options,
    guard: &Arc<BrokerGuard>,
    mut interrupt: watch::Receiver<bool>,
) -> Summary {
    let mut summary = Summary::default();
    let url = std::env::var("SERENA_URL").unwrap_or_else(|_| serena::topology::DEFAULT_URL.into());
    let config = match ConnectionConfig::from_uri(&url) {
        Ok(c) => c,
        Err(e) => {
            summary.failures.push(format!("SERENA_URL {url:?}: {e}"));
            return summary;
        }
    };
    let run_id = format!("{}-{}", std::process::id(), opts.seed);
    eprintln!(
        "soak: seed {} (repeat with --seed {}), {} s, {} publishers at {} msg/s each, \
         {} workers, {QUEUES} queues, run {run_id}",
        opts.seed, opts.seed, opts.seconds, opts.publishers, opts.rate, opts.workers
    );
    let queues: Arc<Vec<String>> = Arc::new(
        (0..QUEUES)
            .map(|i| format!("serena-soak-{run_id}-q{i}"))
            .collect(),
    );
    let declared = open_connection(&config, async |conn| declare_queues(conn, &queues).await).await;
    if let Err(e) = declared {
        summary.failures.push(format!("declaring the queues: {e}"));
        return summary;
    }

    let ledger = Arc::new(Ledger::new(opts.publishers));
    let (stop_tx, stop) = watch::channel(false);
    let (stop_workers_tx, stop_workers) = watch::channel(false);
    let (mut workers, worker_targets) =
        start_workers(opts, &config, &run_id, &queues, &ledger, stop_workers);
    for (name, handle) in &worker_targets {
        let mut handle = handle.clone();
        if timeout(Duration::from_secs(30), handle.ready())
            .await
            .is_err()
        {
            summary
                .failures
                .push(format!("{name} was not ready within 30 s"));
        }
    }
    let run = Run {
        started: Instant::now(),
        ledger: ledger.clone(),
        workers: worker_targets.clone(),
    };

    let mut publishers = JoinSet::new();
    let mut publisher_targets = Vec::new();
    for p in 0..opts.publishers {
        let name = format!("serena-soak-{run_id}-pub-{p}");
        let mut cfg = config.clone();
        cfg.connection_name = Some(name.clone());
        let (connected, connected_rx) = watch::channel(0);
        publisher_targets.push((name, connected_rx));
        let task = PublisherTask {
            index: p,
            config: cfg,
            queues: queues.clone(),
            ledger: ledger.clone(),
            rate: opts.rate,
            stop: stop.clone(),
            connected,
        };
        publishers.spawn(task.run());
    }

    // Faults from 3 s until 2 s before the end.
    let run_for = Duration::from_secs(opts.seconds);
    let mut rng = Rng(opts.seed);
    let window = (Duration::from_secs(3), run_for - Duration::from_secs(2));
    let stop_app_at = plan_stop_apps(&mut rng, window, if opts.seconds >= 80 { 2 } else { 1 });
    let faults = Faults {
        guard: guard.clone(),
        ledger: ledger.clone(),
        publishers: publisher_targets,
        workers: worker_targets,
        rng,
        started: run.started,
        window,
        stop_app_at,
    };
    let mut fault_task = JoinSet::new();
    fault_task.spawn(faults.run(stop.clone()));

    // Publish until the end or an interrupt; progress every 5 s; the RSS baseline after the
    // warm-up. A fault injector that fails (or panics) ends the run early.
    let warm_up = run_for / 10;
    let mut rss_base = None;
    let mut next_progress = Duration::from_secs(5);
    let mut report = None;
    while run.started.elapsed() < run_for {
        let now = run.started.elapsed();
        if rss_base.is_none() && now >= warm_up {
            rss_base = rss_kb();
            eprintln!("  rss after the warm-up: {} kB", rss_base.unwrap_or(0));
        }
        if now >= next_progress {
            run.progress("publishing");
            next_progress += Duration::from_secs(5);
        }
        if *interrupt.borrow() {
            summary.interrupted = true;
            break;
        }
        if report
            .as_ref()
            .is_some_and(|r: &FaultReport| r.error.is_some())
        {
            break;
        }
        tokio::select! {
            () = sleep(Duration::from_millis(100)) => {}
            _ = interrupt.changed() => {}
            Some(done) = fault_task.join_next(), if report.is_none() => {
                report = Some(fault_report(done));
            }
        }
    }

    // Stop the faults (the one under way finishes and restores the broker), then the
    // publishers.
    let _ = stop_tx.send(true);
    let report = match report {
        Some(r) => r,
        None => fault_task
            .join_next()
            .await
            .map(fault_report)
            .unwrap_or_default(),
    };
    if let Some(e) = &report.error {
        summary.failures.push(format!("fault injection: {e}"));
    }
    if report.unrecovered > 0 {
        summary.failures.push(format!(
            "{} faults' victims were not back at work in time",
            report.unrecovered
        ));
    }
    let restore = guard.clone();
    if let Err(e) = blocking(move || restore.restore()).await {
        summary
            .failures
            .push(format!("the broker could not be restored: {e}"));
    }

    // Drain: the publishers get their last ids confirmed; every confirmed id must be consumed.
    let drain_started = Instant::now();
    let mut last_progress = Instant::now();
    loop {
        while let Some(done) = publishers.try_join_next() {
            match done {
                Ok(Ok(())) => {}
                Ok(Err(e)) => summary.failures.push(format!("a publisher ended: {e}")),
                Err(e) => summary.failures.push(format!("a publisher failed: {e}")),
            }
        }
        if publishers.is_empty() && ledger.outstanding() == 0 {
            break;
        }
        if drain_started.elapsed() >= DRAIN_LIMIT {
            if !publishers.is_empty() {
                summary.failures.push(format!(
                    "{} publishers still had unconfirmed messages {DRAIN_LIMIT:?} after the end",
                    publishers.len()
                ));
            }
            break;
        }
        if last_progress.elapsed() >= Duration::from_secs(5) {
            run.progress("draining");
            last_progress = Instant::now();
        }
        sleep(Duration::from_millis(20)).await;
    }
    let drained_in = drain_started.elapsed();
    let rss_end = rss_kb();
    run.progress("drained");
    publishers.abort_all();

    // Shut the workers down, then delete the queues.
    let _ = stop_workers_tx.send(true);
    while let Ok(Some(done)) = timeout(Duration::from_secs(60), workers.join_next()).await {
        match done {
            Ok(Ok(())) => {}
            Ok(Err(e)) => summary.failures.push(format!("a worker stopped: {e}")),
            Err(e) => summary.failures.push(format!("a worker task failed: {e}")),
        }
    }
    if !workers.is_empty() {
        summary
            .failures
            .push("a worker did not shut down within 60 s".into());
        workers.abort_all();
    }
    let deleted = open_connection(&config, async |conn| {
        conn.open_channel(async |ch| {
            let mut left = 0;
            for q in queues.iter() {
                left += ch.queue_delete(q, false, false).await?;
            }
            Ok::<_, Error>(left)
        })
        .await
    })
    .await;
    match deleted {
        Ok(left) => eprintln!("  queues deleted; {left} messages were left in them"),
        Err(e) => summary.failures.push(format!("deleting the queues: {e}")),
    }

    print_figures(&run, &report, drained_in);
    let b = ledger.books();
    if b.malformed > 0 {
        summary
            .failures
            .push(format!("{} deliveries were not intact", b.malformed));
    }
    summary.published = ledger.published.load(Ordering::Relaxed);
    summary.confirmed = b.confirmed_count;
    summary.consumed = b.consumed_count;
    summary.lost = b.outstanding;
    summary.duplicates = b.duplicates;
    summary.faults = report.injected;
    summary.rss_growth_kb = match (rss_base, rss_end) {
        (Some(base), Some(end)) => end - base,
        _ => 0,
    };
    summary
}

/// The fault injector's report, or its failure as one.
fn fault_report(joined: Result<FaultReport, tokio::task::JoinError>) -> FaultReport {
    joined.unwrap_or_else(|e| FaultReport {
        error: Some(format!("the fault task failed: {e}")),
        ..Default::default()
    })
}

/// The workers' supervisors, running.
type WorkerTasks = JoinSet<Result<(), SupervisorError>>;

/// Starts one supervisor per worker, each on its own named connection, consuming every
/// queue with a [`Recorder`]; they run until `stop` is set.
fn start_workers(
    opts: &Options,
    config: &ConnectionConfig,
    run_id: &str,
    queues: &Arc<Vec<String>>,
    ledger: &Arc<Ledger>,
    stop: watch::Receiver<bool>,
) -> (WorkerTasks, Vec<(String, SupervisorHandle)>) {
    let mut tasks = JoinSet::new();
    let mut targets = Vec::new();
    for w in 0..opts.workers {
        let name = format!("serena-soak-{run_id}-worker-{w}");
        let mut cfg = config.clone();
        cfg.connection_name = Some(name.clone());
        let mut supervisor = Supervisor::new(cfg)
            .shutdown_timeout(Duration::from_secs(5))
            .setup({
                let queues = queues.clone();
                move |conn: Connection| {
                    let queues = queues.clone();
                    async move { declare_queues(&conn, &queues).await }
                }
            });
        for q in queues.iter() {
            // A consumer names its queue with a &'static str: leaked once per run.
            supervisor = supervisor.consumer(Recorder {
                name: Box::leak(format!("record-{w}-{q}").into_boxed_str()),
                queue: Box::leak(q.clone().into_boxed_str()),
                publishers: opts.publishers,
                ledger: ledger.clone(),
            });
        }
        targets.push((name, supervisor.handle()));
        let mut stop = stop.clone();
        tasks.spawn(supervisor.run_until(async move {
            let _ = stop.wait_for(|s| *s).await;
        }));
    }
    (tasks, targets)
}

/// Picks `count` moments for stop_app, one in each equal part of the middle 80 % of the
/// fault window.
fn plan_stop_apps(rng: &mut Rng, window: (Duration, Duration), count: u32) -> VecDeque<Duration> {
    let span = window.1 - window.0;
    let part = span.mul_f64(0.8) / count;
    (0..count)
        .map(|k| {
            window.0 + span.mul_f64(0.1) + part * k + part.mul_f64(rng.below(1000) as f64 / 1000.0)
        })
        .collect()
}

/// Recovery times per kind of fault, and the workers' counters.
fn print_figures(run: &Run, report: &FaultReport, drained_in: Duration) {
    for kind in ["publisher", "worker", "alarm", "stop_app"] {
        let mut ms: Vec<f64> = report
            .recoveries
            .iter()
            .filter(|(k, _)| *k == kind)
            .map(|(_, ms)| *ms)
            .collect();
        ms.sort_by(f64::total_cmp);
        if let (Some(lo), Some(hi)) = (ms.first(), ms.last()) {
            eprintln!(
                "  {kind} faults: {}, back at work after {lo:.0} to {hi:.0} ms (median {:.0})",
                ms.len(),
                ms[ms.len() / 2]
            );
        }
    }
    eprintln!(
        "  drained in {:.1} s; nacked or returned {}, faults skipped {}",
        drained_in.as_secs_f64(),
        run.ledger.nacked.load(Ordering::Relaxed),
        report.skipped
    );
    for (i, (_, h)) in run.workers.iter().enumerate() {
        let s = h.stats();
        eprintln!(
            "  worker {i}: delivered {}, acked {}, requeued {}, rejected {}, restarts {}, \
             dropped {}",
            s.delivered, s.acked, s.requeued, s.rejected, s.restarts, s.dropped
        );
    }
}
