//! The cluster tests' harness: starts the cluster once, runs each case in order under a time
//! limit and `catch_unwind`, prints a libtest-like line per case, and stops the cluster on every
//! way out. Also the cases' tools for driving the nodes: `rabbitmqctl` against one node, halt
//! and restart, and what the cluster reports about nodes, queues and consumers.

use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::pin::Pin;
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

/// The nodes `scripts/cluster.sh` starts, in order; node `i` listens on [`port`]`(i)`.
pub(crate) const NODES: [&str; 3] = ["serena-c1", "serena-c2", "serena-c3"];

/// Where the RabbitMQ server `scripts/extra-node.sh` runs is installed.
const RABBITMQ_SERVER: &str = "/usr/lib/rabbitmq/bin/rabbitmq-server";

/// A case's body.
pub(crate) type CaseFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// One test case: a name, a time limit, and its body. A case passes when its body returns
/// within the limit without panicking.
pub(crate) struct Case {
    /// As printed, and as filters match it.
    pub(crate) name: &'static str,
    /// A case still running after this fails.
    pub(crate) limit: Duration,
    /// The body.
    pub(crate) run: fn() -> CaseFuture,
}

/// The AMQP port of node `i` (0, 1 or 2).
pub(crate) fn port(i: usize) -> u16 {
    5701 + i as u16
}

/// The URI of node `i`.
pub(crate) fn url(i: usize) -> String {
    format!("amqp://guest:guest@127.0.0.1:{}/%2f", port(i))
}

/// The Erlang node name of node `i`, as `rabbitmqctl` prints it.
pub(crate) fn node_name(i: usize) -> String {
    format!("{}@localhost", NODES[i])
}

fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../scripts")
        .join(name)
}

