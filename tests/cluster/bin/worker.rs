//! One worker process for the cluster tests: a supervisor running one consumer on one queue,
//! which prints a line for every delivery before acknowledging it, so that a test running
//! several of these processes can tell which one the broker feeds.
//!
//! ```text
//! cluster-worker --url URI --queue NAME --tag TAG [--prefetch N] [--delay-ms MS]
//! ```
//!
//! `--url` is what `SERENA_URL` would hold. `--tag` is the consumer tag, so that
//! `rabbitmqctl list_consumers` shows which process is which; `--delay-ms` is how long each
//! delivery's "work" takes.
//!
//! Standard output, one line each: `ready` once the consumer is registered, then
//! `delivery BODY REDELIVERED` (`0` or `1`) for every message, written before its ack. The
//! exit code is 0 after SIGTERM or SIGINT (a graceful stop), 1 when the supervisor stopped on
//! an error, 2 on bad usage. When its standard input closes, the process that started it is
//! gone: it exits at once with 3, so a test that dies leaves no worker behind.

use std::io::{Read, Write};
use std::process::ExitCode;
use std::time::Duration;

use serena::ConnectionConfig;
use serena::worker::{Backoff, ConsumerSpec, Outcome, Supervisor};
use serena_tests::handlers::handler_fn;

struct Args {
    url: String,
    queue: String,
    tag: String,
    prefetch: u16,
    delay: Duration,
}

fn parse_args() -> Result<Args, String> {
    let mut url = None;
    let mut queue = None;
    let mut tag = None;
    let mut prefetch = 10;
    let mut delay = Duration::ZERO;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--url" => url = Some(value()?),
            "--queue" => queue = Some(value()?),
            "--tag" => tag = Some(value()?),
            "--prefetch" => {
                prefetch = value()?
                    .parse()
                    .map_err(|_| "--prefetch must be 1 to 65535".to_owned())?;
            }
            "--delay-ms" => {
                let ms: u64 = value()?
                    .parse()
                    .map_err(|_| "--delay-ms must be a number".to_owned())?;
                delay = Duration::from_millis(ms);
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(Args {
        url: url.ok_or("--url is required")?,
        queue: queue.ok_or("--queue is required")?,
        tag: tag.ok_or("--tag is required")?,
        prefetch,
        delay,
    })
}

/// Writes one line to standard output and flushes it, so the test sees it at once.
fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    // A closed pipe means the test is gone; the worker carries on until it is stopped.
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("cluster-worker: {e}");
            return ExitCode::from(2);
        }
    };
    let config = match ConnectionConfig::from_uri(&args.url) {
        Ok(c) => c
            .with_connection_name(Some(format!("cluster-worker {}", args.tag)))
            .with_heartbeat(Duration::from_secs(5)),
        Err(e) => {
            eprintln!("cluster-worker: {e}");
            return ExitCode::from(2);
        }
    };
    std::thread::spawn(|| {
        let mut buf = [0u8; 64];
        let mut stdin = std::io::stdin();
        while matches!(stdin.read(&mut buf), Ok(n) if n > 0) {}
        std::process::exit(3);
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(async move {
        let spec = ConsumerSpec {
            prefetch: Some(args.prefetch),
            consumer_tag: Some(args.tag.into()),
            ..ConsumerSpec::new("cluster_worker", args.queue)
        };
        let delay = args.delay;
        let handler = handler_fn(spec, move |d| async move {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            let body = String::from_utf8_lossy(&d.body).into_owned();
            say(&format!("delivery {body} {}", u8::from(d.redelivered)));
            Outcome::Ack
        });
        let supervisor = Supervisor::new(config)
            .consumer(handler)
            .backoff(Backoff {
                initial: Duration::from_millis(100),
                max: Duration::from_secs(1),
                ..Backoff::default()
            })
            .shutdown_timeout(Duration::from_secs(5));
        let mut handle = supervisor.handle();
        tokio::spawn(async move {
            handle.ready().await;
            say("ready");
        });
        match supervisor.run().await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("cluster-worker: {e}");
                ExitCode::from(1)
            }
        }
    })
}
