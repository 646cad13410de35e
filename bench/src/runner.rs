//! The parent process: runs every scenario for every client in turn (A B C A B C ...), each
//! run in a fresh child process of this same program, and collects their records.
//!
//! A child per run keeps the clients apart: each gets a new tokio runtime with the same worker
//! count, a clean heap and its own `ru_maxrss`. The parent prepares what must not be measured
//! (the consume_ack prefill, with serena, identical for every client) and deletes the run's
//! queues afterwards, also when the run failed.

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::report::Run;
use crate::scenario::{self, Names, Params, Result, Scenario};
use crate::{amqprs_client::Amqprs, lapin_client::Lapin, serena_client, serena_client::Serena};

/// Worker threads of every client's multi-thread runtime.
pub const WORKERS: usize = 2;

/// The tokio runtime a client runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// `new_multi_thread` with [`WORKERS`] workers.
    MultiThread,
    /// `new_current_thread`: every task on the thread that runs the scenario (lapin still
    /// does its socket I/O on a thread of its own).
    CurrentThread,
}

impl Flavor {
    /// Both, in run order.
    pub const ALL: [Flavor; 2] = [Flavor::MultiThread, Flavor::CurrentThread];

    /// The name on the command line and in the output (tokio's).
    pub fn name(self) -> &'static str {
        match self {
            Flavor::MultiThread => "multi_thread",
            Flavor::CurrentThread => "current_thread",
        }
    }

    /// Parses a name given by [`name`](Self::name).
    pub fn parse(name: &str) -> Option<Flavor> {
        Flavor::ALL.into_iter().find(|f| f.name() == name)
    }
}

/// What the parent tells a child besides its client, scenario and queue-name base.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChildOptions {
    /// Smaller sizes.
    pub quick: bool,
    /// The runtime to run on.
    pub flavor: Flavor,
    /// Queue names padded to this many bytes (`--name-len`).
    pub name_len: Option<usize>,
}

impl ChildOptions {
    /// The options as command-line arguments.
    fn to_args(self) -> Vec<String> {
        let mut args = vec!["--flavor".to_owned(), self.flavor.name().to_owned()];
        if self.quick {
            args.push("--quick".to_owned());
        }
        if let Some(len) = self.name_len {
            args.extend(["--name-len".to_owned(), len.to_string()]);
        }
        args
    }

    /// Parses [`to_args`](Self::to_args) output.
    pub fn parse(args: &[String]) -> std::result::Result<ChildOptions, String> {
        let mut options = ChildOptions {
            quick: false,
            flavor: Flavor::MultiThread,
            name_len: None,
        };
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--quick" => options.quick = true,
                "--flavor" => {
                    let name = args.next().map_or("", String::as_str);
                    options.flavor =
                        Flavor::parse(name).ok_or(format!("unknown runtime flavor {name:?}"))?;
                }
                "--name-len" => {
                    let len = args.next().and_then(|n| n.parse().ok());
                    options.name_len = Some(len.ok_or("--name-len needs a number")?);
                }
                other => return Err(format!("unknown child argument {other:?}")),
            }
        }
        Ok(options)
    }
}

/// The clients, in run order.
pub const CLIENTS: [&str; 3] = ["serena", "lapin", "amqprs"];

/// What the command line asked for.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Smaller sizes and fewer repetitions.
    pub quick: bool,
    /// Print the `--json` document instead of the table.
    pub json: bool,
    /// Repetitions of the whole A B C cycle.
    pub reps: usize,
    /// Runtime flavors every client runs on.
    pub flavors: Vec<Flavor>,
    /// Pad every queue name to this many bytes (`--name-len`).
    pub name_len: Option<usize>,
    /// Scenarios to run.
    pub scenarios: Vec<Scenario>,
    /// Clients to run.
    pub clients: Vec<&'static str>,
    /// Run the scaling points instead of the scenarios.
    pub scaling: bool,
    /// Scaling dimensions to run (with `scaling`).
    pub dimensions: Vec<crate::scaling::Dimension>,
}

