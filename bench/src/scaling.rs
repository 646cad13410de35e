//! The scaling mode (`--scaling`): throughput and client CPU per message of every client as one
//! dimension grows, the others held still.
//!
//! - **body**: 64 B, 1 KiB, 16 KiB, 128 KiB and 1 MiB bodies published with confirms (a window
//!   that shrinks as bodies grow: 1,000 up to 1 KiB, 500, 100, 50 for 1 MiB) while a consumer
//!   on a second channel of the same connection (prefetch the same) takes them back and acks
//!   them; this is the large_body scenario with other sizes and counts (50,000 messages of
//!   64 B down to 800 of 1 MiB).
//! - **channels**: 1, 10, 100 and 1,000 channels on one connection; one task publishes
//!   51,200 confirmed 64 B messages round-robin over them, at most 1,024 unconfirmed in all.
//! - **publishers**: 1, 4, 16 and 64 tasks, each on its own channel of one connection, each
//!   publishing its share of 51,200 confirmed 64 B messages with a window of 1,024 / tasks.
//!
//! Each point runs for each client in turn (A B C), several repetitions, every run in a fresh
//! child process, like the scenarios; the table shows medians. `--quick` runs a tenth of the
//! messages (windows, channel and task counts unchanged). Every point checks its counts
//! (and the body points every index and size) and the runner deletes its queues.

use std::fmt::Write as _;

use crate::report::{Medians, Run};
use crate::runner::{self, ChildOptions, Flavor, Plan};
use crate::scenario::{Client, Names, Outcome, Params, Result};
use crate::{amqprs_client::Amqprs, lapin_client::Lapin, serena_client, serena_client::Serena};

/// What grows along one scaling axis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dimension {
    /// Body size in bytes.
    Body,
    /// Channels one task publishes over, on one connection.
    Channels,
    /// Concurrent publishing tasks, each on its own channel of one connection.
    Publishers,
}

impl Dimension {
    /// All of them, in run order.
    pub const ALL: [Dimension; 3] = [Dimension::Body, Dimension::Channels, Dimension::Publishers];

    /// The name on the command line and in the output.
    pub fn name(self) -> &'static str {
        match self {
            Dimension::Body => "body",
            Dimension::Channels => "channels",
            Dimension::Publishers => "publishers",
        }
    }

    /// Parses a name given by [`name`](Self::name).
    pub fn parse(name: &str) -> Option<Dimension> {
        Dimension::ALL.into_iter().find(|d| d.name() == name)
    }

    /// The values measured along this dimension.
    pub fn values(self) -> &'static [u64] {
        match self {
            Dimension::Body => &[64, 1 << 10, 16 << 10, 128 << 10, 1 << 20],
            Dimension::Channels => &[1, 10, 100, 1_000],
            Dimension::Publishers => &[1, 4, 16, 64],
        }
    }
}

/// Messages of every channels and publishers point (divisible by every publisher count).
const SPREAD_MESSAGES: u64 = 51_200;

/// Most unconfirmed publishes at once in the channels and publishers points, over all
/// channels or tasks.
const SPREAD_WINDOW: usize = 1_024;

/// One point: a dimension and its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Point {
    /// The dimension.
    pub dimension: Dimension,
    /// Its value: bytes, channels or tasks.
    pub value: u64,
}

impl Point {
    /// Every point of `dimensions`, in run order.
    pub fn all(dimensions: &[Dimension]) -> Vec<Point> {
        dimensions
            .iter()
            .flat_map(|&dimension| {
                dimension
                    .values()
                    .iter()
                    .map(move |&value| Point { dimension, value })
            })
            .collect()
    }

    /// The name in the output and the child's command line: `body_1024`, `channels_10`, ...
    pub fn name(self) -> String {
        format!("{}_{}", self.dimension.name(), self.value)
    }

    /// Parses a name given by [`name`](Self::name).
    pub fn parse(name: &str) -> Option<Point> {
        let (dimension, value) = name.split_once('_')?;
        let point = Point {
            dimension: Dimension::parse(dimension)?,
            value: value.parse().ok()?,
        };
        point
            .dimension
            .values()
            .contains(&point.value)
            .then_some(point)
    }

