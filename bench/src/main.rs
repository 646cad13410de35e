//! Compares serena with lapin and amqprs on a local RabbitMQ (127.0.0.1:5672, guest/guest).
//!
//! ```text
//! cargo run --release --manifest-path bench/Cargo.toml -- [--quick] [--json]
//!     [--reps N] [--only SCENARIO,...] [--clients CLIENT,...]
//! ```
//!
//! Each scenario runs for each client in turn (serena, lapin, amqprs, serena, ...), several
//! repetitions, every run in a fresh child process on a tokio runtime of two workers. With
//! `--json` each run prints one JSON line; otherwise a table of medians is printed at the end.
//! Any count or size that does not match fails the whole run with a non-zero exit.
//!
//! Layout: `scenario` (sizes, the `Client` contract, checks), `serena_client`, `lapin_client`,
//! `amqprs_client` (one implementation each), `measure` (getrusage, RSS), `runner` (the
//! parent and child processes), `report` (records, JSON, medians).

mod amqprs_client;
mod lapin_client;
mod measure;
mod report;
mod runner;
mod scenario;
mod serena_client;

use std::pin::Pin;
use std::process::ExitCode;
use std::time::Instant;

use runner::{CLIENTS, Plan};
use scenario::Scenario;

/// The next item of a stream (lapin's consumer is a `futures_core::Stream`).
pub(crate) async fn next<S: futures_core::Stream + Unpin>(stream: &mut S) -> Option<S::Item> {
    std::future::poll_fn(|cx| Pin::new(&mut *stream).poll_next(cx)).await
}

const USAGE: &str = "usage: serena-bench [--quick] [--json] [--reps N] \
[--only SCENARIO,...] [--clients serena,lapin,amqprs]
scenarios: publish_confirm consume_ack rpc_latency large_body many_channels";

fn parse_plan(args: &[String]) -> Result<Plan, String> {
    let mut plan = Plan {
        quick: false,
        json: false,
        reps: 0,
        scenarios: Scenario::ALL.to_vec(),
        clients: CLIENTS.to_vec(),
    };
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--quick" => plan.quick = true,
            "--json" => plan.json = true,
            "--reps" => {
                plan.reps = value()?
                    .parse()
                    .ok()
                    .filter(|&n| n > 0)
                    .ok_or("--reps takes a positive number")?;
            }
            "--only" => {
                plan.scenarios = value()?
                    .split(',')
                    .map(|s| Scenario::parse(s).ok_or(format!("unknown scenario {s:?}")))
                    .collect::<Result<_, _>>()?;
            }
            "--clients" => {
                plan.clients = value()?
                    .split(',')
                    .map(|c| {
                        CLIENTS
                            .into_iter()
                            .find(|k| *k == c)
                            .ok_or(format!("unknown client {c:?}"))
                    })
                    .collect::<Result<_, _>>()?;
            }
            "-h" | "--help" => return Err(USAGE.to_owned()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    if plan.reps == 0 {
        plan.reps = if plan.quick { 3 } else { 5 };
    }
    Ok(plan)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();

    // A child process: one client, one scenario.
    if let [flag, client, scenario, base, rest @ ..] = args.as_slice()
        && flag == "--child"
    {
        let Some(scenario) = Scenario::parse(scenario) else {
            eprintln!("unknown scenario {scenario:?}");
            return ExitCode::FAILURE;
        };
        let quick = rest.iter().any(|a| a == "--quick");
        return match runner::child(client, scenario, quick, base) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("{client} {scenario}: {e}");
                ExitCode::FAILURE
            }
        };
    }

    let plan = match parse_plan(&args) {
        Ok(plan) => plan,
        Err(msg) => {
            eprintln!("{msg}");
            return ExitCode::from(2);
        }
    };
    let started = Instant::now();
    eprintln!(
        "{} run: {} repetition(s) of {} scenario(s) × {} client(s), {} tokio workers each",
        if plan.quick { "quick" } else { "full" },
        plan.reps,
        plan.scenarios.len(),
        plan.clients.len(),
        runner::WORKERS,
    );
    match runner::run_all(&plan) {
        Ok(runs) => {
            if !plan.json {
                print!("{}", report::table(&runs, &plan.scenarios, &plan.clients));
            }
            eprintln!("done in {:.0} s", started.elapsed().as_secs_f64());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("FAILED: {e}");
            ExitCode::FAILURE
        }
    }
}
