//! Compares serena with lapin and amqprs on a local RabbitMQ (127.0.0.1:5672, guest/guest).
//!
//! ```text
//! cargo run --release --manifest-path bench/Cargo.toml -- [--scaling] [--quick] [--json]
//!     [--reps N] [--only SCENARIO,...|DIMENSION,...] [--clients CLIENT,...]
//!     [--flavor multi_thread|current_thread|both] [--name-len N]
//! ```
//!
//! Each scenario runs for each client in turn (serena, lapin, amqprs, serena, ...), several
//! repetitions, every run in a fresh child process, on a multi-thread tokio runtime of two
//! workers and on a current-thread runtime (`--flavor` picks one of them). Progress
//! goes to stderr; at the end a table of medians goes to stdout, or with `--json` one JSON
//! document (the date, the machine, every run and the medians; see `report::document`).
//! Any count or size that does not match fails the whole run with a non-zero exit.
//! `--scaling` runs the scaling points instead (see `scaling`): body size, channels and
//! concurrent publishers, three repetitions by default.
//!
//! Layout: `scenario` (sizes, the `Client` and `UnconfirmedClient` contracts, checks),
//! `serena_client`, `lapin_client`, `amqprs_client` (one implementation each), `measure`
//! (getrusage, RSS, the broker's CPU), `runner` (the parent and child processes, runtime
//! flavors, queue names), `report` (records, the table, the JSON document, medians), `machine`
//! (date, kernel), `scaling` (the scaling points and their tables).

mod amqprs_client;
mod lapin_client;
mod machine;
mod measure;
mod report;
mod runner;
mod scaling;
mod scenario;
mod serena_client;

use std::pin::Pin;
use std::process::ExitCode;
use std::time::Instant;

use runner::{CLIENTS, ChildOptions, Flavor, Plan};
use scaling::{Dimension, Point};
use scenario::Scenario;

/// The next item of a stream (lapin's consumer is a `futures_core::Stream`).
pub(crate) async fn next<S: futures_core::Stream + Unpin>(stream: &mut S) -> Option<S::Item> {
    std::future::poll_fn(|cx| Pin::new(&mut *stream).poll_next(cx)).await
}

