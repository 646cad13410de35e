//! The worker's HTTP endpoint (feature `http`) scraped by a plain HTTP/1.1 client on a
//! `TcpStream`: `/metrics` counts what the worker did, `/readyz` follows the broker
//! connection through a cut and the restart, a refused address stops the supervisor before it
//! connects, and `SERENA_HTTP_ADDR` turns the endpoint on without code (or, holding no
//! address, stops the supervisor), each in a child process of this binary.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serena::proto::FieldTable;
use serena::worker::{
    ConsumerSpec, DeliveryContext, Handler, HandlerFuture, HttpError, Outcome, Supervisor,
    SupervisorError,
};
use serena_tests::proxy::Proxy;
use serena_tests::{config, unique_name, within};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Notify;

use super::{depth_and_delete, fast_backoff, fill};

/// A response: status code, body.
struct Reply {
    status: u16,
    body: String,
}

/// `GET path` on `addr` with a fresh connection, read to its close.
async fn get(addr: SocketAddr, path: &str) -> Reply {
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect to the endpoint");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut raw = Vec::new();
    within(
        Duration::from_secs(10),
        "the endpoint's answer",
        stream.read_to_end(&mut raw),
    )
    .await
    .expect("read");
    let raw = String::from_utf8(raw).expect("utf-8 response");
    let (head, body) = raw.split_once("\r\n\r\n").expect("a head and a body");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    Reply {
        status,
        body: body.to_owned(),
    }
}

/// The samples of a Prometheus text page: `name{labels}` -> value.
fn samples(page: &str) -> HashMap<String, f64> {
    page.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (key, value) = l.rsplit_once(' ')?;
            Some((key.to_owned(), value.parse().ok()?))
        })
        .collect()
}

/// The value of `name` with exactly `labels` (in the exporter's order), 0 when absent.
fn sample(page: &HashMap<String, f64>, name: &str, labels: &[(&str, &str)]) -> f64 {
    let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    let key = if labels.is_empty() {
        name.to_owned()
    } else {
        format!("{name}{{{}}}", labels.join(","))
    };
    page.get(&key).copied().unwrap_or(0.0)
}

/// Acks most messages, rejects every fifth, and publishes a copy of every tenth through the
/// handler's `Publisher` to `copies`; the first delivery also publishes to a queue that does
/// not exist (returned unroutable).
struct Counting {
    spec: ConsumerSpec,
    copies: String,
    handled: Arc<AtomicU32>,
    done: Arc<Notify>,
}

impl Handler for Counting {
    fn spec(&self) -> ConsumerSpec {
        self.spec.clone()
    }

    fn call<'a>(&'a self, ctx: &'a DeliveryContext) -> HandlerFuture<'a> {
        Box::pin(async move {
            let n: u32 = std::str::from_utf8(&ctx.delivery.body)
                .expect("utf-8")
                .parse()
                .expect("number");
            if n == 0 {
                let missing = ctx
                    .publisher
                    .publish(
                        "",
                        &format!("{}-missing", self.copies),
                        "x",
                        Default::default(),
                    )
                    .await;
                assert!(matches!(missing, Err(serena::Error::Returned(_))));
            }
            if n.is_multiple_of(10) {
                ctx.publisher
                    .publish(
                        "",
                        &self.copies,
                        ctx.delivery.body.clone(),
                        Default::default(),
                    )
                    .await
                    .expect("the copy is confirmed");
            }
            self.handled.fetch_add(1, Ordering::SeqCst);
            self.done.notify_one();
            if n % 5 == 4 {
                Outcome::Reject
            } else {
                Outcome::Ack
            }
        })
    }
}

