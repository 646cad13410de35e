//! `serena topology diff|export|to-definitions` and `verify` through RabbitMQ's management API,
//! against an extra node with the management plugin that this test starts beside the default
//! one (`scripts/extra-node.sh`, AMQP on 5682, management on 15680) and stops on every way out,
//! panics included. The default node is never touched. Run as root (or as `rabbitmq`), like
//! the TLS and cluster tests.

#![cfg(feature = "management")]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serena::proto::FieldTable;
use serena::{Connection, ConnectionConfig, QueueDeclareOptions};

const NODE: &str = "serena-mgmt";
const AMQP_PORT: u16 = 5682;
const MANAGEMENT_PORT: u16 = 15680;

fn amqp_url() -> String {
    format!("amqp://guest:guest@127.0.0.1:{AMQP_PORT}/%2f")
}

fn management_url() -> String {
    format!("http://guest:guest@127.0.0.1:{MANAGEMENT_PORT}")
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/extra-node.sh")
}

/// The extra node: stopped, and its folder removed, when dropped.
struct Node;

impl Node {
    fn start() -> Node {
        // A node left over by a killed run goes first.
        let _ = Command::new("bash")
            .arg(script())
            .args(["stop", NODE])
            .output();
        let node = Node;
        let out = Command::new("bash")
            .arg(script())
            .args(["start", NODE, "--amqp-port", &AMQP_PORT.to_string()])
            .args(["--plugins", "rabbitmq_management"])
            .args([
                "--conf-line",
                &format!("management.tcp.port = {MANAGEMENT_PORT}"),
            ])
            .args(["--conf-line", "management.tcp.ip = 127.0.0.1"])
            .output()
            .expect("extra-node.sh runs");
        assert!(
            out.status.success(),
            "extra-node.sh start: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // The AMQP listener comes up first; wait for the management API too.
        let deadline = Instant::now() + Duration::from_secs(30);
        while get("/api/overview").is_err() {
            assert!(
                Instant::now() < deadline,
                "no management API on {MANAGEMENT_PORT}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        node
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(script())
            .args(["stop", NODE])
            .output();
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into()
}

const AUTH: &str = "Basic Z3Vlc3Q6Z3Vlc3Q="; // guest:guest

fn get(path: &str) -> Result<String, ureq::Error> {
    agent()
        .get(&format!("http://127.0.0.1:{MANAGEMENT_PORT}{path}"))
        .header("Authorization", AUTH)
        .call()?
        .body_mut()
        .read_to_string()
}

/// `POST /api/definitions/%2F`: imports `json` into the node's default virtual host.
fn import(json: &str) {
    agent()
        .post(&format!(
            "http://127.0.0.1:{MANAGEMENT_PORT}/api/definitions/%2F"
        ))
        .header("Authorization", AUTH)
        .content_type("application/json")
        .send(json)
        .expect("definitions imported");
}

fn serena(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_serena"));
    cmd.args(args);
    for var in serena::topology::settings::ENV_VARS {
        cmd.env_remove(var);
    }
    cmd.env_remove("SERENA_MANAGEMENT_URL");
    cmd.envs(env.iter().copied());
    cmd.output().expect("serena runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn ok(o: &Output) -> String {
    assert_eq!(
        o.status.code(),
        Some(0),
        "stdout:\n{}stderr:\n{}",
        text(&o.stdout),
        text(&o.stderr)
    );
    text(&o.stdout)
}

fn tokio_run<T>(f: impl Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// Runs `f` on a channel of the extra node.
fn on_node(f: impl AsyncFnOnce(&serena::Channel)) {
    tokio_run(async {
        let conn = Connection::open(&ConnectionConfig::from_uri(&amqp_url()).unwrap())
            .await
            .unwrap();
        let ch = conn.channel().await.unwrap();
        f(&ch).await;
        conn.close().await.unwrap();
    });
}

/// A file in the temp directory, removed when dropped.
struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str, text: &str) -> TempFile {
        let path = std::env::temp_dir().join(format!("serena-mgmt-{}-{name}", std::process::id()));
        std::fs::write(&path, text).unwrap();
        TempFile(path)
    }

    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn topology(p: &str) -> String {
    format!(
        "[[exchanges]]\nname = \"{p}.events\"\ntype = \"topic\"\nalternate_exchange = \"{p}.headers\"\n\n\
         [[exchanges]]\nname = \"{p}.headers\"\ntype = \"headers\"\n\n\
         [[queues]]\nname = \"{p}.work\"\ntype = \"quorum\"\ndelivery_limit = 3\n\
         retry = {{ delays = [\"5s\"] }}\n\n\
         [[queues]]\nname = \"{p}.audit\"\nmessage_ttl = 60000\nmax_priority = 5\n\n\
         [[bindings]]\nsource = \"{p}.events\"\nqueue = \"{p}.work\"\nrouting_key = \"a.#\"\n\n\
         [[bindings]]\nsource = \"{p}.events\"\nexchange = \"{p}.headers\"\nrouting_key = \"b.#\"\n\n\
         [[bindings]]\nsource = \"{p}.headers\"\nqueue = \"{p}.audit\"\n\
         arguments = {{ x-match = \"all\", kind = \"audit\", level = 2 }}\n"
    )
}

#[test]
fn diff_export_and_definitions_against_a_node_with_the_management_api() {
    let started = Instant::now();
    let _node = Node::start();
    let start_time = started.elapsed();
    let amqp = amqp_url();
    let mgmt = management_url();

    // 1. Apply a topology; diff and verify find no drift.
    let p = "t1";
    let file = TempFile::new("t1.toml", &topology(p));
    ok(&serena(
        &["--url", &amqp, "topology", "apply", file.path()],
        &[],
    ));
    let out = ok(&serena(
        &[
            "--url",
            &mgmt,
            "topology",
            "diff",
            file.path(),
            "--prefix",
            p,
        ],
        &[],
    ));
    assert_eq!(
        out,
        format!("no drift in virtual host \"/\" at http://127.0.0.1:{MANAGEMENT_PORT}\n")
    );
    let verify_env = [("SERENA_MANAGEMENT_URL", mgmt.as_str())];
    let out = ok(&serena(
        &["--url", &amqp, "topology", "verify", file.path()],
        &verify_env,
    ));
    assert!(out.starts_with("verify: no drift"), "{out}");

    // 2. Drift behind serena's back: a changed binding argument, an extra queue, a missing
    //    binding, a changed queue argument.
    on_node(async |ch| {
        let audit = FieldTable::new()
            .with("x-match", "all")
            .with("kind", "audit")
            .with("level", 2_i64);
        ch.queue_unbind(&format!("{p}.audit"), &format!("{p}.headers"), "", audit)
            .await
            .unwrap();
        let changed = FieldTable::new()
            .with("x-match", "all")
            .with("kind", "audit")
            .with("level", 3_i64);
        ch.queue_bind(&format!("{p}.audit"), &format!("{p}.headers"), "", changed)
            .await
            .unwrap();
        ch.queue_declare(
            &format!("{p}.stray"),
            QueueDeclareOptions::default().with_durable(true),
        )
        .await
        .unwrap();
        ch.queue_unbind(
            &format!("{p}.work"),
            &format!("{p}.events"),
            "a.#",
            FieldTable::new(),
        )
        .await
        .unwrap();
        ch.queue_delete(&format!("{p}.audit"), false, false)
            .await
            .unwrap();
        let args = FieldTable::new()
            .with("x-queue-type", "classic")
            .with("x-message-ttl", 30_000_i64)
            .with("x-max-priority", 5_i64);
        ch.queue_declare(
            &format!("{p}.audit"),
            QueueDeclareOptions::default()
                .with_durable(true)
                .with_arguments(args),
        )
        .await
        .unwrap();
        // The delete took its bindings; bind it as the drift above left it.
        let changed = FieldTable::new()
            .with("x-match", "all")
            .with("kind", "audit")
            .with("level", 3_i64);
        ch.queue_bind(&format!("{p}.audit"), &format!("{p}.headers"), "", changed)
            .await
            .unwrap();
    });
    let o = serena(
        &[
            "--url",
            &mgmt,
            "topology",
            "diff",
            file.path(),
            "--prefix",
            p,
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    for line in [
        format!(
            "queue \"{p}.audit\": DIFFERS: argument x-message-ttl: the topology has 60000, the broker has 30000"
        ),
        format!("binding \"{p}.events\" -> queue \"{p}.work\" (key \"a.#\"): MISSING"),
        format!(
            "binding \"{p}.headers\" -> queue \"{p}.audit\": DIFFERS: argument level: the topology has 2, the broker has 3"
        ),
        format!("queue \"{p}.stray\": EXTRA (on the broker, not in the topology)"),
    ] {
        assert!(out.lines().any(|l| l == line), "no line {line:?} in\n{out}");
    }
    assert_eq!(out.lines().count(), 4, "{out}");
    assert!(
        text(&o.stderr)
            .contains("diff: drift: 1 missing, 2 different, 1 extra in virtual host \"/\""),
        "{}",
        text(&o.stderr)
    );
    // verify: the same drift but the extra queue, which is only a note.
    let o = serena(
        &["--url", &amqp, "topology", "verify", file.path()],
        &verify_env,
    );
    assert_eq!(o.status.code(), Some(1));
    let err = text(&o.stderr);
    assert!(
        err.contains("verify: drift: 3 entities missing or different"),
        "{err}"
    );
    assert!(
        err.contains("note: 1 entities on the broker are not in the file"),
        "{err}"
    );
    // With no management API answering, verify says so and falls back to passive declares,
    // which see every exchange and queue present.
    let o = serena(
        &["--url", &amqp, "topology", "verify", file.path()],
        &[("SERENA_MANAGEMENT_URL", "http://127.0.0.1:1")],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains("checking with passive declares instead"),
        "{}",
        text(&o.stderr)
    );
    // A management URL that is not http is a usage error.
    let o = serena(
        &["--url", &amqp, "topology", "diff", file.path()],
        &[("SERENA_MANAGEMENT_URL", "ftp://x")],
    );
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));

    // 3. export -> check -> apply -> diff: the broker's state as a file that applies back.
    let exported = ok(&serena(
        &["--url", &mgmt, "topology", "export", "--prefix", p],
        &[],
    ));
    let export_file = TempFile::new("exported.toml", &exported);
    ok(&serena(&["topology", "check", export_file.path()], &[]));
    on_node(async |ch| {
        for q in ["audit", "work", "work.retry.5s", "work.parked", "stray"] {
            ch.queue_delete(&format!("{p}.{q}"), false, false)
                .await
                .unwrap();
        }
        for x in ["events", "headers"] {
            ch.exchange_delete(&format!("{p}.{x}"), false)
                .await
                .unwrap();
        }
    });
    let o = serena(
        &[
            "--url",
            &mgmt,
            "topology",
            "diff",
            export_file.path(),
            "--prefix",
            p,
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(1), "all gone: {}", text(&o.stdout));
    ok(&serena(
        &["--url", &amqp, "topology", "apply", export_file.path()],
        &[],
    ));
    let out = ok(&serena(
        &[
            "--url",
            &mgmt,
            "topology",
            "diff",
            export_file.path(),
            "--prefix",
            p,
        ],
        &[],
    ));
    assert!(out.starts_with("no drift"), "{out}");
    // ... which is the drifted state: the original file still differs from it.
    let o = serena(
        &[
            "--url",
            &mgmt,
            "topology",
            "diff",
            file.path(),
            "--prefix",
            p,
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(1));

    // 4. to-definitions, imported into the node, diffs clean (retry queues included).
    let p2 = "t2";
    let file2 = TempFile::new("t2.toml", &topology(p2));
    let definitions = ok(&serena(
        &["--url", &amqp, "topology", "to-definitions", file2.path()],
        &[],
    ));
    let o = serena(
        &[
            "--url",
            &mgmt,
            "topology",
            "diff",
            file2.path(),
            "--prefix",
            p2,
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(1), "nothing there yet");
    import(&definitions);
    let out = ok(&serena(
        &[
            "--url",
            &mgmt,
            "topology",
            "diff",
            file2.path(),
            "--prefix",
            p2,
        ],
        &[],
    ));
    assert!(out.starts_with("no drift"), "{out}");
    let queues = get("/api/queues/%2F").unwrap();
    assert!(
        queues.contains(&format!("\"{p2}.work.retry.5s\"")),
        "{queues}"
    );

    println!(
        "management node: started in {:.1} s, whole test {:.1} s before the stop",
        start_time.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
}