const USAGE: &str = "usage: serena-bench [--scaling] [--quick] [--json] [--reps N] \
[--only SCENARIO,...|DIMENSION,...] [--clients serena,lapin,amqprs] \
[--flavor multi_thread|current_thread|both] [--name-len N]
scenarios: publish_confirm publish_noconfirm consume_ack rpc_latency rpc_direct large_body \
many_channels publish_reliable publish_confirm_ids (the last two serena's only)
scaling dimensions (with --scaling): body channels publishers";

fn parse_plan(args: &[String]) -> Result<Plan, String> {
    let mut plan = Plan {
        quick: false,
        flavors: Flavor::ALL.to_vec(),
        name_len: None,
        json: false,
        reps: 0,
        scenarios: Scenario::ALL.to_vec(),
        clients: CLIENTS.to_vec(),
        scaling: false,
        dimensions: Dimension::ALL.to_vec(),
    };
    let mut only = None;
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--quick" => plan.quick = true,
            "--json" => plan.json = true,
            "--scaling" => plan.scaling = true,
            "--reps" => {
                plan.reps = value()?
                    .parse()
                    .ok()
                    .filter(|&n| n > 0)
                    .ok_or("--reps takes a positive number")?;
            }
            "--only" => only = Some(value()?.clone()),
            "--name-len" => {
                let len = value()?
                    .parse()
                    .ok()
                    .filter(|n| scenario::NAME_LEN.contains(n));
                plan.name_len = Some(len.ok_or(format!(
                    "--name-len takes {}..={} bytes",
                    scenario::NAME_LEN.start(),
                    scenario::NAME_LEN.end()
                ))?);
            }
            "--flavor" => {
                plan.flavors = match value()?.as_str() {
                    "both" => Flavor::ALL.to_vec(),
                    name => vec![Flavor::parse(name).ok_or(format!(
                        "--flavor takes multi_thread, current_thread or both, not {name:?}"
                    ))?],
                };
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
    if let Some(only) = only {
        if plan.scaling {
            plan.dimensions = only
                .split(',')
                .map(|d| Dimension::parse(d).ok_or(format!("unknown dimension {d:?}")))
                .collect::<Result<_, _>>()?;
        } else {
            plan.scenarios = only
                .split(',')
                .map(|s| Scenario::parse(s).ok_or(format!("unknown scenario {s:?}")))
                .collect::<Result<_, _>>()?;
        }
    }
    if plan.reps == 0 {
        // The scaling run has 13 points: three repetitions keep it to a few minutes.
        plan.reps = if plan.quick || plan.scaling { 3 } else { 5 };
    }
    Ok(plan)
}

/// The runtimes of a run, for its first line.
fn flavors_line(plan: &Plan) -> String {
    let names: Vec<String> = plan
        .flavors
        .iter()
        .map(|f| match f {
            Flavor::MultiThread => format!("multi_thread ({} workers)", runner::WORKERS),
            Flavor::CurrentThread => "current_thread".to_owned(),
        })
        .collect();
    format!("runtime {}", names.join(" and "))
}

/// The broker's version, asked once at the start (outside every measured part).
fn rabbitmq_version() -> scenario::Result<Option<String>> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(serena_client::broker_version())
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
        let options = match ChildOptions::parse(rest) {
            Ok(options) => options,
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::FAILURE;
            }
        };
        return match runner::child(client, scenario, options, base) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("{client} {scenario}: {e}");
                ExitCode::FAILURE
            }
        };
    }

    // A child process of the scaling mode: one client, one point.
    if let [flag, client, point, base, rest @ ..] = args.as_slice()
        && flag == "--child-scaling"
    {
        let Some(point) = Point::parse(point) else {
            eprintln!("unknown scaling point {point:?}");
            return ExitCode::FAILURE;
        };
        let options = match ChildOptions::parse(rest) {
            Ok(options) => options,
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::FAILURE;
            }
        };
        return match scaling::child(client, point, options, base) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("{client} {}: {e}", point.name());
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
    let mut meta = report::Meta {
        mode: if plan.scaling { "scaling" } else { "scenarios" },
        date: machine::utc_now(),
        args: args.clone(),
        quick: plan.quick,
        reps: plan.reps,
        flavors: plan.flavors.iter().map(|f| f.name()).collect(),
        queue_name_len: plan.name_len,
        rabbitmq_version: None,
    };
    match rabbitmq_version() {
        Ok(Some(version)) => {
            eprintln!("broker: RabbitMQ {version}");
            meta.rabbitmq_version = Some(version);
        }
        Ok(None) => eprintln!("broker: RabbitMQ did not say its version"),
        Err(e) => eprintln!("broker: could not read its version: {e}"),
    }
    match measure::broker_pid() {
        Some(pid) => eprintln!(
            "broker: beam.smp pid {pid}; its CPU is read from /proc/{pid}/stat around every \
             measured part (the whole broker: other traffic to it counts too)"
        ),
        None => eprintln!(
            "broker: no beam.smp started with `-s rabbit boot` found; broker CPU is absent"
        ),
    }
    if let Some(len) = plan.name_len {
        eprintln!("queue names (and routing keys) padded to {len} bytes");
    }
    let started = Instant::now();
    if plan.scaling {
        eprintln!(
            "{} scaling run: {} repetition(s) of {} point(s) × {} client(s) × {}",
            if plan.quick { "quick" } else { "full" },
            plan.reps,
            Point::all(&plan.dimensions).len(),
            plan.clients.len(),
            flavors_line(&plan),
        );
        return match scaling::run_all(&plan) {
            Ok(runs) => {
                if plan.json {
                    let mut doc = report::document(&meta, &runs);
                    report::annotate(&mut doc, scaling::json_fields);
                    println!("{doc:#}");
                } else {
                    print!(
                        "{}",
                        scaling::tables(&runs, &plan.dimensions, &plan.flavors, &plan.clients)
                    );
                }
                eprintln!("done in {:.0} s", started.elapsed().as_secs_f64());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("FAILED: {e}");
                ExitCode::FAILURE
            }
        };
    }
    eprintln!(
        "{} run: {} repetition(s) of {} scenario(s) × {} client(s) × {}",
        if plan.quick { "quick" } else { "full" },
        plan.reps,
        plan.scenarios.len(),
        plan.clients.len(),
        flavors_line(&plan),
    );
    match runner::run_all(&plan) {
        Ok(runs) => {
            if plan.json {
                println!("{:#}", report::document(&meta, &runs));
            } else {
                let flavors: Vec<&str> = plan.flavors.iter().map(|f| f.name()).collect();
                print!(
                    "{}",
                    report::table(&runs, &plan.scenarios, &flavors, &plan.clients)
                );
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
