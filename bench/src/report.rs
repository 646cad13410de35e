//! Per-run records, the line a child process hands its parent, the table of medians and the
//! `--json` document.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use serde_json::{Map, Value, json};

use crate::measure::cores;
use crate::scenario::{Outcome, Scenario};

/// One run of one scenario with one client.
#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    /// Client name.
    pub client: String,
    /// Scenario name.
    pub scenario: String,
    /// The tokio runtime flavor it ran on (`multi_thread`, `current_thread`).
    pub flavor: String,
    /// Repetition (from 1), set by the parent; 0 until then.
    pub rep: usize,
    /// Messages (round trips, channels) in the measured part.
    pub messages: u64,
    /// Wall time of the measured part, in seconds.
    pub seconds: f64,
    /// CPU (user + system) of the measured part, in microseconds.
    pub cpu_us: f64,
    /// The broker's CPU (user + system) over the measured part, in microseconds; `None` when
    /// its process could not be read.
    pub broker_cpu_us: Option<f64>,
    /// Peak resident set of the run's process, in kilobytes.
    pub peak_rss_kb: u64,
    /// Body bytes carried end to end.
    pub payload_bytes: u64,
    /// Median round trip, in microseconds (rpc_latency).
    pub p50_us: Option<f64>,
    /// 99th percentile round trip, in microseconds (rpc_latency).
    pub p99_us: Option<f64>,
    /// Resident bytes per open channel (many_channels).
    pub rss_bytes_per_channel: Option<f64>,
    /// Time to open the channels, in milliseconds (many_channels).
    pub open_ms: Option<f64>,
    /// Time of the publish round, in milliseconds (many_channels).
    pub round_ms: Option<f64>,
    /// Time until the last publish call returned, in milliseconds (publish_noconfirm).
    pub written_ms: Option<f64>,
}