    /// The value as a table shows it.
    pub fn label(self) -> String {
        match self.dimension {
            Dimension::Body if self.value >= 1 << 20 => format!("{} MiB", self.value >> 20),
            Dimension::Body if self.value >= 1 << 10 => format!("{} KiB", self.value >> 10),
            Dimension::Body => format!("{} B", self.value),
            _ => self.value.to_string(),
        }
    }

    /// Messages and confirm window of this point: about a second or two of work each.
    fn work(self, quick: bool) -> (u64, usize) {
        let (messages, window) = match (self.dimension, self.value) {
            (Dimension::Body, 64) => (50_000, 1_000),
            (Dimension::Body, 1024) => (40_000, 1_000),
            (Dimension::Body, 16384) => (20_000, 500),
            (Dimension::Body, 131072) => (4_000, 100),
            (Dimension::Body, _) => (800, 50),
            (Dimension::Channels, _) => (SPREAD_MESSAGES, SPREAD_WINDOW),
            (Dimension::Publishers, tasks) => (
                SPREAD_MESSAGES,
                SPREAD_WINDOW / usize::try_from(tasks).unwrap_or(1),
            ),
        };
        if quick {
            (messages / 10, window)
        } else {
            (messages, window)
        }
    }

    /// Runs this point with client `C`.
    async fn run<C: Client>(self, quick: bool, names: &Names) -> Result<Outcome> {
        let (messages, window) = self.work(quick);
        let p = Params::new(quick);
        let count = usize::try_from(self.value)?;
        let outcome = match self.dimension {
            Dimension::Body => {
                let p = Params {
                    large_messages: messages,
                    large_body: count,
                    large_window: window,
                    ..p
                };
                C::large_body(&p, names).await?
            }
            Dimension::Channels => C::spread_publish(&p, names, count, messages, window).await?,
            Dimension::Publishers => {
                C::concurrent_publish(&p, names, count, messages, window).await?
            }
        };
        if outcome.span.is_none() {
            return Err(format!("{} {}: the client measured nothing", C::NAME, self.name()).into());
        }
        if outcome.messages != messages {
            return Err(format!(
                "verification failed: {} {} handled {} messages, expected {messages}",
                C::NAME,
                self.name(),
                outcome.messages
            )
            .into());
        }
        Ok(outcome)
    }
}

/// Child side: runs one point with one client and prints its record for the parent.
pub fn child(client: &str, point: Point, options: ChildOptions, base: &str) -> Result<()> {
    let (quick, names) = (options.quick, Names::new(base, options.name_len));
    let rt = runner::runtime(options.flavor);
    let outcome = rt.block_on(async {
        match client {
            "serena" => point.run::<Serena>(quick, &names).await,
            "lapin" => point.run::<Lapin>(quick, &names).await,
            "amqprs" => point.run::<Amqprs>(quick, &names).await,
            other => Err(format!("unknown client {other:?}").into()),
        }
    })?;
    rt.shutdown_timeout(std::time::Duration::from_secs(5));
    let run = Run::named(client, &point.name(), options.flavor.name(), outcome);
    println!("{}", run.to_wire());
    Ok(())
}

/// The dimension and value of the point named `name`, for the `--json` document.
pub fn json_fields(name: &str) -> Option<serde_json::Map<String, serde_json::Value>> {
    let point = Point::parse(name)?;
    let mut fields = serde_json::Map::new();
    fields.insert("dimension".into(), point.dimension.name().into());
    fields.insert("value".into(), point.value.into());
    Some(fields)
}

/// Parent side: every repetition, every point, every runtime flavor, every client in turn;
/// queues deleted after every run, also a failed one.
pub fn run_all(plan: &Plan) -> Result<Vec<Run>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let points = Point::all(&plan.dimensions);
    let mut runs = Vec::new();
    for rep in 1..=plan.reps {
        for &point in &points {
            let name = point.name();
            for (&flavor, &client) in plan
                .flavors
                .iter()
                .flat_map(|f| plan.clients.iter().map(move |c| (f, c)))
            {
                let f = flavor.name();
                let base = runner::base();
                let names = Names::new(&base, plan.name_len);
                let result =
                    runner::run_child_with(plan, flavor, "--child-scaling", client, &name, &base);
                let cleaned = rt.block_on(serena_client::delete_queues(&names));
                let mut run =
                    result.map_err(|e| format!("repetition {rep}, {client} {name} {f}: {e}"))?;
                cleaned.map_err(|e| format!("deleting the queues of {base}: {e}"))?;
                run.rep = rep;
                eprintln!(
                    "rep {rep}/{} {name:<17} {f:<14} {client:<7} {:>10.0} msgs/s {:>8.2} µs \
                     CPU/msg {}",
                    plan.reps,
                    run.msgs_per_s(),
                    run.cpu_us_per_msg(),
                    crate::report::progress_cells(&run),
                );
                runs.push(run);
            }
        }
    }
    Ok(runs)
}