/// Builds the tokio runtime a client runs on.
pub fn runtime(flavor: Flavor) -> tokio::runtime::Runtime {
    let mut builder = match flavor {
        Flavor::MultiThread => tokio::runtime::Builder::new_multi_thread(),
        Flavor::CurrentThread => tokio::runtime::Builder::new_current_thread(),
    };
    if flavor == Flavor::MultiThread {
        builder.worker_threads(WORKERS);
    }
    builder
        .enable_all()
        .build()
        .expect("build the tokio runtime")
}

/// Child side: runs one scenario with one client and prints its record for the parent.
pub fn child(client: &str, scenario: Scenario, options: ChildOptions, base: &str) -> Result<()> {
    let p = Params::new(options.quick);
    let names = Names::new(base, options.name_len);
    let rt = runtime(options.flavor);
    let outcome = rt.block_on(async {
        match (client, scenario) {
            ("serena", Scenario::PublishNoconfirm) => {
                scenario::run_unconfirmed::<Serena>(&p, &names).await
            }
            ("lapin", Scenario::PublishNoconfirm) => {
                scenario::run_unconfirmed::<Lapin>(&p, &names).await
            }
            ("amqprs", Scenario::PublishNoconfirm) => {
                scenario::run_unconfirmed::<Amqprs>(&p, &names).await
            }
            ("serena", Scenario::PublishReliable) => {
                crate::serena_client::publish_reliable(&p, &names).await
            }
            ("serena", Scenario::PublishConfirmIds) => {
                crate::serena_client::publish_confirm_ids(&p, &names).await
            }
            ("serena", _) => scenario::run::<Serena>(scenario, &p, &names).await,
            ("lapin", _) => scenario::run::<Lapin>(scenario, &p, &names).await,
            ("amqprs", _) => scenario::run::<Amqprs>(scenario, &p, &names).await,
            (other, _) => Err(format!("unknown client {other:?}").into()),
        }
    })?;
    // Drop the runtime (and any task a client left behind) before reporting.
    rt.shutdown_timeout(Duration::from_secs(5));
    let run = Run::new(client, scenario, options.flavor.name(), outcome);
    println!("{}", run.to_wire());
    Ok(())
}

/// A unique queue-name base for the next run of this process: `sb.{pid % 10000}.{n}`, `n`
/// counting runs from 1. Short on purpose: RabbitMQ's cost per message steps up once a queue
/// name (the routing key here) reaches 64 bytes, and the benchmark must not measure that.
pub fn base() -> String {
    static RUNS: AtomicU64 = AtomicU64::new(1);
    base_name(std::process::id(), RUNS.fetch_add(1, Ordering::Relaxed))
}

/// The base of run `n` of process `pid`.
fn base_name(pid: u32, n: u64) -> String {
    format!("sb.{}.{n}", pid % 10_000)
}

/// How long one child may take before it is killed and the run fails.
fn child_limit(quick: bool) -> Duration {
    if quick {
        Duration::from_secs(120)
    } else {
        Duration::from_secs(600)
    }
}

/// Reads a child's stdout and stderr on threads so neither pipe can fill up and stall it.
fn drain(child: &mut Child) -> [std::thread::JoinHandle<String>; 2] {
    fn spawn(mut r: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = r.read_to_string(&mut s);
            s
        })
    }
    [
        spawn(child.stdout.take().expect("piped stdout")),
        spawn(child.stderr.take().expect("piped stderr")),
    ]
}

/// Runs one child and returns its record.
fn run_child(
    plan: &Plan,
    flavor: Flavor,
    client: &str,
    scenario: Scenario,
    base: &str,
) -> Result<Run> {
    run_child_with(plan, flavor, "--child", client, scenario.name(), base)
}