/// The `q`-quantile (0..=1) of `sorted`, nearest rank.
fn quantile(sorted: &[Duration], q: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

impl Run {
    /// The record of `outcome`.
    pub fn new(client: &str, scenario: Scenario, flavor: &str, outcome: Outcome) -> Run {
        Run::named(client, scenario.name(), flavor, outcome)
    }

    /// The record of `outcome` under any name (a scaling point's, for one).
    pub fn named(client: &str, scenario: &str, flavor: &str, outcome: Outcome) -> Run {
        let span = outcome.span.expect("checked by scenario::run");
        let mut latencies = outcome.latencies;
        latencies.sort_unstable();
        Run {
            client: client.to_owned(),
            scenario: scenario.to_owned(),
            flavor: flavor.to_owned(),
            rep: 0,
            messages: outcome.messages,
            seconds: span.wall.as_secs_f64(),
            cpu_us: micros(span.cpu),
            broker_cpu_us: span.broker_cpu.map(micros),
            peak_rss_kb: span.peak_rss_kb,
            payload_bytes: outcome.payload_bytes,
            p50_us: quantile(&latencies, 0.50).map(micros),
            p99_us: quantile(&latencies, 0.99).map(micros),
            rss_bytes_per_channel: outcome.rss_bytes_per_channel,
            open_ms: outcome.open_time.map(millis),
            round_ms: outcome.round_time.map(millis),
            written_ms: outcome.written_time.map(millis),
        }
    }

    /// Messages per second of wall time.
    pub fn msgs_per_s(&self) -> f64 {
        self.messages as f64 / self.seconds
    }

    /// CPU microseconds per message.
    pub fn cpu_us_per_msg(&self) -> f64 {
        self.cpu_us / self.messages as f64
    }

    /// The broker's CPU microseconds per message, if it was read.
    pub fn broker_cpu_us_per_msg(&self) -> Option<f64> {
        self.broker_cpu_us.map(|us| us / self.messages as f64)
    }

    /// The rate the machine allows at this run's cost per message: every core busy with the
    /// client or the broker, `cores × 10⁶ / (client + broker CPU µs per message)`. `None` for
    /// a scenario that is not a throughput scenario or when the broker's CPU was not read.
    pub fn limit_msgs_per_s(&self, cores: usize) -> Option<f64> {
        let throughput = Scenario::parse(&self.scenario).is_none_or(Scenario::is_throughput);
        let per_msg = self.cpu_us_per_msg() + self.broker_cpu_us_per_msg()?;
        (throughput && per_msg > 0.0).then(|| cores as f64 * 1e6 / per_msg)
    }

    /// The share of [`limit_msgs_per_s`](Self::limit_msgs_per_s) this run reached.
    pub fn limit_share(&self, cores: usize) -> Option<f64> {
        Some(self.msgs_per_s() / self.limit_msgs_per_s(cores)?)
    }

    /// Payload megabytes (10^6 bytes) per second.
    pub fn mb_per_s(&self) -> f64 {
        self.payload_bytes as f64 / 1e6 / self.seconds
    }

    /// This run in the `--json` document: the fields of the issue, then the
    /// scenario-specific ones.
    pub fn to_json(&self, cores: usize) -> Value {
        let mut v = json!({
            "client": self.client,
            "scenario": self.scenario,
            "flavor": self.flavor,
            "rep": self.rep,
            "messages": self.messages,
            "seconds": round(self.seconds, 4),
            "msgs_per_s": round(self.msgs_per_s(), 1),
            "cpu_us_per_msg": round(self.cpu_us_per_msg(), 3),
            "broker_cpu_us_per_msg": self.broker_cpu_us_per_msg().map(|v| round(v, 3)),
            "p50_us": self.p50_us.map(|v| round(v, 1)),
            "p99_us": self.p99_us.map(|v| round(v, 1)),
            "limit_msgs_per_s": self.limit_msgs_per_s(cores).map(|v| round(v, 0)),
            "limit_share": self.limit_share(cores).map(|v| round(v, 3)),
            "peak_rss_kb": self.peak_rss_kb,
            "mb_per_s": round(self.mb_per_s(), 1),
        });
        extras(
            &mut v,
            [
                self.rss_bytes_per_channel,
                self.open_ms,
                self.round_ms,
                self.written_ms,
            ],
        );
        v
    }

    /// The line a child process prints for its parent: `@run key=value ...`.
    pub fn to_wire(&self) -> String {
        let opt = |v: Option<f64>| v.map_or("-".to_owned(), |v| v.to_string());
        format!(
            "@run client={} scenario={} flavor={} messages={} seconds={} cpu_us={} broker_cpu_us={} \
             peak_rss_kb={} payload_bytes={} p50_us={} p99_us={} rss_bytes_per_channel={} open_ms={} round_ms={} \
             written_ms={}",
            self.client,
            self.scenario,
            self.flavor,
            self.messages,
            self.seconds,
            self.cpu_us,
            opt(self.broker_cpu_us),
            self.peak_rss_kb,
            self.payload_bytes,
            opt(self.p50_us),
            opt(self.p99_us),
            opt(self.rss_bytes_per_channel),
            opt(self.open_ms),
            opt(self.round_ms),
            opt(self.written_ms),
        )
    }

    /// Parses [`to_wire`](Self::to_wire) output; `None` if `line` is not such a line.
    pub fn from_wire(line: &str) -> Option<Run> {
        let fields: BTreeMap<&str, &str> = line
            .strip_prefix("@run ")?
            .split(' ')
            .filter_map(|kv| kv.split_once('='))
            .collect();
        let num = |k: &str| fields.get(k)?.parse::<f64>().ok();
        let opt = |k: &str| match *fields.get(k)? {
            "-" => Some(None),
            v => v.parse::<f64>().ok().map(Some),
        };
        Some(Run {
            client: (*fields.get("client")?).to_owned(),
            scenario: (*fields.get("scenario")?).to_owned(),
            flavor: (*fields.get("flavor")?).to_owned(),
            rep: 0,
            messages: fields.get("messages")?.parse().ok()?,
            seconds: num("seconds")?,
            cpu_us: num("cpu_us")?,
            broker_cpu_us: opt("broker_cpu_us")?,
            peak_rss_kb: fields.get("peak_rss_kb")?.parse().ok()?,
            payload_bytes: fields.get("payload_bytes")?.parse().ok()?,
            p50_us: opt("p50_us")?,
            p99_us: opt("p99_us")?,
            rss_bytes_per_channel: opt("rss_bytes_per_channel")?,
            open_ms: opt("open_ms")?,
            round_ms: opt("round_ms")?,
            written_ms: opt("written_ms")?,
        })
    }
}

/// The median of `values` (mean of the middle two for an even count).
pub fn median(values: &mut [f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    Some(if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    })
}

/// Medians of one client in one scenario.
#[derive(Debug, Clone)]
pub struct Medians {
    /// Client name.
    pub client: String,
    /// Scenario name.
    pub scenario: String,
    /// Runtime flavor.
    pub flavor: String,
    /// Runs the medians are taken over.
    pub runs: usize,
    /// Messages per second.
    pub msgs_per_s: f64,
    /// CPU microseconds per message.
    pub cpu_us_per_msg: f64,
    /// The broker's CPU microseconds per message (over the runs where it was read).
    pub broker_cpu_us_per_msg: Option<f64>,
    /// The machine's limit, messages per second (throughput scenarios, broker CPU read).
    pub limit_msgs_per_s: Option<f64>,
    /// Share of that limit reached.
    pub limit_share: Option<f64>,
    /// Round-trip p50, microseconds.
    pub p50_us: Option<f64>,
    /// Round-trip p99, microseconds.
    pub p99_us: Option<f64>,
    /// Peak RSS, kilobytes.
    pub peak_rss_kb: f64,
    /// Payload MB/s.
    pub mb_per_s: f64,
    /// Resident bytes per channel.
    pub rss_bytes_per_channel: Option<f64>,
    /// Channel opening time, ms.
    pub open_ms: Option<f64>,
    /// Publish round time, ms.
    pub round_ms: Option<f64>,
    /// Time until the last publish call returned, ms.
    pub written_ms: Option<f64>,
}

impl Medians {
    /// Medians over `runs` (all of one client and one scenario).
    pub fn of(client: &str, runs: &[&Run]) -> Medians {
        let cores = crate::measure::cores();
        let med = |f: &dyn Fn(&Run) -> f64| {
            median(&mut runs.iter().map(|r| f(r)).collect::<Vec<_>>()).unwrap_or(f64::NAN)
        };
        let med_opt = |f: &dyn Fn(&Run) -> Option<f64>| {
            median(&mut runs.iter().filter_map(|r| f(r)).collect::<Vec<_>>())
        };
        Medians {
            client: client.to_owned(),
            scenario: runs.first().map_or(String::new(), |r| r.scenario.clone()),
            flavor: runs.first().map_or(String::new(), |r| r.flavor.clone()),
            runs: runs.len(),
            msgs_per_s: med(&Run::msgs_per_s),
            cpu_us_per_msg: med(&Run::cpu_us_per_msg),
            broker_cpu_us_per_msg: med_opt(&Run::broker_cpu_us_per_msg),
            limit_msgs_per_s: med_opt(&|r| r.limit_msgs_per_s(cores)),
            limit_share: med_opt(&|r| r.limit_share(cores)),
            p50_us: med_opt(&|r| r.p50_us),
            p99_us: med_opt(&|r| r.p99_us),
            peak_rss_kb: med(&|r| r.peak_rss_kb as f64),
            mb_per_s: med(&Run::mb_per_s),
            rss_bytes_per_channel: med_opt(&|r| r.rss_bytes_per_channel),
            open_ms: med_opt(&|r| r.open_ms),
            round_ms: med_opt(&|r| r.round_ms),
            written_ms: med_opt(&|r| r.written_ms),
        }
    }
}

/// The broker's CPU per message of `run` and the share of the machine's limit it reached,
/// for a progress line (`-` where not measured).
pub fn progress_cells(run: &Run) -> String {
    let share = run
        .limit_share(crate::measure::cores())
        .map_or("-".to_owned(), |s| format!("{:.0}%", 100.0 * s));
    format!(
        "{:>7} µs broker CPU/msg {share:>4} of the machine's limit",
        cell(run.broker_cpu_us_per_msg(), 2)
    )
}

impl Medians {
    /// These medians in the `--json` document.
    pub fn to_json(&self) -> Value {
        let mut v = json!({
            "client": self.client,
            "scenario": self.scenario,
            "flavor": self.flavor,
            "runs": self.runs,
            "msgs_per_s": round(self.msgs_per_s, 1),
            "cpu_us_per_msg": round(self.cpu_us_per_msg, 3),
            "broker_cpu_us_per_msg": self.broker_cpu_us_per_msg.map(|v| round(v, 3)),
            "p50_us": self.p50_us.map(|v| round(v, 1)),
            "p99_us": self.p99_us.map(|v| round(v, 1)),
            "limit_msgs_per_s": self.limit_msgs_per_s.map(|v| round(v, 0)),
            "limit_share": self.limit_share.map(|v| round(v, 3)),
            "peak_rss_kb": round(self.peak_rss_kb, 0),
            "mb_per_s": round(self.mb_per_s, 1),
        });
        extras(
            &mut v,
            [
                self.rss_bytes_per_channel,
                self.open_ms,
                self.round_ms,
                self.written_ms,
            ],
        );
        v
    }
}

/// Medians of every (scenario, flavor, client) in `runs`, in the order they first ran.
pub fn all_medians(runs: &[Run]) -> Vec<Medians> {
    let key = |r: &Run| (r.scenario.clone(), r.flavor.clone(), r.client.clone());
    let mut keys = Vec::new();
    for r in runs {
        if !keys.contains(&key(r)) {
            keys.push(key(r));
        }
    }
    keys.into_iter()
        .map(|k| {
            let mine: Vec<&Run> = runs.iter().filter(|r| key(r) == k).collect();
            Medians::of(&k.2, &mine)
        })
        .collect()
}

/// `v` rounded to `decimals` places, for a readable document.
fn round(v: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (v * scale).round() / scale
}

/// Adds the scenario-specific fields to `v` where they were measured: many_channels'
/// `rss_bytes_per_channel`, `open_ms` and `round_ms`, publish_noconfirm's `written_ms`.
fn extras(v: &mut Value, values: [Option<f64>; 4]) {
    let obj = v.as_object_mut().expect("a JSON object");
    let keys = [
        ("rss_bytes_per_channel", 0),
        ("open_ms", 1),
        ("round_ms", 1),
        ("written_ms", 1),
    ];
    for ((key, decimals), value) in keys.into_iter().zip(values) {
        if let Some(value) = value {
            obj.insert(key.to_owned(), json!(round(value, decimals)));
        }
    }
}

/// What the `--json` document says about the run besides its records.
#[derive(Debug, Clone)]
pub struct Meta {
    /// `scenarios` or `scaling`.
    pub mode: &'static str,
    /// When the run started, UTC.
    pub date: String,
    /// The command-line arguments.
    pub args: Vec<String>,
    /// Smaller sizes.
    pub quick: bool,
    /// Repetitions.
    pub reps: usize,
    /// The runtime flavors every client ran on.
    pub flavors: Vec<&'static str>,
    /// `--name-len`: every queue name and routing key padded to this many bytes.
    pub queue_name_len: Option<usize>,
    /// The broker's version from its connection.start properties, if it said.
    pub rabbitmq_version: Option<String>,
}

/// The `--json` document: when and where it ran, every run, and the medians.
pub fn document(meta: &Meta, runs: &[Run]) -> Value {
    let cores = cores();
    json!({
        "date": meta.date,
        "mode": meta.mode,
        "args": meta.args,
        "quick": meta.quick,
        "reps": meta.reps,
        "queue_name_len": meta.queue_name_len,
        "machine": {
            "cores": cores,
            "kernel": crate::machine::kernel(),
            "rabbitmq_version": meta.rabbitmq_version,
            "broker_pid": crate::measure::broker_pid(),
        },
        "runtime": {
            "flavors": meta.flavors,
            "multi_thread_workers": crate::runner::WORKERS,
        },
        "runs": runs.iter().map(|r| r.to_json(cores)).collect::<Vec<_>>(),
        "medians": all_medians(runs).iter().map(Medians::to_json).collect::<Vec<_>>(),
    })
}

/// Adds `fields` to every run and median of `doc` whose scenario `fields` knows (the
/// scaling mode's dimension and value).
pub fn annotate(doc: &mut Value, fields: impl Fn(&str) -> Option<Map<String, Value>>) {
    for list in ["runs", "medians"] {
        for item in doc[list].as_array_mut().into_iter().flatten() {
            let Some(obj) = item.as_object_mut() else {
                continue;
            };
            let scenario = obj["scenario"].as_str().unwrap_or_default().to_owned();
            if let Some(more) = fields(&scenario) {
                obj.extend(more);
            }
        }
    }
}

fn cell(v: Option<f64>, decimals: usize) -> String {
    v.map_or("-".to_owned(), |v| format!("{v:.decimals$}"))
}

/// The table of medians per scenario, runtime flavor and client, with serena's ratios to the
/// best peer.
pub fn table(runs: &[Run], scenarios: &[Scenario], flavors: &[&str], clients: &[&str]) -> String {
    let mut out = String::new();
    out.push_str(
        "| scenario | runtime | client | runs | msgs/s | CPU µs/msg | broker CPU µs/msg | limit msgs/s \
         | share | p50 µs | p99 µs | peak RSS MB | MB/s | other |\n\
         |---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n",
    );
    for (&scenario, &flavor) in scenarios
        .iter()
        .flat_map(|s| flavors.iter().map(move |f| (s, f)))
    {
        let mut rows = Vec::new();
        for &client in clients {
            let mine: Vec<&Run> = runs
                .iter()
                .filter(|r| {
                    r.client == client && r.scenario == scenario.name() && r.flavor == flavor
                })
                .collect();
            if !mine.is_empty() {
                rows.push(Medians::of(client, &mine));
            }
        }
        for m in &rows {
            let other = match (m.rss_bytes_per_channel, m.open_ms, m.round_ms, m.written_ms) {
                (Some(b), Some(o), Some(r), _) => {
                    format!(
                        "{:.1} KB/channel, open {o:.0} ms, round {r:.0} ms",
                        b / 1024.0
                    )
                }
                (_, _, _, Some(w)) => format!("publish calls returned after {w:.0} ms"),
                _ => String::new(),
            };
            writeln!(
                out,
                "| {scenario} | {flavor} | {} | {} | {:.0} | {:.2} | {} | {} | {} | {} | {} | {:.1} | {} \
                 | {other} |",
                m.client,
                m.runs,
                m.msgs_per_s,
                m.cpu_us_per_msg,
                cell(m.broker_cpu_us_per_msg, 2),
                cell(m.limit_msgs_per_s, 0),
                m.limit_share
                    .map_or("-".to_owned(), |s| format!("{:.0}%", 100.0 * s)),
                cell(m.p50_us, 0),
                cell(m.p99_us, 0),
                m.peak_rss_kb / 1024.0,
                cell((scenario == Scenario::LargeBody).then_some(m.mb_per_s), 0),
            )
            .expect("write to String");
        }
        if let Some(ratios) = ratios(&rows, scenario == Scenario::LargeBody) {
            writeln!(out, "|  |  | serena ÷ best peer |  | {ratios} |").expect("write to String");
        }
    }
    out
}

/// serena's medians divided by the best peer's: throughput (higher is better), CPU per message
/// and p99 (lower is better), peak RSS (lower is better), MB/s when `show_mb_per_s` (higher is
/// better) and resident memory per channel where measured (lower is better).
fn ratios(rows: &[Medians], show_mb_per_s: bool) -> Option<String> {
    let serena = rows.iter().find(|m| m.client == "serena")?;
    let peers: Vec<&Medians> = rows.iter().filter(|m| m.client != "serena").collect();
    if peers.is_empty() {
        return None;
    }
    let best = |f: &dyn Fn(&Medians) -> f64, higher_is_better: bool| {
        let values = peers.iter().map(|m| f(m));
        if higher_is_better {
            values.fold(f64::NEG_INFINITY, f64::max)
        } else {
            values.fold(f64::INFINITY, f64::min)
        }
    };
    let throughput = serena.msgs_per_s / best(&|m| m.msgs_per_s, true);
    let cpu = serena.cpu_us_per_msg / best(&|m| m.cpu_us_per_msg, false);
    let rss = serena.peak_rss_kb / best(&|m| m.peak_rss_kb, false);
    let p99 = match serena.p99_us {
        Some(p) => format!("{:.2}×", p / best(&|m| m.p99_us.unwrap_or(f64::NAN), false)),
        None => "-".to_owned(),
    };
    let p50 = match serena.p50_us {
        Some(p) => format!("{:.2}×", p / best(&|m| m.p50_us.unwrap_or(f64::NAN), false)),
        None => "-".to_owned(),
    };
    let mb_per_s = if show_mb_per_s {
        format!("{:.2}×", serena.mb_per_s / best(&|m| m.mb_per_s, true))
    } else {
        String::new()
    };
    let per_channel = match serena.rss_bytes_per_channel {
        Some(b) => format!(
            "{:.2}× KB/channel",
            b / best(&|m| m.rss_bytes_per_channel.unwrap_or(f64::NAN), false)
        ),
        None => String::new(),
    };
    Some(format!(
        "{throughput:.2}× | {cpu:.2}× |  |  |  | {p50} | {p99} | {rss:.2}× | {mb_per_s} | {per_channel}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_round_trip() {
        let run = Run {
            client: "serena".into(),
            scenario: "rpc_latency".into(),
            flavor: "current_thread".into(),
            rep: 0,
            messages: 5000,
            seconds: 1.25,
            cpu_us: 123456.5,
            broker_cpu_us: Some(250000.0),
            peak_rss_kb: 9000,
            payload_bytes: 640000,
            p50_us: Some(180.25),
            p99_us: Some(410.0),
            rss_bytes_per_channel: None,
            open_ms: None,
            round_ms: None,
            written_ms: Some(12.5),
        };
        assert_eq!(Run::from_wire(&run.to_wire()), Some(run.clone()));
        let unread = Run {
            broker_cpu_us: None,
            ..run
        };
        assert_eq!(Run::from_wire(&unread.to_wire()), Some(unread));
    }

    #[test]
    fn the_machine_limit_counts_client_and_broker_cpu() {
        let run = Run {
            client: "lapin".into(),
            scenario: "publish_confirm".into(),
            flavor: "multi_thread".into(),
            rep: 2,
            messages: 10_000,
            seconds: 0.5,
            cpu_us: 30_000.0,
            broker_cpu_us: Some(70_000.0),
            peak_rss_kb: 9000,
            payload_bytes: 640_000,
            p50_us: None,
            p99_us: None,
            rss_bytes_per_channel: None,
            open_ms: None,
            round_ms: None,
            written_ms: None,
        };
        // 3 + 7 µs a message on two cores: 200,000 msgs/s; the run made 20,000.
        assert_eq!(run.limit_msgs_per_s(2), Some(200_000.0));
        assert_eq!(run.limit_share(2), Some(0.1));
        let unread = Run {
            broker_cpu_us: None,
            ..run.clone()
        };
        assert_eq!(unread.limit_msgs_per_s(2), None, "no broker CPU, no limit");
        let sequential = Run {
            scenario: "rpc_latency".into(),
            ..run.clone()
        };
        assert_eq!(sequential.limit_msgs_per_s(2), None);
        let point = Run {
            scenario: "publishers_4".into(),
            ..run
        };
        assert_eq!(
            point.limit_msgs_per_s(2),
            Some(200_000.0),
            "scaling points count"
        );
        let v = point.to_json(2);
        assert_eq!(v["limit_share"], json!(0.1));
        assert_eq!(v["broker_cpu_us_per_msg"], json!(7.0));
        assert_eq!(v["p99_us"], Value::Null);
        assert!(v.get("open_ms").is_none(), "only where measured");
    }

    #[test]
    fn medians_and_quantiles() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), Some(2.5));
        let d: Vec<Duration> = (1..=100).map(Duration::from_micros).collect();
        assert_eq!(quantile(&d, 0.5), Some(Duration::from_micros(50)));
        assert_eq!(quantile(&d, 0.99), Some(Duration::from_micros(99)));
    }
}
