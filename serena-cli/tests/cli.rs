//! The `serena` binary: exit codes (0 ok, 1 drift or failure, 2 bad usage or invalid file),
//! messages on stderr, topology check/apply/verify, and publish/consume with JSON lines, against
//! the broker on 127.0.0.1:5672 (`SERENA_TEST_BROKER` overrides it).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{Value, json};
use serena::{Connection, ConnectionConfig};

fn broker_url() -> String {
    let addr = std::env::var("SERENA_TEST_BROKER").unwrap_or_else(|_| "127.0.0.1:5672".into());
    format!("amqp://guest:guest@{addr}/%2f")
}

fn unique(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    format!("serena-cli-{prefix}-{}-{n}", std::process::id())
}

/// Runs the binary with `args`, no SERENA_* variables but `env`, and `stdin` as input.
fn serena(args: &[&str], env: &[(&str, &str)], stdin: &[u8], dir: Option<&Path>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_serena"));
    cmd.args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for var in serena::topology::settings::ENV_VARS {
        cmd.env_remove(var);
    }
    cmd.env_remove("SERENA_MANAGEMENT_URL");
    cmd.envs(env.iter().copied());
    if let Some(dir) = dir {
        cmd.current_dir(dir);
    }
    let mut child = cmd.spawn().unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

fn run(args: &[&str]) -> Output {
    serena(args, &[], b"", None)
}

fn code(o: &Output) -> i32 {
    o.status.code().expect("exited")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A topology file in the temp directory, removed when dropped; queues and exchanges named in
/// `queues` and `exchanges` are deleted from the broker then too.
struct Scratch {
    file: PathBuf,
    queues: Vec<String>,
    exchanges: Vec<String>,
}

impl Scratch {
    fn new(text: &str, queues: &[&str], exchanges: &[&str]) -> Scratch {
        let file = std::env::temp_dir().join(format!("{}.toml", unique("topology")));
        std::fs::write(&file, text).unwrap();
        Scratch {
            file,
            queues: queues.iter().map(|s| (*s).to_owned()).collect(),
            exchanges: exchanges.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    fn path(&self) -> &str {
        self.file.to_str().unwrap()
    }
}

async fn with_broker<T>(f: impl AsyncFnOnce(&Connection) -> T) -> T {
    let conn = Connection::open(&ConnectionConfig::from_uri(&broker_url()).unwrap())
        .await
        .unwrap();
    let v = f(&conn).await;
    conn.close().await.unwrap();
    v
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.file);
        let (queues, exchanges) = (self.queues.clone(), self.exchanges.clone());
        let _ = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(with_broker(async |conn| {
                    for q in &queues {
                        let ch = conn.channel().await.unwrap();
                        let _ = ch.queue_delete(q, false, false).await;
                    }
                    for x in &exchanges {
                        let ch = conn.channel().await.unwrap();
                        let _ = ch.exchange_delete(x, false).await;
                    }
                }));
        })
        .join();
    }
}

#[test]
fn check_accepts_the_example() {
    let o = serena(
        &["topology", "check", "topology.toml"],
        &[],
        b"",
        Some(&repo()),
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(
        stdout(&o),
        "topology.toml: ok: 4 exchanges, 5 queues (and 3 for retries), 6 bindings\n"
    );
}

#[test]
fn check_notes_names_past_64_bytes_and_still_succeeds() {
    let dir = std::env::temp_dir().join(unique("long-names"));
    std::fs::create_dir_all(&dir).unwrap();
    let long = "q".repeat(70);
    let text = format!("[[queues]]\nname = \"{long}\"\n\n[[queues]]\nname = \"short\"\n");
    std::fs::write(dir.join("topology.toml"), text).unwrap();
    let o = serena(
        &["topology", "check", "topology.toml"],
        &[],
        b"",
        Some(&dir),
    );
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(
        stdout(&o),
        "topology.toml: ok: 0 exchanges, 2 queues, 0 bindings\n"
    );
    let err = stderr(&o);
    let notes: Vec<&str> = err.lines().collect();
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert!(
        notes[0].starts_with(&format!(
            "note: topology.toml:2:1: queue \"{long}\": the name is 70 bytes long"
        )),
        "{}",
        notes[0]
    );
}

#[test]
fn check_of_an_invalid_file_exits_2_with_every_problem() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../serena/tests/topology/bad");
    let o = serena(
        &["topology", "check", "quorum_rules.toml"],
        &[],
        b"",
        Some(&dir),
    );
    assert_eq!(code(&o), 2);
    assert_eq!(stdout(&o), "");
    let expected = std::fs::read_to_string(dir.join("quorum_rules.err")).unwrap();
    let mut want: String = expected.lines().map(|l| format!("serena: {l}\n")).collect();
    want.push_str("serena: quorum_rules.toml: 6 problems found; nothing was sent to the broker\n");
    assert_eq!(stderr(&o), want);
}