/// Runs one child (`flag` `--child` for a scenario, `--child-scaling` for a scaling point
/// named `scenario`) and returns its record.
pub fn run_child_with(
    plan: &Plan,
    flavor: Flavor,
    flag: &str,
    client: &str,
    scenario: &str,
    base: &str,
) -> Result<Run> {
    let exe = std::env::current_exe()?;
    let mut cmd = Command::new(exe);
    cmd.args([flag, client, scenario, base]);
    cmd.args(
        ChildOptions {
            quick: plan.quick,
            flavor,
            name_len: plan.name_len,
        }
        .to_args(),
    );
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let [out, err] = drain(&mut child);
    let deadline = Instant::now() + child_limit(plan.quick);
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() > deadline {
            // Our own child, by its handle.
            child.kill()?;
            child.wait()?;
            return Err(format!(
                "{client} {scenario}: no result within {:?}; the run was killed",
                child_limit(plan.quick)
            )
            .into());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    if !status.success() {
        return Err(format!(
            "{client} {scenario} failed ({status}):\n{}",
            stderr.trim_end()
        )
        .into());
    }
    if !stderr.trim().is_empty() {
        eprintln!("{client} {scenario} said on stderr:\n{}", stderr.trim_end());
    }
    let run = stdout
        .lines()
        .find_map(Run::from_wire)
        .ok_or_else(|| format!("{client} {scenario}: no result line in its output:\n{stdout}"))?;
    if run.client != client || run.scenario != scenario || run.flavor != flavor.name() {
        return Err(format!("{client} {scenario}: the child reported {run:?}").into());
    }
    Ok(run)
}

/// One run: prepare, run the child, clean up (always), return the record.
fn run_one(
    plan: &Plan,
    rt: &tokio::runtime::Runtime,
    flavor: Flavor,
    client: &str,
    scenario: Scenario,
) -> Result<Run> {
    let base = base();
    let names = Names::new(&base, plan.name_len);
    let p = Params::new(plan.quick);
    let prepared = match scenario {
        Scenario::ConsumeAck => rt.block_on(serena_client::prefill(&p, &names.main)),
        _ => Ok(()),
    };
    let result = prepared.and_then(|()| run_child(plan, flavor, client, scenario, &base));
    let cleaned = rt.block_on(serena_client::delete_queues(&names));
    let run = result?;
    cleaned.map_err(|e| format!("deleting the queues of {base}: {e}"))?;
    Ok(run)
}

/// Parent side: every repetition, every scenario, every runtime flavor, every client in turn.
pub fn run_all(plan: &Plan) -> Result<Vec<Run>> {
    // The parent's own runtime, for prefills and cleanup only; nothing measured runs on it.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut runs = Vec::new();
    for rep in 1..=plan.reps {
        for &scenario in &plan.scenarios {
            for &flavor in &plan.flavors {
                for &client in &plan.clients {
                    if !scenario.runs_with(client) {
                        continue;
                    }
                    let f = flavor.name();
                    let mut run = run_one(plan, &rt, flavor, client, scenario)
                        .map_err(|e| format!("repetition {rep}, {client} {scenario} {f}: {e}"))?;
                    run.rep = rep;
                    eprintln!(
                        "rep {rep}/{} {scenario:<15} {f:<14} {client:<7} {:>10.0} msgs/s \
                         {:>7.2} µs CPU/msg {}",
                        plan.reps,
                        run.msgs_per_s(),
                        run.cpu_us_per_msg(),
                        crate::report::progress_cells(&run),
                    );
                    runs.push(run);
                }
            }
        }
    }
    Ok(runs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::NAME_LEN;

    #[test]
    fn queue_names_are_short() {
        // The longest base: a four-digit pid remainder and a million runs.
        for base in [base_name(u32::MAX, 1_000_000), base_name(7, 1), base()] {
            let names = Names::new(&base, None);
            for name in [&names.main, &names.reply] {
                assert!(name.len() < 32, "{name:?} is {} bytes", name.len());
            }
            for len in [*NAME_LEN.start(), 60, 64, 65, 70, *NAME_LEN.end()] {
                let padded = Names::new(&base, Some(len));
                assert_eq!((padded.main.len(), padded.reply.len()), (len, len));
                assert!(padded.main.starts_with(&names.main));
            }
        }
        assert_ne!(base(), base(), "every run gets its own names");
    }

    #[test]
    fn child_options_round_trip() {
        for flavor in Flavor::ALL {
            for (quick, name_len) in [(false, None), (true, Some(64))] {
                let options = ChildOptions {
                    quick,
                    flavor,
                    name_len,
                };
                assert_eq!(ChildOptions::parse(&options.to_args()), Ok(options));
            }
        }
        assert!(ChildOptions::parse(&["--flavor".into(), "green".into()]).is_err());
    }
}