/// One table per dimension and runtime flavor: medians of every client side by side, and serena's ratios to the
/// best peer (throughput: higher is better; CPU per message: lower is better).
pub fn tables(
    runs: &[Run],
    dimensions: &[Dimension],
    flavors: &[Flavor],
    clients: &[&str],
) -> String {
    let mut out = String::new();
    for (&dimension, &flavor) in dimensions
        .iter()
        .flat_map(|d| flavors.iter().map(move |f| (d, f)))
    {
        let heading = match dimension {
            Dimension::Body => "body size",
            Dimension::Channels => "channels",
            Dimension::Publishers => "publishers",
        };
        write!(out, "\n| {heading}, {} |", flavor.name()).expect("write to String");
        for client in clients {
            write!(out, " {client} msgs/s |").expect("write to String");
        }
        for client in clients {
            write!(out, " {client} CPU µs/msg |").expect("write to String");
        }
        out.push_str(" serena ÷ best peer: msgs/s, CPU |\n|---|");
        out.push_str(&"---:|".repeat(2 * clients.len() + 1));
        out.push('\n');
        for point in Point::all(&[dimension]) {
            let name = point.name();
            let medians: Vec<Option<Medians>> = clients
                .iter()
                .map(|&client| {
                    let mine: Vec<&Run> = runs
                        .iter()
                        .filter(|r| {
                            r.client == client && r.scenario == name && r.flavor == flavor.name()
                        })
                        .collect();
                    (!mine.is_empty()).then(|| Medians::of(client, &mine))
                })
                .collect();
            write!(out, "| {} |", point.label()).expect("write to String");
            for m in &medians {
                match m {
                    Some(m) => write!(out, " {:.0} |", m.msgs_per_s),
                    None => write!(out, " - |"),
                }
                .expect("write to String");
            }
            for m in &medians {
                match m {
                    Some(m) => write!(out, " {:.2} |", m.cpu_us_per_msg),
                    None => write!(out, " - |"),
                }
                .expect("write to String");
            }
            let serena = medians.iter().flatten().find(|m| m.client == "serena");
            let peers: Vec<&Medians> = medians
                .iter()
                .flatten()
                .filter(|m| m.client != "serena")
                .collect();
            match serena {
                Some(s) if !peers.is_empty() => {
                    let best_rate = peers.iter().map(|m| m.msgs_per_s).fold(0.0, f64::max);
                    let best_cpu = peers
                        .iter()
                        .map(|m| m.cpu_us_per_msg)
                        .fold(f64::INFINITY, f64::min);
                    writeln!(
                        out,
                        " {:.2}×, {:.2}× |",
                        s.msgs_per_s / best_rate,
                        s.cpu_us_per_msg / best_cpu
                    )
                }
                _ => writeln!(out, " - |"),
            }
            .expect("write to String");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn point_names_round_trip() {
        for point in Point::all(&Dimension::ALL) {
            assert_eq!(Point::parse(&point.name()), Some(point));
        }
        assert_eq!(Point::all(&Dimension::ALL).len(), 13);
        assert_eq!(Point::parse("body_65"), None, "not a measured value");
        assert_eq!(Point::parse("lanes_4"), None);
    }

    #[test]
    fn publisher_points_split_evenly() {
        for point in Point::all(&[Dimension::Publishers]) {
            for quick in [false, true] {
                let (messages, window) = point.work(quick);
                assert_eq!(messages % point.value, 0, "{point:?}");
                assert!(window >= 1);
            }
        }
        assert_eq!(
            Point::parse("body_1048576").map(Point::label).as_deref(),
            Some("1 MiB")
        );
        assert_eq!(
            Point::parse("body_16384").map(Point::label).as_deref(),
            Some("16 KiB")
        );
    }
}