#[test]
fn bad_usage_exits_2() {
    for args in [
        &["topology"][..],
        &["frobnicate"],
        &["consume"],
        &["publish", "only-an-exchange"],
        &["topology", "check", "/nonexistent/topology.toml"],
        &["publish", "", "q", "body", "-H", "n:i8=300"],
        &["consume", "q", "--timeout", "-1"],
        &["publish", "", "q", "x", "--delivery-mode", "3"],
    ] {
        let o = run(args);
        assert_eq!(code(&o), 2, "{args:?}: {}", stderr(&o));
        assert!(!stderr(&o).is_empty(), "{args:?}");
    }
    let o = run(&["topology", "check", "/nonexistent/topology.toml"]);
    assert!(
        stderr(&o).contains("cannot read topology file /nonexistent/topology.toml"),
        "{}",
        stderr(&o)
    );
    let o = run(&["publish", "", "q", "x", "-H", "n:i8=300"]);
    assert!(
        stderr(&o).contains("\"300\" is not an i8"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn an_unreachable_broker_exits_1_and_says_where_it_looked() {
    let bad = "amqp://guest:guest@127.0.0.1:1/%2f";
    let example = repo().join("topology.toml");
    let example = example.to_str().unwrap();
    let o = serena(
        &["topology", "verify", example],
        &[("SERENA_URL", bad)],
        b"",
        None,
    );
    assert_eq!(code(&o), 1);
    let err = stderr(&o);
    assert!(err.contains("broker 127.0.0.1:1"), "{err}");
    assert!(err.contains("is RabbitMQ running there?"), "{err}");
    // --url wins over SERENA_URL.
    let o = serena(
        &["--url", bad, "consume", "q", "--count", "1"],
        &[("SERENA_URL", &broker_url())],
        b"",
        None,
    );
    assert_eq!(code(&o), 1);
    assert!(stderr(&o).contains("127.0.0.1:1"), "{}", stderr(&o));
    // A bad URI is bad usage.
    let o = run(&["--url", "http://x", "consume", "q"]);
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).contains("amqp://"), "{}", stderr(&o));
}

#[test]
fn no_message_shows_the_password() {
    let file = Scratch::new(
        "[connection]\nurl = \"amqp://app:s3c/ret@127.0.0.1\"\n",
        &[],
        &[],
    );
    let unreachable = Scratch::new(
        "[connection]\nurl = \"amqp://app:s3cret@127.0.0.1:1/%2f\"\n",
        &[],
        &[],
    );
    let shows_a_secret = |o: &Output, secrets: &[&str]| {
        let (out, err) = (stdout(o), stderr(o));
        assert!(!err.is_empty());
        for secret in secrets {
            assert!(
                !out.contains(secret) && !err.contains(secret),
                "{secret}:\n{out}\n{err}"
            );
        }
    };
    for (url, secrets) in [
        ("amqp//user:s3cret@host", &["s3cret"][..]),
        ("amqp://user:s3c/ret@host", &["s3c", "ret"]),
        ("amqp://user:s3c?ret@host", &["s3c", "ret"]),
        ("amqp://user:4242/s3cret@127.0.0.1", &["4242", "s3cret"]),
    ] {
        let o = run(&["--url", url, "consume", "q", "--count", "1"]);
        assert_eq!(code(&o), 2, "{url}: {}", stderr(&o));
        shows_a_secret(&o, secrets);
        let o = serena(
            &["publish", "", "q", "x"],
            &[("SERENA_URL", url)],
            b"",
            None,
        );
        assert_eq!(code(&o), 2, "{url}: {}", stderr(&o));
        shows_a_secret(&o, secrets);
    }
    for cmd in ["check", "verify"] {
        let o = run(&["topology", cmd, file.path()]);
        assert_eq!(code(&o), 2, "{}", stderr(&o));
        shows_a_secret(&o, &["s3c", "ret"]);
    }
    let o = run(&["topology", "verify", unreachable.path()]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert!(stderr(&o).contains("127.0.0.1:1"), "{}", stderr(&o));
    shows_a_secret(&o, &["s3cret"]);
}

#[test]
fn apply_verify_and_drift() {
    let p = unique("topo");
    let (x, q) = (format!("{p}.events"), format!("{p}.work"));
    let text = format!(
        "[connection]\nurl = \"amqp://guest:guest@127.0.0.1:1/%2f\"\n\n\
         [[exchanges]]\nname = \"{x}\"\ntype = \"topic\"\n\n\
         [[queues]]\nname = \"{q}\"\ntype = \"quorum\"\n\n\
         [[bindings]]\nsource = \"{x}\"\nqueue = \"{q}\"\nrouting_key = \"a.#\"\n"
    );
    let scratch = Scratch::new(&text, &[&q], &[&x]);
    let file = scratch.path();
    let url = broker_url();
    let env = [("SERENA_URL", url.as_str())];

    // The file names an unreachable broker: SERENA_URL overrides it.
    let o = serena(&["topology", "verify", file], &[], b"", None);
    assert_eq!(code(&o), 1);
    assert!(stderr(&o).contains("127.0.0.1:1"), "{}", stderr(&o));

    let o = serena(&["topology", "apply", file], &env, b"", None);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(
        stdout(&o),
        format!(
            "exchange \"{x}\": created\nqueue \"{q}\": created\nbinding \"{x}\" -> queue \"{q}\" \
             (key \"a.#\"): bound\n2 created, 0 already present, 1 bound, 0 unchecked, 0 missing, \
             0 failed\n"
        )
    );
    let o = serena(&["topology", "apply", file], &env, b"", None);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(
        stdout(&o).contains("0 created, 2 already present, 1 bound"),
        "{}",
        stdout(&o)
    );

    let o = serena(&["topology", "verify", file], &env, b"", None);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stdout(&o).contains(&format!("queue \"{q}\": present")));

    // Drift: the queue goes behind serena's back.
    tokio_run(with_broker(async |conn| {
        let ch = conn.channel().await.unwrap();
        ch.queue_delete(&q, false, false).await.unwrap();
    }));
    let o = serena(&["--url", &url, "topology", "verify", file], &[], b"", None);
    assert_eq!(code(&o), 1);
    let err = stderr(&o);
    assert!(
        err.contains(&format!("serena: queue \"{q}\": MISSING")),
        "{err}"
    );
    assert!(err.contains("verify: drift: 1 of 3 entities"), "{err}");
    assert!(err.contains("serena topology apply"), "{err}");

    // A conflicting file: the re-created queue is classic, the file says quorum.
    tokio_run(with_broker(async |conn| {
        let ch = conn.channel().await.unwrap();
        ch.queue_declare(
            &q,
            serena::QueueDeclareOptions::default().with_durable(true),
        )
        .await
        .unwrap();
    }));
    let o = serena(&["topology", "apply", file], &env, b"", None);
    assert_eq!(code(&o), 1);
    let err = stderr(&o);
    assert!(
        err.contains(&format!(
            "serena: queue \"{q}\": failed: x-queue-type differs: the topology has quorum (longstr), \
             the broker has none"
        )),
        "{err}"
    );
    assert!(err.contains("apply: 1 of 3 entities failed"), "{err}");
}

fn tokio_run<T>(f: impl Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

#[test]
fn publish_then_consume_prints_one_json_line_per_delivery() {
    let q = unique("json");
    let scratch = Scratch::new("", &[&q], &[]);
    tokio_run(with_broker(async |conn| {
        let ch = conn.channel().await.unwrap();
        ch.queue_declare(&q, Default::default()).await.unwrap();
    }));
    let url = broker_url();
    let env = [("SERENA_URL", url.as_str())];
    let o = serena(
        &[
            "publish",
            "",
            &q,
            r#"{"id":7}"#,
            "--content-type",
            "application/json",
            "--content-encoding",
            "identity",
            "--persistent",
            "--priority",
            "3",
            "--correlation-id",
            "c-1",
            "--reply-to",
            "replies",
            "--expiration",
            "60000",
            "--message-id",
            "m-1",
            "--timestamp",
            "1700000000",
            "--type",
            "order.created",
            "--user-id",
            "guest",
            "--app-id",
            "shop",
            "--cluster-id",
            "c",
            "-H",
            "plain=text",
            "-H",
            "attempt:i32=2",
            "-H",
            "big:u64=18446744073709551615",
            "-H",
            "ok:bool=true",
            "-H",
            "price:decimal=12.50",
            "-H",
            "delta:decimal=-0.5",
            "-H",
            "ratio:f64=0.25",
            "-H",
            "at:timestamp=1700000001",
            "-H",
            "raw:bytes=AAEC",
            "-H",
            "nothing:void=",
            "-H",
            r#"meta:json={"tags":["a",1]}"#,
        ],
        &env,
        b"",
        None,
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stderr(&o).contains("published 8 bytes"), "{}", stderr(&o));
    // The body from stdin, not UTF-8.
    let o = serena(&["publish", "", &q], &env, &[0xff, 0x00, 0x41], None);
    assert_eq!(code(&o), 0, "{}", stderr(&o));

    let o = serena(
        &["consume", &q, "--count", "2", "--timeout", "5"],
        &env,
        b"",
        None,
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let out = stdout(&o);
    let lines: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{out}");
    let first = &lines[0];
    assert_eq!(first["envelope"]["exchange"], json!(""));
    assert_eq!(first["envelope"]["routing_key"], json!(q));
    assert_eq!(first["envelope"]["redelivered"], json!(false));
    assert_eq!(first["envelope"]["delivery_tag"], json!(1));
    assert_eq!(first["body"], json!(r#"{"id":7}"#));
    assert_eq!(first["body_encoding"], json!("utf8"));
    let props = &first["properties"];
    assert_eq!(
        *props,
        json!({
            "content_type": "application/json",
            "content_encoding": "identity",
            "headers": {
                "plain": {"type": "string", "value": "text"},
                "attempt": {"type": "i32", "value": 2},
                "big": {"type": "u64", "value": u64::MAX},
                "ok": {"type": "bool", "value": true},
                "price": {"type": "decimal", "value": "12.50"},
                "delta": {"type": "decimal", "value": "-0.5"},
                "ratio": {"type": "f64", "value": 0.25},
                "at": {"type": "timestamp", "value": 1_700_000_001u64},
                "raw": {"type": "bytes", "value": "AAEC"},
                "nothing": {"type": "void"},
                "meta": {"type": "table", "value": {"tags": {"type": "array", "value": [
                    {"type": "string", "value": "a"},
                    {"type": "i64", "value": 1},
                ]}}},
            },
            "delivery_mode": 2,
            "priority": 3,
            "correlation_id": "c-1",
            "reply_to": "replies",
            "expiration": "60000",
            "message_id": "m-1",
            "timestamp": 1_700_000_000u64,
            "type": "order.created",
            "user_id": "guest",
            "app_id": "shop",
            "cluster_id": "c",
        })
    );
    let second = &lines[1];
    assert_eq!(second["body"], json!("/wBB"));
    assert_eq!(second["body_encoding"], json!("base64"));
    assert_eq!(second["properties"]["headers"], Value::Null);

    // Both were acknowledged: the queue is empty, and waiting for one more times out.
    let o = serena(
        &["consume", &q, "--count", "1", "--timeout", "0.3"],
        &env,
        b"",
        None,
    );
    assert_eq!(code(&o), 1);
    assert!(
        stderr(&o).contains("got 0 of 1 messages before the timeout"),
        "{}",
        stderr(&o)
    );
    drop(scratch);
}

#[test]
fn unroutable_publish_and_missing_queue_exit_1_with_a_hint() {
    let url = broker_url();
    let env = [("SERENA_URL", url.as_str())];
    let nowhere = unique("nowhere");
    let o = serena(&["publish", "", &nowhere, "x"], &env, b"", None);
    assert_eq!(code(&o), 1);
    let err = stderr(&o);
    assert!(err.contains("312 NO_ROUTE"), "{err}");
    assert!(err.contains("--no-mandatory"), "{err}");
    let o = serena(
        &["publish", "", &nowhere, "x", "--no-mandatory"],
        &env,
        b"",
        None,
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));

    let o = serena(&["consume", &nowhere, "--count", "1"], &env, b"", None);
    assert_eq!(code(&o), 1);
    let err = stderr(&o);
    assert!(err.contains("404 NOT_FOUND"), "{err}");
    assert!(err.contains("declare it first"), "{err}");

    let o = serena(&["publish", &nowhere, "k", "x"], &env, b"", None);
    assert_eq!(code(&o), 1);
    assert!(
        stderr(&o).contains("create the exchange first"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn rpc_prints_the_reply_as_a_json_line_and_exits_1_on_timeout() {
    let url = broker_url();
    let env = [("SERENA_URL", url.as_str())];
    let q = unique("rpc");
    let silent = unique("rpc-silent");
    tokio_run(with_broker(async |conn| {
        let ch = conn.channel().await.unwrap();
        let exclusive = serena::QueueDeclareOptions::default().with_exclusive(true);
        ch.queue_declare(&q, exclusive.clone()).await.unwrap();
        ch.queue_declare(&silent, exclusive).await.unwrap();
        let mut requests = ch
            .basic_consume(&q, serena::ConsumeOptions::default().with_no_ack(true))
            .await
            .unwrap();
        // The responder wraps each request in {"echo": ...}; the binary runs meanwhile.
        let call = tokio::task::spawn_blocking({
            let (q, env) = (q.clone(), [("SERENA_URL", url.clone())]);
            move || {
                let env = [(env[0].0, env[0].1.as_str())];
                serena(
                    &["rpc", &q, r#"{"n":1}"#, "--timeout", "20"],
                    &env,
                    b"",
                    None,
                )
            }
        });
        let request = requests.next().await.unwrap().unwrap();
        let body: Value = serde_json::from_slice(&request.body).unwrap();
        let p = &request.properties;
        assert_eq!(p.content_type.as_deref(), Some("application/json"));
        let reply = serena::proto::BasicProperties::default()
            .with_correlation_id(p.correlation_id.clone().unwrap())
            .with_content_type("application/json");
        let reply_to = p.reply_to.as_deref().unwrap();
        let echo = json!({ "echo": body }).to_string();
        // Not mandatory: RabbitMQ returns a mandatory publish to a reply-to name (no queue)
        // even though it delivers it.
        let options = serena::PublishOptions::default().with_mandatory(false);
        let sent = ch.basic_publish_with("", reply_to, echo, reply, options);
        sent.await.unwrap().await.unwrap();
        let o = call.await.unwrap();
        assert_eq!(code(&o), 0, "{}", stderr(&o));
        let line: Value = serde_json::from_str(stdout(&o).trim_end()).unwrap();
        assert_eq!(line["body"], json!(r#"{"echo":{"n":1}}"#));
        assert_eq!(line["body_encoding"], json!("utf8"));
        assert_eq!(
            line["properties"]["content_type"],
            json!("application/json")
        );
        assert_eq!(stdout(&o).lines().count(), 1);
    }));
    // Nobody answers on `silent`; a queue that does not exist returns the request.
    tokio_run(with_broker(async |conn| {
        let ch = conn.channel().await.unwrap();
        let exclusive = serena::QueueDeclareOptions::default().with_exclusive(true);
        ch.queue_declare(&silent, exclusive).await.unwrap();
        let o = tokio::task::spawn_blocking({
            let (silent, url) = (silent.clone(), url.clone());
            move || {
                serena(
                    &["rpc", &silent, "1", "--timeout", "0.5"],
                    &[("SERENA_URL", &url)],
                    b"",
                    None,
                )
            }
        })
        .await
        .unwrap();
        assert_eq!(code(&o), 1);
        assert!(
            stderr(&o).contains("no reply within 500ms"),
            "{}",
            stderr(&o)
        );
        assert!(stdout(&o).is_empty());
    }));
    let o = serena(&["rpc", &unique("nowhere"), "1"], &env, b"", None);
    assert_eq!(code(&o), 1);
    assert!(stderr(&o).contains("312 NO_ROUTE"), "{}", stderr(&o));
    let o = serena(&["rpc", &q, "1", "--timeout", "-1"], &env, b"", None);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
}
