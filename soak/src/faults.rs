//! Faults at random moments (a seeded RNG picks each fault, its victim and the gaps), one at
//! a time, each followed by a check that its victim is back at work:
//!
//! ```text
//!   close a publisher's connection   35 %   back: the publisher is connected again
//!   close a worker's connection      35 %   back: its supervisor restarted and is ready
//!   memory alarm for 1-2 s           15 %   back: confirms flow again after the restore
//!   memory alarm, and a publisher's  15 %   back: that publisher connected again while
//!   connection closed while blocked           blocked, confirms flow after the restore
//!   stop_app, 0.5-1.5 s, start_app   at 1 or 2 planned moments
//!                                           back: every publisher and worker reconnected
//! ```

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serena::worker::SupervisorHandle;
use tokio::sync::watch;
use tokio::time::{sleep, timeout};

use crate::broker::{BrokerGuard, blocking};
use crate::ledger::Ledger;

/// How long a fault's victim may take to be back at work after a closed connection or a
/// memory alarm: a reconnect takes some 100 ms (the first backoff step) and a lifted alarm a
/// few; 5 s is far above both, and well under what a runaway backoff (up to 30 s) takes.
const RECOVERY_LIMIT: Duration = Duration::from_secs(5);
/// The same after stop_app + start_app: every connection failed, and so did the reconnect
/// attempts while the app was down, so the backoffs have grown (a supervisor's to a few
/// seconds).
const RESTART_RECOVERY_LIMIT: Duration = Duration::from_secs(30);

/// splitmix64: small, seedable, good enough to pick faults and delays.
#[derive(Debug, Clone)]
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.below(hi - lo + 1))
    }
}

#[derive(Debug, Clone, Copy)]
enum Fault {
    ClosePublisher(usize),
    CloseWorker(usize),
    /// Held this long, with a publisher's connection closed meanwhile when given.
    MemoryAlarm(Duration, Option<usize>),
    StopApp(Duration),
}

/// The fault injector and what it may hit.
pub(crate) struct Faults {
    pub(crate) guard: Arc<BrokerGuard>,
    pub(crate) ledger: Arc<Ledger>,
    /// Each publisher's connection name and connection counter (closed when it ends).
    pub(crate) publishers: Vec<(String, watch::Receiver<u64>)>,
    /// Each worker's connection name and supervisor handle.
    pub(crate) workers: Vec<(String, SupervisorHandle)>,
    pub(crate) rng: Rng,
    pub(crate) started: Instant,
    /// Faults start at the first offset from `started` and none starts after the second.
    pub(crate) window: (Duration, Duration),
    /// When stop_app faults are due (offsets from `started`), earliest first.
    pub(crate) stop_app_at: VecDeque<Duration>,
}

/// What the fault injector did.
#[derive(Debug, Default)]
pub(crate) struct FaultReport {
    pub(crate) injected: u64,
    pub(crate) skipped: u64,
    /// Faults whose victim was not back at work within its limit.
    pub(crate) unrecovered: u64,
    /// Per kind of fault, milliseconds from the fault's end to its victim working again.
    pub(crate) recoveries: Vec<(&'static str, f64)>,
    /// The broker could not be disturbed or restored as planned.
    pub(crate) error: Option<String>,
}

enum FaultError {
    /// The fault could not be injected (its victim was reconnecting); nothing changed.
    Skipped(String),
    /// A command that disturbs or restores the broker failed.
    Broker(String),
}

impl Faults {
    /// Injects faults until the window closes or `stop` is set; a fault under way is
    /// finished (and the broker restored) first.
    pub(crate) async fn run(mut self, mut stop: watch::Receiver<bool>) -> FaultReport {
        let mut report = FaultReport::default();
        let mut gap = self.window.0;
        loop {
            tokio::select! {
                () = sleep(gap) => {}
                _ = stop.wait_for(|s| *s) => return report,
            }
            let now = self.started.elapsed();
            if now >= self.window.1 {
                return report;
            }
            let fault = if self.stop_app_at.front().is_some_and(|at| *at <= now) {
                self.stop_app_at.pop_front();
                Fault::StopApp(self.rng.millis(500, 1500))
            } else {
                match self.rng.below(100) {
                    0..35 => Fault::ClosePublisher(self.pick_publisher()),
                    35..70 => {
                        Fault::CloseWorker(self.rng.below(self.workers.len() as u64) as usize)
                    }
                    70..85 => Fault::MemoryAlarm(self.rng.millis(1000, 2000), None),
                    _ => {
                        Fault::MemoryAlarm(self.rng.millis(1000, 2000), Some(self.pick_publisher()))
                    }
                }
            };
            let n = report.injected + 1;
            eprintln!(
                "  fault {n} at {:.1} s: {}",
                now.as_secs_f64(),
                describe(fault)
            );
            match self.inject(fault, &mut report).await {
                Ok(outcome) => {
                    report.injected += 1;
                    eprintln!("    fault {n}: {outcome}");
                }
                Err(FaultError::Skipped(why)) => {
                    report.skipped += 1;
                    eprintln!("    fault {n} skipped: {why}");
                }
                Err(FaultError::Broker(e)) => {
                    report.injected += 1;
                    report.error = Some(e);
                    return report;
                }
            }
            gap = self.rng.millis(200, 2000);
        }
    }