fn expiring() -> FieldTable {
    let mut arguments = FieldTable::new();
    arguments.insert("x-expires", 60_000_i64);
    arguments
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scrape_counts_what_the_worker_did() {
    const MESSAGES: u32 = 200;
    let queue = unique_name("http-metrics");
    let copies = unique_name("http-copies");
    let connection = unique_name("http-metrics-conn");
    fill(&queue, expiring(), MESSAGES).await;
    fill(&copies, expiring(), 0).await;
    let handled = Arc::new(AtomicU32::new(0));
    let done = Arc::new(Notify::new());
    let stop = Arc::new(Notify::new());
    let mut spec = ConsumerSpec::new("counting", queue.clone());
    spec.concurrency = Some(4);
    let supervisor = Supervisor::new(config(&connection))
        .backoff(fast_backoff())
        .consumer(Counting {
            spec,
            copies: copies.clone(),
            handled: handled.clone(),
            done: done.clone(),
        })
        .http(([127, 0, 0, 1], 0).into());
    let mut handle = supervisor.handle();
    let run = tokio::spawn({
        let stop = stop.clone();
        supervisor.run_until(async move { stop.notified().await })
    });
    within(Duration::from_secs(20), "ready", handle.ready()).await;
    let addr = handle.http_addr().expect("the endpoint is bound");

    // While it works: the probes answer, and a scrape already shows deliveries.
    assert_eq!(get(addr, "/healthz").await.status, 200);
    let ready = get(addr, "/readyz").await;
    assert_eq!(ready.status, 200, "{}", ready.body);
    let during = within(Duration::from_secs(30), "a first delivery counted", async {
        loop {
            let page = get(addr, "/metrics").await;
            assert_eq!(page.status, 200);
            let s = samples(&page.body);
            if sample(&s, "serena_consumer_deliveries_total", &[("queue", &queue)]) > 0.0 {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(during.contains_key(&format!(
        "serena_worker_state{{connection=\"{connection}\",state=\"ready\"}}"
    )));

    within(Duration::from_secs(60), "every message handled", async {
        while handled.load(Ordering::SeqCst) < MESSAGES
            || handle.stats().acked + handle.stats().rejected < u64::from(MESSAGES)
        {
            let _ = tokio::time::timeout(Duration::from_millis(100), done.notified()).await;
        }
    })
    .await;
    // The connection's traffic is sampled once a second.
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let page = get(addr, "/metrics").await;
    assert_eq!(page.status, 200);
    let s = samples(&page.body);
    let q = [("queue", queue.as_str())];
    let c = [("connection", connection.as_str())];
    let rejected = f64::from(MESSAGES / 5);
    assert_eq!(
        sample(&s, "serena_consumer_deliveries_total", &q),
        f64::from(MESSAGES)
    );
    assert_eq!(
        sample(&s, "serena_consumer_acks_total", &q),
        f64::from(MESSAGES) - rejected
    );
    assert_eq!(sample(&s, "serena_consumer_rejects_total", &q), rejected);
    assert_eq!(sample(&s, "serena_consumer_requeues_total", &q), 0.0);
    assert_eq!(sample(&s, "serena_consumer_handler_errors_total", &q), 0.0);
    assert_eq!(sample(&s, "serena_consumer_handler_panics_total", &q), 0.0);
    assert_eq!(sample(&s, "serena_consumer_in_flight", &q), 0.0);
    assert_eq!(
        sample(&s, "serena_consumer_handler_duration_seconds_count", &q),
        f64::from(MESSAGES)
    );
    let under_60s = sample(
        &s,
        "serena_consumer_handler_duration_seconds_bucket",
        &[("queue", queue.as_str()), ("le", "60")],
    );
    assert_eq!(under_60s, f64::from(MESSAGES));
    // The handler published a copy of every tenth message, and one unroutable message.
    let copies_made = f64::from(MESSAGES / 10);
    assert_eq!(
        sample(&s, "serena_publisher_published_total", &c),
        copies_made + 1.0
    );
    assert_eq!(
        sample(&s, "serena_publisher_confirmed_total", &c),
        copies_made
    );
    assert_eq!(sample(&s, "serena_publisher_returned_total", &c), 1.0);
    assert_eq!(sample(&s, "serena_publisher_nacked_total", &c), 0.0);
    assert_eq!(
        sample(&s, "serena_publisher_confirm_duration_seconds_count", &c),
        copies_made + 1.0
    );
    assert!(sample(&s, "serena_connection_sent_bytes_total", &c) > 0.0);
    assert!(sample(&s, "serena_connection_received_frames_total", &c) >= f64::from(MESSAGES));
    assert_eq!(sample(&s, "serena_worker_restarts_total", &c), 0.0);
    assert_eq!(
        sample(
            &s,
            "serena_worker_state",
            &[("connection", &connection), ("state", "ready")]
        ),
        1.0
    );
    let stats = handle.stats();
    assert_eq!(
        (stats.delivered, stats.acked, stats.rejected),
        (200, 160, 40)
    );

    stop.notify_one();
    within(Duration::from_secs(20), "shutdown", run)
        .await
        .expect("join")
        .expect("clean shutdown");
    // The endpoint went with the supervisor.
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    // The recorder stays: it says the worker stopped.
    let after = samples(&serena::worker::prometheus().expect("recorder").render());
    let state = |state| {
        sample(
            &after,
            "serena_worker_state",
            &[("connection", &connection), ("state", state)],
        )
    };
    assert_eq!((state("stopped"), state("ready")), (1.0, 0.0));
    assert_eq!(depth_and_delete(&copies).await, MESSAGES / 10);
    depth_and_delete(&queue).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_is_503_while_the_connection_is_cut_and_200_after_the_restart() {
    let queue = unique_name("http-ready");
    let connection = unique_name("http-ready-conn");
    fill(&queue, expiring(), 0).await;
    let proxy = Proxy::start().await.expect("proxy");
    let stop = Arc::new(Notify::new());
    let supervisor = Supervisor::new(proxy.client_config(&connection))
        .backoff(fast_backoff())
        .consumer(serena_tests::handlers::handler_fn(
            ConsumerSpec::new("idle", queue.clone()),
            |_| async { Outcome::Ack },
        ))
        .http(([127, 0, 0, 1], 0).into());
    let mut handle = supervisor.handle();
    let run = tokio::spawn({
        let stop = stop.clone();
        supervisor.run_until(async move { stop.notified().await })
    });
    within(Duration::from_secs(20), "ready", handle.ready()).await;
    let addr = handle.http_addr().expect("bound");
    let ready = get(addr, "/readyz").await;
    assert_eq!(ready.status, 200, "{}", ready.body);
    let body: serde_json::Value = serde_json::from_str(&ready.body).expect("JSON");
    assert_eq!(body["ready"], true);

    // The broker is unreachable: the connection is cut and new ones are refused.
    proxy.set_refusing(true);
    proxy.cut_all();
    let down = within(Duration::from_secs(10), "/readyz 503", async {
        loop {
            let r = get(addr, "/readyz").await;
            if r.status != 200 {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert_eq!(down.status, 503, "{}", down.body);
    let body: serde_json::Value = serde_json::from_str(&down.body).expect("JSON");
    assert_eq!(body["ready"], false);
    assert_eq!(body["state"], "restarting", "{body}");
    assert!(
        body["last_error"].as_str().is_some_and(|e| !e.is_empty()),
        "{body}"
    );
    // Liveness is not readiness: the process still answers.
    assert_eq!(get(addr, "/healthz").await.status, 200);

    let cut_at = Instant::now();
    proxy.set_refusing(false);
    let up = within(Duration::from_secs(20), "/readyz 200 again", async {
        loop {
            let r = get(addr, "/readyz").await;
            if r.status == 200 {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(up.body.contains("\"ready\":true"), "{}", up.body);
    assert!(cut_at.elapsed() < Duration::from_secs(20));
    let s = samples(&get(addr, "/metrics").await.body);
    let c = [("connection", connection.as_str())];
    assert!(sample(&s, "serena_worker_restarts_total", &c) >= 1.0);
    assert!(sample(&s, "serena_connection_reconnects_total", &c) >= 1.0);
    assert_eq!(
        sample(
            &s,
            "serena_worker_state",
            &[("connection", &connection), ("state", "ready")]
        ),
        1.0
    );

    stop.notify_one();
    within(Duration::from_secs(20), "shutdown", run)
        .await
        .expect("join")
        .expect("clean shutdown");
    depth_and_delete(&queue).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_in_use_stops_the_supervisor_before_it_connects() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr");
    // A broker address nothing listens on: the supervisor must fail before trying it.
    let config = config(&unique_name("http-in-use")).with_port(1);
    let supervisor = Supervisor::new(config)
        .consumer(serena_tests::handlers::handler_fn(
            ConsumerSpec::new("never", "never"),
            |_| async { Outcome::Ack },
        ))
        .http(addr);
    let result = within(Duration::from_secs(5), "the refusal", supervisor.run()).await;
    match result {
        Err(SupervisorError::Http(HttpError::Bind { addr: a, .. })) => assert_eq!(a, addr),
        other => panic!("expected an HTTP bind error, got {other:?}"),
    }
}

/// Set in the child processes of [`the_environment_variable_turns_the_endpoint_on`]: `ok` or
/// `bad`, what `SERENA_HTTP_ADDR` holds there.
const CHILD: &str = "SERENA_TEST_HTTP_CHILD";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_environment_variable_turns_the_endpoint_on() {
    match std::env::var(CHILD).as_deref() {
        Ok("ok") => return env_child_serves().await,
        Ok("bad") => return env_child_refuses().await,
        _ => {}
    }
    // The variable is the process's: each case runs in a child process of this test binary.
    for (mode, value) in [("ok", "127.0.0.1:0"), ("bad", "port 9090 please")] {
        let output = tokio::task::spawn_blocking(move || {
            std::process::Command::new(std::env::current_exe().expect("this test binary"))
                .args([
                    "--exact",
                    "http::the_environment_variable_turns_the_endpoint_on",
                    "--test-threads",
                    "1",
                ])
                .env(CHILD, mode)
                .env(serena::worker::HTTP_ADDR_ENV, value)
                .output()
                .expect("run the child")
        })
        .await
        .expect("join");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success() && stdout.contains("1 passed"),
            "child {mode}: {stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

/// With `SERENA_HTTP_ADDR=127.0.0.1:0` and no `http` call, the supervisor serves `/readyz`.
async fn env_child_serves() {
    let queue = unique_name("http-env");
    fill(&queue, expiring(), 0).await;
    let stop = Arc::new(Notify::new());
    let supervisor = Supervisor::new(config(&unique_name("http-env-conn"))).consumer(
        serena_tests::handlers::handler_fn(ConsumerSpec::new("idle", queue.clone()), |_| async {
            Outcome::Ack
        }),
    );
    let mut handle = supervisor.handle();
    let run = tokio::spawn({
        let stop = stop.clone();
        supervisor.run_until(async move { stop.notified().await })
    });
    within(Duration::from_secs(20), "ready", handle.ready()).await;
    let addr = handle
        .http_addr()
        .expect("the variable turned the endpoint on");
    assert_eq!(get(addr, "/readyz").await.status, 200);
    stop.notify_one();
    within(Duration::from_secs(20), "shutdown", run)
        .await
        .expect("join")
        .expect("clean shutdown");
    depth_and_delete(&queue).await;
}

/// A value that is not an address stops the supervisor before it connects.
async fn env_child_refuses() {
    let supervisor = Supervisor::new(config(&unique_name("http-env-bad")).with_port(1)).consumer(
        serena_tests::handlers::handler_fn(ConsumerSpec::new("never", "never"), |_| async {
            Outcome::Ack
        }),
    );
    match within(Duration::from_secs(5), "the refusal", supervisor.run()).await {
        Err(SupervisorError::Http(HttpError::InvalidAddr { value })) => {
            assert_eq!(value, "port 9090 please");
        }
        other => panic!("expected an invalid address error, got {other:?}"),
    }
}