/// Runs a script and returns its standard output; a failure carries its standard error.
pub(crate) fn run_script(name: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new("bash")
        .arg(script(name))
        .args(args)
        .output()
        .map_err(|e| format!("cannot run {name}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{name} {} failed ({}):\n{}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `extra-node.sh` with `args` on tokio's blocking pool (each call starts an Erlang VM
/// and takes a second or more). Panics, failing the case, when the script fails.
pub(crate) async fn node_script(args: &[&str]) -> String {
    let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run_script("extra-node.sh", &args)
    })
    .await
    .expect("the blocking task")
    .unwrap_or_else(|e| panic!("{e}"))
}

/// `rabbitmqctl -q ARGS --formatter json` against `NODES[node]`, parsed.
pub(crate) async fn ctl_json(node: usize, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["ctl", NODES[node], "-q"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--formatter", "json"]);
    let out = node_script(&all).await;
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("rabbitmqctl {args:?}: {e}: {out}"))
}

/// Stops node `i`'s VM, keeping its data (`extra-node.sh halt`).
pub(crate) async fn halt(i: usize) {
    node_script(&["halt", NODES[i]]).await;
}

/// Starts a halted node `i` again and waits until it runs (`extra-node.sh restart`).
pub(crate) async fn restart(i: usize) {
    node_script(&["restart", NODES[i]]).await;
}

/// The running nodes, as node `via` sees the cluster.
pub(crate) async fn running_nodes(via: usize) -> Vec<String> {
    let status = ctl_json(via, &["cluster_status"]).await;
    strings(&status["running_nodes"])
}

fn strings(v: &serde_json::Value) -> Vec<String> {
    let mut out: Vec<String> = v
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// What the cluster says about one queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct QueueInfo {
    /// `quorum`, `stream`, `classic`.
    pub(crate) kind: String,
    /// Nodes holding a replica, sorted.
    pub(crate) members: Vec<String>,
    /// Replicas running now, sorted.
    pub(crate) online: Vec<String>,
    /// The node of the leader replica.
    pub(crate) leader: String,
}

/// Every queue as node `via` lists it (`list_queues name type members online leader`), by
/// name.
pub(crate) async fn queues(via: usize) -> HashMap<String, QueueInfo> {
    let list = ctl_json(
        via,
        &["list_queues", "name", "type", "members", "online", "leader"],
    )
    .await;
    list.as_array()
        .map(|a| {
            a.iter()
                .map(|q| {
                    let info = QueueInfo {
                        kind: q["type"].as_str().unwrap_or_default().to_owned(),
                        members: strings(&q["members"]),
                        online: strings(&q["online"]),
                        leader: q["leader"].as_str().unwrap_or_default().to_owned(),
                    };
                    (q["name"].as_str().unwrap_or_default().to_owned(), info)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// [`queues`]' entry for `queue`, if it is listed.
pub(crate) async fn queue_info(via: usize, queue: &str) -> Option<QueueInfo> {
    queues(via).await.remove(queue)
}

/// The consumers of `queue` as node `via` lists them: (consumer tag, active), sorted by tag.
pub(crate) async fn consumers(via: usize, queue: &str) -> Vec<(String, bool)> {
    let list = ctl_json(
        via,
        &["list_consumers", "queue_name", "consumer_tag", "active"],
    )
    .await;
    let mut out: Vec<(String, bool)> = list
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|c| c["queue_name"] == queue)
                .map(|c| {
                    (
                        c["consumer_tag"].as_str().unwrap_or_default().to_owned(),
                        c["active"].as_bool().unwrap_or(false),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// Polls `check` every 250 ms until it returns `Some`, panicking with `what` after `limit`.
pub(crate) async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// `SERENA_CLUSTER_KEEP` (for working on these tests): use a cluster that already runs, and
/// leave it running at the end.
fn keep() -> bool {
    std::env::var_os("SERENA_CLUSTER_KEEP").is_some()
}

/// Stops the cluster when dropped: at the end, and on a panic that escapes the harness.
struct ClusterGuard;

impl ClusterGuard {
    fn start() -> Result<ClusterGuard, String> {
        // The guard exists before the script runs, so a half-started cluster is stopped too.
        let guard = ClusterGuard;
        if keep() && run_script("cluster.sh", &["status"]).is_ok() {
            eprintln!("SERENA_CLUSTER_KEEP is set: using the cluster that runs");
            return Ok(guard);
        }
        run_script("cluster.sh", &["start"])?;
        Ok(guard)
    }
}

impl Drop for ClusterGuard {
    fn drop(&mut self) {
        if keep() {
            eprintln!("SERENA_CLUSTER_KEEP is set: the cluster stays up (scripts/cluster.sh stop)");
            return;
        }
        stop_cluster();
    }
}

fn stop_cluster() {
    let started = Instant::now();
    match run_script("cluster.sh", &["stop"]) {
        Ok(_) => eprintln!(
            "cluster stopped in {:.1} s",
            started.elapsed().as_secs_f64()
        ),
        Err(e) => eprintln!("could not stop the cluster: {e}"),
    }
}

/// Stops the cluster and exits on SIGINT or SIGTERM.
async fn stop_on_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return;
    };
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
    }
    eprintln!("interrupted: stopping the cluster");
    stop_cluster();
    std::process::exit(130);
}

/// What the command line selects, read the way libtest reads it: words are filters (a case
/// runs when its name contains one, or equals one with `--exact`), `--skip WORD` leaves cases
/// out, `--ignored` selects none (no case is ignored), `--list` lists instead of running, and
/// other flags (`--nocapture`, `--test-threads=N`, ...) change nothing here.
struct Selection {
    list: bool,
    cases: Vec<&'static Case>,
}

fn select(cases: &'static [Case], args: &[String]) -> Selection {
    let (mut filters, mut skips) = (Vec::new(), Vec::new());
    let (mut exact, mut ignored, mut list) = (false, false, false);
    let mut args = args.iter();
    while let Some(a) = args.next() {
        match a.as_str() {
            "--skip" => skips.extend(args.next().cloned()),
            "--exact" => exact = true,
            "--ignored" => ignored = true,
            "--list" => list = true,
            // Flags that take a value in the next argument.
            "--format" | "--color" | "--test-threads" | "--logfile" | "-Z" => {
                args.next();
            }
            flag if flag.starts_with('-') => {}
            word => filters.push(word.to_owned()),
        }
    }
    let matches = |name: &str, pattern: &str| {
        if exact {
            name == pattern
        } else {
            name.contains(pattern)
        }
    };
    let cases = cases
        .iter()
        .filter(|_| !ignored)
        .filter(|c| filters.is_empty() || filters.iter().any(|f| matches(c.name, f)))
        .filter(|c| !skips.iter().any(|s| matches(c.name, s)))
        .collect();
    Selection { list, cases }
}

/// Runs the selected cases (see [`select`]) against one cluster and reports like libtest.
pub(crate) fn main(cases: &'static [Case]) -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Selection {
        list,
        cases: selected,
    } = select(cases, &args);
    if list {
        for c in &selected {
            println!("{}: test", c.name);
        }
        return ExitCode::SUCCESS;
    }
    println!("\nrunning {} tests", selected.len());
    if selected.is_empty() {
        println!("\ntest result: ok. 0 passed; 0 failed; finished in 0.00s\n");
        return ExitCode::SUCCESS;
    }
    let started = Instant::now();
    if !std::path::Path::new(RABBITMQ_SERVER).exists() {
        eprintln!(
            "\nerror: {RABBITMQ_SERVER} is missing: the cluster tests need RabbitMQ installed \
             (bash .ci/ensure-broker installs it). Failing instead of skipping.\n"
        );
        return ExitCode::FAILURE;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.spawn(stop_on_signal());
    let guard = match ClusterGuard::start() {
        Ok(g) => g,
        Err(e) => {
            eprintln!("\nerror: the cluster did not start:\n{e}");
            return ExitCode::FAILURE;
        }
    };
    println!(
        "cluster of {} nodes started in {:.1} s",
        NODES.len(),
        started.elapsed().as_secs_f64()
    );
    let mut failed = Vec::new();
    for case in &selected {
        let case_started = Instant::now();
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
            runtime.block_on(async { tokio::time::timeout(case.limit, (case.run)()).await })
        }));
        let secs = case_started.elapsed().as_secs_f64();
        match outcome {
            Ok(Ok(())) => println!("test {} ... ok ({secs:.1} s)", case.name),
            Ok(Err(_)) => {
                println!(
                    "test {} ... FAILED: still running after {:?}",
                    case.name, case.limit
                );
                failed.push(case.name);
            }
            Err(_) => {
                println!("test {} ... FAILED ({secs:.1} s)", case.name);
                failed.push(case.name);
            }
        }
    }
    // Whatever a failed case left running goes before the cluster does.
    runtime.shutdown_timeout(Duration::from_secs(5));
    drop(guard);
    let secs = started.elapsed().as_secs_f64();
    if failed.is_empty() {
        println!(
            "\ntest result: ok. {} passed; 0 failed; finished in {secs:.2}s\n",
            selected.len()
        );
        ExitCode::SUCCESS
    } else {
        println!("\nfailures:");
        for name in &failed {
            println!("    {name}");
        }
        println!(
            "\ntest result: FAILED. {} passed; {} failed; finished in {secs:.2}s\n",
            selected.len() - failed.len(),
            failed.len()
        );
        ExitCode::FAILURE
    }
}

/// The cluster tests' topology, `tests/cluster/topology.toml`.
pub(crate) fn topology() -> serena::topology::Topology {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("cluster/topology.toml");
    serena::topology::Topology::load(&path).unwrap_or_else(|e| panic!("{e}"))
}

/// A connection configuration for node `i`, named `name` in the broker's listings.
pub(crate) fn config(i: usize, name: &str) -> serena::ConnectionConfig {
    serena::ConnectionConfig::from_uri(&url(i))
        .expect("a valid URI")
        .with_connection_name(Some(name.to_owned()))
        .with_heartbeat(Duration::from_secs(5))
}