    /// Injects `fault` and waits (bounded) for its victim to be back at work.
    async fn inject(
        &mut self,
        fault: Fault,
        report: &mut FaultReport,
    ) -> Result<String, FaultError> {
        let (kind, limit, since, back, what) = match fault {
            Fault::ClosePublisher(i) => {
                let (name, connected) = &self.publishers[i];
                let mut connected = connected.clone();
                let generation = *connected.borrow();
                self.close(name).await?;
                let closed = Instant::now();
                // Also done when the publisher has ended (it owed nothing at the end).
                let back = timeout(RECOVERY_LIMIT, connected.wait_for(|g| *g > generation))
                    .await
                    .is_ok();
                ("publisher", RECOVERY_LIMIT, closed, back, "closed".into())
            }
            Fault::CloseWorker(i) => {
                let (name, handle) = &self.workers[i];
                let handle = handle.clone();
                let restarts = handle.stats().restarts;
                self.close(name).await?;
                let closed = Instant::now();
                let back = wait_until(RECOVERY_LIMIT, || {
                    handle.stats().restarts > restarts && handle.is_ready()
                })
                .await;
                ("worker", RECOVERY_LIMIT, closed, back, "closed".into())
            }
            Fault::MemoryAlarm(hold, close) => {
                let guard = self.guard.clone();
                blocking(move || guard.raise_alarm())
                    .await
                    .map_err(FaultError::Broker)?;
                let raised = Instant::now();
                let before = self.ledger.confirmed();
                // A blocked publisher's connection closed: it must notice, connect again
                // (connecting is allowed under the alarm) and wait there.
                let mut reconnected = true;
                let mut closed_note = String::new();
                if let Some(i) = close {
                    let (name, connected) = &self.publishers[i];
                    let mut connected = connected.clone();
                    let generation = *connected.borrow();
                    match self.close(name).await {
                        Ok(()) => {
                            reconnected =
                                timeout(RECOVERY_LIMIT, connected.wait_for(|g| *g > generation))
                                    .await
                                    .is_ok();
                            closed_note = format!(
                                ", publisher {i}'s connection closed under it ({})",
                                if reconnected {
                                    "connected again while blocked"
                                } else {
                                    "NOT connected again"
                                }
                            );
                        }
                        Err(FaultError::Skipped(why) | FaultError::Broker(why)) => {
                            closed_note =
                                format!(", closing publisher {i}'s connection skipped: {why}");
                        }
                    }
                }
                sleep(hold.saturating_sub(raised.elapsed())).await;
                let during = self.ledger.confirmed() - before;
                let held = raised.elapsed();
                self.restore().await?;
                let cleared = Instant::now();
                let base = self.ledger.confirmed();
                let ledger = self.ledger.clone();
                let back =
                    reconnected && wait_until(RECOVERY_LIMIT, || ledger.confirmed() > base).await;
                let what = format!(
                    "raised{closed_note}, {during} confirms in the {:.1} s it was held, \
                     watermark back to {}",
                    held.as_secs_f64(),
                    self.guard.watermark()
                );
                ("alarm", RECOVERY_LIMIT, cleared, back, what)
            }
            Fault::StopApp(down) => {
                let generations: Vec<u64> =
                    self.publishers.iter().map(|(_, g)| *g.borrow()).collect();
                let restarts: Vec<u64> = self
                    .workers
                    .iter()
                    .map(|(_, h)| h.stats().restarts)
                    .collect();
                let t0 = Instant::now();
                let guard = self.guard.clone();
                let stopped = blocking(move || guard.stop_app()).await;
                let t1 = Instant::now();
                sleep(down).await;
                let t2 = Instant::now();
                self.restore().await?;
                stopped.map_err(FaultError::Broker)?;
                let t3 = Instant::now();
                let publishers = self.publishers.clone();
                let workers = self.workers.clone();
                let back = wait_until(RESTART_RECOVERY_LIMIT, || {
                    let publishing = publishers.iter().zip(&generations).all(|((_, g), before)| {
                        // A publisher that owed nothing when the run ended is done.
                        *g.borrow() > *before || g.has_changed().is_err()
                    });
                    let consuming = workers
                        .iter()
                        .zip(&restarts)
                        .all(|((_, h), before)| h.stats().restarts > *before && h.is_ready());
                    publishing && consuming
                })
                .await;
                let what = format!(
                    "stop_app took {:.1} s, down {:.1} s, start_app + await_startup {:.1} s",
                    (t1 - t0).as_secs_f64(),
                    (t2 - t1).as_secs_f64(),
                    (t3 - t2).as_secs_f64()
                );
                ("stop_app", RESTART_RECOVERY_LIMIT, t2, back, what)
            }
        };
        if back {
            let ms = since.elapsed().as_secs_f64() * 1000.0;
            report.recoveries.push((kind, ms));
            Ok(format!("{what}; back at work after {ms:.0} ms"))
        } else {
            report.unrecovered += 1;
            Ok(format!("{what}; NOT back at work within {limit:?}"))
        }
    }

    fn pick_publisher(&mut self) -> usize {
        self.rng.below(self.publishers.len() as u64) as usize
    }

    /// Closes the connection named `name` with `rabbitmqctl close_connection`.
    async fn close(&self, name: &str) -> Result<(), FaultError> {
        let ctl = &self.guard.ctl;
        let pids = ctl
            .connection_pids(name)
            .await
            .map_err(FaultError::Skipped)?;
        let Some(pid) = pids.first() else {
            return Err(FaultError::Skipped(format!(
                "{name} has no connection right now"
            )));
        };
        if pids.len() > 1 {
            eprintln!("    WARNING: {} connections are named {name}", pids.len());
        }
        ctl.call(&["-q", "close_connection", pid, "soak: injected fault"])
            .await
            .map_err(FaultError::Skipped)?;
        Ok(())
    }

    /// Undoes what the guard says is disturbed, on the blocking pool.
    async fn restore(&self) -> Result<(), FaultError> {
        let guard = self.guard.clone();
        blocking(move || guard.restore())
            .await
            .map_err(FaultError::Broker)
    }
}

fn describe(fault: Fault) -> String {
    match fault {
        Fault::ClosePublisher(i) => format!("close publisher {i}'s connection"),
        Fault::CloseWorker(i) => format!("close worker {i}'s connection"),
        Fault::MemoryAlarm(hold, None) => {
            format!("memory alarm for {:.1} s", hold.as_secs_f64())
        }
        Fault::MemoryAlarm(hold, Some(i)) => format!(
            "memory alarm for {:.1} s at least, publisher {i}'s connection closed under it",
            hold.as_secs_f64()
        ),
        Fault::StopApp(down) => format!("stop_app, start_app after {:.1} s", down.as_secs_f64()),
    }
}

/// Polls `done` every 10 ms until it holds (true) or `limit` passes (false).
async fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        sleep(Duration::from_millis(10)).await;
    }
}
